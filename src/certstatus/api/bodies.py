"""Request bodies: certificates (DER, PEM, multi-PEM) and revocations (a JSON object, an array
of them, or NDJSON), parsed into what ingest checks. Every problem is a BadRequest with the
HTTP status and a message that names the item or line."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

from cryptography import x509

from certstatus.ingest.api import IngestError, Revocation, parse_serial

MAX_LINE = 4096  # an NDJSON revocation is ~120 bytes; a longer line is a broken stream
_FIELDS = {"issuer", "serial", "reason", "time"}


class BadRequest(Exception):
    """A request refused before anything was written: HTTP status, a code, one line."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra: dict[str, Any] = {}  # more fields of the error answer (committed, retry_after)


def certificates(body: bytes, content_type: str) -> list[tuple[x509.Certificate, str]]:
    """(certificate, "certificate N") for each certificate of a DER or (multi-)PEM body."""
    if not body.strip():
        raise BadRequest(400, "empty_body", "the body is empty; send a DER or PEM certificate")
    try:
        if content_type == "application/pkix-cert":
            found = [x509.load_der_x509_certificate(body)]
        elif content_type in ("application/x-pem-file", "application/pem-certificate-chain"):
            found = x509.load_pem_x509_certificates(body)
        else:
            raise BadRequest(
                415,
                "unsupported_media_type",
                "send application/pkix-cert (DER) or application/x-pem-file (PEM, multi-PEM)",
            )
    except (ValueError, x509.InvalidVersion):  # InvalidVersion is not a ValueError
        raise BadRequest(
            400, "not_a_certificate", f"the body is not a {content_type} certificate"
        ) from None
    return [(cert, f"certificate {n + 1}") for n, cert in enumerate(found)]


def rfc3339(value: str, where: str) -> int:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise BadRequest(
            400, "bad_time", f"{where}: time {value!r} is not RFC 3339 (2026-01-31T12:00:00Z)"
        )
    return int(parsed.timestamp())


def revocation(item: Any, where: str) -> Revocation:
    """One revocation object: issuer, serial (hex), reason (R7 name or code), optional time."""
    if not isinstance(item, dict):
        raise BadRequest(400, "bad_revocation", f"{where}: expected a JSON object")
    unknown = set(item) - _FIELDS
    if unknown:
        raise BadRequest(400, "bad_revocation", f"{where}: unknown field(s) {sorted(unknown)}")
    missing = [f for f in ("issuer", "serial", "reason") if f not in item]
    if missing:
        raise BadRequest(400, "bad_revocation", f"{where}: missing {', '.join(missing)}")
    issuer, serial, reason = item["issuer"], item["serial"], item["reason"]
    if not isinstance(issuer, str) or not isinstance(serial, str):
        raise BadRequest(400, "bad_revocation", f"{where}: issuer and serial must be strings")
    if not isinstance(reason, str | int) or isinstance(reason, bool):
        raise BadRequest(400, "bad_revocation", f"{where}: reason must be a name or a code")
    time = item.get("time")
    if time is not None and not isinstance(time, str):
        raise BadRequest(400, "bad_time", f"{where}: time must be an RFC 3339 string")
    try:
        number = parse_serial(serial)
    except IngestError as exc:
        raise BadRequest(400, "bad_revocation", f"{where}: {exc}") from None
    return Revocation(issuer, number, reason, None if time is None else rfc3339(time, where), where)


def revocations_json(body: bytes) -> list[Revocation]:
    """A JSON object or an array of them."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(400, "bad_json", f"the body is not JSON: {exc}") from None
    if isinstance(parsed, dict):
        return [revocation(parsed, "item 1")]
    if not isinstance(parsed, list) or not parsed:
        raise BadRequest(400, "bad_revocation", "expected a revocation object or a non-empty array")
    return [revocation(item, f"item {n + 1}") for n, item in enumerate(parsed)]


async def ndjson_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, bytes]]:
    """(line number, line) of a streamed NDJSON body, never holding more than one line and
    one chunk: blank lines are skipped, a line over MAX_LINE is refused."""
    pending = b""
    number = 0
    async for chunk in chunks:
        pending += chunk
        while True:
            end = pending.find(b"\n")
            if end < 0:
                break
            line, pending = pending[:end], pending[end + 1 :]
            number += 1
            if line.strip():
                yield number, line
        if len(pending) > MAX_LINE:
            raise BadRequest(413, "line_too_long", f"line {number + 1}: longer than {MAX_LINE}")
    if pending.strip():
        yield number + 1, pending


def ndjson_revocation(line: bytes, number: int) -> Revocation:
    where = f"line {number}"
    if len(line) > MAX_LINE:
        raise BadRequest(413, "line_too_long", f"{where}: longer than {MAX_LINE} bytes")
    try:
        item = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(400, "bad_json", f"{where}: not a JSON object") from None
    return revocation(item, where)
