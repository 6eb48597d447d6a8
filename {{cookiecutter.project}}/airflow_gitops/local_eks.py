"""The EKS calls moto lacks, answered from memory: the one fake for `make local-aws`, the demo
and this repo's tests.

moto 5.2.5 has EKS clusters but no access entries and no add-ons (it answers 404 with an HTML
page), so `make bootstrap` (an access entry for the deploy role) and `make apply` in efs mode
(the EFS CSI driver add-on) could not run against it. ``EksExtras`` keeps those resources the
way EKS keys them and answers each operation in ``HANDLERS``; everything else goes to moto.

Table-driven: a handler is a method marked ``@handles("OperationName")``. The HTTP side needs
nothing more: the method, path and parameter names of each operation come from botocore's
model of EKS (``route``), so answering another call (pod identity associations, say) is one
method. Two ways in, one model:

- over HTTP, in front of moto (``local_aws`` serves both on one port): ``wsgi(extras, app)``;
- in process, for tests that count calls on a boto3 session: ``extras.answer(op, params)``.
"""

from __future__ import annotations

import io
import json
import re
import threading
from functools import lru_cache
from typing import Callable
from urllib.parse import parse_qs, unquote

Answer = tuple[int, dict]  # (HTTP status, body as botocore returns it to the caller)
HANDLERS: dict[str, Callable[..., Answer]] = {}


def handles(operation: str):
    def register(method):
        HANDLERS[operation] = method
        return method

    return register


def error(status: int, code: str, message: str) -> Answer:
    return status, {"Error": {"Code": code, "Message": message}}


def not_found(what: str) -> Answer:
    return error(404, "ResourceNotFoundException", f"No {what} found (local EKS stand-in)")


def in_use(what: str) -> Answer:
    return error(409, "ResourceInUseException", f"{what} already exists")


