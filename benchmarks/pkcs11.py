"""Signing through a PKCS#11 token (SoftHSM2): OCSP pregeneration with all signing processes
against a plain python-pkcs11 signing loop on the same token, in the same run, and against the
PEM path (same machine, same run). Target: pregeneration >= 0.8 of the plain loop.

- plain loop: N processes, each with its own session, signing 32-byte digests with CKM_ECDSA
  as fast as it can (no OCSP, no DER): the token's ceiling through python-pkcs11;
- pipeline: build + sign responses in N spawned signing processes (the signer's pool), each
  opening its own session on the token (benchmarks.signing.pipeline);
- PEM: the same pipeline with the key in a PEM file.

    .venv/bin/python -m benchmarks.pkcs11 [--count 20000] [--processes 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from statistics import median

from cryptography.hazmat.primitives.serialization import load_der_public_key

from benchmarks.common import make_deployment as make_pem_deployment
from benchmarks.signing import end_to_end, pipeline
from certstatus.demo.ca import DemoCA, write_key, write_pem
from certstatus.demo.softhsm import create_token, softhsm_module
from certstatus.keys.pkcs11 import Pkcs11Key
from certstatus.keys.token_admin import generate_key
from certstatus.keys.uri import TokenAccess

PIN = "bench-pin-1234"
PIN_ENV = "CERTSTATUS_BENCH_PIN"

CONFIG = """\
database = "certstatus.db"

[signing]
workers = {processes}
batch_size = 256

[[issuers]]
name = "bench"
certificate = "issuer.pem"
responder_certificate = "responder.pem"
responder_key = "{uri}"

[pkcs11]
module = "{module}"
pin_env = "{pin_env}"
"""


def make_token_deployment(directory: Path, processes: int) -> Path:
    """A SoftHSM2 token with a P-256 responder key, a CA (PEM) and a config naming the key."""
    directory.mkdir(parents=True, exist_ok=True)
    conf = create_token(directory / "hsm", "bench", PIN, "so-" + PIN)
    os.environ["SOFTHSM2_CONF"] = str(conf)  # inherited by the spawned signing processes
    os.environ[PIN_ENV] = PIN
    access = TokenAccess(softhsm_module(), pin_env=PIN_ENV)
    uri = generate_key(access, "bench", "responder", "p256")
    ca = DemoCA.create("bench CA")
    responder = ca.responder_for(load_der_public_key(Pkcs11Key(uri, access).public_key_der()))
    write_pem(directory / "issuer.pem", ca.certificate)
    assert ca.key is not None
    write_key(directory / "issuer.key", ca.key)
    write_pem(directory / "responder.pem", responder)
    config = directory / "certstatus.toml"
    config.write_text(
        CONFIG.format(processes=processes, uri=uri, module=access.module, pin_env=PIN_ENV)
    )
    return config


def _plain_loop(count: int, start_at: float) -> tuple[float, float]:
    """One process: its own session, count CKM_ECDSA signatures from start_at (all processes
    start together, after every one has logged in); (start, end) wall times."""
    import pkcs11

    lib = pkcs11.lib(str(softhsm_module()))
    session = lib.get_token(token_label="bench").open(user_pin=os.environ[PIN_ENV])
    key = session.get_key(object_class=pkcs11.ObjectClass.PRIVATE_KEY, label="responder")
    digest = hashlib.sha256(b"warm up").digest()
    key.sign(digest, mechanism=pkcs11.Mechanism.ECDSA)
    time.sleep(max(0.0, start_at - time.time()))
    start = time.time()
    for n in range(count):
        key.sign(hashlib.sha256(n.to_bytes(8, "big")).digest(), mechanism=pkcs11.Mechanism.ECDSA)
    return start, time.time()


def plain(count: int, processes: int) -> float:
    """Signatures/s of the plain loop over all processes (first start to last end)."""
    start_at = time.time() + 3.0  # spawned and logged in by then, even on a loaded machine
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        spans = pool.starmap(_plain_loop, [(count // processes, start_at)] * processes)
    assert all(abs(start - start_at) < 0.5 for start, _ in spans), "a process started late"
    elapsed = max(end for _, end in spans) - min(start for start, _ in spans)
    return (count // processes) * processes / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=20_000, help="signatures per figure")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (median)")
    args = parser.parse_args()
    loops, ours_runs, pems = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        token_config = make_token_deployment(Path(tmp) / "token", args.processes)
        pem_config = make_pem_deployment(Path(tmp) / "pem", "p256", signers=args.processes)
        # alternated, so load from other work on a shared machine hits all alike; every
        # response is one signature, so the pipeline figures count responses
        for _ in range(args.rounds):
            loops.append(plain(args.count, args.processes))
            ours_runs.append(pipeline(token_config, args.count // 2, args.processes))
            pems.append(pipeline(pem_config, args.count // 2, args.processes))
        e2e = end_to_end(token_config, args.count // 4, args.processes)
    # each round's figures were taken back to back: the ratio within a round is what holds
    # on a machine whose load changes; the median round's ratio is reported
    vs_loop = [o / p for o, p in zip(ours_runs, loops, strict=True)]
    vs_pem = [o / p for o, p in zip(ours_runs, pems, strict=True)]
    loop, ours, pem = median(loops), median(ours_runs), median(pems)
    report = {
        "processes": args.processes,
        "rounds": args.rounds,
        "load_average_1m": os.getloadavg()[0],
        "per_round_pipeline_vs_loop": [round(r, 3) for r in vs_loop],
        "plain_pkcs11_loop_signatures_per_s": round(loop),
        "pkcs11_pipeline_responses_per_s": round(ours),
        "pkcs11_pipeline_vs_plain_loop": round(median(vs_loop), 3),
        "pkcs11_end_to_end_sqlite_responses_per_s": round(e2e),
        "pkcs11_end_to_end_vs_plain_loop_median": round(e2e / loop, 3),
        "pem_pipeline_responses_per_s": round(pem),
        "pkcs11_pipeline_vs_pem": round(median(vs_pem), 3),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
