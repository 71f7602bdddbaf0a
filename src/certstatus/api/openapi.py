"""The issuance API's OpenAPI 3.1 document, served at /v1/openapi.json.

Written by hand beside the code it describes; tests/test_api.py validates it with
openapi-spec-validator and checks every answer the tests receive against its schemas, so the
document and the app cannot drift apart unnoticed."""

from __future__ import annotations

from typing import Any

_TIME = {"type": ["string", "null"], "format": "date-time"}
_SERIAL = {"type": "string", "pattern": "^[0-9a-f]+$", "description": "lowercase hex"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _errors(*codes: int) -> dict[str, Any]:
    described = {
        400: "bad input (the message names the item or line); nothing written",
        401: "no client certificate (only without TLS client verification)",
        403: "client not configured, or lacks the permission",
        404: "unknown endpoint, issuer or serial",
        405: "method not allowed",
        413: "body, line or batch too large",
        415: "unsupported content type",
        422: "refused by the rules of `certstatus add`/`revoke`; nothing written",
        429: "over the client's rate; see Retry-After",
        503: "database unavailable; nothing acknowledged",
    }
    answers: dict[str, Any] = {str(c): _json("Error", described[c]) for c in codes}
    if 429 in codes:
        answers["429"]["headers"] = {
            "Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}
        }
    return answers


_COMMON = (401, 403, 405, 429, 503)
_WAIT_PARAMETERS = [
    {
        "name": "wait",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": ["authoritative", "replicated"]},
        "description": "answer once the signed responses exist on the primary (authoritative) "
        "or on every fresh replica too (replicated); 202 if the timeout passes first",
    },
    {
        "name": "timeout",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "pattern": "^[0-9]+[smh]?$", "default": "5s"},
        "description": "how long to wait, at most [api] max_wait",
    },
]


