"""RFC 7512 PKCS#11 URIs naming a private key on a token, and where the token's PIN comes from.

Both are plain values, picklable and free of secrets, so a key can be named in the
configuration, checked there, and handed to each signing process, which opens the token for
itself. The PIN is never in the configuration or in the URI: it is read, when the token is
opened, from an environment variable or a file ([pkcs11] pin_env / pin_file).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, unquote_to_bytes

from certstatus.keys.base import KeyFileError

SCHEME = "pkcs11:"
# path attributes this project reads; others (manufacturer, model, slot-*, library-*) would
# narrow the token in ways that are not checked here, so they are refused, not ignored
_KNOWN = {"token", "object", "id", "type", "serial"}


@dataclass(frozen=True)
class Pkcs11Uri:
    """A private key on a token: token label, and the object's label or CKA_ID (or both)."""

    text: str
    token: str
    label: str | None = None
    id: bytes | None = None
    serial: str | None = None

    def __str__(self) -> str:
        return self.text

    @classmethod
    def parse(cls, text: str) -> Pkcs11Uri:
        """The URI's attributes; ValueError saying what is wrong and what to write instead."""
        example = 'e.g. "pkcs11:token=certstatus;object=responder;type=private"'
        if not text.startswith(SCHEME):
            raise ValueError(f"expected a pkcs11: URI, {example}")
        body = text[len(SCHEME) :]
        path, _, query = body.partition("?")
        names = {item.partition("=")[0] for item in re.split("[;&?]", body)}
        if names & {"pin-value", "pin-source"}:  # the URI is not repeated: it holds the PIN
            raise ValueError(
                "a pkcs11: URI must not carry the PIN (pin-value/pin-source); remove it and "
                "use [pkcs11] pin_env or pin_file"
            )
        for item in filter(None, query.split("&")):
            name = item.partition("=")[0]
            raise ValueError(
                f"{text}: query attribute {name!r} is not supported; the module is [pkcs11] module"
            )
        attributes: dict[str, str] = {}
        for item in filter(None, path.split(";")):
            name, equals, value = item.partition("=")
            if not equals:
                raise ValueError(f"{text}: {item!r} is not name=value; {example}")
            if name not in _KNOWN:
                raise ValueError(
                    f"{text}: attribute {name!r} is not supported here "
                    f"(known: {', '.join(sorted(_KNOWN))})"
                )
            if name in attributes:
                raise ValueError(f"{text}: {name} given twice")
            attributes[name] = value
        if attributes.get("type", "private") != "private":
            raise ValueError(f"{text}: type must be private (the signing key), {example}")
        if "token" not in attributes:
            raise ValueError(f"{text}: token= is required, {example}")
        if "object" not in attributes and "id" not in attributes:
            raise ValueError(f"{text}: object= or id= is required, {example}")
        return cls(
            text,
            unquote(attributes["token"]),
            unquote(attributes["object"]) if "object" in attributes else None,
            unquote_to_bytes(attributes["id"]) if "id" in attributes else None,
            unquote(attributes["serial"]) if "serial" in attributes else None,
        )

    def describe_object(self) -> str:
        parts = []
        if self.label is not None:
            parts.append(f"labelled {self.label!r}")
        if self.id is not None:
            parts.append(f"with id {self.id.hex()}")
        return " and ".join(parts)


@dataclass(frozen=True)
class TokenAccess:
    """[pkcs11]: the module to load and where its PIN is read from (never the PIN itself)."""

    module: Path
    pin_env: str | None = None
    pin_file: Path | None = None

    def where_pin(self) -> str:
        """Where the PIN comes from, for messages: never the PIN."""
        return f"${self.pin_env}" if self.pin_env else f"pin_file {self.pin_file}"

    def pin(self) -> str:
        """Read the PIN now (in the process that logs in); KeyFileError naming the source."""
        if self.pin_env:
            value = os.environ.get(self.pin_env)
            if not value:
                raise KeyFileError(
                    f"[pkcs11] pin_env: ${self.pin_env} is not set in this process's "
                    "environment; set it to the token's user PIN"
                )
            return value
        if self.pin_file is None:
            raise KeyFileError("[pkcs11]: pin_env or pin_file is required for pkcs11: keys")
        check_private_file(self.pin_file, "[pkcs11] pin_file")
        try:
            value = self.pin_file.read_text().rstrip("\r\n")
        except OSError as exc:
            raise KeyFileError(f"[pkcs11] pin_file {self.pin_file}: {exc.strerror}") from None
        if not value:
            raise KeyFileError(f"[pkcs11] pin_file {self.pin_file} is empty")
        return value


def check_private_file(path: Path, what: str) -> None:
    """Refuse a secret file that group or others may read: a key or PIN on a shared host is
    one `cat` from leaking. The fix is one chmod, which the message gives."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} {path}: {exc.strerror}") from None
    if stat.S_IMODE(mode) & 0o077:
        raise KeyFileError(
            f"{what} {path} is readable by group or others (mode {stat.S_IMODE(mode):04o}); "
            f"run chmod 600 {path}"
        )
