"""Checking certificates before they are recorded, in this process or across a process pool.

Verifying the issuer's signature is the largest part of what ingest costs (an ECDSA P-256
verification is ~110 µs here; parsing and the other checks ~90 µs, the write ~30 µs), so a
large batch is checked by one process per core. Every process applies the same rules, in check_certificate,
and a batch's result is the same as checked in order here: its records in input order, or the
first bad certificate's refusal.
"""

from __future__ import annotations

import base64
import binascii
import logging
import multiprocessing
import os
import re
import threading
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, SignatureAlgorithmOID

from certstatus.crl.layout import CrlLayout
from certstatus.ingest import der as der_reader
from certstatus.store.base import CertificateRecord

log = logging.getLogger("certstatus.ingest")
CT_POISON = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.3")

# Below this many certificates a batch is checked in this process: starting the pool (spawned
# interpreters that import cryptography) costs more than it saves.
POOL_THRESHOLD = 2_000
CHUNK = 1_000  # certificates per task sent to a checking process

# the algorithms verified with the issuer's key loaded once, and what verify takes for each
_ECDSA = {
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: ec.ECDSA(hashes.SHA256()),
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: ec.ECDSA(hashes.SHA384()),
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: ec.ECDSA(hashes.SHA512()),
}
_RSA_PKCS1: dict[x509.ObjectIdentifier, hashes.HashAlgorithm] = {
    SignatureAlgorithmOID.RSA_WITH_SHA256: hashes.SHA256(),
    SignatureAlgorithmOID.RSA_WITH_SHA384: hashes.SHA384(),
    SignatureAlgorithmOID.RSA_WITH_SHA512: hashes.SHA512(),
}


class IngestError(ValueError):
    """Input refused; nothing was written."""


@dataclass
class IssuerCheck:
    """What checking a certificate needs of one configured issuer; picklable (DER, not
    objects), so a checking process rebuilds it, and its public key is loaded once there."""

    id: int
    name: str
    certificate_der: bytes
    crl: CrlLayout | None
    _loaded: tuple[x509.Certificate, Any, bytes] | None = field(
        default=None, repr=False, compare=False
    )

    @classmethod
    def of(
        cls, issuer_id: int, name: str, certificate: x509.Certificate, crl: CrlLayout | None
    ) -> IssuerCheck:
        return cls(issuer_id, name, certificate.public_bytes(Encoding.DER), crl)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_loaded": None}

    @property
    def certificate(self) -> x509.Certificate:
        return self._load()[0]

    @property
    def subject_der(self) -> bytes:
        return self._load()[2]

    def _load(self) -> tuple[x509.Certificate, Any, bytes]:
        if self._loaded is None:
            certificate = x509.load_der_x509_certificate(self.certificate_der)
            self._loaded = (
                certificate,
                certificate.public_key(),
                certificate.subject.public_bytes(),
            )
        return self._loaded

    def signed(self, certificate: x509.Certificate, tbs: bytes | None = None) -> bool:
        """Whether this issuer's key signed the certificate (its name is checked by the caller).

        The common algorithms are verified with the issuer's public key loaded once (loading it
        for every certificate, as verify_directly_issued_by does, costs a fifth of a P-256
        verification); any other algorithm (RSA-PSS, EdDSA) goes through cryptography's own
        verify_directly_issued_by. tbs: the tbsCertificate as read from the DER (der.py),
        which spares cryptography encoding it again."""
        issuer, key, _ = self._load()
        algorithm = certificate.signature_algorithm_oid
        try:
            if isinstance(key, ec.EllipticCurvePublicKey) and algorithm in _ECDSA:
                key.verify(
                    certificate.signature,
                    certificate.tbs_certificate_bytes if tbs is None else tbs,
                    _ECDSA[algorithm],
                )
            elif isinstance(key, rsa.RSAPublicKey) and algorithm in _RSA_PKCS1:
                key.verify(
                    certificate.signature,
                    certificate.tbs_certificate_bytes if tbs is None else tbs,
                    padding.PKCS1v15(),
                    _RSA_PKCS1[algorithm],
                )
            else:
                certificate.verify_directly_issued_by(issuer)
        except (InvalidSignature, ValueError, TypeError):
            return False
        return True


@dataclass(frozen=True, slots=True)
class Facts:
    """What the checks read of a certificate's extensions, gathered in one pass over them
    (one lookup per extension by class walks the list and raises for every absent one)."""

    ca: bool = False
    ocsp_signing: bool = False
    precertificate: bool = False
    distribution_points: x509.CRLDistributionPoints | None = None