def document() -> dict[str, Any]:
    revocation = {
        "type": "object",
        "additionalProperties": False,
        "required": ["issuer", "serial", "reason"],
        "properties": {
            "issuer": {"type": "string"},
            "serial": {"type": "string", "description": "hex, ':' separators allowed"},
            "reason": {
                "oneOf": [{"type": "string"}, {"type": "integer"}],
                "description": "an R7 reason name (keyCompromise, superseded, ...) or code",
            },
            "time": {"type": "string", "format": "date-time"},
        },
    }
    wait = {
        "type": "object",
        "required": ["mode", "satisfied", "pending", "waited_ms", "stale_replicas_skipped"],
        "properties": {
            "mode": {"type": "string", "enum": ["authoritative", "replicated"]},
            "satisfied": {"type": "boolean"},
            "pending": {"type": "integer", "minimum": 0},
            "waited_ms": {"type": "integer", "minimum": 0},
            "stale_replicas_skipped": {"type": "array", "items": {"type": "string"}},
        },
    }
    counts = {
        "type": "object",
        "required": ["revoked", "unchanged", "lines", "through_line"],
        "properties": {
            key: {"type": "integer", "minimum": 0}
            for key in ("revoked", "unchanged", "lines", "through_line")
        },
    }
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error", "request_id"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                },
                "request_id": {"type": "string"},
                "committed": _ref("BulkCounts"),
            },
        },
        "Revocation": revocation,
        "Wait": wait,
        "BulkCounts": counts,
        "RecordResult": {
            "type": "object",
            "required": ["request_id", "added", "known", "certificates"],
            "properties": {
                "request_id": {"type": "string"},
                "added": {"type": "integer"},
                "known": {"type": "integer"},
                "certificates": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["issuer", "serial", "outcome"],
                        "properties": {
                            "issuer": {"type": "string"},
                            "serial": _SERIAL,
                            "outcome": {"type": "string", "enum": ["added", "upgraded", "known"]},
                        },
                    },
                },
                "wait": _ref("Wait"),
            },
        },
        "RevokeResult": {
            "type": "object",
            "required": ["request_id", "revoked", "unchanged", "revocations"],
            "properties": {
                "request_id": {"type": "string"},
                "revoked": {"type": "integer"},
                "unchanged": {"type": "integer"},
                "revocations": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["issuer", "serial", "outcome", "reason", "time"],
                        "properties": {
                            "issuer": {"type": "string"},
                            "serial": _SERIAL,
                            "outcome": {"type": "string", "enum": ["revoked", "unchanged"]},
                            "reason": {"type": "string"},
                            "time": _TIME,
                        },
                    },
                },
                "wait": _ref("Wait"),
            },
        },
        "BulkResult": {
            "allOf": [
                _ref("BulkCounts"),
                {
                    "type": "object",
                    "required": ["request_id"],
                    "properties": {"request_id": {"type": "string"}},
                },
            ]
        },
        "AuditEntry": {
            "type": "object",
            "required": ["seq", "at", "actor", "action", "prev_hash", "hash"],
            "properties": {
                "seq": {"type": "integer"},
                "at": {"type": "integer", "description": "Unix seconds"},
                "actor": {"type": "string"},
                "action": {
                    "type": "string",
                    "enum": ["record", "upgrade", "revoke", "import-crl", "refused"],
                },
                "issuer_id": {"type": ["integer", "null"]},
                "serial": {"type": ["string", "null"]},
                "request_id": {"type": ["string", "null"]},
                "before": {"type": ["object", "null"]},
                "after": {"type": ["object", "null"]},
                "detail": {"type": ["string", "null"]},
                "prev_hash": {"type": "string"},
                "hash": {"type": "string"},
            },
        },
        "CertificateStatus": {
            "type": "object",
            "required": [
                "issuer",
                "serial",
                "kind",
                "status",
                "reason",
                "revocation_time",
                "not_before",
                "not_after",
                "version",
                "responses",
                "audit",
            ],
            "properties": {
                "issuer": {"type": "string"},
                "serial": _SERIAL,
                "kind": {"type": "string", "enum": ["cert", "precert"]},
                "status": {"type": "string", "enum": ["good", "revoked"]},
                "reason": {"type": ["string", "null"]},
                "revocation_time": _TIME,
                "not_before": _TIME,
                "not_after": _TIME,
                "version": {"type": "integer"},
                "responses": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": [
                            "certid_hash",
                            "der_sha256",
                            "this_update",
                            "next_update",
                            "version",
                            "current",
                        ],
                        "properties": {
                            "certid_hash": {"type": "string", "enum": ["sha1", "sha256"]},
                            "der_sha256": {"type": "string"},
                            "this_update": _TIME,
                            "next_update": _TIME,
                            "version": {"type": "integer"},
                            "current": {"type": "boolean"},
                        },
                    },
                },
                "audit": {"type": "array", "items": _ref("AuditEntry")},
            },
        },
    }
    certificate_body = {"type": "string", "contentMediaType": "application/pkix-cert"}
    paths = {
        "/v1/certificates": {
            "post": {
                "summary": "Record certificates and precertificates (idempotent)",
                "operationId": "record",
                "parameters": _WAIT_PARAMETERS,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/pkix-cert": {"schema": certificate_body},
                        "application/x-pem-file": {"schema": {"type": "string"}},
                    },
                },
                "responses": {
                    "200": _json("RecordResult", "recorded and committed (and waited for)"),
                    "202": _json("RecordResult", "committed; the wait timed out"),
                    **_errors(400, 413, 415, 422, *_COMMON),
                },
            }
        },
        "/v1/revocations": {
            "post": {
                "summary": "Revoke: one, an array (atomic), or NDJSON in atomic chunks",
                "operationId": "revoke",
                "parameters": _WAIT_PARAMETERS,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [
                                    _ref("Revocation"),
                                    {"type": "array", "items": _ref("Revocation"), "minItems": 1},
                                ]
                            }
                        },
                        "application/x-ndjson": {
                            "schema": {
                                "type": "string",
                                "description": "one Revocation per line; applied in chunks of "
                                "[api] max_batch lines, each committed atomically in order; the "
                                "first bad line stops the stream (its chunk writes nothing) and "
                                "the error says through which line everything is committed",
                            }
                        },
                    },
                },
                "responses": {
                    "200": {
                        "description": "every revocation committed",
                        "content": {
                            "application/json": {
                                "schema": {"oneOf": [_ref("RevokeResult"), _ref("BulkResult")]}
                            }
                        },
                    },
                    "202": _json("RevokeResult", "committed; the wait timed out"),
                    **_errors(400, 413, 415, 422, *_COMMON),
                },
            }
        },
        "/v1/certificates/{issuer}/{serial}": {
            "get": {
                "summary": "A certificate's status, stored responses and audit trail",
                "operationId": "status",
                "parameters": [
                    {
                        "name": "issuer",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "serial",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": _json("CertificateStatus", "the certificate"),
                    **_errors(400, 404, *_COMMON),
                },
            }
        },
        "/v1/openapi.json": {
            "get": {
                "summary": "This document",
                "operationId": "openapi",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **_errors(*_COMMON),
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "certstatus issuance API",
            "version": "1",
            "description": "Mutually authenticated TLS; every change and every refusal is "
            "audit-logged; a 2xx means committed.",
        },
        "servers": [{"url": "https://127.0.0.1:8443"}],
        "paths": paths,
        "components": {"schemas": schemas},
    }
