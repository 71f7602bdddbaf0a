"""A bad configuration is refused with every problem named by its key and a fix."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from certstatus.config import (
    ConfigError,
    ResponderConfig,
    SigningConfig,
    describe,
    load_config,
    parse_duration,
)
from certstatus.ocsp.request import MAX_POST_BODY, MalformedRequest, decode_request
from certstatus.ocsp.schedule import SchedulePolicy


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
            'database = "x.db"\n[responder]\nadmin_listen = "9464"\n' + GOOD_ISSUER,
            "responder.admin_listen",
            "host:port",
        ),
        (
            'database = "x.db"\n[responder]\nlisten = "127.0.0.1:9000"\n'
            'admin_listen = "127.0.0.1:9000"\n' + GOOD_ISSUER,
            "responder.admin_listen",
            "must differ from listen",
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
            "issuers[0].responder_certificate",
            "required",
        ),
        ('database = "x.db"\n' + GOOD_ISSUER + GOOD_ISSUER, "issuers[1].name", "used by"),
        (
            'database = "x.db"\n[crl]\nperiod = "3d"\n[housekeeping]\nretention = "2d"\n'
            + GOOD_ISSUER,
            "housekeeping.retention",
            "R18",
        ),
        (
            'database = "x.db"\n[housekeeping]\nbatch_size = 5\n' + GOOD_ISSUER,
            "housekeeping.batch_size",
            "between 100 and 100000",
        ),
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
        [
            sys.executable,
            "-m",
            "certstatus.cli",
            "check-config",
            f"--config={deployment.config_path}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "1 issuer" in ok.stdout
    bad = write(tmp_path, 'database = "x.db"\n[signing]\nvalidity = "11d"\n' + GOOD_ISSUER)
    refused = subprocess.run(
        [sys.executable, "-m", "certstatus.cli", "check-config", "--config", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2
    assert "signing.validity" in refused.stderr
    assert "Traceback" not in refused.stderr


def problems_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text))
    return str(error.value).splitlines()


@pytest.mark.parametrize("value", ["3", '""', "true", "[1]"])
def test_a_database_of_the_wrong_kind_is_one_clear_problem(tmp_path: Path, value: str) -> None:
    lines = problems_of(tmp_path, f"database = {value}\n" + GOOD_ISSUER)
    about = [line for line in lines if ": database: " in line]
    assert len(about) == 1, lines
    assert "expected a SQLite path or a postgresql:// URL" in about[0]
    assert 'database = "certstatus.db"' in about[0]


def test_a_missing_database_says_it_is_required(tmp_path: Path) -> None:
    assert problems_of(tmp_path, GOOD_ISSUER) == [
        f'{tmp_path / "certstatus.toml"}: database: required: e.g. database = "certstatus.db"'
    ]


def nonce_request(size: int) -> bytes:
    """A valid one-certificate OCSP request of exactly size bytes, padded with a nonce."""
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        b"\0" * 20, b"\1" * 20, 5, hashes.SHA1()
    )
    for length in range(size, 0, -1):
        der = (
            builder.add_extension(x509.OCSPNonce(b"n" * length), critical=False)
            .build()
            .public_bytes(serialization.Encoding.DER)
        )
        if len(der) == size:
            return der
    raise AssertionError(f"no request of {size} bytes")


def test_max_post_body_is_the_decoders_cap_one_rule(tmp_path: Path) -> None:
    """Any body the configuration lets through is decoded, and a setting the decoder would
    silently undercut is refused."""
    largest = load_config(
        write(
            tmp_path,
            f'database = "x.db"\n[responder]\nmax_post_body = {MAX_POST_BODY}\n' + GOOD_ISSUER,
        )
    )
    assert largest.responder.max_post_body == MAX_POST_BODY == ResponderConfig().max_post_body
    assert decode_request(nonce_request(MAX_POST_BODY)).serial == 5
    with pytest.raises(MalformedRequest):
        decode_request(nonce_request(MAX_POST_BODY + 1))
    for refused in (MAX_POST_BODY + 1, 65_536, 511):
        lines = problems_of(
            tmp_path, f'database = "x.db"\n[responder]\nmax_post_body = {refused}\n' + GOOD_ISSUER
        )
        assert any(
            ": responder.max_post_body: " in line and f"and {MAX_POST_BODY} bytes" in line
            for line in lines
        ), lines


def test_every_problem_is_reported_at_once_each_naming_its_key(tmp_path: Path) -> None:
    text = (
        "database = 3\ncolour = 1\n"
        '[responder]\nworkers = -1\nlisten = "x"\nmax_staleness = "0s"\n'
        '[signing]\nvalidity = "1h"\nbatch_size = 0\n'
        '[crl]\nperiod = "8d"\n'
        '[purge]\nrecheck_after = "2h"\n'
        '[monitor]\nwarn_after = "20m"\ncritical_after = "16m"\nsample_size = -1\n'
        '[[replicas]]\nurl = "mysql://x"\n'
        '[[caches]]\nname = "c"\nurl = "http://c/"\nkind = "tag-api"\n'
        '[[caches]]\nname = "c"\nurl = "http://d/"\n'
        '[[issuers]]\nname = "a"\ncertificate = "c.pem"\ncrl_partitions = 2\n'
    )
    lines = problems_of(tmp_path, text)
    where = f"{tmp_path / 'certstatus.toml'}: "
    assert all(re.match(re.escape(where) + r"[a-z_.\[\]0-9]+: \S", line) for line in lines), lines
    keys = {line.removeprefix(where).split(": ")[0] for line in lines}
    assert keys == {
        "database",
        "colour",
        "responder.workers",
        "responder.listen",
        "responder.max_staleness",
        "signing.validity",
        "signing.batch_size",
        "crl.period",
        "purge.recheck_after",
        "monitor.warn_after",
        "monitor.critical_after",
        "monitor.sample_size",
        "replicas[0].name",
        "replicas[0].url",
        "replicas",  # replicas need a PostgreSQL primary
        "caches[0].token_env",
        "caches[1].name",  # used by another cache
        "issuers[0].responder_certificate",  # the key is the signing roles' (R25)
        "issuers[0].crl_url",
    }, lines


def test_allowed_keys_are_the_declared_fields(tmp_path: Path) -> None:
    """An unknown key lists exactly the table's fields: nothing typed a second time."""
    lines = problems_of(tmp_path, 'database = "x.db"\n[responder]\ncolour = 1\n' + GOOD_ISSUER)
    listed = lines[0].split("known keys here: ")[1].split(", ")
    assert listed == sorted(f.name for f in dataclasses.fields(ResponderConfig))
    lines = problems_of(tmp_path, 'database = "x.db"\n[signing]\ncolour = 1\n' + GOOD_ISSUER)
    listed = lines[0].split("known keys here: ")[1].split(", ")
    signing = [f.name for f in dataclasses.fields(SigningConfig) if f.name != "policy"]
    assert listed == sorted(signing + [f.name for f in dataclasses.fields(SchedulePolicy)])


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a duration held as float (max_staleness)
    if isinstance(value, tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value) if not isinstance(value, str) else f'"{value}"'


