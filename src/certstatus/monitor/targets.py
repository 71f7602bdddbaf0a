"""The places the monitor asks, as an outside client would: the public URL through the cache
or CDN, and each origin responder directly."""

from __future__ import annotations

import base64
import http.client
from dataclasses import dataclass
from urllib.parse import quote, urlsplit


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    kind: str = "origin"  # "origin" (a responder: also probed on /readyz) or "cdn"


@dataclass(frozen=True)
class Fetched:
    status: int
    headers: dict[str, str]
    body: bytes
    error: str = ""  # why status is 0: the transport failure, as the operator should read it


def fetch(
    url: str, method: str = "GET", body: bytes | None = None, timeout: float = 5.0
) -> Fetched:
    """One request; a transport failure is status 0 (the caller records it as unreachable)."""
    parts = urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    path = parts.path or "/"
    headers = {"content-type": "application/ocsp-request"} if body is not None else {}
    try:
        conn.request(method, path, body=body, headers=headers)
        answer = conn.getresponse()
        return Fetched(answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read())
    except (OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return Fetched(0, {}, b"", reason)
    finally:
        conn.close()


def ocsp_get(target: Target, der: bytes, timeout: float = 5.0) -> Fetched:
    """GET with the request percent-encoded in the path (RFC 6960 A.1)."""
    encoded = quote(base64.b64encode(der).decode(), safe="")
    return fetch(target.url.rstrip("/") + "/" + encoded, timeout=timeout)


def ocsp_post(target: Target, der: bytes, timeout: float = 5.0) -> Fetched:
    return fetch(target.url.rstrip("/") + "/", "POST", der, timeout)
