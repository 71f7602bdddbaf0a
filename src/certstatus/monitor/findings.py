"""Findings: what the monitor raises, keeps while the condition holds, and clears after.

A finding is keyed by (kind, subject) so a condition that persists is one finding with a start
time, not a stream; the Alertmanager webhook and the status page read the same book.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("certstatus.monitor")

WARNING = "warning"
CRITICAL = "critical"


@dataclass
class Finding:
    kind: str  # e.g. NotAuthoritative, ReplicaStale, SlotLost, WrongAnswer, CrlStale
    subject: str  # the target, replica, slot or CRL it is about
    severity: str
    summary: str
    since: float
    cleared: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.subject)

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "subject": self.subject,
            "severity": self.severity,
            "summary": self.summary,
            "since": self.since,
            "cleared": self.cleared,
        }


@dataclass
class Findings:
    """The active findings and the recently cleared ones. Each check reports everything it sees
    in one call to `observe`; what that check raised before and does not report now clears."""

    clock: Callable[[], float] = time.time
    active: dict[tuple[str, str], Finding] = field(default_factory=dict)
    history: deque[Finding] = field(default_factory=lambda: deque(maxlen=200))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, kinds: set[str], raised: list[tuple[str, str, str, str]]) -> None:
        """raised: (kind, subject, severity, summary) currently true among kinds."""
        now = self.clock()
        with self._lock:
            seen = set()
            for kind, subject, severity, summary in raised:
                seen.add((kind, subject))
                current = self.active.get((kind, subject))
                if current is None:
                    finding = Finding(kind, subject, severity, summary, now)
                    self.active[finding.key] = finding
                    log.warning("finding raised: %s %s: %s", severity, subject, summary)
                else:
                    current.severity, current.summary = severity, summary
            for key in [k for k in self.active if k[0] in kinds and k not in seen]:
                finding = self.active.pop(key)
                finding.cleared = now
                self.history.appendleft(finding)
                log.info("finding cleared: %s %s", finding.kind, finding.subject)

    def snapshot(self) -> tuple[list[Finding], list[Finding]]:
        with self._lock:
            return list(self.active.values()), list(self.history)


class AlertmanagerWebhook:
    """Posts active findings (and, once, each cleared one) to an Alertmanager-compatible
    /api/v2/alerts endpoint: a deployment without Prometheus still gets alerted."""

    def __init__(self, url: str, generator_url: str = "", resend: float = 60.0) -> None:
        self.url = url
        self.generator_url = generator_url
        self.resend = resend
        self._sent_at = 0.0
        self._sent_active: set[tuple[str, str]] = set()
        self._resolved_sent: set[tuple[str, str, float]] = set()

    def push(self, findings: Findings, now: float) -> None:
        active, history = findings.snapshot()
        keys = {f.key for f in active}
        resolved = [
            f
            for f in history
            if f.cleared is not None and (f.kind, f.subject, f.since) not in self._resolved_sent
        ]
        if keys == self._sent_active and not resolved and now - self._sent_at < self.resend:
            return
        alerts = [self._alert(f) for f in active] + [self._alert(f) for f in resolved]
        if not alerts:
            self._sent_active = keys
            return
        request = urllib.request.Request(
            self.url,
            data=json.dumps(alerts).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                answer.read()
        except OSError as exc:
            log.error("alert webhook %s failed: %s", self.url, exc)
            return
        self._sent_at = now
        self._sent_active = keys
        self._resolved_sent.update((f.kind, f.subject, f.since) for f in resolved)

    def _alert(self, finding: Finding) -> dict[str, object]:
        alert: dict[str, object] = {
            "labels": {
                "alertname": f"Certstatus{finding.kind}",
                "severity": finding.severity,
                "subject": finding.subject,
                "source": "certstatus-monitor",
            },
            "annotations": {"summary": finding.summary},
            "startsAt": _iso(finding.since),
            "generatorURL": self.generator_url,
        }
        if finding.cleared is not None:
            alert["endsAt"] = _iso(finding.cleared)
        return alert


def _iso(unix: float) -> str:
    return dt.datetime.fromtimestamp(unix, dt.UTC).isoformat().replace("+00:00", "Z")
