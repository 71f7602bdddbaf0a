"""`certstatus site drain|restore|status` (issue 14): the founding incident's remedy in one
command. A drained site's responders fail /readyz within seconds, even one that reads only a
replica (the drain is data, replicated like everything else), still after a restart, and are
ready again on restore (F1, F9)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from certstatus.cluster.local import Cluster
from certstatus.cluster.setup import write_deployment
from certstatus.config import load_config
from certstatus.responder.source import EmbeddedSource
from tests.conftest import Deployment, postgres_dir, stop_process, wait_ready
from tests.test_drills import leftover_processes


def readyz(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url + "readyz", timeout=2) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "certstatus.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def wait_status(url: str, status: int, timeout: float, saying: str = "", reads: int = 1) -> float:
    """Seconds until /readyz answers status (and saying in its body) on `reads` reads in a row:
    each read may reach either worker of the responder, and each samples the drain on its own
    clock, so one worker may answer 503 while the other still answers ready."""
    started = time.monotonic()
    in_a_row = 0
    while in_a_row < reads:
        code, body = readyz(url)
        in_a_row = in_a_row + 1 if code == status and saying in body else 0
        if in_a_row < reads:
            assert time.monotonic() - started < timeout, f"/readyz not {status} within {timeout}s"
            time.sleep(0.1)
    return time.monotonic() - started


def test_drain_on_one_database(deployment: Deployment) -> None:
    store = deployment.store()
    try:
        assert EmbeddedSource(store, "a").ready() is None
        store.drain_site("a", "replicas in a are suspect", 1000)
        assert store.drained_sites() == {"a": (1000, "replicas in a are suspect")}
        reason = EmbeddedSource(store, "a").ready()
        assert reason is not None and "site a drained" in reason
        assert EmbeddedSource(store, "b").ready() is None
        assert store.restore_site("a") and not store.restore_site("a")
        assert EmbeddedSource(store, "a").ready() is None
    finally:
        store.close()


@pytest.mark.integration
def test_site_drain_reaches_a_responder_reading_only_a_replica_f1(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    directory = postgres_dir(tmp_path_factory, "drain") / "cluster"
    cluster = Cluster.up(directory, replicas=1, sites="a:1")
    serve = beating = None
    try:
        config_path = write_deployment(cluster, max_staleness="2s")
        config = load_config(config_path)
        url = f"http://{config.responder.listen_host}:{config.responder.listen_port}/"
        text = config_path.read_text().replace(
            "run_signer = true", "run_signer = false\nprimary_fallback = false"
        )
        text += f'\n[[monitor.targets]]\nname = "resp-a"\nurl = "{url}"\nsite = "a"\n'
        config_path.write_text(text)

        def start() -> subprocess.Popen[bytes]:
            log = (directory / "serve.log").open("ab")
            command = ["serve", "--config", str(config_path)]
            return subprocess.Popen(
                [sys.executable, "-m", "certstatus.cli", *command], stdout=log, stderr=log
            )

        # the beat keeps the replica fresh (no signer runs in this responder)
        beating = subprocess.Popen(
            [sys.executable, "-c", BEAT, config.database], stdout=subprocess.DEVNULL
        )
        serve = start()
        wait_ready(url, serve, timeout=60)

        typo = cli("site", "drain", "--config", str(config_path), "z")
        assert typo.returncode == 2 and "unknown site 'z'" in typo.stderr
        assert len(typo.stderr.strip().splitlines()) == 1

        drained = cli("site", "drain", "--config", str(config_path), "a", "--note", "drill")
        assert drained.returncode == 0, drained.stderr
        assert wait_status(url, 503, 10, saying="site a drained", reads=6) < 5
        status = json.loads(cli("site", "status", "--config", str(config_path), "--json").stdout)
        [site_a] = status
        assert site_a["drained"] and site_a["note"] == "drill"
        assert [r["ready"] for r in site_a["responders"]] == [False]

        stop_process(serve)  # the drain survives a restart
        serve = start()
        deadline = time.monotonic() + 60
        while readyz(url)[0] == 0:
            assert time.monotonic() < deadline and serve.poll() is None
            time.sleep(0.2)
        time.sleep(1)
        assert readyz(url)[0] == 503

        restored = cli("site", "restore", "--config", str(config_path), "a")
        assert restored.returncode == 0 and "restored" in restored.stdout
        assert wait_status(url, 200, 10) < 5
    finally:
        if serve is not None:
            stop_process(serve)
        if beating is not None:
            stop_process(beating)
        cluster.down()
    assert leftover_processes(str(directory)) == []


BEAT = """
import sys, time
from certstatus.store.postgres import PostgresStore
store = PostgresStore(sys.argv[1])
while True:
    store.beat()
    time.sleep(0.25)
"""
