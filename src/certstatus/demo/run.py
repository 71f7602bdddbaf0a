"""The demo: create a CA in a directory (or reuse it), issue, sign, serve, keep signing."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from certstatus.cache.varnish import free_port
from certstatus.config import Config, load_config
from certstatus.demo.ca import DemoCA, write_key, write_pem
from certstatus.ingest import Ingest
from certstatus.ocsp.reasons import ALLOWED
from certstatus.store import open_store

SAMPLE_GOOD = 10
REASONS = list(ALLOWED)


@dataclass(frozen=True)
class DemoFiles:
    dir: Path

    @property
    def config(self) -> Path:
        return self.dir / "certstatus.toml"

    @property
    def certs(self) -> Path:
        return self.dir / "certs"

    @property
    def revoked(self) -> Path:
        return self.dir / "certs" / "revoked"


CONFIG_TEMPLATE = """\
# certstatus demo deployment: one SQLite file, one issuer, responder and signer in one process.
database = "certstatus.db"

[responder]
listen = "{listen}"
run_signer = true

[signing]
validity = "7d"
refresh_after = "3d"
backdate = "1h"
jitter = "6h"

[crl]
period = "24h"
validity = "7d"
debounce = "1m"

[[issuers]]
name = "demo"
certificate = "issuer.pem"
responder_certificate = "responder.pem"
responder_key = "responder.key"
issuer_key = "issuer.key"
# one template: the CDP in the demo certificates, the publish path, the IDP, the disclosure list
crl_url = "http://{listen}/crl/{{issuer}}/{{partition}}.crl"
crl_partitions = 2

[monitor]
# the outside view: status page and /metrics; it watches every new serial on the responder
listen = "{monitor_listen}"
"""


CACHE_TEMPLATE = """
# `demo --cache`: a local Varnish in front of the responder, purged on every revocation
[[caches]]
name = "local-varnish"
kind = "varnish"
url = "http://{cache}/"

# the monitor asks through the cache (as clients do) and the responder directly
[[monitor.targets]]
name = "cdn"
url = "http://{cache}/"
kind = "cdn"

[[monitor.targets]]
name = "origin"
url = "http://{listen}/"
"""


def local_cache_port(config: Config) -> int | None:
    """The port of the demo's own Varnish, if its config names one on loopback."""
    for cache in config.caches:
        host, _, port = cache.url.removeprefix("http://").rstrip("/").rpartition(":")
        if cache.kind == "varnish" and host == "127.0.0.1" and port.isdigit():
            return int(port)
    return None


def create(
    files: DemoFiles,
    listen: str,
    count: int,
    progress: Callable[[int], None] | None = None,
    cache: bool = False,
) -> Config:
    """Create the CA, responder, config and database, and ingest `count` leaves."""
    files.revoked.mkdir(parents=True, exist_ok=True)
    ca = DemoCA.create()
    responder, responder_key = ca.responder()
    write_pem(files.dir / "issuer.pem", ca.certificate)
    write_key(files.dir / "issuer.key", ca.key)
    write_pem(files.dir / "responder.pem", responder)
    write_key(files.dir / "responder.key", responder_key)
    text = CONFIG_TEMPLATE.format(listen=listen, monitor_listen=f"127.0.0.1:{free_port()}")
    if cache:
        text += CACHE_TEMPLATE.format(cache=f"127.0.0.1:{free_port()}", listen=listen)
    files.config.write_text(text)
    config = load_config(files.config)

    from certstatus.responder.server import register_issuers

    materials, _ = register_issuers(config)
    store = open_store(config.database, config.base_dir)
    ingest = Ingest(store, materials)
    now = int(time.time())
    leaf_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    url = f"http://{listen}/"
    revoke_every = 100  # 1% revoked
    precert_every = max(count // 5, 1)  # a few precertificates with no final certificate (F2)
    pending: list = []
    issued_at = dt.datetime.now(dt.UTC)
    [material] = materials
    layout = material.crl
    assert layout is not None
    for n in range(count):
        precert = n % precert_every == precert_every - 1
        serial = _serial(n)
        cdp = layout.url(layout.partition_for_serial(serial))
        leaf = ca.leaf(leaf_key, serial, url, precertificate=precert, now=issued_at, crl_url=cdp)
        pending.append((leaf, f"leaf {n}"))
        revoked = n % revoke_every == revoke_every // 2
        if revoked:
            write_pem(files.revoked / f"{leaf.serial_number:x}.pem", leaf)
        elif not precert and n < SAMPLE_GOOD * 2 and n % 2 == 0:
            write_pem(files.certs / f"{leaf.serial_number:x}.pem", leaf)
        if len(pending) >= 500 or n == count - 1:
            ingest.add_certificates(pending, now)
            pending = []
        if progress:
            progress(1)
    for index, path in enumerate(sorted(files.revoked.glob("*.pem"))):
        reason = REASONS[index % len(REASONS)]
        ingest.revoke("demo", int(path.stem, 16), reason, now)
    store.close()
    return config


def _serial(n: int) -> int:
    """Distinct, positive serials with the top bit set in some, so DER sign handling is exercised."""
    import secrets

    return (secrets.randbits(120) << 16) | (n & 0xFFFF) | (1 << 135 if n % 3 == 0 else 0)


def crl_command(files: DemoFiles) -> str:
    """Fetch the CRL a revoked demo certificate names in its CDP and check it with OpenSSL."""
    sample = sorted(files.revoked.glob("*.pem"))
    cert = sample[0] if sample else files.revoked / "SERIAL.pem"
    return (
        f"curl -s $(openssl x509 -in {cert} -noout -ext crlDistributionPoints | grep -o 'http.*')"
        f" | openssl crl -inform DER -out /tmp/demo.crl && openssl verify -crl_check "
        f"-CAfile {files.dir / 'issuer.pem'} -CRLfile /tmp/demo.crl {cert}"
    )


def openssl_command(files: DemoFiles, listen: str, revoked: bool = False) -> str:
    folder = files.revoked if revoked else files.certs
    sample = sorted(folder.glob("*.pem"))
    cert = sample[0] if sample else folder / "SERIAL.pem"
    return (
        f"openssl ocsp -issuer {files.dir / 'issuer.pem'} -cert {cert} "
        f"-url http://{listen}/ -CAfile {files.dir / 'issuer.pem'} -no_nonce -resp_text"
    )
