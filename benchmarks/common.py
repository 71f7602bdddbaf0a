"""Helpers shared by the benchmarks: a deployment in a temp dir, fast bulk ingest, openssl speed."""

from __future__ import annotations

import datetime as dt
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from certstatus.demo.ca import DemoCA, responder_builder, write_key, write_pem
from certstatus.store.base import AuditContext, CertificateRecord

CONFIG = """\
database = "certstatus.db"

[responder]
listen = "127.0.0.1:{port}"
workers = {workers}
server = "{server}"
run_signer = false

[signing]
workers = {signers}
batch_size = 256

[[issuers]]
name = "bench"
certificate = "issuer.pem"
responder_certificate = "responder.pem"
responder_key = "responder.key"
"""


def make_deployment(
    directory: Path,
    key_type: str = "p256",
    port: int = 0,
    workers: int = 2,
    server: str = "uvicorn",
    signers: int = 2,
    ca: DemoCA | None = None,
) -> Path:
    """Write a CA, a responder with a P-256 or RSA-2048 key, and a config; return the config.
    Pass ca to keep its key: a benchmark that issues real certificates needs it."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = ca or DemoCA.create("bench CA")
    now = dt.datetime.now(dt.UTC)
    key = (
        ec.generate_private_key(ec.SECP256R1())
        if key_type == "p256"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    responder = responder_builder(
        ca,
        key,
        now - dt.timedelta(minutes=5),
        now + dt.timedelta(days=365),
    ).sign(ca.key, hashes.SHA256())
    write_pem(directory / "issuer.pem", ca.certificate)
    write_pem(directory / "responder.pem", responder)
    write_key(directory / "responder.key", key)
    config = directory / "certstatus.toml"
    config.write_text(CONFIG.format(port=port, workers=workers, server=server, signers=signers))
    return config


def bulk_records(issuer_id: int, count: int, seed: int = 1) -> list[CertificateRecord]:
    """Certificate records without building X.509 certificates: ingest's checks are not what a
    serving or signing benchmark measures."""
    rng = random.Random(seed)
    not_after = int(time.time()) + 90 * 86400
    return [
        CertificateRecord(issuer_id, rng.getrandbits(127) | (1 << 64), "cert", not_after)
        for _ in range(count)
    ]


def record_serials(
    store: Any,
    issuer_id: int,
    serials: list[int],
    actor: str,
    chunk: int = 50_000,
    recorded: Callable[[int], None] | None = None,
) -> None:
    """Record serials as the records `certstatus add` writes (audit entries included), without
    X.509 certificates, `chunk` per add_certificates call; recorded(count so far) after each."""
    not_after = int(time.time()) + 90 * 86400
    audit = AuditContext(actor)
    for start in range(0, len(serials), chunk):
        records = [
            CertificateRecord(issuer_id, serial, "cert", not_after)
            for serial in serials[start : start + chunk]
        ]
        result = store.add_certificates(records, int(time.time()), audit)
        assert result.added == len(records), result
        if recorded is not None:
            recorded(start + len(records))


def leaf_pem_batches(
    ca: DemoCA, serials: list[int], batch: int = 10_000
) -> Iterator[tuple[list[int], bytes]]:
    """Real leaf certificates signed by ca, as multi-PEM blobs of `batch` certificates (what
    `certstatus add` reads). One subscriber key and one template for all of them: building a
    certificate costs ~140 us this way against ~290 us with DemoCA.leaf, and ingest's checks
    (parse, leaf profile, issuer signature) do the same work either way."""
    assert ca.key is not None
    now = dt.datetime.now(dt.UTC)
    template = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scale.invalid")]))
        .issuer_name(ca.certificate.subject)
        .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    for start in range(0, len(serials), batch):
        chunk = serials[start : start + batch]
        pem = b"".join(
            template.serial_number(serial)
            .sign(ca.key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
            for serial in chunk
        )
        yield chunk, pem


def random_serials(count: int, seed: int = 1, avoid: set[int] | None = None) -> list[int]:
    """count distinct positive serials of up to 128 bits, as a CA draws them (none in avoid)."""
    rng = random.Random(seed)
    seen = set(avoid or ())
    serials: list[int] = []
    while len(serials) < count:
        serial = rng.getrandbits(127) | (1 << 64)
        if serial not in seen:
            seen.add(serial)
            serials.append(serial)
    return serials


def openssl_speed(algorithm: str, multi: int = 2, seconds: int = 5) -> float:
    """Signatures per second from `openssl speed -mr -multi N`, all processes together."""
    out = subprocess.run(
        ["openssl", "speed", "-mr", "-multi", str(multi), "-seconds", str(seconds), algorithm],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # the combined machine-readable line: +F<kind>:<index>:<bits>:<sign/s>:<verify/s>
    totals = [line for line in out.splitlines() if line.startswith("+F")]
    if not totals:
        raise RuntimeError(f"cannot read openssl speed output: {out[-400:]}")
    return float(totals[-1].split(":")[3])


def open_bench(config_path: Path) -> tuple[Any, list[Any], Any, str, int]:
    """A benchmark deployment opened for recording and signing: its config, issuer material,
    store, and its one issuer's name and id (the caller closes the store)."""
    from certstatus.config import load_config, load_issuer_material
    from certstatus.ingest import Ingest
    from certstatus.store import open_store

    config = load_config(config_path)
    materials = load_issuer_material(config)
    store = open_store(config.database, config.base_dir)
    ingest = Ingest(store, materials)
    [name] = ingest.issuer_names
    return config, materials, store, name, ingest.issuer_id(name)


def set_sha256(store: Any, sha256: str, actor: str) -> None:
    """`certstatus response-format --sha256 pregenerate|on-request` for a benchmark's store."""
    from certstatus.store.base import AuditContext, ResponseFormat

    wanted = ResponseFormat(True, sha256_on_request=sha256 == "on-request")
    store.set_response_format(wanted, AuditContext(actor), int(time.time()))
