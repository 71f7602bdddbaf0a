"""What only PostgreSQL has, on a real primary and streaming replica: SKIP LOCKED claims across
signers, a signer SIGKILLed mid-batch losing nothing, F10, the replica set's rules (F1), the
batched libpq lookups and the event loop's reader, and a pool that revives after an outage.

What both engines guarantee alike (version guard, priorities, leases, CRL numbers and gate,
the purge queue) runs on both from the `engine` fixture (tests/conftest.py) in test_signer.py,
test_crl.py and test_purger.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from certstatus.cluster.local import Cluster
from certstatus.cluster.setup import write_deployment
from certstatus.config import load_config, load_issuer_material
from certstatus.demo.ca import DemoCA
from certstatus.ingest import Ingest
from certstatus.monitor.heartbeat import HeartbeatWriter
from certstatus.ocsp.certid import HashAlgorithm, issuer_keys
from certstatus.ocsp.request import encode_request, get_path
from certstatus.signer import Signer
from certstatus.store.base import Priority, StoreError
from certstatus.store.postgres import PostgresStore
from certstatus.store.replicaset import NoAuthoritativeSource, ReplicaSet, Source
from tests.conftest import fresh_now, postgres_dir, stop_process

pytestmark = pytest.mark.integration
NOW = int(time.time())


_now_at_test_start = fresh_now()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    directory = postgres_dir(tmp_path_factory, "pg")
    running = Cluster.up(directory / "cluster", replicas=1)
    config_path = write_deployment(running, max_staleness="2s")
    primary = PostgresStore(running.primary.url)
    stop = threading.Event()
    beat = threading.Thread(target=HeartbeatWriter(primary).run, args=(stop,), daemon=True)
    beat.start()
    try:
        yield running, config_path, primary
    finally:
        stop.set()
        beat.join()
        primary.close()
        running.down()


class Env:
    def __init__(self, cluster) -> None:
        self.cluster, self.config_path, self.primary = cluster
        self.config = load_config(self.config_path)
        self.materials = load_issuer_material(self.config)
        self.ingest = Ingest(self.primary, self.materials)
        self.issuer_id = self.ingest.issuer_id("demo")
        self.ca = DemoCA.load(
            self.config_path.parent / "issuer.pem", self.config_path.parent / "issuer.key"
        )
        self.key = ec.generate_private_key(ec.SECP256R1()).public_key()

    def leaves(self, count: int, base: int) -> list[int]:
        certs = [self.ca.leaf(self.key, base + n, "http://t/") for n in range(count)]
        self.ingest.add_certificates([(c, "t") for c in certs], int(time.time()))
        return [c.serial_number for c in certs]

    def signer(self, processes: int = 1, clock=time.time) -> Signer:
        return Signer(
            self.primary,
            self.materials,
            {"demo": self.issuer_id},
            self.config.signing,
            clock,
            processes,
        )

    def status(self, serial: int) -> ocsp.OCSPCertStatus | None:
        stored = self.primary.response(self.issuer_id, serial, HashAlgorithm.SHA256)
        return (
            None if stored is None else ocsp.load_der_ocsp_response(stored.der).certificate_status
        )


@pytest.fixture
def env(cluster) -> Env:
    return Env(cluster)


async def asgi_get(app, path: str) -> bytes:
    """One GET through the responder's ASGI app, in process; the answer's body."""
    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
             "headers": []}  # fmt: skip
    body = bytearray()

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        body.extend(message.get("body", b""))

    await app(scope, receive, send)
    return bytes(body)


def test_skip_locked_claims_are_disjoint(env: Env) -> None:
    env.leaves(400, 0x20_0000)
    claims: list[list[int]] = [[], []]

    def claim(slot: int) -> None:
        own = PostgresStore(env.cluster.primary.url, name=f"claimer{slot}")
        while batch := own.claim_due(int(time.time()), 25, 120):
            claims[slot].extend(c.serial for c in batch)
        own.close()

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert claims[0] and claims[1]
    assert not set(claims[0]) & set(claims[1])


def test_signer_refuses_a_disagreeing_clock_f10(env: Env) -> None:
    [serial] = env.leaves(1, 0x30_0000)
    with env.signer(clock=lambda: time.time() + 30) as signer:
        assert signer.clock_problem() is not None
        assert signer.sign_due() == 0
    assert env.status(serial) is None
    with env.signer() as signer:
        assert signer.clock_problem() is None


def test_sigkill_mid_batch_loses_nothing(env: Env) -> None:
    """A signer process killed with SIGKILL mid-batch: after a restart every revocation is
    served as revoked and every certificate has a response (claims come back after the lease)."""
    config = env.config_path.read_text().replace(
        "[signing]\n", '[signing]\nlease = "10s"\nbatch_size = 64\n'
    )
    path = env.config_path.parent / "sigkill.toml"
    path.write_text(config)
    serials = env.leaves(3000, 0x40_0000)
    revoked = serials[::10]
    for serial in revoked:
        env.ingest.revoke("demo", serial, "superseded", int(time.time()))
    cli = [sys.executable, "-m", "certstatus.cli", "signer", "--config", str(path)]
    first = subprocess.Popen(
        cli, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while env.primary.counts()["responses"] < 500 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # the parent and its signing processes, mid-batch
    first.wait()
    second = subprocess.Popen(
        cli, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            # rows the killed signer had claimed are leased, not lost: count them as pending
            due = env.primary.due_count(int(time.time()) + 15)
            if due[Priority.NEW] == due[Priority.REVOKED] == 0:
                break
            time.sleep(0.5)
    finally:
        second.terminate()
        second.wait(timeout=30)
    for serial in revoked:
        assert env.status(serial) is ocsp.OCSPCertStatus.REVOKED, hex(serial)
    for serial in serials[1::10]:
        assert env.status(serial) is ocsp.OCSPCertStatus.GOOD, hex(serial)


def sources(replicas: ReplicaSet, issuer_id: int, serials: list[int]) -> list[str | None]:
    """Who answered each key of one batched lookup (or why none could)."""
    found = replicas.responses([(issuer_id, s, HashAlgorithm.SHA1) for s in serials])
    return [
        type(r).__name__ if isinstance(r, Exception) else (None if r is None else r.source)
        for r in found
    ]


def test_replica_set_falls_back_to_the_primary_f1(env: Env) -> None:
    replica_node = env.cluster.replicas[0]
    primary = Source(
        "primary",
        "primary",
        None,
        PostgresStore(env.cluster.primary.url, read_only=True, timeout=1),
    )
    replica = Source(
        replica_node.name,
        "replica",
        "a",
        PostgresStore(replica_node.url, read_only=True, timeout=1, name=replica_node.name),
    )
    replicas = ReplicaSet(primary, [replica], max_staleness=2.0)
    [old] = env.leaves(1, 0x50_0000)
    with env.signer() as signer:
        signer.sign_due()
    time.sleep(1)
    for source in (primary, replica):
        replicas.sample(source)
    assert replica.fresh(2.0) and replicas.ready
    assert replicas.response(env.issuer_id, old).source == replica_node.name
    env.cluster.pause_replay(replica_node, True)
    try:
        [new] = env.leaves(1, 0x51_0000)
        with env.signer() as signer:
            signer.sign_due()
        replicas.sample(replica)
        # fresh but behind: the miss goes to the primary, never "unauthorized"
        assert replicas.response(env.issuer_id, new).source == "primary"
        assert sources(replicas, env.issuer_id, [old, new, 0xBAD]) == [
            replica_node.name,
            "primary",
            None,
        ]  # fmt: skip  (batched lookups keep the same rules per key)
        time.sleep(2.5)
        replicas.sample(replica)
        assert not replica.fresh(2.0)  # paused replay: heartbeat ages, replica unused
        assert replicas.response(env.issuer_id, old).source == "primary"
        assert replicas.response(env.issuer_id, 0xBAD) is None  # authoritative miss
        assert sources(replicas, env.issuer_id, [old, 0xBAD]) == ["primary", None]
        replicas.fallback = False
        assert not replicas.ready
        assert replicas.response(env.issuer_id, old).source == replica_node.name  # degraded hit
        with pytest.raises(NoAuthoritativeSource):
            replicas.response(env.issuer_id, new)
        assert sources(replicas, env.issuer_id, [old, new]) == [
            replica_node.name, "NoAuthoritativeSource",
        ]  # fmt: skip
    finally:
        env.cluster.pause_replay(replica_node, False)
        primary.store.close()
        replica.store.close()


def test_cluster_status_shows_a_lost_slot(cluster, tmp_path: Path) -> None:
    running, _, _ = cluster
    node = running.replicas[0]
    running.lose_wal(node)
    try:
        time.sleep(2.5)
        [row] = [r for r in running.status() if r["name"] == node.name]
        assert row["slot_wal_status"] == "lost"
        assert row["staleness_s"] > 2
        status = subprocess.run(
            [
                sys.executable,
                "-m",
                "certstatus.cli",
                "cluster",
                "status",
                "--dir",
                str(running.dir),
                "--json",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert '"slot_wal_status": "lost"' in status.stdout
    finally:
        running.rebuild(node)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        [row] = [r for r in running.status() if r["name"] == node.name]
        if row["slot_wal_status"] == "reserved" and (row["staleness_s"] or 99) < 2:
            break
        time.sleep(0.2)
    assert row["slot_wal_status"] == "reserved" and row["staleness_s"] < 2


def test_delay_link_slows_replication_and_heals(cluster) -> None:
    """delay-link holds each chunk of the replication stream: the replica's heartbeat age rises
    by about the delay, and falls back once the link is healed."""
    running, _, _ = cluster
    node = running.replicas[0]
    replica = PostgresStore(node.url, read_only=True, timeout=2, name=node.name)

    def worst_age(seconds: float) -> float:
        deadline = time.monotonic() + seconds
        worst = 0.0
        while time.monotonic() < deadline:
            age = replica.heartbeat_age()
            worst = max(worst, float("inf") if age is None else age)
            time.sleep(0.05)
        return worst

    # a replica just rebuilt by an earlier test (or slow under load) may not have replayed the
    # schema or a first heartbeat yet: wait for that before measuring the link
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(StoreError):
            if worst_age(0.2) < 0.6:
                break
        time.sleep(0.2)
    try:
        assert worst_age(1.0) < 0.6
        running.set_link(node, "delay", 800)
        assert worst_age(3.0) > 0.8
    finally:
        running.set_link(node, "ok")
    time.sleep(1.0)
    assert worst_age(1.5) < 0.6
    replica.close()


def test_a_published_crl_reaches_the_replica_r17(env: Env) -> None:
    """A CRL published on the primary is served byte for byte by the replica. (Numbers, the
    gate and publishing only a higher number run on both engines in tests/test_crl.py.)"""
    from certstatus.crl.gate import crl_serials
    from certstatus.crlbuilder import CrlService

    serials = env.leaves(6, 0x60_0000)
    env.ingest.revoke("demo", serials[0], "keyCompromise", int(time.time()))
    service = CrlService(env.primary, [(env.issuer_id, env.materials[0])], env.config.crl)
    [result] = service.build_due(force=True)
    assert result.published
    current = env.primary.current_crl(env.issuer_id, 0)
    assert current.number == result.number and serials[0] in crl_serials(current.der)
    replica = PostgresStore(env.cluster.replicas[0].url, read_only=True, name="replica")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        copy = replica.current_crl(env.issuer_id, 0)
        if copy is not None and copy.number == current.number:
            break
        time.sleep(0.1)
    assert copy is not None and copy.der == current.der
    replica.close()


def test_a_large_crl_is_read_in_pieces_and_its_connection_not_pooled_after_r17(env: Env) -> None:
    """A CRL over the store's large-message size (8 MiB; lowered here to 97 bytes so a small
    CRL spans many pieces) is read piece by piece in one snapshot and comes back byte for byte,
    on the primary and a replica. It is published by COPY in pieces on a connection of its
    own: no pooled connection is left with a buffer the CRL's size, or discarded."""
    from cryptography import x509

    from certstatus.crlbuilder import CrlService

    serials = env.leaves(5, 0x61_0000)
    for serial in serials[:3]:
        env.ingest.revoke("demo", serial, "keyCompromise", int(time.time()))
    whole = PostgresStore(env.cluster.primary.url, read_only=True, name="whole")
    env.primary.large_message = 97
    try:
        bad_returns = env.primary._pool.get_stats().get("returns_bad", 0)
        service = CrlService(env.primary, [(env.issuer_id, env.materials[0])], env.config.crl)
        [result] = service.build_due(force=True)
        assert result.published
        assert env.primary._pool.get_stats().get("returns_bad", 0) == bad_returns
        pieces = env.primary.current_crl(env.issuer_id, 0)
        one = whole.current_crl(env.issuer_id, 0)
        assert pieces is not None and one is not None and len(pieces.der) > 3 * 97
        assert pieces == one  # every column, and the DER byte for byte
        crl = x509.load_der_x509_crl(pieces.der)
        assert crl.is_signature_valid(env.materials[0].certificate.public_key())
        assert {e.serial_number for e in crl} >= set(serials[:3])
        replica = PostgresStore(env.cluster.replicas[0].url, read_only=True, name="replica")
        replica.large_message = 97
        deadline = time.monotonic() + 10
        while replica.current_crl(env.issuer_id, 0) != one:
            assert time.monotonic() < deadline, "the replica never served the CRL"
            time.sleep(0.1)
        replica.close()
    finally:
        env.primary.large_message = 8 << 20
        whole.close()


