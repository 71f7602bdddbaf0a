"""The primary's heartbeat: a row rewritten several times a second, so every replica's staleness
can be read as the age of the heartbeat it has replayed (neither
pg_last_xact_replay_timestamp() nor receive/replay LSN stay right when the primary is idle,
replay is paused, the receiver hangs or WAL was removed)."""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from certstatus.store.base import StoreError

log = logging.getLogger("certstatus.heartbeat")


class Beating(Protocol):
    def beat(self) -> None: ...


class HeartbeatWriter:
    """Runs in the signer role, which runs anyway next to the primary. If it stops, every
    replica's heartbeat ages and reads stale: the failure is loud, never falsely fresh."""

    def __init__(self, store: Beating, interval: float = 0.25) -> None:
        self.store = store
        self.interval = interval
        self.failures = 0

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.store.beat()
                self.failures = 0
            except StoreError as exc:
                self.failures += 1
                if self.failures in (1, 40) or self.failures % 400 == 0:
                    log.error("heartbeat not written (%d in a row): %s", self.failures, exc)
            stop.wait(self.interval)
