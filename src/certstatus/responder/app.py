"""The responder's ASGI application.

The request path is short on purpose: decode, find the issuer by its CertID hashes in a dict,
read one row, pick the DER for the request's hash algorithm, send. Nothing is signed here and no
key is held: web nodes hold no signing key (R25).
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.serialization import Encoding

from certstatus.cache.keys import certificate_key, crl_key, issuer_key, surrogate_headers
from certstatus.config import IssuerCertificates, load_config, load_issuer_certificates
from certstatus.crl.layout import CrlLayout
from certstatus.ocsp import response as ocsp_response
from certstatus.ocsp.certid import HashAlgorithm, issuer_keys
from certstatus.ocsp.request import (
    MAX_POST_BODY,
    CertRequest,
    MalformedRequest,
    decode_get_path,
    decode_request,
)
from certstatus.responder import headers as h
from certstatus.responder.refusals import RefusalLog
from certstatus.responder.sha256asks import Sha256Asks
from certstatus.responder.source import ResponseSource, open_response_source
from certstatus.store.base import NotSignedYet, StoreError

if TYPE_CHECKING:  # metrics.py is imported only once the server has set up prometheus_client
    from certstatus.responder.metrics import TryLaterReason

log = logging.getLogger("certstatus.responder")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
IssuerIndex = dict[tuple[HashAlgorithm, bytes, bytes], int]


class Outcome(Enum):
    """What an answer was, for metrics: an authoritative answer is counted by its status."""

    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"
    UNAUTHORIZED = "unauthorized"
    MALFORMED = "malformed"
    TRY_LATER = "tryLater"
    NOT_MODIFIED = "304"
    ERROR = "error"


class NoMetrics:
    """The metrics sink of an app without metrics (tests, tools)."""

    def answered(self, outcome: str, source: str, seconds: float) -> None:
        pass

    def sha256_asked(self, result: str) -> None:
        pass

    def try_later(self, reason: TryLaterReason) -> None:
        pass


def issuer_index(issuers: Sequence[tuple[int, IssuerCertificates]]) -> IssuerIndex:
    """Map every (hash algorithm, issuerNameHash, issuerKeyHash) we answer for to an issuer id."""
    index: IssuerIndex = {}
    for issuer_id, material in issuers:
        for algorithm, key in issuer_keys(material.certificate).items():
            index[(algorithm, key.name_hash, key.key_hash)] = issuer_id
    return index


class OcspApp:
    def __init__(
        self,
        source: ResponseSource,
        index: IssuerIndex,
        max_post_body: int = MAX_POST_BODY,
        request_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        crl_layouts: Sequence[tuple[int, CrlLayout]] = (),
        drain_file: str | None = None,
        metrics: Any = None,
        admin_paths: bool = True,
    ) -> None:
        """admin_paths=False: /metrics and /sources are served by the admin listener
        (responder.admin_listen, responder/admin.py) and this app answers them 404."""
        self.metrics = metrics or NoMetrics()
        self._status_by_tag: dict[str, Outcome] = {}
        self.source = source
        self.drain_file = drain_file
        self.index = index
        self.crl_layouts = list(crl_layouts)
        self.max_post_body = max_post_body
        self.request_timeout = request_timeout
        self.clock = clock
        self.refusals = RefusalLog("answered tryLater")
        self.ask_sha256 = Sha256Asks(source.want_sha256, clock, self.metrics.sha256_asked)
        self._endpoints: dict[str, Callable[[], Awaitable[Answer]]] = {
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/sources": self._sources if admin_paths else self._not_here,
            "/metrics": self._metrics if admin_paths else self._not_here,
        }

    async def handle(
        self,
        method: str,
        path: str,
        if_none_match: str | None = None,
        body: AsyncIterator[bytes] | None = None,
        declared_length: int | None = None,
    ) -> Answer | None:
        """The answer to one request, whatever server interface carried it; None when the
        client left before its body arrived (nobody to answer). A body whose declared
        Content-Length is over the limit is refused before any of it is read."""
        if method == "POST" and path not in self._endpoints:
            if declared_length is not None and declared_length > self.max_post_body:
                return _TOO_LARGE
            posted = await self._read_body(body or _empty())
            if not isinstance(posted, bytes):
                return posted
            return await self.respond(method, path, None, posted)
        return await self.respond(method, path, if_none_match, None)

    async def respond(
        self, method: str, path: str, if_none_match: str | None, body: bytes | None
    ) -> Answer:
        """The answer to one request whose body (if any) the server has read whole, within
        its own size limit and deadline (http1.py; handle() reads it for the others).

        The native server runs it up to its first wait outside any task (http1.py, _resume):
        nothing here may need a task (asyncio.timeout, current_task) before an await."""
        endpoint = self._endpoints.get(path)
        if endpoint is not None:
            return await endpoint()
        if method in ("GET", "HEAD"):
            if path.endswith(".crl"):
                return await self._crl(path, if_none_match)
            started = time.perf_counter()
            answer, outcome, source = await self._answer(
                lambda: decode_request(decode_get_path(path)), if_none_match
            )
        elif method == "POST":
            posted = body or b""
            started = time.perf_counter()
            answer, outcome, source = await self._answer(lambda: decode_request(posted), None)
        else:
            return Answer(405, [("allow", "GET, HEAD, POST"), ("cache-control", "no-store")], b"")
        self.metrics.answered(outcome.value, source, time.perf_counter() - started)
        return answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI interface (uvicorn, tests); granian uses rsgi.py's."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        raw = scope.get("raw_path")
        match = [v.decode("latin-1") for n, v in scope["headers"] if n == b"if-none-match"]
        lengths = [v for n, v in scope["headers"] if n == b"content-length"]
        answer = await self.handle(
            scope["method"],
            raw.decode("latin-1") if raw else scope["path"],
            ", ".join(match) if match else None,
            _asgi_body(receive),
            declared_length(lengths[0].decode("latin-1") if len(lengths) == 1 else None),
        )
        if answer is None:
            return
        headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in answer.headers]
        headers.append((b"content-length", b"%d" % len(answer.body)))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        body = b"" if scope["method"] == "HEAD" else answer.body
        await send({"type": "http.response.body", "body": body})

    async def _read_body(self, chunks: AsyncIterator[bytes]) -> bytes | Answer | None:
        """The POST body, or the 413/408 answer for a body too big or too slow (R14), or None
        when the client is gone.

        One deadline for the whole body: a timer per chunk (asyncio.wait_for, a task each)
        cost more than the rest of a POST's answer."""
        received: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.request_timeout):
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_post_body:
                        return _TOO_LARGE
                    received.append(chunk)
        except TimeoutError:
            return Answer(408, h.NO_STORE_TEXT, b"request body too slow\n")
        except ClientGone:
            return None
        except BrokenBody:
            return Answer(400, h.NO_STORE_TEXT, b"invalid request body framing\n")
        return received[0] if len(received) == 1 else b"".join(received)

    async def _answer(
        self, decode: Callable[[], CertRequest], if_none_match: str | None
    ) -> tuple[Answer, Outcome, str]:
        """Answer one OCSP request; with what the answer was and which database gave it."""
        try:
            request = decode()
        except MalformedRequest:
            return Answer(200, h.NO_STORE, ocsp_response.MALFORMED_REQUEST), Outcome.MALFORMED, ""
        algorithm = request.algorithm
        issuer_id = (
            None
            if algorithm is None
            else self.index.get((algorithm, request.name_hash, request.key_hash))
        )
        if algorithm is None or issuer_id is None:
            return _UNAUTHORIZED, Outcome.UNAUTHORIZED, ""  # R10
        try:
            stored = await self.source.response(issuer_id, request.serial, algorithm)
        except StoreError as exc:
            self.refusals.refused(str(exc))
            self.metrics.try_later("not_signed" if isinstance(exc, NotSignedYet) else "no_source")
            return _TRY_LATER, Outcome.TRY_LATER, ""
        except Exception:
            log.exception("lookup failed")
            return Answer(200, h.NO_STORE, ocsp_response.INTERNAL_ERROR), Outcome.ERROR, ""
        now = int(self.clock())
        if stored is None:
            # R5: a serial we have no response for is never "good"; it is not ours to answer.
            return _UNAUTHORIZED, Outcome.UNAUTHORIZED, ""
        if stored.next_update <= now:
            self.refusals.refused(
                "a stored response is past its nextUpdate; is the signer running?"
            )
            self.metrics.try_later("expired")
            return _TRY_LATER, Outcome.TRY_LATER, stored.source
        der = stored.der
        if not der:  # a SHA-256 response signed on request, not yet: the signers are asked
            self.ask_sha256(issuer_id, request.serial)
            self.metrics.try_later("sha256_on_request")
            return _TRY_LATER, Outcome.TRY_LATER, stored.source
        headers, tag = h.authoritative(
            der, stored.this_update, stored.next_update, stored.refresh_at, now
        )
        headers += surrogate_headers(
            (issuer_key(issuer_id), certificate_key(issuer_id, request.serial))
        )
        if stored.source:
            headers.append(("certstatus-source", stored.source))
        if if_none_match is not None and h.etag_matches(if_none_match, tag):
            return Answer(304, headers[1:], b""), Outcome.NOT_MODIFIED, stored.source
        return Answer(200, headers, der), self._status(tag, der), stored.source

    def _status(self, tag: str, der: bytes) -> Outcome:
        """good/revoked of a response, remembered by its ETag (a digest of its bytes): the
        same response is served many times, and reading its DER each time showed in profiles."""
        status = self._status_by_tag.get(tag)
        if status is None:
            if len(self._status_by_tag) >= 100_000:
                self._status_by_tag.clear()
            status = self._status_by_tag[tag] = Outcome(ocsp_response.cert_status_of(der))
        return status

    async def _crl(self, path: str, if_none_match: str | None) -> Answer:
        """A published CRL at its configured path (R15); '.' never occurs in an OCSP GET path."""
        for issuer_id, layout in self.crl_layouts:
            partition = layout.partition_from_path(path)
            if partition is None:
                continue
            try:
                crl = await self.source.crl(issuer_id, partition)
            except StoreError:
                return Answer(503, h.NO_STORE_TEXT, b"CRL store unavailable\n")
            if crl is None:
                break
            headers, tag = h.crl(
                crl.der, crl.this_update, crl.next_update, crl.next_build_at, int(self.clock())
            )
            headers += surrogate_headers((issuer_key(issuer_id), crl_key(issuer_id, partition)))
            if if_none_match is not None and h.etag_matches(if_none_match, tag):
                return Answer(304, headers[1:], b"")
            return Answer(200, headers, crl.der)
        return Answer(404, h.NO_STORE_TEXT, b"no such CRL\n")

    async def _healthz(self) -> Answer:
        return Answer(200, [("content-type", "text/plain"), ("cache-control", "no-store")], b"ok\n")

    async def _sources(self) -> Answer:
        """Each source's measured staleness and whether it is in use (operators, drills)."""
        body = json.dumps(self.source.describe()).encode()
        return Answer(
            200, [("content-type", "application/json"), ("cache-control", "no-store")], body
        )

    async def _metrics(self) -> Answer:
        from certstatus.responder.metrics import render

        body, content_type = render()
        return Answer(200, [("content-type", content_type), ("cache-control", "no-store")], body)

    async def _not_here(self) -> Answer:
        return Answer(404, h.NO_STORE_TEXT, b"not on this port: see responder.admin_listen\n")

    async def _readyz(self) -> Answer:
        if self.drain_file and os.path.exists(self.drain_file):
            return Answer(503, h.NO_STORE_TEXT, b"not ready: draining (drain file exists)\n")
        reason = self.source.ready()
        if reason is not None:
            return Answer(503, h.NO_STORE_TEXT, f"not ready: {reason}\n".encode())
        return Answer(200, h.NO_STORE_TEXT, b"ready\n")


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer before a server interface sends it. Both interfaces (ASGI above, RSGI in
    rsgi.py) send exactly these headers plus Content-Length, and for HEAD no body."""

    status: int
    headers: h.Headers
    body: bytes


_UNAUTHORIZED = Answer(200, h.NO_STORE, ocsp_response.UNAUTHORIZED)
_TRY_LATER = Answer(200, h.NO_STORE, ocsp_response.TRY_LATER)
_TOO_LARGE = Answer(413, h.NO_STORE_TEXT, b"request body too large\n")


class ClientGone(Exception):
    """The client disconnected while its request body was arriving."""


class BrokenBody(Exception):
    """The request body's HTTP framing was invalid (e.g. a bad chunk size): HTTP 400."""


