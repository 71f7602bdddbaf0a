"""A throwaway CA for the demo and the tests: a root, a delegated OCSP responder, leaves.

The responder certificate follows the BR profile (R6), so the same checks that guard production
accept it; the tests also use this module to build deliberately broken certificates.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certstatus.files import PRIVATE, PUBLIC, write_file
from certstatus.keys.base import SigningKey
from certstatus.keys.issue import sign_certificate

PrivateKey = ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "XX"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certstatus demo"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def write_pem(path: Path, certificate: x509.Certificate) -> None:
    write_file(path, certificate.public_bytes(serialization.Encoding.PEM), PUBLIC)


def write_key(path: Path, key: PrivateKey) -> None:
    """The key in PKCS#8 PEM, in a file that is 0600 from its creation (never chmod-ed)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_file(path, pem, PRIVATE)


Extensions = list[tuple[x509.ExtensionType, bool]]


def responder_extensions(ca: DemoCA) -> Extensions:
    """The R6 profile of a delegated responder certificate, as (extension, critical) pairs."""
    return [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.KeyUsage(True, False, False, False, False, False, False, False, False), True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), False),
        (x509.OCSPNoCheck(), False),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()), False),
    ]


def responder_builder(
    ca: DemoCA,
    key: Any,
    not_before: dt.datetime,
    not_after: dt.datetime,
    extensions: Extensions | None = None,
) -> x509.CertificateBuilder:
    """A responder certificate builder; tests pass altered extensions to break one rule."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{ca.name} OCSP responder"))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key() if hasattr(key, "private_numbers") else key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for extension, critical in responder_extensions(ca) if extensions is None else extensions:
        builder = builder.add_extension(extension, critical)
    return builder


@dataclass
class DemoCA:
    """key is the CA's private key in memory; token_key, when set, is the CA key in a PKCS#11
    token instead (key is then None) and everything is signed through it."""

    name: str
    key: PrivateKey | None
    certificate: x509.Certificate
    token_key: SigningKey | None = None

    def public_key(self) -> Any:
        return self.certificate.public_key()

    def sign(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        if self.token_key is not None:
            return sign_certificate(builder, self.token_key)
        assert self.key is not None
        return builder.sign(self.key, hashes.SHA256())

    @classmethod
    def in_token(
        cls, key: SigningKey, name: str = "certstatus demo CA", now: dt.datetime | None = None
    ) -> DemoCA:
        """A CA whose key is on a token: its self-signed certificate signed there."""
        now = now or dt.datetime.now(dt.UTC)
        public = serialization.load_der_public_key(key.public_key_der())
        builder = ca_builder(_name(name), public, now)
        return cls(name, None, sign_certificate(builder, key), key)

    def responder_for(
        self, public_key: Any, days: int = 365, now: dt.datetime | None = None
    ) -> x509.Certificate:
        """An R6 responder certificate for a key held elsewhere (a token, a CSR)."""
        now = now or dt.datetime.now(dt.UTC)
        builder = responder_builder(
            self, public_key, now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)
        )
        return self.sign(builder)

    @classmethod
    def create(cls, name: str = "certstatus demo CA", now: dt.datetime | None = None) -> DemoCA:
        now = now or dt.datetime.now(dt.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = ca_builder(_name(name), key.public_key(), now).sign(key, hashes.SHA256())
        return cls(name, key, certificate)

    @classmethod
    def load(cls, certificate_path: Path, key_path: Path) -> DemoCA:
        certificate = x509.load_pem_x509_certificate(certificate_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        common_name = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        return cls(str(common_name), key, certificate)

    def responder(
        self, days: int = 365, now: dt.datetime | None = None
    ) -> tuple[x509.Certificate, PrivateKey]:
        now = now or dt.datetime.now(dt.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        builder = responder_builder(
            self, key, now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)
        )
        return self.sign(builder), key

    def leaf(
        self,
        public_key: ec.EllipticCurvePublicKey,
        serial: int,
        ocsp_url: str,
        precertificate: bool = False,
        days: int = 90,
        now: dt.datetime | None = None,
        crl_url: str | None = None,
    ) -> x509.Certificate:
        now = now or dt.datetime.now(dt.UTC)
        host = f"host-{serial:x}.demo.invalid"[:63]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(serial)
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.public_key()),
                critical=False,
            )
            .add_extension(
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            x509.oid.AuthorityInformationAccessOID.OCSP,
                            x509.UniformResourceIdentifier(ocsp_url),
                        )
                    ]
                ),
                critical=False,
            )
        )
        if crl_url is not None:
            point = x509.DistributionPoint(
                [x509.UniformResourceIdentifier(crl_url)], None, None, None
            )
            builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
        if precertificate:
            builder = builder.add_extension(x509.PrecertPoison(), critical=True)
        return self.sign(builder)


def ca_builder(subject: x509.Name, public_key: Any, now: dt.datetime) -> x509.CertificateBuilder:
    """A self-signed CA's certificate, ready to sign: the demo CA's, the API's demo CA's and the
    benchmarks' (any key type)."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
