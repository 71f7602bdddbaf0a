"""The load a drill puts on the system: a steady stream of new certificates and revocations on
the primary, and clients asking every responder about every serial, all the time."""

from __future__ import annotations

import functools
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from certstatus.demo.ca import DemoCA
from certstatus.ingest import Ingest
from certstatus.ocsp.certid import HashAlgorithm, issuer_keys
from certstatus.ocsp.request import encode_request, get_path
from certstatus.store.postgres import PostgresStore

NON_AUTHORITATIVE = {
    "unauthorized",
    "tryLater",
    "malformed",
    "internalError",
    "http-error",
    "unreachable",
}


@dataclass
class Answer:
    at: float
    responder: str
    serial: int
    kind: str
    source: str
    no_store: bool


@dataclass
class Ledger:
    """What exists on the primary and since when (monotonic seconds)."""

    ingested_at: dict[int, float] = field(default_factory=dict)
    good_at: dict[int, float] = field(default_factory=dict)
    revoked_at: dict[int, float] = field(default_factory=dict)
    # the client's own log of acknowledgements: revocations that returned without an error
    revoke_acked_at: dict[int, float] = field(default_factory=dict)
    ingested: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def classify(body: bytes) -> str:
    try:
        parsed = ocsp.load_der_ocsp_response(body)
    except ValueError:
        return "http-error"
    status = parsed.response_status
    if status is ocsp.OCSPResponseStatus.SUCCESSFUL:
        return "revoked" if parsed.certificate_status is ocsp.OCSPCertStatus.REVOKED else "good"
    return {
        ocsp.OCSPResponseStatus.UNAUTHORIZED: "unauthorized",
        ocsp.OCSPResponseStatus.TRY_LATER: "tryLater",
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST: "malformed",
        ocsp.OCSPResponseStatus.INTERNAL_ERROR: "internalError",
    }.get(status, "http-error")


def ask(url: str, path: str, timeout: float = 5.0) -> tuple[str, str, bool]:
    """(kind, answering source, sent with no-store) for one GET."""
    try:
        with urllib.request.urlopen(url + path, timeout=timeout) as answer:
            return (
                classify(answer.read()),
                answer.headers.get("certstatus-source", ""),
                "no-store" in (answer.headers.get("Cache-Control") or ""),
            )
    except urllib.error.HTTPError:
        return "http-error", "", True
    except OSError:
        return "unreachable", "", True


class Traffic:
    def __init__(
        self,
        ca: DemoCA,
        ingest: Ingest,
        primary: PostgresStore,
        responders: dict[str, str],
        issuer_id: int,
    ) -> None:
        self.ca = ca
        self._issuer_key = issuer_keys(ca.certificate)[HashAlgorithm.SHA1]
        self.ingest = ingest
        self.primary = primary
        self.responders = responders
        self.issuer_id = issuer_id
        self.ledger = Ledger()
        self.answers: list[Answer] = []
        self.stop = threading.Event()
        self.pause_ingest = threading.Event()
        self._paths: dict[int, str] = {}
        self._key = ec.generate_private_key(ec.SECP256R1()).public_key()
        self._rng = random.Random(7)
        self._threads: list[threading.Thread] = []
        self.unknown_serial = 0x0DD0_0DD0_0DD0
        self.refused: Counter[str] = Counter()  # the CA's writes that failed, by error

    def start(self) -> None:
        targets = [self._ingest, self._watch_primary]
        targets += [functools.partial(self._client, name) for name in self.responders]
        for target in targets:
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def path(self, serial: int) -> str:
        if serial not in self._paths:
            self._paths[serial] = get_path(encode_request(self._issuer_key, serial))
        return self._paths[serial]

    def _ingest(self) -> None:
        serial = 0x5E_0000_0000
        while not self.stop.is_set():
            if self.pause_ingest.is_set():
                self.stop.wait(0.1)
                continue
            serial += 1
            leaf = self.ca.leaf(self._key, serial, "http://drill.invalid/")
            try:
                self.ingest.add_certificates([(leaf, "drill")], int(time.time()))
                with self.ledger.lock:
                    self.ledger.ingested.append(serial)
                    self.ledger.ingested_at[serial] = time.monotonic()
                if serial % 5 == 0:
                    victim = self._rng.choice(self.ledger.ingested[:-1] or [serial])
                    if (
                        victim not in self.ledger.revoked_at
                        and victim not in self.ledger.revoke_acked_at
                    ):
                        self.ingest.revoke("demo", victim, "keyCompromise", int(time.time()))
                        with self.ledger.lock:
                            self.ledger.revoke_acked_at.setdefault(victim, time.monotonic())
            except Exception as exc:  # primary down: the CA's own writes fail; keep trying
                self.refused[type(exc).__name__] += 1
            self.stop.wait(0.1)

    def _watch_primary(self) -> None:
        """Record when each serial's response (and revocation) first exists on the primary."""
        while not self.stop.is_set():
            with self.ledger.lock:
                pending = [s for s in self.ledger.ingested if s not in self.ledger.good_at]
                revoked = [
                    s
                    for s in self.ledger.ingested
                    if s in self.ledger.good_at and s not in self.ledger.revoked_at
                ]
            for serial in pending + revoked[-20:]:
                try:
                    stored = self.primary.response(self.issuer_id, serial)
                except Exception:
                    break
                if stored is None:
                    continue
                now = time.monotonic()
                self.ledger.good_at.setdefault(serial, now)
                parsed = ocsp.load_der_ocsp_response(stored.der)
                if parsed.certificate_status is ocsp.OCSPCertStatus.REVOKED:
                    self.ledger.revoked_at.setdefault(serial, now)
            self.stop.wait(0.05)

    def _client(self, responder: str) -> None:
        url = self.responders[responder]
        while not self.stop.is_set():
            with self.ledger.lock:
                known = list(self.ledger.good_at)
            serial = (
                self._rng.choice(known)
                if known and self._rng.random() > 0.05
                else self.unknown_serial
            )
            at = time.monotonic()
            kind, source, no_store = ask(url, self.path(serial))
            self.answers.append(Answer(at, responder, serial, kind, source, no_store))
            self.stop.wait(0.01)

    # judging ------------------------------------------------------------------------------

    def late_non_authoritative(self, grace: float = 2.0, since: str = "signed") -> list[Answer]:
        """Non-authoritative answers for serials whose response existed on the primary (or that
        were ingested, since="ingested") more than `grace` seconds before the request: the
        founding incident's symptom. Must be none."""
        times = self.ledger.good_at if since == "signed" else self.ledger.ingested_at
        return [
            a
            for a in self.answers
            if a.kind in NON_AUTHORITATIVE and a.serial in times and times[a.serial] < a.at - grace
        ]

    def counts(self) -> tuple[Counter[str], Counter[str]]:
        return (
            Counter(a.kind for a in self.answers),
            Counter(a.source or "-" for a in self.answers),
        )
