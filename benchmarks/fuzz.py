"""Fuzzing a real `certstatus serve` on loopback: mutated OCSP requests (GET, POST, HEAD) on
keep-alive connections and raw HTTP messages with odd framing on fresh ones (cases in
benchmarks/fuzzcases.py), counting answers by HTTP status and OCSP status, while the server is
watched: /healthz, its log (no traceback), its workers (none died and respawned), its RSS.

    .venv/bin/python -m benchmarks.fuzz [--requests 1000000] [--seconds 1200] [--seed 1] \\
        [--concurrency 32] [--workers 2] [--json report.json]

exits non-zero when the responder failed: any 5xx, a traceback in its log, an answer against
the oracle of an unmutated request, an OCSP answer that does not parse, /healthz failing, or a
worker replaced. tests/test_fuzz.py runs a few seconds of it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, fields
from pathlib import Path

from cryptography.x509 import ocsp

from benchmarks.fuzzcases import OcspCase, Target, get_target, http_request, ocsp_case, raw_case
from benchmarks.load import process_tree
from certstatus import der

RESPONSE_STATUS = {
    0: "successful",
    1: "malformedRequest",
    2: "internalError",
    3: "tryLater",
    5: "sigRequired",
    6: "unauthorized",
}
Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


# --- the server under test ---------------------------------------------------------------------


@dataclass
class ServerUnderTest:
    port: int
    pid: int
    log: Path

    def processes(self) -> list[int]:
        """The serve process and all its descendants (granian's workers, the roles)."""
        return sorted(process_tree(self.pid))

    def rss_kib(self) -> int:
        """Resident memory of the whole process tree, KiB."""
        total = 0
        for pid in self.processes():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        return total


def prepare(directory: Path, certificates: int, workers: int) -> tuple[Path, Target, int]:
    """A signed single-issuer deployment; the config, what the fuzzer may ask for, the port."""
    from tests.conftest import make_deployment

    from certstatus.ocsp.certid import issuer_keys

    deployment = make_deployment(directory)
    store = deployment.store()
    ingest = deployment.ingest(store)
    leaves = [deployment.leaf() for _ in range(certificates)]
    now = int(time.time())
    ingest.add_certificates([(leaf, f"c{i}") for i, leaf in enumerate(leaves)], now)
    serials = {}
    for i, leaf in enumerate(leaves):
        if i % 3 == 0:
            ingest.revoke("demo", leaf.serial_number, "keyCompromise", now)
        serials[leaf.serial_number] = "revoked" if i % 3 == 0 else "good"
    with deployment.signer(store) as signer:
        signer.sign_due()
    store.close()
    text = deployment.config_path.read_text().replace(
        "[responder]\n", f'[responder]\nworkers = {workers}\nrequest_timeout = "1s"\n'
    )
    deployment.config_path.write_text(text)
    return (
        deployment.config_path,
        Target(issuer_keys(deployment.ca.certificate), serials),
        (deployment.port),
    )


@contextmanager
def server(config: Path, port: int, log: Path) -> Iterator[ServerUnderTest]:
    """`certstatus serve` with its output in a log file, stopped after."""
    from tests.conftest import stop_process, wait_ready

    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "certstatus.cli", "serve", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}/", process, timeout=30)
        yield ServerUnderTest(port, process.pid, log)
    finally:
        stop_process(process)


# --- HTTP on raw sockets -----------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


class NoReply(Exception):
    """The connection closed, or stalled, before a whole answer arrived."""