def test_a_long_walk_may_wait_past_the_store_timeout_for_its_first_rows(env: Env) -> None:
    """The CRL builder's ordered walk over a million fresh revocations sorted for longer than
    the store's few seconds before its first row, and the CRL was never built: a walk's fetch
    has walk_timeout. Other statements keep the store's timeout."""
    store = PostgresStore(env.cluster.primary.url, timeout=1, name="short")
    try:
        assert store.walk_timeout >= 60
        [(setting, _)] = list(
            store._stream(
                "SELECT setting::int, pg_sleep(1.5) FROM pg_settings "
                "WHERE name = 'statement_timeout'",
                (),
            )
        )
        assert setting == int(store.walk_timeout * 1000)  # milliseconds
        with pytest.raises(StoreError, match="statement timeout"), store._reading() as db:
            db.execute("SELECT pg_sleep(1.5)")
    finally:
        store.close()


def test_a_stopped_heartbeat_writer_never_reads_fresh_f1(tmp_path_factory) -> None:
    """If the heartbeat writer dies, every replica's staleness grows (it is the age of the last
    heartbeat), so the replica set stops trusting them instead of reading them as fresh."""
    running = Cluster.up(
        postgres_dir(tmp_path_factory, "beat") / "cluster", replicas=1, shared_buffers_mb=48
    )
    try:
        # (and `cluster up --shared-buffers` reaches every node, and survives a reload)
        for node in running.nodes:
            assert running.query(node, "SHOW shared_buffers") == [("48MB",)]
        assert Cluster.load(running.dir).shared_buffers_mb == 48
        write_deployment(running)  # applies the schema
        writer_store = PostgresStore(running.primary.url)
        stop = threading.Event()
        writer = threading.Thread(target=HeartbeatWriter(writer_store, 0.1).run, args=(stop,))
        writer.start()
        replica = Source(
            "r", "replica", None, PostgresStore(running.replicas[0].url, read_only=True, timeout=1)
        )
        primary = Source(
            "primary",
            "primary",
            None,
            PostgresStore(running.primary.url, read_only=True, timeout=1),
        )
        replicas = ReplicaSet(primary, [replica], max_staleness=1.0, fallback=False)
        deadline = time.monotonic() + 10
        while not replica.fresh(1.0) and time.monotonic() < deadline:
            replicas.sample(replica)
            time.sleep(0.1)
        assert replica.fresh(1.0) and replicas.ready
        stop.set()
        writer.join()
        time.sleep(1.5)
        replicas.sample(replica)
        assert replica.staleness is not None and replica.staleness > 1.0
        assert not replica.fresh(1.0) and not replicas.ready
        for store in (writer_store, replica.store, primary.store):
            store.close()
    finally:
        running.down()


