"""The decoders' contracts under mutated input: ocsp/request.py raises only MalformedRequest and
der.py only ValueError, whatever the bytes. Property tests (hypothesis, the structure-aware
mutations of benchmarks/fuzzcases.py) run everywhere; the coverage-guided harness
(benchmarks/fuzz_decoders.py, atheris) runs for a few seconds where atheris installed."""

from __future__ import annotations

import importlib.util
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.fuzzcases import Target, encode, mutate_bytes, mutate_tree, ocsp_request
from hypothesis import given, settings
from hypothesis import strategies as st

from certstatus import der
from certstatus.demo.ca import DemoCA
from certstatus.ocsp.certid import issuer_keys
from certstatus.ocsp.request import MalformedRequest, decode_request, unknown_critical_extensions

REPO = Path(__file__).resolve().parent.parent
TARGET = Target(issuer_keys(DemoCA.create().certificate), {0x1234: "good", 2**64 + 7: "revoked"})


def test_a_child_running_past_its_parent_is_an_error() -> None:
    """Found by benchmarks/fuzz_decoders.py: der.elements returned an element that claimed
    more bytes than its parent held (read_tlv checked only against the whole buffer), so a
    walk of a crafted request read its siblings' bytes as the child's."""
    data = bytes.fromhex("0a0200010100")  # [0a len 2: 00 01] whose child 00 claims 1 byte more
    _, start, end = der.read_tlv(data)
    with pytest.raises(ValueError, match="past its parent"):
        der.elements(data, start, end)
    # A Request whose [0] claims the bytes after it: the walk read the sibling as that
    # Request's extensions (and reported its critical OID); now the request is malformed.
    ext = der.sequence(der.sequence(der.oid("1.2.3.4.5"), der.BOOLEAN_TRUE, der.octet_string(b"")))
    request = bytes((der.SEQUENCE, 2, 0xA0, len(ext)))
    crafted = der.sequence(der.sequence(der.tlv(der.SEQUENCE, request + ext)))
    with pytest.raises(MalformedRequest, match="past its parent"):
        unknown_critical_extensions(crafted)


def mutated(seed: int) -> bytes:
    rng = random.Random(seed)
    tree, _ = ocsp_request(rng, TARGET)
    for _ in range(rng.randint(0, 3)):
        tree, _ = mutate_tree(rng, tree)
    data = encode(tree)
    for _ in range(rng.randint(0, 4)):
        data, _ = mutate_bytes(rng, data)
    return data


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 2**32))
def test_mutated_requests_decode_or_are_malformed(seed: int) -> None:
    data = mutated(seed)
    try:
        request = decode_request(data)
    except MalformedRequest:
        return
    assert request.serial >= 0


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 2**32))
def test_the_extensions_walk_raises_only_malformed(seed: int) -> None:
    """unknown_critical_extensions on DER cryptography never checked (it is called after the
    parser in decode_request, but its own contract is the module's error only)."""
    try:
        unknown = unknown_critical_extensions(mutated(seed))
    except MalformedRequest:
        return
    assert all(isinstance(oid, str) for oid in unknown)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 2**32))
def test_der_walks_stay_inside_their_parent(seed: int) -> None:
    data = mutated(seed)
    stack = [(0, len(data))]
    while stack:
        start, end = stack.pop()
        try:
            found = der.elements(data, start, end)
        except ValueError:
            continue
        for tag, at, inner, stop in found:
            assert start <= at < inner <= stop <= end
            if tag & 0x20:
                stack.append((inner, stop))


@pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None,
    reason="atheris is not installed (pip install -e '.[fuzz]'; it ships wheels for CPython "
    "on x86-64 Linux only): coverage-guided fuzzing of the decoders skipped",
)
def test_coverage_guided_fuzzing_of_the_decoders_finds_nothing(tmp_path: Path) -> None:
    """A bounded libFuzzer run from the seed corpus of valid requests: no crash (an exception
    outside a decoder's contract, or a broken invariant), within the run budget."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.fuzz_decoders",
            "-runs=15000",
            "-max_total_time=10",
            f"-artifact_prefix={tmp_path}/",
        ],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done" in done.stderr and "cov:" in done.stderr
    assert not list(tmp_path.glob("crash-*"))
