"""The template's .github/dependabot.yml watches every action SHA and package pin it stamps into
generated repos (GitHub never runs those workflows in the template, so nothing else would)."""

from __future__ import annotations

import fnmatch
import re
import subprocess
from pathlib import Path

import yaml

from conftest import PYTHON, TEMPLATE

CONFIG = TEMPLATE / ".github" / "dependabot.yml"
PINNED = re.compile(r"^\s*(?:-\s*)?uses:\s*[\w.-]+/[\w./-]+@[0-9a-f]{40}\b", re.M)


def watched(ecosystem: str) -> list[str]:
    config = yaml.safe_load(CONFIG.read_text())
    return next(u["directories"] for u in config["updates"] if u["package-ecosystem"] == ecosystem)


def test_config_is_valid_for_dependabot():
    tool = Path(PYTHON).parent / "check-jsonschema"
    result = subprocess.run(
        [str(tool), "--builtin-schema", "vendor.dependabot", str(CONFIG)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_pinned_action_is_watched():
    """Dependabot reads <directory>/.github/workflows/*.yml and <directory>/action.yml."""
    directories = watched("github-actions")
    files = [p for p in (TEMPLATE / "{{cookiecutter.project}}" / ".github").rglob("*.yml")]
    pinned = [p for p in files if PINNED.search(p.read_text())]
    assert pinned, "no SHA-pinned actions found: the pattern is wrong"
    for path in pinned:
        relative = "/" + path.relative_to(TEMPLATE).as_posix()
        if path.parent.name == "workflows":
            folder = relative.rsplit("/.github/workflows/", 1)[0]
        else:
            assert path.name in ("action.yml", "action.yaml"), relative
            folder = relative.rsplit("/", 1)[0]
        assert any(fnmatch.fnmatchcase(folder, d) for d in directories), relative


def test_every_requirements_folder_is_watched():
    folders = {
        "/" + p.parent.relative_to(TEMPLATE).as_posix()
        for p in TEMPLATE.rglob("requirements*.txt")
        if ".venv" not in p.parts and "out" not in p.parts
    }
    folders = {"/" if f == "/." else f for f in folders}
    assert folders == set(watched("pip"))


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", line)
        if match:
            found[match.group(1).lower()] = match.group(2)
    return found


def test_a_package_pinned_in_template_and_product_has_one_version():
    template = pins(TEMPLATE / "requirements.txt")
    product: dict[str, str] = {}
    for path in (TEMPLATE / "{{cookiecutter.project}}").glob("requirements*.txt"):
        product.update(pins(path))
    differ = {name: (v, product[name]) for name, v in template.items()
              if name in product and product[name] != v}  # fmt: skip
    assert not differ, differ
    assert {"cruft", "ruff", "pytest", "boto3"} <= set(template) & set(product)
