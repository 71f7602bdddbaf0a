"""The demo: create a CA in a directory (or reuse it), issue, sign, serve, keep signing."""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from certstatus.cache.varnish import free_port
from certstatus.config import Config, load_config
from certstatus.demo.ca import DemoCA, write_key, write_pem
from certstatus.files import PRIVATE, write_file
from certstatus.ingest import Ingest
from certstatus.ocsp.reasons import ALLOWED
from certstatus.store import Store, open_store
from certstatus.wiring import crl_service, register_issuers, register_public

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

    @property
    def api_sample(self) -> Path:
        return self.dir / "certs" / "api-sample.pem"


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


PKCS11_TEMPLATE = """
# `demo --pkcs11`: both keys live in a SoftHSM2 token in hsm/ (SOFTHSM2_CONF=hsm/softhsm2.conf);
# the user PIN is read from token.pin (mode 0600), never written here
[pkcs11]
module = "{module}"
pin_file = "token.pin"
"""


def use_demo_token(files: DemoFiles) -> bool:
    """Point SoftHSM2 at the demo's token (for this process and the server it spawns);
    whether the demo directory has one."""
    conf = files.dir / "hsm" / "softhsm2.conf"
    if conf.exists():
        os.environ["SOFTHSM2_CONF"] = str(conf)
        return True
    return False


def create_in_token(files: DemoFiles) -> tuple[DemoCA, str, str, str]:
    """A SoftHSM2 token in the demo directory holding the CA and responder keys (generated
    there, not extractable); the CA and responder certificates are signed in it. Returns the
    CA, the [pkcs11] table, and the CA and responder key URIs."""
    import secrets

    from cryptography.hazmat.primitives.serialization import load_der_public_key

    from certstatus.demo.softhsm import create_token, softhsm_module
    from certstatus.keys.pkcs11 import Pkcs11Key
    from certstatus.keys.token_admin import generate_key
    from certstatus.keys.uri import TokenAccess

    pin = secrets.token_hex(8)
    write_file(files.dir / "token.pin", pin.encode(), PRIVATE)
    create_token(files.dir / "hsm", "certstatus-demo", pin, secrets.token_hex(8))
    use_demo_token(files)
    access = TokenAccess(softhsm_module(), pin_file=files.dir / "token.pin")
    ca_uri = generate_key(access, "certstatus-demo", "ca", "p256")
    responder_uri = generate_key(access, "certstatus-demo", "responder", "p256")
    ca = DemoCA.in_token(Pkcs11Key(ca_uri, access))
    responder = ca.responder_for(
        load_der_public_key(Pkcs11Key(responder_uri, access).public_key_der())
    )
    write_pem(files.dir / "issuer.pem", ca.certificate)
    write_pem(files.dir / "responder.pem", responder)
    return ca, PKCS11_TEMPLATE.format(module=access.module), str(ca_uri), str(responder_uri)


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
    pkcs11: bool = False,
) -> Config:
    """Create the CA, responder, config and database, and ingest `count` leaves.

    1% are revoked (at least one when there are two or more), cycling through every allowed
    reason; the revoked ones and a sample of good ones are written out, spread over every CRL
    partition so each partition's CRL has something on it and each can be checked."""
    # others may pass through (Varnish's unprivileged child reads its VCL under it) but not
    # list it; keys, database and configuration are 0600 themselves
    files.dir.mkdir(mode=0o711, parents=True, exist_ok=True)
    files.revoked.mkdir(parents=True, exist_ok=True)
    text = CONFIG_TEMPLATE.format(listen=listen, monitor_listen=f"127.0.0.1:{free_port()}")
    if pkcs11:
        ca, table, ca_uri, responder_uri = create_in_token(files)
        text = text.replace('responder_key = "responder.key"', f'responder_key = "{responder_uri}"')
        text = text.replace('issuer_key = "issuer.key"', f'issuer_key = "{ca_uri}"') + table
    else:
        ca = DemoCA.create()
        responder, responder_key = ca.responder()
        write_pem(files.dir / "issuer.pem", ca.certificate)
        assert ca.key is not None
        write_key(files.dir / "issuer.key", ca.key)
        write_pem(files.dir / "responder.pem", responder)
        write_key(files.dir / "responder.key", responder_key)
    if cache:
        text += CACHE_TEMPLATE.format(cache=f"127.0.0.1:{free_port()}", listen=listen)
    write_file(files.config, text.encode(), PRIVATE)
    config = load_config(files.config)

    materials, _ = register_public(config)  # recording needs no key
    store = open_store(config.database, config.base_dir)
    ingest = Ingest(store, materials)
    now = int(time.time())
    leaf_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    url = f"http://{listen}/"
    revoked_at = revoked_indices(count)
    # a few precertificates with no final certificate (F2), never a revoked one: its sample
    # file must verify with openssl, which refuses the critical CT poison
    precert_every = count // 5 if count >= 10 else 0
    pending: list[tuple[x509.Certificate, str]] = []
    issued_at = dt.datetime.now(dt.UTC)
    [material] = materials
    layout = material.crl
    assert layout is not None
    samples = 0
    for n in range(count):
        revoked = n in revoked_at
        precert = not revoked and precert_every > 0 and n % precert_every == precert_every - 1
        sample = not revoked and not precert and samples < SAMPLE_GOOD
        serial = _serial(n)
        if revoked:  # the k-th revoked one in partition k (mod partitions): none left empty
            serial = in_partition(serial, revoked_at[n] % layout.partitions, layout.partitions)
        elif sample:
            serial = in_partition(serial, samples % layout.partitions, layout.partitions)
            samples += 1
        cdp = layout.url(layout.partition_for_serial(serial))
        leaf = ca.leaf(leaf_key, serial, url, precertificate=precert, now=issued_at, crl_url=cdp)
        pending.append((leaf, f"leaf {n}"))
        if revoked:
            write_pem(files.revoked / f"{leaf.serial_number:x}.pem", leaf)
        elif sample:
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
    # one more leaf, issued but not recorded: the printed curl commands record and revoke it
    serial = _serial(count)
    cdp = layout.url(layout.partition_for_serial(serial))
    write_pem(files.api_sample, ca.leaf(leaf_key, serial, url, now=issued_at, crl_url=cdp))
    return config


