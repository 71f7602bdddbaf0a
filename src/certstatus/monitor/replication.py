"""Replication health as the monitor sees it: each replica's staleness from the heartbeat it
has replayed, and each slot's state on the primary (F1: the founding incident's replicas
fell behind what the primary retained and stayed frozen for days, unnoticed)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from certstatus.config import ReplicaConfig
from certstatus.monitor import metrics as m
from certstatus.monitor.findings import CRITICAL, WARNING, Findings
from certstatus.store.base import ReplicationReads, StoreError
from certstatus.store.postgres import PostgresStore

WAL_STATUSES = ("reserved", "extended", "unreserved", "lost")
SLOT_KINDS = {"SlotAtRisk", "SlotLost"}
HEARTBEAT_DEAD = 5.0  # the writer beats every 250 ms; 20 missed beats is no longer jitter


@dataclass
class ReplicaState:
    name: str
    site: str | None
    staleness: float | None = None
    heartbeat: str = "unknown"  # "ok", "none" (reachable, no heartbeat replayed yet), "unreachable"
    slot: dict[str, Any] = field(default_factory=dict)
    healthy_once: bool = False  # seen fresh with a slot: the start-up grace no longer applies
    starting: bool = False  # never healthy yet, within the start-up grace

    def broken(self, max_staleness: float) -> bool:
        return (
            self.staleness is None
            or self.staleness > max_staleness
            or self.slot.get("wal_status") == "lost"
        )


class StartupGrace:
    """Services start in any order: a monitor that pages "critical" because the primary is not
    up yet, or no heartbeat was written yet, teaches on-call to ignore it. What has never been
    seen is only "starting" for `seconds`: counted from the monitor's start for the primary
    itself, and from the primary's first answer for what needs it (the heartbeat, slots,
    replicas). What was seen once and then fails gets no grace."""

    def __init__(self, seconds: float, now: float) -> None:
        self.seconds = seconds
        self.started = now
        self.primary_seen: float | None = None

    def primary_answered(self, now: float) -> None:
        if self.primary_seen is None:
            self.primary_seen = now

    def for_primary(self, now: float) -> bool:
        """True while an unreachable primary may still be starting."""
        return self.primary_seen is None and now - self.started < self.seconds

    def for_dependents(self, now: float) -> bool:
        """True while the heartbeat, slots and replicas may still be starting."""
        since = self.started if self.primary_seen is None else self.primary_seen
        return now - since < self.seconds


def plain(value: Any) -> Any:
    """PostgreSQL numerics (pg_wal_lsn_diff, safe_wal_size) arrive as Decimal; the status JSON
    and the metrics want plain numbers."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


