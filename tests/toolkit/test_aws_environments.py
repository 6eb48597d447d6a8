"""Two environments of one repository on one cluster (issue 17), against moto: each converges
its own roles, buckets and access entries from the same shared files, filled for it; what the
cluster has once (its OIDC provider, the CSI add-on and its role) belongs to the first; and
the second's destroy leaves the first exactly as it was."""

from __future__ import annotations

from airflow_gitops.aws.command import converge
from airflow_gitops.stack import environment_view, read_stack, sharing
from aws_testkit import EksExtras, create_cluster, instrument, session, snapshot
from repos import baked_repo

TWO = baked_repo(environments="dev,prod")


def target(eks: EksExtras):
    instrumented = session()
    instrument(instrumented, eks)
    return instrumented


def test_two_environments_share_a_cluster_and_never_touch_each_other(aws):
    raw = read_stack(TWO)
    dev, prod = environment_view(raw, "dev"), environment_view(raw, "prod")
    assert sharing(raw, "dev") == (None, ["prod"])
    owner, same_account = sharing(raw, "prod")
    assert (owner, same_account) == ("dev", ["dev"])
    create_cluster()
    eks = EksExtras()

    converge("bootstrap", dev, TWO, target(eks))
    after_dev = snapshot(None, eks)
    made = converge(
        "bootstrap", prod, TWO, target(eks), cluster_owner=owner, account_shared_with=("dev",)
    )
    created = {r.name for r in made if r.action == "create"}
    assert "airflow-gitops-prod-deploy" in created
    assert "airflow-gitops-dags-123456789012-eu-west-1-prod" in created
    assert not [n for n in created if "csi" in n], "the cluster's add-on roles are dev's"
    state = snapshot(None, eks)
    prod_roles = {n for n in state["roles"] if n.startswith("airflow-gitops-prod-")}
    assert prod_roles and not any("csi" in n for n in prod_roles)
    # prod's IAM documents name prod's bucket, namespace and GitHub environment, not dev's
    reader = state["roles"]["airflow-gitops-prod-dag-reader"]
    assert "system:serviceaccount:airflow-prod:" in str(reader)
    deploy = state["roles"]["airflow-gitops-prod-deploy"]
    assert ":environment:prod:" in str(deploy) and ":environment:dev:" not in str(deploy)
    assert state["roles"]["airflow-gitops-deploy"] == after_dev["roles"]["airflow-gitops-deploy"]

    # Each environment's plan is clean: neither bootstrap undid the other's.
    for view, cluster_owner in ((dev, None), (prod, owner)):
        planned = converge("plan", view, TWO, target(eks), cluster_owner=cluster_owner)
        assert {r.action for r in planned} == {"ok"}, [
            (r.kind, r.name) for r in planned if r.action != "ok"
        ]

    # prod's destroy takes prod's and leaves dev's, and the account's GitHub provider, alone.
    converge(
        "destroy",
        prod,
        TWO,
        target(eks),
        delete_data=True,
        cluster_owner=owner,
        account_shared_with=("dev",),
    )
    assert snapshot(None, eks) == after_dev