API_TEMPLATE = """
# the issuance API (`certstatus api`): mutual TLS; the demo client may record, revoke, read
[api]
listen = "{api_listen}"
certificate = "api-server.pem"
private_key = "api-server.key"
client_ca = "api-ca.pem"

[[api.clients]]
name = "demo-client"
spki_sha256 = "{spki}"
permissions = ["record", "revoke", "read"]
"""


def ensure_api(files: DemoFiles, api_listen: str) -> Config:
    """The demo's issuance API PKI and [api] table, created once (a directory made by an
    older demo gets them on its next run): api-ca.pem verifies the server, api-client.pem and
    api-client.key (mode 0600 from creation) are a client allowed everything."""
    from certstatus.api.auth import spki_sha256
    from certstatus.demo.apipki import ApiCA, write_certificate, write_secret_key

    config = load_config(files.config)
    if config.api.clients:
        return config
    host, _ = parse_listen(api_listen)
    ca = ApiCA.create()
    server, server_key = ca.server([host, "localhost"] if host != "localhost" else [host])
    client, client_key = ca.client("demo-client")
    write_certificate(files.dir / "api-ca.pem", ca.certificate)
    write_certificate(files.dir / "api-server.pem", server)
    write_secret_key(files.dir / "api-server.key", server_key)
    write_certificate(files.dir / "api-client.pem", client)
    write_secret_key(files.dir / "api-client.key", client_key)
    with files.config.open("a") as handle:
        handle.write(API_TEMPLATE.format(api_listen=api_listen, spki=spki_sha256(client)))
    return load_config(files.config)


def curl_commands(files: DemoFiles, config: Config) -> list[tuple[str, str]]:
    """(label, command) pairs: record a certificate over the API, then revoke it."""
    sample = files.api_sample if files.api_sample.exists() else None
    if sample is None:
        found = sorted(files.certs.glob("*.pem"))
        if not found:
            return []
        sample = found[0]
    d = files.dir
    tls = f"--cacert {d / 'api-ca.pem'} --cert {d / 'api-client.pem'} --key {d / 'api-client.key'}"
    url = f"https://{config.api.listen}/v1"
    serial = f"{x509.load_pem_x509_certificate(sample.read_bytes()).serial_number:x}"
    body = f'{{"issuer": "demo", "serial": "{serial}", "reason": "keyCompromise"}}'
    return [
        (
            "record a certificate over the issuance API:",
            f"curl -sS {tls} -H 'Content-Type: application/x-pem-file' --data-binary @{sample} "
            f"'{url}/certificates?wait=authoritative&timeout=10s'",
        ),
        (
            "revoke it:",
            f"curl -sS {tls} -H 'Content-Type: application/json' -d '{body}' {url}/revocations",
        ),
    ]