class EksExtras:
    """Access entries, their access policies and add-ons, keyed like EKS keys them."""

    def __init__(self, account: str = "123456789012", region: str = "eu-west-1") -> None:
        self._lock = threading.Lock()
        self.account, self.region = account, region  # for the ARNs it makes up
        self.reset()

    def reset(self) -> None:
        self.entries: dict[tuple[str, str], dict] = {}
        self.policies: dict[tuple[str, str], dict[str, dict]] = {}
        self.addons: dict[tuple[str, str], dict] = {}
        self.pod_identities: dict[str, dict] = {}  # association id -> association
        self.answered: list[str] = []  # operations answered here, in order

    def answer(self, operation: str, params: dict) -> Answer:
        with self._lock:
            self.answered.append(operation)
            return HANDLERS[operation](self, params)

    def state(self) -> dict:
        """Everything held, as sorted JSON lines (to compare end states)."""

        def lines(items) -> list[str]:
            return sorted(json.dumps(item, sort_keys=True) for item in items)

        return {
            "addons": lines(self.addons.values()),
            "entries": lines(self.entries.values()),
            "policies": lines(
                {"principalArn": key[1], **association}
                for key, associations in self.policies.items()
                for association in associations.values()
            ),
            # ids differ between runs; what counts is who gets which role
            "pod_identities": sorted(
                (a["namespace"], a["serviceAccount"], a["roleArn"])
                for a in self.pod_identities.values()
            ),
        }

    def save(self, path) -> None:
        """Keep the model in a file, for a CLI run in another process (the repo's tests)."""
        from pathlib import Path

        with self._lock:
            Path(path).write_text(
                json.dumps(
                    {
                        **{
                            name: [[list(key), value] for key, value in getattr(self, name).items()]
                            for name in ("addons", "entries", "policies")
                        },
                        "pod_identities": self.pod_identities,
                    }
                )
            )

    @classmethod
    def load(cls, path):
        """A model with what ``save`` kept in ``path`` (empty when there is no such file)."""
        from pathlib import Path

        model = cls()
        if Path(path).exists():
            data = json.loads(Path(path).read_text())
            model.pod_identities.update(data.pop("pod_identities", {}))
            for name, items in data.items():
                getattr(model, name).update({tuple(key): value for key, value in items})
        return model

    # --- access entries ----------------------------------------------------------------------

    @handles("CreateAccessEntry")
    def _create_access_entry(self, p: dict) -> Answer:
        key = (p["clusterName"], p["principalArn"])
        if key in self.entries:
            return in_use("access entry")
        self.entries[key] = {
            "clusterName": key[0],
            "principalArn": key[1],
            "type": p.get("type", "STANDARD"),
            "kubernetesGroups": list(p.get("kubernetesGroups") or []),
        }
        return 200, {"accessEntry": self.entries[key]}

    @handles("UpdateAccessEntry")
    def _update_access_entry(self, p: dict) -> Answer:
        entry = self.entries.get((p["clusterName"], p["principalArn"]))
        if entry is None:
            return not_found("access entry")
        if "kubernetesGroups" in p:  # the list given replaces the entry's groups
            entry["kubernetesGroups"] = list(p["kubernetesGroups"])
        return 200, {"accessEntry": entry}

    @handles("DescribeAccessEntry")
    def _describe_access_entry(self, p: dict) -> Answer:
        entry = self.entries.get((p["clusterName"], p["principalArn"]))
        return (200, {"accessEntry": entry}) if entry else not_found("access entry")

    @handles("ListAssociatedAccessPolicies")
    def _list_associated_access_policies(self, p: dict) -> Answer:
        key = (p["clusterName"], p["principalArn"])
        if key not in self.entries:
            return not_found("access entry")
        associated = list(self.policies.get(key, {}).values())
        return 200, {
            "clusterName": key[0],
            "principalArn": key[1],
            "associatedAccessPolicies": associated,
        }

    @handles("AssociateAccessPolicy")
    def _associate_access_policy(self, p: dict) -> Answer:
        key = (p["clusterName"], p["principalArn"])
        if key not in self.entries:
            return not_found("access entry")
        association = {"policyArn": p["policyArn"], "accessScope": p["accessScope"]}
        self.policies.setdefault(key, {})[p["policyArn"]] = association
        return 200, {
            "clusterName": key[0],
            "principalArn": key[1],
            "associatedAccessPolicy": association,
        }

    @handles("DeleteAccessEntry")
    def _delete_access_entry(self, p: dict) -> Answer:
        key = (p["clusterName"], p["principalArn"])
        if self.entries.pop(key, None) is None:
            return not_found("access entry")
        self.policies.pop(key, None)
        return 200, {}

    @handles("DisassociateAccessPolicy")
    def _disassociate_access_policy(self, p: dict) -> Answer:
        associations = self.policies.get((p["clusterName"], p["principalArn"]), {})
        if p["policyArn"] not in associations:
            return not_found("access policy association")
        del associations[p["policyArn"]]
        return 200, {}

    # --- add-ons -----------------------------------------------------------------------------

    @handles("CreateAddon")
    def _create_addon(self, p: dict) -> Answer:
        key = (p["clusterName"], p["addonName"])
        if key in self.addons:
            return in_use("add-on")
        self.addons[key] = {
            "addonName": key[1],
            "clusterName": key[0],
            "status": "ACTIVE",
            "serviceAccountRoleArn": p.get("serviceAccountRoleArn"),
            "tags": p.get("tags") or {},  # destroy removes only the add-ons it tagged as made
        }
        return 200, {"addon": self.addons[key]}

    @handles("DeleteAddon")
    def _delete_addon(self, p: dict) -> Answer:
        addon = self.addons.pop((p["clusterName"], p["addonName"]), None)
        return (200, {"addon": addon}) if addon else not_found("add-on")

    @handles("DescribeAddon")
    def _describe_addon(self, p: dict) -> Answer:
        addon = self.addons.get((p["clusterName"], p["addonName"]))
        return (200, {"addon": addon}) if addon else not_found("add-on")

    @handles("UpdateAddon")
    def _update_addon(self, p: dict) -> Answer:
        addon = self.addons.get((p["clusterName"], p["addonName"]))
        if addon is None:
            return not_found("add-on")
        addon["serviceAccountRoleArn"] = p.get("serviceAccountRoleArn")
        return 200, {"update": {"id": "local", "status": "Successful", "type": "AddonUpdate"}}

    # --- EKS Pod Identity associations -----------------------------------------------------

    @handles("ListPodIdentityAssociations")
    def _list_pod_identity_associations(self, p: dict) -> Answer:
        found = [
            a
            for a in self.pod_identities.values()
            if a["clusterName"] == p["clusterName"]
            and a["namespace"] == p.get("namespace", a["namespace"])
            and a["serviceAccount"] == p.get("serviceAccount", a["serviceAccount"])
        ]
        keys = ("clusterName", "namespace", "serviceAccount", "associationId", "associationArn")
        return 200, {"associations": [{k: a[k] for k in keys} for a in found]}

    @handles("CreatePodIdentityAssociation")
    def _create_pod_identity_association(self, p: dict) -> Answer:
        cluster, namespace, account = p["clusterName"], p["namespace"], p["serviceAccount"]
        if any(
            (a["clusterName"], a["namespace"], a["serviceAccount"]) == (cluster, namespace, account)
            for a in self.pod_identities.values()
        ):
            return in_use("pod identity association")
        number = len(self.pod_identities) + 1
        while f"a-{number}" in self.pod_identities:
            number += 1
        association_id = f"a-{number}"
        self.pod_identities[association_id] = {
            "clusterName": cluster,
            "namespace": namespace,
            "serviceAccount": account,
            "roleArn": p["roleArn"],
            "associationId": association_id,
            "tags": p.get("tags") or {},
            "associationArn": f"arn:aws:eks:{self.region}:{self.account}:"
            f"podidentityassociation/{cluster}/{association_id}",
        }
        return 200, {"association": self.pod_identities[association_id]}

    @handles("DescribePodIdentityAssociation")
    def _describe_pod_identity_association(self, p: dict) -> Answer:
        association = self.pod_identities.get(p["associationId"])
        return (200, {"association": association}) if association else not_found("association")

    @handles("UpdatePodIdentityAssociation")
    def _update_pod_identity_association(self, p: dict) -> Answer:
        association = self.pod_identities.get(p["associationId"])
        if association is None:
            return not_found("association")
        association["roleArn"] = p["roleArn"]
        return 200, {"association": association}

    @handles("DeletePodIdentityAssociation")
    def _delete_pod_identity_association(self, p: dict) -> Answer:
        association = self.pod_identities.pop(p["associationId"], None)
        return (200, {"association": association}) if association else not_found("association")


