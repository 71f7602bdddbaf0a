"""Revocation reasons a subscriber certificate may carry (R7); certificateHold never."""

from __future__ import annotations

UNSPECIFIED = 0
KEY_COMPROMISE = 1

ALLOWED: dict[str, int] = {
    "unspecified": 0,
    "keyCompromise": 1,
    "affiliationChanged": 3,
    "superseded": 4,
    "cessationOfOperation": 5,
    "privilegeWithdrawn": 9,
}
NAMES: dict[int, str] = {code: name for name, code in ALLOWED.items()}


class ReasonError(ValueError):
    pass


def parse_reason(value: str | int) -> int:
    """Accept a reason by RFC 5280 name (any case) or number; refuse anything outside R7."""
    if isinstance(value, int) or str(value).isdigit():
        code = int(value)
        if code in NAMES:
            return code
    else:
        for name, code in ALLOWED.items():
            if name.lower() == str(value).lower():
                return code
    raise ReasonError(
        f"revocation reason {value!r} is not allowed for subscriber certificates (R7); "
        f"use one of: {', '.join(ALLOWED)}"
    )


def encoded_reason(code: int) -> int | None:
    """The reasonCode to encode: unspecified is expressed by leaving the reason out (R7, R17)."""
    return None if code == UNSPECIFIED else code
