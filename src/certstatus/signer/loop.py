"""The signer: claims due certificates (new, then revoked, then refresh), signs, stores.

A response is stored only if the certificate's version is the one that was claimed, so a "good"
signed before a revocation can never overwrite it (the store checks, in the same transaction).
Claims carry a lease: rows of a worker that died come back when it runs out.

A key that cannot sign (a token removed, its module failing, its PIN locked) stops the signer,
not the process: the rows it had claimed are released unsigned, the outage is logged once and
shown by `key_up` (certstatus_signing_key_up), and the signer probes the key with backoff
(1 s doubling to 60 s) before it claims anything again. Nothing is stored for a row whose
signature did not come back from the key.
"""

from __future__ import annotations

import logging
import multiprocessing
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

from cryptography.hazmat.primitives.serialization import Encoding

from certstatus.config import IssuerMaterial, SigningConfig
from certstatus.keys.base import KeyUnavailableError
from certstatus.ocsp.schedule import ScheduleError, Validity, Window
from certstatus.signer.worker import (
    Builders,
    IssuerSpec,
    Job,
    Signed,
    init_worker,
    probe,
    sign_jobs,
)
from certstatus.store.base import DueCertificate, SignedResponse, SigningQueue

log = logging.getLogger("certstatus.signer")

Clock = Callable[[], float]
Progress = Callable[[int], None]


