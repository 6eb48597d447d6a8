"""`python -m airflow_gitops ...` in its own process, with the EKS operations moto lacks answered
from the in-memory model of aws_testkit.EksExtras (kept in the file $EKS_FAKE_STATE between
runs). Everything else reaches moto only through AWS_ENDPOINT_URL. Used by the CLI and make
end-to-end tests: `python tests/cli_with_eks_fake.py plan`, or `make plan TOOLKIT=...`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, os.getcwd())

import airflow_gitops.aws.session as aws_session
from airflow_gitops.cli import main
from aws_testkit import EksExtras, instrument

STATE = Path(os.environ["EKS_FAKE_STATE"])
MODEL = EksExtras.load(STATE)
_new_session = aws_session.new_session


def new_session(region: str):
    target = _new_session(region)
    instrument(target, MODEL)
    return target


aws_session.new_session = new_session
try:
    code = main(sys.argv[1:])
finally:
    MODEL.save(STATE)
raise SystemExit(code)