async def read_reply(reader: asyncio.StreamReader, head: bool = False) -> Reply:
    """One HTTP/1.1 answer (interim 1xx skipped): Content-Length, chunked or to-EOF bodies."""
    while True:
        line = await reader.readuntil(b"\r\n")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise NoReply(f"bad status line {line[:60]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if status >= 200:
            break
    if head or status in (204, 304):
        return Reply(status, headers, b"")
    if "content-length" in headers:
        return Reply(status, headers, await reader.readexactly(int(headers["content-length"])))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        while await reader.readuntil(b"\r\n") != b"\r\n":
            pass
        return Reply(status, headers, bytes(body))
    return Reply(status, headers, await reader.read())


def ocsp_status(body: bytes) -> tuple[str, str | None, int | None]:
    """responseStatus, and for a successful answer the certStatus and serial (by cryptography,
    an oracle independent of the responder's own DER code); ValueError if it does not parse."""
    _, start, _ = der.read_tlv(body)
    tag, value_start, value_end = der.read_tlv(body, start)
    if tag != der.ENUMERATED or value_end - value_start != 1:
        raise ValueError("no responseStatus")
    name = RESPONSE_STATUS.get(body[value_start], f"status-{body[value_start]}")
    if name != "successful":
        return name, None, None
    response = ocsp.load_der_ocsp_response(body)
    return name, response.certificate_status.name.lower(), response.serial_number


# --- the run -----------------------------------------------------------------------------------


@dataclass
class Report:
    requests: int = 0
    seconds: float = 0.0
    seed: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    cases: Counter[str] = field(default_factory=Counter)
    raw: dict[str, Counter[str]] = field(default_factory=dict)  # framing case -> answers
    fivexx: int = 0
    failures: list[str] = field(default_factory=list)
    failure_count: int = 0
    tracebacks: int = 0
    log_errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # samples of keep-alive closes
    health_checks: int = 0
    health_failures: int = 0
    health_max_ms: float = 0.0
    rss_start_kib: int = 0
    rss_warm_kib: int = 0
    rss_end_kib: int = 0
    processes_start: list[int] = field(default_factory=list)
    processes_end: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.fivexx == 0
            and self.failure_count == 0
            and self.tracebacks == 0
            and self.health_failures == 0
            and self.processes_start == self.processes_end
        )

    def fail(self, text: str) -> None:
        self.failure_count += 1
        if len(self.failures) < 50:
            self.failures.append(text)


