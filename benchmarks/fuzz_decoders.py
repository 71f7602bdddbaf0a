"""Coverage-guided fuzzing (atheris, libFuzzer) of the pure decoders a client's bytes reach:
certstatus/ocsp/request.py and certstatus/der.py.

Each input is routed by its first byte to one decoder, and the decoder's contract is checked:
it returns, or raises its module's own error (MalformedRequest for the request decoders,
ValueError for der.py), nothing else, and what it returns is consistent (DER bounds inside the
input, a non-negative serial). Any other exception is a crash: libFuzzer stops, writes the
input to crash-<sha1> and exits non-zero.

    .venv/bin/pip install -e '.[fuzz]'
    .venv/bin/python -m benchmarks.fuzz_decoders -runs=200000 [-max_total_time=60] [CORPUS_DIR]

A corpus of valid requests (SHA-1 and SHA-256, nonces, extensions) is written to a fresh
directory when none is given. tests/test_fuzz_decoders.py runs it for a few seconds.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["certstatus"]):
    from certstatus import der
    from certstatus.ocsp.request import (
        MalformedRequest,
        decode_get_path,
        decode_request,
        unknown_critical_extensions,
    )


def _request(data: bytes) -> None:
    try:
        request = decode_request(data)
    except MalformedRequest:
        return
    assert request.serial >= 0


def _get_path(data: bytes) -> None:
    try:
        _request(decode_get_path(data.decode("latin-1")))
    except MalformedRequest:
        return


def _extensions(data: bytes) -> None:
    try:
        unknown = unknown_critical_extensions(data)
    except MalformedRequest:
        return
    assert all(isinstance(oid, str) for oid in unknown)


def _tlv(data: bytes) -> None:
    try:
        tag, start, end = der.read_tlv(data)
    except ValueError:
        return
    assert 0 <= tag < 256 and 2 <= start <= end <= len(data)
    try:
        found = der.elements(data, start, end)
    except ValueError:
        return
    assert all(start <= s <= c <= e <= end for _, s, c, e in found)


def _oid(data: bytes) -> None:
    """oid_text, and oid() its inverse for every minimal encoding (no arc opening with 0x80)."""
    try:
        text = der.oid_text(data)
    except ValueError:
        return
    starts = [0] + [i + 1 for i, byte in enumerate(data[:-1]) if not byte & 0x80]
    if all(data[i] != 0x80 for i in starts):
        encoded = der.oid(text)
        _, content, _ = der.read_tlv(encoded)
        assert encoded[content:] == data, (data.hex(), text)


TARGETS = (_request, _request, _get_path, _extensions, _tlv, _oid)


def test_one_input(data: bytes) -> None:
    """libFuzzer's entry: the first byte picks the decoder, the rest is its input."""
    if not data:
        return
    TARGETS[data[0] % len(TARGETS)](data[1:])


def seed_corpus(directory: Path) -> None:
    """Valid requests as seeds, one per target byte: the fuzzer mutates from real structure."""
    import random

    from benchmarks.fuzzcases import Target, encode, ocsp_request
    from certstatus.demo.ca import DemoCA
    from certstatus.ocsp.certid import issuer_keys
    from certstatus.ocsp.request import get_path

    ca = DemoCA.create()
    target = Target(issuer_keys(ca.certificate), {0x1234: "good", 2**64 + 7: "revoked"})
    rng = random.Random(16)
    for n in range(40):
        tree, _ = ocsp_request(rng, target)
        request = encode(tree)
        (directory / f"request-{n}").write_bytes(b"\x00" + request)
        (directory / f"path-{n}").write_bytes(b"\x02" + get_path(request).encode())
        (directory / f"extensions-{n}").write_bytes(b"\x03" + request)
    (directory / "oid").write_bytes(b"\x05" + der.oid("1.3.6.1.5.5.7.48.1.2")[2:])


def main() -> None:
    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):
        corpus = Path(tempfile.mkdtemp(prefix="certstatus-decoder-corpus-"))
        seed_corpus(corpus)
        argv.append(str(corpus))
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