class ReplicationProbe:
    def __init__(
        self,
        primary: ReplicationReads,
        replicas: Sequence[ReplicaConfig],
        findings: Findings,
        max_staleness: float,
        low_fraction: float = 0.25,
        grace: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.primary = primary
        self.clock = clock
        self.grace = StartupGrace(grace, clock())
        self.stores = {
            r.name: PostgresStore(
                r.url, read_only=True, timeout=1.0, max_connections=1, name=r.name
            )
            for r in replicas
        }
        self.states = {r.name: ReplicaState(r.name, r.site) for r in replicas}
        self.findings = findings
        self.max_staleness = max_staleness
        self.low_fraction = low_fraction
        self.keep_bytes: int | None = None
        self.heartbeat_age: float | None = None
        self.primary_state = "unknown"  # "ok", "no heartbeat", "unreachable"

    def close(self) -> None:
        for store in self.stores.values():
            store.close()

    def probe(self) -> None:
        raised: list[tuple[str, str, str, str]] = []
        now = self.clock()
        try:
            self.heartbeat_age = self.primary.heartbeat_age()
            slots = {
                s["slot"]: {k: plain(v) for k, v in s.items()} for s in self.primary.replication()
            }
            self.keep_bytes = self.primary.wal_keep_bytes()
            self.primary_state = "ok" if self.heartbeat_age is not None else "no heartbeat"
            self.grace.primary_answered(now)
        except StoreError as exc:
            self.heartbeat_age = None
            self.primary_state = "unreachable"
            slots = {}
            if not self.grace.for_primary(self.clock()):  # after the wait, not before it
                raised.append(("PrimaryUnreachable", "primary", CRITICAL, str(exc)))
        starting = self.grace.for_dependents(now)
        m.HEARTBEAT_AGE.set(math.inf if self.heartbeat_age is None else self.heartbeat_age)
        if self.heartbeat_age is not None and self.heartbeat_age > HEARTBEAT_DEAD:
            raised.append(
                (
                    "HeartbeatStopped",
                    "primary",
                    CRITICAL,
                    f"the primary's heartbeat is {self.heartbeat_age:.0f}s old: no signer or "
                    "heartbeat writer runs, and every replica will read stale",
                )
            )
        elif self.primary_state == "no heartbeat" and not starting:
            raised.append(
                (
                    "HeartbeatStopped",
                    "primary",
                    CRITICAL,
                    "no heartbeat was ever written on the primary: no signer or heartbeat "
                    f"writer has run in the {self.grace.seconds:.0f}s start-up grace, and every "
                    "replica reads stale",
                )
            )
        for name, state in self.states.items():
            try:
                state.staleness = self.stores[name].heartbeat_age()
                state.heartbeat = "ok" if state.staleness is not None else "none"
            except StoreError:
                state.staleness = None
                state.heartbeat = "unreachable"
            state.slot = slots.get(name, {})
            if state.slot and not state.broken(self.max_staleness):
                state.healthy_once = True
            state.starting = starting and not state.healthy_once
            if state.starting:
                continue  # still coming up: reported as such, not paged
            raised.extend(
                self._replica_findings(state, slots_known=self.primary_state != "unreachable")
            )
            m.REPLICA_STALENESS.labels(name, state.site or "").set(
                math.inf if state.staleness is None else state.staleness
            )
        for slot, info in slots.items():
            m.SLOT_ACTIVE.labels(slot).set(1 if info["active"] else 0)
            if info["safe_wal_size"] is not None:
                m.SLOT_SAFE_WAL.labels(slot).set(info["safe_wal_size"])
                if self.keep_bytes:
                    m.SLOT_SAFE_FRACTION.labels(slot).set(info["safe_wal_size"] / self.keep_bytes)
            if info["bytes_behind"] is not None:
                m.REPLICA_BYTES_BEHIND.labels(slot).set(info["bytes_behind"])
            for status in WAL_STATUSES:
                m.SLOT_STATUS.labels(slot, status).set(1 if info["wal_status"] == status else 0)
        kinds = {"PrimaryUnreachable", "HeartbeatStopped", "ReplicaStale", "SlotAtRisk", "SlotLost"}
        if self.primary_state == "unreachable":
            kinds -= SLOT_KINDS  # unknown now: what was found about slots stands until known
        self.findings.observe(kinds, raised)

    def _replica_findings(
        self, state: ReplicaState, slots_known: bool
    ) -> list[tuple[str, str, str, str]]:
        """slots_known: False while the primary does not answer: a slot's state is then
        unknown, and "no slot" would be a false claim."""
        found = []
        if state.heartbeat == "none":
            found.append(
                (
                    "ReplicaStale",
                    state.name,
                    CRITICAL,
                    f"{state.name} has replayed no heartbeat: it never received one from the "
                    "primary, or no heartbeat writer runs",
                )
            )
        elif state.staleness is None:
            found.append(("ReplicaStale", state.name, CRITICAL, f"{state.name} does not answer"))
        elif state.staleness > self.max_staleness:
            found.append(
                (
                    "ReplicaStale",
                    state.name,
                    CRITICAL,
                    f"{state.name} is {state.staleness:.1f}s stale (bound {self.max_staleness:.0f}s)",
                )
            )
        status = state.slot.get("wal_status")
        safe = state.slot.get("safe_wal_size")
        if not slots_known:
            return found
        if not state.slot:
            found.append(
                ("SlotLost", state.name, CRITICAL, f"no replication slot for {state.name}")
            )
        elif status == "lost":
            found.append(
                (
                    "SlotLost",
                    state.name,
                    CRITICAL,
                    f"{state.name}'s slot lost its WAL: the replica can never catch up by "
                    "itself; rebuild it (certstatus cluster rebuild, or a new base backup)",
                )
            )
        elif status in ("extended", "unreserved") or (
            safe is not None and self.keep_bytes and safe < self.keep_bytes * self.low_fraction
        ):
            found.append(
                (
                    "SlotAtRisk",
                    state.name,
                    WARNING,
                    f"{state.name}'s slot wal_status={status}, safe_wal_size={safe}",
                )
            )
        return found

    def snapshot(self) -> list[dict[str, Any]]:
        return [
            {
                "name": s.name,
                "site": s.site,
                "staleness_s": s.staleness,
                "heartbeat": s.heartbeat,
                "starting": s.starting,
                "wal_status": s.slot.get("wal_status"),
                "safe_wal_size": s.slot.get("safe_wal_size"),
                "bytes_behind": s.slot.get("bytes_behind"),
                "broken": s.broken(self.max_staleness),
            }
            for s in self.states.values()
        ]
