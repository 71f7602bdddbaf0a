"""OCSP and CRLs must tell the same story (F6): every revoked, unexpired serial is revoked with
the same time and reason in both, and nothing unrevoked is on any CRL. Pure comparison."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Revocation:
    time: int
    reason: int  # 0 for unspecified, which both encode by leaving the reason out


def disagreements(
    recorded: dict[int, Revocation],
    ocsp: dict[int, Revocation | None],
    listed: dict[int, Revocation],
    ever_revoked: set[int],
) -> list[str]:
    """recorded: revoked unexpired serials from the database; ocsp: what the served OCSP
    response says for each (None: not revoked or no response); listed: every CRL entry;
    ever_revoked: all revoked serials, expired ones included (R18 keeps those on CRLs a while)."""
    found = []
    for serial, truth in sorted(recorded.items()):
        said = ocsp.get(serial)
        if said != truth:
            found.append(
                f"serial {serial:x}: OCSP says {_describe(said)}, database {_describe(truth)}"
            )
        on_crl = listed.get(serial)
        if on_crl != truth:
            found.append(
                f"serial {serial:x}: CRL says {_describe(on_crl)}, database {_describe(truth)}"
            )
    for serial in sorted(set(listed) - ever_revoked):
        found.append(f"serial {serial:x} is on a CRL but was never revoked")
    return found


def _describe(revocation: Revocation | None) -> str:
    if revocation is None:
        return "not revoked"
    return f"revoked at {revocation.time} reason {revocation.reason}"
