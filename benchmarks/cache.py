"""The cache tier under a realistic load: GETs for Zipf-distributed serials over 100 000
certificates (a few certificates are asked for very often, most rarely, as real OCSP traffic
is), `wrk -t2 -c64` through Varnish (deploy/varnish/certstatus.vcl) and directly against the
responder, in one run; with the hit ratio and the origin's request rate behind the cache.

    .venv/bin/python -m benchmarks.cache [--certs 100000] [--zipf 1.0] [--duration 10]
"""

from __future__ import annotations

import argparse
import base64
import bisect
import itertools
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import bulk_records, make_deployment
from benchmarks.load import wait_ready, wrk
from certstatus.cache.varnish import LocalVarnish
from certstatus.config import load_config, load_issuer_material
from certstatus.ingest import Ingest
from certstatus.ocsp.certid import HashAlgorithm, issuer_keys
from certstatus.ocsp.request import encode_request
from certstatus.ports import free_port
from certstatus.signer import Signer
from certstatus.store import open_store


def zipf_sample(population: int, exponent: float, draws: int, seed: int = 7) -> list[int]:
    """Ranks 0..population-1 drawn with probability proportional to 1/(rank+1)^exponent."""
    weights = [1.0 / (rank + 1) ** exponent for rank in range(population)]
    cumulative = list(itertools.accumulate(weights))
    total = cumulative[-1]
    rng = random.Random(seed)
    return [bisect.bisect_left(cumulative, rng.random() * total) for _ in range(draws)]


def prepare(directory: Path, certs: int, exponent: float, draws: int) -> tuple[Path, Path]:
    config_path = make_deployment(directory, server="granian", port=free_port())
    config = load_config(config_path)
    materials = load_issuer_material(config)
    store = open_store(config.database, config.base_dir)
    issuer_id = Ingest(store, materials).issuer_id("bench")
    records = bulk_records(issuer_id, certs)
    store.add_certificates(records, int(time.time()))
    with Signer(store, materials, {"bench": issuer_id}, config.signing, processes=2) as signer:
        signer.sign_due()
    store.close()
    keys = issuer_keys(materials[0].certificate)[HashAlgorithm.SHA1]
    ranked = records[:]
    random.Random(5).shuffle(ranked)  # popularity unrelated to issuance order
    paths: dict[int, str] = {}
    lines = []
    for rank in zipf_sample(certs, exponent, draws):
        if rank not in paths:
            request = encode_request(keys, ranked[rank].serial)
            paths[rank] = "/" + base64.b64encode(request).decode()  # the common spelling
        lines.append(paths[rank])
    listing = directory / "zipf-paths.txt"
    listing.write_text("\n".join(lines) + "\n")
    print(
        f"{draws} requests over {len(paths)} distinct certificates (Zipf s={exponent})",
        file=sys.stderr,
    )
    return config_path, listing


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--certs", type=int, default=100_000)
    parser.add_argument("--zipf", type=float, default=1.0)
    parser.add_argument("--draws", type=int, default=1_000_000)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=10, help="Seconds filling the cache first.")
    args = parser.parse_args()
    if not shutil.which("wrk") or not shutil.which("varnishd"):
        sys.exit("needs wrk and varnish: apt-get install -y wrk varnish varnish-modules")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        directory.chmod(0o755)  # Varnish's child runs unprivileged
        config_path, listing = prepare(directory, args.certs, args.zipf, args.draws)
        config = load_config(config_path)
        origin = f"127.0.0.1:{config.responder.listen_port}"
        responder = subprocess.Popen(
            [sys.executable, "-m", "certstatus.cli", "serve", "--config", str(config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        varnish = LocalVarnish(directory / "varnish")
        try:
            wait_ready(f"http://{origin}/readyz")
            direct_url = f"http://{origin}"
            wrk(direct_url, listing, 2)
            direct = wrk(direct_url, listing, args.duration)
            state = varnish.up([origin], memory="512m")
            cache_url = state.url.rstrip("/")
            wrk(cache_url, listing, args.warmup)  # a cold cache fills with popular answers
            before = varnish.stats()
            started = time.monotonic()
            cached = wrk(cache_url, listing, args.duration)
            elapsed = time.monotonic() - started
            after = varnish.stats()
        finally:
            varnish.down()
            responder.terminate()
            responder.wait(timeout=30)
    delta = {key: after[key] - before[key] for key in after}
    lookups = delta["hits"] + delta["misses"]
    report = {
        "certificates": args.certs,
        "zipf_exponent": args.zipf,
        "connections": 64,
        "direct": direct,
        "through_varnish": {
            **cached,
            "hit_ratio": round(delta["hits"] / lookups, 3) if lookups else None,
            "origin_requests_per_s": round(delta["origin_requests"] / elapsed, 1),
        },
        "ratio_varnish_to_direct": round(cached["requests_per_s"] / direct["requests_per_s"], 2),
    }
    print(json.dumps(report, indent=2))
    if re.search(r"[1-9]", str(int(cached["non_2xx"]))):
        sys.exit("non-2xx answers through the cache")


if __name__ == "__main__":
    main()
