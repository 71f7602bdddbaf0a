"""The monitor started the way services start in a real deployment: in parallel, before the rest.
On a fresh cluster (schema, no heartbeat writer, no issuer registered yet) a monitor run as its
own process with an Alertmanager-style receiver:

- sends no critical during its start-up grace, shows "no heartbeat" (never an age counted from
  1970) on the status page, in /status.json and in `cluster status`, and pages once the grace is
  over and still no heartbeat was written;
- picks up the issuer `serve` registers after it started: the new certificate's time to
  authoritative is measured and its CRL checked, with no restart; an issuer configured for the
  monitor that never appears is a finding, warning then critical;
- serves /status.json as plain JSON on PostgreSQL (no Decimal), with the replicas' figures;
- stops promptly on SIGTERM while its database is down.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from certstatus.cluster.local import Cluster
from certstatus.cluster.setup import write_deployment
from certstatus.config import load_config
from certstatus.demo.ca import DemoCA, write_pem
from tests.conftest import free_port, postgres_dir, wait_ready
from tests.test_monitor import Receiver

pytestmark = pytest.mark.integration

GRACE = 12.0  # long enough for the monitor process to start and probe inside it


def certstatus(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "certstatus.cli", *args],
            stdout=output,
            stderr=output,
            start_new_session=True,  # a failed test kills the whole group: no orphaned worker
        )


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what} not within {timeout}s"
        time.sleep(0.25)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except OSError:
        return 0, ""


def alerts(receiver: Receiver) -> list[dict[str, Any]]:
    return [alert for post in receiver.posts for alert in post]


def firing(receiver: Receiver, name: str, subject: str) -> list[dict[str, Any]]:
    return [
        a
        for a in alerts(receiver)
        if a["labels"]["alertname"] == name and a["labels"]["subject"] == subject
    ]


def test_monitor_started_first_on_a_fresh_cluster(tmp_path_factory) -> None:
    directory = postgres_dir(tmp_path_factory, "monitor-first")
    cluster = Cluster.up(directory / "cluster", replicas=1)
    receiver = Receiver()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        config_path = write_deployment(cluster, max_staleness="2s")
        config = load_config(config_path)
        ghost = DemoCA.create("a CA the status system never registers")
        write_pem(cluster.dir / "ghost.pem", ghost.certificate)
        mon_port = free_port()
        monitor_config = cluster.dir / "monitor.toml"
        monitor_config.write_text(
            config_path.read_text() + '\n[[issuers]]\nname = "ghost"\ncertificate = "ghost.pem"\n'
            'responder_certificate = "responder.pem"\nresponder_key = "responder.key"\n'
            f'\n[monitor]\nlisten = "127.0.0.1:{mon_port}"\nwarn_after = "5s"\n'
            'critical_after = "10s"\ncheckpoints = ["1s", "2s", "3s"]\n'
            f'crl_every = "1s"\nstartup_grace = "{GRACE:.0f}s"\nwebhook = "{receiver.url}"\n'
        )
        status_url = f"http://127.0.0.1:{mon_port}/status.json"
        started = time.monotonic()
        monitor = certstatus(
            ["monitor", "--config", str(monitor_config)], directory / "monitor.log"
        )
        processes.append(monitor)
        wait_for(
            lambda: monitor.poll() is None and get(f"http://127.0.0.1:{mon_port}/healthz")[0],
            20,
            "the monitor's status server",
        )

        # within the grace: "no heartbeat", said as such, and nothing critical sent
        state = wait_for(
            lambda: (
                (s := json.loads(get(status_url)[1] or "{}")).get("primary", {}).get("state")
                == "no heartbeat"
                and s["replicas"][0]["heartbeat"] != "unknown"  # the probe has reached it
                and s
            ),
            GRACE - 2 - (time.monotonic() - started),
            "the 'no heartbeat' state of the primary and the replica",
        )
        [replica] = state["replicas"]
        assert replica["heartbeat"] == "none" and replica["staleness_s"] is None, replica
        assert replica["starting"] is True
        page = get(f"http://127.0.0.1:{mon_port}/")[1]
        assert "no heartbeat" in page and "1796" not in page
        [row] = [r for r in cluster.status() if r["role"] == "replica"]
        assert row["heartbeat"] == "none" and row["staleness_s"] is None
        table = subprocess.run(
            [sys.executable, "-m", "certstatus.cli", "cluster", "status", "--dir", str(cluster.dir)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert "no heartbeat" in table and "…" not in table, table  # not cut at 80 columns
        while time.monotonic() - started < GRACE - 1:
            time.sleep(0.25)
        critical = [a for a in alerts(receiver) if a["labels"]["severity"] == "critical"]
        assert critical == [], critical

        # after the grace a missing heartbeat writer pages
        [paged, *_] = wait_for(
            lambda: firing(receiver, "CertstatusHeartbeatStopped", "primary"),
            GRACE + 10,
            "a critical for the missing heartbeat",
        )
        assert paged["labels"]["severity"] == "critical"
        assert "no heartbeat was ever written" in paged["annotations"]["summary"]
        assert time.monotonic() - started >= GRACE - 1

        # serve registers the issuer only now; a certificate recorded after it is watched
        server = certstatus(["serve", "--config", str(config_path)], directory / "serve.log")
        processes.append(server)
        wait_ready(f"http://127.0.0.1:{config.responder.listen_port}/", server, timeout=60)
        ca = DemoCA.load(cluster.dir / "issuer.pem", cluster.dir / "issuer.key")
        leaf = ca.leaf(ec.generate_private_key(ec.SECP256R1()).public_key(), 0x5EED, "http://t/")
        write_pem(directory / "leaf.pem", leaf)
        subprocess.run(
            [sys.executable, "-m", "certstatus.cli", "add", "--config", str(config_path),
             str(directory / "leaf.pem")],
            check=True, capture_output=True,
        )  # fmt: skip
        state = wait_for(
            lambda: (
                (s := json.loads(get(status_url)[1] or "{}")).get("time_to_authoritative")
                and s.get("crls")
                and s
            ),
            45,
            "time to authoritative and a checked CRL for the issuer registered late",
        )
        [(target, seconds)] = state["time_to_authoritative"].items()
        assert target == "origin" and len(seconds) == 1 and seconds[0] < 10
        [crl] = state["crls"]
        assert crl["url"].endswith("/crl/demo/0.crl") and crl["number"] >= 1, crl
        assert [i["name"] for i in state["issuers_not_watched"]] == ["ghost"]

        # the heartbeat finding resolves; the replicas' figures are plain numbers
        wait_for(
            lambda: any("endsAt" in a for a in firing(
                receiver, "CertstatusHeartbeatStopped", "primary"
            )),
            30,
            "the heartbeat finding resolved at the webhook",
        )  # fmt: skip
        state = wait_for(
            lambda: (
                (s := json.loads(get(status_url)[1] or "{}"))["replicas"][0]["staleness_s"]
                is not None
                and s["replicas"][0]["bytes_behind"] is not None
                and s
            ),
            30,
            "the replica's staleness and lag",
        )
        [replica] = state["replicas"]
        assert replica["heartbeat"] == "ok" and not replica["broken"], replica
        assert isinstance(replica["staleness_s"], float) and replica["staleness_s"] < 2
        assert type(replica["safe_wal_size"]) is int and type(replica["bytes_behind"]) is int
        assert state["primary"]["state"] == "ok"

        # the issuer that never appears: a finding, warning then critical (here warn_after)
        ghosts = wait_for(
            lambda: [
                a for a in firing(receiver, "CertstatusIssuerNotWatched", "ghost")
                if a["labels"]["severity"] == "critical"
            ],
            20,
            "a critical for the issuer that never appears",
        )  # fmt: skip
        assert "not in the database" in ghosts[0]["annotations"]["summary"]
        # demo was not watched until serve registered it (a finding then, resolved since)
        assert firing(receiver, "CertstatusIssuerNotWatched", "demo")
        assert any("endsAt" in a for a in firing(receiver, "CertstatusIssuerNotWatched", "demo"))
        assert not any("endsAt" in a for a in ghosts)

        # the database goes away; SIGTERM still stops the monitor promptly
        server.terminate()
        server.wait(timeout=30)
        cluster.stop(cluster.primary, mode="immediate")
        time.sleep(2)
        stopping = time.monotonic()
        monitor.send_signal(signal.SIGTERM)
        monitor.wait(timeout=10)
        assert time.monotonic() - stopping < 3.0
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # granian's workers too
            process.wait()
        receiver.server.shutdown()
        cluster.down()
