"""The purge queue and the purger role, with an injected clock and recording caches: when a
purge is ready, the second pass for replicas, retries, and nothing lost (F3). Tests taking
`engine` run on SQLite and on PostgreSQL (tests/conftest.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from certstatus.cache.keys import certificate_key, crl_key, issuer_key, purge_keys
from certstatus.cache.purgers import PurgeError
from certstatus.config import ConfigError, load_config
from certstatus.purger import PurgeService
from tests.conftest import Deployment, EngineDeployment

NOW = 1_800_000_000


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RecordingCache:
    """A cache that records each purge's keys, and can be told to be down."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.purged: list[list[str]] = []
        self.down = False

    def purge(self, keys: Sequence[str]) -> None:
        if self.down:
            raise PurgeError(f"{self.name} is down")
        self.purged.append(list(keys))

    @property
    def keys(self) -> list[str]:
        return [key for batch in self.purged for key in batch]


def revoked_and_signed(deployment: Deployment, store, clock: Clock, sign: bool = True) -> int:
    certificate = deployment.leaf()
    ingest = deployment.ingest(store)
    ingest.add_certificates([(certificate, "test")], int(clock.now))
    with deployment.signer(store, clock=clock) as signer:
        signer.sign_due()
        ingest.revoke("demo", certificate.serial_number, "keyCompromise", int(clock.now))
        if sign:
            signer.sign_due()
    return certificate.serial_number


def test_a_purge_waits_for_its_signed_response_then_reaches_every_cache(
    engine: EngineDeployment,
) -> None:
    store = engine.store()
    clock = Clock(time.time())  # the real time: PostgreSQL's signer checks it (F10)
    edge, cdn = RecordingCache("edge"), RecordingCache("cdn")
    service = PurgeService(store, [edge, cdn], clock=clock)
    serial = revoked_and_signed(engine, store, clock, sign=False)
    service.step()
    # the revoked response is not signed yet: purging now would refill the cache with "good"
    assert edge.purged == [] and store.purge_backlog().unready == 1
    with engine.signer(store, clock=clock) as signer:
        signer.sign_due()
    service.step()
    key = certificate_key(1, serial)
    assert edge.keys == [key] and cdn.keys == [key]
    assert store.purge_backlog().pending == 0  # settled: delivered everywhere
    service.step()
    assert edge.keys == [key]  # never sent twice once delivered


def test_second_pass_purges_again_after_the_replicas_staleness_bound(
    engine: EngineDeployment,
) -> None:
    store = engine.store()
    clock = Clock(time.time())  # the real time: PostgreSQL's signer checks it (F10)
    edge = RecordingCache("edge")
    service = PurgeService(store, [edge], recheck_after=7, clock=clock)
    serial = revoked_and_signed(engine, store, clock)
    service.step()
    assert edge.keys == [certificate_key(1, serial)]
    clock.now += 6
    service.step()
    assert len(edge.purged) == 1 and store.purge_backlog().pending == 1
    clock.now += 1
    service.step()
    assert edge.keys == [certificate_key(1, serial)] * 2
    assert store.purge_backlog().pending == 0


def test_a_cache_that_is_down_keeps_its_purges_and_does_not_hold_up_the_others(
    engine: EngineDeployment,
) -> None:
    store = engine.store()
    clock = Clock(time.time())  # the real time: PostgreSQL's signer checks it (F10)
    edge, cdn = RecordingCache("edge"), RecordingCache("cdn")
    edge.down = True
    service = PurgeService(store, [edge, cdn], clock=clock)
    serials = [revoked_and_signed(engine, store, clock) for _ in range(3)]
    service.step()
    assert sorted(cdn.keys) == sorted(certificate_key(1, s) for s in serials)
    assert service.health["edge"].consecutive_failures == 1
    assert store.purge_backlog().pending == 3  # not settled: edge has not had them
    edge.down = False
    service.step()  # still backing off
    assert edge.purged == []
    # a new purger (a restart) finds the same queue in the database
    restarted = PurgeService(store, [edge, cdn], clock=clock)
    clock.now += 1
    restarted.step()
    assert sorted(edge.keys) == sorted(certificate_key(1, s) for s in serials)
    assert len(cdn.keys) == 3
    assert store.purge_backlog().pending == 0


def test_backoff_grows_and_honours_retry_after(deployment: Deployment) -> None:
    store = deployment.store()
    clock = Clock(NOW)

    class RateLimited(RecordingCache):
        def purge(self, keys: Sequence[str]) -> None:
            raise PurgeError("slow down", retry_after=120)

    service = PurgeService(store, [RateLimited("cdn")], clock=clock)
    revoked_and_signed(deployment, store, clock)
    service.step()
    assert service.health["cdn"].retry_at == pytest.approx(NOW + 120)


def test_a_published_crl_enqueues_a_ready_purge_of_its_partition(engine: EngineDeployment) -> None:
    store = engine.store()
    edge = RecordingCache("edge")
    engine.crl_service(store).build_due(force=True)
    PurgeService(store, [edge], clock=Clock(time.time() + 1)).step()
    assert edge.keys == [crl_key(1, 0)]


def test_purges_settled_long_ago_are_pruned(deployment: Deployment) -> None:
    store = deployment.store()
    clock = Clock(NOW)
    service = PurgeService(store, [RecordingCache("edge")], clock=clock)
    revoked_and_signed(deployment, store, clock)
    service.step()
    (count,) = store._connect().execute("SELECT count(*) FROM purges").fetchone()
    assert count == 1
    clock.now += 86_400 + 120
    service.step()
    (count,) = store._connect().execute("SELECT count(*) FROM purges").fetchone()
    assert count == 0


