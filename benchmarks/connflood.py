"""Connection floods: idle and slowloris connections against a responder, with or without the
HAProxy front of deploy/haproxy/certstatus.cfg, while a well-behaved client asks valid OCSP
requests and times them. Loopback only: the target is always 127.0.0.1; the attackers' source
addresses are spread over 127.1.0.0/16 (still this host) so a per-address cap can be shown.

    .venv/bin/python -m benchmarks.connflood [--idle 10000] [--slow 1000] [--seconds 30] \\
        [--direct] [--server native]

prints the valid requests' p50/p99/max latency and failures. tests/test_front.py runs the same
pieces at 2 000 idle + 200 slowloris.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FRONT_CONFIG = REPO / "deploy" / "haproxy" / "certstatus.cfg"
SOURCES = 64  # attacker source addresses, 127.1.0.1 ...


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit: each held connection is a descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def source(n: int) -> str:
    return f"127.1.{(n % SOURCES) // 250}.{(n % SOURCES) % 250 + 1}"


# --- the attacker (its own process: its sockets must not slow the timed client) ------------


@dataclass
class Tally:
    opened: int = 0
    refused: int = 0
    closed_by_server: int = 0
    held: set[int] = field(default_factory=set)


async def _hold(n: int, port: int, slow: bool, until: float, tally: Tally) -> None:
    """One attacker slot: connect, then say nothing (idle) or trickle a header line every
    second without ever ending the headers (slowloris); reconnect when the server closes it."""
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, local_addr=(source(n), 0)), 5
            )
        except (OSError, TimeoutError):
            tally.refused += 1
            await asyncio.sleep(0.5)
            continue
        tally.opened += 1
        tally.held.add(n)
        try:
            if slow:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            while time.monotonic() < until:
                if slow:
                    writer.write(b"X-Slow: %d\r\n" % int(time.monotonic()))
                    await writer.drain()
                with contextlib.suppress(TimeoutError):
                    if not await asyncio.wait_for(reader.read(1024), 1.0):
                        tally.closed_by_server += 1
                        break
        except OSError:
            tally.closed_by_server += 1
        finally:
            tally.held.discard(n)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await asyncio.sleep(1.0)  # then come back, as a flood does


async def _attack(port: int, idle: int, slow: int, seconds: float) -> Tally:
    tally = Tally()
    until = time.monotonic() + seconds
    tasks = []
    for n in range(idle + slow):
        tasks.append(asyncio.create_task(_hold(n, port, n >= idle, until, tally)))
        if n % 200 == 199:
            await asyncio.sleep(0.05)  # a ramp, not a SYN burst the backlog drops
    ramp_done = time.monotonic()
    while time.monotonic() < until:
        print(f"held {len(tally.held)} opened {tally.opened}", flush=True)
        await asyncio.sleep(1)
    await asyncio.gather(*tasks)
    print(f"ramp {ramp_done:.0f}", file=sys.stderr)
    return tally


def attacker_main(port: int, idle: int, slow: int, seconds: float) -> None:
    raise_nofile()
    tally = asyncio.run(_attack(port, idle, slow, seconds))
    print(
        f"done opened {tally.opened} refused {tally.refused} "
        f"closed_by_server {tally.closed_by_server}",
        flush=True,
    )


@contextlib.contextmanager
def attacker(port: int, idle: int, slow: int, seconds: float) -> Iterator[subprocess.Popen[str]]:
    """The attacker process; yields once it holds at least 90% of its connections (or after
    a bounded wait), and is stopped (by its own pid) when the block ends."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.connflood",
            "attack",
            "--port",
            str(port),
            "--idle",
            str(idle),
            "--slow",
            str(slow),
            "--seconds",
            str(seconds),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert process.stdout is not None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            if line.startswith("held") and int(line.split()[1]) >= 0.9 * (idle + slow):
                break
        yield process
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        if process.poll() is None:
            process.kill()
            process.wait()


# --- the front ---------------------------------------------------------------------------------


