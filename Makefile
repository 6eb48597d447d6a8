# Maintainers' commands. A fresh machine needs only python3: the first target run makes .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= out

.PHONY: help bake test demo bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

bake: $(VENV)/.installed ## generate a repo with the default answers into ./$(OUT)/
	$(PY) -m cookiecutter --no-input --overwrite-if-exists --output-dir $(OUT) .
	@echo "Generated: $(OUT)/$$($(PY) -c 'import json;print(json.load(open("cookiecutter.json"))["project"])')"

test: $(VENV)/.installed ## run the template's tests (offline)
	$(PY) -m pytest

demo: $(VENV)/.installed ## the whole flow offline: generate, validate, AWS on a local moto, DAGs
	$(PY) tools/demo.py --out $(OUT)

bench: $(VENV)/.installed ## print the benchmark figures
	for script in benchmarks/*.py; do $(PY) $$script || exit 1; done

clean: ## remove generated output and caches
	rm -rf $(OUT) .pytest_cache
