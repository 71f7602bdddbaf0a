"""R6/R21/F8: a responder certificate that breaks the profile or is about to expire stops the
service at start-up, with a message that says what is wrong."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from certstatus.config import ConfigError, load_issuer_material
from certstatus.demo.ca import (
    DemoCA,
    Extensions,
    responder_builder,
    responder_extensions,
    write_pem,
)
from certstatus.keys.certificates import responder_problems

NOW = dt.datetime.now(dt.UTC)
DAYS = dt.timedelta(days=1)
CA = DemoCA.create()
KEY = ec.generate_private_key(ec.SECP256R1())


Change = Callable[[Extensions], Extensions]


def built(change: Change = lambda e: e, signer: DemoCA = CA, days: int = 90) -> x509.Certificate:
    extensions = change(responder_extensions(CA))
    builder = responder_builder(CA, KEY, NOW - DAYS, NOW + days * DAYS, extensions)
    return builder.sign(signer.key, hashes.SHA256())


def replace(
    oid: x509.ObjectIdentifier, value: x509.ExtensionType | None, critical: bool = False
) -> Change:
    """Drop the extension with oid from the profile and add value in its place (if any)."""

    def change(extensions: Extensions) -> Extensions:
        kept = [(e, c) for e, c in extensions if e.oid != oid]
        return [*kept, (value, critical)] if value is not None else kept

    return change


def problems(cert: x509.Certificate, margin_days: int = 14) -> list[str]:
    return responder_problems(cert, CA.certificate, NOW, margin_days * DAYS)


def test_demo_profile_passes_r6() -> None:
    assert problems(built()) == []


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (
            replace(
                ExtensionOID.EXTENDED_KEY_USAGE,
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.OCSP_SIGNING, ExtendedKeyUsageOID.SERVER_AUTH]
                ),
            ),
            "extendedKeyUsage",
        ),
        (replace(ExtensionOID.OCSP_NO_CHECK, None), "nocheck extension is missing"),
        (
            replace(ExtensionOID.OCSP_NO_CHECK, x509.OCSPNoCheck(), critical=True),
            "nocheck must not be critical",
        ),
        (
            replace(
                ExtensionOID.KEY_USAGE,
                x509.KeyUsage(True, False, True, False, False, False, False, False, False),
                critical=True,
            ),
            "digitalSignature only",
        ),
        (
            replace(ExtensionOID.BASIC_CONSTRAINTS, x509.BasicConstraints(True, None), True),
            "cA must be false",
        ),
        (
            replace(
                ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
                x509.SubjectAlternativeName([x509.DNSName("ocsp.example")]),
            ),
            "subjectAltName",
        ),
        (
            replace(
                ExtensionOID.CRL_DISTRIBUTION_POINTS,
                x509.CRLDistributionPoints(
                    [
                        x509.DistributionPoint(
                            [x509.UniformResourceIdentifier("http://crl.example/")],
                            None,
                            None,
                            None,
                        )
                    ]
                ),
            ),
            "cRLDistributionPoints",
        ),
    ],
)
def test_each_r6_violation_is_named(change, fragment: str) -> None:
    found = problems(built(change))
    assert any(fragment in p for p in found), found


def test_not_issued_by_the_ca_r6() -> None:
    other = DemoCA.create("another CA")
    assert any("not issued directly" in p for p in problems(built(signer=other)))


def test_expiring_within_margin_r21() -> None:
    found = problems(built(days=10), margin_days=14)
    assert any("R21" in p for p in found)
    assert problems(built(days=20), margin_days=14) == []


def test_startup_refuses_with_key_and_reason(deployment) -> None:
    cert = built(replace(ExtensionOID.OCSP_NO_CHECK, None))
    # a certificate for a different key, and without nocheck
    write_pem(deployment.dir / "responder.pem", cert)
    with pytest.raises(ConfigError) as error:
        load_issuer_material(deployment.config)
    text = str(error.value)
    assert "issuers[0].responder_certificate" in text
    assert "nocheck extension is missing" in text
    assert "does not match its private key" in text