@contextlib.contextmanager
def haproxy_front(
    backend_port: int, front_port: int, per_ip: int = 64, maxconn: int = 9000
) -> Iterator[subprocess.Popen[bytes]]:
    """deploy/haproxy/certstatus.cfg in the foreground, in front of 127.0.0.1:backend_port."""
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    env = {
        **os.environ,
        "CERTSTATUS_FRONT": f"127.0.0.1:{front_port}",
        "CERTSTATUS_BACKEND": f"127.0.0.1:{backend_port}",
        "CERTSTATUS_PER_IP": str(per_ip),
        "CERTSTATUS_MAXCONN": str(maxconn),
    }
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    process = subprocess.Popen([haproxy, "-db", "-f", str(FRONT_CONFIG)], env=env, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                status, _ = get(front_port, "/healthz", timeout=1)
                if status == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"haproxy did not start: {log.read().decode()[-2000:]}")
            time.sleep(0.1)
        yield process
    finally:
        process.send_signal(signal.SIGUSR1)  # soft stop: finish what is in flight
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


# --- the well-behaved client --------------------------------------------------------------------


def get(port: int, path: str, timeout: float = 5) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


@dataclass
class Probe:
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0

    def report(self) -> str:
        if not self.latencies:
            return f"no answer; failures {len(self.failures)}"
        return (
            f"{len(self.latencies)} valid requests, failures {len(self.failures)}; latency "
            f"p50 {statistics.median(self.latencies) * 1000:.1f} ms, "
            f"p99 {self.percentile(99) * 1000:.1f} ms, max {max(self.latencies) * 1000:.1f} ms"
        )


def probe(port: int, paths: list[str], seconds: float, timeout: float = 5) -> Probe:
    """Valid OCSP GETs, each on a new connection (as relying parties make them), for `seconds`;
    an answer other than 200 application/ocsp-response is a failure."""
    result = Probe()
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        path = paths[n % len(paths)]
        n += 1
        started = time.monotonic()
        try:
            status, body = get(port, path, timeout)
        except OSError as exc:
            result.failures.append(f"{type(exc).__name__}: {exc}")
            continue
        took = time.monotonic() - started
        if status != 200 or not body.startswith(b"\x30"):
            result.failures.append(f"HTTP {status}")
            continue
        result.latencies.append(took)
        time.sleep(0.02)
    return result


# --- the benchmark ------------------------------------------------------------------------------


def benchmark(idle: int, slow: int, seconds: float, direct: bool, server: str = "native") -> None:
    from tests.conftest import make_deployment, serving

    from certstatus.ocsp.certid import HashAlgorithm, issuer_keys
    from certstatus.ocsp.request import encode_request, get_path
    from certstatus.ports import free_port

    raise_nofile()
    with tempfile.TemporaryDirectory() as tmp:
        deployment = make_deployment(Path(tmp) / "ca")
        if server != "native":
            config = deployment.config_path
            config.write_text(
                config.read_text().replace("[responder]\n", f'[responder]\nserver = "{server}"\n')
            )
        store = deployment.store()
        good, revoked = deployment.good_and_revoked(store)
        store.close()
        keys = issuer_keys(deployment.ca.certificate)[HashAlgorithm.SHA1]
        paths = [get_path(encode_request(keys, c.serial_number)) for c in (good, revoked)]
        with serving(deployment), contextlib.ExitStack() as stack:
            port = deployment.port
            if not direct:
                port = free_port()
                stack.enter_context(haproxy_front(deployment.port, port))
            print(f"baseline: {probe(port, paths, 3).report()}")
            with attacker(port, idle, slow, seconds + 40) as flood:
                where = f"direct to {server}" if direct else "through the front"
                print(f"{idle} idle + {slow} slowloris held ({where})")
                result = probe(port, paths, seconds)
                flood.terminate()
            print(f"under attack: {result.report()}")
            for failure in sorted(set(result.failures))[:5]:
                print(f"  failure: {failure}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", nargs="?", default="benchmark", choices=["benchmark", "attack"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--idle", type=int, default=10_000)
    parser.add_argument("--slow", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--direct", action="store_true", help="no front: the server alone")
    parser.add_argument("--server", default="native", choices=["native", "granian"])
    args = parser.parse_args()
    if args.mode == "attack":
        attacker_main(args.port, args.idle, args.slow, args.seconds)
    else:
        benchmark(args.idle, args.slow, args.seconds, args.direct, args.server)


if __name__ == "__main__":
    main()