def facts(certificate: x509.Certificate) -> Facts:
    ca = ocsp_signing = precertificate = False
    points = None
    for extension in certificate.extensions:
        oid, value = extension.oid, extension.value
        if oid == ExtensionOID.BASIC_CONSTRAINTS:
            ca = bool(value.ca)
        elif oid == ExtensionOID.EXTENDED_KEY_USAGE:
            ocsp_signing = ExtendedKeyUsageOID.OCSP_SIGNING in value
        elif oid == CT_POISON:
            precertificate = True
        elif oid == ExtensionOID.CRL_DISTRIBUTION_POINTS:
            points = value
    return Facts(ca, ocsp_signing, precertificate, points)


def readable_facts(
    certificate: x509.Certificate, source: str, issuers: Sequence[IssuerCheck]
) -> Facts:
    """facts(), or the same four facts read from the DER (der.py) when cryptography cannot
    read some extension: a malformed extension the checks do not use (a SAN, say) does not
    make a certificate the issuer signed any less issued, and an issued certificate must get
    a status; the DER path records it too. Refused when the DER reader cannot read those
    facts either (it gives up on duplicates and on what it does not expect), and when a CRL
    distribution point would pick the partition: the reader does not parse one."""
    try:
        return facts(certificate)
    except (ValueError, x509.DuplicateExtension) as exc:  # read lazily, and refused here
        leaf = der_reader.read_leaf(certificate.public_bytes(Encoding.DER))
        partitioned = any(
            i.crl is not None and i.certificate.subject == certificate.issuer for i in issuers
        )
        if leaf is None or (leaf.distribution_points and partitioned):
            raise IngestError(
                f"{source}: an extension cannot be read ({exc}); nothing recorded"
            ) from None
        return Facts(leaf.ca, leaf.ocsp_signing, leaf.precertificate)


def not_a_leaf(certificate: x509.Certificate, found: Facts | None = None) -> str | None:
    """Why a certificate is not a subscriber (pre)certificate to record, or None.

    A CA certificate (the issuer itself, an intermediate) or the delegated OCSP responder
    certificate is not a leaf: recorded, it would get signed "good" responses of its own and a
    place on the CRLs, which no relying party should ever be shown for it."""
    found = found or facts(certificate)
    if found.ca:
        return "is a CA certificate, not a subscriber certificate"
    if found.ocsp_signing:
        return "is an OCSP responder certificate (EKU OCSPSigning), not a subscriber certificate"
    return None


def crl_partition(
    certificate: x509.Certificate,
    layout: CrlLayout | None,
    source: str,
    found: Facts | None = None,
) -> int:
    """The CRL partition a certificate belongs to, decided once and stored (R19).

    The CDP written at issuance is the truth; a certificate without one takes the partition the
    layout assigns to its serial. A CDP naming a URL this issuer does not publish is refused:
    no CRL we serve could ever list that certificate.
    """
    if layout is None:
        return 0
    points = (found or facts(certificate)).distribution_points
    if points is None:
        return layout.partition_for_serial(certificate.serial_number)
    urls = [
        name.value
        for point in points
        for name in point.full_name or []
        if isinstance(name, x509.UniformResourceIdentifier)
    ]
    for url in urls:
        partition = layout.partition_from_url(url)
        if partition is not None:
            return partition
    raise IngestError(
        f"{source}: its CRL distribution point {urls} is not a URL of issuer "
        f"{layout.issuer!r} ({layout.url_template}); fix crl_url or the CA's CDP"
    )


def check_certificate(
    certificate: x509.Certificate, source: str, issuers: Sequence[IssuerCheck]
) -> CertificateRecord:
    """The record of a subscriber (pre)certificate signed by a configured issuer, or
    IngestError naming source: not a leaf, an unknown issuer, a bad signature, a foreign CDP.

    Issuers are matched on the issuer name's DER, which is what verify_directly_issued_by
    compares too; an equal name spelled differently is still matched (and then refused for
    its signature), so the refusal names the issuer it claims."""
    found = readable_facts(certificate, source, issuers)
    refused = not_a_leaf(certificate, found)
    if refused is not None:
        raise IngestError(f"{source}: {refused}; nothing recorded")
    issuer_der = certificate.issuer.public_bytes()
    candidates = [i for i in issuers if i.subject_der == issuer_der] or [
        i for i in issuers if i.certificate.subject == certificate.issuer
    ]
    if not candidates:
        raise IngestError(
            f"{source}: issued by {certificate.issuer.rfc4514_string()}, which is not a "
            "configured issuer"
        )
    for issuer in candidates:
        if not issuer.signed(certificate):
            continue
        return CertificateRecord(
            issuer.id,
            certificate.serial_number,
            "precert" if found.precertificate else "cert",
            int(certificate.not_valid_after_utc.timestamp()),
            crl_partition(certificate, issuer.crl, source, found),
            int(certificate.not_valid_before_utc.timestamp()),
        )
    raise IngestError(
        f"{source}: signature does not verify against issuer {candidates[0].name!r}; not recorded"
    )


