"""Interrupted runs: make the k-th mutating call fail, for every k of a full run, then run
again; the end state must equal a clean run's (no duplicates, nothing orphaned, nothing
missing), and a further run must change nothing.

Two ways to fail: "before" (AWS refused the call: throttled, denied, a network cut before the
request) and "after" (AWS did it, but the answer was lost), the case that makes naive scripts
create duplicates.
"""

from __future__ import annotations

import os

import pytest
from aws_testkit import (
    EksExtras,
    Faults,
    create_cluster,
    instrument,
    make_repo,
    session,
    snapshot,
    stack_for,
)

from airflow_gitops.aws.command import ConvergeError, converge

# case -> (mode, what runs first untouched, the commands of a full run). Together they cover
# every converger: bootstrap of s3-sync with its own image makes the GitHub provider, every CI
# role, the bucket, the registry, IRSA, EKS access and the EBS add-on; apply in efs makes the
# file system and its network (bootstrap first, then those pieces removed); destroy in efs
# deletes all of it, network and file system included.
MODES = {
    "s3-sync+own-image bootstrap": (("s3-sync", "own-image"), (), ("bootstrap",)),
    "efs apply": (("efs", "own-image"), ("bootstrap", "remove-efs"), ("apply",)),
    "efs destroy": (("efs", "own-image"), ("bootstrap",), ("destroy",)),
}


def full_run(stack, root, eks, commands, faults=None) -> list[str]:
    """The commands on one instrumented session; the mutating operations asked for."""
    target = session()
    log = instrument(target, eks, faults)
    for command in commands:
        if command == "remove-efs":
            from test_aws_policy import delete_efs_pieces

            delete_efs_pieces(session(), stack)
            continue
        converge(command, stack, root, target, sleep=lambda seconds: None)
    return log.mutating()


# Losing the answer to a Put/Update (which sets a whole value) leaves the same state as the
# call succeeding; the "after" case matters for calls that make or remove something.
MAKES_SOMETHING = (
    "Create",
    "Attach",
    "Authorize",
    "Add",
    "Associate",
    "Delete",
    "Detach",
    "Disassociate",
    "Revoke",
)


# Every k by default (`make test-slow`, CI). AIRFLOW_GITOPS_INTERRUPT_STRIDE=N runs every N-th
# case and always the last one, for a quicker run while working on the toolkit.
STRIDE = max(1, int(os.environ.get("AIRFLOW_GITOPS_INTERRUPT_STRIDE") or 1))


def cases(mutating: list[str]) -> list[tuple[str, int]]:
    every = [("before", k) for k in range(1, len(mutating) + 1)] + [
        ("after", k) for k, op in enumerate(mutating, 1) if op.startswith(MAKES_SOMETHING)
    ]
    sampled = every[::STRIDE]
    return sampled if sampled[-1] == every[-1] else [*sampled, every[-1]]


# The slowest of the toolkit's tests (a full bootstrap per case): in the slow target. A group
# per mode: `--dist loadgroup` would otherwise keep the module, so all three, on one worker.
@pytest.mark.slow
@pytest.mark.parametrize("mode", [pytest.param(m, marks=pytest.mark.xdist_group(m)) for m in MODES])
def test_every_interrupted_run_is_finished_by_the_next(aws, tmp_path, mode):
    answers, prepare, commands = MODES[mode]
    stack = stack_for(*answers)
    root = make_repo(tmp_path, stack)

    create_cluster()
    clean_eks = EksExtras()
    full_run(stack, root, clean_eks, prepare)
    mutating = full_run(stack, root, clean_eks, commands)
    clean = snapshot(None, clean_eks)
    assert len(mutating) >= 5

    for when, k in cases(mutating):
        aws.reset()
        create_cluster()
        eks = EksExtras()
        full_run(stack, root, eks, prepare)
        faults = Faults(k, when)
        with pytest.raises(ConvergeError, match="injected failure"):
            full_run(stack, root, eks, commands, faults)
        assert faults.fired, (when, k)
        full_run(stack, root, eks, commands)
        assert snapshot(None, eks) == clean, (
            f"{mode}: failing call {k} ({when}) = {mutating[k - 1]}"
        )

    # And once more, after the last recovery: nothing left to do.
    assert full_run(stack, root, eks, commands) == []
