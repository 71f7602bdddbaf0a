"""Replication health as the monitor sees it: each replica's staleness from the heartbeat it
has replayed, and each slot's state on the primary (F1: the founding incident's replicas
fell behind what the primary retained and stayed frozen for days, unnoticed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from certstatus.config import ReplicaConfig
from certstatus.monitor import metrics as m
from certstatus.monitor.findings import CRITICAL, WARNING, Findings
from certstatus.store.base import StoreError
from certstatus.store.postgres import PostgresStore

WAL_STATUSES = ("reserved", "extended", "unreserved", "lost")
HEARTBEAT_DEAD = 5.0  # the writer beats every 250 ms; 20 missed beats is no longer jitter


@dataclass
class ReplicaState:
    name: str
    site: str | None
    staleness: float | None = None
    slot: dict[str, Any] = field(default_factory=dict)

    def broken(self, max_staleness: float) -> bool:
        return (
            self.staleness is None
            or self.staleness > max_staleness
            or self.slot.get("wal_status") == "lost"
        )


class ReplicationProbe:
    def __init__(
        self,
        primary: PostgresStore,
        replicas: Sequence[ReplicaConfig],
        findings: Findings,
        max_staleness: float,
        low_fraction: float = 0.25,
    ) -> None:
        self.primary = primary
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

    def close(self) -> None:
        for store in self.stores.values():
            store.close()

    def probe(self) -> None:
        raised: list[tuple[str, str, str, str]] = []
        try:
            self.heartbeat_age = self.primary.heartbeat_age()
            slots = {s["slot"]: s for s in self.primary.replication()}
            self.keep_bytes = self.primary.wal_keep_bytes()
        except StoreError as exc:
            self.heartbeat_age = None
            slots = {}
            raised.append(("PrimaryUnreachable", "primary", CRITICAL, str(exc)))
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
        for name, state in self.states.items():
            try:
                state.staleness = self.stores[name].heartbeat_age()
            except StoreError:
                state.staleness = None
            state.slot = slots.get(name, {})
            raised.extend(self._replica_findings(state))
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
        self.findings.observe(kinds, raised)

    def _replica_findings(self, state: ReplicaState) -> list[tuple[str, str, str, str]]:
        found = []
        if state.staleness is None:
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
                "wal_status": s.slot.get("wal_status"),
                "safe_wal_size": s.slot.get("safe_wal_size"),
                "bytes_behind": s.slot.get("bytes_behind"),
                "broken": s.broken(self.max_staleness),
            }
            for s in self.states.values()
        ]
