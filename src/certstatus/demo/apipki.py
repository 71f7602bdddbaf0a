"""A throwaway PKI for the issuance API (the demo and the tests): a CA that issues the API's
TLS server certificate and its clients' certificates. In production the API's server
certificate and the client CA are the CA's own (its internal PKI)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certstatus.demo.ca import ca_builder

Key = ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certstatus api demo"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def write_secret_key(path: Path, key: Key) -> None:
    """A private key created with mode 0600: never readable by others, not even for an instant
    between writing it and a chmod."""
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def write_certificate(path: Path, certificate: x509.Certificate) -> None:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


@dataclass
class ApiCA:
    certificate: x509.Certificate
    key: Key

    @classmethod
    def create(cls, name: str = "certstatus API demo CA") -> ApiCA:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        certificate = ca_builder(_name(name), key.public_key(), now).sign(key, hashes.SHA256())
        return cls(certificate, key)

    def _issue(
        self,
        common_name: str,
        usage: x509.ObjectIdentifier,
        sans: list[x509.GeneralName],
        not_before: dt.datetime,
        not_after: dt.datetime,
    ) -> tuple[x509.Certificate, Key]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self.key, hashes.SHA256()), key

    def server(self, hosts: list[str], days: int = 825) -> tuple[x509.Certificate, Key]:
        """The API's TLS server certificate for these names and addresses."""
        sans: list[x509.GeneralName] = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        now = dt.datetime.now(dt.UTC)
        return self._issue(
            hosts[0],
            ExtendedKeyUsageOID.SERVER_AUTH,
            sans,
            now - dt.timedelta(minutes=5),
            now + dt.timedelta(days=days),
        )

    def client(self, name: str, expired: bool = False) -> tuple[x509.Certificate, Key]:
        """A client certificate (clientAuth); expired: its validity ended yesterday."""
        now = dt.datetime.now(dt.UTC)
        if expired:
            start, end = now - dt.timedelta(days=30), now - dt.timedelta(days=1)
        else:
            start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(days=825)
        return self._issue(name, ExtendedKeyUsageOID.CLIENT_AUTH, [], start, end)
