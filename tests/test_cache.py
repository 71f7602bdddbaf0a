"""The cache tier with a real varnishd in front of real responders (R12, R13; F3): what is
cached and what never is, URL normalisation (R14), purge on revocation, health-probed origins,
and purges that survive a cache outage."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from certstatus.cache.purgers import PurgeError, TagApiPurger, VarnishPurger
from certstatus.cache.varnish import LocalVarnish, free_port
from tests.cachetier import fetch, get_path, request_der
from tests.cdn_standin import TagPurgeStandIn
from tests.conftest import Deployment, make_deployment, postgres_dir, wait_ready
from tests.conftest import stop_process as stop

CACHES = """
[[caches]]
name = "edge"
kind = "varnish"
url = "http://127.0.0.1:{port}/"
"""

pytestmark = pytest.mark.integration  # real varnishd and `certstatus serve` on loopback


@dataclass
class Tier:
    deployment: Deployment
    varnish: LocalVarnish
    cache_url: str
    origin: subprocess.Popen[bytes]

    def counters(self) -> dict[str, int]:
        return self.varnish.stats()

    def good_certificate(self):
        """A certificate ingested and signed (the serve process's signer signs it)."""
        certificate = self.deployment.leaf()
        store = self.deployment.store()
        self.deployment.ingest(store).add_certificates([(certificate, "test")], int(time.time()))
        path = get_path(certificate, self.deployment.ca.certificate)
        deadline = time.monotonic() + 10
        while fetch(self.deployment.url, path).ocsp_status() != "good":
            assert time.monotonic() < deadline, "the signer did not sign a new certificate"
            time.sleep(0.05)
        return certificate, path, store

    def revoke_and_wait_at_origin(self, certificate, path: str, store, reason: str) -> None:
        """Revoke, wait until the origin answers revoked, then a second for the purger to try."""
        self.deployment.ingest(store).revoke(
            "demo", certificate.serial_number, reason, int(time.time())
        )
        deadline = time.monotonic() + 10
        while fetch(self.deployment.url, path).ocsp_status() != "revoked":
            assert time.monotonic() < deadline, "the origin never answered revoked"
            time.sleep(0.05)
        time.sleep(1.0)

    def restart_origin(self) -> None:
        stop(self.origin)
        self.origin = start_serve(self.deployment.config_path, self.deployment.url)


def start_serve(
    config: Path, url: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    log = config.with_suffix(".log")
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "certstatus.cli", "-v", "serve", "--config", str(config)],
            stdout=output,
            stderr=output,
            env={**os.environ, **(env or {})},
        )
    try:
        wait_ready(url, process, timeout=30)
    except (TimeoutError, RuntimeError) as exc:
        stop(process)
        raise AssertionError(f"{exc}; its log:\n{log.read_text()[-3000:]}") from None
    return process


@contextmanager
def cache_tier(
    base: Path, caches: str, env: dict[str, str] | None = None, cache_port: int = 0
) -> Iterator[Tier]:
    """A deployment served with its signer and purger, a Varnish in front of it, and caches
    (a [[caches]] TOML fragment, formatted with the Varnish's port) in its config."""
    deployment = make_deployment(base / "ca", run_signer=True)
    cache_port = cache_port or free_port()
    with deployment.config_path.open("a") as config:
        config.write(caches.format(port=cache_port))
    varnish = LocalVarnish(base / "varnish")
    origin = start_serve(deployment.config_path, deployment.url, env)
    tier = Tier(deployment, varnish, f"http://127.0.0.1:{cache_port}/", origin)
    try:
        varnish.up([f"127.0.0.1:{deployment.port}"], cache_port)
        wait_healthy(varnish, {"origin0": True})
        yield tier
    finally:
        varnish.down()
        stop(tier.origin)


@pytest.fixture
def tier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tier]:
    with cache_tier(postgres_dir(tmp_path_factory, "cache"), CACHES) as built:
        yield built


