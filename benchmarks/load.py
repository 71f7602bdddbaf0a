"""What the serving benchmarks share: request samples written from the store, nginx serving the
same response bytes as static files, `wrk -t2 -c64` GET and POST runs, and the CPU and memory
the server under load used, read from /proc.

Requests use URL-safe base64 (which the responder decodes per R14) so that every GET path is also
a plain file name for nginx. nginx static GET is the reference for both methods: POST cannot be
served from a file, and it is the figure a CDN-less origin must reach.
"""

from __future__ import annotations

import os
import random
import re
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from certstatus.ocsp.certid import HashAlgorithm, issuer_keys
from certstatus.ocsp.request import encode_request, get_path
from certstatus.ports import free_port
from certstatus.store.base import ResponseReads

HERE = Path(__file__).parent
SCRIPTS = {"GET": HERE / "paths.lua", "POST": HERE / "post.lua"}
TICKS = os.sysconf("SC_CLK_TCK")
NGINX_CONF = """\
worker_processes {workers};
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  default_type application/ocsp-response;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  server {{
    listen 127.0.0.1:{port};
    root {root};
    location / {{ add_header Cache-Control "max-age=3600, public, no-transform, must-revalidate"; }}
  }}
}}
"""


@dataclass(frozen=True)
class Samples:
    """Request files for wrk: GET paths (one a line) and POST bodies (hex DER, one a line),
    for the same serials; root holds each GET path's response as a file, for nginx."""

    root: Path
    get: Path
    post: Path
    serials: list[int]

    @property
    def first_path(self) -> str:
        return self.get.read_text().split("\n", 1)[0]

    def listing(self, method: str) -> Path:
        return self.get if method == "GET" else self.post


def write_samples(
    directory: Path,
    store: ResponseReads,
    issuer: x509.Certificate,
    issuer_id: int,
    serials: Sequence[int],
    sample: int,
    seed: int = 3,
) -> Samples:
    """Pick `sample` of serials at random and write their requests and stored SHA-1 responses."""
    keys = issuer_keys(issuer)[HashAlgorithm.SHA1]
    root = directory / "static"
    root.mkdir(exist_ok=True)
    chosen = random.Random(seed).sample(list(serials), min(sample, len(serials)))
    paths, bodies = [], []
    for serial in chosen:
        request = encode_request(keys, serial)
        path = get_path(request)
        stored = store.response(issuer_id, serial)
        if stored is None:
            raise RuntimeError(f"serial {serial:x} has no signed response")
        (root / path.lstrip("/")).write_bytes(stored.der)
        paths.append(path)
        bodies.append(request.hex())
    get, post = directory / "paths.txt", directory / "bodies.txt"
    get.write_text("\n".join(paths) + "\n")
    post.write_text("\n".join(bodies) + "\n")
    return Samples(root, get, post, chosen)


@contextmanager
def nginx(directory: Path, root: Path, workers: int = 2) -> Iterator[tuple[str, int]]:
    """nginx serving root on a free loopback port: yields its URL and master pid."""
    port = free_port()
    conf = directory / "nginx.conf"
    conf.write_text(NGINX_CONF.format(workers=workers, dir=directory, port=port, root=root))
    process = subprocess.Popen(["nginx", "-c", str(conf)])
    try:
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


def responder_config(
    source: Path, target: Path, port: int, server: str = "native", workers: int = 2
) -> Path:
    """A copy of a deployment's config whose [responder] listens on port with `workers` server
    processes and no signer inside: the benchmark pregenerates before it serves."""
    head, table, rest = source.read_text().partition("[responder]\n")
    if not table:
        head, rest = head + "\n", ""
    section, next_table, tail = rest.partition("\n[")
    kept = [
        line
        for line in section.split("\n")
        if not re.match(r"\s*(listen|server|workers|run_signer)\s*=", line)
    ]
    settings = [
        f'listen = "127.0.0.1:{port}"',
        f'server = "{server}"',
        f"workers = {workers}",
        "run_signer = false",
    ]
    text = head + "[responder]\n" + "\n".join(settings + kept) + next_table + tail
    target.write_text(text)
    return target