def test_concurrent_requests_share_lookups_on_a_replica(env: Env) -> None:
    """The responder batches the lookups of requests that arrive together: 40 concurrent GETs
    through the app over a replica set take fewer round trips than requests, and each gets
    its own certificate's answer (CertID checked by cryptography)."""
    import asyncio

    from certstatus.responder.app import OcspApp, issuer_index
    from certstatus.responder.source import ReplicaSource

    replica_node = env.cluster.replicas[0]
    primary = Source("primary", "primary", None, PostgresStore(env.cluster.primary.url, True))
    replica = Source(
        replica_node.name, "replica", "a", PostgresStore(replica_node.url, True, name="r")
    )
    replicas = ReplicaSet(primary, [replica], max_staleness=5.0)
    serials = env.leaves(40, 0x80_0000)
    with env.signer() as signer:
        signer.sign_due()
    deadline = time.monotonic() + 10
    while replica.store.response(env.issuer_id, serials[-1]) is None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    for source in (primary, replica):
        replicas.sample(source)
    source = ReplicaSource(replicas)
    app = OcspApp(source, issuer_index([(env.issuer_id, env.materials[0])]))
    issuer = env.materials[0].certificate

    async def get(serial: int) -> bytes:
        return await asgi_get(
            app, get_path(encode_request(issuer_keys(issuer)[HashAlgorithm.SHA1], serial))
        )

    async def all_at_once() -> list[bytes]:
        return await asyncio.gather(*(get(serial) for serial in serials))

    answers = asyncio.run(all_at_once())
    for serial, der in zip(serials, answers, strict=True):
        parsed = ocsp.load_der_ocsp_response(der)
        assert parsed.serial_number == serial
        assert parsed.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert source.lookup.looked_up == 40
    assert source.lookup.batches < 40
    assert replica.answers >= 40  # all from the replica, none needed the primary
    # The lookup thread has opened the event loop's own connection to the replica: the next
    # batch is read from the loop (store/pgloop.py); a serial the replica lacks still goes
    # through every rule on the thread (primary fallback, then unauthorized).
    deadline = time.monotonic() + 5  # it opens it after answering the batch
    while not replica.store.loop_reader.ready:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    fallbacks = replicas.fallbacks
    unknown = 0x80_FFFF
    serials.append(unknown)
    answers = asyncio.run(all_at_once())
    for serial, der in zip(serials[:-1], answers, strict=False):
        assert ocsp.load_der_ocsp_response(der).serial_number == serial
    assert (
        ocsp.load_der_ocsp_response(answers[-1]).response_status
        is ocsp.OCSPResponseStatus.UNAUTHORIZED
    )
    assert source.lookup.on_loop == 40
    assert replicas.fallbacks == fallbacks + 1  # only the unknown serial reached the primary