def test_keys_name_the_certificate_and_the_issuer() -> None:
    assert issuer_key(3) == "cs-i3"
    assert certificate_key(3, 0xAB01) == "cs-i3-sab01"
    assert crl_key(3, 2) == "cs-i3-crl2"
    from certstatus.store.base import PendingPurge

    assert purge_keys(PendingPurge(1, "ocsp", 3, 0xAB01, None)) == ["cs-i3-sab01"]
    assert purge_keys(PendingPurge(1, "crl", 3, None, 2)) == ["cs-i3-crl2"]


def test_cache_configuration_errors_name_the_key(deployment: Deployment) -> None:
    base = deployment.config_path.read_text()
    deployment.config_path.write_text(
        base
        + '\n[[caches]]\nname = "edge"\nkind = "fastly"\nurl = "ftp://x"\n'
        + '\n[[caches]]\nname = "cdn"\nkind = "tag-api"\nurl = "https://api.example/purge"\n'
        + '\n[purge]\nrecheck_after = "2h"\n'
    )
    with pytest.raises(ConfigError) as raised:
        load_config(deployment.config_path)
    message = str(raised.value)
    assert "caches[0].kind" in message and "caches[0].url" in message
    assert "caches[1].token_env" in message
    assert "purge.recheck_after" in message


def test_second_pass_is_on_by_default_only_with_replicas(deployment: Deployment) -> None:
    assert deployment.config.purge_recheck_after == 0
    text = deployment.config_path.read_text()
    deployment.config_path.write_text(text + '\n[purge]\nrecheck_after = "30s"\n')
    assert deployment.config.purge_recheck_after == 30


class HangingCache(RecordingCache):
    """A cache that accepts a purge and never answers, until its timeout (a SIGSTOPped
    Varnish, seen in test_cache)."""

    def __init__(self, name: str, timeout: float) -> None:
        super().__init__(name)
        self.timeout = timeout
        self.release = threading.Event()

    def purge(self, keys: Sequence[str]) -> None:
        if not self.release.wait(self.timeout):
            raise PurgeError(f"{self.name}: timed out")
        super().purge(keys)


def test_a_hanging_cache_delays_neither_readiness_nor_the_other_caches(
    deployment: Deployment,
) -> None:
    """Each cache is served by its own thread in the running role: while one cache holds every
    attempt for its whole timeout, a revocation signed meanwhile is marked ready and reaches
    the other cache at once, not after the hung attempt gives up."""
    store = deployment.store()
    hung, cdn = HangingCache("edge", timeout=6.0), RecordingCache("cdn")
    service = PurgeService(store, [hung, cdn], interval=0.05)
    first = revoked_and_signed(deployment, store, Clock(time.time()))
    stop = threading.Event()
    running = threading.Thread(target=service.run, args=(stop,))
    running.start()
    try:
        deadline = time.monotonic() + 3
        while certificate_key(1, first) not in cdn.keys:  # edge is now stuck on this one
            assert time.monotonic() < deadline
            time.sleep(0.02)
        second = revoked_and_signed(deployment, store, Clock(time.time()))
        signed_at = time.monotonic()
        while certificate_key(1, second) not in cdn.keys:
            assert time.monotonic() - signed_at < 2, "held up behind the hanging cache"
            time.sleep(0.02)
        assert hung.purged == []
    finally:
        hung.release.set()
        stop.set()
        running.join(10)
    assert not running.is_alive()
    service.step()  # the second was kept for edge, not lost
    assert sorted(hung.keys) == sorted([certificate_key(1, first), certificate_key(1, second)])
    assert store.purge_backlog().pending == 0


def test_a_mass_revocation_is_purged_once_per_issuer_and_window_r24(
    engine: EngineDeployment,
) -> None:
    """Above the threshold in a batch, one purge of the issuer's key replaces one per serial
    and covers every purge of the issuer ready before it; within the window further purges of
    that issuer wait for the next one; below the threshold, purges are per serial again."""
    from certstatus.ingest.api import Revocation

    store = engine.store()
    ingest = engine.ingest(store)
    clock = Clock(time.time())
    edge = RecordingCache("edge")
    service = PurgeService(
        store, [edge], clock=clock, coalesce_threshold=10, coalesce_window=5, batch=200
    )
    leaves = [engine.leaf() for _ in range(60)]
    ingest.add_certificates([(leaf, "x") for leaf in leaves], int(clock.now))

    def revoke_and_sign(batch) -> None:
        items = [Revocation("demo", leaf.serial_number, "superseded") for leaf in batch]
        ingest.revoke_many(items, int(time.time()))  # due now for the real-time signer
        with engine.signer(store) as signer:
            signer.sign_due()

    revoke_and_sign(leaves[:30])
    service.step()
    assert edge.purged == [[issuer_key(1)]]
    assert store.purge_backlog().pending == 0  # all 30 covered, settled
    revoke_and_sign(leaves[30:59])
    clock.now += 1
    service.step()
    assert edge.purged == [[issuer_key(1)]]  # within the window: waits
    assert store.purge_backlog().pending == 29
    clock.now += 5
    service.step()
    assert edge.purged == [[issuer_key(1)], [issuer_key(1)]]
    assert store.purge_backlog().pending == 0 and service.issuer_purges == 2
    clock.now += 6
    revoke_and_sign(leaves[59:])
    clock.now += 1
    service.step()
    assert edge.purged[-1] == [certificate_key(1, leaves[59].serial_number)]
