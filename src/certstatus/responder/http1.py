"""certstatus's own HTTP/1.1 server for the responder (`responder.server = "native"`).

Why it exists: with the answer itself down to a dict lookup and one indexed read, the HTTP
server took most of an answer's CPU. Serving fixed bytes on this machine, granian did 0.6 of
nginx's requests/s while an asyncio protocol on uvloop with httptools' parser did more than
nginx (benchmarks/serving.py measures the whole answer). This module is that protocol, with the
limits a public responder needs kept here rather than in a front:

- headers must arrive within `request_timeout`, a POST body too (408), and a connection idle
  between requests is closed after `keepalive_timeout`; one timer per worker sweeps them all,
  so an idle connection costs a few hundred bytes and no timer;
- at most `max_connections` per worker: a new connection over it aborts the least recently
  active one not waiting for the store, so a flood of idle or slow sockets cannot lock valid
  clients out; a client that stops reading its answers is dropped after `keepalive_timeout`;
- a header block over 64 KiB or 100 fields is refused 431, a URL over 64 KiB 414, a body over
  `max_post_body` 413 (before it is read when its length is declared), and a request whose
  bytes other than its body pass 132 KiB 431 (httptools keeps an unfinished line whole);
- pipelined requests are answered in order, one per connection per loop turn, and reading
  pauses while a client does not read its answers or has more than a few requests queued.

The processes: the server binds the listening socket (one, shared: a busy worker accepts
less), forks the workers, restarts one that dies (and stops, failing, when they keep dying as
they start), and on SIGTERM or SIGINT stops them gracefully (answers in flight are finished,
idle connections closed), killing one that is still running after 10 s.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import time
import types
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import Any, NamedTuple

import httptools

from certstatus.responder import headers as h
from certstatus.responder.app import Answer, OcspApp

log = logging.getLogger("certstatus.serve")

MAX_HEADER_BYTES = 65_536
MAX_HEADER_FIELDS = 100
MAX_URL_BYTES = 65_536
MAX_FRAMING_BYTES = MAX_URL_BYTES + MAX_HEADER_BYTES + 4096  # a request's bytes but its body
MAX_QUEUED = 16  # pipelined requests read ahead of the one being answered
ANSWERS_PER_TURN = 1  # answers one connection gets before the loop serves the others
EVICTION_SCAN = 64  # connections looked at, oldest first, for one to make room
_STOPS = (signal.SIGTERM, signal.SIGINT)

_REASONS = {
    200: b"OK",
    304: b"Not Modified",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}


@dataclass(frozen=True)
class Limits:
    request_timeout: float = 5.0
    keepalive_timeout: float = 15.0
    max_connections: int = 4096
    max_post_body: int = 10_000


def _refusal(status: int, text: str) -> Answer:
    return Answer(status, h.NO_STORE_TEXT, text.encode() + b"\n")


_BAD_REQUEST = _refusal(400, "malformed HTTP request")
_TOO_LARGE = _refusal(413, "request body too large")
_HEADERS_TOO_LARGE = _refusal(431, "request header block too large")
_URL_TOO_LONG = _refusal(414, "request target too long")
_TOO_SLOW = _refusal(408, "request too slow")
_INTERNAL = _refusal(500, "internal error")
# 400, not 505: a 5xx is what operators alert on as the server's own failure
_VERSION = _refusal(400, "only HTTP/1.0 and HTTP/1.1 are served here")


class _Refused(Exception):
    """Raised from a parser callback: the request is answered `answer` and the connection
    closed, since the rest of what the client sent can no longer be framed."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer


class Clock:
    """The Date header, updated by the sweep once a second rather than formatted per answer."""

    def __init__(self) -> None:
        self.tick()

    def tick(self) -> None:
        self.date = b"date: " + h.http_date(int(time.time())).encode() + b"\r\n"


_STATUS_LINES = {
    status: b"HTTP/1.1 %d %s\r\n" % (status, reason) for status, reason in _REASONS.items()
}
_CONNECTION = (b"", b"connection: close\r\n", b"connection: keep-alive\r\n")


