"""?wait=replicated on a real PostgreSQL primary with a streaming replica (issue 12): the API
answers 200 only once the replica holds the signed responses (read there directly afterwards),
202 with the count still pending when the replica is fresh but behind (its WAL replay paused,
pg_wal_replay_pause()), and skips, naming it, a replica it cannot read (stopped), because no
responder reads a replica that is down (F1). The signer is `certstatus signer` (with it the
heartbeat that tells the replica's staleness); the API is `certstatus api` over mutual TLS."""

from __future__ import annotations

import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from certstatus.cluster.local import Cluster
from certstatus.cluster.setup import write_deployment
from certstatus.demo.ca import DemoCA
from certstatus.ocsp.certid import HashAlgorithm
from certstatus.store.postgres import PostgresStore
from tests.conftest import postgres_dir, stop_process
from tests.test_api import Api, check_against_spec

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def replicated(tmp_path_factory):
    """A primary and one streaming replica; the deployment's config with the API's section; a
    replica counts fresh for 30 s, longer than any wait here, so a paused replay is behind but
    not skipped."""
    directory = postgres_dir(tmp_path_factory, "apirep")
    running = Cluster.up(directory / "cluster", replicas=1)
    config_path = write_deployment(running, max_staleness="30s")
    api = Api(SimpleNamespace(dir=config_path.parent, config_path=config_path))
    signer = subprocess.Popen(
        [sys.executable, "-m", "certstatus.cli", "signer", "--config", str(config_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    ca = DemoCA.load(config_path.parent / "issuer.pem", config_path.parent / "issuer.key")
    primary = PostgresStore(running.primary.url)
    replica = PostgresStore(running.replicas[0].url, read_only=True, timeout=2, name="replica")
    try:
        with api.running():
            yield SimpleNamespace(
                cluster=running, api=api, ca=ca, primary=primary, replica=replica,
                key=ec.generate_private_key(ec.SECP256R1()).public_key(), serial=0x7E57_0000,
            )  # fmt: skip
    finally:
        stop_process(signer)
        replica.close()
        primary.close()
        running.down()


def leaf_pem(env) -> tuple[int, bytes]:
    env.serial += 0x10001
    return env.serial, env.ca.leaf(env.key, env.serial, "http://t/").public_bytes(Encoding.PEM)


def on_replica(env, serial: int) -> ocsp.OCSPCertStatus | None:
    """The status the replica's stored SHA-256 response gives, read on the replica itself."""
    (issuer,) = env.primary.issuers()
    stored = env.replica.response(issuer.id, serial, HashAlgorithm.SHA256)
    if stored is None:
        return None
    return ocsp.load_der_ocsp_response(stored.der).certificate_status


def test_wait_replicated_answers_once_the_replica_holds_the_response(replicated) -> None:
    env = replicated
    serial, pem = leaf_pem(env)
    status, answer = env.api.client().request(
        "POST", "/v1/certificates", pem, "application/x-pem-file",
        {"wait": "replicated", "timeout": "20s"},
    )  # fmt: skip
    assert status == 200, answer
    check_against_spec("/v1/certificates", "post", 200, answer)
    assert answer["wait"]["satisfied"] is True and answer["wait"]["pending"] == 0
    assert answer["wait"]["stale_replicas_skipped"] == []
    assert on_replica(env, serial) is ocsp.OCSPCertStatus.GOOD

    revoked = env.api.client().revoke(
        {"issuer": "demo", "serial": f"{serial:x}", "reason": "keyCompromise"},
        wait="replicated", timeout="20s",
    )  # fmt: skip
    assert revoked["wait"]["satisfied"] is True
    assert on_replica(env, serial) is ocsp.OCSPCertStatus.REVOKED


def test_a_replica_behind_times_out_with_202_until_it_catches_up(replicated) -> None:
    env = replicated
    node = env.cluster.replicas[0]
    serial, pem = leaf_pem(env)
    env.cluster.pause_replay(node, True)
    try:
        started = time.monotonic()
        status, answer = env.api.client().request(
            "POST", "/v1/certificates", pem, "application/x-pem-file",
            {"wait": "replicated", "timeout": "2s"},
        )  # fmt: skip
        assert 1.9 < time.monotonic() - started < 10
        assert status == 202, answer
        check_against_spec("/v1/certificates", "post", 202, answer)
        assert answer["added"] == 1  # committed on the primary: only the wait timed out
        assert answer["wait"]["satisfied"] is False and answer["wait"]["pending"] == 1
        assert answer["wait"]["stale_replicas_skipped"] == []
        (issuer,) = env.primary.issuers()
        assert env.primary.response(issuer.id, serial, HashAlgorithm.SHA256) is not None
        assert on_replica(env, serial) is None  # the replica really is behind
    finally:
        env.cluster.pause_replay(node, False)
    again = env.api.client().record(pem, wait="replicated", timeout="20s")  # idempotent retry
    assert again["known"] == 1 and again["wait"]["satisfied"] is True
    assert on_replica(env, serial) is ocsp.OCSPCertStatus.GOOD


def test_a_stopped_replica_is_skipped_and_named(replicated) -> None:
    env = replicated
    node = env.cluster.replicas[0]
    serial, pem = leaf_pem(env)
    env.cluster.stop(node)
    try:
        answer = env.api.client().record(pem, wait="replicated", timeout="20s")
        assert answer["wait"]["satisfied"] is True
        assert answer["wait"]["stale_replicas_skipped"] == [node.name]
    finally:
        env.cluster.start(node)
    deadline = time.monotonic() + 60
    while on_replica_or_none(env, serial) is not ocsp.OCSPCertStatus.GOOD:
        assert time.monotonic() < deadline, "the restarted replica did not catch up"
        time.sleep(0.5)


def on_replica_or_none(env, serial: int) -> ocsp.OCSPCertStatus | None:
    """on_replica, None while the restarted replica does not accept connections yet."""
    from certstatus.store.base import StoreError

    try:
        return on_replica(env, serial)
    except StoreError:
        return None
