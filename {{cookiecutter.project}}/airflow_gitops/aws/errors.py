"""AWS failures as one line: the resource, the cause or missing permission, the next step."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from airflow_gitops.errors import ToolkitError


class AwsError(ToolkitError):
    """An AWS call failed; the message names the resource, the cause and what to do."""

    exit_code = 1


ACCESS_DENIED = {
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnauthorizedException",
    "AuthorizationError",
}
THROTTLED = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "SlowDown",
    "RequestThrottled",
}
BAD_CREDENTIALS = {
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "InvalidAccessKeyId",
}


def explain_client_error(resource: str, exc) -> str:
    """The one line for a botocore ClientError raised while converging ``resource``."""
    from airflow_gitops.aws.iam_actions import iam_actions

    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = str(error.get("Code") or status)
    if code.isdigit():  # no error code in the answer: botocore fell back to the status
        if status == 403 and (error.get("Message") or "Forbidden") == "Forbidden":
            code = "AccessDenied"  # a HEAD request's refusal, which never has a body
        else:
            return not_an_aws_answer(resource, exc.operation_name, status, exc.response)
    # One line: some endpoints answer with an HTML page (a proxy, a missing API).
    message = " ".join((error.get("Message") or "").split()).rstrip(".")[:300]
    operation = exc.operation_name
    service = service_of(operation)
    actions = ", ".join(iam_actions(service, operation)) if service else operation
    attempts = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
    if code in ACCESS_DENIED:
        return (
            f"{resource}: access denied for {actions} ({operation}); grant it to the "
            "identity you run as (`aws sts get-caller-identity`), or run `make bootstrap` as "
            "an admin if the deploy role's policy is out of date"
        )
    if code in THROTTLED:
        return (
            f"{resource}: AWS throttled {operation} ({code}) after {attempts + 1} attempts "
            "with standard retries; wait a minute and run again, or raise AWS_MAX_ATTEMPTS"
        )
    if code in BAD_CREDENTIALS:
        return (
            f"{resource}: AWS rejected the credentials ({code}) on {operation}; "
            "refresh them (e.g. `aws sso login`) and run again"
        )
    detail = f"{code}: {message}" if message else code
    return f"{resource}: {operation} failed ({detail}); fix the cause above and run again"


def not_an_aws_answer(resource: str, operation: str, status, response: dict) -> str:
    """An answer that was neither JSON nor XML (an HTML page, say): botocore then reports the
    bare status as the code and the whole body as the message; one line instead."""
    import http.client

    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    kind = headers.get("content-type", "").split(";")[0]
    body = f"a {kind} body" if kind else "a body of no declared type"
    reason = http.client.responses.get(status, "") if isinstance(status, int) else ""
    return (
        f"{resource}: {operation} got HTTP {status} {reason} with {body}, not an "
        "AWS error; the endpoint does not answer this call as AWS does (AWS_ENDPOINT_URL?)"
    )


SERVICES = ("sts", "s3", "iam", "eks", "efs", "ec2", "ecr")


def service_of(operation: str) -> str | None:
    """The service (of those the toolkit uses) that has ``operation``, if exactly one has."""
    import botocore.session

    loader = botocore.session.get_session()
    owners = [
        name for name in SERVICES if operation in loader.get_service_model(name).operation_names
    ]
    return owners[0] if len(owners) == 1 else None


@contextmanager
def aws_call(resource: str) -> Iterator[None]:
    """Turn any AWS failure inside the block into an AwsError about ``resource``."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        ParamValidationError,
    )

    try:
        yield
    except ClientError as exc:
        raise AwsError(explain_client_error(resource, exc)) from None
    except NoCredentialsError:
        raise AwsError(
            f"{resource}: no AWS credentials found; set AWS_PROFILE or run "
            "`aws configure sso` (CI: configure-aws-credentials)"
        ) from None
    except EndpointConnectionError as exc:
        raise AwsError(
            f"{resource}: cannot reach {exc.kwargs.get('endpoint_url')}; check the "
            "network, the region in stack.yaml and AWS_ENDPOINT_URL"
        ) from None
    except NoRegionError:
        raise AwsError(f"{resource}: no region; set aws.region in stack.yaml") from None
    except ParamValidationError as exc:
        raise AwsError(f"{resource}: invalid request ({exc}); check stack.yaml") from None
    except BotoCoreError as exc:
        raise AwsError(f"{resource}: {type(exc).__name__}: {exc}") from None
