# Maintainers' commands. A fresh machine needs only python3: the first target run makes .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= out

.PHONY: help bake test test-slow demo bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's|$$(OUT)|$(OUT)|g' \
	  | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt
	@echo "==> $(VENV): installing requirements.txt (a few minutes the first time)"
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --disable-pip-version-check --progress-bar on -r requirements.txt
	touch $@

bake: $(VENV)/.installed ## generate a repo with the default answers into ./$(OUT)/
	$(PY) -m cookiecutter --no-input --overwrite-if-exists --output-dir $(OUT) .

# Both in two processes (pytest-xdist). The quick tests a module at a time each: the toolkit's
# modules share one moto server per module. The slow ones one test at a time, except those in
# xdist_group "airflow-venv", which run in order on one worker: they share a cached Airflow venv.
test: $(VENV)/.installed ## the template's tests, without the slow ones (offline)
	$(PY) -m pytest -m "not slow" -n 2 --dist loadfile

test-slow: $(VENV)/.installed ## the slow tests: Airflow install + DAG import, make install, every interruption, the demo
	$(PY) -m pytest -m slow -n 2 --dist loadgroup

demo: $(VENV)/.installed ## the whole flow offline on a local moto: dev, a promotion, prod in another region
	$(PY) tools/demo.py --out $(OUT)

bench: $(VENV)/.installed ## print the benchmark figures
	for script in benchmarks/*.py; do $(PY) $$script || exit 1; done

clean: ## remove generated output and caches
	rm -rf $(OUT) .pytest_cache
