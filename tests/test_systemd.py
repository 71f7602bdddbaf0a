"""deploy/systemd: every unit passes `systemd-analyze verify`, runs as its own unprivileged
user, and scores at most 2.0 on `systemd-analyze security` (issue 16; R25: only the signing
roles may reach the key directory)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "deploy" / "systemd"
ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed")


def installed(tmp_path: Path) -> list[Path]:
    """The units with ExecStart pointing at this environment's certstatus (verify checks the
    binary exists), as an installer would write them."""
    binary = Path(sys.executable).with_name("certstatus")
    copies = []
    for unit in sorted(UNITS.glob("certstatus-*")):
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace("/opt/certstatus/bin/certstatus", str(binary)))
        copies.append(copy)
    return copies


def test_every_unit_verifies(tmp_path: Path) -> None:
    units = installed(tmp_path)
    assert {u.name for u in units} >= {
        "certstatus-responder.service",
        "certstatus-signer.service",
        "certstatus-crl-builder.service",
        "certstatus-crl-builder.timer",
        "certstatus-monitor.service",
    }
    checked = subprocess.run(
        [str(ANALYZE), "verify", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert checked.returncode == 0 and checked.stdout + checked.stderr == "", checked.stderr


@pytest.mark.parametrize("name", [u.name for u in sorted(UNITS.glob("certstatus-*.service"))])
def test_each_service_is_sandboxed_with_exposure_at_most_2(tmp_path: Path, name: str) -> None:
    [unit] = [u for u in installed(tmp_path) if u.name == name]
    text = unit.read_text()
    user = re.search(r"^User=(\S+)$", text, re.M)
    assert user and user.group(1) != "root"
    for setting in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=",
        "MemoryMax=",
        "UMask=0077",
    ):
        assert setting in text, (name, setting)
    if "signer" not in name and "crl" not in name:  # web node and monitor: no key reachable
        assert "InaccessiblePaths=-/etc/certstatus/keys" in text
    scored = subprocess.run(
        [str(ANALYZE), "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", scored.stdout)
    assert found, scored.stdout[-500:] + scored.stderr
    assert float(found.group(1)) <= 2.0, scored.stdout[-2000:]


def test_units_run_as_distinct_users() -> None:
    users = [
        re.search(r"^User=(\S+)$", u.read_text(), re.M).group(1)  # type: ignore[union-attr]
        for u in sorted(UNITS.glob("certstatus-*.service"))
    ]
    assert len(users) == len(set(users)), users