def encode_answer(
    answer: Answer,
    date: bytes,
    close: bool,
    head_only: bool = False,
    http10_keep_alive: bool = False,
) -> bytes:
    """An answer as sent: status line, the app's headers plus Date, Content-Length and, when
    the connection ends with this answer, Connection: close (or, to an HTTP/1.0 client that
    asked to keep it, Connection: keep-alive), then the body unless head_only.

    One bytes object per answer, built by one join: the app's str headers are joined by C
    calls (str.join over each pair) and encoded once, where a per-header f-string and encode,
    then a copy of the head onto the body, showed in profiles of the server's own path."""
    status, body = answer.status, answer.body
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d Unknown\r\n" % status
    block = "\r\n".join(map(": ".join, answer.headers)).encode("latin-1")
    # a 304's length would be its representation's, which it does not carry
    length = b"" if status == 304 else b"content-length: %d\r\n" % len(body)
    connection = _CONNECTION[1 if close else 2 if http10_keep_alive else 0]
    return b"".join(
        (
            line,
            date,
            block,
            b"\r\n" if block else b"",
            length,
            connection,
            b"\r\n",
            b"" if head_only else body,
        )
    )


_METHODS = {m.encode(): m for m in ("GET", "POST", "HEAD")}  # the parser gives bytes


class _Request(NamedTuple):
    method: str
    path: str  # path_of the target
    if_none_match: str | None
    body: bytes | None
    keep_alive: bool
    http10_keep_alive: bool


def path_of(target: bytes) -> str:
    """The path the app routes on, from the request target as sent: origin-form up to any
    query, or absolute-form's path. Not percent-decoded: decode_get_path does that, as for
    ASGI's raw_path."""
    if not target.startswith(b"/"):
        if target == b"*":
            return "*"
        try:
            target = httptools.parse_url(target).path or b"/"
        except httptools.HttpParserInvalidURLError:
            return ""
    query = target.find(b"?")
    if query >= 0:
        target = target[:query]
    return target.decode("latin-1")


