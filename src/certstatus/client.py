"""A small client of the issuance API (what `certstatus add/revoke --api` use; a CA's pipeline
can import it too). Standard library only: http.client over TLS with a client certificate.

Every call returns the decoded JSON answer of a 2xx (202: committed, the wait timed out; see
`answer["wait"]`), or raises ApiError with the server's status, code and one-line message.
A transport failure (refused handshake, connection reset) raises ApiError with status 0: the
change may or may not be committed, and retrying is safe (records are idempotent, and a
repeated revocation is reported unchanged)."""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, answer: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}" if status else message)
        self.status = status
        self.code = code
        self.message = message
        self.answer = answer


class ApiClient:
    def __init__(
        self,
        url: str,
        client_cert: Path | None = None,
        client_key: Path | None = None,
        ca: Path | None = None,
        timeout: float = 120.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ApiError(0, "bad_url", f"--api {url!r}: expected https://host:port/")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.timeout = timeout
        self.context: ssl.SSLContext | None = None
        if self.https:
            self.context = ssl.create_default_context(cafile=str(ca) if ca else None)
            self.context.minimum_version = ssl.TLSVersion.TLSv1_2
            if client_cert is not None:
                try:
                    self.context.load_cert_chain(client_cert, client_key)
                except (OSError, ssl.SSLError) as exc:
                    raise ApiError(
                        0, "bad_client_certificate", f"cannot load {client_cert}: {exc}"
                    ) from None

    def _connection(self) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=self.context
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | Iterable[bytes] | None = None,
        content_type: str | None = None,
        query: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """(status, decoded JSON) of a 2xx; ApiError otherwise."""
        target = path + ("?" + urlencode(query) if query else "")
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        connection = self._connection()
        try:
            chunked = body is not None and not isinstance(body, bytes)
            connection.request(method, target, body=body, headers=headers, encode_chunked=chunked)
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ApiError(0, "transport", f"{self.host}:{self.port}: {exc}") from None
        finally:
            connection.close()
        try:
            answer = json.loads(data) if data else None
        except ValueError:
            answer = None
        if response.status >= 400:
            error = (answer or {}).get("error", {}) if isinstance(answer, dict) else {}
            raise ApiError(
                response.status,
                error.get("code", "error"),
                error.get("message", data[:200].decode("utf-8", "replace")),
                answer,
            )
        return response.status, answer

    @staticmethod
    def _wait(wait: str | None, timeout: str | None) -> dict[str, str] | None:
        if wait is None:
            return None
        return {"wait": wait, **({"timeout": timeout} if timeout else {})}

    def record(
        self, data: bytes, wait: str | None = None, timeout: str | None = None
    ) -> dict[str, Any]:
        """Record the certificates of a DER or (multi-)PEM file's bytes."""
        kind = "application/x-pem-file" if b"-----BEGIN" in data else "application/pkix-cert"
        return self.request("POST", "/v1/certificates", data, kind, self._wait(wait, timeout))[1]

    def revoke(
        self, items: dict[str, Any] | list[dict[str, Any]], wait: str | None = None,
        timeout: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """One revocation (a dict) or an atomic batch (a list)."""
        body = json.dumps(items).encode()
        return self.request(
            "POST", "/v1/revocations", body, "application/json", self._wait(wait, timeout)
        )[1]

    def revoke_stream(self, items: Iterable[dict[str, Any]]) -> dict[str, Any]:
        """Many revocations as streamed NDJSON (chunked): flat memory for a million."""

        def lines() -> Iterator[bytes]:
            batch: list[bytes] = []
            for item in items:
                batch.append(json.dumps(item, separators=(",", ":")).encode() + b"\n")
                if len(batch) >= 512:
                    yield b"".join(batch)
                    batch = []
            if batch:
                yield b"".join(batch)

        return self.request("POST", "/v1/revocations", lines(), "application/x-ndjson")[1]

    def status(self, issuer: str, serial: int | str) -> dict[str, Any]:
        text = serial if isinstance(serial, str) else f"{serial:x}"
        return self.request("GET", f"/v1/certificates/{quote(issuer, safe='')}/{quote(text)}")[1]

    def openapi(self) -> dict[str, Any]:
        return self.request("GET", "/v1/openapi.json")[1]
