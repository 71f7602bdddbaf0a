"""The responder on granian's RSGI interface: the same ASGI application, entered without
ASGI's per-message futures between the server and Python (the response goes out in one call).

Only what OcspApp reads is carried over: method, path, the If-None-Match header, and the body
as a stream of chunks (so the body-size and slow-body limits still apply while it arrives).
granian hands RSGI the percent-decoded path; decoding it again is harmless for a base64 OCSP
request, whose alphabet has no '%'.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from certstatus.responder.app import OcspApp


class RsgiResponder:
    def __init__(self, app: OcspApp) -> None:
        self.app = app

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        if scope.proto != "http":
            return
        match = scope.headers.get("if-none-match")
        asgi_scope = {
            "type": "http",
            "method": scope.method,
            "path": scope.path,
            "raw_path": scope.path.encode("utf-8", "surrogateescape"),
            "headers": [] if match is None else [(b"if-none-match", match.encode("latin-1"))],
        }
        response = _Response(protocol, head=scope.method == "HEAD")
        body = _Body(protocol) if scope.method == "POST" else None
        await self.app(asgi_scope, body.receive if body else _no_body, response.send)


async def _no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


class _Body:
    def __init__(self, protocol: Any) -> None:
        self._chunks: AsyncIterator[bytes] = protocol.__aiter__()

    async def receive(self) -> dict[str, Any]:
        try:
            chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": bytes(chunk), "more_body": True}


class _Response:
    """Collects the ASGI start and body messages and answers with one response_bytes."""

    def __init__(self, protocol: Any, head: bool = False) -> None:
        self.protocol = protocol
        self.head = head
        self.status = 500
        self.headers: list[tuple[str, str]] = []

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            # the server sets Content-Length from the body; a HEAD answer keeps the GET's
            self.headers = [
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in message["headers"]
                if self.head or name != b"content-length"
            ]
        elif message["type"] == "http.response.body":
            if self.head:
                self.protocol.response_empty(self.status, self.headers)
            else:
                self.protocol.response_bytes(self.status, self.headers, message.get("body", b""))


def create_rsgi_app() -> RsgiResponder:
    """Factory for granian's RSGI workers; reads CERTSTATUS_CONFIG like create_app."""
    from certstatus.responder.app import create_app

    return RsgiResponder(create_app())
