"""Gathering what the agreement check (F6) compares: the database, the stored OCSP responses
(as a client would parse them) and the published CRLs."""

from __future__ import annotations

import contextlib

from cryptography import x509
from cryptography.x509 import ocsp

from certstatus.crl.agreement import Revocation, disagreements
from certstatus.crlbuilder.service import CrlService
from certstatus.ocsp.certid import HashAlgorithm
from certstatus.store.base import ResponseReads


def reason_code(flag: x509.ReasonFlags | None) -> int:
    if flag is None:
        return 0
    return {
        x509.ReasonFlags.unspecified: 0,
        x509.ReasonFlags.key_compromise: 1,
        x509.ReasonFlags.ca_compromise: 2,
        x509.ReasonFlags.affiliation_changed: 3,
        x509.ReasonFlags.superseded: 4,
        x509.ReasonFlags.cessation_of_operation: 5,
        x509.ReasonFlags.certificate_hold: 6,
        x509.ReasonFlags.remove_from_crl: 8,
        x509.ReasonFlags.privilege_withdrawn: 9,
        x509.ReasonFlags.aa_compromise: 10,
    }[flag]


def ocsp_says(store: ResponseReads, issuer_id: int, serial: int) -> Revocation | None:
    stored = store.response(issuer_id, serial, HashAlgorithm.SHA1)
    if stored is None:
        return None
    response = ocsp.load_der_ocsp_response(stored.der)
    if response.certificate_status is not ocsp.OCSPCertStatus.REVOKED:
        return None
    assert response.revocation_time_utc is not None
    return Revocation(
        int(response.revocation_time_utc.timestamp()), reason_code(response.revocation_reason)
    )


def crl_says(crl: x509.CertificateRevocationList) -> dict[int, Revocation]:
    """Each entry of a CRL as the agreement check compares it."""
    listed = {}
    for revoked in crl:
        reason = None
        with contextlib.suppress(x509.ExtensionNotFound):
            reason = revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason
        listed[revoked.serial_number] = Revocation(
            int(revoked.revocation_date_utc.timestamp()), reason_code(reason)
        )
    return listed


def check_agreement(service: CrlService, now: int) -> list[str]:
    """Every disagreement between database, OCSP and CRLs, for every issuer with CRLs."""
    store = service.store
    found: list[str] = []
    for issuer in service.issuers:
        partitions = service.partitions(issuer)
        recorded: dict[int, Revocation] = {}
        ever: set[int] = set()
        listed: dict[int, Revocation] = {}
        for partition in partitions:
            for entry in store.revoked_entries(issuer.id, partition, 0):
                ever.add(entry.serial)
                row = store.certificate(issuer.id, entry.serial)
                if row is not None and row.not_after >= now:
                    recorded[entry.serial] = Revocation(entry.revoked_at, entry.reason)
            current = store.current_crl(issuer.id, partition)
            if current is None:
                continue
            listed.update(crl_says(x509.load_der_x509_crl(current.der)))
        said = {serial: ocsp_says(store, issuer.id, serial) for serial in recorded}
        found.extend(
            f"{issuer.material.name}: {problem}"
            for problem in disagreements(recorded, said, listed, ever)
        )
    return found
