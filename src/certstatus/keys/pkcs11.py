"""Signing keys that stay in a PKCS#11 token (an HSM; SoftHSM2 in the tests and the demo).

R25: CA keys live in hardware, and delegated responder keys should. The signer and the CRL
builder see only the SigningKey interface, so a key here signs exactly where a PEM key did.

- One session per token per process, opened in the process that signs (the signing pool is
  spawned, and a forked child opens its own), logged in with the PIN read there.
- ECDSA P-256/P-384: the digest is computed here and signed with CKM_ECDSA (SoftHSM2 has no
  CKM_ECDSA_SHA256); the raw r||s the token returns is DER-encoded as X.509 needs. RSA 2048+:
  CKM_SHA256_RSA_PKCS (PKCS#1 v1.5).
- A token that fails while signing (module error, token removed, PIN locked) is reset and the
  session reopened once; if that fails too, KeyUnavailableError: the caller stops signing and
  retries later, and a key found again must be the one first opened (same public key), so a
  token swapped underneath never signs for the wrong certificate.
- Start-up errors (module, token, PIN, object, key type) are KeyFileError naming the URI.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from certstatus.keys.base import KeyFileError, KeyUnavailableError
from certstatus.keys.pem import ECDSA_SHA256, ECDSA_SHA384, RSA_SHA256
from certstatus.keys.uri import Pkcs11Uri, TokenAccess

log = logging.getLogger("certstatus.keys")

# DER of the namedCurve OIDs as CKA_EC_PARAMS holds them
_CURVES: dict[bytes, ec.EllipticCurve] = {
    bytes.fromhex("06082a8648ce3d030107"): ec.SECP256R1(),
    bytes.fromhex("06052b81040022"): ec.SECP384R1(),
}


def _pkcs11() -> Any:
    """python-pkcs11, imported only when a pkcs11: key is configured (an optional extra)."""
    try:
        import pkcs11
    except ImportError:
        raise KeyFileError(
            "pkcs11: keys need python-pkcs11; install certstatus[hsm] (pip install python-pkcs11)"
        ) from None
    return pkcs11


def _name(exc: BaseException) -> str:
    """A PKCS#11 error as its class name (python-pkcs11's messages are mostly empty)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class _Token:
    """One logged-in session on one token, for this process; every key on it shares it."""

    access: TokenAccess
    label: str
    serial: str | None
    lock: threading.RLock = field(default_factory=threading.RLock)
    pid: int = 0
    session: Any = None
    generation: int = 0  # bumped on every reopen: keys re-find their objects
    refused_pin: bytes = b""  # SHA-256 of a PIN the token refused (a retry would lock it)
    refused: str = ""

    def open(self, uri: Pkcs11Uri) -> Any:
        """The session, opened now if there is none (or it belongs to the parent process)."""
        if self.session is not None and self.pid == os.getpid():
            return self.session
        pkcs11 = _pkcs11()
        if self.pid not in (0, os.getpid()):
            # a forked child: the parent's session is not ours; start the library afresh
            self.session = None
            _reinitialize(self.access)
        try:
            lib = pkcs11.lib(str(self.access.module))
        except (RuntimeError, OSError) as exc:  # PKCS11Error subclasses RuntimeError
            raise KeyFileError(
                f"[pkcs11] module {self.access.module}: cannot load or initialise it "
                f"({_name(exc)}); fix the path or the module's own configuration (SoftHSM2: "
                "$SOFTHSM2_CONF and its token directory)"
            ) from None
        kwargs: dict[str, Any] = {"token_label": self.label}
        if self.serial is not None:
            kwargs["token_serial"] = self.serial.encode()
        try:
            token = lib.get_token(**kwargs)
        except pkcs11.NoSuchToken:
            present = _token_labels(lib)
            raise KeyFileError(
                f"{uri}: no token labelled {self.label!r} in {self.access.module} "
                f"(present: {', '.join(present) or 'none'}); fix token= or initialise the token"
            ) from None
        except pkcs11.PKCS11Error as exc:
            raise KeyUnavailableError(f"{uri}: token not reachable ({_name(exc)})") from None
        pin = self.access.pin()
        tried = hashlib.sha256(pin.encode()).digest()
        if tried == self.refused_pin:  # never spend the token's retry counter twice on one PIN
            raise KeyFileError(f"{uri}: {self.refused}")
        try:
            session = token.open(user_pin=pin)
        except (pkcs11.PinIncorrect, pkcs11.PinInvalid, pkcs11.PinLenRange):
            self.refused_pin = tried
            self.refused = (
                f"login refused: the PIN from {self.access.where_pin()} is wrong; "
                "set the token's user PIN there"
            )
            raise KeyFileError(f"{uri}: {self.refused}") from None
        except pkcs11.PinLocked:
            raise KeyFileError(
                f"{uri}: the token's user PIN is locked; unlock it with the SO PIN "
                "(softhsm2-util / the HSM's tool) and set a new one"
            ) from None
        except pkcs11.PKCS11Error as exc:
            raise KeyUnavailableError(f"{uri}: cannot open a session ({_name(exc)})") from None
        finally:
            del pin
        self.session = session
        self.pid = os.getpid()
        self.generation += 1
        return session

    def reset(self) -> None:
        """Forget the session and restart the library (C_Finalize, C_Initialize): SoftHSM2
        and many HSM modules only see a token that came back after a fresh initialisation."""
        if self.session is not None and self.pid == os.getpid():
            with contextlib.suppress(Exception):
                self.session.close()
        self.session = None
        _reinitialize(self.access)


