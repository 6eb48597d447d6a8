"""Loaded by the demo's moto server process only (tools/demo.py puts this folder on its
PYTHONPATH while it starts the server; no other process sees it).

`make bootstrap` gives the DAG bucket the usual TLS-only policy: Deny s3:* when
aws:SecureTransport is "false". moto 5.2.5 skips condition operators it does not know (Bool is
one), so it applies that Deny to every request: each GetObject/PutObject on the bucket gets
403 and `push-dags` cannot work. On AWS every request is HTTPS and the statement never applies.

This teaches moto the Bool operator, evaluates each request as AWS would see it over TLS
(the demo's plain HTTP to 127.0.0.1 stands in for that), and lets a statement whose Condition
does not match do what IAM says it does: not apply (neither allow nor deny).
"""


def _evaluate_tls_only_bucket_policies_like_aws() -> None:
    try:
        from moto.iam import access_control, policy_conditions
    except ImportError:  # not the moto server's interpreter after all
        return

    def bool_equals(expected, actual) -> bool:
        wanted = expected if isinstance(expected, list) else [expected]
        return str(actual).lower() in [str(value).lower() for value in wanted]

    policy_conditions.CONDITION_OPERATIONS.setdefault("Bool", bool_equals)
    statement = access_control.IAMPolicyStatement
    original = statement.is_action_permitted

    def is_action_permitted(
        self, action, resource="*", principal=None, incoming_condition_values=None
    ):
        values = {"aws:SecureTransport": "true", **(incoming_condition_values or {})}
        if self._statement.get("Condition") and not self._check_conditions(values):
            return access_control.PermissionResult.NEUTRAL
        return original(self, action, resource, principal, values)

    statement.is_action_permitted = is_action_permitted


_evaluate_tls_only_bucket_policies_like_aws()
