"""The pre-publish gate (F5): a CRL is published only if it is provably no worse than the one it
replaces. Each rule below is a way real CAs' CRLs have gone wrong.

A CA's CRL can list a million serials, so the entry rules compare ascending streams of serials
(a merge walk) instead of sets: the new CRL's and the previous CRL's serials are read straight
from their DER, the recorded revocations arrive from the store in serial order, and the memory
used does not grow with the number of entries. A CRL whose entries are not in ascending order
(one built before the builder sorted them) is still read, into a sorted list."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa

from certstatus import der
from certstatus.crl.builder import authority_key_id, raw_subject

DATING_BATCH = 500  # serials dated per call of still_required (one store query)


def _keep_all(serials: Sequence[int]) -> Iterable[int]:
    return serials


@dataclass(frozen=True)
class GateInput:
    """What the new CRL is checked against.

    previous: the DER of the CRL it replaces (None for the first). Its entries must stay
    until R18 lets them go: still_required gets serials of the previous CRL that the new one
    leaves out (ascending, a batch at a time) and returns those R18 still requires (their
    certificate did not expire before the margin; a serial that cannot be dated stays).
    recorded: revocations recorded more than the debounce window ago, ascending (R16's 24 h
    bound is kept by requiring them in every CRL built after the window); read once.
    """

    issuer: x509.Certificate
    idp_url: str | None
    previous_number: int | None = None
    previous: bytes | None = None
    recorded: Iterable[int] = ()
    still_required: Callable[[Sequence[int]], Iterable[int]] = _keep_all


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


def iter_serials(crl_der: bytes) -> Iterator[int]:
    """The serials a CRL lists, in the order it lists them, read straight from the DER: one
    small int at a time, no object per entry (fast and flat for a million entries). An entry
    shorter than 128 bytes (all but those with long extensions) is read inline; the gate walks
    a million of them several times."""
    listed = [f for f in _tbs_fields(crl_der)[4:] if f[0] == der.SEQUENCE]
    if not listed:
        return
    _, _, pos, list_end = listed[0]
    data = crl_der
    from_bytes = int.from_bytes
    while pos < list_end:
        if pos + 1 < list_end and data[pos] == der.SEQUENCE and data[pos + 1] < 0x80:
            entry_start, entry_end = pos + 2, pos + 2 + data[pos + 1]
        else:
            _, entry_start, entry_end = der.read_tlv(data, pos)
        size = data[entry_start + 1] if entry_start + 1 < entry_end else 0x80
        if entry_end > list_end or entry_start + 2 + size > entry_end:
            raise ValueError(f"CRL entry at {pos} runs past its bounds")
        if data[entry_start] != der.INTEGER or size >= 0x80:
            raise ValueError(f"CRL entry at {pos} does not start with a short INTEGER serial")
        yield from_bytes(data[entry_start + 2 : entry_start + 2 + size], "big", signed=True)
        pos = entry_end


def crl_serials(crl_der: bytes) -> set[int]:
    """The serials a CRL lists, as a set (for callers that look a few up)."""
    return set(iter_serials(crl_der))


def _ascending(serials: Iterable[int]) -> bool:
    previous = None
    for serial in serials:
        if previous is not None and serial < previous:
            return False
        previous = serial
    return True


def sorted_serials(crl_der: bytes) -> Iterable[int]:
    """The CRL's serials in ascending order: a second walk of the DER when it lists them so
    (as this builder does), else a sorted list (one int per entry, kept only for this gate)."""
    if _ascending(iter_serials(crl_der)):
        return _Walk(crl_der)
    return sorted(iter_serials(crl_der))


class _Walk:
    """Re-iterable ascending serials of a CRL whose order was checked."""

    def __init__(self, crl_der: bytes) -> None:
        self.crl_der = crl_der

    def __iter__(self) -> Iterator[int]:
        return iter_serials(self.crl_der)


def missing_from(required: Iterable[int], listed: Iterable[int]) -> Iterator[int]:
    """The serials of required that listed lacks, ascending, each once. Both must be ascending
    (repeats allowed); ValueError otherwise, since a merge walk over unordered input would
    silently miss serials."""
    listed_iter = iter(listed)
    current = next(listed_iter, None)
    last_required = None
    for serial in required:
        if last_required is not None and serial <= last_required:
            if serial < last_required:
                raise ValueError(f"serial {serial:x} out of ascending order in required serials")
            continue
        last_required = serial
        while current is not None and current < serial:
            following = next(listed_iter, None)
            if following is not None and following < current:
                raise ValueError(f"serial {following:x} out of ascending order in a CRL")
            current = following
        if current != serial:
            yield serial


def _batches(serials: Iterable[int], size: int) -> Iterator[list[int]]:
    batch: list[int] = []
    for serial in serials:
        batch.append(serial)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _count_and_first(serials: Iterable[int]) -> tuple[int, int | None]:
    count, first = 0, None
    for serial in serials:
        if first is None or serial < first:
            first = serial
        count += 1
    return count, first


def dropped(listed: Iterable[int], gate: GateInput) -> tuple[int, int | None]:
    """How many entries of the previous CRL the new one drops before R18 allows it, and the
    smallest of them."""
    if gate.previous is None:
        return 0, None
    absent = missing_from(sorted_serials(gate.previous), listed)
    return _count_and_first(
        kept for batch in _batches(absent, DATING_BATCH) for kept in gate.still_required(batch)
    )


def signature_valid(
    crl: x509.CertificateRevocationList, crl_der: bytes, issuer: x509.Certificate
) -> bool:
    """The CRL's signature verifies with the issuer's key over the TBS bytes as they are in
    the DER (a view, not a copy). cryptography's is_signature_valid re-encodes the TBS first:
    for a million entries that is 50 MB more, and nearly twice that while its buffer grows."""
    _, start, _ = der.read_tlv(crl_der)
    _, _, tbs_end = der.read_tlv(crl_der, start)
    tbs = memoryview(crl_der)[start:tbs_end]
    key = issuer.public_key()
    try:
        parameters = crl.signature_algorithm_parameters
        hash_algorithm = crl.signature_hash_algorithm
        if isinstance(key, rsa.RSAPublicKey) and hash_algorithm is not None:
            if not isinstance(parameters, padding.PKCS1v15 | padding.PSS):
                return False
            # any buffer is accepted at run time; the stub says bytes
            key.verify(crl.signature, tbs, parameters, hash_algorithm)  # type: ignore[arg-type]
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if not isinstance(parameters, ec.ECDSA):
                return False
            key.verify(crl.signature, tbs, parameters)
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            if parameters is not None:
                return False
            key.verify(crl.signature, tbs)
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def check(crl_der: bytes, gate: GateInput) -> list[Rejection]:
    """Every reason the CRL must not be published; empty when it may be."""
    try:
        crl = x509.load_der_x509_crl(crl_der)
    except ValueError as exc:
        return [Rejection("unparseable", f"not a DER CRL: {exc}")]
    problems: list[Rejection] = []
    if not signature_valid(crl, crl_der, gate.issuer):
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
    listed = sorted_serials(crl_der)
    count, first = dropped(listed, gate)
    if first is not None:
        problems.append(
            Rejection(
                "dropped",
                f"{count} entries of the previous CRL are missing before R18 allows "
                f"it, e.g. serial {first:x}",
            )
        )
    count, first = _count_and_first(missing_from(gate.recorded, listed))
    if first is not None:
        problems.append(
            Rejection(
                "missing",
                f"{count} revocations recorded before the debounce window are "
                f"missing, e.g. serial {first:x}",
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