class Worker:
    """One worker's connections, what limits them, and the app answering them.

    `connections` is ordered by last activity (a connection moves to the end whenever data
    arrives), so the one to evict is found at the front, not by a scan (a flood of idle
    connections made a scan per new connection the worker's main cost). A connection stays in
    it until the kernel has let it go (connection_lost), closing or not: one closed while its
    client is not reading still holds a socket and its unsent answers."""

    def __init__(self, app: OcspApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits
        self.clock = Clock()
        self.connections: dict[Connection, None] = {}
        self.stopping = False

    def protocol(self) -> Connection:
        return Connection(self)

    def admit(self, connection: Connection) -> bool:
        """Whether a new connection may stay: over the limit, the least recently active one
        not waiting for the store is aborted to make room (closing ones first in line,
        then idle or slow ones); if none of the oldest few qualifies, the new one is closed."""
        connections = self.connections
        if len(connections) >= self.limits.max_connections:
            for n, candidate in enumerate(connections):
                if n >= EVICTION_SCAN:
                    return False
                if not candidate.busy:
                    candidate.abort()
                    break
            else:
                return False
        connections[connection] = None
        return True

    def sweep(self) -> None:
        """Once a second: the clock, and every connection's deadline."""
        self.clock.tick()
        now = time.monotonic()
        limits = self.limits
        for connection in list(self.connections):
            connection.check(now, limits)

    def stop(self) -> None:
        """Graceful stop: idle connections closed now, busy ones after their answers."""
        self.stopping = True
        for connection in list(self.connections):
            if connection.idle():
                connection.close()


class Connection(asyncio.Protocol):
    """One client connection: httptools' parser fed with what arrives, requests answered in
    the order they came."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: collections.deque[_Request] = collections.deque()
        self.busy = False  # an answer is being made (awaiting the store)
        self.scheduled = False  # more queued answers are due on the loop's next turn
        self.reading_paused = False
        self.writing_paused = False
        self.last_active = time.monotonic()
        self.request_started: float | None = None  # the request being read, since when
        self.in_message = False  # a request begun and not all read yet
        self.begun = 0  # requests begun on this connection
        self.framing = 0  # bytes of the unfinished request that are not its body
        self.body_read = 0  # body bytes the parser handed over from the current read
        self.buffered = 0  # unsent answer bytes at the last sweep
        self.final = False  # nothing more is read: close after the queued answers
        self.refusal: Answer | None = None  # sent after the queued answers, then closed
        self.closing_since: float | None = None
        self.http10 = False  # the request being read is HTTP/1.0
        self._reset()

    def _reset(self) -> None:
        """What one request's parser callbacks gather; the lists only when a request has
        such headers or a body (most GETs have neither)."""
        self.target = b""
        self.header_bytes = 0
        self.fields = 0
        self.if_none_match: list[str] | None = None
        self.content_length: int | None = None
        self.body: list[bytes] | None = None
        self.body_size = 0
        self.expect_continue = False

    # asyncio.Protocol

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if self.worker.stopping or not self.worker.admit(self):
            transport.abort()
            self.transport = None
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.worker.connections.pop(self, None)
        self.transport = None
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.final:
            return
        self.last_active = time.monotonic()
        # to the end of the worker's activity order (Worker.admit evicts from the front)
        connections = self.worker.connections
        if connections.pop(self, False) is None:
            connections[self] = None
        begun, unfinished = self.begun, self.in_message
        self.body_read = 0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refused = exc.__context__
            self._refuse(refused.answer if isinstance(refused, _Refused) else _BAD_REQUEST)
            return
        except httptools.HttpParserUpgrade:
            # A GET or HEAD asking to switch protocols (curl --http2 sends Upgrade: h2c) is
            # answered in HTTP/1.1, the upgrade ignored as RFC 9110 allows, and the connection
            # closed after it: the parser stops at an upgrade. CONNECT, or a body behind an
            # upgrade (which the parser leaves unread), is refused.
            if self.parser.get_method() in (b"GET", b"HEAD") and self.queue:
                self.final = True
                self._pause_reading()
                self._answer_queued()
            else:
                if self.queue:  # the upgrade request itself, queued as it completed
                    self.queue.pop()
                self._refuse(_refusal(400, "protocol upgrade not supported"))
            return
        except httptools.HttpParserError:
            self._refuse(_BAD_REQUEST)
            return
        if unfinished and self.in_message and self.begun == begun:
            # The whole read went to one request still unfinished. httptools keeps a header
            # or trailer line until it ends, so what is not body is bounded (a read that
            # begins a request counts from the next one: never a false refusal).
            self.framing += len(data) - self.body_read
            if self.framing > MAX_FRAMING_BYTES:
                self._refuse(_HEADERS_TOO_LARGE)
                return
        self._answer_queued()

    def pause_writing(self) -> None:
        self.writing_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self.last_active = time.monotonic()
        self._answer_queued()

    def eof_received(self) -> bool | None:
        """A client that half-closes after its requests still gets their answers, then the
        connection closes (nothing more can come)."""
        self.final = True
        return bool(self.queue or self.busy)

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.request_started = self.last_active  # set as this read arrived (data_received)
        self.in_message = True
        self.begun += 1
        self.framing = 0
        self._reset()

    def on_url(self, url: bytes) -> None:
        self.target += url
        if len(self.target) > MAX_URL_BYTES:
            raise _Refused(_URL_TOO_LONG)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        self.fields += 1
        if self.header_bytes > MAX_HEADER_BYTES or self.fields > MAX_HEADER_FIELDS:
            raise _Refused(_HEADERS_TOO_LARGE)
        if len(name) == 13 and name.lower() == b"if-none-match":
            if self.if_none_match is None:
                self.if_none_match = []
            self.if_none_match.append(value.decode("latin-1"))
        elif len(name) == 14 and name.lower() == b"content-length":
            self.content_length = int(value) if value.isdigit() else None
        elif len(name) == 6 and name.lower() == b"expect":
            self.expect_continue = value.lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        version = self.parser.get_http_version()  # formats a str: asked once a request
        if version not in ("1.1", "1.0"):
            raise _Refused(_VERSION)
        self.http10 = version == "1.0"
        limit = self.worker.limits.max_post_body
        if self.content_length is not None and self.content_length > limit:
            raise _Refused(_TOO_LARGE)
        if self.expect_continue and not self.busy and not self.queue and self.transport:
            # the client waits for this before it sends the body (curl does for large ones);
            # never ahead of an answer still owed
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.body_read += len(body)
        self.body_size += len(body)
        if self.body_size > self.worker.limits.max_post_body:
            raise _Refused(_TOO_LARGE)
        if self.body is None:
            self.body = []
        self.body.append(body)

    def on_message_complete(self) -> None:
        parser = self.parser
        body = self.body
        match = self.if_none_match
        keep_alive = parser.should_keep_alive()
        method = parser.get_method()
        target = self.target
        # tuple.__new__, not _Request(...): a NamedTuple's own __new__ is a Python function
        request = tuple.__new__(
            _Request,
            (
                _METHODS.get(method) or method.decode("latin-1"),
                # origin-form without a query (every OCSP GET) is its own path
                target.decode("latin-1")
                if target[:1] == b"/" and b"?" not in target
                else path_of(target),
                None if match is None else ", ".join(match),
                None if body is None else body[0] if len(body) == 1 else b"".join(body),
                keep_alive,
                keep_alive and self.http10,
            ),
        )
        self.queue.append(request)
        self.request_started = None
        self.in_message = False
        if len(self.queue) >= MAX_QUEUED:
            self._pause_reading()

    # answering

    def _answer_queued(self) -> None:
        """Answer queued requests in order until one has to wait for the store, the client
        stops reading, or a turn's share is done (the rest on the loop's next turn, so one
        connection's pipelined burst cannot keep the worker from its other clients)."""
        self.scheduled = False
        turn = 0
        while self.queue and not self.busy and self.transport is not None:
            if self.writing_paused:
                return  # resume_writing() goes on
            if turn == ANSWERS_PER_TURN:
                self.scheduled = True
                asyncio.get_running_loop().call_soon(self._answer_queued)
                return
            turn += 1
            request = self.queue.popleft()
            coroutine = self.worker.app.respond(
                request.method, request.path, request.if_none_match, request.body
            )
            try:
                waiting = coroutine.send(None)
            except StopIteration as done:
                self._send(request, done.value)
                continue
            except Exception:
                log.exception("answering a request failed")
                self._send(request, _INTERNAL)
                continue
            self.busy = True
            task = asyncio.ensure_future(_resume(coroutine, waiting))
            task.add_done_callback(functools.partial(self._finished, request))
            return
        if self.busy or self.transport is None:
            return
        if self.refusal is not None:
            refusal, self.refusal = self.refusal, None
            self._write_refusal(refusal)
            self.close()
        elif self.reading_paused and not self.final and not self.writing_paused:
            self._resume_reading()

    def _finished(self, request: _Request, task: asyncio.Future[Answer]) -> None:
        self.busy = False
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("answering a request failed", exc_info=error)
        self._send(request, _INTERNAL if error is not None else task.result())
        if not self.scheduled:
            self._answer_queued()

    def _send(self, request: _Request, answer: Answer) -> None:
        if self.transport is None:
            return
        close = (
            not request.keep_alive
            or self.worker.stopping
            or (self.final and not self.queue and self.refusal is None)
        )
        self.transport.write(
            encode_answer(
                answer,
                self.worker.clock.date,
                close,
                request.method == "HEAD",
                request.http10_keep_alive,
            )
        )
        self.last_active = time.monotonic()
        if close:
            self.queue.clear()
            self.close()

    def _write_refusal(self, answer: Answer) -> None:
        """A refusal, with Connection: close (the caller closes)."""
        assert self.transport is not None
        self.transport.write(encode_answer(answer, self.worker.clock.date, close=True))
        self.last_active = time.monotonic()

    def _refuse(self, answer: Answer) -> None:
        """A request that cannot be framed or is over a limit: answered after the answers
        still owed to the requests before it, then the connection closed (what follows it on
        the wire cannot be trusted)."""
        if self.transport is None:
            return
        self.final = True
        self.in_message = False
        self.request_started = None
        self._pause_reading()
        if self.busy or self.queue:
            self.refusal = answer
            if not self.busy:
                self._answer_queued()
            return
        self._write_refusal(answer)
        self.close()

    # lifetime

    def idle(self) -> bool:
        return (
            not self.busy
            and not self.queue
            and self.request_started is None
            and not self.writing_paused
            and self.closing_since is None
        )

    def check(self, now: float, limits: Limits) -> None:
        """Deadlines: a closing connection gets request_timeout to take its last answer, a
        request request_timeout to arrive (not counting while this server paused reading),
        a client that stops reading its answers, or an idle one, keepalive_timeout. A client
        reading slowly but steadily makes progress: its unsent answers shrink."""
        transport = self.transport
        if transport is None:
            return
        buffered = transport.get_write_buffer_size()
        if buffered < self.buffered:
            self.last_active = now
        self.buffered = buffered
        if self.closing_since is not None:
            if now - self.closing_since > limits.request_timeout:
                self.abort()
        elif self.request_started is not None and not self.reading_paused:
            if now - self.request_started > limits.request_timeout:
                self._refuse(_TOO_SLOW)
        elif self.writing_paused:
            if now - self.last_active > limits.keepalive_timeout:
                self.abort()
        elif self.idle() and now - self.last_active > limits.keepalive_timeout:
            self.close()

    def close(self) -> None:
        """Close once what was written has been sent (it stays counted until then)."""
        transport = self.transport
        if transport is not None and self.closing_since is None:
            self.closing_since = time.monotonic()
            self.final = True
            transport.close()

    def abort(self) -> None:
        """Drop the connection now, unsent answers and all. Its socket goes at once, so it
        stops counting now (a burst of new connections must not all evict the same one)."""
        transport = self.transport
        if transport is not None:
            self.final = True
            self.queue.clear()
            self.worker.connections.pop(self, None)
            transport.abort()

    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            if self.request_started is not None:  # its deadline runs from now: the pause was ours
                self.request_started = time.monotonic()
            self.transport.resume_reading()


async def _resume(coroutine: Coroutine[Any, Any, Answer], waiting: Any) -> Answer:
    """Go on with a coroutine that Connection stepped once itself and that now waits.

    Stepping a coroutine before giving it a task saves creating a task per answer, and most
    answers (SQLite, a replica read already batched) never wait. When one does, it has
    yielded what it waits on, as a task would have received it: a future or None (a bare
    yield). This task passes that on to its own task and sends the coroutine on when woken,
    so from its first wait on the coroutine runs as under a task of its own. Its first step
    runs in no task: what needs one (asyncio.timeout, current_task) must come after an
    await there (OcspApp.respond has none)."""
    while True:
        try:
            await _pass_on(waiting)
        except BaseException as exc:  # cancelled while waiting: the coroutine hears it
            try:
                waiting = coroutine.throw(exc)
            except StopIteration as done:
                return done.value
            continue
        try:
            waiting = coroutine.send(None)
        except StopIteration as done:
            return done.value


@types.coroutine
def _pass_on(waiting: Any) -> Generator[Any, None, None]:
    """Yield to the running task what a stepped coroutine yielded (a future already flagged
    as awaited, or None)."""
    yield waiting


# the processes


def listening_socket(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """The socket every worker accepts on, bound here, before any worker exists, so an address
    that cannot be had fails the command and not a worker.

    One socket shared by the workers, not one each with SO_REUSEPORT: the kernel then hands a
    new connection to whichever worker asks first, so a busy worker takes fewer. Hashed over
    per-worker sockets, 64 keep-alive connections split unevenly and one worker saturated
    while the other idled (measured: +13 % GET requests/s and 10 % less CPU per answer with
    the shared socket, two alternating rounds)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def run_worker(
    sock: socket.socket, make_app: Callable[[], OcspApp], limits: Limits, grace: float
) -> None:
    """A worker's life: its app made, its socket served until SIGTERM/SIGINT, then its
    answers in flight finished (at most `grace` seconds) and its connections closed.

    Stops were held blocked across the fork (Server.spawn), and stay held until the loop
    runs: uvloop drops a signal that arrives before its loop runs, even with a handler added
    (measured with uvloop 0.23; asyncio's own loop keeps it). A stop during the app's loading
    therefore waits for the load, then stops the worker."""
    import uvloop

    server_pid = os.getppid()  # forked by the server: its parent until the server is gone
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    stopped = asyncio.Event()
    for stop in _STOPS:
        loop.add_signal_handler(stop, stopped.set)
    loop.call_soon(signal.pthread_sigmask, signal.SIG_UNBLOCK, _STOPS)
    worker = Worker(make_app(), limits)

    async def serve() -> None:
        server = await loop.create_server(worker.protocol, sock=sock, backlog=1024)
        loop.call_later(1, _sweep, loop, worker, server_pid, stopped)
        await stopped.wait()
        server.close()
        worker.stop()
        deadline = time.monotonic() + grace
        while worker.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            worker.stop()

    try:
        loop.run_until_complete(serve())
    finally:
        for connection in list(worker.connections):
            connection.abort()
        loop.run_until_complete(asyncio.sleep(0))
        worker.app.source.close()
        loop.close()


def _sweep(
    loop: asyncio.AbstractEventLoop, worker: Worker, server_pid: int, stopped: asyncio.Event
) -> None:
    """Once a second: idle connections closed, and the worker stopped if its server is gone.
    A server killed outright (SIGKILL, the OOM killer) tells its workers nothing; left
    running, they kept the port, so the restarted server could not bind it."""
    worker.sweep()
    if os.getppid() != server_pid:
        stopped.set()
        return
    loop.call_later(1, _sweep, loop, worker, server_pid, stopped)


QUICK_FAILURE = 5  # seconds: a worker that exits this soon after starting failed to start
QUICK_FAILURES = 5  # in a row: the server stops rather than restart workers forever


class WorkersFailing(RuntimeError):
    """Workers exit as soon as they start (a config or database they cannot open): the
    command ends with a failure, for a supervisor to see, instead of restarting them forever."""


class Server:
    """The parent of the workers: spawns them, replaces one that dies, stops them all."""

    def __init__(
        self,
        sock: socket.socket,
        workers: int,
        target: Callable[[socket.socket], None],
        kill_timeout: float = 10,
        exited: Callable[[int | None], None] = lambda pid: None,
    ) -> None:
        self.sock = sock
        self.count = workers
        self.target = target
        self.kill_timeout = kill_timeout
        self.exited = exited  # told each worker's pid once it is gone
        self.context = multiprocessing.get_context("fork")
        self.workers: dict[int, multiprocessing.process.BaseProcess] = {}
        self.started: dict[int, float] = {}
        self.quick_failures = 0  # workers in a row that failed within QUICK seconds of starting
        self.stop_requested = False

    def spawn(self, index: int) -> None:
        """A worker on socket `index`, forked with stops held (run_worker releases them)."""
        process = self.context.Process(
            target=self.target, args=(self.sock,), name=f"responder-{index}"
        )
        held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        self.workers[index] = process
        self.started[index] = time.monotonic()

    def serve(self) -> None:
        """Until SIGTERM or SIGINT; a worker that exits meanwhile is started again (after a
        second, so one that cannot start does not spin)."""
        reader, writer = os.pipe()
        os.set_blocking(writer, False)
        previous_fd = signal.set_wakeup_fd(writer)
        previous = {s: signal.signal(s, self._on_stop) for s in _STOPS}
        try:
            for index in range(self.count):
                self.spawn(index)
            log.info(
                "serving with %d worker(s), pids %s",
                len(self.workers),
                [w.pid for w in self.workers.values()],
            )
            while not self.stop_requested:
                sentinels = {w.sentinel: i for i, w in self.workers.items()}
                ready = multiprocessing.connection.wait([*sentinels, reader], timeout=5)
                for item in ready:
                    if item == reader:
                        os.read(reader, 512)
                        continue
                    index = sentinels[item]  # type: ignore[index]
                    process = self.workers[index]
                    process.join(timeout=1)
                    self.exited(process.pid)
                    if self.stop_requested:
                        continue
                    quick = time.monotonic() - self.started[index] < QUICK_FAILURE
                    self.quick_failures = self.quick_failures + 1 if quick else 0
                    if self.quick_failures >= QUICK_FAILURES:
                        log.critical(
                            "%d workers in a row exited within %d s of starting (the last "
                            "with %s); stopping the server",
                            self.quick_failures,
                            QUICK_FAILURE,
                            process.exitcode,
                        )
                        self.stop_requested = True
                        continue
                    log.error(
                        "worker %s (pid %s) exited with %s; starting another",
                        index,
                        process.pid,
                        process.exitcode,
                    )
                    time.sleep(1)
                    if not self.stop_requested:
                        self.spawn(index)
            self._stop_workers()
            if self.quick_failures >= QUICK_FAILURES:
                raise WorkersFailing(
                    "the responder's workers keep failing as they start; the server stopped "
                    "(see the log above)"
                )
        finally:
            signal.set_wakeup_fd(previous_fd)
            for stop, handler in previous.items():
                signal.signal(stop, handler)
            os.close(reader)
            os.close(writer)
            self.sock.close()

    def _on_stop(self, signum: int, frame: Any) -> None:
        self.stop_requested = True

    def _stop_workers(self) -> None:
        log.info("stopping %d worker(s)", len(self.workers))
        self.sock.close()  # with the workers' copies closed too, new clients are refused
        for process in self.workers.values():
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.kill_timeout
        for index, process in self.workers.items():
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                log.error(
                    "worker %s (pid %s) did not stop within %.0f s; killing it",
                    index,
                    process.pid,
                    self.kill_timeout,
                )
                process.kill()
                process.join()