def check_parsed(
    certificate: x509.Certificate, der: bytes, source: str, issuers: Sequence[IssuerCheck]
) -> CertificateRecord:
    """check_certificate's answer, reading what it needs from the DER (der.py) instead of
    cryptography's extension and Name objects, which cost more than half a P-256
    verification. The slow path decides whatever the reader leaves (an unusual encoding),
    an issuer name that is not byte for byte a configured issuer's, and a CRL distribution
    point that must be matched to a partition; test_ingest_der checks both agree."""
    leaf = der_reader.read_leaf(der)
    if leaf is None:
        return check_certificate(certificate, source, issuers)
    found = Facts(leaf.ca, leaf.ocsp_signing, leaf.precertificate)
    refused = not_a_leaf(certificate, found)
    if refused is not None:
        raise IngestError(f"{source}: {refused}; nothing recorded")
    candidates = [i for i in issuers if i.subject_der == leaf.issuer]
    if not candidates or (leaf.distribution_points and any(i.crl is not None for i in candidates)):
        return check_certificate(certificate, source, issuers)
    for issuer in candidates:
        if issuer.signed(certificate, leaf.tbs):
            return CertificateRecord(
                issuer.id,
                certificate.serial_number,
                "precert" if leaf.precertificate else "cert",
                int(certificate.not_valid_after_utc.timestamp()),
                crl_partition(certificate, issuer.crl, source, found),
                int(certificate.not_valid_before_utc.timestamp()),
            )
    raise IngestError(
        f"{source}: signature does not verify against issuer {candidates[0].name!r}; not recorded"
    )


_issuers: list[IssuerCheck] = []


def _init_checker(issuers: list[IssuerCheck]) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when checking stops
    _issuers[:] = issuers


def parse_and_check(
    items: Sequence[tuple[bytes, str]], issuers: Sequence[IssuerCheck]
) -> list[CertificateRecord]:
    """Each (DER, source) parsed and checked, in order; the first bad one is refused."""
    records = []
    for data, source in items:
        try:
            certificate = x509.load_der_x509_certificate(data)
        except (ValueError, x509.InvalidVersion):  # InvalidVersion is not a ValueError
            raise IngestError(f"{source}: not a PEM or DER certificate; nothing recorded") from None
        records.append(check_parsed(certificate, data, source, issuers))
    return records


Row = tuple[int, int, str, int, int, int | None]  # a CertificateRecord's fields, in order
Chunks = Generator[list[CertificateRecord], None, None]  # checked records, a chunk at a time


def _ready() -> None:
    """A task that only makes the pool start a process (Checker.start)."""


def _check_chunk(items: list[tuple[bytes, str]]) -> list[Row]:
    """In a checking process: the records as plain tuples, which pickle and unpickle in a
    fifteenth of a dataclass's time (the parent unpickles every one)."""
    return [
        (r.issuer_id, r.serial, r.kind, r.not_after, r.crl_partition, r.not_before)
        for r in parse_and_check(items, _issuers)
    ]


_BEGIN = re.compile(rb"-----BEGIN (?:X509 )?CERTIFICATE-----")
_END = re.compile(rb"-----END (?:X509 )?CERTIFICATE-----")
_WHITESPACE = b" \t\n\r\x0b\x0c"  # what bytes.split() splits on


def pem_blocks(data: bytes) -> Iterator[bytes]:
    """The text between each CERTIFICATE block's BEGIN line and the first END line after it,
    as a regular expression BEGIN(.*?)END would find them, but searching for the markers
    instead of trying the lazy match at every byte (a ninth of the time)."""
    pos = 0
    while (begin := _BEGIN.search(data, pos)) is not None:
        end = _END.search(data, begin.end())
        if end is None:
            return
        yield data[begin.end() : end.start()]
        pos = end.end()


