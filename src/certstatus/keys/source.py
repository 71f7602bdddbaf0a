"""Where a signing key is, as a value a signing process can be handed (never the key itself).

The configuration names each key once (`responder_key`, `issuer_key`): a PEM file path or a
pkcs11: URI with the [pkcs11] table saying which module and where the PIN is. A KeyRef carries
exactly that, no secret, so the signing pool's processes are given refs and open the keys
themselves: a PEM file is read there, a token gets its own session there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from certstatus.keys.base import KeyFileError, SigningKey
from certstatus.keys.uri import Pkcs11Uri, TokenAccess

KeyLocation = Path | Pkcs11Uri


@dataclass(frozen=True)
class KeyRef:
    location: KeyLocation
    access: TokenAccess | None = None

    def __str__(self) -> str:
        return str(self.location)

    @property
    def in_token(self) -> bool:
        return isinstance(self.location, Pkcs11Uri)


def open_key(ref: KeyRef) -> SigningKey:
    """The key, ready to sign: KeyFileError naming the file or URI when it cannot be used."""
    if isinstance(ref.location, Pkcs11Uri):
        if ref.access is None:
            raise KeyFileError(
                f"{ref.location}: a pkcs11: key needs a [pkcs11] table with module and "
                "pin_env or pin_file"
            )
        from certstatus.keys.pkcs11 import Pkcs11Key

        return Pkcs11Key(ref.location, ref.access)
    from certstatus.keys.pem import load_pem_key

    return load_pem_key(ref.location)


def key_warnings(key: SigningKey) -> list[str]:
    """What start-up should warn about loudly (a token key that may leave the token)."""
    return list(getattr(key, "warnings", []))
