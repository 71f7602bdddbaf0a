"""The monitor on a real cluster during the founding incident (F1): lose-wal on a replica is
reported (stale replica and lost slot) within 30 s and shown broken on the status page in
headless Chromium; a responder pointed only at that frozen replica, with the primary fallback
off, makes the watchdog raise "not authoritative" for new serials, and the finding clears
once the replica is rebuilt."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from certstatus.cluster.local import Cluster
from certstatus.cluster.setup import write_deployment
from certstatus.config import load_config, load_issuer_material
from certstatus.demo.ca import DemoCA
from certstatus.ingest import Ingest
from certstatus.monitor.service import Monitor
from certstatus.store.postgres import PostgresStore
from tests.conftest import free_port, postgres_dir, wait_ready

pytestmark = pytest.mark.integration


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "certstatus.cli", *args], stdout=output, stderr=output
        )


def wait_for(condition, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"{what} not within {timeout}s"
        time.sleep(0.2)
    return time.monotonic() - started


def chromium_dom(url: str, profile: Path) -> str:
    return subprocess.run(
        [
            "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={profile}", "--dump-dom", url,
        ],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip


def test_monitor_sees_the_founding_incident_and_its_repair(tmp_path_factory) -> None:
    directory = postgres_dir(tmp_path_factory, "monitor")
    cluster = Cluster.up(directory / "cluster", replicas=2)
    processes: list[subprocess.Popen[bytes]] = []
    monitor = None
    try:
        config_path = write_deployment(cluster, max_staleness="2s")
        frozen, healthy = cluster.replicas
        # responder "a": reads only the replica about to freeze, never the primary
        a_port = free_port()
        text = config_path.read_text()
        responder_a = cluster.dir / "responder-a.toml"
        responder_a.write_text(
            text.replace("run_signer = true", "run_signer = false\nprimary_fallback = false")
            .replace(f'listen = "{load_config(config_path).responder.listen_host}:'
                     f'{load_config(config_path).responder.listen_port}"',
                     f'listen = "127.0.0.1:{a_port}"')
            .replace(f'[[replicas]]\nname = "{healthy.name}"\nsite = "{healthy.site}"\n'
                     f'url = "{healthy.url}"\n', "")
        )  # fmt: skip
        assert healthy.url not in responder_a.read_text()
        mon_port = free_port()
        with config_path.open("a") as config:
            config.write(
                f'\n[monitor]\nlisten = "127.0.0.1:{mon_port}"\nwarn_after = "3s"\n'
                'critical_after = "6s"\ncheckpoints = ["1s", "2s", "3s"]\n'
                'sample_every = "2s"\ncrl_every = "5s"\n'
                f'[[monitor.targets]]\nname = "a"\nurl = "http://127.0.0.1:{a_port}/"\n'
            )
        processes.append(start(["signer", "--config", str(config_path)], directory / "signer.log"))
        processes.append(start(["serve", "--config", str(responder_a)], directory / "a.log"))
        wait_ready(f"http://127.0.0.1:{a_port}/", processes[-1], timeout=60)

        config = load_config(config_path)
        primary = PostgresStore(config.database)
        ingest = Ingest(primary, load_issuer_material(config))
        ca = DemoCA.load(cluster.dir / "issuer.pem", cluster.dir / "issuer.key")
        key = ec.generate_private_key(ec.SECP256R1()).public_key()
        serials = iter(range(0x9000, 0x10000))

        def issue(count: int) -> None:
            certificates = [ca.leaf(key, next(serials), "http://t/") for _ in range(count)]
            ingest.add_certificates([(c, "t") for c in certificates], int(time.time()))

        monitor = Monitor(config)
        monitor.start()
        issue(1)
        wait_for(lambda: monitor.watchdog.time_to_authoritative().get("a"), 30, "authoritative")
        watched = ("NotAuthoritative", "ReplicaStale", "SlotAtRisk", "SlotLost", "WrongAnswer")
        assert not [k for k in monitor.findings.active if k[0] in watched], monitor.findings.active

        # the founding incident on one replica
        lost = threading.Thread(target=cluster.lose_wal, args=(frozen,))
        lost.start()
        stale_after = wait_for(
            lambda: ("ReplicaStale", frozen.name) in monitor.findings.active, 30, "replica stale"
        )
        slot_after = wait_for(
            lambda: any(
                (kind, frozen.name) in monitor.findings.active
                for kind in ("SlotAtRisk", "SlotLost")
            ),
            30 - stale_after,
            "slot problem",
        )
        print(f"replica stale reported after {stale_after:.1f}s, slot after +{slot_after:.1f}s")
        dom = chromium_dom(monitor.url, directory / "chromium")
        row = dom.split(f'data-replica="{frozen.name}"')[0].rsplit("<tr", 1)[1]
        assert 'class="broken"' in row, dom
        healthy_row = dom.split(f'data-replica="{healthy.name}"')[0].rsplit("<tr", 1)[1]
        assert 'class="ok"' in healthy_row
        lost.join(timeout=120)
        wait_for(lambda: ("SlotLost", frozen.name) in monitor.findings.active, 10, "slot lost")

        # new serials cannot become authoritative on "a": the watchdog says so
        issue(2)
        wait_for(
            lambda: (
                monitor.findings.active.get(("NotAuthoritative", "a")) is not None
                and monitor.findings.active[("NotAuthoritative", "a")].severity == "critical"
            ),
            30,
            "critical not-authoritative finding",
        )
        assert ("ResponderNotReady", "a") in monitor.findings.active

        cluster.rebuild(frozen)
        wait_for(
            lambda: not any(k in monitor.findings.active for k in [
                ("NotAuthoritative", "a"), ("ReplicaStale", frozen.name),
                ("SlotLost", frozen.name), ("ResponderNotReady", "a"),
            ]),
            90,
            "findings cleared after the rebuild",
        )  # fmt: skip
        cleared = {f.kind for f in monitor.findings.history}
        assert {"NotAuthoritative", "ReplicaStale", "SlotLost"} <= cleared
        primary.close()
    finally:
        if monitor is not None:
            monitor.stop()
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        cluster.down()
