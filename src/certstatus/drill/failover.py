"""`certstatus drill failover`: the leader lost under load, on a cluster under Patroni.

A fresh `--ha` cluster (a leader and two standbys on two sites), a signer, one responder on each
standby (its primary fallback is the multi-host writer URL, so it follows the leader), and the
drills' steady stream of recorded certificates and revocations with clients asking every
responder. Each round kills the leader (SIGKILL of Patroni and PostgreSQL) or isolates it
(cut from etcd and its standbys), waits for Patroni to promote a synchronous standby, then
brings the old leader back (it rejoins as a standby, through pg_rewind when it diverged).

Judged against the client's own log of acknowledgements (R26): acknowledged certificates and
revocations lost (must be 0; a lost certificate acknowledged by a leader that was not the
surviving one is a split-brain write), acknowledged revocations not served revoked at the end
(must be 0), and non-authoritative answers for serials acknowledged more than 2 s before the
request outside the write gap (must be 0: during the gap, tryLater is the honest answer).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from certstatus.cluster.ha import HaCluster
from certstatus.cluster.setup import write_deployment
from certstatus.config import load_config, load_issuer_material
from certstatus.demo.ca import DemoCA
from certstatus.drill.runner import _ready, _wait, tear_down
from certstatus.drill.traffic import NON_AUTHORITATIVE, Answer, Traffic, ask
from certstatus.ingest import Ingest
from certstatus.ports import free_port
from certstatus.store.base import CertificateRow
from certstatus.store.postgres import PostgresStore

MAX_STALENESS = 2
VARIANTS = ("kill", "isolate")


@dataclass
class Round:
    variant: str
    old_leader: str
    new_leader: str | None = None
    to_new_leader_s: float | None = None
    write_gap_s: float | None = None
    to_authoritative_s: float | None = None  # a serial recorded right after the fault
    rejoined: bool = False
    rejoin_s: float | None = None  # from the old leader's return to its rejoining as a standby


@dataclass
class FailoverReport:
    drill: str = "failover"
    rounds: list[Round] = field(default_factory=list)
    acknowledged_certificates: int = 0
    acknowledged_revocations: int = 0
    lost_certificates: int = 0  # acknowledged, absent from the surviving leader (split brain)
    lost_revocations: int = 0
    revocations_not_served: int = 0
    late_non_authoritative: int = 0  # outside the write gaps, serials acked > 2 s before
    late_examples: list[str] = field(default_factory=list)
    answers: dict[str, int] = field(default_factory=dict)
    refused_writes: dict[str, int] = field(default_factory=dict)  # by error: never acknowledged
    duration_s: float = 0.0

    def median(self, attribute: str, variant: str | None = None) -> float | None:
        values = [
            getattr(r, attribute)
            for r in self.rounds
            if getattr(r, attribute) is not None and (variant is None or r.variant == variant)
        ]
        return round(statistics.median(values), 2) if values else None

    @property
    def passed(self) -> bool:
        complete = all(
            r.new_leader and r.write_gap_s is not None and r.to_authoritative_s is not None
            for r in self.rounds
        )
        return (
            bool(self.rounds)
            and complete
            and all(r.rejoined for r in self.rounds)
            and self.lost_certificates == 0
            and self.lost_revocations == 0
            and self.revocations_not_served == 0
            and self.late_non_authoritative == 0
        )

    def to_json(self) -> str:
        medians = {
            v: {
                k: self.median(k, v)
                for k in ("to_new_leader_s", "write_gap_s", "to_authoritative_s")
            }
            for v in VARIANTS
        }
        return json.dumps(
            {**asdict(self), "medians": medians, "passed": self.passed}, indent=2, default=str
        )


class FailoverDrill:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.cluster = HaCluster.up_ha(directory, replicas=2, sites="a:1,b:1")
        self.config_path = write_deployment(self.cluster, max_staleness=f"{MAX_STALENESS}s")
        self.processes: list[subprocess.Popen[bytes]] = []
        self.responders: dict[str, str] = {}
        self.report = FailoverReport()
        # when a responder may honestly say tryLater: (start, end, responder or None for all)
        self.gaps: list[tuple[float, float, str | None]] = []
        self.events: list[tuple[float, str]] = []  # when each fault and return happened

    def _spawn(self, args: list[str], log: str) -> None:
        handle = (self.dir / log).open("ab")
        self.processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "certstatus.cli", *args],
                stdout=handle,
                stderr=handle,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        )

    def start(self) -> Traffic:
        self._spawn(["signer", "--config", str(self.config_path)], "signer.log")
        base = self.config_path.read_text()
        for node in self.cluster.replicas:  # the standbys at the start
            port = free_port()
            text = re.sub(r'listen = ".*"', f'listen = "127.0.0.1:{port}"', base, count=1)
            text = text.replace("run_signer = true", "run_signer = false\nworkers = 1")
            text = re.sub(r'site = "[^"]*"', f'site = "{node.site}"', text, count=1)
            blocks = text.split("[[replicas]]")
            kept = [b for b in blocks[1:] if f'name = "{node.name}"' in b]
            text = blocks[0] + "".join("[[replicas]]" + b for b in kept)
            if "[[issuers]]" not in text:
                text += base[base.index("[[issuers]]") :]
            path = self.dir / f"responder-{node.name}.toml"
            path.write_text(text)
            self._spawn(["serve", "--config", str(path)], f"responder-{node.name}.log")
            self.responders[node.name] = f"http://127.0.0.1:{port}"
        for url in self.responders.values():
            _wait(functools.partial(_ready, url), 60, f"{url} ready")
        config = load_config(self.config_path)
        writer = PostgresStore(config.database, timeout=3, name="drill-writer")
        ingest = Ingest(writer, load_issuer_material(config))
        ca = DemoCA.load(self.dir / "issuer.pem", self.dir / "issuer.key")
        traffic = Traffic(ca, ingest, writer, self.responders, ingest.issuer_id("demo"))
        traffic.start()
        return traffic

    def round(self, traffic: Traffic, variant: str) -> Round:
        cluster = self.cluster
        old = cluster.primary
        result = Round(variant, old.name)
        began = time.monotonic()  # answers from here on may meet the write gap
        if variant == "kill":
            cluster.kill_leader(old)  # returns once its processes are gone
        else:
            cluster.isolate_leader(old)
            time.sleep(0.1)  # the link proxies read their control file every 50 ms
        faulted_at = time.monotonic()
        new = cluster.wait_leader(90, other_than=old.name)
        result.new_leader = new.name
        result.to_new_leader_s = round(time.monotonic() - faulted_at, 2)
        ledger = traffic.ledger

        def first_after() -> int | None:
            with ledger.lock:
                after = [s for s, at in ledger.ingested_at.items() if at > faulted_at]
            return min(after) if after else None

        _wait(lambda: first_after() is not None, 60, None)
        first = first_after()
        if first is not None:
            result.write_gap_s = round(ledger.ingested_at[first] - faulted_at, 2)
            path = traffic.path(first)
            authoritative = _wait(
                lambda: any(
                    ask(url, path)[0] in ("good", "revoked") for url in self.responders.values()
                ),
                60,
                None,
            )
            if authoritative:
                result.to_authoritative_s = round(time.monotonic() - faulted_at, 2)
        # Stale replicas answer tryLater until the new leader takes writes *and* the signer,
        # reconnected to it, has written again (its heartbeat is what replicas are judged
        # fresh by): the later of the two, plus the staleness bound. The ingest writer may
        # reconnect seconds before the signer does (seen in CI: tryLater at 14.4 s on the new
        # leader's responder, with writes back much earlier).
        recovered = max(result.write_gap_s or 60, result.to_authoritative_s or 60)
        self.gaps.append((began, faulted_at + recovered + MAX_STALENESS + 1, None))
        returned_at = time.monotonic()
        if variant == "kill":
            cluster.start(old)
        else:
            cluster.set_link(old, "ok")
        try:
            cluster.wait_rejoined(old, 90)
            result.rejoined = True
            result.rejoin_s = round(time.monotonic() - returned_at, 2)
            cluster.wait_members(60)  # a synchronous standby again before the next round
        except Exception:
            result.rejoined = False
        if old.name in self.responders:  # its own replica: stale until rejoined and caught up
            back = time.monotonic() if result.rejoined else float("inf")
            self.gaps.append((began, back + MAX_STALENESS + 1, old.name))
        self.events += [(faulted_at, f"{variant} {old.name}"), (returned_at, f"{old.name} back")]
        return result

    def judge(self, traffic: Traffic) -> None:
        report = self.report
        ledger = traffic.ledger
        leader = self.cluster.primary
        store = PostgresStore(leader.url, read_only=True, name=leader.name)
        try:
            issuer = traffic.issuer_id
            with ledger.lock:
                acked = dict(ledger.ingested_at)
                revoked = dict(ledger.revoke_acked_at)
            report.acknowledged_certificates = len(acked)
            report.acknowledged_revocations = len(revoked)
            rows = {s: store.certificate(issuer, s) for s in set(acked) | set(revoked)}
        finally:
            store.close()
        report.lost_certificates = sum(rows[s] is None for s in acked)
        report.lost_revocations = sum(not _revoked(rows[s]) for s in revoked)
        url = next(iter(self.responders.values()))
        pending = set(revoked)
        deadline = time.monotonic() + 30  # re-signing after the last failover
        while pending and time.monotonic() < deadline:
            pending = {s for s in pending if ask(url, traffic.path(s))[0] != "revoked"}
            if pending:
                time.sleep(0.5)
        report.revocations_not_served = len(pending)
        late = [
            a
            for a in list(traffic.answers)
            if a.kind in NON_AUTHORITATIVE
            and a.serial in acked
            and acked[a.serial] < a.at - 2
            and not (a.kind == "tryLater" and self._in_gap(a))
        ]
        report.late_non_authoritative = len(late)
        report.late_examples = [
            f"{a.responder} serial {a.serial:x}: {a.kind} {self._when(a.at)}" for a in late[:5]
        ]
        report.answers = dict(traffic.counts()[0])
        report.refused_writes = dict(traffic.refused)

    def _in_gap(self, answer: Answer) -> bool:
        return any(
            start <= answer.at <= end and who in (None, answer.responder)
            for start, end, who in self.gaps
        )

    def _when(self, at: float) -> str:
        """An answer's time relative to the last event before it, for the report."""
        before = [(t, what) for t, what in self.events if t <= at]
        if not before:
            return "before the first fault"
        t, what = before[-1]
        return f"{at - t:.1f}s after {what}"

    def close(self, traffic: Traffic | None) -> None:
        tear_down(traffic, self.processes, self.cluster)


def _revoked(row: CertificateRow | None) -> bool:
    return row is not None and bool(row.revoked)


def run_failover_drill(
    rounds: int = 3,
    variants: tuple[str, ...] = VARIANTS,
    warmup: float = 4.0,
    directory: Path | None = None,
) -> FailoverReport:
    """`rounds` rounds of each variant, kill then isolate, on a fresh cluster."""
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    workdir = directory or Path(tempfile.mkdtemp(prefix="certstatus-drill-failover-"))
    workdir.chmod(0o755)
    drill = FailoverDrill(workdir / "cluster")
    traffic = None
    started = time.monotonic()
    try:
        traffic = drill.start()
        time.sleep(warmup)
        for variant in variants:
            for _ in range(rounds):
                drill.report.rounds.append(drill.round(traffic, variant))
                time.sleep(2)  # steady traffic on the healed cluster before the next fault
        traffic.finish()
        drill.judge(traffic)
        drill.report.duration_s = round(time.monotonic() - started, 1)
        return drill.report
    finally:
        drill.close(traffic)
        if directory is None:
            shutil.rmtree(workdir, ignore_errors=True)
