"""The signer: claims due certificates (new, then revoked, then refresh), signs, stores.

A response is stored only if the certificate's version is the one that was claimed, so a "good"
signed before a revocation can never overwrite it (the store checks, in the same transaction).
Claims carry a lease: rows of a worker that died come back when it runs out.
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
from certstatus.ocsp.response import ResponseBuilder
from certstatus.ocsp.schedule import ScheduleError, Validity, plan
from certstatus.signer.worker import IssuerSpec, Job, init_worker, sign_jobs
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
        self.specs = [
            IssuerSpec(
                issuer_ids[m.name],
                m.certificate.public_bytes(Encoding.DER),
                m.responder_certificate.public_bytes(Encoding.DER),
                m.key_path,
            )
            for m in issuers
        ]
        self._not_after = {
            issuer_ids[m.name]: int(m.responder_certificate.not_valid_after_utc.timestamp())
            for m in issuers
        }
        self.processes = processes if processes is not None else config.process_count
        self._pool: ProcessPoolExecutor | None = None
        self._local_builders: dict[int, ResponseBuilder] | None = None
        self._random = random.Random()
        self.max_clock_skew = 2.0
        self.signatures = 0  # responses signed and stored (two per certificate), for metrics

    def __enter__(self) -> Signer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _submit(self, jobs: list[Job]) -> Future[list[tuple[bytes, bytes]]]:
        if self.processes <= 1:
            if self._local_builders is None:
                self._local_builders = {s.issuer_id: s.builder() for s in self.specs}
            future: Future[list[tuple[bytes, bytes]]] = Future()
            future.set_result(sign_jobs(jobs, self._local_builders))
            return future
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=init_worker,
                initargs=(self.specs,),
            )
        return self._pool.submit(sign_jobs, jobs)

    def _plan(self, due: list[DueCertificate], now: int) -> list[tuple[DueCertificate, Validity]]:
        planned = []
        for item in due:
            try:
                validity = plan(
                    self.config.policy, now, self._not_after[item.issuer_id], self._random.random()
                )
            except ScheduleError as exc:
                log.error("not signing issuer %s serial %x: %s", item.issuer_id, item.serial, exc)
                continue
            planned.append((item, validity))
        return planned

    def _store(
        self, planned: list[tuple[DueCertificate, Validity]], signed: list[tuple[bytes, bytes]]
    ) -> int:
        responses = [
            SignedResponse(
                item.issuer_id,
                item.serial,
                item.version,
                sha1,
                sha256,
                v.this_update,
                v.next_update,
                v.refresh_at,
            )
            for (item, v), (sha1, sha256) in zip(planned, signed, strict=True)
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
        in_flight: dict[Future[list[tuple[bytes, bytes]]], list] = {}
        stored = 0
        exhausted = False
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
                    )
                    for d, v in planned
                ]
                in_flight[self._submit(jobs)] = planned
            if not in_flight:
                return stored
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                planned = in_flight.pop(future)
                count = self._store(planned, future.result())
                stored += count
                self.signatures += 2 * count
                if progress is not None:
                    progress(len(planned))

    def run(self, stop: threading.Event, idle: float = 0.2) -> None:
        """Keep signing until stop is set; a new or revoked serial is picked up within `idle` s."""
        while not stop.is_set():
            try:
                self.sign_due(stop=stop)
            except Exception:
                log.exception("signing pass failed; retrying")
                stop.wait(5)
            stop.wait(idle)
