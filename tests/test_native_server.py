"""certstatus's own HTTP/1.1 server (`responder.server = "native"`, responder/http1.py), run as
an operator runs it: `certstatus serve` in a process of its own, spoken to over loopback with
raw sockets, openssl and the connection flood. Its answers must be granian's answers, and its
limits must hold without a front (R11, R13, R14)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from benchmarks.connflood import attacker, probe, raise_nofile
from cryptography.x509 import ocsp

from certstatus.ocsp.certid import HashAlgorithm, issuer_keys
from certstatus.ocsp.request import encode_request, get_path
from certstatus.ports import free_port
from certstatus.responder.app import Answer
from certstatus.responder.http1 import _pass_on, _resume, encode_answer, path_of
from tests.conftest import Deployment, make_deployment, stop_process, wait_ready
from tests.test_front import exchange, status

pytestmark = pytest.mark.integration


def with_server(deployment: Deployment, server: str, **settings: object) -> Path:
    """A copy of the deployment's config served by `server` on a port of its own."""
    port = free_port()
    lines = [f'server = "{server}"', f'listen = "127.0.0.1:{port}"']
    lines += [f"{key} = {value!r}".replace("'", '"') for key, value in settings.items()]
    text = re.sub(r'listen = "127\.0\.0\.1:\d+"\n', "", deployment.config_path.read_text())
    text = text.replace("[responder]\n", "[responder]\n" + "\n".join(lines) + "\n", 1)
    path = deployment.dir / f"{server}-{port}.toml"
    path.write_text(text)
    return path


def port_of(config: Path) -> int:
    return int(re.search(r'listen = "127\.0\.0\.1:(\d+)"', config.read_text()).group(1))


