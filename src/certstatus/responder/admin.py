"""The admin listener (`responder.admin_listen`): /metrics and /sources on a port of their own,
so the public port answers only OCSP, CRLs, /healthz and /readyz (it 404s the admin paths).

It runs in a process of its own, spawned beside the server like the signing roles
(server.companion), never as a thread of the server process: granian forks its workers from
that process, at start and whenever it respawns one, and a fork taken while a thread of ours
holds a lock (logging's, SQLite's) leaves the child stuck on it.

What it serves when granian runs several workers, each with its own read side:

- /metrics merges every worker's values from the multiprocess directory they write to
  (responder/metrics.py), as the public /metrics did: counters summed, the freshness gauges the
  worst worker's. This process never imports responder/metrics.py, whose module-level metrics
  would add a value of its own to that directory (a 0 in the `min` of
  certstatus_responder_ready would report the node unready).
- /sources lists the databases this node reads (the same JSON as the public /sources: one
  object per source). The public /sources was whichever worker took the request: one worker's
  view, with that worker's answer counts. Here the state is sampled by this process's own read
  side, opened from the same config with the same rules (the replicas' staleness is a property
  of the databases, not of a worker), `answers` is the sum over all workers from the shared
  metrics, and `workers` gives the worst worker's view (fresh in every worker? the largest
  staleness any worker measured), so a worker whose connection broke shows there (replica
  sets only: a SQLite file has no staleness, and `workers` is empty).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.metrics_core import Metric

from certstatus.config import load_config
from certstatus.responder.source import ResponseSource, open_response_source

log = logging.getLogger("certstatus.admin")


def merged_metrics() -> list[Metric]:
    """Every worker's metrics, merged (PROMETHEUS_MULTIPROC_DIR is set by run_server)."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return list(registry.collect())


def render_metrics() -> bytes:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


def describe_sources(source: ResponseSource, metrics: Iterable[Metric]) -> list[dict[str, Any]]:
    """/sources: this process's sampled view of each source, with the node's answer counts
    and the worst worker's view from the shared metrics."""
    answers: dict[str, float] = {}
    worst: dict[str, dict[str, Any]] = {}
    for metric in metrics:
        for sample in metric.samples:
            name = sample.labels.get("source")
            if name is None:
                continue
            if sample.name == "certstatus_responder_answers_total":
                answers[name] = answers.get(name, 0) + sample.value
            elif sample.name == "certstatus_responder_source_fresh":
                worst.setdefault(name, {})["fresh"] = sample.value == 1
            elif sample.name == "certstatus_responder_source_staleness_seconds":
                value = sample.value
                worst.setdefault(name, {})["staleness_s"] = (
                    None if value == float("inf") else round(value, 3)
                )
    described = []
    for entry in source.describe():
        name = entry["name"]
        described.append(
            {**entry, "answers": int(answers.get(name, 0)), "workers": worst.get(name, {})}
        )
    return described


class AdminServer(HTTPServer):
    """One thread serves: a Prometheus scrape and an operator's curl are all it sees, and the
    embedded (SQLite) source must be used from the thread that opened it."""

    def __init__(self, address: tuple[str, int], source: ResponseSource) -> None:
        self.source = source
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, AdminHandler)


class AdminHandler(BaseHTTPRequestHandler):
    timeout = 5  # a client that stalls must not hold the only thread for long
    server: AdminServer

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def _answer(self, with_body: bool) -> None:
        try:
            status, content_type, body = self._route(self.path)
        except Exception:
            log.exception("admin request %s failed", self.path)
            status, content_type, body = 500, "text/plain", b"internal error\n"
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("cache-control", "no-store")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def _route(self, path: str) -> tuple[int, str, bytes]:
        path = path.split("?", 1)[0]
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, render_metrics()
        if path == "/sources":
            described = describe_sources(self.server.source, merged_metrics())
            return 200, "application/json", json.dumps(described).encode()
        return 404, "text/plain", b"the admin listener serves /metrics and /sources\n"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes every few seconds: no access log, as on the public port


def admin_process(config_path: str, parent: int) -> None:
    """The admin listener's own process beside `serve` (see responder.server.companion)."""
    from certstatus.wiring import _stop_flag, _wait

    stopping = _stop_flag()
    config = load_config(Path(config_path))
    address = config.responder.admin_address
    assert address is not None
    source = open_response_source(config)
    server = AdminServer(address, source)

    def stop_when_told() -> None:
        _wait(stopping, parent)
        server.shutdown()

    threading.Thread(target=stop_when_told, name="admin-stop", daemon=True).start()
    log.info("admin listener on http://%s:%d/ (/metrics, /sources)", *address)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        source.close()
