"""The DAG sync script runs from helm/values.yaml, where it is written inline; the copy in
images/aws-cli/ is the one that is linted and read. They must stay the same, byte for byte."""

from __future__ import annotations

import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_helm_values_embed_the_sync_script():
    values = (REPO / "helm" / "values.yaml").read_text()
    script = (REPO / "images" / "aws-cli" / "dag-sync.sh").read_text().rstrip("\n")
    assert any(textwrap.indent(script, " " * n) in values for n in range(2, 21, 2)), (
        "helm/values.yaml does not contain images/aws-cli/dag-sync.sh; copy the script there"
    )
