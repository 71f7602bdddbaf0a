"""The 15-minute watchdog: every newly ingested serial is asked of every target, at
checkpoints after its ingestion, until each answers it authoritatively and correctly; serials
still waiting past the warning and critical ages are findings. A random sample of older
serials is asked continuously too, which catches stale or missing answers for old
certificates and a target that drifted.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cryptography import x509

from certstatus.monitor import metrics as m
from certstatus.monitor.answers import Verdict, check_answer
from certstatus.monitor.findings import CRITICAL, WARNING, Findings
from certstatus.monitor.targets import Target, ocsp_get, ocsp_post
from certstatus.ocsp.certid import HashAlgorithm, IssuerKey, issuer_keys
from certstatus.ocsp.request import encode_request
from certstatus.store.base import CertificateRow, MonitorReads, StoreError

log = logging.getLogger("certstatus.monitor")


FORMAT_TTL = 30.0  # seconds the watchdog trusts the response format it last read


@dataclass(frozen=True)
class WatchPolicy:
    warn_after: float = 600.0
    critical_after: float = 900.0
    checkpoints: tuple[float, ...] = (1, 3, 10, 30, 60, 120, 300, 600, 900)
    give_up_after: float = 3600.0  # stop tracking (the finding stays until the serial is fixed)
    post_fraction: float = 0.1
    sample_size: int = 10

    def next_check(self, age: float) -> float:
        """Seconds after ingestion of the first checkpoint later than age; after the last one,
        checks repeat at the last interval."""
        for checkpoint in self.checkpoints:
            if checkpoint > age:
                return checkpoint
        last = self.checkpoints[-1]
        step = last - (self.checkpoints[-2] if len(self.checkpoints) > 1 else 0) or last
        return age + step


@dataclass
class Tracked:
    issuer_id: int
    serial: int
    ingested_at: int
    pending: set[str]
    due: float
    last: dict[str, str] = field(default_factory=dict)  # target -> last answer kind


class Watchdog:
    def __init__(
        self,
        store: MonitorReads,
        issuers: Mapping[int, x509.Certificate],
        targets: Sequence[Target],
        findings: Findings,
        policy: WatchPolicy,
        clock: Callable[[], float] = time.time,
        workers: int = 8,
        find_issuers: Callable[[], object] | None = None,
    ) -> None:
        """issuers may grow while the watchdog runs (monitor/issuers.py): it is read, never
        copied. find_issuers is called when a new serial names an issuer not in it yet."""
        self.store = store
        self.issuers = issuers
        self.find_issuers = find_issuers
        self.keys: dict[int, dict[HashAlgorithm, IssuerKey]] = {}
        self.targets = list(targets)
        self.findings = findings
        self.policy = policy
        self.clock = clock
        self.tracked: dict[tuple[int, int], Tracked] = {}
        self.finished: dict[tuple[int, int], int] = {}  # done, still within the cursor's second
        self.started = clock()
        self.cursor = int(self.started - policy.critical_after)  # catch up after a restart
        self.recent: deque[tuple[str, float]] = deque(maxlen=500)  # (target, seconds)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="watchdog")
        self._random = random.Random()
        self.problems: dict[str, list[str]] = {}
        self._sha256 = True
        self._format_read_at = -FORMAT_TTL

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # new serials ---------------------------------------------------------------------------

    def poll_new(self, page: int = 2000) -> int:
        """Start tracking serials ingested since the last poll. Each poll reads again from
        two seconds before the newest ingestion seen: a transaction stamped with an earlier
        second may commit after one stamped later (what was seen already is skipped)."""
        added = 0
        after: tuple[int, int, str] = (self.cursor - 2, -1, "")
        rows = []
        while True:
            batch = self.store.new_certificates(after, page)
            rows.extend(batch)
            if len(batch) < page:
                break
            last = batch[-1]
            after = (last.ingested_at, last.row.issuer_id, format(last.row.serial, "x"))
        if self.find_issuers is not None and any(n.row.issuer_id not in self.issuers for n in rows):
            self.find_issuers()  # registered after the last look: watch its serials too
        for new in rows:
            key = (new.row.issuer_id, new.row.serial)
            if key in self.tracked or key in self.finished or new.row.issuer_id not in self.issuers:
                continue
            if self.clock() - new.ingested_at > self.policy.give_up_after:
                continue
            self.tracked[key] = Tracked(
                new.row.issuer_id,
                new.row.serial,
                new.ingested_at,
                {t.name for t in self.targets},
                new.ingested_at + self.policy.checkpoints[0],
            )
            added += 1
        if rows:
            self.cursor = max(self.cursor, rows[-1].ingested_at)
            self.finished = {k: t for k, t in self.finished.items() if t >= self.cursor - 2}
        return added

    def check_due(self) -> None:
        now = self.clock()
        due = [t for t in self.tracked.values() if t.due <= now]
        jobs = [
            (tracked, target) for tracked in due for target in self.targets
            if target.name in tracked.pending
        ]  # fmt: skip
        verdicts = list(self._pool.map(lambda job: self._ask(job[0], job[1]), jobs))
        for (tracked, target), verdict in zip(jobs, verdicts, strict=True):
            tracked.last[target.name] = verdict.kind
            if verdict.correct:
                elapsed = max(0.0, self.clock() - tracked.ingested_at)
                tracked.pending.discard(target.name)
                if tracked.ingested_at >= int(self.started):  # else it times our own start
                    m.TIME_TO_AUTHORITATIVE.labels(target.name).observe(elapsed)
                    self.recent.append((target.name, elapsed))
            elif verdict.authoritative:
                self._wrong(target, tracked.serial, verdict)
        for tracked in due:
            age = now - tracked.ingested_at
            if not tracked.pending or age > self.policy.give_up_after:
                key = (tracked.issuer_id, tracked.serial)
                del self.tracked[key]
                self.finished[key] = tracked.ingested_at
            else:
                tracked.due = tracked.ingested_at + self.policy.next_check(age)

    def _ask(self, tracked: Tracked, target: Target) -> Verdict:
        row = self.store.certificate(tracked.issuer_id, tracked.serial)
        return self.ask(target, tracked.issuer_id, tracked.serial, row)

    def ask(
        self, target: Target, issuer_id: int, serial: int, row: CertificateRow | None
    ) -> Verdict:
        """GET always, POST for a sample; the answer checked against the primary's record."""
        sha256 = self._checks_sha256() and self._random.random() < 0.5
        algorithm = HashAlgorithm.SHA256 if sha256 else HashAlgorithm.SHA1
        keys = self.keys.get(issuer_id)
        if keys is None:
            keys = self.keys[issuer_id] = issuer_keys(self.issuers[issuer_id])
        der = encode_request(keys[algorithm], serial)
        method = "POST" if self._random.random() < self.policy.post_fraction else "GET"
        fetched = (ocsp_post if method == "POST" else ocsp_get)(target, der)
        expected = _expected(row, self.clock())
        verdict = (
            check_answer(
                fetched.status,
                fetched.headers,
                fetched.body,
                self.issuers[issuer_id],
                serial,
                algorithm,
                expected,
                self.clock(),
            )
            if fetched.status
            else Verdict("unreachable")
        )
        m.CHECKS.labels(target.name, method, verdict.kind).inc()
        return verdict

    def _checks_sha256(self) -> bool:
        """Half the checks ask with SHA-256 CertIDs, unless those responses are signed only
        on request (store/sha256requests.py): a check would then ask the signers for every
        new certificate's. Read from the database, again after FORMAT_TTL seconds."""
        now = self.clock()
        if now >= self._format_read_at + FORMAT_TTL:
            try:
                self._sha256 = not self.store.response_format().sha256_on_request
                self._format_read_at = now
            except StoreError:
                pass  # the last one read; the primary's outage is reported on its own
        return self._sha256

    def _wrong(self, target: Target, serial: int, verdict: Verdict) -> None:
        m.WRONG_ANSWERS.labels(target.name).inc()
        self.problems.setdefault(target.name, []).append(
            f"serial {serial:x}: {'; '.join(verdict.problems)}"
        )
        log.error("target %s: serial %x: %s", target.name, serial, "; ".join(verdict.problems))

    def evaluate(self) -> None:
        """Findings from what is tracked: serials waiting too long, and wrong answers."""
        now = self.clock()
        raised: list[tuple[str, str, str, str]] = []
        for target in self.targets:
            ages = [now - t.ingested_at for t in self.tracked.values() if target.name in t.pending]
            critical = sum(age >= self.policy.critical_after for age in ages)
            warning = sum(age >= self.policy.warn_after for age in ages)
            m.NOT_AUTHORITATIVE.labels(target.name, "critical").set(critical)
            m.NOT_AUTHORITATIVE.labels(target.name, "warning").set(warning)
            if warning:
                oldest = max(ages)
                raised.append(
                    (
                        "NotAuthoritative",
                        target.name,
                        CRITICAL if critical else WARNING,
                        f"{warning} new serial(s) not answered authoritatively by {target.name}; "
                        f"oldest ingested {oldest:.0f}s ago"
                        + (" (Baseline Requirements breach: over 15 min)" if critical else ""),
                    )
                )
            wrong = self.problems.pop(target.name, [])
            if wrong:
                raised.append(
                    ("WrongAnswer", target.name, CRITICAL, f"{len(wrong)} wrong: {wrong[0]}")
                )
        self.findings.observe({"NotAuthoritative", "WrongAnswer"}, raised)

    # older serials -------------------------------------------------------------------------

    def sample_known(self) -> None:
        """Ask every target about a few random signed, unexpired serials."""
        now = self.clock()
        start = format(self._random.getrandbits(64), "x")[: self._random.randint(1, 16)]
        size = self.policy.sample_size
        rows = self.store.sample_certificates(start, int(now), size)
        if len(rows) < size:  # wrap around to the start of the key order
            seen = {(r.issuer_id, r.serial) for r in rows}
            rows += [
                r
                for r in self.store.sample_certificates("", int(now), size - len(rows))
                if (r.issuer_id, r.serial) not in seen
            ]
        rows = [r for r in rows if r.issuer_id in self.issuers and not _being_signed(r, now)]
        jobs = [(row, target) for row in rows for target in self.targets]
        verdicts = list(
            self._pool.map(
                lambda job: self.ask(job[1], job[0].issuer_id, job[0].serial, job[0]), jobs
            )
        )
        raised = []
        for (row, target), verdict in zip(jobs, verdicts, strict=True):
            if not verdict.authoritative:
                m.KNOWN_NOT_AUTHORITATIVE.labels(target.name, verdict.kind).inc()
                raised.append(
                    (
                        "KnownSerialNotAuthoritative",
                        target.name,
                        CRITICAL,
                        f"serial {row.serial:x} (signed, unexpired) answered {verdict.kind}",
                    )
                )
            elif verdict.problems:
                self._wrong(target, row.serial, verdict)
        self.findings.observe({"KnownSerialNotAuthoritative"}, raised)

    def time_to_authoritative(self) -> dict[str, list[float]]:
        found: dict[str, list[float]] = {}
        for target, seconds in self.recent:
            found.setdefault(target, []).append(seconds)
        return found


def _being_signed(row: CertificateRow, now: float) -> bool:
    """A row due for signing may be answered from its previous response (or not at all)."""
    return row.due_at is not None and row.due_at <= now


def _expected(row: CertificateRow | None, now: float) -> str | None:
    if row is None or _being_signed(row, now):
        return None
    return "revoked" if row.revoked else "good"
