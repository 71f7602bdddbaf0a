"""`certstatus monitor`: the outside view, run apart from the responders. Loops, each one
concern: the watchdog (new serials), the sampler (older serials), replication, CRLs, target
readiness; one book of findings; an HTTP server for the status page, /status.json and
/metrics; and, when configured, an Alertmanager webhook."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from certstatus.config import Config, ConfigError
from certstatus.keys.certificates import load_certificate
from certstatus.monitor import metrics as m
from certstatus.monitor import page
from certstatus.monitor.crls import CrlWatch
from certstatus.monitor.findings import AlertmanagerWebhook, Findings
from certstatus.monitor.issuers import ConfiguredIssuer, IssuerBook
from certstatus.monitor.replication import ReplicationProbe, plain
from certstatus.monitor.targets import Fetched, Target, fetch
from certstatus.monitor.watchdog import Watchdog, WatchPolicy
from certstatus.store import open_store, replication_of
from certstatus.store.base import Store, StoreError
from certstatus.store.postgres import PostgresStore

log = logging.getLogger("certstatus.monitor")

PRIMARY_TIMEOUT = 2.0  # seconds: a probe that waits longer reports a dead primary too late


class Monitor:
    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        c = config.monitor
        grace = float(c.startup_grace)
        self.store = _open_store(config)
        self.findings = Findings(clock=clock)
        self.issuers = IssuerBook(
            [  # certificates only: the monitor holds no key
                ConfiguredIssuer(i.name, load_certificate(i.certificate), i.crl)
                for i in config.issuers
            ],
            self.findings,
            grace=grace,
            critical_after=float(c.warn_after),
            clock=clock,
        )
        self.targets = [Target(t.name, t.url, t.kind) for t in config.monitor_targets]
        self.watchdog = Watchdog(
            self.store,
            self.issuers.certificates,
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
            find_issuers=self.find_issuers,
        )
        self.crls = CrlWatch(
            self.store, self.issuers.crl_issuers, self.findings, config.crl.period, clock
        )
        self.replication = None
        primary = replication_of(self.store)
        if primary is not None:
            self.replication = ReplicationProbe(
                primary,
                config.replicas,
                self.findings,
                config.responder.max_staleness,
                grace=grace,
                clock=clock,
            )
        self.ready: dict[str, bool | None] = {t.name: None for t in self.targets}
        self.seen_ready: set[str] = set()
        self.started = clock()
        self.grace = grace
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

    def find_issuers(self) -> None:
        self.issuers.refresh(self.store.issuers)

    def watch_step(self) -> None:
        """Issuers first: one registered since the last pass is watched from this pass on."""
        self.find_issuers()
        self.watchdog.poll_new()
        self.watchdog.check_due()
        self.watchdog.evaluate()

    def readiness_step(self) -> None:
        """Each origin's /readyz, and the reason it gives (or why it could not be asked). An
        origin never seen ready is only starting during the start-up grace."""
        raised = []
        starting = self.clock() - self.started < self.grace
        for target in self.targets:
            if target.kind != "origin":
                continue
            answer = fetch(target.url.rstrip("/") + "/readyz", timeout=2)
            ready = answer.status == 200
            self.ready[target.name] = ready
            m.TARGET_READY.labels(target.name).set(1 if ready else 0)
            if ready:
                self.seen_ready.add(target.name)
            elif target.name in self.seen_ready or not starting:
                raised.append(
                    ("ResponderNotReady", target.name, "warning", _not_ready(target, answer))
                )
        self.findings.observe({"ResponderNotReady"}, raised)

    def publish_step(self) -> None:
        """Its own loop: findings raised while another check fails (the database is down, so
        the watchdog cannot run) must still reach the metrics and the webhook."""
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
            raise ConfigError(
                [
                    (
                        "monitor.listen",
                        f"cannot listen on {c.listen}: {exc.strerror or exc}; choose a free port",
                    )
                ],
                self.config.path,
            ) from None
        loops: list[tuple[str, float, Callable[[], None]]] = [
            ("watchdog", 0.5, self.watch_step),
            ("alerts", 0.5, self.publish_step),
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

    def stop(self, timeout: float = 1.0) -> None:
        """Prompt in every state: a loop stuck in a database call that retries (a primary that
        is down) is a daemon thread and is left to die with the process, rather than making an
        operator's SIGTERM wait for a connection timeout."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        self.watchdog.close()
        if stuck:
            log.warning("stopping with %s still in a database call", ", ".join(stuck))
            return
        if self.replication is not None:
            self.replication.close()
        self.store.close()

    # views -----------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        active, history = self.findings.snapshot()
        replication = self.replication
        return {
            "now": self.clock(),
            "primary": None
            if replication is None
            else {"state": replication.primary_state, "heartbeat_age_s": replication.heartbeat_age},
            "issuers_not_watched": self.issuers.unwatched(),
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
                body = json.dumps(jsonable(monitor.state()), allow_nan=False).encode()
                self._send(200, "application/json", body)
            elif path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(m.REGISTRY))
            elif path == "/healthz":
                self._send(200, "text/plain", b"ok\n")
            else:
                self._send(404, "text/plain", b"not found\n")

    return Handler


def _not_ready(target: Target, answer: Fetched) -> str:
    if answer.status == 0:
        return f"{target.name} does not answer at {target.url}readyz: {answer.error}"
    why = answer.body.decode("utf-8", "replace").strip().splitlines()
    detail = f": {why[0][:200]}" if why else ""
    return f"{target.name} fails /readyz (HTTP {answer.status}){detail}"


def jsonable(value: Any) -> Any:
    """Plain JSON: PostgreSQL's Decimal as a number, an infinite age (no heartbeat, unreachable)
    as null, which is what the state's other fields already use for "none"."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return plain(value)


def _open_store(config: Config) -> Store:
    """On PostgreSQL the monitor only reads: it opens the primary without migrating, so it can
    start before the database (or its schema) exists and watch it come up."""
    if config.is_postgres:
        return PostgresStore(config.database, read_only=True, timeout=PRIMARY_TIMEOUT)
    return open_store(config.database, config.base_dir)