def test_batched_libpq_lookups_agree_with_psycopg(env: Env, monkeypatch) -> None:
    """store/pglookup.py speaks libpq directly on the responder's hot path; psycopg's cursor
    (PostgresStore.response) is its oracle: both hash algorithms, a serial asked twice in one
    batch, misses (unknown serial, unknown issuer) in place, a connection that lost its
    prepared statements re-prepares instead of failing, and a process that has not read the
    responder certificate the stored rows end with yet reads it in the same exchange."""
    from certstatus.store import responsecerts

    def forget_certs() -> None:
        monkeypatch.setattr(responsecerts.CERTS, "_known", {responsecerts.WHOLE: b""})

    serials = env.leaves(6, 0x90_0000)
    with env.signer() as signer:
        signer.sign_due()
    reader = PostgresStore(env.cluster.primary.url, read_only=True, max_connections=1)
    keys = [(env.issuer_id, s, a) for s in serials for a in HashAlgorithm]
    keys += [
        (env.issuer_id, serials[0], HashAlgorithm.SHA1),  # twice in one batch
        (env.issuer_id, 0x90_FFFF, HashAlgorithm.SHA1),  # never ingested
        (env.issuer_id + 1000, serials[1], HashAlgorithm.SHA256),  # no such issuer
    ]

    def oracle() -> list:
        return [reader.response(issuer, serial, algorithm) for issuer, serial, algorithm in keys]

    expected = oracle()
    assert sum(r is None for r in expected) == 2
    forget_certs()
    assert reader.responses(keys) == expected
    with reader._connection() as db:
        db.execute("DEALLOCATE ALL")  # as after a pooler or a reconnect
    assert reader.responses(keys) == expected
    # the same statements from an event loop, on the loop's own connection (store/pgloop.py)
    loop_reader = reader.loop_reader
    assert not loop_reader.ready
    loop_reader.connect()
    forget_certs()
    assert asyncio.run(loop_reader.responses(keys)) == expected
    assert asyncio.run(loop_reader.responses(keys[:3])) == expected[:3]  # prepared already

    async def two_at_once() -> list:
        return await asyncio.gather(
            loop_reader.responses(keys), loop_reader.responses(keys), return_exceptions=True
        )

    first, second = asyncio.run(two_at_once())  # one connection: the second is turned away
    assert first == expected and isinstance(second, StoreError)
    assert loop_reader.ready  # and the connection stays open for the next batch
    reader.close()
    assert not loop_reader.ready


