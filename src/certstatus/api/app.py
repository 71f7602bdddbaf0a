"""The issuance API's ASGI application: routes, limits, waiting, and the audit of refusals.

Every write goes through ingest (ingest/api.py), the library behind `certstatus add` and
`revoke`, so the API applies exactly their checks, and the store appends the audit entry in the
transaction of the change: a 2xx is sent only after that transaction committed. Every refused
request (403, 4xx on a body, 429) is appended to the audit log too, in a transaction of its own,
with the caller, the request id and why. Blocking store calls run on worker threads; the event
loop only parses and waits.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

from certstatus.api import bodies
from certstatus.api.auth import Caller, Clients
from certstatus.api.bodies import BadRequest
from certstatus.api.limits import RateLimiter
from certstatus.api.openapi import document
from certstatus.config import Config, parse_duration
from certstatus.ingest.api import Ingest, IngestError, Revocation, parse_serial
from certstatus.ocsp.reasons import NAMES
from certstatus.store import heartbeat_of
from certstatus.store.audit import as_json
from certstatus.store.base import AuditContext, RevokeOutcome, Store, StoreError

log = logging.getLogger("certstatus.api")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_CERTIFICATE = re.compile(r"^/v1/certificates/([^/]+)/([^/]+)$")
DEFAULT_WAIT = 5.0
WAIT_POLL = 0.05
JSON_TYPES = ("application/json",)
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-seq")


def rfc3339(seconds: int | None) -> str | None:
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Request:
    scope: Scope
    receive: Receive
    request_id: str
    caller: Caller | None = None

    @property
    def method(self) -> str:
        return str(self.scope["method"])

    @property
    def path(self) -> str:
        return str(self.scope["path"])

    def header(self, name: bytes) -> str | None:
        for key, value in self.scope.get("headers", []):
            if key == name:
                return bytes(value).decode("latin-1")
        return None

    @property
    def content_type(self) -> str:
        return (self.header(b"content-type") or "").split(";")[0].strip().lower()

    def query(self) -> dict[str, str]:
        parsed = parse_qs(bytes(self.scope.get("query_string", b"")).decode("latin-1"))
        return {k: v[-1] for k, v in parsed.items()}

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise BadRequest(400, "disconnected", "the client went away mid-body")
            yield message.get("body", b"")
            if not message.get("more_body"):
                return

    async def body(self, limit: int) -> bytes:
        """The whole body, refused with 413 past limit (by Content-Length before reading)."""
        length = self.header(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise BadRequest(
                413, "body_too_large", f"the body is over {limit} bytes ([api] max_body)"
            )
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            size += len(chunk)
            if size > limit:
                raise BadRequest(
                    413, "body_too_large", f"the body is over {limit} bytes ([api] max_body)"
                )
            parts.append(chunk)
        return b"".join(parts)


class ApiApp:
    """The ASGI app. store is ingest's store (the primary); replicas are read-only stores the
    ?wait=replicated answer checks (PostgreSQL replicas; none on SQLite)."""

    def __init__(
        self,
        config: Config,
        ingest: Ingest,
        replicas: Sequence[Store] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.api = config.api
        self.ingest = ingest
        self.store: Store = ingest.store  # type: ignore[assignment]
        self.replicas = list(replicas)
        self.clients = Clients(config.api)
        self.limiter = RateLimiter(config.api.rate, config.api.burst)
        self.clock = clock
        self._document = json.dumps(document()).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        given = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        request = Request(scope, receive, request_id)
        try:
            status, body, headers = await self._route(request)
        except BadRequest as refused:
            status, body, headers = await self._refuse(request, refused)
        except StoreError as exc:
            log.error("request %s: database unavailable: %s", request_id, exc)
            status, body, headers = 503, self._error(request, "unavailable", str(exc)), []
            headers = [(b"retry-after", b"1")]
        await self._send(send, request, status, body, headers)

    # plumbing

    def _error(self, request: Request, code: str, message: str, **extra: Any) -> dict[str, Any]:
        return {
            "error": {"code": code, "message": message},
            "request_id": request.request_id,
            **extra,
        }

    async def _refuse(
        self, request: Request, refused: BadRequest
    ) -> tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]:
        """A refused request's answer, after its audit entry is committed."""
        actor = request.caller.actor if request.caller else "unauthenticated"
        detail = f"{refused.status} {request.method} {request.path}: {refused.message}"
        await asyncio.to_thread(
            self.store.audit_refusal,
            AuditContext(actor, request.request_id),
            detail,
            int(self.clock()),
        )
        headers = []
        extra = dict(refused.extra)
        if refused.status == 429:
            headers.append((b"retry-after", str(extra.pop("retry_after", 1)).encode()))
        return refused.status, self._error(request, refused.code, refused.message, **extra), headers

    async def _send(
        self,
        send: Send,
        request: Request,
        status: int,
        body: dict[str, Any] | bytes,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                    (b"cache-control", b"no-store"),
                    (b"x-request-id", request.request_id.encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})

    def _admit(self, request: Request, permission: str | None) -> None:
        """Authenticate, authorise, rate-limit: BadRequest (401/403/429) when refused."""
        caller = self.clients.identify(request.scope)
        request.caller = caller
        if caller is None:
            raise BadRequest(401, "no_client_certificate", "a client certificate is required")
        if caller.client is None:
            raise BadRequest(
                403,
                "unknown_client",
                "this client certificate is not configured in [[api.clients]]",
            )
        if permission is not None and permission not in caller.permissions:
            raise BadRequest(
                403, "forbidden", f"client {caller.client!r} lacks the {permission!r} permission"
            )
        wait = self.limiter.take(caller.actor)
        if wait is not None:
            refused = BadRequest(
                429, "rate_limited", f"over {self.api.rate:g} requests/s; retry after {wait}s"
            )
            refused.extra["retry_after"] = wait
            raise refused

    async def _route(
        self, request: Request
    ) -> tuple[int, dict[str, Any] | bytes, list[tuple[bytes, bytes]]]:
        path, method = request.path, request.method
        routes: dict[str, dict[str, tuple[str | None, Any]]] = {
            "/v1/openapi.json": {"GET": (None, self._openapi)},
            "/v1/certificates": {"POST": ("record", self._record)},
            "/v1/revocations": {"POST": ("revoke", self._revoke)},
        }
        match = _CERTIFICATE.match(path)
        methods = routes.get(path) or ({"GET": ("read", self._read)} if match else None)
        if methods is None:
            self._admit(request, None)
            raise BadRequest(404, "not_found", f"no such endpoint {path}")
        if method not in methods:
            self._admit(request, None)
            raise BadRequest(405, "method_not_allowed", f"{path} allows {', '.join(methods)}")
        permission, handler = methods[method]
        self._admit(request, permission)
        result: tuple[int, dict[str, Any] | bytes, list[tuple[bytes, bytes]]] = await handler(
            request
        )
        return result

    # endpoints

    async def _openapi(self, request: Request) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        return 200, self._document, []

    def _wait_mode(self, request: Request) -> tuple[str | None, float]:
        query = request.query()
        mode = query.get("wait")
        if mode is None:
            if "timeout" in query:
                raise BadRequest(400, "bad_query", "timeout is only meaningful with wait")
            return None, 0.0
        if mode not in ("authoritative", "replicated"):
            raise BadRequest(400, "bad_query", "wait must be authoritative or replicated")
        timeout = DEFAULT_WAIT
        if "timeout" in query:
            try:
                timeout = float(parse_duration(query["timeout"]))
            except ValueError:
                raise BadRequest(400, "bad_query", "timeout must be like 5s or 2m") from None
        if not 0 < timeout <= self.api.max_wait:
            raise BadRequest(
                400, "bad_query", f"timeout must be more than 0 and at most {self.api.max_wait}s"
            )
        return mode, timeout

    async def _record(self, request: Request) -> tuple[int, dict[str, Any], list[Any]]:
        mode, timeout = self._wait_mode(request)
        body = await request.body(self.api.max_body)
        certificates = bodies.certificates(body, request.content_type)
        if len(certificates) > self.api.max_batch:
            raise BadRequest(
                413,
                "batch_too_large",
                f"{len(certificates)} certificates; at most {self.api.max_batch}",
            )
        context = AuditContext(request.caller.actor, request.request_id)  # type: ignore[union-attr]
        try:
            result = await asyncio.to_thread(
                self.ingest.add_certificates, certificates, int(self.clock()), context
            )
        except IngestError as exc:
            raise BadRequest(422, "refused", str(exc)) from None
        answer: dict[str, Any] = {
            "request_id": request.request_id,
            "added": result.added,
            "known": result.existing,
            "certificates": [
                {"issuer": self.ingest.issuer_name(i), "serial": f"{s:x}", "outcome": outcome}
                for i, s, outcome in result.outcomes
            ],
        }
        status = 200
        if mode is not None:
            targets = await asyncio.to_thread(
                self._versions, [(i, s) for i, s, _ in result.outcomes]
            )
            answer["wait"] = await self._wait(mode, timeout, targets)
            status = 200 if answer["wait"]["satisfied"] else 202
        return status, answer, []

    async def _revoke(self, request: Request) -> tuple[int, dict[str, Any], list[Any]]:
        if request.content_type in NDJSON_TYPES:
            if request.query().get("wait"):
                raise BadRequest(400, "bad_query", "wait is not offered for NDJSON bulk bodies")
            return await self._revoke_stream(request)
        if request.content_type not in JSON_TYPES:
            raise BadRequest(
                415,
                "unsupported_media_type",
                "send application/json (an object or an array) or application/x-ndjson",
            )
        mode, timeout = self._wait_mode(request)
        items = bodies.revocations_json(await request.body(self.api.max_body))
        if len(items) > self.api.max_batch:
            raise BadRequest(
                413, "batch_too_large", f"{len(items)} revocations; at most {self.api.max_batch}"
            )
        outcomes = await self._apply(request, items)
        answer: dict[str, Any] = {
            "request_id": request.request_id,
            "revoked": sum(o.changed for o in outcomes),
            "unchanged": sum(not o.changed for o in outcomes),
            "revocations": [self._revocation_json(o) for o in outcomes],
        }
        status = 200
        if mode is not None:
            targets = {(o.row.issuer_id, o.row.serial): o.row.version for o in outcomes}
            answer["wait"] = await self._wait(mode, timeout, targets)
            status = 200 if answer["wait"]["satisfied"] else 202
        return status, answer, []

    async def _apply(self, request: Request, items: list[Revocation]) -> list[RevokeOutcome]:
        context = AuditContext(request.caller.actor, request.request_id)  # type: ignore[union-attr]
        try:
            return await asyncio.to_thread(
                self.ingest.revoke_many, items, int(self.clock()), context, True
            )
        except IngestError as exc:
            raise BadRequest(422, "refused", str(exc)) from None

    async def _revoke_stream(self, request: Request) -> tuple[int, dict[str, Any], list[Any]]:
        """NDJSON: applied in chunks of max_batch lines, each validated whole and committed in
        one transaction before the next is read, so a million lines need no more memory than
        one chunk. The first bad line stops the stream: its chunk writes nothing, the chunks
        before it stay committed, and the 4xx says through which line (resume after it)."""
        chunk: list[Revocation] = []
        done = {"revoked": 0, "unchanged": 0, "lines": 0, "through_line": 0}
        last = 0
        try:
            async for number, line in bodies.ndjson_lines(request.chunks()):
                chunk.append(bodies.ndjson_revocation(line, number))
                last = number
                if len(chunk) >= self.api.max_batch:
                    self._count(done, await self._apply(request, chunk), last)
                    chunk = []
            if chunk:
                self._count(done, await self._apply(request, chunk), last)
        except BadRequest as refused:
            refused.message += (
                f"; lines through {done['through_line']} are committed "
                f"({done['lines']} revocations), nothing after"
            )
            refused.extra["committed"] = done
            raise
        if not done["lines"]:
            raise BadRequest(400, "empty_body", "no revocation lines in the body")
        return 200, {"request_id": request.request_id, **done}, []

    @staticmethod
    def _count(done: dict[str, int], outcomes: list[RevokeOutcome], through: int) -> None:
        done["revoked"] += sum(o.changed for o in outcomes)
        done["unchanged"] += sum(not o.changed for o in outcomes)
        done["lines"] += len(outcomes)
        done["through_line"] = through

    def _revocation_json(self, outcome: RevokeOutcome) -> dict[str, Any]:
        row = outcome.row
        return {
            "issuer": self.ingest.issuer_name(row.issuer_id),
            "serial": f"{row.serial:x}",
            "outcome": "revoked" if outcome.changed else "unchanged",
            "reason": NAMES.get(row.reason or 0, str(row.reason)),
            "time": rfc3339(row.revoked_at),
        }

    async def _read(self, request: Request) -> tuple[int, dict[str, Any], list[Any]]:
        match = _CERTIFICATE.match(request.path)
        assert match is not None
        issuer, serial_text = unquote(match.group(1)), unquote(match.group(2))
        try:
            issuer_id = self.ingest.issuer_id(issuer)
        except IngestError as exc:
            raise BadRequest(404, "unknown_issuer", str(exc)) from None
        try:
            serial = parse_serial(serial_text)
        except IngestError as exc:
            raise BadRequest(400, "bad_serial", str(exc)) from None
        row, info, trail = await asyncio.to_thread(self._certificate, issuer_id, serial)
        if row is None:
            raise BadRequest(
                404, "unknown_serial", f"serial {serial:x} is not recorded for {issuer}"
            )
        now = int(self.clock())
        responses = []
        if info is not None:
            for algorithm, der in (("sha1", info.der_sha1), ("sha256", info.der_sha256)):
                if not der:  # not signed: a SHA-256 response signed on request, not asked yet
                    continue
                responses.append(
                    {
                        "certid_hash": algorithm,
                        "der_sha256": hashlib.sha256(der).hexdigest(),
                        "this_update": rfc3339(info.this_update),
                        "next_update": rfc3339(info.next_update),
                        "version": info.version,
                        "current": info.version == row.version and info.next_update > now,
                    }
                )
        return (
            200,
            {
                "issuer": issuer,
                "serial": f"{serial:x}",
                "kind": row.kind,
                "status": "revoked" if row.revoked else "good",
                "reason": NAMES.get(row.reason, str(row.reason)) if row.revoked else None,
                "revocation_time": rfc3339(row.revoked_at) if row.revoked else None,
                "not_before": rfc3339(row.not_before),
                "not_after": rfc3339(row.not_after),
                "version": row.version,
                "responses": responses,
                "audit": [as_json(entry) for entry in trail],
            },
            [],
        )

    def _certificate(self, issuer_id: int, serial: int) -> tuple[Any, Any, Any]:
        return (
            self.store.certificate(issuer_id, serial),
            self.store.response_info(issuer_id, serial),
            self.store.audit_for(issuer_id, serial),
        )

    # waiting for signed responses

    def _versions(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], int]:
        """The version each certificate has now: its response must reach it."""
        found: dict[tuple[int, int], int] = {}
        for issuer_id in {i for i, _ in keys}:
            rows = self.store.certificates_many(issuer_id, [s for i, s in keys if i == issuer_id])
            found.update(((issuer_id, s), row.version) for s, row in rows.items())
        return found

    def _missing(self, store: Store, targets: dict[tuple[int, int], int]) -> int:
        missing = 0
        for issuer_id in {i for i, _ in targets}:
            wanted = {s: v for (i, s), v in targets.items() if i == issuer_id}
            have = store.response_versions(issuer_id, list(wanted))
            missing += sum(1 for s, v in wanted.items() if have.get(s, 0) < v)
        return missing

    def _pending(self, mode: str, targets: dict[tuple[int, int], int]) -> tuple[int, list[str]]:
        """Responses not yet stored where mode asks: on the primary, and (replicated) on every
        replica fresh enough that a responder uses it; stale replicas are skipped and named."""
        missing = self._missing(self.store, targets)
        skipped: list[str] = []
        if mode == "replicated" and not missing:
            for replica in self.replicas:
                name = getattr(replica, "name", "replica")
                beat = heartbeat_of(replica)
                try:
                    age = beat.heartbeat_age() if beat is not None else None
                    if age is None or age > self.config.responder.max_staleness:
                        skipped.append(name)
                        continue
                    missing += self._missing(replica, targets)
                except StoreError:
                    skipped.append(name)
        return missing, skipped

    async def _wait(
        self, mode: str, timeout: float, targets: dict[tuple[int, int], int]
    ) -> dict[str, Any]:
        started = time.monotonic()
        while True:
            missing, skipped = await asyncio.to_thread(self._pending, mode, targets)
            waited = int((time.monotonic() - started) * 1000)
            if not missing or time.monotonic() - started >= timeout:
                return {
                    "mode": mode,
                    "satisfied": not missing,
                    "pending": missing,
                    "waited_ms": waited,
                    "stale_replicas_skipped": skipped,
                }
            await asyncio.sleep(WAIT_POLL)
