"""A bad configuration is refused with every problem named by its key and a fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from certstatus.config import ConfigError, load_config, parse_duration


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "certstatus.toml"
    path.write_text(text)
    return path


GOOD_ISSUER = """
[[issuers]]
name = "demo"
certificate = "issuer.pem"
responder_certificate = "responder.pem"
responder_key = "responder.key"
"""


@pytest.mark.parametrize(
    ("text", "key", "fix"),
    [
        ('database = "x.db"\n', "issuers", "[[issuers]]"),
        (GOOD_ISSUER, "database", "database ="),
        (
            'database = "x.db"\n[signing]\nvalidity = "11d"\n' + GOOD_ISSUER,
            "signing.validity",
            "R3",
        ),
        (
            'database = "x.db"\n[signing]\nrefresh_after = "5d"\n' + GOOD_ISSUER,
            "signing.refresh_after",
            "R4",
        ),
        (
            'database = "x.db"\n[signing]\nvalidity = "seven days"\n' + GOOD_ISSUER,
            "signing.validity",
            "duration",
        ),
        (
            'database = "x.db"\n[responder]\nlisten = "8080"\n' + GOOD_ISSUER,
            "responder.listen",
            "host:port",
        ),
        (
            'database = "x.db"\n[responder]\nserver = "gunicorn"\n' + GOOD_ISSUER,
            "responder.server",
            "uvicorn",
        ),
        (
            'database = "x.db"\n[responder]\nworkers = true\n' + GOOD_ISSUER,
            "responder.workers",
            "number",
        ),
        ('database = "x.db"\ncolour = "blue"\n' + GOOD_ISSUER, "colour", "unknown key"),
        (
            'database = "x.db"\n[[issuers]]\nname = "a b"\ncertificate = "c"\n',
            "issuers[0].name",
            "letters",
        ),
        (
            'database = "x.db"\n[[issuers]]\nname = "a"\ncertificate = "c"\n',
            "issuers[0].responder_key",
            "required",
        ),
        ('database = "x.db"\n' + GOOD_ISSUER + GOOD_ISSUER, "issuers[1].name", "used by"),
        ("database = \n", "config", "not valid TOML"),
    ],
)
def test_each_error_names_key_and_fix(tmp_path: Path, text: str, key: str, fix: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text))
    lines = str(error.value).splitlines()
    assert any(f": {key}: " in line and fix in line for line in lines), lines


def test_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_durations() -> None:
    assert parse_duration("7d") == 7 * 86400
    assert parse_duration("3h30m") == 3 * 3600 + 30 * 60
    assert parse_duration(90) == 90
    for bad in ("", "7x", "d7", True, 1.5):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_check_config_command(deployment, tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "certstatus.cli", "check-config", str(deployment.config_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "1 issuer" in ok.stdout
    bad = write(tmp_path, 'database = "x.db"\n[signing]\nvalidity = "11d"\n' + GOOD_ISSUER)
    refused = subprocess.run(
        [sys.executable, "-m", "certstatus.cli", "check-config", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2
    assert "signing.validity" in refused.stderr
    assert "Traceback" not in refused.stderr