def test_a_hung_server_fails_a_loop_read_within_its_timeout(env: Env) -> None:
    """The loop's read of a replica that stops answering (its backend frozen) ends with a
    StoreError after the store's timeout, drops the connection, and leaves the loop free: the
    batch then goes to the lookup thread, which applies the replica set's rules."""
    reader = PostgresStore(env.cluster.replicas[0].url, read_only=True, timeout=1, name="r")
    loop_reader = reader.loop_reader
    loop_reader.connect()
    [(backend,)] = loop_reader._open[0].execute("SELECT pg_backend_pid()").fetchall()
    [serial] = env.leaves(1, 0xA0_0000)
    os.kill(backend, signal.SIGSTOP)
    try:

        async def read_while_ticking() -> tuple[float, int]:
            ticks = 0

            async def tick() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.01)

            ticker = asyncio.ensure_future(tick())
            started = time.monotonic()
            with pytest.raises(StoreError):
                await loop_reader.responses([(env.issuer_id, serial, HashAlgorithm.SHA1)])
            ticker.cancel()
            return time.monotonic() - started, ticks

        took, ticks = asyncio.run(read_while_ticking())
    finally:
        os.kill(backend, signal.SIGCONT)
    assert 0.9 <= took < 2.5
    assert ticks > 50  # the loop kept running while the read waited
    assert not loop_reader.ready
    reader.close()


