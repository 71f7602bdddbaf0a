"""The issuance API's listener: uvicorn, one process, TLS with required client certificates.

Why uvicorn and not granian (the responder's server): the API must know, per request, which
verified client certificate the connection presented. granian verifies client certificates
(ssl_client_verify) but hands the application nothing about them; uvicorn's protocol sees the
asyncio TLS transport, whose ssl_object holds the certificate the handshake verified. A small
subclass of uvicorn's httptools protocol puts it into the request scope as the ASGI TLS
extension (scope["extensions"]["tls"]["client_cert_chain"]), so the app reads the identity the
TLS layer proved and nothing a client can spell in a header. The API's volume (the CA's own
systems) does not need granian's throughput; one process keeps the rate limits exact.

The TLS context is built here, not by uvicorn: TLS 1.2 at least (1.3 preferred by OpenSSL's
negotiation), CERT_REQUIRED against [api] client_ca. A connection without a client
certificate, with one from another CA, or an expired one fails its handshake: no request of it
ever reaches the app, so nothing is written.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from certstatus.config import Config, ConfigError

log = logging.getLogger("certstatus.api")


def tls_context(config: Config) -> ssl.SSLContext:
    """The server's TLS context: its certificate, client certificates required and verified."""
    api = config.api
    assert api.certificate and api.private_key and api.client_ca
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(api.certificate, api.private_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            [("api.certificate", f"cannot load {api.certificate} with {api.private_key}: {exc}")],
            config.path,
        ) from None
    try:
        context.load_verify_locations(cafile=api.client_ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            [("api.client_ca", f"cannot load {api.client_ca}: {exc}")], config.path
        ) from None
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _with_peer(app: Any, ssl_object: ssl.SSLObject | None) -> Any:
    """app with the connection's verified client certificate in every request's scope."""
    if ssl_object is None:
        return app
    der = ssl_object.getpeercert(binary_form=True)
    tls = {
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "tls_version": ssl_object.version(),
        "cipher_suite": (ssl_object.cipher() or ("",))[0],
    }

    async def with_peer(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = {**scope, "extensions": {**scope.get("extensions", {}), "tls": tls}}
        await app(scope, receive, send)

    return with_peer


class PeerCertificateProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, passing the verified client certificate to the app."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.app = _with_peer(self.app, transport.get_extra_info("ssl_object"))


class _Server(uvicorn.Server):
    """uvicorn's server; beside the demo's responder it leaves Ctrl-C (SIGINT to the whole
    process group) to the responder, which stops it with SIGTERM: stopping by itself first
    would look like a crashed companion and make the responder stop in a hurry."""

    ignore_sigint = False

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.ignore_sigint and sig == signal.SIGINT:
            return
        super().handle_exit(sig, frame)


def run_api(config: Config, app: Any, ignore_sigint: bool = False) -> None:
    """Serve the API until SIGINT/SIGTERM (uvicorn drains open requests)."""
    api = config.api
    problems = api.serving_problems()
    if problems:
        raise ConfigError([(f"api.{k}", m) for k, m in problems], config.path)
    context = None if api.insecure_loopback else tls_context(config)
    server_config = uvicorn.Config(
        app,
        host=api.listen_host,
        port=api.listen_port,
        http=PeerCertificateProtocol,
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=30,
        timeout_graceful_shutdown=10,
    )
    server_config.load()
    server_config.ssl = context  # ours, with the client verification uvicorn's would not do
    if context is None:
        log.warning("issuance API on plain HTTP (insecure_loopback) at %s", api.listen)
    server = _Server(server_config)
    server.ignore_sigint = ignore_sigint
    server.run()
