"""The pre-publish gate (F5): a CRL is published only if it is provably no worse than the one it
replaces. Each rule below is a way real CAs' CRLs have gone wrong."""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography import x509

from certstatus import der
from certstatus.crl.builder import authority_key_id, raw_subject


@dataclass(frozen=True)
class GateInput:
    """What the new CRL is checked against.

    carried: serials on the previous CRL that R18 still requires (not expired past the margin).
    recorded: revocations recorded more than the debounce window ago (R16's 24 h bound is
    kept by requiring them in every CRL built after the window).
    """

    issuer: x509.Certificate
    idp_url: str | None
    previous_number: int | None = None
    carried: frozenset[int] = field(default_factory=frozenset)
    recorded: frozenset[int] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Rejection:
    code: str
    message: str


def _tbs_fields(crl_der: bytes) -> list[tuple[int, int, int, int]]:
    """version, signature, issuer, thisUpdate, [nextUpdate], [revokedCertificates], [0] ext."""
    _, start, _ = der.read_tlv(crl_der)
    _, tbs_start, tbs_end = der.read_tlv(crl_der, start)
    return der.elements(crl_der, tbs_start, tbs_end)


def crl_issuer(crl_der: bytes) -> bytes:
    """The issuer Name exactly as encoded in the CRL."""
    _, start, _, end = _tbs_fields(crl_der)[2]
    return crl_der[start:end]


def crl_serials(crl_der: bytes) -> set[int]:
    """The serials a CRL lists, read straight from the DER (fast for a million entries)."""
    listed = [f for f in _tbs_fields(crl_der)[4:] if f[0] == der.SEQUENCE]
    if not listed:
        return set()
    _, _, pos, list_end = listed[0]
    serials: set[int] = set()
    add = serials.add
    read_tlv = der.read_tlv
    from_bytes = int.from_bytes
    while pos < list_end:
        _, entry_start, entry_end = read_tlv(crl_der, pos)
        size = crl_der[entry_start + 1]
        if crl_der[entry_start] != der.INTEGER or size >= 0x80:
            raise ValueError(f"CRL entry at {pos} does not start with a short INTEGER serial")
        add(from_bytes(crl_der[entry_start + 2 : entry_start + 2 + size], "big", signed=True))
        pos = entry_end
    return serials


def check(crl_der: bytes, gate: GateInput) -> list[Rejection]:
    """Every reason the CRL must not be published; empty when it may be."""
    try:
        crl = x509.load_der_x509_crl(crl_der)
    except ValueError as exc:
        return [Rejection("unparseable", f"not a DER CRL: {exc}")]
    problems: list[Rejection] = []
    if not crl.is_signature_valid(gate.issuer.public_key()):  # type: ignore[arg-type]
        problems.append(Rejection("signature", "signature does not verify with the issuer key"))
    if crl_issuer(crl_der) != raw_subject(gate.issuer):
        problems.append(Rejection("issuer", "issuer is not byte-identical to the CA subject"))
    try:
        aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
        if aki.value.key_identifier != authority_key_id(gate.issuer):
            problems.append(Rejection("aki", "authorityKeyIdentifier does not match the issuer"))
    except x509.ExtensionNotFound:
        problems.append(Rejection("aki", "authorityKeyIdentifier is missing"))
    problems.extend(_idp_problems(crl, gate.idp_url))
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = None
        problems.append(Rejection("number", "CRLNumber is missing"))
    if number is not None and gate.previous_number is not None and number <= gate.previous_number:
        problems.append(
            Rejection(
                "number",
                f"CRLNumber {number} is not greater than the published {gate.previous_number}",
            )
        )
    listed = crl_serials(crl_der)
    dropped = gate.carried - listed
    if dropped:
        problems.append(
            Rejection(
                "dropped",
                f"{len(dropped)} entries of the previous CRL are missing before R18 allows "
                f"it, e.g. serial {min(dropped):x}",
            )
        )
    missing = gate.recorded - listed
    if missing:
        problems.append(
            Rejection(
                "missing",
                f"{len(missing)} revocations recorded before the debounce window are "
                f"missing, e.g. serial {min(missing):x}",
            )
        )
    return problems


def _idp_problems(crl: x509.CertificateRevocationList, idp_url: str | None) -> list[Rejection]:
    try:
        idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
    except x509.ExtensionNotFound:
        if idp_url is not None:
            return [Rejection("idp", f"partitioned CRL lacks an IDP naming {idp_url} (R19)")]
        return []
    if idp_url is None:
        return [Rejection("idp", "a single full CRL should not carry an IDP (R19)")]
    names = idp.value.full_name or []
    uris = [n.value for n in names if isinstance(n, x509.UniformResourceIdentifier)]
    problems = []
    if not idp.critical:
        problems.append(Rejection("idp", "the IDP extension must be critical (R19)"))
    if uris != [idp_url]:
        problems.append(Rejection("idp", f"IDP names {uris}, not the publish URL {idp_url} (R19)"))
    return problems
