"""The primary is no longer a single point of failure (issue 14), on real Patroni + etcd +
PostgreSQL clusters started here and torn down after (no process left behind).

- R26: a revocation acknowledged just before the leader is SIGKILLed is on the new leader and
  served revoked after the failover, by the same `certstatus serve` (no restart); new
  certificates are recorded, signed and served again; the old leader rejoins as a standby.
- R26: with no synchronous standby a write waits (bounded) and then fails clearly; it is
  never acknowledged while only the leader has it; the heartbeat keeps beating meanwhile.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from certstatus.cluster.ha import HaCluster, Timings
from certstatus.cluster.setup import write_deployment
from certstatus.config import load_config, load_issuer_material
from certstatus.demo.ca import DemoCA, write_pem
from certstatus.drill.traffic import ask
from certstatus.ingest import Ingest
from certstatus.ocsp.certid import HashAlgorithm, issuer_keys
from certstatus.ocsp.request import encode_request, get_path
from certstatus.store.base import NotAcknowledged
from certstatus.store.postgres import PostgresStore
from tests.conftest import postgres_dir, stop_process, wait_ready
from tests.test_drills import leftover_processes

integration = pytest.mark.integration


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"{what} not within {timeout}s"
        time.sleep(0.1)
    return round(time.monotonic() - started, 2)


class Client:
    """The CA's side: records and revokes through the multi-host writer URL, asks the
    responder over HTTP."""

    def __init__(self, cluster: HaCluster, config_path: Path, url: str) -> None:
        config = load_config(config_path)
        self.store = PostgresStore(config.database, timeout=3, name="ca")
        self.ingest = Ingest(self.store, load_issuer_material(config))
        self.ca = DemoCA.load(cluster.dir / "issuer.pem", cluster.dir / "issuer.key")
        self.key = ec.generate_private_key(ec.SECP256R1()).public_key()
        self.issuer_key = issuer_keys(self.ca.certificate)[HashAlgorithm.SHA1]
        self.url = url
        self.serial = 0x7A_0000

    def add(self) -> int:
        self.serial += 1
        leaf = self.ca.leaf(self.key, self.serial, "http://ha.invalid/")
        self.ingest.add_certificates([(leaf, "test")], int(time.time()))
        return self.serial

    def revoke(self, serial: int) -> None:
        self.ingest.revoke("demo", serial, "keyCompromise", int(time.time()))

    def answer(self, serial: int) -> str:
        return ask(self.url, get_path(encode_request(self.issuer_key, serial)))[0]


@integration
def test_unsafe_ha_settings_are_refused_in_one_line(tmp_path: Path) -> None:
    """Timings that let a healthy leader lose its lease, and synchronous acknowledgement
    without a standby, are refused before anything starts."""
    assert Timings(10, 2, 4).problems() is None
    problem = Timings(6, 2, 4).problems()
    assert problem is not None and "must not exceed ttl (6)" in problem
    for extra, expected in (
        (["--ttl", "6"], "timings: loop_wait + 2 * retry_timeout"),
        (["--replicas", "0"], "synchronous acknowledgement needs at least one standby"),
    ):
        command = ["cluster", "up", "--ha", "--dir", str(tmp_path / "c"), *extra]
        refused = subprocess.run(
            [sys.executable, "-m", "certstatus.cli", *command],
            check=False,
            capture_output=True,
            text=True,
        )
        assert refused.returncode == 2
        assert refused.stderr.count("\n") == 1 and expected in refused.stderr, refused.stderr
    assert not (tmp_path / "c" / "pg").exists()


@integration
def test_leader_killed_under_serve_loses_no_acknowledged_revocation_r26(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    directory = postgres_dir(tmp_path_factory, "ha") / "cluster"
    cluster = HaCluster.up_ha(directory, replicas=2, sites="a:1,b:1", timings=Timings())
    serve = None
    client = None
    try:
        config_path = write_deployment(cluster, max_staleness="2s")
        url = load_config(config_path).responder
        base = f"http://{url.listen_host}:{url.listen_port}"
        with (directory / "serve.log").open("ab") as log:
            serve = subprocess.Popen(
                [sys.executable, "-m", "certstatus.cli", "serve", "--config", str(config_path)],
                stdout=log,
                stderr=log,
            )
        wait_ready(base + "/", serve, timeout=60)
        client = Client(cluster, config_path, base)
        serials = [client.add() for _ in range(3)]
        wait_for(lambda: all(client.answer(s) == "good" for s in serials), 30, "signed")

        old = cluster.primary
        client.revoke(serials[0])  # acknowledged: returned without an error
        killed_at = time.monotonic()
        cluster.kill_leader(old)
        new = cluster.wait_leader(60, other_than=old.name)
        to_leader = time.monotonic() - killed_at

        def recorded() -> bool:
            try:
                serials.append(client.add())
                return True
            except Exception:
                return False

        wait_for(recorded, 60, "a write accepted by the new leader")
        write_gap = time.monotonic() - killed_at
        row = PostgresStore(new.url, read_only=True, name=new.name)
        try:
            certificate = row.certificate(client.ingest.issuer_id("demo"), serials[0])
        finally:
            row.close()
        assert certificate is not None and certificate.revoked, "acknowledged revocation lost"
        wait_for(lambda: client.answer(serials[0]) == "revoked", 60, "revocation served")
        wait_for(lambda: client.answer(serials[-1]) == "good", 60, "new serial served")
        to_authoritative = time.monotonic() - killed_at
        assert serve.poll() is None, "serve must follow the leader without a restart"
        print(
            f"\nfailover: new leader {new.name} after {to_leader:.1f}s, writes after "
            f"{write_gap:.1f}s, new serial authoritative after {to_authoritative:.1f}s"
        )
        assert to_leader < Timings().ttl + 15

        cluster.start(old)  # the old leader comes back: a standby now, never a second leader
        cluster.wait_rejoined(old, 90)
        assert cluster.primary.name == new.name
        serials.append(client.add())
        wait_for(lambda: client.answer(serials[-1]) == "good", 30, "served after rejoin")
    finally:
        if client is not None:
            client.store.close()
        if serve is not None:
            stop_process(serve)
        cluster.down()
    assert leftover_processes(str(directory)) == []


@integration
def test_no_synchronous_standby_write_waits_then_fails_r26(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    directory = postgres_dir(tmp_path_factory, "ha-sync") / "cluster"
    cluster = HaCluster.up_ha(directory, replicas=1, timings=Timings())
    try:
        config_path = write_deployment(cluster)
        config = load_config(config_path)
        ca = DemoCA.load(directory / "issuer.pem", directory / "issuer.key")
        key = ec.generate_private_key(ec.SECP256R1()).public_key()
        pems = []
        for serial in (0x51, 0x52):
            pem = directory / f"{serial:x}.pem"
            write_pem(pem, ca.leaf(key, serial, "http://ha.invalid/"))
            pems.append(pem)

        def add(pem: Path) -> subprocess.CompletedProcess[str]:
            command = ["add", "--config", str(config_path), str(pem)]
            return subprocess.run(
                [sys.executable, "-m", "certstatus.cli", *command],
                check=False,
                capture_output=True,
                text=True,
                timeout=60,
            )

        standby = cluster.replicas[0]
        cluster.stop(standby)
        started = time.monotonic()
        refused = add(pems[0])
        waited = time.monotonic() - started
        assert refused.returncode == 2, refused
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "not acknowledged" in lines[0], refused.stderr
        assert 5 <= waited < 20  # waited for the store's timeout (5 s), then gave up

        store = PostgresStore(config.database, timeout=2, name="t")
        try:
            started = time.monotonic()
            store.beat()  # asynchronous: the replicas' clock never waits for a standby
            assert time.monotonic() - started < 1
            with pytest.raises(NotAcknowledged):
                store.ensure_issuer("another", b"not acknowledged either")
        finally:
            store.close()

        cluster.start(standby)
        cluster.wait_members(90)
        accepted = add(pems[1])
        assert accepted.returncode == 0, accepted.stderr
        # the refused write is on the leader, and a retry of it is harmless
        again = add(pems[0])
        assert again.returncode == 0, again.stderr
    finally:
        cluster.down()
    assert leftover_processes(str(directory)) == []


@integration
def test_failover_drill_kill_and_isolate_r26(tmp_path_factory: pytest.TempPathFactory) -> None:
    """`certstatus drill failover`, one round of each variant: every condition of the issue."""
    from certstatus.drill.failover import run_failover_drill

    directory = postgres_dir(tmp_path_factory, "ha-drill")
    report = run_failover_drill(rounds=1, directory=directory)
    assert [r.variant for r in report.rounds] == ["kill", "isolate"]
    assert all(r.rejoined for r in report.rounds), report.to_json()
    assert report.acknowledged_revocations > 0 and report.acknowledged_certificates > 20
    assert report.lost_certificates == 0  # no split-brain write was acknowledged
    assert report.lost_revocations == 0 and report.revocations_not_served == 0
    assert report.late_non_authoritative == 0, report.late_examples
    for r in report.rounds:
        assert r.to_new_leader_s is not None and r.to_new_leader_s < 40, r
        assert r.to_authoritative_s is not None and r.to_authoritative_s < 60, r
    assert report.passed
    assert leftover_processes(str(directory)) == []