def revoked_indices(count: int) -> dict[int, int]:
    """Which of `count` leaves are revoked (index -> k, the k-th revoked): 1%, evenly spaced,
    and at least one whenever a good one is left beside it."""
    total = max(1, count // 100) if count >= 2 else 0
    if total == 0:
        return {}
    step = count // total
    return {k * step + step // 2: k for k in range(total)}


def in_partition(serial: int, partition: int, partitions: int) -> int:
    """`serial` moved by less than `partitions` so that it falls in `partition` (the layout
    assigns serial mod partitions); the random high bits keep it distinct."""
    return serial - serial % partitions + partition


def _serial(n: int) -> int:
    """Distinct, positive serials with the top bit set in some, so DER sign handling is exercised."""
    import secrets

    return (secrets.randbits(120) << 16) | (n & 0xFFFF) | (1 << 135 if n % 3 == 0 else 0)


def crl_command(files: DemoFiles) -> str | None:
    """Fetch the CRL a revoked demo certificate names in its CDP and check it with OpenSSL;
    the fetched CRL is kept inside the demo directory. None when nothing is revoked."""
    sample = sorted(files.revoked.glob("*.pem"))
    if not sample:
        return None
    cert, fetched = sample[0], files.dir / "fetched.crl.pem"
    return (
        f"curl -s $(openssl x509 -in {cert} -noout -ext crlDistributionPoints | grep -o 'http.*')"
        f" | openssl crl -inform DER -out {fetched} && openssl verify -crl_check "
        f"-CAfile {files.dir / 'issuer.pem'} -CRLfile {fetched} {cert}"
    )


def openssl_command(
    files: DemoFiles, listen: str, revoked: bool = False, store: Store | None = None
) -> str | None:
    """An `openssl ocsp` command checking a sample certificate; None when there is none. With
    the store, the sample is one whose status still matches its folder: in a reused directory
    a "good" sample may have been revoked since."""
    folder = files.revoked if revoked else files.certs
    sample = [path for path in sorted(folder.glob("*.pem")) if path != files.api_sample]
    if store is not None:
        sample = [path for path in sample if _revoked(store, path) is revoked]
    if not sample:
        return None
    return (
        f"openssl ocsp -issuer {files.dir / 'issuer.pem'} -cert {sample[0]} "
        f"-url http://{listen}/ -CAfile {files.dir / 'issuer.pem'} -no_nonce -resp_text"
    )


def _revoked(store: Store, path: Path) -> bool | None:
    """The recorded status of a sample certificate file (None: not recorded)."""
    certificate = x509.load_pem_x509_certificate(path.read_bytes())
    for issuer in store.issuers():
        row = store.certificate(issuer.id, certificate.serial_number)
        if row is not None:
            return bool(row.revoked)
    return None


class DemoError(ValueError):
    """A demo that cannot start as asked; nothing was written."""


def parse_listen(listen: str) -> tuple[str, int]:
    """`--listen` as (host, port), refused as the configuration would refuse it."""
    host, _, port_text = listen.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise DemoError(f'--listen: expected "host:port", e.g. "127.0.0.1:8080", got {listen!r}')
    return host.strip("[]"), int(port_text)


def check_listen(listen: str) -> None:
    """Refuse a --listen the demo could not serve on, before anything is written: a directory
    created with it would otherwise stay tied to an address it can never use."""
    from certstatus.responder.server import listen_problem

    host, port = parse_listen(listen)
    problem = listen_problem(host, port)
    if problem is not None:
        raise DemoError(f"--listen {listen}: {problem}")


@dataclass(frozen=True)
class Terminal:
    """Where the demo speaks: `say` for the operator (stderr), `show` for commands to paste
    (stdout), `progress(total, label)` a context giving an advance(n) callable."""

    say: Callable[[str], None]
    show: Callable[[str], None]
    progress: Callable[[int, str], AbstractContextManager[Callable[[int], None]]]


def run_demo(
    directory: Path,
    listen: str,
    count: int,
    cache: bool,
    term: Terminal,
    api_listen: str = "127.0.0.1:8443",
    pkcs11: bool = False,
) -> None:
    """Create (or reuse) the demo in `directory`, sign everything, print how to check it, and
    serve OCSP, CRLs, the issuance API and the monitor's status page until interrupted."""
    from certstatus.cache.varnish import LocalVarnish
    from certstatus.responder.server import ensure_listen_address_free
    from certstatus.signer import Signer

    files = DemoFiles(directory.resolve())
    if files.dir.exists() and not files.dir.is_dir():
        raise DemoError(f"--dir: {files.dir} exists and is not a directory; choose another --dir")
    if use_demo_token(files):
        term.say(f"keys in the SoftHSM2 token in {files.dir / 'hsm'}")
    elif pkcs11 and files.config.exists():
        term.say(f"note: {files.dir} was created without --pkcs11; its keys are PEM files")
    if files.config.exists():
        config = load_config(files.config)
        term.say(f"reusing {files.dir}")
        configured = f"{config.responder.listen_host}:{config.responder.listen_port}"
        if configured != listen:
            term.say(
                f"note: {files.dir} was made to serve on {configured}; serving there "
                f"(--listen {listen} applies to a new --dir)"
            )
            listen = configured
        check_listen(listen)
        if config.api.clients:
            if config.api.listen != api_listen:
                term.say(
                    f"note: {files.dir} was made with its issuance API on {config.api.listen}; "
                    f"serving it there (--api-listen {api_listen} applies to a new --dir)"
                )
            api_listen = config.api.listen
        check_listen(api_listen)
    else:
        check_listen(listen)
        check_listen(api_listen)
        with term.progress(count, "issuing") as advance:
            config = create(files, listen, count, advance, cache, pkcs11)
    config = ensure_api(files, api_listen)
    materials, ids = register_issuers(config)
    store = open_store(config.database, config.base_dir)
    total = sum(store.due_count(int(time.time())).values())
    with (
        term.progress(total, "signing") as advance,
        Signer(store, materials, ids, config.signing) as signer,
    ):
        signer.sign_due(progress=advance)
    crls = crl_service(store, materials, ids, config)
    built = crls.build_due()
    published = [i.layout.url(p) for i in crls.issuers for p in crls.partitions(i)]
    counts = store.counts()
    checks = (
        ("check a good certificate:", openssl_command(files, listen, store=store)),
        ("check a revoked one:", openssl_command(files, listen, revoked=True, store=store)),
    )
    store.close()
    term.say(
        f"{counts['certificates']} certificates ({counts['precertificates']} "
        f"precertificates only, {counts['revoked']} revoked) in {files.dir}"
    )
    for label, command in checks:
        if command is not None:
            term.say(label)
            term.show(command)
    term.say(f"CRLs ({len(built)} built now): " + " ".join(published))
    check_crl = crl_command(files)
    if check_crl is not None:
        term.say("check a revoked certificate against its CRL:")
        term.show(check_crl)
    for label, command in curl_commands(files, config):
        term.say(label)
        term.show(command)
    term.say(f"status page (the monitor): http://{config.monitor.listen}/")
    varnish = LocalVarnish(files.dir / "varnish")
    cache_port = local_cache_port(config)
    if cache and cache_port is None:
        term.say(f"note: {files.config} has no local cache; not adding one")
    try:
        ensure_listen_address_free(config)  # taken meanwhile? say so before "serving"
        if cache_port is not None:
            varnish.down()  # one left behind by a killed demo
            state = varnish.up([listen], cache_port)
            term.say(f"cache (Varnish) on {state.url}, purged on revocation")
        term.say(f"issuance API on https://{config.api.listen}/v1/")
        term.say(f"serving OCSP and CRLs on http://{listen}/ — Ctrl-C stops")
        serve_apart(config)
    finally:
        varnish.down()


def serve_apart(config: Config) -> None:
    """Serve (responder, signing roles, monitor) from a freshly spawned interpreter and wait
    for it. This process created the CA and signed with both keys; the server forks its web
    workers from its own memory, so it must not be this process, or every worker would carry
    the keys' bytes (R25: web nodes hold no key). Ctrl-C reaches the whole process group: the
    server stops on it, and this process waits until it has."""
    import multiprocessing
    import signal

    process = multiprocessing.get_context("spawn").Process(
        target=_serve_spawned, args=(str(config.path), os.getpid()), name="demo server"
    )
    process.start()
    # A SIGTERM to this process alone (kill, a supervisor) stops the server as Ctrl-C does,
    # and this process waits for it: the server and its roles are never left running.
    told: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        told.append(signum)
        process.terminate()

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        while True:
            try:
                process.join()
                break
            except KeyboardInterrupt:
                continue  # the server got it too; wait for it to finish stopping
    finally:
        signal.signal(signal.SIGTERM, previous)
    # told to stop before its own handlers were in place, the server ends by the signal
    stopped = bool(told) and process.exitcode == -signal.SIGTERM
    if process.exitcode and not stopped:
        raise DemoError(f"the demo server stopped with status {process.exitcode} (see above)")


def _serve_spawned(config_path: str, parent: int) -> None:
    from certstatus.responder.server import CompanionDied, serve
    from certstatus.wiring import stop_when_orphaned

    stop_when_orphaned(parent)  # the demo killed outright: the server stops all the same
    try:
        serve(load_config(Path(config_path)), with_monitor=True, with_api=True)
    except KeyboardInterrupt:
        pass  # Ctrl-C: the server has stopped; nothing to report
    except CompanionDied as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
