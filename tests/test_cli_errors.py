"""The command line's promise, checked through the real `certstatus` with stderr to a pipe: every
user error is exactly one line per problem, verbatim (no wrapping at 80 columns, no markup
eaten), exit status 2, no traceback, and nothing written when a command is refused."""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest

from certstatus.store.schema import SQLITE_MIGRATIONS

CLI = [sys.executable, "-m", "certstatus.cli"]


def run(
    *args: str, config: Path | None = None, columns: int = 80
) -> subprocess.CompletedProcess[str]:
    """The command as a script runs it: stdout and stderr pipes, a terminal width of 80."""
    env = {**os.environ, "COLUMNS": str(columns)}
    env.pop("CERTSTATUS_CONFIG", None)
    if config is not None:
        args = (*args, "--config", str(config))
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a refused command (asserting it is one, with status 2)."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_error_longer_than_80_columns_is_one_verbatim_line(tmp_path: Path) -> None:
    """rich wrapped errors at 80 columns into a pipe and ate `[[issuers]]` as markup."""
    directory = tmp_path / ("a-directory-name-long-enough-to-push-the-message-past-80-columns")
    directory.mkdir()
    config = directory / "certstatus.toml"
    config.write_text('database = "certstatus.db"\n')
    line = one_line_error(run("check-config", config=config))
    assert len(line) > 80
    assert "[[issuers]]" in line
    assert str(config) in line


def test_check_config_takes_config_like_every_command(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    line = one_line_error(run("check-config", config=missing))
    assert str(missing) in line and "point --config" in line  # true now: it takes --config
    refused = run("check-config", str(missing))
    assert refused.returncode == 2 and "--config" not in refused.stdout


@pytest.mark.integration
def test_busy_port_in_serve_is_one_line(deployment) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", deployment.port))
        holder.listen()
        line = one_line_error(run("serve", config=deployment.config_path))
    assert "responder.listen" in line and "another server" in line
    assert "serving" not in line


def test_crl_export_into_a_file_is_one_line(deployment) -> None:
    deployment.store().close()  # a deployment's database exists (CRL commands refuse a typo)
    assert run("crl", "build", config=deployment.config_path).returncode == 0
    target = deployment.dir / "a-file"
    target.write_text("not a directory")
    line = one_line_error(run("crl", "export", str(target), config=deployment.config_path))
    assert str(target) in line
    assert target.read_text() == "not a directory"
    # under a file, deeper: the same one line, not a traceback
    one_line_error(run("crl", "export", str(target / "sub"), config=deployment.config_path))


def test_crl_disclosure_of_an_unknown_issuer_lists_the_known_ones(deployment) -> None:
    deployment.store().close()  # the partitions in use are read from the database
    line = one_line_error(
        run("crl", "disclosure", "--issuer", "nosuch", config=deployment.config_path)
    )
    assert "unknown issuer 'nosuch'" in line and "known issuers: demo" in line
    ok = run("crl", "disclosure", "--issuer", "demo", config=deployment.config_path)
    assert ok.returncode == 0 and ok.stdout.startswith('["http://')


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is empty"),
        (b"\n\n", "is empty"),
        (b"garbage that is no certificate", "not a PEM or DER certificate"),
        (
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "not a PEM or DER certificate",
        ),
    ],
)
def test_add_of_garbage_or_empty_file_is_one_plain_line(
    deployment, content: bytes, expected: str
) -> None:
    bad = deployment.dir / "bad.pem"
    bad.write_bytes(content)
    line = one_line_error(run("add", str(bad), config=deployment.config_path))
    assert expected in line and str(bad) in line
    assert "ParseError" not in line and "InvalidLength" not in line and "{" not in line


def test_add_refuses_the_ca_and_the_responder_certificate(deployment) -> None:
    """Neither is a leaf: recorded, each got signed responses of its own."""
    good = deployment.write_leaf(deployment.leaf())
    for name, why in (("issuer.pem", "CA certificate"), ("responder.pem", "OCSP responder")):
        line = one_line_error(
            run("add", str(good), str(deployment.dir / name), config=deployment.config_path)
        )
        assert why in line and name in line
    assert deployment.store().counts()["certificates"] == 0  # not even the good one


def iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_revoke_keycompromise_again_with_an_earlier_time_and_the_reason_name(deployment) -> None:
    leaf = deployment.leaf()
    path = deployment.write_leaf(leaf)
    cfg = deployment.config_path
    assert run("add", str(path), config=cfg).returncode == 0
    serial = f"{leaf.serial_number:x}"
    now = dt.datetime.now(dt.UTC)
    first = run("revoke", "--issuer", "demo", "--reason", "keyCompromise", serial, config=cfg)
    assert first.returncode == 0, first.stderr
    assert "(keyCompromise)" in first.stdout and "reason 1" not in first.stdout
    earlier = now - dt.timedelta(minutes=2)  # the demo CA's leaves start 5 minutes back
    moved = run(
        "revoke", "--issuer", "demo", "--reason", "keyCompromise", "--time", iso(earlier),
        serial, config=cfg,
    )  # fmt: skip
    assert moved.returncode == 0, moved.stderr
    row = deployment.store().certificate(1, leaf.serial_number)
    assert row is not None and row.revoked_at == int(earlier.timestamp()) and row.reason == 1
    # never later, and not again without a time
    for extra in (["--time", iso(now)], []):
        line = one_line_error(
            run("revoke", "--issuer", "demo", "--reason", "keyCompromise", *extra, serial,
                config=cfg)
        )  # fmt: skip
        assert "already revoked" in line
    after = deployment.store().certificate(1, leaf.serial_number)
    assert after is not None and after.revoked_at == int(earlier.timestamp())


def test_revoke_success_line_names_every_reason(deployment) -> None:
    leaf = deployment.leaf()
    cfg = deployment.config_path
    assert run("add", str(deployment.write_leaf(leaf)), config=cfg).returncode == 0
    done = run(
        "revoke", "--issuer", "demo", "--reason", "superseded", f"{leaf.serial_number:x}",
        config=cfg,
    )  # fmt: skip
    assert done.returncode == 0 and "(superseded)" in done.stdout
    assert not re.search(r"reason \d", done.stdout)


def test_help_describes_every_command_without_truncating() -> None:
    result = run("--help", columns=80)
    assert result.returncode == 0
    commands = result.stdout.split("Commands:", 1)[1]
    assert "..." not in commands, commands
    for group in ("crl", "cache", "cluster"):
        sub = run(group, "--help", columns=80).stdout.split("Commands:", 1)[1]
        assert "..." not in sub, sub


def test_every_demo_option_has_help() -> None:
    from certstatus.cli.demo import demo

    for parameter in demo.params:
        if isinstance(parameter, click.Option):
            assert parameter.help, f"demo {parameter.opts} has no help"


def test_cache_takes_dir_like_cluster(tmp_path: Path) -> None:
    line = one_line_error(run("cache", "status", "--dir", str(tmp_path / "cache")))
    assert f"no cache running from {tmp_path / 'cache'}" in line
    positional = run("cache", "status", str(tmp_path / "cache"))
    assert positional.returncode == 2 and "Traceback" not in positional.stderr
    down = run("cache", "down", "--dir", str(tmp_path / "cache"))
    assert down.returncode == 0 and "no cache was running" in down.stderr


def test_stats_counts_and_purge_backlog(deployment) -> None:
    leaf = deployment.leaf()
    deployment.ingest().add_certificates([(leaf, "l")], int(time.time()))
    result = run("stats", config=deployment.config_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"certificates: 1\n", result.stdout)
    assert "purges pending: 0" in result.stdout
    newest = max(version for version, _ in SQLITE_MIGRATIONS)
    assert re.search(rf"schema: {newest}\n", result.stdout)  # what an upgrade guide asks


def test_stats_on_a_database_that_cannot_be_opened_is_one_line(deployment) -> None:
    config = deployment.dir / "elsewhere.toml"
    text = deployment.config_path.read_text().replace(
        'database = "certstatus.db"', 'database = "no/such/dir/x.db"'
    )
    config.write_text(text.replace('"issuer.pem"', f'"{deployment.dir / "issuer.pem"}"'))
    one_line_error(run("stats", config=config))


@pytest.mark.parametrize(
    "command",
    [
        ["stats"],
        ["revoke", "1a2b", "--issuer", "demo", "--reason", "superseded"],
        ["revoke", "--from", "revocations.csv"],
        ["import", "crl", "--issuer", "demo", "old.crl"],
        ["audit", "verify"],
        ["audit", "head"],
        ["audit", "export"],
        ["site", "status"],
        ["response-format", "--sha256", "on-request"],
        ["sign"],
        ["crl", "build"],  # it signed and published an empty CRL #1 with the issuer's key
        ["crl", "export", "exported"],
    ],
)
def test_admin_commands_refuse_a_database_that_does_not_exist(deployment, command) -> None:
    """A mistyped `database` used to leave an empty SQLite file behind and answer from it
    ("certificates: 0", "unknown serial"): now one line naming the path, and nothing created."""
    config = deployment.dir / "typo.toml"
    text = deployment.config_path.read_text().replace(
        'database = "certstatus.db"', 'database = "certsatus.db"'
    )
    config.write_text(text)
    (deployment.dir / "revocations.csv").write_text("demo,1a2b,superseded\n")
    line = one_line_error(run(*command, config=config))
    missing = deployment.dir / "certsatus.db"
    assert f"database: {missing} does not exist" in line
    assert "`database`" in line
    assert not missing.exists()