class Signer:
    def __init__(
        self,
        store: SigningQueue,
        issuers: Sequence[IssuerMaterial],
        issuer_ids: dict[str, int],
        config: SigningConfig,
        clock: Clock = time.time,
        processes: int | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.issuer_ids = issuer_ids
        self._use(issuers)
        # called between passes by run(): new material after a responder-certificate rotation
        self.watch: Callable[[], Sequence[IssuerMaterial] | None] | None = None
        self.processes = processes if processes is not None else config.process_count
        self._pool: ProcessPoolExecutor | None = None
        self._local_builders: Builders | None = None
        self._random = random.Random()
        self.max_clock_skew = 2.0
        self.signatures = 0  # responses signed (one or two per certificate), for metrics
        self.key_problem: str | None = None  # why no key can sign now; None while signing
        self.key_failures = 0  # outages seen (certstatus_signing_key_failures_total)
        self.max_backoff = 60.0

    def _use(self, issuers: Sequence[IssuerMaterial]) -> None:
        self.specs = [
            IssuerSpec(
                self.issuer_ids[m.name],
                m.certificate.public_bytes(Encoding.DER),
                m.responder_certificate.public_bytes(Encoding.DER),
                m.key_ref,
            )
            for m in issuers
        ]
        self._not_after = {
            self.issuer_ids[m.name]: int(m.responder_certificate.not_valid_after_utc.timestamp())
            for m in issuers
        }

    def replace_issuers(self, issuers: Sequence[IssuerMaterial]) -> None:
        """Sign with new responder certificates and keys from the next batch on (a rotation).
        Called between passes: nothing is in flight, so no batch mixes old and new. The pool
        is restarted, so every signing process opens the new key for itself."""
        self.close()
        self._local_builders = None
        self._use(issuers)
        serials = ", ".join(f"{m.name}: {m.responder_certificate.serial_number:x}" for m in issuers)
        log.warning("responder certificates reloaded; signing with %s", serials)

    @property
    def key_up(self) -> bool:
        return self.key_problem is None

    def __enter__(self) -> Signer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _submit(self, jobs: list[Job]) -> Future[list[Signed]]:
        if self.processes <= 1:
            if self._local_builders is None:
                self._local_builders = Builders(self.specs)
            future: Future[list[Signed]] = Future()
            try:
                future.set_result(sign_jobs(jobs, self._local_builders))
            except KeyUnavailableError as exc:
                future.set_exception(exc)
            return future
        return self._executor().submit(sign_jobs, jobs)

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=init_worker,
                initargs=(self.specs,),
            )
        return self._pool

    def probe(self) -> None:
        """KeyUnavailableError unless every key signs, in every signing process's view (one
        probe per process of the pool is not guaranteed; each process re-checks its key on
        its next batch anyway, and a failure there releases the batch)."""
        if self.processes <= 1:
            if self._local_builders is None:
                self._local_builders = Builders(self.specs)
            probe(self._local_builders)
            return
        self._executor().submit(probe).result()

    def _plan(self, due: list[DueCertificate], now: int) -> list[tuple[DueCertificate, Validity]]:
        """Each row's validity: computed once per issuer and batch, with one jitter drawn per
        batch, not per row. Rows signed together are then due again together, so their
        entries in the due index sit side by side. With a jitter per row, each row's next
        due time landed on a page of the index of its own, and at 10^6 certificates the
        signer's process spent 76-77 µs per certificate against 49-56 µs now
        (docs/benchmarks.md).
        Refreshes still spread over the jitter, a batch at a time."""
        spread = self._random.random()
        validities: dict[int, Validity | ScheduleError] = {}
        planned = []
        for item in due:
            validity = validities.get(item.issuer_id)
            if validity is None:
                try:
                    window = Window.at(self.config.policy, now, self._not_after[item.issuer_id])
                    validity = window.validity(spread)
                except ScheduleError as exc:
                    validity = exc
                validities[item.issuer_id] = validity
            if isinstance(validity, ScheduleError):
                log.error(
                    "not signing issuer %s serial %x: %s", item.issuer_id, item.serial, validity
                )
                continue
            planned.append((item, validity))
        return planned

    def _store(self, planned: list[tuple[DueCertificate, Validity]], signed: list[Signed]) -> int:
        responses = [
            SignedResponse(
                item.issuer_id,
                item.serial,
                item.version,
                sha1,
                sha256,
                this_update,
                next_update,
                refresh_at,
                certs,
            )
            for (item, (this_update, next_update, refresh_at)), (sha1, sha256, certs) in zip(
                planned, signed, strict=True
            )
        ]
        return self.store.store_signed(responses, int(self.clock()))

    def clock_problem(self) -> str | None:
        """F10: a signer whose clock disagrees with the database's must not sign, or its
        thisUpdate lands in the future (or far past) for every client."""
        server = self.store.server_time()
        if server is None:
            return None
        skew = self.clock() - server
        if abs(skew) > self.max_clock_skew:
            return (
                f"local clock is {skew:+.1f}s off the database server's; not signing until "
                f"they agree within {self.max_clock_skew}s (F10)"
            )
        return None

    def sign_due(
        self, progress: Progress | None = None, stop: threading.Event | None = None
    ) -> int:
        """Sign everything due now, pipelining claims, signing and stores; returns responses stored."""
        problem = self.clock_problem()
        if problem is not None:
            log.error(problem)
            return 0
        batch = self.config.batch_size
        # SHA-1 only (store/sha256requests.py), but for a certificate asked for with SHA-256
        # or revoked: a revocation is few rows, and a soft-failing client must not get
        # tryLater for the answer that matters most
        every = not self.store.response_format().sha256_on_request
        in_flight: dict[Future[list[Signed]], list] = {}
        stored = 0
        exhausted = False
        failed: KeyUnavailableError | None = None
        while True:
            while not exhausted and len(in_flight) < max(2, self.processes * 2):
                if stop is not None and stop.is_set():
                    exhausted = True
                    break
                now = int(self.clock())
                due = self.store.claim_due(now, batch, self.config.lease)
                if not due:
                    exhausted = True
                    break
                planned = self._plan(due, now)
                jobs: list[Job] = [
                    (
                        d.issuer_id,
                        d.serial,
                        d.revoked,
                        d.revoked_at,
                        d.reason,
                        v.this_update,
                        v.next_update,
                        now,
                        every or d.sha256_wanted or d.revoked,
                    )
                    for d, v in planned
                ]
                in_flight[self._submit(jobs)] = planned
            if not in_flight:
                if failed is not None:
                    raise failed
                return stored
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                planned = in_flight.pop(future)
                try:
                    signed = future.result()
                except KeyUnavailableError as exc:
                    # nothing of this batch is stored; its rows are due again at once, and
                    # no more are claimed: the batches in flight drain, then this is raised
                    self.store.release_claims([item for item, _ in planned], int(self.clock()))
                    failed = exc
                    exhausted = True
                    continue
                count = self._store(planned, signed)
                stored += count
                self.signatures += sum(2 if sha256 else 1 for _, sha256, _ in signed)
                if progress is not None:
                    progress(len(planned))

    def run(self, stop: threading.Event, idle: float = 0.2) -> None:
        """Keep signing until stop is set; a new or revoked serial is picked up within `idle` s.
        While a key cannot sign, probe it with backoff and claim nothing."""
        backoff = 0.0
        while not stop.is_set():
            try:
                if self.watch is not None and (replacement := self.watch()):
                    self.replace_issuers(replacement)
                    self.key_problem = None
                if self.key_problem is not None:
                    self.probe()
                    self._key_back()
                    backoff = 0.0
                self.sign_due(stop=stop)
            except KeyUnavailableError as exc:
                self._key_down(str(exc))
                backoff = min(max(1.0, backoff * 2), self.max_backoff)
                stop.wait(backoff)
                continue
            except Exception:
                log.exception("signing pass failed; retrying")
                stop.wait(5)
            stop.wait(idle)

    def _key_down(self, problem: str) -> None:
        if self.key_problem is None:
            self.key_failures += 1
            log.error("signing stopped: %s; retrying with backoff", problem)
        self.key_problem = problem

    def _key_back(self) -> None:
        log.warning("signing resumed: every key signs again (was: %s)", self.key_problem)
        self.key_problem = None
