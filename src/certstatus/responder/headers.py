"""HTTP caching headers for OCSP answers (RFC 9919 section 6; R12, R13)."""

from __future__ import annotations

import hashlib
import time
from functools import lru_cache

# str pairs, as granian's RSGI interface takes them; the ASGI adapter encodes them (app.py)
Headers = list[tuple[str, str]]

OCSP_RESPONSE = "application/ocsp-response"

# R13: nothing that is not an authoritative answer may be kept by a CDN or proxy.
NO_STORE: Headers = [
    ("content-type", OCSP_RESPONSE),
    ("cache-control", "no-cache, no-store, max-age=0"),
]


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@lru_cache(maxsize=65_536)
def http_date(unix_seconds: int) -> str:
    """IMF-fixdate (RFC 9110 5.6.7), independent of the locale. Cached: a response's
    Last-Modified and Expires are the same on every request for it."""
    t = time.gmtime(unix_seconds)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def etag(der: bytes) -> str:
    """A strong validator derived from the bytes served, so two nodes agree on it (R12)."""
    return f'"{hashlib.sha256(der).hexdigest()[:32]}"'


def max_age(now: int, refresh_at: int, next_update: int) -> int:
    """Seconds a cache may keep the response: never past the planned refresh, when a newer
    response exists, and never past nextUpdate (R12)."""
    return max(0, min(refresh_at, next_update) - now)


def authoritative(
    der: bytes, this_update: int, next_update: int, refresh_at: int, now: int
) -> tuple[Headers, str]:
    """Headers for a good or revoked answer, and its ETag for If-None-Match."""
    age = max_age(now, refresh_at, next_update)
    tag = etag(der)
    return [
        ("content-type", OCSP_RESPONSE),
        ("cache-control", f"max-age={age}, public, no-transform, must-revalidate"),
        ("last-modified", http_date(this_update)),
        ("expires", http_date(now + age)),
        ("etag", tag),
    ], tag


def crl(
    der: bytes, this_update: int, next_update: int, next_build_at: int, now: int
) -> tuple[Headers, str]:
    """Headers for a CRL (R15): cacheable until its planned successor, never past nextUpdate.
    An expired CRL is still served (it is the newest there is) but never cached."""
    tag = etag(der)
    age = max_age(now, next_build_at, next_update)
    control = (
        f"max-age={age}, public, no-transform, must-revalidate"
        if age
        else "no-cache, no-store, max-age=0"
    )
    return [
        ("content-type", "application/pkix-crl"),
        ("cache-control", control),
        ("last-modified", http_date(this_update)),
        ("expires", http_date(now + age)),
        ("etag", tag),
    ], tag


def etag_matches(if_none_match: str, tag: str) -> bool:
    """If-None-Match as RFC 9110 13.1.2 compares: weak comparison, a list, or '*'."""
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == tag:
            return True
    return False


NO_STORE_TEXT: Headers = [
    ("content-type", "text/plain"),
    ("cache-control", "no-cache, no-store, max-age=0"),
]