OPERATIONS = frozenset(HANDLERS)


# --- over HTTP -------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _routes() -> list[tuple[str, re.Pattern, dict[str, str], object]]:
    """(method, path pattern, {group: parameter}, operation model) of each handled operation,
    from botocore's model of EKS: the same facts the client uses to build its requests."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("eks")
    routes = []
    for name in sorted(OPERATIONS):
        operation = model.operation_model(name)
        members = operation.input_shape.members if operation.input_shape else {}
        labels = {
            shape.serialization.get("name", member): member
            for member, shape in members.items()
            if shape.serialization.get("location") == "uri"
        }
        path = operation.http["requestUri"].split("?", 1)[0]
        regex, names = "", {}
        for i, part in enumerate(re.split(r"(\{[^}]+\})", path)):
            if part.startswith("{"):
                label = part.strip("{}+")
                names[f"p{i}"] = labels[label]
                regex += f"(?P<p{i}>[^/]+)"
            else:
                regex += re.escape(part)
        routes.append((operation.http["method"], re.compile(f"^{regex}/?$"), names, operation))
    return routes


def route(method: str, path: str, query: str, body: bytes) -> tuple[str, dict] | None:
    """(operation, parameters) for an EKS request this fake answers, else None."""
    for http_method, pattern, names, operation in _routes():
        match = pattern.match(path) if http_method == method else None
        if not match:
            continue
        params = {names[group]: unquote(value) for group, value in match.groupdict().items()}
        members = operation.input_shape.members if operation.input_shape else {}
        document = json.loads(body) if body else {}
        wire_names = {shape.serialization.get("name", m): m for m, shape in members.items()}
        for key, value in (document if isinstance(document, dict) else {}).items():
            params.setdefault(wire_names.get(key, key), value)
        for key, values in parse_qs(query).items():
            params.setdefault(wire_names.get(key, key), values[0])
        return operation.name, params
    return None


def is_eks(environ: dict) -> bool:
    """A SigV4-signed request for the eks service (as moto itself tells services apart)."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    return "/eks/aws4_request" in auth


def wsgi(extras: EksExtras, app):
    """A WSGI app answering ``extras``' operations and passing the rest on to ``app``."""

    def application(environ, start_response):
        if not is_eks(environ):
            return app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        # The path as sent: PATH_INFO is already percent-decoded, and an ARN's "/" would split it.
        raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO", "")
        found = route(
            environ["REQUEST_METHOD"], raw.split("?", 1)[0], environ.get("QUERY_STRING", ""), body
        )
        if found is None:  # moto's, with the body we read put back
            environ["wsgi.input"] = io.BytesIO(body)
            return app(environ, start_response)
        status, document = extras.answer(*found)
        headers = [("Content-Type", "application/json")]
        if "Error" in document:
            headers.append(("x-amzn-ErrorType", document["Error"]["Code"]))
            document = {"message": document["Error"]["Message"]}
        data = json.dumps(document).encode()
        headers.append(("Content-Length", str(len(data))))
        start_response(f"{status} {'OK' if status < 400 else 'Error'}", headers)
        return [data]

    return application
