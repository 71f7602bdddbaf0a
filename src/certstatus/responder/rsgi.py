"""The responder on granian's RSGI interface: OcspApp.handle entered straight from the server,
and its answer sent in one call, without ASGI's message dicts, per-message awaits and header
re-encoding between them (measured: the ASGI emulation cost more than the answer itself).

granian hands RSGI the percent-decoded path; for a base64 OCSP request, whose alphabet has no
'%', that is the path the client sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from granian.rsgi import ProtocolClosed, ProtocolError

from certstatus.responder.app import BrokenBody, ClientGone, OcspApp, declared_length
from certstatus.responder.stops import release_stop_signals


class RsgiResponder:
    def __init__(self, app: OcspApp) -> None:
        self.app = app

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stops were held since the fork (server.py, _default_stop_signals); released from
        within the running loop, where granian's handlers can act on them."""
        loop.call_soon(release_stop_signals)

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        if scope.proto != "http":
            return
        method = scope.method
        headers = scope.headers
        body = length = None
        if method == "POST":
            # a body of declared length is read in one call (one declared over the limit is
            # refused 413 before any of it is read); a chunked one chunk by chunk, never past
            # the limit
            length = declared_length(headers.get("content-length"))
            whole = length is not None and headers.get("transfer-encoding") is None
            body = _whole(protocol) if whole else _chunks(protocol)
        answer = await self.app.handle(
            method, scope.path, headers.get("if-none-match"), body, length
        )
        if answer is None:
            return
        if method == "HEAD":  # the GET's headers, Content-Length included, and no body
            with_length = [*answer.headers, ("content-length", str(len(answer.body)))]
            protocol.response_empty(answer.status, with_length)
        else:  # the server adds Content-Length
            protocol.response_bytes(answer.status, answer.headers, answer.body)


async def _whole(protocol: Any) -> AsyncIterator[bytes]:
    """The body in one read. A client that leaves before sending all of it closes the
    transport (nobody to answer); a body granian cannot read is a broken one (400)."""
    try:
        body = await protocol()
    except ProtocolClosed:
        raise ClientGone from None
    except ProtocolError:
        raise BrokenBody from None
    yield bytes(body)


async def _chunks(protocol: Any) -> AsyncIterator[bytes]:
    """The body's chunks; BrokenBody when its framing was invalid.

    granian ends every body with one empty chunk. A body whose framing breaks (a chunk size
    that is not hex, a chunk longer than its size) is not reported as an error: the stream
    yields an empty chunk where the fault is and then its final empty chunk (measured with
    granian 2.8; tests/test_front.py holds it). So a chunk after an empty one means
    the framing was broken, and the request is answered 400, not decoded as if cut short."""
    ended = False
    try:
        async for chunk in protocol:
            if ended:
                raise BrokenBody
            data = bytes(chunk)
            if data:
                yield data
            else:
                ended = True
    except ProtocolClosed:
        raise ClientGone from None
    except ProtocolError:
        raise BrokenBody from None


def create_rsgi_app() -> RsgiResponder:
    """Factory for granian's RSGI workers; reads CERTSTATUS_CONFIG like create_app."""
    from certstatus.responder.app import create_app

    return RsgiResponder(create_app())
