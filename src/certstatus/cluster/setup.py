"""A deployment for a local cluster: a demo CA and a certstatus.toml that the signer and a
responder can use unchanged (replace [[issuers]] with your own CA's files)."""

from __future__ import annotations

from pathlib import Path

from certstatus.cluster.local import Cluster, free_port
from certstatus.demo.ca import DemoCA, write_key, write_pem
from certstatus.store.postgres import PostgresStore


def write_deployment(
    cluster: Cluster, listen: str | None = None, max_staleness: str = "5s"
) -> Path:
    directory = cluster.dir
    if not (directory / "issuer.pem").exists():
        ca = DemoCA.create("certstatus cluster CA")
        responder, key = ca.responder()
        write_pem(directory / "issuer.pem", ca.certificate)
        assert ca.key is not None
        write_key(directory / "issuer.key", ca.key)
        write_pem(directory / "responder.pem", responder)
        write_key(directory / "responder.key", key)
    listen = listen or f"127.0.0.1:{free_port()}"
    sites = [n.site for n in cluster.read_nodes if n.site]
    lines = [
        "# written by `certstatus cluster up`: the primary for writes (under --ha, every node:"
        " libpq keeps the leader), replicas for reads",
        f'database = "{cluster.writer_url}"',
        "",
        "[responder]",
        f'listen = "{listen}"',
        "run_signer = true",
        f'site = "{sites[0]}"' if sites else "",
        f'max_staleness = "{max_staleness}"',
        "",
        "[signing]",
        "workers = 2",
        "",
    ]
    for node in cluster.read_nodes:
        lines += [
            "[[replicas]]",
            f'name = "{node.name}"',
            f'site = "{node.site}"',
            f'url = "{node.url}"',
            "",
        ]
    lines += [
        "[[issuers]]",
        'name = "demo"',
        'certificate = "issuer.pem"',
        'responder_certificate = "responder.pem"',
        'responder_key = "responder.key"',
        'issuer_key = "issuer.key"',
        f'crl_url = "http://{listen}/crl/{{issuer}}/{{partition}}.crl"',
        "",
    ]
    path = directory / "certstatus.toml"
    path.write_text("\n".join(lines))
    PostgresStore(cluster.writer_url).close()  # apply the schema; replicas replay it
    return path
