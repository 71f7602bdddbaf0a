"""A stand-in for a commercial CDN's tag-purge API, which cannot be reached from here.

It speaks the shape TagApiPurger implements (POST {"tags": [...]} with a bearer token, answered
{"success": true}) and carries each purge out on a real Varnish through the same Purger
interface, so a test sees the cached answer go. It can be told to fail the next requests with
429 (Retry-After) or 5xx, as real APIs do under rate limits and incidents.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from certstatus.cache.purgers import PurgeError, Purger


class TagPurgeStandIn:
    def __init__(self, token: str, forward: Purger) -> None:
        self.token = token
        self.forward = forward
        self.failures: list[int] = []
        self.received: list[tuple[int, list[str]]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/purge"

    def fail_next(self, statuses: Sequence[int]) -> None:
        self.failures.extend(statuses)

    def __enter__(self) -> TagPurgeStandIn:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                pass

            def _answer(self, status: int, body: dict[str, object], retry: bool = False) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                if retry:
                    self.send_header("retry-after", "0")
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length)
                if self.path != "/purge":
                    self._answer(404, {"success": False, "errors": ["no such endpoint"]})
                    return
                if self.headers.get("authorization") != f"Bearer {standin.token}":
                    self._answer(403, {"success": False, "errors": ["bad token"]})
                    return
                try:
                    tags = json.loads(raw)["tags"]
                    assert isinstance(tags, list) and all(isinstance(t, str) for t in tags)
                except (ValueError, KeyError, TypeError, AssertionError):
                    self._answer(400, {"success": False, "errors": ["expected {tags: [...]}"]})
                    return
                if standin.failures:
                    status = standin.failures.pop(0)
                    standin.received.append((status, tags))
                    self._answer(status, {"success": False}, retry=status == 429)
                    return
                try:
                    standin.forward.purge(tags)
                except PurgeError as exc:
                    standin.received.append((502, tags))
                    self._answer(502, {"success": False, "errors": [str(exc)]})
                    return
                standin.received.append((200, tags))
                self._answer(200, {"success": True})

        return Handler
