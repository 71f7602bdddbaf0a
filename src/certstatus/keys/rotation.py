"""Responder-certificate rotation (R6, R21): a new key, a CSR with the R6 profile, and the
installation of the certificate issued for it.

The configuration never changes: `responder_key` keeps naming the same PEM path or token label,
and `responder_certificate` the same file. `request` puts the new key beside the current one
(`<key>.next`, mode 0600, or the token label `<label>.next`, generated in the token);
`install` checks the certificate against the issuer, the R6 profile and the new key, keeps the
old key and certificate under a `.retired-<UTC time>` name, moves the new key into place, and
writes the certificate last. Running signing roles watch the certificate file and switch to
the new pair between two signing passes (signer/loop.py); responses signed with the old
certificate stay valid until their nextUpdate, since that certificate is not revoked.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certstatus.config import Config, ConfigError, IssuerConfig, load_issuer_material
from certstatus.files import PRIVATE, PUBLIC, write_file
from certstatus.keys.base import KeyFileError, SigningKey
from certstatus.keys.certificates import load_certificate, responder_problems
from certstatus.keys.issue import certificate_request, sign_certificate
from certstatus.keys.source import KeyRef, open_key
from certstatus.keys.uri import Pkcs11Uri

NEXT = ".next"


class RotationError(ValueError):
    """A rotation step refused; the message says why and what to do."""


def r6_extensions(issuer: x509.Certificate) -> list[tuple[x509.ExtensionType, bool]]:
    """The R6 profile a responder certificate must carry, as (extension, critical)."""
    from cryptography.x509.oid import ExtendedKeyUsageOID

    return [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.KeyUsage(True, False, False, False, False, False, False, False, False), True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), False),
        (x509.OCSPNoCheck(), False),
    ]


@dataclass(frozen=True)
class Rotation:
    """One issuer's responder key and certificate, and where the pending new key is."""

    config: Config
    issuer: IssuerConfig

    @classmethod
    def of(cls, config: Config, name: str) -> Rotation:
        for issuer in config.issuers:
            if issuer.name == name:
                if issuer.responder_key is None:
                    raise RotationError(f"issuer {name!r} has no responder_key configured")
                return cls(config, issuer)
        known = ", ".join(i.name for i in config.issuers)
        raise RotationError(f"no issuer named {name!r} (configured: {known})")

    @property
    def current(self) -> Pkcs11Uri | Path:
        assert self.issuer.responder_key is not None
        return self.issuer.responder_key

    @property
    def pending(self) -> Pkcs11Uri | Path:
        """Where request puts the new key: `<key>.next` or the token label `<label>.next`."""
        current = self.current
        if isinstance(current, Pkcs11Uri):
            if current.label is None or current.id is not None:
                raise RotationError(
                    f"{current}: rotation needs a URI naming the key by object= only (no id=)"
                )
            text = current.text.replace(f"object={_quote(current.label)}",
                                        f"object={_quote(current.label + NEXT)}")  # fmt: skip
            return Pkcs11Uri.parse(text)
        return current.with_name(current.name + NEXT)

    def pending_key(self) -> SigningKey:
        try:
            return open_key(self.config.key_ref(self.pending))
        except KeyFileError:
            raise RotationError(
                f"no pending responder key for {self.issuer.name!r} at {self.pending}; run "
                f"`certstatus responder-cert request --issuer {self.issuer.name}` first"
            ) from None

    def request(self, out: Path) -> SigningKey:
        """Create the new key (refusing to replace a pending one) and write a CSR to out."""
        pending = self.pending
        current_certificate = load_certificate(self.issuer.responder_certificate)
        if isinstance(pending, Pkcs11Uri):
            from certstatus.keys.token_admin import generate_key

            access = self.config.key_ref(pending).access
            assert access is not None  # Config.problems requires [pkcs11] for a URI
            if _exists(self.config.key_ref(pending)):
                raise RotationError(
                    f"a pending key already exists at {pending}; install its certificate, "
                    "or delete that object from the token, first"
                )
            generate_key(access, pending.token, pending.label or "", _kind(current_certificate))
        else:
            if pending.exists():
                raise RotationError(
                    f"a pending key already exists at {pending}; install its certificate, "
                    "or remove that file, first"
                )
            write_file(pending, _new_pem_key(current_certificate), PRIVATE)
        key = open_key(self.config.key_ref(pending))
        issuer = load_certificate(self.issuer.certificate)
        csr = certificate_request(current_certificate.subject, key, r6_extensions(issuer))
        write_file(out, csr.public_bytes(serialization.Encoding.PEM), PUBLIC)
        return key

    def self_issue(self, days: int = 365) -> x509.Certificate:
        """The demo's shortcut: the issuer key signs an R6 certificate for the pending key."""
        if self.issuer.issuer_key is None:
            raise RotationError(
                f"--self-issue needs issuers[{self.issuer.name}].issuer_key (the CA key)"
            )
        ca = open_key(self.config.key_ref(self.issuer.issuer_key))
        issuer = load_certificate(self.issuer.certificate)
        key = self.pending_key()
        now = dt.datetime.now(dt.UTC)
        public = serialization.load_der_public_key(key.public_key_der())
        builder = (
            x509.CertificateBuilder()
            .subject_name(load_certificate(self.issuer.responder_certificate).subject)
            .issuer_name(issuer.subject)
            .public_key(public)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
        )
        for extension, critical in r6_extensions(issuer):
            builder = builder.add_extension(extension, critical)
        return sign_certificate(builder, ca)

    def check(self, certificate: x509.Certificate) -> SigningKey:
        """Everything wrong with the certificate for the pending key, at once."""
        key = self.pending_key()
        issuer = load_certificate(self.issuer.certificate)
        margin = dt.timedelta(seconds=self.config.signing.responder_expiry_margin)
        problems = responder_problems(
            certificate, issuer, dt.datetime.now(dt.UTC), margin, key.public_key_der()
        )
        if problems:
            raise RotationError(
                "; ".join(f"the certificate {p}" for p in problems).replace(
                    "does not match its private key", f"is not for the pending key {self.pending}"
                )
            )
        return key

    def install(self, certificate: x509.Certificate) -> str:
        """Check, keep the old pair as retired, move the new key into place, then write the
        certificate (what running signers watch). Returns the retired suffix."""
        self.check(certificate)
        stamp = ".retired-" + dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        current, pending = self.current, self.pending
        if isinstance(current, Pkcs11Uri):
            from certstatus.keys.pkcs11 import forget_tokens
            from certstatus.keys.token_admin import relabel

            access = self.config.key_ref(current).access
            assert access is not None and current.label is not None
            forget_tokens()  # this process's sessions; relabelling opens its own
            relabel(access, current.token, current.label, current.label + stamp)
            relabel(access, current.token, current.label + NEXT, current.label)
        else:
            assert isinstance(pending, Path)
            os.link(current, current.with_name(current.name + stamp))
            os.replace(pending, current)
        old = self.issuer.responder_certificate
        os.link(old, old.with_name(old.name + stamp))
        write_file(old, certificate.public_bytes(serialization.Encoding.PEM), PUBLIC)
        try:  # the whole issuer must now load as the signing roles will load it
            load_issuer_material(self.config)
        except ConfigError as exc:
            raise RotationError(f"installed, but the configuration does not load: {exc}") from None
        return stamp


def _exists(ref: KeyRef) -> bool:
    try:
        open_key(ref)
    except KeyFileError:
        return False
    return True


def _kind(certificate: x509.Certificate) -> str:
    """The new key is of the same type and size as the current one."""
    public = certificate.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        return "p384" if isinstance(public.curve, ec.SECP384R1) else "p256"
    if isinstance(public, rsa.RSAPublicKey):
        return f"rsa{max(2048, public.key_size)}"
    raise RotationError("the current responder key is neither EC nor RSA")


def _new_pem_key(certificate: x509.Certificate) -> bytes:
    kind = _kind(certificate)
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if kind == "p256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif kind == "p384":
        key = ec.generate_private_key(ec.SECP384R1())
    else:
        key = rsa.generate_private_key(65537, int(kind[3:]))
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="-._~")