class Fuzzer:
    """Lanes of traffic sharing one request budget and deadline, and a watcher."""

    def __init__(
        self,
        sut: ServerUnderTest,
        target: Target,
        requests: int,
        seconds: float,
        seed: int,
        raw_share: float,
    ) -> None:
        self.sut = sut
        self.target = target
        self.budget = requests
        self.deadline = time.monotonic() + seconds
        self.seed = seed
        self.raw_share = raw_share
        self.report = Report(seed=seed)
        self.log_offset = 0
        self.started = time.monotonic()
        self.progress = False  # a line per check on stderr (long runs)

    def _take(self, count: int = 1) -> bool:
        if self.report.requests >= self.budget or time.monotonic() >= self.deadline:
            return False
        self.report.requests += count
        return True

    def _count(self, reply: Reply, label: str) -> str:
        key = str(reply.status)
        if reply.status >= 500:
            self.report.fivexx += 1
            self.report.fail(f"{label}: HTTP {reply.status} {reply.body[:200]!r}")
        if label == "head":
            key += " (HEAD)"
        elif reply.headers.get("content-type") == "application/ocsp-response":
            try:
                status, cert, _ = ocsp_status(reply.body)
                key += f" {status}" + (f"/{cert}" if cert else "")
            except Exception as exc:
                self.report.fail(f"{label}: unparseable OCSP answer ({exc}) {reply.body[:60]!r}")
                key += " unparseable"
        self.report.answers[key] += 1
        return key

    def _check(self, case: OcspCase, reply: Reply, label: str, data: bytes) -> None:
        """An unmutated request against its oracle; every POST of a readable size gets 200."""
        if case.expect is None:
            if label.startswith("post") and len(case.der) <= 10_000 and reply.status != 200:
                self.report.fail(f"{label}: HTTP {reply.status} for {case.der.hex()}")
            return
        want = case.expect
        try:
            got = ocsp_status(reply.body) if reply.status == 200 else None
        except Exception:
            got = None
        if (
            got is None
            or got[0] != want.response_status
            or (
                want.cert_status is not None and (got[1], got[2]) != (want.cert_status, want.serial)
            )
        ):
            self.report.fail(
                f"{label} {case.label}: wanted {want}, got HTTP {reply.status} {got}; "
                f"sent {data[:300]!r}"
            )

    async def lane(self, number: int) -> None:
        """Keep-alive OCSP requests, with raw framing cases on fresh connections in between."""
        rng = random.Random(self.seed * 1000 + number)
        connection: Connection | None = None
        last, previous = "", b""  # the previous answer on this connection, and its request
        while True:
            if rng.random() < self.raw_share:
                framed = raw_case(rng, ocsp_case(rng, self.target).der)
                if not self._take(framed.answers):
                    break
                self.report.cases[framed.label] += 1
                await self.raw(framed.data, framed.answers, framed.label)
                continue
            if not self._take():
                break
            case = ocsp_case(rng, self.target)
            roll = rng.random()
            if roll < 0.5:
                label = "post"
                data = http_request("POST", "/", case.der)
            else:
                label = "head" if roll > 0.95 else "get"
                path, clean = get_target(rng, case.der)
                if not clean:
                    case.expect = None
                data = http_request(label.upper(), path)
            self.report.cases[f"{label}-{case.label}"] += 1
            try:
                reply, connection = await self._exchange(
                    connection, data, label == "head", last, previous
                )
            except (
                OSError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                NoReply,
                TimeoutError,
                ValueError,
            ) as exc:
                self.report.answers[f"no answer ({type(exc).__name__})"] += 1
                if case.expect is not None or label == "post":
                    self.report.fail(f"{label} {case.label}: no answer ({exc!r}) to {data[:300]!r}")
                await _close(connection)
                connection = None
                continue
            last, previous = self._count(reply, label), data
            if label != "head":
                self._check(case, reply, label, data)
            if reply.headers.get("connection", "").lower() == "close":
                await _close(connection)
                connection = None
        await _close(connection)

    async def _exchange(
        self, connection: Connection | None, data: bytes, head: bool, last: str, previous: bytes
    ) -> tuple[Reply, Connection]:
        """One request and its answer on the lane's keep-alive connection. A reused connection
        that the server closed before this request's first byte came back (as it does after
        answering broken framing with 400, without saying Connection: close) is replaced and
        the request sent once more, as HTTP clients do; on a fresh connection no answer is
        an answer missing."""
        reused = connection is not None
        for _ in range(2):
            if connection is None:
                connection = await asyncio.open_connection("127.0.0.1", self.sut.port)
            reader, writer = connection
            try:
                writer.write(data)
                return await asyncio.wait_for(read_reply(reader, head=head), 10), connection
            except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as exc:
                partial = getattr(exc, "partial", b"")
                if not reused or partial:
                    raise
                self.report.answers[f"keep-alive closed after {last} (sent again)"] += 1
                if len(self.report.notes) < 20:
                    self.report.notes.append(f"closed after {last} to {previous[:200]!r}")
                await _close(connection)
                connection = None
                reused = False
        raise AssertionError("unreachable")

    async def raw(self, data: bytes, answers: int, label: str) -> None:
        """Send one raw message on a fresh connection; count what comes back before it closes."""
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.sut.port)
        except OSError as exc:
            self.report.fail(f"{label}: connect failed {exc!r}")
            return
        got = 0
        try:
            writer.write(data)
            loop = asyncio.get_running_loop()
            until = loop.time() + 4
            while got < answers:
                reply = await asyncio.wait_for(read_reply(reader), max(until - loop.time(), 0.01))
                got += 1
                self.report.raw.setdefault(label, Counter())[self._count(reply, label)] += 1
                if reply.headers.get("connection", "").lower() == "close":
                    break
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            NoReply,
            ValueError,
        ):
            pass  # the server closed it: an answer to broken framing too
        except TimeoutError:
            self.report.answers["raw: timeout"] += 1
            self.report.raw.setdefault(label, Counter())["timeout"] += 1
        if got == 0:
            self.report.answers["raw: closed without answer"] += 1
            self.report.raw.setdefault(label, Counter())["closed without answer"] += 1
        await _close((reader, writer))

    async def watch(self, every: float) -> None:
        """/healthz, the log and the RSS, every `every` seconds until the lanes are done."""
        while True:
            await asyncio.sleep(every)
            await self.check()

    async def check(self) -> None:
        self.report.health_checks += 1
        started = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.sut.port)
            writer.write(http_request("GET", "/healthz"))
            reply = await asyncio.wait_for(read_reply(reader), 2)
            await _close((reader, writer))
            healthy = reply.status == 200 and reply.body == b"ok\n"
        except (OSError, asyncio.IncompleteReadError, NoReply, TimeoutError, ValueError):
            healthy = False
        elapsed = (time.perf_counter() - started) * 1000
        self.report.health_max_ms = max(self.report.health_max_ms, elapsed)
        if not healthy:
            self.report.health_failures += 1
            self.report.fail(f"/healthz failed after {self.report.requests} requests")
        self.scan_log()
        if self.progress:
            r = self.report
            print(
                f"{time.monotonic() - self.started:7.0f}s {r.requests} requests, 5xx {r.fivexx}, "
                f"failures {r.failure_count}, tracebacks {r.tracebacks}, /healthz "
                f"{'ok' if healthy else 'FAILED'} {elapsed:.0f} ms, RSS {self.sut.rss_kib()} KiB",
                file=sys.stderr,
                flush=True,
            )

    def scan_log(self) -> None:
        with self.sut.log.open("rb") as log:
            log.seek(self.log_offset)
            text = log.read().decode("utf-8", "replace")
        cut = text.rfind("\n") + 1  # a line still being written is read next time
        self.log_offset += len(text[:cut].encode())
        for line in text[:cut].splitlines():
            if "Traceback (most recent call last)" in line:
                self.report.tracebacks += 1
            noted = len(self.report.log_errors) < 50
            if noted and any(w in line for w in ("ERROR", "CRITICAL", "Traceback", "Error")):
                self.report.log_errors.append(line[:300])

    async def run(self, concurrency: int, check_every: float) -> Report:
        r = self.report
        r.processes_start = self.sut.processes()
        r.rss_start_kib = self.sut.rss_kib()
        started = time.monotonic()
        warm_budget, self.budget = self.budget, min(self.budget, max(self.budget // 50, 200))
        await asyncio.gather(*(self.lane(n) for n in range(concurrency)))  # warm-up
        r.rss_warm_kib = self.sut.rss_kib()
        self.budget = warm_budget
        watcher = asyncio.create_task(self.watch(check_every))
        await asyncio.gather(*(self.lane(n + concurrency) for n in range(concurrency)))
        watcher.cancel()
        await self.check()
        r.seconds = round(time.monotonic() - started, 1)
        r.rss_end_kib = self.sut.rss_kib()
        r.processes_end = self.sut.processes()
        return r


async def _close(connection: Connection | None) -> None:
    """Close a connection if there is one."""
    if connection is not None:
        connection[1].close()
        with suppress(OSError):
            await connection[1].wait_closed()


def fuzz(
    requests: int,
    seconds: float,
    seed: int = 1,
    concurrency: int = 32,
    workers: int = 2,
    raw_share: float = 0.12,
    check_every: float = 5.0,
    certificates: int = 12,
    progress: bool = False,
) -> Report:
    """Set up a deployment, serve it, fuzz it; the report (the server is stopped after)."""
    with tempfile.TemporaryDirectory(prefix="certstatus-fuzz-") as tmp:
        config, target, port = prepare(Path(tmp) / "ca", certificates, workers)
        with server(config, port, Path(tmp) / "serve.log") as sut:
            fuzzer = Fuzzer(sut, target, requests, seconds, seed, raw_share)
            fuzzer.progress = progress
            report = asyncio.run(fuzzer.run(concurrency, check_every))
        fuzzer.scan_log()  # what the server said while stopping
        return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--raw-share", type=float, default=0.12)
    parser.add_argument("--check-every", type=float, default=5.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--verbose", action="store_true", help="answers per framing case")
    args = parser.parse_args()
    report = fuzz(
        args.requests,
        args.seconds,
        args.seed,
        args.concurrency,
        args.workers,
        args.raw_share,
        args.check_every,
        progress=True,
    )
    if args.json:  # asdict would rebuild each Counter from its (key, count) pairs
        summary = {f.name: getattr(report, f.name) for f in fields(report)} | {"ok": report.ok}
        summary["raw"] = {label: dict(answers) for label, answers in report.raw.items()}
        args.json.write_text(json.dumps(summary, indent=2, default=dict))
    rate = report.requests / report.seconds if report.seconds else 0
    print(f"{report.requests} requests in {report.seconds}s ({rate:.0f}/s), seed {report.seed}")
    for key, count in sorted(report.answers.items(), key=lambda kv: -kv[1]):
        print(f"  {count:>9}  {key}")
    if args.verbose:
        for label, answers in sorted(report.raw.items()):
            print(f"  raw {label}: {dict(answers.most_common())}")
    print(
        f"5xx: {report.fivexx}  tracebacks: {report.tracebacks}  failures: {report.failure_count}"
    )
    print(
        f"/healthz: {report.health_checks} checks, {report.health_failures} failed, "
        f"max {report.health_max_ms:.1f} ms"
    )
    print(
        f"RSS KiB (serve + workers): start {report.rss_start_kib}, after warm-up "
        f"{report.rss_warm_kib}, end {report.rss_end_kib}"
    )
    print(f"processes: {report.processes_start} -> {report.processes_end}")
    for line in report.failures[:40] + report.log_errors[:20] + report.notes[:10]:
        print("  !", line)
    print("OK" if report.ok else "FAILED")
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
