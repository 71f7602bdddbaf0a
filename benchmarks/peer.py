"""The peer for the serving benchmarks: `openssl ocsp -multi 2`, which ships with the OS and signs
every answer live, answering for the same certificates with the same responder key.

openssl's responder binds every address, never loopback only, so it runs inside a private
network namespace (`unshare -n`, as root) that has only `lo`; its wrk runs inside the same
namespace through nsenter. Its index.txt is written from the store, so it answers the same
statuses certstatus does. cfssl, the other peer of issue 15's table, is not installable offline
and is left out.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509

from benchmarks.load import Samples, measure, process_tree
from certstatus.ocsp.certid import HashAlgorithm, issuer_keys
from certstatus.ocsp.request import encode_request
from certstatus.store.base import IngestStore

# RFC 5280 reason codes as openssl's index.txt spells them (crl_reasons in apps/lib/apps.c)
REASONS = {
    0: "unspecified",
    1: "keyCompromise",
    2: "CACompromise",
    3: "affiliationChanged",
    4: "superseded",
    5: "cessationOfOperation",
    6: "certificateHold",
    8: "removeFromCRL",
}


def index_serial(serial: int) -> str:
    """A serial as openssl's index.txt holds it: upper-case hex, whole bytes (BN_bn2hex)."""
    text = f"{serial:X}"
    return "0" + text if len(text) % 2 else text


def index_time(when: int) -> str:
    return dt.datetime.fromtimestamp(when, dt.UTC).strftime("%y%m%d%H%M%SZ")


def write_index(
    directory: Path, store: IngestStore, issuer_id: int, serials: Sequence[int]
) -> Path:
    """index.txt (and index.txt.attr) with a V or R line per recorded serial, from the store."""
    lines = []
    for start in range(0, len(serials), 5000):
        chunk = list(serials[start : start + 5000])
        rows = store.certificates_many(issuer_id, chunk)
        for serial in chunk:
            row = rows.get(serial)
            if row is None:
                raise RuntimeError(f"serial {serial:x} is not recorded")
            hexed = index_serial(serial)
            revoked = ""
            if row.revoked:
                assert row.revoked_at is not None
                revoked = index_time(row.revoked_at)
                if row.reason is not None and row.reason in REASONS:
                    revoked += "," + REASONS[row.reason]
            status = "R" if row.revoked else "V"
            lines.append(
                f"{status}\t{index_time(row.not_after)}\t{revoked}\t{hexed}\tunknown\t/CN={hexed}"
            )
    index = directory / "index.txt"
    index.write_text("\n".join(lines) + "\n")
    (directory / "index.txt.attr").write_text("unique_subject = no\n")
    return index


def write_peer_samples(directory: Path, issuer: Path, samples: Samples) -> Samples:
    """The same requests for openssl: GET paths in the standard base64 alphabet, percent-encoded
    (RFC 6960 A.1; openssl does not read the URL-safe one). POST bodies are the same DER."""
    keys = issuer_keys(x509.load_pem_x509_certificate(issuer.read_bytes()))[HashAlgorithm.SHA1]
    paths = [
        "/" + urllib.parse.quote(base64.b64encode(encode_request(keys, s)).decode(), safe="")
        for s in samples.serials
    ]
    get = directory / "peer-paths.txt"
    get.write_text("\n".join(paths) + "\n")
    return Samples(samples.root, get, samples.post, samples.serials)


PROBE = """
import sys, time, urllib.request
from cryptography.x509 import ocsp
for _ in range(300):
    try:
        body = urllib.request.urlopen(sys.argv[1], timeout=1).read()
        break
    except OSError:
        time.sleep(0.05)
else:
    sys.exit("openssl ocsp did not answer")
print(ocsp.load_der_ocsp_response(body).certificate_status.name)
"""


class OpensslPeer:
    """`openssl ocsp -multi` in a private network namespace, started afresh for every wrk run.

    OpenSSL 3.0's responder children spin at 100% CPU reading EOF once wrk drops its
    connections at the end of a run, answer nothing after that, and the parent waits for them
    through SIGTERM; so each run gets a new server, killed (the whole process tree) right after.
    Its wrk asks a connection per request (Connection: close), as openssl's HTTP server is
    built for."""

    def __init__(
        self,
        directory: Path,
        index: Path,
        issuer: Path,
        responder_cert: Path,
        responder_key: Path,
        samples: Samples,
        processes: int = 2,
        port: int = 8080,
    ) -> None:
        self.command = [
            "openssl", "ocsp", "-index", str(index), "-CA", str(issuer),
            "-rsigner", str(responder_cert), "-rkey", str(responder_key),
            "-port", str(port), "-multi", str(processes), "-nmin", "60", "-ignore_err",
        ]  # fmt: skip
        self.url = f"http://127.0.0.1:{port}"
        self.log = directory / "openssl-ocsp.log"
        self.samples = write_peer_samples(directory, issuer, samples)
        self.holder: subprocess.Popen[bytes] | None = None
        self.prefix: tuple[str, ...] = ()

    def __enter__(self) -> OpensslPeer:
        self.holder = subprocess.Popen(
            ["unshare", "-n", "sh", "-c", "ip link set lo up && exec sleep infinity"]
        )
        self.prefix = ("nsenter", "-t", str(self.holder.pid), "-n")
        deadline = time.monotonic() + 10
        while b"UP" not in self._in_namespace(["ip", "-o", "link", "show", "lo"]).split(b">")[0]:
            if self.holder.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("no private network namespace with lo up (needs root)")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.holder is not None:
            self.holder.terminate()
            self.holder.wait(timeout=10)

    def _in_namespace(self, command: list[str]) -> bytes:
        return subprocess.run([*self.prefix, *command], capture_output=True, check=False).stdout

    def measure(self, method: str, duration: int) -> dict[str, float]:
        """One wrk run against a fresh server, after checking it answers the first sample
        "good", as certstatus does."""
        with self.log.open("ab") as log:
            server = subprocess.Popen([*self.prefix, *self.command], stdout=log, stderr=log)
        try:
            probe = subprocess.run(
                [*self.prefix, sys.executable, "-c", PROBE, self.url + self.samples.first_path],
                capture_output=True,
                text=True,
                check=False,
            )
            if probe.returncode != 0 or probe.stdout.strip() != "GOOD":
                raise RuntimeError(
                    f"openssl ocsp answered {probe.stdout!r} {probe.stderr[-300:]!r}"
                )
            return measure(
                self.url, self.samples, duration, method, server.pid, self.prefix, close=True
            )
        finally:
            stop_tree(server)


def stop_tree(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM openssl and its forked children, SIGKILL what is left after a second."""
    pids = process_tree(server.pid)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(timeout=1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    server.wait(timeout=5)


def peer_figures(
    directory: Path, deployment: Path, index: Path, samples: Samples, duration: int
) -> dict[str, Any]:
    """openssl ocsp -multi 2 measured with the same samples (GET then POST, each after a 2 s
    warm-up on its own server instance), or why it was not."""
    figures: dict[str, Any] = {"name": "openssl ocsp -multi 2", "connection_per_request": True}
    try:
        with OpensslPeer(
            directory,
            index,
            deployment / "issuer.pem",
            deployment / "responder.pem",
            deployment / "responder.key",
            samples,
        ) as peer:
            for method in ("GET", "POST"):
                peer.measure(method, 2)
                figures[method.lower()] = peer.measure(method, duration)
    except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        figures["skipped"] = str(exc)[-300:]
    return figures
