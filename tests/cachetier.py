"""Helpers for tests of the cache tier: OCSP GET paths, a fetch that reports the cache's
verdict, and a local Varnish in a directory its unprivileged child can read."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp


def request_der(certificate: x509.Certificate, issuer: x509.Certificate) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA1())
    return builder.build().public_bytes(serialization.Encoding.DER)


def get_path(certificate: x509.Certificate, issuer: x509.Certificate) -> str:
    return "/" + base64.b64encode(request_der(certificate, issuer)).decode()


@dataclass
class Fetched:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def cache(self) -> str:
        return self.headers.get("x-cache", "")

    @property
    def max_age(self) -> int:
        control = self.headers.get("cache-control", "")
        return int(control.split("max-age=")[1].split(",")[0])

    def ocsp_status(self) -> str:
        """good / revoked / unknown, or the responseStatus name for an error response."""
        answer = ocsp.load_der_ocsp_response(self.body)
        if answer.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            return answer.response_status.name
        return answer.certificate_status.name.lower()


def fetch(base: str, path: str, method: str = "GET", body: bytes | None = None) -> Fetched:
    request = urllib.request.Request(base.rstrip("/") + path, data=body, method=method)
    if body is not None:
        request.add_header("content-type", "application/ocsp-request")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return Fetched(
                answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()
            )
    except urllib.error.HTTPError as error:
        return Fetched(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())
