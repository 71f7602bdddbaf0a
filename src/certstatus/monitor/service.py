"""`certstatus monitor`: the outside view, run apart from the responders. Loops, each one
concern: the watchdog (new serials), the sampler (older serials), replication, CRLs, target
readiness; one book of findings; an HTTP server for the status page, /status.json and
/metrics; and, when configured, an Alertmanager webhook."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from certstatus.config import Config
from certstatus.keys.certificates import load_certificate
from certstatus.monitor import metrics as m
from certstatus.monitor import page
from certstatus.monitor.crls import CrlWatch, WatchedIssuer
from certstatus.monitor.findings import AlertmanagerWebhook, Findings
from certstatus.monitor.replication import ReplicationProbe
from certstatus.monitor.targets import Target, fetch
from certstatus.monitor.watchdog import Watchdog, WatchPolicy
from certstatus.store import open_store
from certstatus.store.base import StoreError

log = logging.getLogger("certstatus.monitor")


class Monitor:
    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        c = config.monitor
        self.store = open_store(config.database, config.base_dir)
        recorded = {r.name: r for r in self.store.issuers()}
        issuers = {}
        watched = []
        for issuer in config.issuers:  # certificates only: the monitor holds no key
            certificate = load_certificate(issuer.certificate)
            record = recorded.get(issuer.name)
            if record is None or record.certificate_der != certificate.public_bytes(Encoding.DER):
                log.warning("issuer %s is not in the database yet; not watched", issuer.name)
                continue
            issuers[record.id] = certificate
            if issuer.crl is not None:
                watched.append(WatchedIssuer(record.id, issuer.name, certificate, issuer.crl))
        self.targets = [Target(t.name, t.url, t.kind) for t in config.monitor_targets]
        self.findings = Findings(clock=clock)
        self.watchdog = Watchdog(
            self.store,
            issuers,
            self.targets,
            self.findings,
            WatchPolicy(
                warn_after=c.warn_after,
                critical_after=c.critical_after,
                checkpoints=tuple(float(x) for x in c.checkpoints),
                post_fraction=c.post_fraction,
                sample_size=c.sample_size,
            ),
            clock,
        )
        self.crls = CrlWatch(self.store, watched, self.findings, config.crl.period, clock)
        self.replication = None
        if config.is_postgres:
            self.replication = ReplicationProbe(
                self.store,  # type: ignore[arg-type]
                config.replicas,
                self.findings,
                config.responder.max_staleness,
            )
        self.ready: dict[str, bool | None] = {t.name: None for t in self.targets}
        self.webhook = AlertmanagerWebhook(c.webhook, f"http://{c.listen}/") if c.webhook else None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: ThreadingHTTPServer | None = None

    # loops -----------------------------------------------------------------------------------

    def _loop(self, name: str, interval: float, step: Callable[[], None]) -> None:
        while not self._stop.is_set():
            try:
                step()
            except StoreError as exc:
                log.error("%s: database unavailable: %s", name, exc)
            except Exception:
                log.exception("%s failed; continuing", name)
            self._stop.wait(interval)

    def watch_step(self) -> None:
        self.watchdog.poll_new()
        self.watchdog.check_due()
        self.watchdog.evaluate()
        self._publish()

    def readiness_step(self) -> None:
        for target in self.targets:
            if target.kind != "origin":
                continue
            ready = fetch(target.url.rstrip("/") + "/readyz", timeout=2).status == 200
            self.ready[target.name] = ready
            m.TARGET_READY.labels(target.name).set(1 if ready else 0)
        raised = [
            ("ResponderNotReady", name, "warning", f"{name} fails /readyz: no fresh source")
            for name, ready in self.ready.items()
            if ready is False
        ]
        self.findings.observe({"ResponderNotReady"}, raised)

    def _publish(self) -> None:
        active, _ = self.findings.snapshot()
        m.FINDINGS.clear()
        for finding in active:
            m.FINDINGS.labels(finding.kind, finding.severity).inc()
        if self.webhook is not None:
            self.webhook.push(self.findings, self.clock())

    def start(self) -> None:
        """Bind the status page first (a clear error if the port is taken), then the loops."""
        c = self.config.monitor
        host, _, port = c.listen.rpartition(":")
        try:
            self._server = ThreadingHTTPServer((host.strip("[]"), int(port)), _handler(self))
        except OSError as exc:
            raise SystemExit(
                f"monitor.listen: cannot listen on {c.listen}: {exc}; choose a free port"
            ) from None
        loops: list[tuple[str, float, Callable[[], None]]] = [
            ("watchdog", 0.5, self.watch_step),
            ("sampler", float(c.sample_every), self.watchdog.sample_known),
            ("readiness", 1.0, self.readiness_step),
            ("crls", float(c.crl_every), self.crls.check),
        ]
        if self.replication is not None:
            loops.append(("replication", 1.0, self.replication.probe))
        for name, interval, step in loops:
            thread = threading.Thread(
                target=self._loop, args=(name, interval, step), name=f"monitor-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        thread = threading.Thread(
            target=self._server.serve_forever, daemon=True, name="monitor-http"
        )
        thread.start()
        self._threads.append(thread)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/"

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        self.watchdog.close()
        if self.replication is not None:
            self.replication.close()
        self.store.close()

    # views -----------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        active, history = self.findings.snapshot()
        return {
            "now": self.clock(),
            "findings": [f.as_dict() for f in active],
            "cleared": [f.as_dict() for f in history],
            "replicas": self.replication.snapshot() if self.replication else [],
            "targets": [
                {"name": t.name, "kind": t.kind, "url": t.url, "ready": self.ready.get(t.name)}
                for t in self.targets
            ],
            "time_to_authoritative": self.watchdog.time_to_authoritative(),
            "tracked": len(self.watchdog.tracked),
            "crls": self.crls.snapshot(),
        }


def _handler(monitor: Monitor) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("cache-control", "no-store")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/":
                body = page.render(monitor.state()).encode()
                self._send(200, "text/html; charset=utf-8", body)
            elif path == "/status.json":
                self._send(200, "application/json", json.dumps(monitor.state()).encode())
            elif path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(m.REGISTRY))
            elif path == "/healthz":
                self._send(200, "text/plain", b"ok\n")
            else:
                self._send(404, "text/plain", b"not found\n")

    return Handler