_tokens: dict[tuple[str, str, str | None], _Token] = {}
_tokens_lock = threading.Lock()


def _token_for(access: TokenAccess, uri: Pkcs11Uri) -> _Token:
    key = (str(access.module), uri.token, uri.serial)
    with _tokens_lock:
        token = _tokens.get(key)
        if token is None or token.access != access:
            token = _tokens[key] = _Token(access, uri.token, uri.serial)
        return token


def _reinitialize(access: TokenAccess) -> None:
    """Restart the module for every token of it in this process; errors are left to the next
    open, which reports them (a module with no token directory fails here, then recovers)."""
    import pkcs11

    lib = pkcs11._loaded.get(str(access.module))  # as loaded, not (re)initialised by lib()
    if lib is None:
        return
    with contextlib.suppress(Exception):
        lib.finalize()
    with contextlib.suppress(Exception):
        lib.initialize()
    for token in _tokens.values():
        if token.access.module == access.module:
            token.session = None


def _token_labels(lib: Any) -> list[str]:
    try:
        return sorted(t.label for t in lib.get_tokens())
    except Exception:
        return []


class Pkcs11Key:
    """A SigningKey whose private half never leaves the token."""

    def __init__(self, uri: Pkcs11Uri, access: TokenAccess) -> None:
        self.uri = uri
        self.access = access
        self._token = _token_for(access, uri)
        self._object: Any = None
        self._generation = -1
        self.warnings: list[str] = []
        with self._token.lock:
            private, public_der = self._find()
            self._public_der = public_der
            self._check_attributes(private)
        public = serialization.load_der_public_key(public_der)
        mechanisms = _pkcs11().Mechanism
        self._mechanism = (
            mechanisms.ECDSA
            if isinstance(public, ec.EllipticCurvePublicKey)
            else mechanisms.SHA256_RSA_PKCS
        )
        if isinstance(public, ec.EllipticCurvePublicKey):
            self._ecdsa = True
            if isinstance(public.curve, ec.SECP256R1):
                self.algorithm_identifier = ECDSA_SHA256
                self._hash: Any = hashlib.sha256
            else:
                self.algorithm_identifier = ECDSA_SHA384
                self._hash = hashlib.sha384
            self._size = 2 * ((public.curve.key_size + 7) // 8)
        else:
            assert isinstance(public, rsa.RSAPublicKey)
            self._ecdsa = False
            self.algorithm_identifier = RSA_SHA256
            self._size = (public.key_size + 7) // 8

    def public_key_der(self) -> bytes:
        return self._public_der

    def _find(self) -> tuple[Any, bytes]:
        """The private key object on the token and its public key (SubjectPublicKeyInfo DER)."""
        pkcs11 = _pkcs11()
        session = self._token.open(self.uri)
        criteria: dict[str, Any] = {}
        if self.uri.label is not None:
            criteria["label"] = self.uri.label
        if self.uri.id is not None:
            criteria["id"] = self.uri.id
        where = f"on token {self.uri.token!r}"
        try:
            private = session.get_key(object_class=pkcs11.ObjectClass.PRIVATE_KEY, **criteria)
        except pkcs11.NoSuchKey:
            raise KeyFileError(
                f"{self.uri}: no private key {self.uri.describe_object()} {where}; "
                "fix object=/id= or create the key"
            ) from None
        except pkcs11.MultipleObjectsReturned:
            raise KeyFileError(
                f"{self.uri}: several private keys {self.uri.describe_object()} {where}; "
                "add id= to the URI or relabel them"
            ) from None
        except pkcs11.PKCS11Error as exc:
            raise KeyUnavailableError(
                f"{self.uri}: cannot search the token ({_name(exc)})"
            ) from None
        public_der = self._public_key(session, private)
        self._object = private
        self._generation = self._token.generation
        return private, public_der

    def _public_key(self, session: Any, private: Any) -> bytes:
        pkcs11 = _pkcs11()
        attr = pkcs11.Attribute
        key_type = private.key_type
        if key_type == pkcs11.KeyType.RSA:
            modulus = int.from_bytes(private[attr.MODULUS], "big")
            exponent = int.from_bytes(private[attr.PUBLIC_EXPONENT], "big")
            if modulus.bit_length() < 2048:
                raise KeyFileError(
                    f"{self.uri}: RSA key of {modulus.bit_length()} bits is too small; "
                    "use 2048 or more"
                )
            public: Any = rsa.RSAPublicNumbers(exponent, modulus).public_key()
        elif key_type == pkcs11.KeyType.EC:
            params = bytes(private[attr.EC_PARAMS])
            curve = _CURVES.get(params)
            if curve is None:
                raise KeyFileError(f"{self.uri}: EC curve is not P-256 or P-384; use one of those")
            public = ec.EllipticCurvePublicKey.from_encoded_point(
                curve, self._ec_point(session, private)
            )
        else:
            raise KeyFileError(f"{self.uri}: {key_type.name} keys cannot sign here; use EC or RSA")
        return public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def _ec_point(self, session: Any, private: Any) -> bytes:
        """The EC point from the matching public key object (a private key object has none)."""
        pkcs11 = _pkcs11()
        criteria: dict[str, Any] = {}
        if private.id:
            criteria["id"] = private.id
        if self.uri.label is not None:
            criteria["label"] = self.uri.label
        try:
            public = session.get_key(object_class=pkcs11.ObjectClass.PUBLIC_KEY, **criteria)
        except pkcs11.PKCS11Error:
            raise KeyFileError(
                f"{self.uri}: no single public key object with the private key's id and label "
                "on the token; import the certificate's public key next to it"
            ) from None
        point = bytes(public[pkcs11.Attribute.EC_POINT])
        if point[:1] == b"\x04" and len(point) > 2 and point[1] == len(point) - 2:
            point = point[2:]  # the DER OCTET STRING wrapper most modules return
        elif point[:1] == b"\x04" and len(point) > 3 and point[1] == 0x81:
            point = point[3:]
        return point

    def _check_attributes(self, private: Any) -> None:
        pkcs11 = _pkcs11()
        attr = pkcs11.Attribute
        try:
            extractable = bool(private[attr.EXTRACTABLE])
            sensitive = bool(private[attr.SENSITIVE])
        except pkcs11.PKCS11Error:
            extractable, sensitive = True, False
        if extractable or not sensitive:
            self.warnings.append(
                f"{self.uri}: the private key can leave the token (CKA_EXTRACTABLE "
                f"{str(extractable).lower()}, CKA_SENSITIVE {str(sensitive).lower()}); "
                "generate it again with extractable false and sensitive true (R25)"
            )

    def sign(self, data: bytes) -> bytes:
        message = self._hash(data).digest() if self._ecdsa else data
        with self._token.lock:
            try:
                raw = self._sign_once(message)
            except KeyUnavailableError:
                raise
            except Exception as first:
                log.warning(
                    "%s: signing failed (%s); reopening the session", self.uri, _name(first)
                )
                self._token.reset()
                try:
                    raw = self._sign_once(message)
                except KeyFileError as exc:
                    text = str(exc).removeprefix(f"{self.uri}: ")
                    raise KeyUnavailableError(f"{self.uri}: not usable now: {text}") from None
                except KeyUnavailableError:
                    raise
                except Exception as exc:
                    raise KeyUnavailableError(
                        f"{self.uri}: token not usable ({_name(exc)}); not signing"
                    ) from None
        if len(raw) != self._size:
            raise KeyUnavailableError(
                f"{self.uri}: token returned a {len(raw)}-byte signature, expected {self._size}"
            )
        if self._ecdsa:
            half = self._size // 2
            return encode_dss_signature(
                int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
            )
        return bytes(raw)

    def _sign_once(self, message: bytes) -> bytes:
        token = self._token
        if (
            self._object is None
            or self._generation != token.generation
            or token.session is None
            or token.pid != os.getpid()
        ):
            _, public_der = self._find()
            if public_der != self._public_der:
                self._object = None
                raise KeyUnavailableError(
                    f"{self.uri}: the key on the token is no longer the one this process "
                    "started with; not signing (restart after installing the new certificate)"
                )
        return bytes(self._object.sign(message, mechanism=self._mechanism))


def forget_tokens() -> None:
    """Close every session of this process and finalise the loaded modules, so the next key
    opened starts afresh (tests switching SoftHSM2 configurations; a command that rotated a
    key and reopens it)."""
    import sys

    pkcs11 = sys.modules.get("pkcs11")
    with _tokens_lock:
        _tokens.clear()
    if pkcs11 is None:
        return
    for lib in list(pkcs11._loaded.values()):
        with contextlib.suppress(Exception):
            lib.finalize()
