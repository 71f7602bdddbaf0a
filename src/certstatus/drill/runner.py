"""Running a drill: a real cluster, a signer, one responder per replica, traffic, a fault, a
heal, and a report of what every client saw."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from certstatus.cluster.faults import DRILLS, REPLICA_DRILLS, apply_fault
from certstatus.cluster.local import Cluster, Node, free_port
from certstatus.cluster.setup import write_deployment
from certstatus.config import load_config, load_issuer_material
from certstatus.demo.ca import DemoCA
from certstatus.drill.traffic import Traffic, ask
from certstatus.ingest import Ingest
from certstatus.store.postgres import PostgresStore

MAX_STALENESS = 2  # seconds; the drills run with a tighter bound than the 5 s default


@dataclass
class DrillReport:
    drill: str
    duration_s: float = 0.0
    answers: dict[str, int] = field(default_factory=dict)
    by_source: dict[str, int] = field(default_factory=dict)
    late_non_authoritative: int = 0  # for serials signed on the primary >2 s before the request
    late_after_ingest: int = 0  # for serials ingested >2 s before the request
    max_ingest_to_signed_s: float = 0.0
    late_examples: list[str] = field(default_factory=list)
    detection_s: dict[str, float | None] = field(default_factory=dict)
    reused: dict[str, bool] = field(default_factory=dict)
    primary_fallbacks: int = 0
    readyz_failed: bool | None = None
    misses_try_later_no_store: bool | None = None
    hits_during_fault: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        ok = self.late_non_authoritative == 0 and self.late_after_ingest == 0
        ok &= all(v is not None and v <= 5 for v in self.detection_s.values())
        ok &= all(self.reused.values())
        if self.drill == "primary-down":
            ok &= bool(self.readyz_failed) and bool(self.misses_try_later_no_store)
            ok &= self.hits_during_fault > 0
        return ok

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "passed": self.passed}, indent=2)


def tear_down(
    traffic: Traffic | None, processes: list[subprocess.Popen[bytes]], cluster: Cluster
) -> None:
    """End a drill: its traffic, then every process group it started (SIGTERM, SIGKILL after
    20 s), then its cluster, leaving nothing behind."""
    if traffic is not None:
        traffic.finish()
        with contextlib.suppress(Exception):
            traffic.primary.close()
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
    cluster.down()


class Drill:
    def __init__(self, name: str, directory: Path, replicas: int) -> None:
        self.name = name
        self.dir = directory
        self.cluster = Cluster.up(directory, replicas=replicas)
        self.config_path = write_deployment(self.cluster, max_staleness=f"{MAX_STALENESS}s")
        self.processes: list[subprocess.Popen[bytes]] = []
        self.responders: dict[str, str] = {}
        self.report = DrillReport(name)

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen[bytes]:
        handle = (self.dir / log).open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "certstatus.cli", *args],
            stdout=handle,
            stderr=handle,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.processes.append(process)
        return process

    def start(self) -> Traffic:
        self._spawn(["signer", "--config", str(self.config_path)], "signer.log")
        base = self.config_path.read_text()
        for node in self.cluster.replicas:
            port = free_port()
            text = re.sub(r'listen = ".*"', f'listen = "127.0.0.1:{port}"', base, count=1)
            text = text.replace("run_signer = true", "run_signer = false\nworkers = 1")
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
        materials = load_issuer_material(config)
        primary = PostgresStore(config.database, timeout=2, name="drill-primary")
        ingest = Ingest(primary, materials)
        ca = DemoCA.load(self.dir / "issuer.pem", self.dir / "issuer.key")
        traffic = Traffic(ca, ingest, primary, self.responders, ingest.issuer_id("demo"))
        traffic.start()
        return traffic

    def sources(self, responder: str) -> list[dict[str, Any]]:
        try:
            with urllib.request.urlopen(
                self.responders[responder] + "/sources", timeout=2
            ) as answer:
                return list(json.loads(answer.read()))
        except OSError:
            return []

    def fresh(self, responder: str, node: str) -> bool | None:
        for source in self.sources(responder):
            if source["name"] == node:
                return bool(source["fresh"])
        return None

    def _uses_itself(self, node: str) -> bool:
        return self.fresh(node, node) is True

    def detect(self, faulted: dict[str, float], timeout: float = 15) -> None:
        """Seconds from each node's fault until the responder on it stops using it."""
        pending = dict(faulted)
        while pending and time.monotonic() < max(pending.values()) + timeout:
            for name, since in list(pending.items()):
                if self.fresh(name, name) is False:
                    self.report.detection_s[name] = round(time.monotonic() - since, 2)
                    del pending[name]
            time.sleep(0.05)
        for name in pending:
            self.report.detection_s[name] = None

    def confirm_reuse(self, traffic: Traffic, nodes: list[Node], timeout: float = 40) -> None:
        """A healed replica is fresh again and answers requests again."""
        for node in nodes:
            healed = _wait(functools.partial(self._uses_itself, node.name), timeout, None)
            marker = time.monotonic()
            answered = healed and _wait(
                functools.partial(_answered_by, traffic, node.name, marker), 15, None
            )
            self.report.reused[node.name] = bool(answered)

    def close(self, traffic: Traffic | None) -> None:
        tear_down(traffic, self.processes, self.cluster)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