def declared_length(header: str | None) -> int | None:
    """A Content-Length that is a plain decimal number, else None (the server refuses a bad one
    before the app sees it; None keeps the body read chunk by chunk under the limit)."""
    if header is None or not (header.isascii() and header.isdigit()):
        return None
    return int(header)


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing


async def _asgi_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


CONFIG_ENV = "CERTSTATUS_CONFIG"


def create_app() -> OcspApp:
    """Factory for servers that import the app in each worker process; reads CERTSTATUS_CONFIG."""
    # `kill -USR1 <worker pid>` prints every thread's stack to the server's log: for a worker
    # that will not stop or answer. A C-level handler, so it works even while the worker's
    # threads wait on each other for the interpreter lock.
    if sys.stderr is not None:  # no stderr (fd 2 closed): no dumps, but still a responder
        faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    config = load_config(Path(os.environ.get(CONFIG_ENV, "certstatus.toml")))
    materials = load_issuer_certificates(config)  # public material only: no key is read (R25)
    source = open_response_source(config)
    recorded = {(r.name, r.certificate_der): r.id for r in source.issuers()}
    known = []
    for material in materials:
        issuer_id = recorded.get((material.name, material.certificate.public_bytes(Encoding.DER)))
        if issuer_id is None:
            log.warning(
                "issuer %s is not in the database yet; its requests get unauthorized "
                "until `certstatus serve` or `certstatus add` registers it",
                material.name,
            )
            continue
        known.append((issuer_id, material))
    index = issuer_index(known)
    layouts = [(issuer_id, m.crl) for issuer_id, m in known if m.crl is not None]
    from certstatus.responder.metrics import ResponderMetrics

    metrics = ResponderMetrics()
    source.report_to(metrics)
    return OcspApp(
        source,
        index,
        config.responder.max_post_body,
        config.responder.request_timeout,
        crl_layouts=layouts,
        drain_file=config.responder.drain_file,
        metrics=metrics,
        admin_paths=config.responder.admin_listen is None,
    )
