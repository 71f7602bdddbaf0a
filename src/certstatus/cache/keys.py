"""Surrogate keys: the tags a cache files each answer under, so one purge reaches every cached
variant of it (GET URL spellings, both CertID hashes, HEAD and GET).

Keys are built from the database's issuer id, which primary and replicas share. They are short
and free of spaces and commas, the separators of the header formats below.
"""

from __future__ import annotations

from collections.abc import Sequence

from certstatus.store.base import PendingPurge

Headers = list[tuple[str, str]]


def issuer_key(issuer_id: int) -> str:
    """Everything cached for one issuer: for a mass purge (responder certificate rotation)."""
    return f"cs-i{issuer_id}"


def certificate_key(issuer_id: int, serial: int) -> str:
    return f"cs-i{issuer_id}-s{serial:x}"


def crl_key(issuer_id: int, crl_partition: int) -> str:
    return f"cs-i{issuer_id}-crl{crl_partition}"


def purge_keys(purge: PendingPurge) -> list[str]:
    """The keys one queued change invalidates."""
    if purge.kind == "crl" and purge.crl_partition is not None:
        return [crl_key(purge.issuer_id, purge.crl_partition)]
    if purge.serial is not None:
        return [certificate_key(purge.issuer_id, purge.serial)]
    return [issuer_key(purge.issuer_id)]


def surrogate_headers(keys: Sequence[str]) -> Headers:
    """The keys in every header name a cache reads them from: xkey (Varnish's xkey module),
    Surrogate-Key (space separated) and Cache-Tag (comma separated) for the big CDNs' tag
    purges. The cache strips them before answering clients."""
    spaced = " ".join(keys)
    return [("xkey", spaced), ("surrogate-key", spaced), ("cache-tag", ",".join(keys))]
