"""Purge clients: one interface, one implementation per kind of cache.

A purge is idempotent, so the purger may repeat one after an unclear failure (a timeout after
the cache acted); losing one is what must never happen.
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit


class PurgeError(RuntimeError):
    """The cache did not confirm the purge; retry_after is its own hint, when it gave one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Purger(Protocol):
    name: str

    def purge(self, keys: Sequence[str]) -> None:
        """Invalidate everything tagged with any of keys; raise PurgeError unless confirmed."""
        ...


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    path: str
    tls: bool

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        tls = parts.scheme == "https"
        return cls(parts.hostname, parts.port or (443 if tls else 80), parts.path or "/", tls)

    def request(
        self, method: str, headers: dict[str, str], body: bytes | None, timeout: float
    ) -> tuple[int, dict[str, str], bytes]:
        kind = http.client.HTTPSConnection if self.tls else http.client.HTTPConnection
        conn = kind(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, self.path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise PurgeError(f"{method} {self.host}:{self.port}: {exc}") from None
        finally:
            conn.close()


# Varnish's xkey module purges one request's keys all at once; keep each request's header small
_MAX_KEYS_PER_REQUEST = 64


class VarnishPurger:
    """PURGE with an xkey-purge header, as deploy/varnish/certstatus.vcl accepts it."""

    def __init__(self, name: str, url: str, timeout: float = 2.0) -> None:
        self.name = name
        self.endpoint = Endpoint.parse(url)
        self.timeout = timeout

    def purge(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), _MAX_KEYS_PER_REQUEST):
            chunk = " ".join(keys[start : start + _MAX_KEYS_PER_REQUEST])
            status, _, body = self.endpoint.request(
                "PURGE", {"xkey-purge": chunk}, None, self.timeout
            )
            if status != 200:
                raise PurgeError(f"varnish {self.name} answered {status}: {body[:200]!r}")


class TagApiPurger:
    """The tag-purge API shape the big CDNs share: POST a JSON list of tags with a bearer
    token; 2xx with {"success": true} confirms; 429/5xx are retried (Retry-After honoured)."""

    def __init__(
        self, name: str, url: str, token: str, timeout: float = 5.0, max_tags: int = 30
    ) -> None:
        self.name = name
        self.endpoint = Endpoint.parse(url)
        self.token = token
        self.timeout = timeout
        self.max_tags = max_tags

    def purge(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), self.max_tags):
            body = json.dumps({"tags": list(keys[start : start + self.max_tags])}).encode()
            status, headers, answer = self.endpoint.request(
                "POST",
                {
                    "authorization": f"Bearer {self.token}",
                    "content-type": "application/json",
                },
                body,
                self.timeout,
            )
            if status == 429 or status >= 500:
                raise PurgeError(f"tag API {self.name} answered {status}", _retry_after(headers))
            if not 200 <= status < 300:
                raise PurgeError(
                    f"tag API {self.name} refused the purge ({status}): {answer[:200]!r}"
                )
            try:
                confirmed = json.loads(answer).get("success") is True
            except (ValueError, AttributeError):
                confirmed = False
            if not confirmed:
                raise PurgeError(f"tag API {self.name} did not confirm: {answer[:200]!r}")


def _retry_after(headers: dict[str, str]) -> float | None:
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                return None
    return None


def build_purger(name: str, kind: str, url: str, token_env: str | None) -> Purger:
    """A purger from a [[caches]] entry (config.py has checked kind, url and token_env)."""
    if kind == "varnish":
        return VarnishPurger(name, url)
    token = os.environ.get(token_env or "", "")
    return TagApiPurger(name, url, token)
