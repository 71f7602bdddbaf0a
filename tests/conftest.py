"""Shared fixtures: a real CA in a temp dir, its config, a SQLite store, and a served responder."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from certstatus.config import Config, IssuerMaterial, load_config, load_issuer_material
from certstatus.crlbuilder import CrlService
from certstatus.demo.ca import DemoCA, write_key, write_pem
from certstatus.ingest import Ingest
from certstatus.ports import free_port
from certstatus.signer import Signer
from certstatus.store import open_store
from certstatus.store.sqlite import SqliteStore

CONFIG = """\
database = "certstatus.db"

[responder]
listen = "127.0.0.1:{port}"
run_signer = {run_signer}

[signing]
workers = 1

[crl]
period = "1d"
validity = "7d"
debounce = "5m"
jitter = "1h"

[[issuers]]
name = "demo"
certificate = "issuer.pem"
responder_certificate = "responder.pem"
responder_key = "responder.key"
issuer_key = "issuer.key"
crl_url = "http://127.0.0.1:{port}/crl/{{issuer}}/{{partition}}.crl"
crl_partitions = {partitions}
"""


def fresh_now(**derived: Callable[[int], int]) -> Callable[..., None]:
    """An autouse fixture for a module whose NOW (and constants derived from it, by name) is
    when each test starts, not when the module was collected: certificates are made at test
    time (notBefore 5 minutes back) and revoked just after it, which a NOW from collection put
    in the future once the suite ran slow (seen in CI under load)."""

    @pytest.fixture(autouse=True)
    def now_at_test_start(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
        now = int(time.time())
        monkeypatch.setattr(request.module, "NOW", now)
        for name, derive in derived.items():
            monkeypatch.setattr(request.module, name, derive(now))

    return now_at_test_start


@dataclass
class Deployment:
    """A configured single-issuer deployment in a directory, as an operator would have it."""

    dir: Path
    ca: DemoCA
    port: int
    leaf_key: ec.EllipticCurvePublicKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1()).public_key()
    )
    _serial: int = 0x1000

    @property
    def config_path(self) -> Path:
        return self.dir / "certstatus.toml"

    @property
    def config(self) -> Config:
        return load_config(self.config_path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def materials(self) -> list[IssuerMaterial]:
        return load_issuer_material(self.config)

    def store(self) -> SqliteStore:
        store = open_store(self.config.database, self.config.base_dir)
        assert isinstance(store, SqliteStore)
        return store

    def ingest(self, store: SqliteStore | None = None) -> Ingest:
        return Ingest(store or self.store(), self.materials())

    def signer(self, store: SqliteStore, processes: int = 1, clock=time.time) -> Signer:
        ingest = Ingest(store, self.materials())
        ids = {m.name: ingest.issuer_id(m.name) for m in self.materials()}
        return Signer(store, self.materials(), ids, self.config.signing, clock, processes)

    def crl_service(self, store: SqliteStore, clock=time.time) -> CrlService:
        materials = self.materials()
        ingest = Ingest(store, materials)
        return CrlService(
            store, [(ingest.issuer_id(m.name), m) for m in materials], self.config.crl, clock
        )

    def leaf(self, precertificate: bool = False, serial: int | None = None) -> x509.Certificate:
        if serial is None:
            self._serial += 0x10001
            serial = self._serial
        return self.ca.leaf(self.leaf_key, serial, self.url, precertificate=precertificate)

    def good_and_revoked(self, store: SqliteStore) -> tuple[x509.Certificate, x509.Certificate]:
        """Two certificates ingested and signed, the second revoked (keyCompromise)."""
        ingest = self.ingest(store)
        good, bad = self.leaf(), self.leaf()
        ingest.add_certificates([(good, "g"), (bad, "b")], int(time.time()))
        ingest.revoke("demo", bad.serial_number, "keyCompromise", int(time.time()))
        with self.signer(store) as signer:
            signer.sign_due()
        return good, bad

    def write_leaf(self, certificate: x509.Certificate) -> Path:
        path = self.dir / f"{certificate.serial_number:x}.pem"
        write_pem(path, certificate)
        return path


def make_deployment(directory: Path, run_signer: bool = False, partitions: int = 1) -> Deployment:
    directory.mkdir(parents=True, exist_ok=True)
    ca = DemoCA.create()
    responder, key = ca.responder()
    write_pem(directory / "issuer.pem", ca.certificate)
    write_key(directory / "issuer.key", ca.key)
    write_pem(directory / "responder.pem", responder)
    write_key(directory / "responder.key", key)
    port = free_port()
    (directory / "certstatus.toml").write_text(
        CONFIG.format(port=port, run_signer=str(run_signer).lower(), partitions=partitions)
    )
    return Deployment(directory, ca, port)


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    return make_deployment(tmp_path / "ca")


def postgres_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A temp dir the postgres user (or Varnish's unprivileged child) can reach: pytest's own
    directories are made traversable, never the system temp dir itself (its sticky,
    world-writable mode must stay)."""
    directory = tmp_path_factory.mktemp(name)
    system = {Path(tempfile.gettempdir()).resolve(), Path("/")}
    path = directory
    while path.resolve() not in system:
        path.chmod(0o755)
        path = path.parent
    return directory


def wait_ready(url: str, process: subprocess.Popen | None = None, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url + "readyz", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} not ready in {timeout}s")


@contextmanager
def serving(deployment: Deployment) -> Iterator[subprocess.Popen[bytes]]:
    """`certstatus serve` for the deployment: a real HTTP server on loopback, stopped after."""
    process = subprocess.Popen(
        [sys.executable, "-m", "certstatus.cli", "serve", "--config", str(deployment.config_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(deployment.url, process)
        yield process
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if it has not stopped within 15 s."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# One storage fixture over both engines ---------------------------------------------------------
# `engine` runs a test once on a SQLite file and once on a fresh PostgreSQL database of a real
# server (started once per session, as `certstatus cluster up` would); the PostgreSQL run carries
# the integration marker. Tests write against the role interfaces, never against an engine.


class EngineDeployment(Deployment):
    """A Deployment whose database may be either engine: store() opens whichever it names,
    and every store it opened is closed when the test ends (a server's connections are few)."""

    engine: str = "sqlite"
    opened: list | None = None

    def store(self):  # type: ignore[override]
        store = open_store(self.config.database, self.config.base_dir)
        if self.opened is None:
            self.opened = []
        self.opened.append(store)
        return store


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL primary (no replicas) for the session; yields its admin URL."""
    from certstatus.cluster.local import Cluster

    running = Cluster.up(postgres_dir(tmp_path_factory, "engine") / "cluster", replicas=0)
    try:
        yield running.primary.url.rsplit("/", 1)[0] + "/postgres"
    finally:
        running.down()


def _fresh_postgres_database(admin_url: str) -> str:
    """A new empty database on the server, as a new SQLite file is: every test its own."""
    import uuid

    import psycopg

    name = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    return admin_url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EngineDeployment]:
    """A configured deployment on SQLite, then on PostgreSQL (the same tests, both engines)."""
    built = make_deployment(tmp_path / "ca")
    deployment = EngineDeployment(built.dir, built.ca, built.port)
    deployment.engine = request.param
    if request.param == "postgres":
        url = _fresh_postgres_database(request.getfixturevalue("postgres_server"))
        text = deployment.config_path.read_text()
        deployment.config_path.write_text(
            text.replace('database = "certstatus.db"', f'database = "{url}"')
        )
    yield deployment
    for store in deployment.opened or []:
        store.close()