def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(url)


def same_bytes(a: str, b: str, path: str) -> None:
    with urllib.request.urlopen(a + path) as one, urllib.request.urlopen(b + path) as two:
        assert one.read() == two.read(), "responder and nginx must serve the same bytes"


def process_tree(root: int) -> list[int]:
    """root and its descendants (granian's and nginx's workers, openssl's forked children)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of the processes, in seconds (a process gone meanwhile counts 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return total / TICKS


def rss_bytes(pids: Sequence[int]) -> int:
    """Resident memory of the processes together (VmRSS; shared pages counted per process)."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        total += int(match.group(1)) * 1024 if match else 0
    return total


def wrk(
    url: str,
    listing: Path,
    duration: float,
    method: str = "GET",
    connections: int = 64,
    prefix: Sequence[str] = (),
    close: bool = False,
) -> dict[str, float]:
    """One `wrk -t2` run of random requests from listing; prefix runs it elsewhere (nsenter);
    close asks for a connection per request."""
    out = subprocess.run(
        [
            *prefix,
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{duration:g}s",
            "--latency",
            "-s",
            str(SCRIPTS[method]),
            url,
            "--",
            str(listing),
            *(["close"] if close else []),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    if rps is None or count is None or p99 is None:
        raise RuntimeError(f"cannot read wrk output: {out[-600:]}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "requests_per_s": float(rps.group(1)),
        "requests": float(count.group(1)),
        "p99_ms": round(float(p99.group(1)) * scale, 3),
        "non_2xx": float(errors.group(1)) if errors else 0.0,
        **({"socket_errors": socket_errors.group(1)} if socket_errors else {}),  # type: ignore[dict-item]
    }


def measure(
    url: str,
    samples: Samples,
    duration: float,
    method: str,
    server_pid: int,
    prefix: Sequence[str] = (),
    close: bool = False,
) -> dict[str, float]:
    """A wrk run, with the server's CPU per answer: the utime+stime its processes spent during
    the run over the requests wrk counted. On 2 shared cores req/s drifts with the neighbours;
    CPU per answer drifts less."""
    pids = process_tree(server_pid)
    before = cpu_seconds(pids)
    result = wrk(url, samples.listing(method), duration, method, prefix=prefix, close=close)
    spent = cpu_seconds(pids) - before
    result["cpu_us_per_answer"] = round(spent / max(result["requests"], 1) * 1e6, 1)
    return result


def paired_rounds(
    reference: tuple[str, int], ours: tuple[str, int], samples: Samples, duration: int, rounds: int
) -> dict[str, Any]:
    """The reference's GET, then our GET and POST, back to back, `rounds` times ((url, pid)
    each): on a shared, noisy machine a ratio taken within one round is steadier than two long
    runs minutes apart. Reports every round and the median ratios to the reference's GET."""
    (reference_url, reference_pid), (url, pid) = reference, ours
    measure(reference_url, samples, 2, "GET", reference_pid)
    for method in ("GET", "POST"):
        measure(url, samples, 2, method, pid)
    rows: list[dict[str, Any]] = []
    ratios: dict[str, list[float]] = {"get": [], "post": []}
    p99: dict[str, list[float]] = {"get": [], "post": []}
    for _ in range(rounds):
        base = measure(reference_url, samples, duration, "GET", reference_pid)
        row: dict[str, Any] = {"reference": base}
        for method in ("get", "post"):
            result = measure(url, samples, duration, method.upper(), pid)
            ratio = round(result["requests_per_s"] / base["requests_per_s"], 3)
            row[method], row[f"{method}_ratio"] = result, ratio
            ratios[method].append(ratio)
            p99[method].append(result["p99_ms"])
        rows.append(row)
    return {
        "rounds": rows,
        **{f"{m}_ratio_median": statistics.median(ratios[m]) for m in ratios},
        **{f"{m}_p99_ms_median": statistics.median(p99[m]) for m in p99},
    }