def wait_healthy(varnish: LocalVarnish, expected: dict[str, bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while varnish.origin_health() != expected:
        assert time.monotonic() < deadline, f"origins never became {expected}"
        time.sleep(0.1)


def test_authoritative_answer_is_cached_and_served_from_cache(tier: Tier) -> None:
    _, path, _ = tier.good_certificate()
    before = tier.counters()["origin_requests"]
    first = fetch(tier.cache_url, path)
    second = fetch(tier.cache_url, path)
    assert (first.cache, second.cache) == ("MISS", "HIT")
    assert second.body == first.body and second.ocsp_status() == "good"
    assert tier.counters()["origin_requests"] - before == 1
    # the surrogate keys are for the cache, not for clients
    assert "xkey" not in second.headers and "surrogate-key" not in second.headers
    assert int(second.headers["age"]) <= first.max_age


def test_equivalent_get_spellings_share_one_entry(tier: Tier) -> None:
    """R14: the variants a client may send are normalised to one cache entry; the answer
    through the cache is the origin's answer for the canonical request."""
    certificate, _, _ = tier.good_certificate()
    der = request_der(certificate, tier.deployment.ca.certificate)
    canonical = base64.b64encode(der).decode()
    urlsafe = base64.urlsafe_b64encode(der).decode().rstrip("=")
    first = fetch(tier.cache_url, "/" + canonical)
    assert first.cache == "MISS"
    for variant in (
        "/" + quote(canonical, safe=""),
        "//" + canonical,
        "/" + urlsafe,
        "/" + canonical + "?cache-buster=1",
        "/" + canonical.replace("+", "%2b").replace("/", "%2f"),
    ):
        answer = fetch(tier.cache_url, variant)
        assert answer.cache == "HIT", variant
        assert answer.body == first.body


def test_revocation_is_purged_from_the_cache_within_a_second(tier: Tier) -> None:
    """F3: the cached "good" goes the moment the revoked response exists at the origin."""
    certificate, path, store = tier.good_certificate()
    assert fetch(tier.cache_url, path).cache == "MISS"
    assert fetch(tier.cache_url, path).cache == "HIT"
    revoked_at = time.monotonic()
    tier.deployment.ingest(store).revoke(
        "demo", certificate.serial_number, "keyCompromise", int(time.time())
    )
    origin_revoked = cache_revoked = None
    while cache_revoked is None:
        now = time.monotonic()
        assert now - revoked_at < 10, "the cache still answers good 10 s after the revocation"
        if origin_revoked is None and fetch(tier.deployment.url, path).ocsp_status() == "revoked":
            origin_revoked = now
        answer = fetch(tier.cache_url, path)
        if answer.ocsp_status() == "revoked":
            cache_revoked = now
        time.sleep(0.02)
    origin_revoked = origin_revoked or cache_revoked
    print(
        f"revoked at origin after {origin_revoked - revoked_at:.3f}s, "
        f"through the cache after {cache_revoked - revoked_at:.3f}s"
    )
    assert cache_revoked - origin_revoked <= 1.0
    assert cache_revoked - revoked_at <= 2.0
    assert fetch(tier.cache_url, path).ocsp_status() == "revoked"
    assert store.purge_backlog().pending == 0


def test_negative_answers_are_never_cached(tier: Tier) -> None:
    """R13: unauthorized, malformedRequest and tryLater reach the origin on every repeat."""
    _, expired_path, store = tier.good_certificate()
    # a stored response past its nextUpdate is answered tryLater (the signer is behind)
    store._connect().execute("UPDATE responses SET next_update = 1, refresh_at = 1")
    store._connect().commit()
    unknown = tier.deployment.leaf()  # never ingested: unauthorized (R5)
    cases = {
        "unauthorized": get_path(unknown, tier.deployment.ca.certificate),
        "malformedRequest": "/MEUwQzBBMD8wPTAJBgUrDgMCGgUABBQ",
        "tryLater": expired_path,
    }
    for kind, path in cases.items():
        before = tier.counters()["origin_requests"]
        for _ in range(3):
            answer = fetch(tier.cache_url, path)
            assert answer.status == 200, kind
            assert answer.ocsp_status().replace("_", "").lower() == kind.lower(), kind
            assert answer.cache != "HIT", kind
            assert "no-store" in answer.headers["cache-control"], kind
        assert tier.counters()["origin_requests"] - before == 3, kind


def test_post_is_passed_to_the_origin(tier: Tier) -> None:
    certificate, _, _ = tier.good_certificate()
    body = request_der(certificate, tier.deployment.ca.certificate)
    before = tier.counters()["origin_requests"]
    answers = [fetch(tier.cache_url, "/", "POST", body) for _ in range(2)]
    assert [a.ocsp_status() for a in answers] == ["good", "good"]
    assert [a.cache for a in answers] == ["PASS", "PASS"]
    assert tier.counters()["origin_requests"] - before == 2


def test_cached_answer_is_never_served_past_its_max_age(tier: Tier) -> None:
    """R12: the cache keeps an answer for its max-age and not a second longer (no grace)."""
    _, path, store = tier.good_certificate()
    refresh_at = int(time.time()) + 3
    store._connect().execute("UPDATE responses SET refresh_at = ?", (refresh_at,))
    store._connect().commit()
    first = fetch(tier.cache_url, path)
    assert first.cache == "MISS"
    max_age = first.max_age
    assert 1 <= max_age <= 3
    seen_hit = False
    while time.time() < refresh_at + 1.5:
        answer = fetch(tier.cache_url, path)
        if answer.cache == "HIT":
            seen_hit = True
            assert time.time() <= refresh_at + 1.0, "a HIT after the object's max-age ran out"
            assert int(answer.headers["age"]) <= max_age
        time.sleep(0.1)
    assert seen_hit
    assert fetch(tier.cache_url, path).cache != "HIT"


def test_misses_go_only_to_ready_origins(tier: Tier) -> None:
    """A responder that is not ready (here: draining) gets no misses; the other takes them."""
    deployment = tier.deployment
    second_port = free_port()
    drain = deployment.dir / "drain"
    config = deployment.dir / "second.toml"
    config.write_text(
        deployment.config_path.read_text()
        .replace(f'127.0.0.1:{deployment.port}"', f'127.0.0.1:{second_port}"', 1)
        .replace("run_signer = true", f'run_signer = false\ndrain_file = "{drain}"')
    )
    second = start_serve(config, f"http://127.0.0.1:{second_port}/")
    varnish = LocalVarnish(deployment.dir.parent / "varnish2")
    try:
        state = varnish.up([f"127.0.0.1:{deployment.port}", f"127.0.0.1:{second_port}"])
        wait_healthy(varnish, {"origin0": True, "origin1": True})
        paths = [tier.good_certificate()[1] for _ in range(8)]
        origins = {fetch(state.url, p).headers["x-origin"] for p in paths[:4]}
        assert origins == {"origin0", "origin1"}  # both used while both are ready
        drain.touch()
        wait_healthy(varnish, {"origin0": True, "origin1": False})
        answers = [fetch(state.url, p) for p in paths[4:]]
        assert {a.cache for a in answers} == {"MISS"}
        assert {a.headers["x-origin"] for a in answers} == {"origin0"}
        assert {a.ocsp_status() for a in answers} == {"good"}
        drain.unlink()
        wait_healthy(varnish, {"origin0": True, "origin1": True})
    finally:
        varnish.down()
        stop(second)


def undelivered(store, serial: int) -> int:
    """Purges for serial that are ready (its new response is stored) and not yet delivered."""
    (count,) = (
        store._connect()
        .execute(
            "SELECT count(*) FROM purges p WHERE p.serial = ? AND p.ready_at IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM purge_deliveries d WHERE d.purge_id = p.id)",
            (format(serial, "x"),),
        )
        .fetchone()
    )
    return int(count)


def varnish_child(varnish: LocalVarnish) -> int:
    state = varnish.state()
    assert state is not None
    children = subprocess.run(
        ["pgrep", "-P", str(state.pid)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert len(children) == 1
    return int(children[0])


def test_purge_is_kept_while_the_cache_hangs_and_delivered_after(tier: Tier) -> None:
    """A purge that cannot be delivered stays queued in the database, across a restart of the
    purging process, and lands when the cache answers again."""
    certificate, path, store = tier.good_certificate()
    fetch(tier.cache_url, path)
    assert fetch(tier.cache_url, path).cache == "HIT"
    child = varnish_child(tier.varnish)
    os.kill(child, signal.SIGSTOP)
    try:
        tier.revoke_and_wait_at_origin(certificate, path, store, "keyCompromise")
        assert undelivered(store, certificate.serial_number) == 1
        tier.restart_origin()  # the purger restarts with it; the queue is in the database
        assert undelivered(store, certificate.serial_number) == 1
    finally:
        os.kill(child, signal.SIGCONT)
    deadline = time.monotonic() + 15
    while fetch(tier.cache_url, path).ocsp_status() != "revoked":
        assert time.monotonic() < deadline, "the queued purge was never delivered"
        time.sleep(0.1)
    while undelivered(store, certificate.serial_number):  # recorded just after it lands
        assert time.monotonic() < deadline, "the delivered purge was never recorded"
        time.sleep(0.1)


def test_purge_issued_while_the_cache_is_stopped_is_delivered_after_it_starts(
    tier: Tier,
) -> None:
    certificate, path, store = tier.good_certificate()
    state = tier.varnish.state()
    assert state is not None
    port = int(state.listen.rsplit(":", 1)[1])
    tier.varnish.down()
    tier.revoke_and_wait_at_origin(certificate, path, store, "superseded")
    assert undelivered(store, certificate.serial_number) == 1
    tier.varnish.up([f"127.0.0.1:{tier.deployment.port}"], port)
    deadline = time.monotonic() + 45  # the purger backs off to at most 30 s between attempts
    while undelivered(store, certificate.serial_number):
        assert time.monotonic() < deadline, "the queued purge was never delivered"
        time.sleep(0.2)
    delivered = store._connect().execute(
        "SELECT cache, pass FROM purge_deliveries d JOIN purges p ON p.id = d.purge_id "
        "WHERE p.serial = ?",
        (format(certificate.serial_number, "x"),),
    )
    assert delivered.fetchall() == [("edge", 0)]


TAG_API = """
[[caches]]
name = "cdn"
kind = "tag-api"
url = "{url}"
token_env = "CERTSTATUS_TEST_CDN_TOKEN"
"""


def test_tag_api_purge_through_a_cdn_stand_in(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The CDN-shaped client purges through the stand-in's API, which acts on a real Varnish;
    rate limits (429 + Retry-After) and 5xx answers are retried until the purge lands."""
    cache_port = free_port()
    forward = VarnishPurger("edge", f"http://127.0.0.1:{cache_port}/")
    with TagPurgeStandIn("s3cret", forward) as standin:
        caches = TAG_API.format(url=standin.url).replace("{", "{{").replace("}", "}}")
        with cache_tier(
            postgres_dir(tmp_path_factory, "cdn"),
            caches,
            {"CERTSTATUS_TEST_CDN_TOKEN": "s3cret"},
            cache_port,
        ) as tier:
            certificate, path, store = tier.good_certificate()
            fetch(tier.cache_url, path)
            assert fetch(tier.cache_url, path).cache == "HIT"
            deadline = time.monotonic() + 15
            while (backlog := store.purge_backlog()).unready or backlog.pending:  # a CRL's
                assert time.monotonic() < deadline, "earlier purges never delivered"
                time.sleep(0.1)
            standin.fail_next([429, 503])  # now only the revocation's purge meets them
            tier.deployment.ingest(store).revoke(
                "demo", certificate.serial_number, "keyCompromise", int(time.time())
            )
            deadline = time.monotonic() + 15
            while fetch(tier.cache_url, path).ocsp_status() != "revoked":
                assert time.monotonic() < deadline, "the purge never went through the stand-in"
                time.sleep(0.1)
    key = f"cs-i1-s{certificate.serial_number:x}"
    attempts = [status for status, tags in standin.received if key in tags]
    assert attempts[:3] == [429, 503, 200]


def test_tag_api_client_reports_refusals() -> None:
    forward = VarnishPurger("nowhere", "http://127.0.0.1:9/")
    with TagPurgeStandIn("right", forward) as standin:
        with pytest.raises(PurgeError, match="refused the purge \\(403\\)"):
            TagApiPurger("cdn", standin.url, "wrong").purge(["cs-i1"])
        with pytest.raises(PurgeError, match="answered 502"):
            TagApiPurger("cdn", standin.url, "right").purge(["cs-i1"])  # Varnish unreachable
        standin.fail_next([429])
        with pytest.raises(PurgeError) as raised:
            TagApiPurger("cdn", standin.url, "right").purge(["cs-i1"])
        assert raised.value.retry_after == 0