def test_a_store_uses_its_server_again_at_once_after_an_outage_f9(tmp_path_factory) -> None:
    """psycopg's pool retries a lost server with a doubling backoff (1, 2, 4, 8 s): a primary
    back after 8 s would stay unused for ~7 s more, and a responder would answer tryLater for
    serials the primary holds (seen in the primary-down drill). The store replaces its pool as
    soon as the server takes a connection again."""
    running = Cluster.up(postgres_dir(tmp_path_factory, "revive") / "cluster", replicas=0)
    try:
        write_deployment(running)
        store = PostgresStore(running.primary.url, read_only=True, timeout=1, name="p")
        store.counts()
        running.stop(running.primary)
        outage_ends = time.monotonic() + 8.5  # retries at ~1, 3, 7, then 15 s
        while time.monotonic() < outage_ends:  # clients keep asking, the backoff grows
            with pytest.raises(StoreError):
                store.counts()
            time.sleep(0.2)
        running.start(running.primary)
        back = time.monotonic()
        while True:
            try:
                store.counts()
                break
            except StoreError:
                assert time.monotonic() - back < 3, "the store did not use the server again"
                time.sleep(0.1)
        store.close()
    finally:
        running.down()


def test_a_web_node_restarted_while_the_primary_is_down_serves_from_its_replica_f9(
    tmp_path_factory,
) -> None:
    """A keyless web node (run_signer = false) that starts during a primary outage reads the
    issuers from its replica and answers what the replica holds, as the nodes still running
    do. It used to exit at once ("database primary ... unavailable"): every node restarted
    during the outage (a deploy, a crash, a host reboot) took itself out of the fleet."""
    from cryptography import x509

    from certstatus.ports import free_port

    running = Cluster.up(postgres_dir(tmp_path_factory, "nodown") / "cluster", replicas=1)
    node = None
    try:
        config_path = write_deployment(running, max_staleness="2s")
        config = load_config(config_path)
        primary = PostgresStore(running.primary.url)
        try:
            ingest = Ingest(primary, load_issuer_material(config))
            ca = DemoCA.load(config_path.parent / "issuer.pem", config_path.parent / "issuer.key")
            leaf = ca.leaf(ec.generate_private_key(ec.SECP256R1()).public_key(), 7007, "http://t/")
            ingest.add_certificates([(leaf, "t")], int(time.time()))
            issuer_id = ingest.issuer_id("demo")
            materials = load_issuer_material(config)
            with Signer(primary, materials, {"demo": issuer_id}, config.signing) as signer:
                assert signer.sign_due() == 1
        finally:
            primary.close()
        replica = PostgresStore(running.replicas[0].url, read_only=True, name="a1")
        try:
            deadline = time.monotonic() + 30
            while replica.response(issuer_id, leaf.serial_number) is None:
                assert time.monotonic() < deadline, "the response never reached the replica"
                time.sleep(0.1)
        finally:
            replica.close()
        port = free_port()
        web = config_path.parent / "web.toml"
        web.write_text(
            "\n".join(
                line.replace("run_signer = true", "run_signer = false")
                for line in config_path.read_text().splitlines()
                if not line.startswith(("listen", "responder_key", "issuer_key"))
            )
            .replace("[responder]", f'[responder]\nlisten = "127.0.0.1:{port}"')
            # this site's first replica is down too: the node goes on to the next
            .replace(
                "[[replicas]]",
                f'[[replicas]]\nname = "gone"\nsite = "a"\n'
                f'url = "postgresql://postgres@127.0.0.1:{free_port()}/certstatus"\n\n'
                "[[replicas]]",
                1,
            )
        )
        running.stop(running.primary)
        log = config_path.parent / "web.log"
        with log.open("wb") as stderr:
            node = subprocess.Popen(
                [sys.executable, "-m", "certstatus.cli", "serve", "--config", str(web)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        issuer = x509.load_pem_x509_certificate((config_path.parent / "issuer.pem").read_bytes())
        path = get_path(encode_request(issuer_keys(issuer)[HashAlgorithm.SHA1], leaf.serial_number))
        deadline = time.monotonic() + 60
        while True:
            assert node.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as got:
                    answer = ocsp.load_der_ocsp_response(got.read())
                break
            except OSError:
                assert time.monotonic() < deadline, "the web node never answered"
                time.sleep(0.2)
        assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
        assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
        assert answer.serial_number == leaf.serial_number
        logged = log.read_text()
        assert "replica gone not used to start: database gone" in logged, logged
        assert "issuers read from replica a1: database primary" in logged, logged
    finally:
        if node is not None:
            stop_process(node)
        running.down()


def test_a_server_that_refuses_is_not_unreachable(cluster) -> None:
    """Unreachable (which lets a starting web node read its replicas) only when the server
    took no connection; a role or database it does not know is its answer, for the operator
    to fix, and the node must say so rather than start on a replica."""
    from certstatus.ports import free_port
    from certstatus.store.base import Unreachable

    running, _, _ = cluster
    url = running.primary.url
    answered = [url.replace("postgres@", "nobody@", 1), url.rsplit("/", 1)[0] + "/nosuchdb"]
    silent = [f"postgresql://postgres@127.0.0.1:{free_port()}/certstatus"]
    for target, expected in [*((u, False) for u in answered), *((u, True) for u in silent)]:
        store = PostgresStore(target, read_only=True, max_connections=1, name="p", timeout=1)
        try:
            with pytest.raises(StoreError) as refused:
                store.schema_version()
            assert isinstance(refused.value, Unreachable) is expected, (target, refused.value)
        finally:
            store.close()


def test_only_a_node_that_signs_nothing_reads_the_issuers_from_replicas(cluster) -> None:
    """A signing node needs the primary to start, so only a web node (run_signer = false)
    may read the issuers from replicas, and then this site's first."""
    from certstatus.wiring import _registry_sources

    _, config_path, _ = cluster
    text = config_path.read_text()
    extra = '[[replicas]]\nname = "b1"\nsite = "b"\nurl = "postgresql://b1/x"\n\n[[replicas]]'
    for signs, site, expected in [
        (True, "a", ["primary"]),
        (False, "a", ["primary", "a1", "b1"]),
        (False, "b", ["primary", "b1", "a1"]),
    ]:
        path = config_path.parent / f"sources-{signs}-{site}.toml"  # beside the issuer files
        path.write_text(
            text.replace("run_signer = true", f"run_signer = {str(signs).lower()}")
            .replace('site = "a"\nmax_staleness', f'site = "{site}"\nmax_staleness')
            .replace("[[replicas]]", extra, 1)
        )
        config = load_config(path)
        assert config.responder.site == site
        assert [name for name, _ in _registry_sources(config)] == expected


def test_a_web_node_on_a_replica_asks_the_primary_for_a_sha256_response(env: Env) -> None:
    """SHA-256 responses signed on request across a replica set: the replica has only
    the SHA-1 response; the app answers SHA-256 tryLater and writes the ask to the primary
    (never to the replica, which takes no write); a signer signs it; once it replicates, the
    same request is answered good from the replica."""
    from certstatus.responder.app import OcspApp, issuer_index
    from certstatus.responder.source import ReplicaSource
    from certstatus.store.base import AuditContext, ResponseFormat

    replica_node = env.cluster.replicas[0]
    primary = Source("primary", "primary", None, PostgresStore(env.cluster.primary.url, True))
    replica = Source(
        replica_node.name, "replica", "a", PostgresStore(replica_node.url, True, name="r")
    )
    replicas = ReplicaSet(primary, [replica], max_staleness=5.0)
    [serial] = env.leaves(1, 0xB0_0000)
    operator = AuditContext("cli:test")
    env.primary.set_response_format(ResponseFormat(True, True), operator, int(time.time()))

    def sign() -> int:
        with env.signer() as signer:
            return signer.sign_due()

    def on_replica(has_sha256: bool) -> None:
        deadline = time.monotonic() + 10
        while True:
            stored = replica.store.response(env.issuer_id, serial, HashAlgorithm.SHA256)
            if stored is not None and bool(stored.der) == has_sha256:
                return
            assert time.monotonic() < deadline
            time.sleep(0.1)

    assert sign() >= 1  # this certificate, and what earlier tests of the module left due
    on_replica(False)
    for source in (primary, replica):
        replicas.sample(source)
    asks = PostgresStore(env.cluster.primary.url, True, max_connections=1, name="asks")
    source = ReplicaSource(replicas, asks=asks)
    app = OcspApp(source, issuer_index([(env.issuer_id, env.materials[0])]))
    path = get_path(
        encode_request(issuer_keys(env.materials[0].certificate)[HashAlgorithm.SHA256], serial)
    )

    async def get() -> ocsp.OCSPResponse:
        body = await asgi_get(app, path)
        while app.ask_sha256._queued:  # the ask is sent beside the answer
            await asyncio.sleep(0.01)
        return ocsp.load_der_ocsp_response(bytes(body))

    try:
        assert asyncio.run(get()).response_status is ocsp.OCSPResponseStatus.TRY_LATER
        assert app.ask_sha256.sent == 1
        row = env.primary.certificate(env.issuer_id, serial)
        assert row.priority is Priority.REFRESH and row.due_at <= time.time()  # due now
        assert sign() >= 1
        on_replica(True)
        answer = asyncio.run(get())
        assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
        assert answer.serial_number == serial
        assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
    finally:
        source.close()
        env.primary.set_response_format(ResponseFormat(True, False), operator, int(time.time()))


def test_a_database_error_reaches_an_operator_as_one_line_that_names_a_missing_grant() -> None:
    """psycopg's text adds the statement and a caret, which `serve` printed as three error
    lines; and a permission error was called "unavailable" (an operator trial met both
    while giving a web node's role only what the README asked)."""
    import psycopg

    from certstatus.store.postgres import _failure

    denied = psycopg.errors.InsufficientPrivilege(
        "permission denied for schema public\nLINE 1: CREATE TABLE IF NOT EXISTS schema...\n   ^"
    )
    assert str(_failure("primary", denied)) == (
        "database primary: permission denied for schema public (a grant the role in its URL lacks)"
    )
    down = psycopg.OperationalError("connection refused\n\tIs the server running on that host?")
    assert str(_failure("a1", down)) == "database a1 unavailable: connection refused"
