"""responder.admin_listen: /metrics and /sources move to a listener of their own and the public
port 404s them; without it they stay on the public port, as before."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from certstatus.ocsp.certid import HashAlgorithm, issuer_keys
from certstatus.ocsp.request import encode_request, get_path
from certstatus.ports import free_port
from certstatus.responder.app import OcspApp
from certstatus.responder.source import open_response_source
from tests.conftest import Deployment, make_deployment, serving
from tests.test_responder_http import call


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def configure(tmp_path: Path, admin_port: int | None) -> tuple[Deployment, str]:
    """A deployment with two workers and a signed good certificate; the GET path asking
    for it."""
    deployment = make_deployment(tmp_path / "ca")
    extra = "workers = 2\n"
    if admin_port is not None:
        extra += f'admin_listen = "127.0.0.1:{admin_port}"\n'
    text = deployment.config_path.read_text().replace("[responder]\n", "[responder]\n" + extra)
    deployment.config_path.write_text(text)
    store = deployment.store()
    good, _ = deployment.good_and_revoked(store)
    store.close()
    keys = issuer_keys(deployment.ca.certificate)[HashAlgorithm.SHA1]
    return deployment, get_path(encode_request(keys, good.serial_number))


def wait_for_metric(url: str, needle: bytes, timeout: float = 10) -> bytes:
    """The exposition once it holds needle: workers flush their counts every 0.5 s."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = get(url)
        assert status == 200
        if needle in body or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


@pytest.mark.integration
def test_admin_paths_move_to_the_admin_listener(tmp_path: Path) -> None:
    admin_port = free_port()
    deployment, path = configure(tmp_path, admin_port)
    admin = f"http://127.0.0.1:{admin_port}"
    with serving(deployment):
        public = deployment.url.rstrip("/")
        for _ in range(4):  # answered by either worker: the counts are summed
            status, body = get(public + path)
            assert status == 200 and len(body) > 100
        for admin_path in ("/metrics", "/sources"):
            status, body = get(public + admin_path)
            assert status == 404, (admin_path, status, body)
            assert b"admin_listen" in body
        assert get(public + "/healthz") == (200, b"ok\n")
        assert get(public + "/readyz")[0] == 200

        good = b'certstatus_responder_answers_total{outcome="good",source="local"} 4.0'
        metrics = wait_for_metric(admin + "/metrics", good)
        assert good in metrics  # summed over both workers
        # no value of the admin process's own in the merged `min`: the node is ready
        assert b"certstatus_responder_ready 1.0" in metrics

        status, body = get(admin + "/sources")
        assert status == 200
        [local] = json.loads(body)
        assert local["name"] == "local" and local["role"] == "embedded"
        assert local["fresh"] is True
        assert local["answers"] == 4  # the node's, not one worker's
        assert get(admin + "/")[0] == 404
        assert get(admin + "/ocsp")[0] == 404


@pytest.mark.integration
def test_without_admin_listen_the_public_port_serves_them(tmp_path: Path) -> None:
    deployment, path = configure(tmp_path, None)
    with serving(deployment):
        public = deployment.url.rstrip("/")
        assert get(public + path)[0] == 200
        good = b'certstatus_responder_answers_total{outcome="good",source="local"} 1.0'
        assert good in wait_for_metric(public + "/metrics", good)
        status, body = get(public + "/sources")
        assert status == 200
        [local] = json.loads(body)
        assert local["role"] == "embedded" and local["fresh"] is True


def test_an_app_without_admin_paths_answers_them_404(deployment: Deployment) -> None:
    """The app level: what a public port with an admin listener says, on ASGI and RSGI alike."""
    source = open_response_source(deployment.config)
    try:
        app = OcspApp(source, {}, admin_paths=False)
        for admin_path in ("/metrics", "/sources"):
            answer = call(app, "GET", admin_path)
            assert answer.status == 404
            assert answer.headers["cache-control"].startswith("no-cache, no-store")
        assert call(app, "GET", "/healthz").status == 200
        assert call(app, "GET", "/readyz").status == 200
    finally:
        source.close()


def test_a_taken_admin_port_is_refused_by_its_key(tmp_path: Path) -> None:
    """serve refuses before starting anything, naming responder.admin_listen."""
    import socket

    from certstatus.config import ConfigError, load_config
    from certstatus.responder.server import ensure_listen_address_free

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        deployment, _ = configure(tmp_path, taken.getsockname()[1])
        with pytest.raises(ConfigError) as error:
            ensure_listen_address_free(load_config(deployment.config_path))
    assert "responder.admin_listen" in str(error.value)
    assert "responder.listen:" not in str(error.value)
