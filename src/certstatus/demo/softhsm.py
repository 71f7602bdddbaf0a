"""A SoftHSM2 token in a directory of its own: the demo's HSM (`demo --pkcs11`) and the tests'.

SoftHSM2 reads its configuration from $SOFTHSM2_CONF when the module is initialised, so a
process that uses this token must have that variable set before it opens any key; the demo
sets it for itself and the server it spawns.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from certstatus.files import PRIVATE, write_file

MODULES = (
    Path("/usr/lib/softhsm/libsofthsm2.so"),
    Path("/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"),
    Path("/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so"),
    Path("/usr/local/lib/softhsm/libsofthsm2.so"),
)


class SoftHsmMissing(RuntimeError):
    """SoftHSM2 is not installed."""


def softhsm_module() -> Path:
    """The installed SoftHSM2 module; SoftHsmMissing names the package otherwise."""
    for path in MODULES:
        if path.exists():
            return path
    raise SoftHsmMissing("SoftHSM2 is not installed: apt-get install softhsm2")


def create_token(directory: Path, label: str, pin: str, so_pin: str) -> Path:
    """Create directory/softhsm2.conf and an initialised token labelled label; returns the
    configuration path (the value for SOFTHSM2_CONF)."""
    if shutil.which("softhsm2-util") is None:
        raise SoftHsmMissing("softhsm2-util is not installed: apt-get install softhsm2")
    tokens = directory / "tokens"
    tokens.mkdir(parents=True, mode=0o700, exist_ok=True)
    conf = directory / "softhsm2.conf"
    write_file(
        conf,
        f"directories.tokendir = {tokens.resolve()}\nobjectstore.backend = file\n"
        "log.level = ERROR\nslots.removable = false\n".encode(),
        PRIVATE,
    )
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin,
         "--so-pin", so_pin],
        env={**os.environ, "SOFTHSM2_CONF": str(conf.resolve())},
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return conf.resolve()