def test_every_default_written_out_reads_back_as_the_default(tmp_path: Path) -> None:
    """The declaration's defaults are values its own readers accept: a file spelling out every
    default loads to the same configuration as one that leaves them out."""
    tables: dict[str, list[str]] = {}
    for name, default, _ in describe():
        table, _, key = name.rpartition(".")
        if default is not None and "[]" not in table and table:
            tables.setdefault(table, []).append(f"{key} = {toml_value(default)}")
    spelled = 'database = "x.db"\n' + GOOD_ISSUER
    for table, lines in tables.items():
        spelled += f"[{table}]\n" + "\n".join(lines) + "\n"
    full = load_config(write(tmp_path, spelled))
    bare = load_config(write(tmp_path, 'database = "x.db"\n' + GOOD_ISSUER))
    assert set(tables) == {
        "responder",
        "signing",
        "crl",
        "monitor",
        "api",
        "purge",  # recheck_after's default is unset; the coalescing keys have defaults
        "housekeeping",
    }
    for table in tables:
        assert getattr(full, table) == getattr(bare, table), table


def documented_keys(markdown: str) -> set[str]:
    """Every key set in the TOML examples of a Markdown file, arrays of tables as "name[]"."""
    keys: set[str] = set()

    def walk(value: object, where: str) -> None:
        if isinstance(value, dict):
            for name, inner in value.items():
                walk(inner, f"{where}.{name}" if where else name)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                walk(item, where + "[]")
        else:
            keys.add(where)

    for block in re.findall(r"```toml\n(.*?)```", markdown, re.S):
        walk(tomllib.loads(block), "")
    return keys


def test_the_readme_documents_every_key_and_no_other() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    declared = {name for name, _, _ in describe()}
    assert documented_keys(readme) == declared