@contextmanager
def served(config: Path, log: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    out = log.open("wb") if log else subprocess.DEVNULL
    process = subprocess.Popen(
        [sys.executable, "-m", "certstatus.cli", "serve", "--config", str(config)],
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port_of(config)}/", process)
        yield process
    finally:
        stop_process(process)
        if log:
            out.close()


@pytest.fixture(scope="module")
def native(tmp_path_factory) -> Iterator[tuple[Deployment, int, int, int, Path]]:
    """A deployment with a good and a revoked certificate, served natively (one worker, short
    timeouts) and by granian side by side: (deployment, native port, granian port, good
    serial, native log)."""
    deployment = make_deployment(tmp_path_factory.mktemp("native") / "ca")
    store = deployment.store()
    good, _ = deployment.good_and_revoked(store)
    store.close()
    ours = with_server(
        deployment, "native", workers=1, keepalive_timeout="2s", request_timeout="2s"
    )
    theirs = with_server(deployment, "granian", workers=1)
    log = deployment.dir / "native.log"
    with served(ours, log), served(theirs):
        yield deployment, port_of(ours), port_of(theirs), good.serial_number, log


def request_der(deployment: Deployment, serial: int, algorithm=HashAlgorithm.SHA1) -> bytes:
    return encode_request(issuer_keys(deployment.ca.certificate)[algorithm], serial)


def split(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), {k.lower(): v for k, v in fields.items()}, body


def test_native_answers_are_granians_answers_r13(native) -> None:
    """Every kind of answer, status, headers (but the Date) and body, the same from both
    servers: authoritative GET and POST, HEAD, 304, unauthorized, malformed, a CRL, health,
    405. A cache in front must not be able to tell them apart."""
    deployment, ours, theirs, serial, _ = native
    der = request_der(deployment, serial)
    path = get_path(der)
    post = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/ocsp-request\r\n"
    requests = [
        b"GET %s HTTP/1.1\r\nHost: x\r\n" % path.encode(),
        b"HEAD %s HTTP/1.1\r\nHost: x\r\n" % path.encode(),
        post + b"Content-Length: %d\r\n" % len(der),
        b"GET %s HTTP/1.1\r\nHost: x\r\n" % get_path(request_der(deployment, 0x7777)).encode(),
        b"GET /MEQwQjBAMD4wPDAJBgUrDgMCGgUABBQ HTTP/1.1\r\nHost: x\r\n",
        b"GET /crl/demo/0.crl HTTP/1.1\r\nHost: x\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
        b"DELETE / HTTP/1.1\r\nHost: x\r\n",
    ]
    first = split(exchange(ours, requests[0] + b"Connection: close\r\n\r\n"))
    etag = first[1]["etag"]
    requests.append(
        b"GET %s HTTP/1.1\r\nHost: x\r\nIf-None-Match: %s\r\n" % (path.encode(), etag.encode())
    )
    statuses = []
    for request in requests:
        body = der if request.startswith(b"POST") else b""
        raw = request + b"Connection: close\r\n\r\n" + body
        mine, granians = split(exchange(ours, raw)), split(exchange(theirs, raw))
        assert mine[0] == granians[0], (request, mine, granians)
        statuses.append(mine[0])
        assert mine[2] == granians[2], request
        for name in ("date", "connection", "server"):  # granian names itself; we do not
            mine[1].pop(name, None)
            granians[1].pop(name, None)
        assert mine[1] == granians[1], request
    assert statuses == [200, 200, 200, 200, 200, 404, 200, 405, 304]


def test_openssl_ocsp_gets_good(native) -> None:
    deployment, ours, _, serial, _ = native
    run = subprocess.run(
        [
            "openssl",
            "ocsp",
            "-issuer",
            str(deployment.dir / "issuer.pem"),
            "-serial",
            hex(serial),
            "-url",
            f"http://127.0.0.1:{ours}/",
            "-noverify",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert f"{hex(serial)}: good" in run.stdout, run


def test_pipelined_requests_are_answered_in_order(native) -> None:
    """Twenty requests in one write, good and unknown serials, GET and POST interleaved: twenty
    answers, in order, and the connection stays open for more."""
    deployment, ours, _, serial, _ = native
    serials = [serial if i % 3 == 0 else 0x5000 + i for i in range(20)]
    raw = b""
    for i, s in enumerate(serials):
        der = request_der(deployment, s)
        if i % 2:
            raw += b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(der) + der
        else:
            raw += b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % get_path(der).encode()
    with socket.create_connection(("127.0.0.1", ours), timeout=5) as sock:
        sock.sendall(raw)
        received = b""
        while received.count(b"HTTP/1.1 ") < 20 or not _complete(received):
            chunk = sock.recv(65536)
            assert chunk, "closed early"
            received += chunk
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    answers = _answers(received)
    assert len(answers) == 20
    for s, (code, _, body) in zip(serials, answers, strict=True):
        assert code == 200
        parsed = ocsp.load_der_ocsp_response(body)
        if s == serial:
            assert (
                parsed.serial_number == s and parsed.certificate_status == ocsp.OCSPCertStatus.GOOD
            )
        else:
            assert parsed.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED  # R5


def test_a_half_closed_client_gets_its_answers_then_the_close(native) -> None:
    _, ours, _, _, _ = native
    with socket.create_connection(("127.0.0.1", ours), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 50)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        started = time.monotonic()
        while chunk := sock.recv(65536):  # ends when the server closes, not at a timeout
            received += chunk
        assert time.monotonic() - started < 1.5  # well before keepalive_timeout (2 s)
    assert received.count(b"HTTP/1.1 200 OK") == 50


def _answers(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    answers = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        code, fields, _ = split(head + b"\r\n\r\n")
        length = int(fields["content-length"])
        answers.append((code, fields, rest[:length]))
        raw = rest[length:]
    return answers


def _complete(raw: bytes) -> bool:
    try:
        answers = _answers(raw)
    except (KeyError, ValueError):
        return False
    return all(len(body) == int(f["content-length"]) for _, f, body in answers)


def test_limits_refuse_and_close_r14(native) -> None:
    """Each refusal is its status with no-store, and the connection closes after it."""
    _, ours, _, _, _ = native
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
    cases = [
        (head + b"".join(b"X-%d: a\r\n" % i for i in range(100)) + b"\r\n", 431),
        (head + b"X-A: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        (b"GET /" + b"M" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10001\r\n\r\n" + b"0" * 100, 413),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"400\r\n" + b"0" * 1024 + b"\r\n" for _ in range(10))
            + b"0\r\n\r\n",
            413,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
            400,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
    ]
    for raw, expected in cases:
        answer = exchange(ours, raw + head + b"\r\n", wait=3)  # what follows is not answered
        assert status(answer) == expected, (raw[:80], answer[:200])
        assert b"no-store" in answer
        assert answer.count(b"HTTP/1.1 ") == 1, answer[:400]
    assert (
        status(exchange(ours, head + b"X-A: " + b"a" * 60_000 + b"\r\nConnection: close\r\n\r\n"))
        == 200
    )


def test_slow_requests_get_408_and_idle_connections_close(native) -> None:
    """request_timeout (2 s here) bounds the headers and the body; keepalive_timeout (2 s)
    closes a connection idle between requests. Swept once a second: within 2-4 s."""
    _, ours, _, _, _ = native
    for partial in (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n0",
    ):
        started = time.monotonic()
        answer = exchange(ours, partial, wait=10)
        took = time.monotonic() - started
        assert status(answer) == 408 and 1.9 < took < 5, (answer[:200], took)
    with socket.create_connection(("127.0.0.1", ours), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert sock.recv(65536) == b""  # closed by the server
        assert 1.9 < time.monotonic() - started < 5


def test_expect_continue_http10_and_upgrades(native) -> None:
    deployment, ours, _, serial, _ = native
    der = request_der(deployment, serial)
    with socket.create_connection(("127.0.0.1", ours), timeout=5) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
            % len(der)
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(der)
        code, _, body = split(sock.recv(65536))
        assert code == 200 and ocsp.load_der_ocsp_response(body).serial_number == serial
    answer = exchange(ours, b"GET /healthz HTTP/1.0\r\n\r\n", wait=5)
    assert status(answer) == 200 and b"connection: close" in answer.lower()
    # curl --http2 on an http:// URL: the upgrade is ignored, answered in HTTP/1.1, closed
    h2c = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMA\r\n\r\n"
    answer = exchange(ours, b"GET %s HTTP/1.1\r\nHost: x\r\n" % get_path(der).encode() + h2c)
    code, fields, body = split(answer)
    assert code == 200 and fields["connection"] == "close"
    assert ocsp.load_der_ocsp_response(body).serial_number == serial
    answer = exchange(ours, b"CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status(answer) == 400


def test_a_flood_of_idle_and_slow_connections_does_not_stall_valid_clients_r11(
    tmp_path: Path,
) -> None:
    """What granian alone could not take (test_front: ~1 030 idle connections stalled it):
    2 000 idle and 200 slowloris connections straight at the native server, with no front,
    while every valid GET must be answered within 1 s."""
    deployment = make_deployment(tmp_path / "ca")
    store = deployment.store()
    good, _ = deployment.good_and_revoked(store)
    store.close()
    raise_nofile()
    config = with_server(deployment, "native", workers=2)
    port = port_of(config)
    path = get_path(request_der(deployment, good.serial_number))
    with served(config), attacker(port, idle=2000, slow=200, seconds=40) as flood:
        result = probe(port, [path], seconds=8, timeout=1)
        assert flood.poll() is None, "the attacker stopped early"
    assert result.failures == [], result.failures[:5]
    assert len(result.latencies) >= 50, result.report()
    assert max(result.latencies) < 1.0, result.report()


def test_max_connections_evicts_the_longest_idle(tmp_path: Path) -> None:
    deployment = make_deployment(tmp_path / "ca")
    config = with_server(deployment, "native", workers=1, max_connections=16)
    port = port_of(config)
    with served(config):
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(16)]
        try:
            time.sleep(0.2)
            assert (
                status(
                    exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                )
                == 200
            )
            assert held[0].recv(10) == b""  # the oldest idle one made room
        finally:
            for sock in held:
                sock.close()


def test_a_killed_worker_is_replaced_and_sigterm_stops_cleanly(tmp_path: Path) -> None:
    deployment = make_deployment(tmp_path / "ca")
    config = with_server(deployment, "native", workers=2)
    port = port_of(config)
    log = tmp_path / "serve.log"
    with served(config, log) as process:
        workers = _children(process.pid)
        assert len(workers) == 2, workers
        metrics = _metrics_dir(workers[0])
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and len(set(_children(process.pid)) - {workers[0]}) < 2:
            time.sleep(0.2)
        replaced = set(_children(process.pid)) - {workers[0]}
        assert len(replaced) == 2
        # the dead worker's readiness and staleness left the merge; the new one's are in it
        assert not list(metrics.glob(f"gauge_live*_{workers[0]}.db"))
        assert _metrics_dir((replaced - {workers[1]}).pop()) == metrics
        for _ in range(20):
            assert (
                status(
                    exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                )
                == 200
            )
        idle = socket.create_connection(("127.0.0.1", port), timeout=10)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert time.monotonic() - started < 5
        assert idle.recv(10) == b""
        idle.close()
    text = log.read_text(errors="replace")
    assert "exited with -9; starting another" in text
    assert "Traceback" not in text, text[-3000:]


def _metrics_dir(worker: int) -> Path:
    """The directory the workers share their metrics through: run_server makes it, and the
    worker maps its readiness gauge's file once its app is made (it may not have answered
    yet). A "live" gauge file, which the server removes when the worker exits."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in Path(f"/proc/{worker}/maps").read_text().splitlines():
            path = Path(line.split(maxsplit=5)[-1])
            if path.name == f"gauge_livemin_{worker}.db":
                return path.parent
        time.sleep(0.1)
    raise AssertionError(f"worker {worker} maps no readiness gauge file")


def endless_line(port: int, opening: bytes) -> tuple[int, bytes]:
    """Send `opening`, then a line that never ends, until the server answers (or 8 MB went);
    how much was sent and what came back."""
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(opening)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < 8_000_000 and not select.select([sock], [], [], 0)[0]:
                sock.sendall(b"a" * 65_536)
                sent += 65_536
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while chunk := sock.recv(65536):
                answer += chunk
    return sent, answer


@pytest.mark.parametrize(
    "opening",
    [
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: ", id="header"),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: ",
            id="chunked-trailer",
        ),
    ],
)
def test_a_line_without_end_is_refused_at_the_request_limit(native, opening: bytes) -> None:
    """httptools keeps an unfinished header line, or a chunked body's trailer line, until it
    ends: a client sending one without end gets 431 once the request's bytes other than its
    body pass the limit, not a worker growing by its every byte."""
    _, ours, _, _, _ = native
    sent, answer = endless_line(ours, opening)
    # the kernel's socket buffers take a few MB before the server reads them
    assert sent < 8_000_000, "never refused"
    assert status(answer) == 431, answer[:200]


def test_a_pipelining_client_that_reads_late_gets_every_answer(native) -> None:
    """Thousands of small pipelined requests, read only after a second: every one answered,
    none taken for an endless head (the server reads up to 256 KiB at a time once it
    resumes; counting whole reads as head bytes refused such clients 431)."""
    _, ours, _, _, _ = native
    count = 6000
    with socket.create_connection(("127.0.0.1", ours), timeout=10) as sock:
        sock.setblocking(False)
        burst = memoryview(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * count)
        deadline = time.monotonic() + 1
        while burst and time.monotonic() < deadline:
            with contextlib.suppress(BlockingIOError):
                burst = burst[sock.send(burst) :]
        time.sleep(max(0.0, deadline - time.monotonic()))
        status_line = b"HTTP/1.1 200 OK"
        unread = b""  # a status line can straddle two reads: carry its start over
        answers = 0
        sock.settimeout(10)
        while answers < count:
            if burst:
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    burst = burst[sock.send(burst) :]
                sock.settimeout(10)
            chunk = sock.recv(1 << 20)
            assert chunk, f"closed after {answers} answers"
            unread += chunk
            answers += unread.count(status_line)
            last = unread.rfind(status_line)
            if last >= 0:
                unread = unread[last + len(status_line) :]
            unread = unread[-(len(status_line) - 1) :]  # too short to hold a whole one
    assert answers == count


def test_an_error_in_a_pipelined_batch_comes_after_the_answers_before_it(native) -> None:
    """Three valid requests and then one with a malformed header, in one write: the three
    are answered, then the 400, then the connection closes (the client pairs answers with
    requests by order)."""
    _, ours, _, _, _ = native
    good = b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
    answer = exchange(ours, good * 3 + b"GET /x HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n")
    assert [status(b"HTTP/1.1 " + part) for part in answer.split(b"HTTP/1.1 ")[1:]] == [
        200,
        200,
        200,
        400,
    ]


def test_repeated_if_none_match_fields_are_one_list_r12(native) -> None:
    """If-None-Match sent as two fields is one list (RFC 9110 5.3): a match in the second
    gets 304, a request with neither field the full answer, on one kept-alive connection."""
    deployment, ours, _, serial, _ = native
    path = get_path(request_der(deployment, serial)).encode()
    get = b"GET %s HTTP/1.1\r\nHost: x\r\n" % path
    with socket.create_connection(("127.0.0.1", ours), timeout=5) as sock:
        sock.sendall(get + b"\r\n")
        code, fields, body = split(sock.recv(65536))
        assert code == 200 and body and len(body) == int(fields["content-length"])
        tag = fields["etag"].encode()
        sock.sendall(get + b'If-None-Match: "nope"\r\nIf-None-Match: %s\r\n\r\n' % tag)
        code, fields, body = split(sock.recv(65536))
        assert (code, body, fields["etag"]) == (304, b"", tag.decode())
        assert "content-length" not in fields
        sock.sendall(get + b'If-None-Match: "nope"\r\n\r\n')
        assert split(sock.recv(65536))[0] == 200


def test_answers_encode_byte_for_byte() -> None:
    """The bytes of an answer as sent, in every shape the server makes: the app's headers in
    its order after Date, Content-Length of the body (also for HEAD, never for 304), and the
    Connection field only when the connection ends or an HTTP/1.0 client kept it."""
    date = b"date: Mon, 30 Nov 2026 23:00:00 GMT\r\n"
    answer = Answer(200, [("content-type", "application/ocsp-response"), ("etag", '"ab"')], b"xyz")
    head = b'HTTP/1.1 200 OK\r\n%scontent-type: application/ocsp-response\r\netag: "ab"\r\n' % date
    assert encode_answer(answer, date, False) == head + b"content-length: 3\r\n\r\nxyz"
    assert encode_answer(answer, date, False, head_only=True) == head + b"content-length: 3\r\n\r\n"
    assert encode_answer(answer, date, True) == (
        head + b"content-length: 3\r\nconnection: close\r\n\r\nxyz"
    )
    assert encode_answer(answer, date, False, http10_keep_alive=True) == (
        head + b"content-length: 3\r\nconnection: keep-alive\r\n\r\nxyz"
    )
    not_modified = Answer(304, [("etag", '"ab"')], b"")
    assert encode_answer(not_modified, date, False) == (
        b'HTTP/1.1 304 Not Modified\r\n%setag: "ab"\r\n\r\n' % date
    )
    bare = Answer(599, [], b"")
    assert encode_answer(bare, date, True) == (
        b"HTTP/1.1 599 Unknown\r\n%scontent-length: 0\r\nconnection: close\r\n\r\n" % date
    )
    with pytest.raises(UnicodeEncodeError):  # a header value must be latin-1, as before
        encode_answer(Answer(200, [("x", "\u20ac")], b""), date, False)


def test_http_versions(native) -> None:
    _, ours, _, _, _ = native
    for line in (b"GET /healthz HTTP/2.0", b"GET /healthz"):  # HTTP/2 in text; HTTP/0.9
        answer = exchange(ours, line + b"\r\nHost: x\r\n\r\n")
        assert status(answer) == 400 and b"only HTTP/1.0 and HTTP/1.1" in answer, answer
    with socket.create_connection(("127.0.0.1", ours), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        code, fields, _ = split(sock.recv(65536))
        assert code == 200 and fields["connection"] == "keep-alive"
        sock.sendall(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert status(sock.recv(65536)) == 200  # the same connection, kept as promised


def test_clients_that_never_read_are_dropped_and_slow_ones_evicted(tmp_path: Path) -> None:
    """A client that pipelines thousands of requests and never reads its answers holds a
    socket and buffered answers: after keepalive_timeout without progress it is aborted,
    descriptors and all. Over max_connections, the oldest connection still sending its
    request makes room for a new one."""
    deployment = make_deployment(tmp_path / "ca")
    config = with_server(
        deployment,
        "native",
        workers=1,
        keepalive_timeout="2s",
        request_timeout="2s",
        max_connections=16,
    )
    port = port_of(config)
    with served(config) as process:
        (worker,) = _children(process.pid)
        before = len(os.listdir(f"/proc/{worker}/fd"))
        burst = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 3000
        readers = []
        for _ in range(8):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.sendall(burst)
            readers.append(sock)
        try:
            deadline = time.monotonic() + 12
            while time.monotonic() < deadline:
                if len(os.listdir(f"/proc/{worker}/fd")) <= before:
                    break
                time.sleep(0.2)
            assert len(os.listdir(f"/proc/{worker}/fd")) <= before
        finally:
            for sock in readers:
                sock.close()
        slow = []
        try:
            for _ in range(16):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
                slow.append(sock)
            time.sleep(0.3)
            answer = exchange(
                port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            assert status(answer) == 200
            assert slow[0].recv(10) == b""  # the oldest unfinished request made room
        finally:
            for sock in slow:
                sock.close()


def test_workers_that_fail_as_they_start_stop_the_server(tmp_path: Path) -> None:
    """Five workers in a row that exit at once: the server stops with a failure status and
    one line saying why, instead of restarting them forever."""
    script = (
        "import os, sys\n"
        "from certstatus.responder.http1 import Server, WorkersFailing, listening_socket\n"
        "sock = listening_socket('127.0.0.1', 0)\n"
        "try:\n"
        "    Server(sock, 2, lambda sock: os._exit(3)).serve()\n"
        "except WorkersFailing as exc:\n"
        "    sys.exit(f'failed: {exc}')\n"
    )
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 1, run
    assert "failed: the responder's workers keep failing as they start" in run.stderr
    assert time.monotonic() - started < 30


def test_a_port_taken_at_the_last_moment_is_a_config_error(tmp_path: Path) -> None:
    """serve checks the address first; one taken between that check and the bind is refused
    in one line naming the key, not a traceback."""
    from certstatus.config import ConfigError, load_config
    from certstatus.responder.server import _run_native

    deployment = make_deployment(tmp_path / "ca")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", deployment.port))
        taken.listen()
        with pytest.raises(ConfigError, match=r"responder\.listen: cannot listen on 127\.0\.0\.1:"):
            _run_native(load_config(deployment.config_path))


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def test_no_traceback_in_the_native_log(native) -> None:
    """After all the above on the module's server (run last in this module's order)."""
    *_, log = native
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]


# the coroutine driver -------------------------------------------------------------------------


def _drive(coroutine):
    """What Connection does: one step here, the rest under a task only if it waits."""
    try:
        waiting = coroutine.send(None)
    except StopIteration as done:
        return "now", done.value
    return "later", asyncio.ensure_future(_resume(coroutine, waiting))


def test_a_stepped_coroutine_runs_as_under_its_own_task() -> None:
    async def at_once() -> str:
        return "a"

    async def after(future: asyncio.Future[str]) -> str:
        return (await future) + "!"

    async def twice() -> int:
        await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        return 2

    async def failing(future: asyncio.Future[str]) -> str:
        await future
        raise ValueError("inner")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert _drive(at_once()) == ("now", "a")
        future = loop.create_future()
        how, task = _drive(after(future))
        assert how == "later"
        loop.call_later(0.01, future.set_result, "b")
        assert await task == "b!"
        how, task = _drive(twice())
        assert how == "later" and await task == 2
        future = loop.create_future()
        how, task = _drive(failing(future))
        future.set_exception(KeyError("outer"))
        with pytest.raises(KeyError):
            await task  # the awaited future's exception reaches the coroutine, and out
        future = loop.create_future()
        how, task = _drive(failing(future))
        future.set_result("x")
        with pytest.raises(ValueError, match="inner"):
            await task
        future = loop.create_future()
        how, task = _drive(after(future))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert future.cancelled() or not future.done()

    asyncio.run(main())
    assert _pass_on is not None


def test_path_of_targets() -> None:
    assert path_of(b"/MEQw?x=1") == "/MEQw"
    assert path_of(b"/a%2Fb") == "/a%2Fb"  # decode_get_path percent-decodes, as for ASGI
    assert path_of(b"http://ocsp.example/MEQw") == "/MEQw"
    assert path_of(b"*") == "*"
