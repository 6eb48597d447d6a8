"""The EKS calls moto lacks, answered for `make demo`; every other request goes on to moto.

moto 5.2.5 has EKS clusters but no access entries and no add-ons: it answers 404 to all seven
operations, so `make bootstrap` (which gives the deploy role a namespace-scoped access entry)
would stop there. The demo points only EKS at this small HTTP front
(``AWS_ENDPOINT_URL_EKS``): it keeps access entries, their access policies and add-ons in
memory and forwards everything else, DescribeCluster included, to moto unchanged. The toolkit
runs exactly as it runs against AWS; nothing is patched inside it.

Only for the demo. The toolkit's own tests answer these calls with botocore's Stubber.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

HOST = "127.0.0.1"
# Hop-by-hop or recomputed headers, never copied between the two connections.
SKIP_HEADERS = {"host", "connection", "content-length", "transfer-encoding", "keep-alive"}


class EksStandIn:
    """Access entries, associated access policies and add-ons, keyed like EKS keys them."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.entries: dict[tuple[str, str], dict] = {}
        self.policies: dict[tuple[str, str], dict[str, dict]] = {}
        self.addons: dict[tuple[str, str], dict] = {}
        self.answered: list[str] = []  # operations answered here, in order
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "not started"
        return f"http://{HOST}:{self._server.server_address[1]}"

    def start(self) -> "EksStandIn":
        stand_in = self

        class Handler(_Handler):
            owner = stand_in

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, name="eks-stand-in", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # --- the seven operations --------------------------------------------------------------

    def answer(self, method: str, parts: list[str], body: dict) -> tuple[int, dict] | None:
        """(status, JSON body) for an operation moto lacks; None to forward the request."""
        # parts: ["clusters", cluster, "access-entries" | "addons", ...]
        if len(parts) < 3 or parts[0] != "clusters" or parts[2] not in ("access-entries", "addons"):
            return None
        cluster, kind, rest = parts[1], parts[2], parts[3:]
        with self._lock:
            if kind == "access-entries":
                return self._access(method, cluster, rest, body)
            return self._addon(method, cluster, rest, body)

    def _access(self, method, cluster, rest, body):
        if method == "POST" and not rest:
            self.answered.append("CreateAccessEntry")
            key = (cluster, body.get("principalArn", ""))
            if key in self.entries:
                return _error(409, "ResourceInUseException", "access entry exists")
            self.entries[key] = {
                "clusterName": cluster,
                "principalArn": key[1],
                "type": body.get("type", "STANDARD"),
                "createdAt": _now(),
                "accessEntryArn": f"{key[1]}/access-entry/{cluster}",
            }
            return 200, {"accessEntry": self.entries[key]}
        key = (cluster, rest[0] if rest else "")
        if method == "GET" and len(rest) == 1:
            self.answered.append("DescribeAccessEntry")
            entry = self.entries.get(key)
            return (200, {"accessEntry": entry}) if entry else _not_found("access entry")
        if len(rest) == 2 and rest[1] == "access-policies":
            if key not in self.entries:
                return _not_found("access entry")
            if method == "GET":
                self.answered.append("ListAssociatedAccessPolicies")
                return 200, {
                    "clusterName": cluster,
                    "principalArn": key[1],
                    "associatedAccessPolicies": list(self.policies.get(key, {}).values()),
                }
            if method == "POST":
                self.answered.append("AssociateAccessPolicy")
                association = {
                    "policyArn": body.get("policyArn"),
                    "accessScope": body.get("accessScope"),
                    "associatedAt": _now(),
                    "modifiedAt": _now(),
                }
                self.policies.setdefault(key, {})[association["policyArn"]] = association
                return 200, {
                    "clusterName": cluster,
                    "principalArn": key[1],
                    "associatedAccessPolicy": association,
                }
        return None

    def _addon(self, method, cluster, rest, body):
        if method == "POST" and not rest:
            self.answered.append("CreateAddon")
            key = (cluster, body.get("addonName", ""))
            if key in self.addons:
                return _error(409, "ResourceInUseException", "add-on exists")
            self.addons[key] = {
                "addonName": key[1],
                "clusterName": cluster,
                "status": "ACTIVE",
                "serviceAccountRoleArn": body.get("serviceAccountRoleArn"),
            }
            return 200, {"addon": self.addons[key]}
        key = (cluster, rest[0] if rest else "")
        if method == "GET" and len(rest) == 1:
            self.answered.append("DescribeAddon")
            addon = self.addons.get(key)
            return (200, {"addon": addon}) if addon else _not_found("add-on")
        if method == "POST" and len(rest) == 2 and rest[1] == "update":
            self.answered.append("UpdateAddon")
            if key not in self.addons:
                return _not_found("add-on")
            self.addons[key]["serviceAccountRoleArn"] = body.get("serviceAccountRoleArn")
            return 200, {"update": {"id": "demo", "status": "Successful", "type": "AddonUpdate"}}
        return None


class _Handler(BaseHTTPRequestHandler):
    owner: EksStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # the demo's step logs hold the toolkit's own output; this would be noise

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        parts = [unquote(p) for p in urlsplit(self.path).path.split("/") if p]
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        answer = self.owner.answer(self.command, parts, body if isinstance(body, dict) else {})
        if answer is None:
            self._forward(raw)
            return
        status, document = answer
        headers = {"Content-Type": "application/json"}
        if status >= 400:
            headers["x-amzn-ErrorType"] = document["__type"]
        self._send(status, headers, json.dumps(document).encode())

    def _forward(self, raw: bytes) -> None:
        request = urllib.request.Request(
            self.owner.upstream + self.path,
            data=raw if raw else None,
            method=self.command,
            headers={k: v for k, v in self.headers.items() if k.lower() not in SKIP_HEADERS},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, headers, data = response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:  # an AWS error answer is still an answer
            status, headers, data = exc.code, exc.headers, exc.read()
        self._send(
            status, {k: v for k, v in headers.items() if k.lower() not in SKIP_HEADERS}, data
        )

    def _send(self, status: int, headers: dict, data: bytes) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _handle


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _error(status: int, code: str, message: str) -> tuple[int, dict]:
    return status, {"__type": code, "message": message}


def _not_found(what: str) -> tuple[int, dict]:
    return _error(404, "ResourceNotFoundException", f"No {what} found (demo stand-in)")