def _ready(url: str) -> bool:
    return _status(url + "/readyz") == 200


def _answered_by(traffic: Traffic, source: str, since: float) -> bool:
    return any(a.source == source and a.at > since for a in list(traffic.answers))


def _wait(check: Callable[[], bool], timeout: float, what: str | None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    if what is not None:
        raise TimeoutError(f"{what}: not within {timeout}s")
    return False


def run_drill(
    name: str, warmup: float = 4.0, hold: float = 8.0, directory: Path | None = None
) -> DrillReport:
    if name not in DRILLS:
        raise ValueError(f"unknown drill {name!r}; drills: {', '.join(DRILLS)}")
    # the drill stops databases on purpose: the pool's reconnect warnings are expected noise
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    workdir = directory or Path(tempfile.mkdtemp(prefix=f"certstatus-drill-{name}-"))
    replicas = 3 if name == "incident" else 2
    drill = Drill(name, workdir, replicas)
    traffic = None
    started = time.monotonic()
    try:
        traffic = drill.start()
        time.sleep(warmup)
        cluster = drill.cluster
        if name == "primary-down":
            _primary_down(drill, traffic, hold)
        else:
            broken = cluster.replicas[:2] if name == "incident" else cluster.replicas[:1]
            fault, cure = REPLICA_DRILLS[name]
            faulted: dict[str, float] = {}
            for node in broken:
                faulted[node.name] = time.monotonic()
                apply_fault(cluster, node, fault)
            drill.detect(faulted)
            time.sleep(hold)
            for node in broken:
                if cure is None:
                    cluster.rebuild(node)  # lost WAL has no cure but a fresh base backup
                else:
                    apply_fault(cluster, node, cure)
            drill.confirm_reuse(traffic, broken)
        traffic.finish()
        report = drill.report
        answers, sources = traffic.counts()
        report.answers = dict(answers)
        report.by_source = dict(sources)
        late = traffic.late_non_authoritative()
        report.late_non_authoritative = len(late)
        report.late_after_ingest = len(traffic.late_non_authoritative(since="ingested"))
        ledger = traffic.ledger
        report.max_ingest_to_signed_s = round(
            max(
                (
                    ledger.good_at[s] - ledger.ingested_at[s]
                    for s in ledger.good_at
                    if s in ledger.ingested_at
                ),
                default=0.0,
            ),
            3,
        )
        report.late_examples = [f"{a.responder} serial {a.serial:x}: {a.kind}" for a in late[:5]]
        report.primary_fallbacks = sources.get("primary", 0)
        report.duration_s = round(time.monotonic() - started, 1)
        return report
    finally:
        drill.close(traffic)
        if directory is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _primary_down(drill: Drill, traffic: Traffic, hold: float) -> None:
    """Stop the primary: hits keep being served from replicas, misses get tryLater (no-store),
    /readyz fails; then start it again and everything recovers."""
    cluster = drill.cluster
    traffic.pause_ingest.set()
    time.sleep(1.0)  # let the last writes replicate
    down_at = time.monotonic()
    apply_fault(cluster, cluster.primary, "stop")
    failed = _wait(
        lambda: all(_status(u + "/readyz") == 503 for u in drill.responders.values()), 15, None
    )
    drill.report.readyz_failed = failed
    time.sleep(hold)
    during = [a for a in list(traffic.answers) if a.at > down_at + MAX_STALENESS + 1]
    drill.report.hits_during_fault = sum(a.kind in ("good", "revoked") for a in during)
    misses = [a for a in during if a.serial == traffic.unknown_serial]
    url = next(iter(drill.responders.values()))
    kind, _, no_store = ask(url, traffic.path(traffic.unknown_serial))
    drill.report.misses_try_later_no_store = (
        kind == "tryLater" and no_store and all(a.kind == "tryLater" and a.no_store for a in misses)
    )
    if not misses:
        drill.report.notes.append("no miss was asked during the outage; checked one by hand")
    apply_fault(cluster, cluster.primary, "start")
    traffic.pause_ingest.clear()
    recovered = _wait(
        lambda: all(_status(u + "/readyz") == 200 for u in drill.responders.values()), 30, None
    )
    drill.report.reused["primary"] = recovered