def certificate_ders(path: Path) -> list[bytes]:
    """The DER of each certificate in a PEM file (one or more CERTIFICATE blocks; others are
    ignored) or in a DER file, split without parsing: whoever checks them parses them, a
    checking process for a large file. Refused with one plain line naming the file: an
    empty file, one that holds no certificate, a block that is not base64."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IngestError(f"{path}: cannot read: {exc.strerror or exc}; nothing recorded") from None
    if not data.strip():
        raise IngestError(f"{path}: is empty; expected a PEM or DER certificate; nothing recorded")
    if b"-----BEGIN" not in data:
        return [data]
    try:
        ders = [
            base64.b64decode(block.translate(None, _WHITESPACE), validate=True)
            for block in pem_blocks(data)
        ]
    except binascii.Error:
        ders = []
    if not ders or not all(ders):
        raise IngestError(f"{path}: not a PEM or DER certificate; nothing recorded")
    return ders


class Checker:
    """Checks batches of certificates: in this process below POOL_THRESHOLD (or with one
    process), otherwise across a pool of processes started on first need and kept for the
    next batch (the API checks many batches). processes=None: one per core."""

    def __init__(self, issuers: Sequence[IssuerCheck], processes: int | None = None) -> None:
        self.issuers = list(issuers)
        self.processes = processes if processes is not None else (os.cpu_count() or 1)
        self._pool: Executor | None = None
        self._lock = threading.Lock()  # the API checks batches from several threads

    def check(
        self, certificates: Sequence[tuple[x509.Certificate, str]]
    ) -> list[CertificateRecord]:
        """Every certificate's record in input order, or the first refusal in input order."""
        if self.processes <= 1 or len(certificates) < POOL_THRESHOLD:
            return [
                check_parsed(c, c.public_bytes(Encoding.DER), s, self.issuers)
                for c, s in certificates
            ]
        return self.check_ders([(c.public_bytes(Encoding.DER), s) for c, s in certificates])

    def check_ders(self, items: Sequence[tuple[bytes, str]]) -> list[CertificateRecord]:
        """As check, for certificates still in DER (parsed where they are checked)."""
        return [record for chunk in self.check_der_chunks(items) for record in chunk]

    def check_der_chunks(self, items: Sequence[tuple[bytes, str]]) -> Chunks:
        """check_ders' records a chunk at a time, in input order, each as soon as it and
        every chunk before it are checked, so a caller can write one while the next are
        checked. The first refusal in input order is raised where its chunk would come:
        the caller has seen the chunks before it and must undo them (one transaction)."""
        if self.processes <= 1 or len(items) < POOL_THRESHOLD:
            yield parse_and_check(items, self.issuers)
            return
        yield from self._pooled(items)

    def _pooled(self, items: Sequence[tuple[bytes, str]]) -> Chunks:
        """Chunks checked across the pool, yielded in order. A pool whose process died
        (killed, out of memory) is dropped, and what is left of the batch is checked here
        instead: slower, never a different answer."""
        futures = []
        done = 0  # items already yielded
        try:
            try:
                pool = self._executor()
                futures = [
                    pool.submit(_check_chunk, list(items[i : i + CHUNK]))
                    for i in range(0, len(items), CHUNK)
                ]
            except BrokenProcessPool:  # it broke before this batch (a process killed between)
                log.warning("a checking process died; checking this batch in this process")
                self.close()
                yield parse_and_check(items, self.issuers)
                return
            for future in futures:  # in order: the first failed chunk holds the first refusal
                try:
                    rows = future.result()
                except BrokenProcessPool:
                    log.warning("a checking process died; checking this batch in this process")
                    self.close()
                    yield parse_and_check(items[done:], self.issuers)
                    return
                yield [CertificateRecord(*row) for row in rows]
                done += len(rows)
        finally:  # also when the caller stops early: nothing more is checked for it
            for future in futures:
                future.cancel()

    def start(self) -> None:
        """Start the checking processes now, without waiting for them: a spawned interpreter
        takes ~0.5 s of CPU to import what it checks with, which a caller about to read a
        large file can overlap with the reading."""
        if self.processes > 1:
            try:
                pool = self._executor()
                for _ in range(self.processes):
                    pool.submit(_ready)
            except BrokenProcessPool:  # the next batch starts a new one
                self.close()

    def _executor(self) -> Executor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    self.processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_checker,
                    initargs=(self.issuers,),
                )
            return self._pool

    def __enter__(self) -> Checker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
