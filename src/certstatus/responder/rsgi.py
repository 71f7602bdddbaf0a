"""The responder on granian's RSGI interface: OcspApp.handle entered straight from the server,
and its answer sent in one call, without ASGI's message dicts, per-message awaits and header
re-encoding between them (measured: the ASGI emulation cost more than the answer itself).

granian hands RSGI the percent-decoded path; for a base64 OCSP request, whose alphabet has no
'%', that is the path the client sent.
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
        method = scope.method
        body = _chunks(protocol) if method == "POST" else None
        answer = await self.app.handle(method, scope.path, scope.headers.get("if-none-match"), body)
        if answer is None:
            return
        if method == "HEAD":  # the GET's headers, Content-Length included, and no body
            headers = [*answer.headers, ("content-length", str(len(answer.body)))]
            protocol.response_empty(answer.status, headers)
        else:  # the server adds Content-Length
            protocol.response_bytes(answer.status, answer.headers, answer.body)


async def _chunks(protocol: Any) -> AsyncIterator[bytes]:
    async for chunk in protocol:
        yield bytes(chunk)


def create_rsgi_app() -> RsgiResponder:
    """Factory for granian's RSGI workers; reads CERTSTATUS_CONFIG like create_app."""
    from certstatus.responder.app import create_app

    return RsgiResponder(create_app())
