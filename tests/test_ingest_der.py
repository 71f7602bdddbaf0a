"""Ingest's DER reader (ingest/der.py) and the fast check built on it (check.check_parsed),
against cryptography's x509 objects and check_certificate as oracles: the same facts, the same
record, the same refusal, for every certificate the reader answers; where it answers None the
slow path decides. R5: only subscriber (pre)certificates of a configured issuer are recorded,
every signature verified."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from certstatus.crl.layout import CrlLayout
from certstatus.ingest import check, der
from certstatus.ingest.api import IngestError

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
CA_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "der test CA")])
CA_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())  # the CA's name, another key
LEAF_KEY = ec.generate_private_key(ec.SECP256R1()).public_key()
LAYOUT = CrlLayout("der", "http://crl.invalid/{issuer}/{partition}.crl", 4)


def _ca(key: ec.EllipticCurvePrivateKey, name: x509.Name = CA_NAME) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


CA = _ca(CA_KEY)

EXTENSIONS: dict[str, x509.ExtensionType] = {
    "leaf": x509.BasicConstraints(ca=False, path_length=None),
    "ca": x509.BasicConstraints(ca=True, path_length=None),
    "ca_pathlen": x509.BasicConstraints(ca=True, path_length=0),
    "server_auth": x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
    "ocsp_signing": x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.OCSP_SIGNING]
    ),
    "poison": x509.PrecertPoison(),
    "cdp_ours": x509.CRLDistributionPoints(
        [x509.DistributionPoint([x509.UniformResourceIdentifier(LAYOUT.url(3))], None, None, None)]
    ),
    "cdp_foreign": x509.CRLDistributionPoints(
        [
            x509.DistributionPoint(
                [x509.UniformResourceIdentifier("http://elsewhere.invalid/x.crl")],
                None,
                None,
                None,
            )
        ]
    ),
    "san": x509.SubjectAlternativeName([x509.DNSName("host.der.invalid")]),
    "ian": x509.IssuerAlternativeName([x509.DNSName("ca.der.invalid")]),
    "key_usage": x509.KeyUsage(True, False, False, False, False, False, False, False, False),
    "ski": x509.SubjectKeyIdentifier.from_public_key(LEAF_KEY),
    # a GeneralNames SEQUENCE whose one dNSName runs past its end: cryptography refuses it
    "bad_san": x509.UnrecognizedExtension(
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x30\x03\x82\x05a"
    ),
    "aki": x509.AuthorityKeyIdentifier.from_issuer_public_key(CA_KEY.public_key()),
}
KINDS = {"leaf": 0, "ca": 0, "ca_pathlen": 0, "server_auth": 1, "ocsp_signing": 1}


def _leaf(
    names: list[str],
    serial: int = 0x1234,
    key: ec.EllipticCurvePrivateKey = CA_KEY,
    issuer: x509.Name = CA_NAME,
    critical: bool = False,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")]))
        .issuer_name(issuer)
        .public_key(LEAF_KEY)
        .serial_number(serial)
        .not_valid_before(NOW - dt.timedelta(minutes=5))
        .not_valid_after(NOW + dt.timedelta(days=90))
    )
    for name in names:
        extension = EXTENSIONS[name]
        builder = builder.add_extension(extension, critical=critical or name == "poison")
    return builder.sign(key, hashes.SHA256())


def _assert_agrees(certificate: x509.Certificate) -> None:
    data = certificate.public_bytes(Encoding.DER)
    leaf = der.read_leaf(data)
    assert leaf is not None
    facts = check.facts(certificate)
    assert leaf.tbs == certificate.tbs_certificate_bytes
    assert leaf.issuer == certificate.issuer.public_bytes()
    assert (leaf.ca, leaf.ocsp_signing, leaf.precertificate) == (
        facts.ca,
        facts.ocsp_signing,
        facts.precertificate,
    )
    assert leaf.distribution_points == (facts.distribution_points is not None)


# one of each family at most (a certificate holds an extension once)
_FAMILIES = [
    ["leaf", "ca", "ca_pathlen"],
    ["server_auth", "ocsp_signing"],
    ["poison"],
    ["cdp_ours", "cdp_foreign"],
    ["san"],
    ["key_usage"],
    ["ski"],
    ["aki"],
]


@st.composite
def extension_sets(draw: st.DrawFn) -> tuple[list[str], bool]:
    names = [draw(st.sampled_from(family)) for family in _FAMILIES if draw(st.booleans())]
    return draw(st.permutations(names)), draw(st.booleans())


@settings(max_examples=60, deadline=None)
@given(extension_sets(), st.integers(min_value=1, max_value=2**159 - 1))
def test_reader_agrees_with_cryptography(chosen: tuple[list[str], bool], serial: int) -> None:
    """Any mix of extensions, in any order, critical or not, any serial length."""
    names, critical = chosen
    _assert_agrees(_leaf(names, serial, critical=critical))


def test_reader_reads_an_rsa_issued_certificate_and_no_extensions() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(CA_NAME)
        .issuer_name(CA_NAME)
        .public_key(LEAF_KEY)
        .serial_number(7)
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=1))
        .sign(rsa_key, hashes.SHA256())
    )
    _assert_agrees(certificate)


def test_reader_gives_up_on_what_it_does_not_expect() -> None:
    """A duplicate extension (cryptography refuses it), a basicConstraints value it cannot
    read, truncated input: None, and the caller takes cryptography's path."""
    data = bytearray(_leaf(["leaf", "server_auth"]).public_bytes(Encoding.DER))
    eku = bytes.fromhex("0603") + der.EXTENDED_KEY_USAGE
    at = bytes(data).index(eku)
    duplicate = bytes(data[:at]) + bytes.fromhex("0603") + der.BASIC_CONSTRAINTS
    duplicate += bytes(data[at + len(eku) :])
    assert der.read_leaf(duplicate) is None
    with pytest.raises(x509.DuplicateExtension):
        x509.load_der_x509_certificate(duplicate).extensions  # noqa: B018
    bc = bytes(data).index(bytes.fromhex("0603") + der.BASIC_CONSTRAINTS)
    garbled = bytearray(data)
    value = bytes(data).index(b"\x04\x02\x30\x00", bc)  # OCTET STRING { SEQUENCE {} }
    garbled[value + 3] = 0x05  # a SEQUENCE claiming more than the value holds
    assert der.read_leaf(bytes(garbled)) is None
    for cut in (0, 1, 10, len(data) // 2, len(data) - 1):
        assert der.read_leaf(bytes(data[:cut])) is None


def test_reader_never_raises_and_agrees_on_mutated_certificates() -> None:
    """Bytes flipped anywhere in a certificate: the reader answers None or, for a certificate
    cryptography still parses with its extensions, exactly what cryptography reads."""
    rng = random.Random(15)
    base = _leaf(["leaf", "ocsp_signing", "poison", "cdp_ours", "san"]).public_bytes(Encoding.DER)
    agreed = 0
    for _ in range(3000):
        data = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        leaf = der.read_leaf(bytes(data))
        try:
            certificate = x509.load_der_x509_certificate(bytes(data))
            facts = check.facts(certificate)
            tbs, issuer = certificate.tbs_certificate_bytes, certificate.issuer.public_bytes()
        except (ValueError, x509.InvalidVersion):
            continue
        if leaf is None:
            continue
        agreed += 1
        assert (leaf.ca, leaf.ocsp_signing, leaf.precertificate) == (
            facts.ca,
            facts.ocsp_signing,
            facts.precertificate,
        )
        assert leaf.distribution_points == (facts.distribution_points is not None)
        assert (leaf.tbs, leaf.issuer) == (tbs, issuer)
    assert agreed > 100  # most mutations land in a key, a signature or a name


ISSUERS = [
    check.IssuerCheck.of(1, "der", CA, None),
    check.IssuerCheck.of(2, "rolled", _ca(OTHER_KEY), None),  # the same name, another key
]
WITH_CRL = [check.IssuerCheck.of(1, "der", CA, LAYOUT)]


def _outcome(function, certificate: x509.Certificate, issuers) -> object:
    try:
        return function(certificate, issuers)
    except IngestError as exc:
        return str(exc)


def _fast(certificate: x509.Certificate, issuers) -> object:
    return check.check_parsed(certificate, certificate.public_bytes(Encoding.DER), "s", issuers)


def _slow(certificate: x509.Certificate, issuers) -> object:
    return check.check_certificate(certificate, "s", issuers)


STRANGER = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stranger")])
CASES = {
    "leaf": _leaf(["leaf", "server_auth", "san"]),
    "precertificate": _leaf(["leaf", "poison"]),
    "ca": _leaf(["ca_pathlen"]),
    "responder": _leaf(["ocsp_signing"]),
    "signed by the rolled key": _leaf(["leaf"], key=OTHER_KEY),
    "bad signature": _leaf(["leaf"], key=ec.generate_private_key(ec.SECP256R1())),
    "unknown issuer": _leaf(["leaf"], issuer=STRANGER),
    "our CDP": _leaf(["leaf", "cdp_ours"], serial=0x10),
    "foreign CDP": _leaf(["cdp_foreign"]),
    "no CDP": _leaf(["leaf"], serial=0x11),
    "malformed SAN": _leaf(["leaf", "bad_san"], serial=0x12),
    "malformed SAN and our CDP": _leaf(["leaf", "bad_san", "cdp_ours"], serial=0x13),
    "malformed SAN, a CA": _leaf(["ca", "bad_san"], serial=0x14),
    "malformed SAN, a responder": _leaf(["ocsp_signing", "bad_san"], serial=0x15),
    "malformed SAN, a precertificate": _leaf(["leaf", "poison", "bad_san"], serial=0x16),
}


@pytest.mark.parametrize("issuers", [ISSUERS, WITH_CRL], ids=["no CRLs", "partitioned CRLs"])
@pytest.mark.parametrize("case", list(CASES))
def test_fast_check_answers_as_check_certificate(case: str, issuers) -> None:
    certificate = CASES[case]
    fast, slow = _outcome(_fast, certificate, issuers), _outcome(_slow, certificate, issuers)
    assert fast == slow
    if case in ("leaf", "precertificate"):
        assert isinstance(fast, check.CertificateRecord)
        assert fast.kind == ("precert" if case == "precertificate" else "cert")
    if case == "signed by the rolled key" and issuers is ISSUERS:
        assert isinstance(fast, check.CertificateRecord) and fast.issuer_id == 2
    if case == "bad signature":
        assert "signature does not verify" in str(fast)
    if case == "our CDP" and issuers is WITH_CRL:
        assert isinstance(fast, check.CertificateRecord) and fast.crl_partition == 3
    if case.startswith("malformed SAN"):
        # issued and signed by our CA: recorded, so it gets a status, unless the partition
        # its CDP would name is needed, or it is not a leaf at all
        with pytest.raises(ValueError):
            check.facts(CASES[case])
        if case == "malformed SAN and our CDP" and issuers is WITH_CRL:
            assert isinstance(fast, str) and "cannot be read" in fast and "\n" not in fast
        elif case == "malformed SAN, a CA":
            assert isinstance(fast, str) and "is a CA certificate" in fast
        elif case == "malformed SAN, a responder":
            assert isinstance(fast, str) and "OCSP responder certificate" in fast
        else:
            assert isinstance(fast, check.CertificateRecord)
            assert fast.serial == certificate.serial_number
            assert fast.kind == ("precert" if "precertificate" in case else "cert")


def test_a_duplicated_extension_is_refused_in_one_line_on_both_paths() -> None:
    """cryptography raises DuplicateExtension, which is not a ValueError, for a certificate
    carrying one extension twice; the DER reader gives up on it too. Refused, not a
    traceback (the signature is broken by the edit, but the extensions are read first)."""
    data = _leaf(["san", "ian"], serial=0x17).public_bytes(Encoding.DER)
    at = data.index(bytes.fromhex("0603551d12"))  # issuerAltName's OID becomes SAN's
    duplicated = x509.load_der_x509_certificate(
        data[:at] + bytes.fromhex("0603551d11") + data[at + 5 :]
    )
    with pytest.raises(x509.DuplicateExtension):
        check.facts(duplicated)
    for issuers in (ISSUERS, WITH_CRL):
        fast = _outcome(_fast, duplicated, issuers)
        assert fast == _outcome(_slow, duplicated, issuers)
        assert isinstance(fast, str) and "cannot be read" in fast and "\n" not in fast, fast


def test_a_path_length_without_ca_goes_the_slow_way_and_is_refused() -> None:
    """basicConstraints holding only pathLenConstraint (cA absent, so FALSE): cryptography
    refuses it ("path_length must be None when ca is False"), so the reader must not take it
    for a plain leaf and record it. It steps aside; the slow path refuses it in one line."""
    value = bytes.fromhex("3003020100")  # SEQUENCE { INTEGER 0 }
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")]))
        .issuer_name(CA_NAME)
        .public_key(LEAF_KEY)
        .serial_number(0x5151)
        .not_valid_before(NOW - dt.timedelta(minutes=5))
        .not_valid_after(NOW + dt.timedelta(days=90))
        .add_extension(
            x509.UnrecognizedExtension(ExtensionOID.BASIC_CONSTRAINTS, value), critical=True
        )
        .sign(CA_KEY, hashes.SHA256())
    )
    data = leaf.public_bytes(Encoding.DER)
    assert der.read_leaf(data) is None
    with pytest.raises(ValueError):
        check.facts(x509.load_der_x509_certificate(data))
    refused = _outcome(_fast, leaf, ISSUERS)
    assert isinstance(refused, str) and "\n" not in refused, refused
    assert refused == _outcome(_slow, leaf, ISSUERS)
