"""Array parameters for PostgreSQL's batch statements, spelled as array literals here.

A batch (a signer's signed responses, an ingest's certificates) goes to the server as one
array per column, unnested there: one round trip per batch. psycopg builds array parameters
element by element in Python (a few microseconds each, most of the signer's own CPU on
PostgreSQL); the literal is a join over the column done in C, and the server parses it
(array_in) as fast as the binary form. Each function returns the text a `%s::<type>[]`
placeholder takes; test_postgres_arrays checks them against the values read back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_TOKENS = re.compile(r"[0-9A-Za-z]+(?:,[0-9A-Za-z]+)*")
_NULL = re.compile(r"(?:^|,)null(?:,|$)", re.IGNORECASE)


def integers(values: Iterable[int | None]) -> str:
    """A bigint[]/int[] literal; None is NULL."""
    items = list(values)
    if None in items:
        return "{" + ",".join("NULL" if v is None else str(int(v)) for v in items) + "}"
    return "{" + ",".join(map(str, map(int, items))) + "}"  # type: ignore[arg-type]


def hex_texts(values: Iterable[str]) -> str:
    """A text[] literal of strings that need no quoting: lowercase hex serials (serial_key)
    and kinds ('cert', 'precert'). Anything else is refused rather than spelled wrong (an
    unquoted NULL would be read as a null)."""
    items = list(values)
    joined = ",".join(items)
    plain = _TOKENS.fullmatch(joined) and joined.count(",") == len(items) - 1
    if items and (not plain or _NULL.search(joined)):
        raise ValueError(f"not plain tokens for a text[] literal: {joined[:80]!r}")
    return "{" + joined + "}"


def byteas(values: Iterable[bytes]) -> str:
    """A bytea[] literal: each element in bytea's hex input format, quoted ("\\\\x..." is
    the backslash escaped once for the array's quoting)."""
    return "{" + ",".join([f'"\\\\x{v.hex()}"' for v in values]) + "}"


def slices(values: Iterable[bytes]) -> tuple[bytes, str, str]:
    """Many byte strings as one: their concatenation (sent as a binary parameter, so the
    server neither parses nor hex-decodes it) and int[] literals of each one's 1-based start
    and length, for `substring(blob FROM start FOR length)`. What the signer stores per batch:
    two ~800-byte responses per certificate, whose bytea[] literal cost the server ~8 % of
    its time in array_in and hex_decode (issue 15)."""
    items = list(values)
    starts, position = [], 1
    for item in items:
        starts.append(position)
        position += len(item)
    return b"".join(items), integers(starts), integers(map(len, items))
