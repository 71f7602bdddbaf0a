"""A deployment whose CA and responder keys live in a real SoftHSM2 token, created in a temp dir.

The token's configuration goes in $SOFTHSM2_CONF and the PIN in $CERTSTATUS_TEST_PIN (the config
names the variable, never the PIN); both are set with monkeypatch, so subprocesses inherit them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_der_public_key

from certstatus.demo.ca import DemoCA, write_pem
from certstatus.demo.softhsm import create_token, softhsm_module
from certstatus.keys.pkcs11 import Pkcs11Key, forget_tokens
from certstatus.keys.token_admin import generate_key
from certstatus.keys.uri import TokenAccess
from certstatus.ports import free_port
from tests.conftest import CONFIG, Deployment

PIN = "4711-test-pin"
PIN_ENV = "CERTSTATUS_TEST_PIN"
TOKEN = "certstatus"


def token_access() -> TokenAccess:
    return TokenAccess(softhsm_module(), pin_env=PIN_ENV)


def pkcs11_table(access: TokenAccess) -> str:
    return f'\n[pkcs11]\nmodule = "{access.module}"\npin_env = "{access.pin_env}"\n'


def make_token(directory: Path, monkeypatch: pytest.MonkeyPatch) -> TokenAccess:
    """A fresh initialised token for this test; the process's modules restarted onto it."""
    conf = create_token(directory / "hsm", TOKEN, PIN, "so-" + PIN)
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    monkeypatch.setenv(PIN_ENV, PIN)
    forget_tokens()
    return token_access()


def make_hsm_deployment(
    directory: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str = "p256",
    run_signer: bool = False,
    partitions: int = 1,
) -> Deployment:
    """Like conftest.make_deployment, but both keys are generated in the token (not
    extractable) and the certificates are signed there; the config names them by URI."""
    directory.mkdir(parents=True, exist_ok=True)
    access = make_token(directory, monkeypatch)
    ca_uri = generate_key(access, TOKEN, "ca", kind)
    responder_uri = generate_key(access, TOKEN, "responder", kind)
    ca = DemoCA.in_token(Pkcs11Key(ca_uri, access))
    responder = ca.responder_for(
        load_der_public_key(Pkcs11Key(responder_uri, access).public_key_der())
    )
    write_pem(directory / "issuer.pem", ca.certificate)
    write_pem(directory / "responder.pem", responder)
    port = free_port()
    text = CONFIG.format(port=port, run_signer=str(run_signer).lower(), partitions=partitions)
    text = text.replace('responder_key = "responder.key"', f'responder_key = "{responder_uri}"')
    text = text.replace('issuer_key = "issuer.key"', f'issuer_key = "{ca_uri}"')
    (directory / "certstatus.toml").write_text(text + pkcs11_table(access))
    return Deployment(directory, ca, port)
