"""Creating and relabelling keys on a PKCS#11 token: the few administrative steps certstatus
takes itself (a new responder key for `responder-cert request`, the swap at `install`, the
demo's token). Keys are generated on the token, sensitive and not extractable (R25).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from certstatus.keys.base import KeyFileError
from certstatus.keys.pkcs11 import _pkcs11
from certstatus.keys.uri import Pkcs11Uri, TokenAccess

KINDS = ("p256", "p384", "rsa2048", "rsa3072")
_CURVE_NAMES = {"p256": "secp256r1", "p384": "secp384r1"}


@contextmanager
def admin_session(access: TokenAccess, token_label: str) -> Iterator[Any]:
    """A read-write session on the token, logged in as the user, closed afterwards."""
    pkcs11 = _pkcs11()
    lib = pkcs11.lib(str(access.module))
    try:
        token = lib.get_token(token_label=token_label)
    except pkcs11.NoSuchToken:
        raise KeyFileError(f"no token labelled {token_label!r} in {access.module}") from None
    try:
        session = token.open(rw=True, user_pin=access.pin())
    except pkcs11.UserAlreadyLoggedIn:  # this process already holds a logged-in session
        session = token.open(rw=True)
    except (pkcs11.PinIncorrect, pkcs11.PinLocked) as exc:
        raise KeyFileError(
            f"token {token_label!r}: login refused ({type(exc).__name__}); check the PIN in "
            f"{access.where_pin()}"
        ) from None
    try:
        yield session
    finally:
        session.close()


def generate_key(
    access: TokenAccess, token_label: str, label: str, kind: str, extractable: bool = False
) -> Pkcs11Uri:
    """A new key pair on the token under label (and a fresh random id); its URI."""
    pkcs11 = _pkcs11()
    attr = pkcs11.Attribute
    key_id = secrets.token_bytes(8)
    private_template = {
        attr.SENSITIVE: not extractable,
        attr.EXTRACTABLE: extractable,
        attr.SIGN: True,
        attr.PRIVATE: True,
    }
    public_template = {attr.VERIFY: True}
    with admin_session(access, token_label) as session:
        if kind in _CURVE_NAMES:
            from pkcs11.util.ec import encode_named_curve_parameters

            parameters = session.create_domain_parameters(
                pkcs11.KeyType.EC,
                {attr.EC_PARAMS: encode_named_curve_parameters(_CURVE_NAMES[kind])},
                local=True,
            )
            parameters.generate_keypair(
                store=True,
                label=label,
                id=key_id,
                private_template=private_template,
                public_template=public_template,
            )
        elif kind.startswith("rsa"):
            session.generate_keypair(
                pkcs11.KeyType.RSA,
                int(kind[3:]),
                store=True,
                label=label,
                id=key_id,
                private_template=private_template,
                public_template=public_template,
            )
        else:
            raise KeyFileError(f"key type {kind!r} is not one of {', '.join(KINDS)}")
    return Pkcs11Uri.parse(
        f"pkcs11:token={_quote(token_label)};object={_quote(label)};type=private"
    )


def relabel(access: TokenAccess, token_label: str, old: str, new: str) -> int:
    """Give every object labelled old (private and public key) the label new; how many."""
    pkcs11 = _pkcs11()
    with admin_session(access, token_label) as session:
        found = list(session.get_objects({pkcs11.Attribute.LABEL: old}))
        for item in found:
            item[pkcs11.Attribute.LABEL] = new
    return len(found)


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="-._~")
