"""One TOML file describes a deployment. Every error names the key and what would fix it.

Each table of the file is a frozen dataclass here, and each key is declared once, as a field of
it: the default, how the value is read (a reader raising ValueError that says what was
expected), the bound the value must keep, and a line of help. The keys a table allows are its
fields, and one generic loader (_Loader) reads every table, so nothing is listed twice. Rules
that tie several keys together are the class's problems() method, as on SchedulePolicy and
CrlPolicy, whose fields are the [signing] schedule keys and the [crl] table (durations all).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import re
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certstatus.crl.layout import CrlLayout, layout_problems
from certstatus.crl.schedule import CrlPolicy
from certstatus.keys.base import KeyFileError, KeyUnavailableError, SigningKey
from certstatus.keys.certificates import CertificateError, load_certificate, responder_problems
from certstatus.keys.source import KeyLocation, KeyRef, key_warnings, open_key
from certstatus.keys.uri import SCHEME as PKCS11_SCHEME
from certstatus.keys.uri import Pkcs11Uri, TokenAccess
from certstatus.ocsp.request import MAX_POST_BODY
from certstatus.ocsp.schedule import SchedulePolicy

log = logging.getLogger("certstatus.config")

DEFAULT_PATH = Path("certstatus.toml")
_DURATION = re.compile(r"(\d+)\s*([dhms])")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_NAME_RULE = "letters, digits, '.', '_' or '-'"
MIN_POST_BODY = 512


class ConfigError(ValueError):
    """All the problems found in a configuration, one per line, each naming its key."""

    def __init__(self, problems: list[tuple[str, str]], source: Path | None = None) -> None:
        self.problems = problems
        where = f"{source}: " if source else ""
        super().__init__("\n".join(f"{where}{key}: {message}" for key, message in problems))


def parse_duration(value: object) -> int:
    """Seconds from an integer or a string like '7d', '3h30m', '90s'."""
    if isinstance(value, bool):
        raise ValueError("not a duration")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.replace(" ", "")
        parts = _DURATION.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            return sum(int(n) * _UNITS[u] for n, u in parts)
    raise ValueError("not a duration")


# --- how keys are declared ------------------------------------------------------------------

Reader = Callable[[Any], Any]
Bound = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class Key:
    """How one key is read. read turns the TOML value into the attribute's value, or raises
    ValueError with the problem and its fix; bound returns what is wrong with a value read, or
    None; required, when set, is the fix printed for a missing key (such a key has no default)."""

    read: Reader
    bound: Bound | None = None
    required: str | None = None
    help: str = ""


@dataclass(frozen=True)
class Table:
    """A field read from a table of its own ([name]); with many (list or tuple), from an array
    of tables ([[name]]) whose items must have different names when unique says what they are.
    embedded: the class's keys sit in the enclosing table itself ([signing]'s schedule keys)."""

    kind: type
    many: type | None = None
    required: str | None = None
    unique: str | None = None
    embedded: bool = False
    help: str = ""


def key(
    read: Reader,
    bound: Bound | None = None,
    required: str | None = None,
    help: str = "",
) -> dict[str, Key]:
    """The metadata of a dataclass field that is a key of its table: field(default=...,
    metadata=key(...)), or field(metadata=key(..., required=fix)) for a key with no default."""
    return {"key": Key(read, bound, required, help)}


def table_of(
    kind: type,
    many: type | None = None,
    required: str | None = None,
    unique: str | None = None,
    embedded: bool = False,
    help: str = "",
) -> dict[str, Table]:
    """The metadata of a dataclass field that is a table (see Table)."""
    return {"table": Table(kind, many, required, unique, embedded, help)}


# The schedule policies live beside the code that applies them and know nothing of TOML: every
# field of theirs is a key read as a duration, with the policy's own default.
_POLICIES: tuple[type, ...] = (SchedulePolicy, CrlPolicy)


def _declared(kind: type) -> Iterator[tuple[dataclasses.Field[Any], Key | Table]]:
    for f in dataclasses.fields(kind):
        if "key" in f.metadata:
            yield f, f.metadata["key"]
        elif "table" in f.metadata:
            yield f, f.metadata["table"]
        elif kind in _POLICIES:
            yield f, Key(_duration)


def known_keys(kind: type) -> list[str]:
    """The keys a table of this kind allows: its declared fields (and those it embeds)."""
    names = []
    for f, spec in _declared(kind):
        if isinstance(spec, Table) and spec.embedded:
            names += known_keys(spec.kind)
        else:
            names.append(f.name)
    return names


def describe(kind: type | None = None, where: str = "") -> Iterator[tuple[str, Any, str]]:
    """(dotted key, default, help) for every key of the file, arrays of tables as "name[]":
    what the README's configuration reference documents (tests/test_config.py holds it to it)."""
    kind = kind or Config
    prefix = f"{where}." if where else ""
    for f, spec in _declared(kind):
        if isinstance(spec, Table):
            inner = where if spec.embedded else prefix + f.name + ("[]" if spec.many else "")
            yield from describe(spec.kind, inner)
        else:
            default = None if f.default is dataclasses.MISSING else f.default
            yield prefix + f.name, default, spec.help


# --- readers and bounds ---------------------------------------------------------------------


def _typed(kind: type, hint: str) -> Reader:
    def read(value: Any) -> Any:
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
        raise ValueError(f"expected {hint}, got {value!r}")

    return read


def _optional(read: Reader) -> Reader:
    """An empty string means unset (None), as an absent key does."""
    return lambda value: None if value == "" else read(value)


def _duration(value: Any) -> int:
    try:
        return parse_duration(value)
    except ValueError:
        raise ValueError(f'expected a duration like "7d", "3h" or seconds, got {value!r}') from None


def _durations(value: Any) -> tuple[int, ...]:
    try:
        found = tuple(sorted(parse_duration(v) for v in value))
    except (ValueError, TypeError):
        found = ()
    if not found or found[0] <= 0:
        raise ValueError(f'expected a list of durations like ["1s", "10s", "1m"], got {value!r}')
    return found


def _is_listen(value: str) -> bool:
    host, _, port = value.rpartition(":")
    return bool(host) and port.isdigit() and 0 <= int(port) <= 65535


def _listen(example: str) -> Reader:
    def read(value: Any) -> str:
        if isinstance(value, str) and _is_listen(value):
            return value
        raise ValueError(f'expected "host:port", e.g. "{example}", got {value!r}')

    return read


def _one_of(*choices: str) -> Reader:
    def read(value: Any) -> str:
        if value in choices:
            return str(value)
        raise ValueError(f"must be {' or '.join(f'{c!r}' for c in choices)}, got {value!r}")

    return read


def _name(value: Any) -> str:
    if isinstance(value, str) and _NAME.match(value):
        return value
    raise ValueError(f"must be 1-64 {_NAME_RULE}, got {value!r}")


def _url(schemes: tuple[str, ...], example: str) -> Reader:
    def read(value: Any) -> str:
        if isinstance(value, str) and value.startswith(schemes):
            return value
        raise ValueError(f'expected a URL like "{example}", got {value!r}')

    return read


def _path(value: Any) -> Path:
    if isinstance(value, str) and value:
        return Path(value)  # the loader makes it relative to the configuration file
    raise ValueError(f"expected a file path, got {value!r}")


def _key_location(value: Any) -> KeyLocation:
    """A PEM file path, or an RFC 7512 pkcs11: URI naming a private key on a token."""
    if isinstance(value, str) and value.startswith(PKCS11_SCHEME):
        return Pkcs11Uri.parse(value)
    if isinstance(value, str) and value:
        return Path(value)
    raise ValueError(
        f'expected a PEM file path or a pkcs11: URI like "pkcs11:token=certstatus;'
        f'object=responder;type=private", got {value!r}'
    )


def _fraction(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    raise ValueError(f"expected a fraction 0..1, got {value!r}")


def _database(value: Any) -> str:
    if isinstance(value, str) and value:
        return value
    raise ValueError(
        'expected a SQLite path or a postgresql:// URL, e.g. database = "certstatus.db", '
        f"got {value!r}"
    )


def _between(low: float, high: float, problem: str) -> Bound:
    return lambda value: None if low <= value <= high else problem


def _at_least(low: float, problem: str) -> Bound:
    return lambda value: None if value >= low else problem


_PROCESSES = _typed(int, "a number of processes (0 = one per core)")
_ONE_PER_CORE = _at_least(0, "must be 0 (one per core) or more")
_FLAG = _typed(bool, "true or false")
_SITE = _optional(_typed(str, "a site name"))
_HTTP = ("http://", "https://")
_POSTGRES = ("postgres://", "postgresql://")


# --- the file's tables ----------------------------------------------------------------------


@dataclass(frozen=True)
class IssuerConfig:
    """[[issuers]]: one CA whose certificates are recorded and answered for."""

    name: str = field(
        metadata=key(read=_name, required=_NAME_RULE, help="short name used on the command line")
    )
    certificate: Path = field(
        metadata=key(read=_path, required="path to a PEM file", help="the CA certificate (PEM)")
    )
    responder_certificate: Path = field(
        metadata=key(
            read=_path, required="path to a PEM file", help="the delegated OCSP responder (R6)"
        )
    )
    # The two keys are read only by the signing roles (sign, signer, serve with run_signer,
    # crl build): a web node's configuration may leave them out, and its responder never
    # opens them (R25).
    responder_key: KeyLocation | None = field(
        default=None,
        metadata=key(
            read=_key_location,
            help="its key: PEM file (mode 0600) or pkcs11: URI; ECDSA P-256/P-384 or RSA "
            "(signing roles only; R25)",
        ),
    )
    issuer_key: KeyLocation | None = field(
        default=None,
        metadata=key(
            read=_key_location,
            help="the CA key, PEM or pkcs11: URI; signs its CRLs (CRL builder only; R25)",
        ),
    )
    crl_url: str | None = field(
        default=None,
        metadata=key(
            read=_optional(
                _typed(str, 'a URL template like "http://crl.example.com/{issuer}/{partition}.crl"')
            ),
            help="CRL URL template: CDP, publish path, IDP and disclosure (R20)",
        ),
    )
    crl_partitions: int = field(
        default=1,
        metadata=key(read=_typed(int, "a number of CRL partitions"), help="1 = a single full CRL"),
    )

    @cached_property
    def crl(self) -> CrlLayout | None:
        """Where this issuer's CRLs live; None when it publishes none."""
        if not self.crl_url:
            return None
        return CrlLayout(self.name, self.crl_url, self.crl_partitions)

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.crl_url:
            found += [
                ("crl_partitions" if "partitions" in p else "crl_url", p)
                for p in layout_problems(self.crl_url, self.crl_partitions)
            ]
        elif self.crl_partitions != 1:
            found.append(("crl_url", "required with crl_partitions"))
        return found


@dataclass(frozen=True)
class ResponderConfig:
    """[responder]. The default server is certstatus's own (responder/http1.py): it holds
    its connection limits itself, so idle and slowloris floods do not stall it without a
    front, refuses ambiguous framing granian accepts, and costs less CPU per answer
    (docs/benchmarks.md). granian (0.38 of nginx against uvicorn's 0.23 when chosen) stays
    available."""

    listen: str = field(
        default="127.0.0.1:8080",
        metadata=key(read=_listen("127.0.0.1:8080"), help="host:port the responder serves"),
    )
    workers: int = field(
        default=0, metadata=key(read=_PROCESSES, bound=_ONE_PER_CORE, help="0 = one per core")
    )
    server: str = field(
        default="native",
        metadata=key(read=_one_of("native", "granian", "uvicorn"), help="HTTP server"),
    )
    run_signer: bool = field(
        default=True,
        metadata=key(read=_FLAG, help="run the signer and CRL builder inside `certstatus serve`"),
    )
    max_post_body: int = field(
        default=MAX_POST_BODY,
        metadata=key(
            read=_typed(int, "a size in bytes"),
            bound=_between(
                MIN_POST_BODY,
                MAX_POST_BODY,
                f"must be between {MIN_POST_BODY} and {MAX_POST_BODY} bytes: the OCSP request "
                "decoder refuses anything larger",
            ),
            help="bytes; a larger POST gets 413",
        ),
    )
    request_timeout: int = field(
        default=5,
        metadata=key(
            read=_duration,
            bound=_between(1, 60, "must be between 1s and 60s"),
            help="headers and POST body must arrive within this",
        ),
    )
    keepalive_timeout: int = field(
        default=15,
        metadata=key(
            read=_duration,
            bound=_between(1, 3600, "must be between 1s and 1h"),
            help="server native: a connection idle this long between requests is closed",
        ),
    )
    max_connections: int = field(
        default=4096,
        metadata=key(
            read=_typed(int, "a number of connections"),
            bound=_between(16, 1_000_000, "must be between 16 and 1000000"),
            help="server native: per worker; over it the least recently active one goes",
        ),
    )
    site: str | None = field(
        default=None, metadata=key(read=_SITE, help="prefer this site's replicas")
    )
    max_staleness: float = field(
        default=5.0,
        metadata=key(
            read=lambda value: float(_duration(value)),
            bound=_between(1, 3600, "must be between 1s and 1h"),
            help="a replica staler than this is not used",
        ),
    )
    primary_fallback: bool = field(
        default=True,
        metadata=key(read=_FLAG, help="ask the primary on a miss, and when no replica is fresh"),
    )
    fallback_concurrency: int = field(
        default=4,
        metadata=key(
            read=_typed(int, "a number of queries"),
            bound=_between(1, 256, "must be between 1 and 256"),
            help="primary queries at once",
        ),
    )
    drain_file: str | None = field(
        default=None,
        metadata=key(
            read=_optional(_typed(str, "a file path")),
            help="while this file exists /readyz fails (maintenance without a stop)",
        ),
    )
    admin_listen: str | None = field(
        default=None,
        metadata=key(
            read=_optional(_listen("127.0.0.1:9464")),
            help="host:port for /metrics and /sources; the public port then 404s them",
        ),
    )

    def problems(self) -> list[tuple[str, str]]:
        if self.admin_listen is not None and self.admin_address == (
            self.listen_host,
            self.listen_port,
        ):
            return [("admin_listen", "must differ from listen: it is the admin listener")]
        return []

    @property
    def admin_address(self) -> tuple[str, int] | None:
        """(host, port) of the admin listener, None when /metrics and /sources stay public."""
        if self.admin_listen is None:
            return None
        host, _, port = self.admin_listen.rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def process_count(self) -> int:
        return self.workers or (os.cpu_count() or 1)


@dataclass(frozen=True)
class ReplicaConfig:
    """[[replicas]]: a hot standby the responder may read from, in preference order."""

    name: str = field(metadata=key(read=_name, required=_NAME_RULE, help="replica name"))
    url: str = field(
        metadata=key(
            read=_url(_POSTGRES, "postgresql://host:5433/certstatus"),
            required='e.g. "postgresql://host:5433/certstatus"',
            help="the replica's libpq URL",
        )
    )
    site: str | None = field(default=None, metadata=key(read=_SITE, help="the site it serves"))


@dataclass(frozen=True)
class CacheConfig:
    """[[caches]]: a cache in front of the responders that the purger keeps in step with status
    changes."""

    name: str = field(metadata=key(read=_name, required=_NAME_RULE, help="cache name"))
    url: str = field(
        metadata=key(
            read=_url(_HTTP, "http://127.0.0.1:6081/"),
            required='e.g. "http://127.0.0.1:6081/" for a Varnish',
            help="where purges are sent",
        )
    )
    kind: str = field(
        default="varnish",
        metadata=key(
            read=_one_of("varnish", "tag-api"),
            help="varnish: PURGE with xkey-purge; tag-api: POST tags with a bearer token",
        ),
    )
    token_env: str | None = field(
        default=None,
        metadata=key(
            read=_optional(_typed(str, "an environment variable name")),
            help="environment variable holding a tag-api token",
        ),
    )

    def problems(self) -> list[tuple[str, str]]:
        if self.kind == "tag-api" and not self.token_env:
            return [("token_env", "required for a tag-api cache: the variable holding its token")]
        return []


@dataclass(frozen=True)
class MonitorTarget:
    """[[monitor.targets]]: a URL the monitor asks, as relying parties do."""

    name: str = field(metadata=key(read=_name, required=_NAME_RULE, help="target name"))
    url: str = field(
        metadata=key(
            read=_url(_HTTP, "http://127.0.0.1:8080/"),
            required='e.g. "http://127.0.0.1:8080/"',
            help="OCSP URL",
        )
    )
    kind: str = field(
        default="origin",
        metadata=key(read=_one_of("origin", "cdn"), help="origin: also probed on /readyz"),
    )
    site: str | None = field(
        default=None,
        metadata=key(read=_SITE, help="the site of an origin responder (`certstatus site status`)"),
    )


@dataclass(frozen=True)
class MonitorConfig:
    """[monitor]: `certstatus monitor`, the outside view. Defaults follow the Baseline
    Requirements' 15 minutes from issuance to an authoritative answer, with a warning at 10."""

    listen: str = field(
        default="127.0.0.1:9470",
        metadata=key(read=_listen("127.0.0.1:9470"), help="status page, /status.json and /metrics"),
    )
    targets: tuple[MonitorTarget, ...] = field(
        default_factory=tuple,
        metadata=table_of(
            MonitorTarget, many=tuple, unique="target", help="default: this deployment's responder"
        ),
    )
    warn_after: int = field(
        default=600, metadata=key(read=_duration, help="new serial still waiting: warning")
    )
    critical_after: int = field(
        default=900,
        metadata=key(
            read=_duration,
            bound=_between(
                1, 900, "must be more than 0 and at most 15m: the Baseline Requirements' bound"
            ),
            help="new serial still waiting: critical (R2)",
        ),
    )
    checkpoints: tuple[int, ...] = field(
        default=(1, 3, 10, 30, 60, 120, 300, 600, 900),
        metadata=key(read=_durations, help="when a new serial is asked, after ingestion"),
    )
    post_fraction: float = field(
        default=0.1, metadata=key(read=_fraction, help="share of checks sent by POST")
    )
    sample_every: int = field(
        default=10,
        metadata=key(
            read=_duration,
            bound=_at_least(1, "must be at least 1s"),
            help="how often known serials are sampled",
        ),
    )
    sample_size: int = field(
        default=10,
        metadata=key(
            read=_typed(int, "a number of serials"),
            bound=_at_least(0, "must be 0 (no sampling) or more"),
            help="serials per sample",
        ),
    )
    crl_every: int = field(
        default=60,
        metadata=key(
            read=_duration,
            bound=_at_least(1, "must be at least 1s"),
            help="how often every CRL is fetched",
        ),
    )
    startup_grace: int = field(
        default=10,
        metadata=key(
            read=_duration,
            bound=_between(0, 3600, "must be between 0 and 1h"),
            help="what was never seen yet (a heartbeat, a replica, an issuer) alerts only after this",
        ),
    )
    webhook: str | None = field(
        default=None,
        metadata=key(
            read=_optional(_url(_HTTP, "http://127.0.0.1:9093/api/v2/alerts")),
            help="Alertmanager-compatible webhook",
        ),
    )

    def problems(self) -> list[tuple[str, str]]:
        if not 0 < self.warn_after <= self.critical_after:
            return [("warn_after", "must be more than 0 and at most critical_after")]
        return []


@dataclass(frozen=True)
class SigningConfig:
    """[signing]: the response schedule (SchedulePolicy's keys) and the signer."""

    policy: SchedulePolicy = field(
        default_factory=SchedulePolicy, metadata=table_of(SchedulePolicy, embedded=True)
    )
    workers: int = field(
        default=0, metadata=key(read=_PROCESSES, bound=_ONE_PER_CORE, help="0 = one per core")
    )
    batch_size: int = field(
        default=256,
        metadata=key(
            read=_typed(int, "a number of certificates"),
            bound=_between(1, 100_000, "must be between 1 and 100000"),
            help="rows claimed at once",
        ),
    )
    lease: int = field(
        default=300,
        metadata=key(
            read=_duration,
            bound=_at_least(10, "must be at least 10s"),
            help="a claimed row comes back if its signer dies",
        ),
    )
    responder_expiry_margin: int = field(
        default=14 * 86400,
        metadata=key(
            read=_duration, help="refuse to start if the responder certificate expires sooner (R21)"
        ),
    )
    metrics_listen: str | None = field(
        default=None,
        metadata=key(
            read=_optional(_listen("127.0.0.1:9465")), help="/metrics of the signing roles"
        ),
    )

    @property
    def process_count(self) -> int:
        return self.workers or (os.cpu_count() or 1)

    def problems(self) -> list[tuple[str, str]]:
        found = self.policy.problems()
        if self.responder_expiry_margin < self.policy.validity:
            found.append(
                (
                    "responder_expiry_margin",
                    "must be at least the response validity, or responses would be cut "
                    "short by the responder certificate's expiry (R4)",
                )
            )
        return found


@dataclass(frozen=True)
class PurgeConfig:
    """[purge]."""

    recheck_after: int | None = field(
        default=None,
        metadata=key(
            read=_duration,
            bound=_between(0, 3600, "must be between 0 (off) and 1h"),
            help="second purge pass; 0 turns it off",
        ),
    )
    coalesce_threshold: int = field(
        default=100,
        metadata=key(
            read=_typed(int, "a number of purges"),
            bound=_between(2, 100_000, "must be between 2 and 100000"),
            help="purges of one issuer in a batch above which its issuer key is purged instead",
        ),
    )
    coalesce_window: int = field(
        default=5,
        metadata=key(
            read=_duration,
            bound=_between(1, 300, "must be between 1s and 5m"),
            help="at most one issuer-wide purge per issuer and cache in this window",
        ),
    )


@dataclass(frozen=True)
class HousekeepingConfig:
    """[housekeeping]: expired certificates leave the database (housekeeping/service.py)."""

    retention: int = field(
        default=10 * 86400,
        metadata=key(
            read=_duration,
            bound=_at_least(86400, "must be at least 1d"),
            help="rows are kept this long past notAfter (at least [crl] period, R18)",
        ),
    )
    batch_size: int = field(
        default=2000,
        metadata=key(
            read=_typed(int, "a number of certificates"),
            bound=_between(100, 100_000, "must be between 100 and 100000"),
            help="certificates per transaction (on SQLite, each holds the write lock)",
        ),
    )
    every: int = field(
        default=300,
        metadata=key(
            read=_duration,
            bound=_between(10, 86400, "must be between 10s and 1d"),
            help="time between passes",
        ),
    )


API_PERMISSIONS = ("record", "revoke", "read")
_SPKI = re.compile(r"^[0-9a-f]{64}$")


def _permissions(value: Any) -> tuple[str, ...]:
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, str) and v in API_PERMISSIONS for v in value)
    ):
        return tuple(sorted(set(value), key=API_PERMISSIONS.index))
    raise ValueError(f"expected a list of {', '.join(API_PERMISSIONS)}, got {value!r}")


def _spki(value: Any) -> str:
    if isinstance(value, str):
        cleaned = value.lower().replace(":", "")
        if _SPKI.match(cleaned):
            return cleaned
    raise ValueError(
        "expected the client certificate's SubjectPublicKeyInfo SHA-256 as 64 hex digits "
        f"(openssl x509 -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum), got {value!r}"
    )


def _per_second(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"expected requests per second, got {value!r}")


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


@dataclass(frozen=True)
class ApiClient:
    """[[api.clients]]: a system of the CA allowed to use the issuance API, known by its client
    certificate's key (spki_sha256, survives renewal with the same key) or its subject."""

    name: str = field(metadata=key(read=_name, required=_NAME_RULE, help="the audit log's actor"))
    spki_sha256: str | None = field(
        default=None,
        metadata=key(read=_optional(_spki), help="SHA-256 of the certificate's public key (hex)"),
    )
    subject: str | None = field(
        default=None,
        metadata=key(
            read=_optional(_typed(str, 'an RFC 4514 subject such as "CN=issuer-1,O=Example CA"')),
            help="or its subject, RFC 4514 as `openssl x509 -subject -nameopt RFC2253` prints it",
        ),
    )
    permissions: tuple[str, ...] = field(
        default=(),
        metadata=key(read=_permissions, help="record, revoke and/or read"),
    )

    def problems(self) -> list[tuple[str, str]]:
        if (self.spki_sha256 is None) == (self.subject is None):
            return [("spki_sha256", "give exactly one of spki_sha256 or subject")]
        if not self.permissions:
            return [("permissions", "required: a list of record, revoke and/or read")]
        return []


@dataclass(frozen=True)
class ApiConfig:
    """[api]: `certstatus api`, the issuance API (its own listener, never the OCSP port)."""

    listen: str = field(
        default="127.0.0.1:8443",
        metadata=key(read=_listen("127.0.0.1:8443"), help="host:port of the issuance API"),
    )
    certificate: Path | None = field(
        default=None, metadata=key(read=_path, help="the API's TLS certificate chain (PEM)")
    )
    private_key: Path | None = field(
        default=None, metadata=key(read=_path, help="its private key (PEM)")
    )
    client_ca: Path | None = field(
        default=None,
        metadata=key(read=_path, help="CA bundle (PEM) client certificates must chain to"),
    )
    insecure_loopback: bool = field(
        default=False,
        metadata=key(
            read=_FLAG,
            help="plain HTTP, every request all permissions; only on a loopback listen (development)",
        ),
    )
    max_body: int = field(
        default=1_048_576,
        metadata=key(
            read=_typed(int, "a size in bytes"),
            bound=_between(1024, 64 * 1_048_576, "must be between 1024 bytes and 64 MiB"),
            help="bytes; a larger certificate or JSON body gets 413 (NDJSON: per line 4096)",
        ),
    )
    max_batch: int = field(
        default=10_000,
        metadata=key(
            read=_typed(int, "a number of items"),
            bound=_between(1, 100_000, "must be between 1 and 100000"),
            help="certificates or revocations in one body (413 above); NDJSON chunk size",
        ),
    )
    rate: float = field(
        default=50.0,
        metadata=key(
            read=_per_second,
            bound=_between(0.1, 100_000, "must be between 0.1 and 100000"),
            help="requests per second per client (429 with Retry-After above)",
        ),
    )
    burst: int = field(
        default=100,
        metadata=key(
            read=_typed(int, "a number of requests"),
            bound=_between(1, 100_000, "must be between 1 and 100000"),
            help="requests a client may send at once above its rate",
        ),
    )
    max_wait: int = field(
        default=30,
        metadata=key(
            read=_duration,
            bound=_between(1, 300, "must be between 1s and 5m"),
            help="longest ?timeout= a client may ask with ?wait=",
        ),
    )
    clients: tuple[ApiClient, ...] = field(
        default_factory=tuple,
        metadata=table_of(ApiClient, many=tuple, unique="client", help="who may call it"),
    )

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    def problems(self) -> list[tuple[str, str]]:
        if self.insecure_loopback and not is_loopback(self.listen_host):
            return [
                (
                    "insecure_loopback",
                    f"plain HTTP is allowed only on a loopback listen, not {self.listen!r}",
                )
            ]
        return []

    def serving_problems(self) -> list[tuple[str, str]]:
        """What `certstatus api` needs beyond a valid table: TLS material and clients."""
        if self.insecure_loopback:
            return []
        found = [
            (name, f"required for `certstatus api` (or insecure_loopback = true): {what}")
            for name, what in (
                ("certificate", "the server's PEM certificate chain"),
                ("private_key", "its PEM private key"),
                ("client_ca", "the PEM CA bundle client certificates are issued by"),
            )
            if getattr(self, name) is None
        ]
        if not self.clients:
            found.append(("clients", "add at least one [[api.clients]] with its permissions"))
        return found


@dataclass(frozen=True)
class Pkcs11Config:
    """[pkcs11]: the token module for keys named by pkcs11: URIs, and where its user PIN is
    read (an environment variable or a 0600 file). The PIN itself is never in this file."""

    module: Path | None = field(
        default=None,
        metadata=key(read=_path, help="PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so"),
    )
    pin_env: str | None = field(
        default=None,
        metadata=key(
            read=_optional(_typed(str, "an environment variable name")),
            help="environment variable holding the user PIN",
        ),
    )
    pin_file: Path | None = field(
        default=None,
        metadata=key(read=_path, help="file holding the user PIN (mode 0600)"),
    )

    def problems(self) -> list[tuple[str, str]]:
        if self.pin_env and self.pin_file:
            return [("pin_file", "give pin_env or pin_file, not both")]
        return []

    @property
    def access(self) -> TokenAccess | None:
        if self.module is None:
            return None
        return TokenAccess(self.module, self.pin_env, self.pin_file)


@dataclass(frozen=True)
class Config:
    """The whole file; path is where it was read from (relative paths in it are relative to
    its directory)."""

    path: Path
    database: str = field(
        metadata=key(
            read=_database,
            required='e.g. database = "certstatus.db"',
            help='SQLite file ("sqlite:///abs/path.db") or postgresql:// URL of the primary',
        )
    )
    issuers: list[IssuerConfig] = field(
        metadata=table_of(
            IssuerConfig,
            many=list,
            unique="issuer",
            required="add at least one [[issuers]] table with name, certificate, "
            "responder_certificate and responder_key",
        )
    )
    responder: ResponderConfig = field(
        default_factory=ResponderConfig, metadata=table_of(ResponderConfig)
    )
    signing: SigningConfig = field(default_factory=SigningConfig, metadata=table_of(SigningConfig))
    crl: CrlPolicy = field(default_factory=CrlPolicy, metadata=table_of(CrlPolicy))
    replicas: list[ReplicaConfig] = field(
        default_factory=list, metadata=table_of(ReplicaConfig, many=list, unique="replica")
    )
    caches: list[CacheConfig] = field(
        default_factory=list, metadata=table_of(CacheConfig, many=list, unique="cache")
    )
    purge: PurgeConfig = field(default_factory=PurgeConfig, metadata=table_of(PurgeConfig))
    housekeeping: HousekeepingConfig = field(
        default_factory=HousekeepingConfig, metadata=table_of(HousekeepingConfig)
    )
    monitor: MonitorConfig = field(default_factory=MonitorConfig, metadata=table_of(MonitorConfig))
    api: ApiConfig = field(default_factory=ApiConfig, metadata=table_of(ApiConfig))
    pkcs11: Pkcs11Config = field(default_factory=Pkcs11Config, metadata=table_of(Pkcs11Config))

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.replicas and not self.is_postgres:
            found.append(("replicas", "replicas need a PostgreSQL primary in database"))
        if self.housekeeping.retention < self.crl.period:
            found.append(
                (
                    "housekeeping.retention",
                    "must be at least crl.period: a revoked entry stays on the CRL one period "
                    "past notAfter (R18)",
                )
            )
        in_token = [
            f"issuers[{index}].{name}"
            for index, issuer in enumerate(self.issuers)
            for name in ("responder_key", "issuer_key")
            if isinstance(getattr(issuer, name), Pkcs11Uri)
        ]
        if in_token and self.pkcs11.module is None:
            found.append(
                (
                    "pkcs11.module",
                    f"required by {in_token[0]} (a pkcs11: URI): the PKCS#11 module's path, "
                    'e.g. module = "/usr/lib/softhsm/libsofthsm2.so"',
                )
            )
        if in_token and not (self.pkcs11.pin_env or self.pkcs11.pin_file):
            found.append(
                (
                    "pkcs11.pin_env",
                    f"required by {in_token[0]}: name the variable holding the user PIN "
                    "(or set pin_file); the PIN itself never goes in this file",
                )
            )
        return found

    def key_ref(self, location: KeyLocation) -> KeyRef:
        """Where a configured key is and, for a token, how to reach it (no secret)."""
        return KeyRef(location, self.pkcs11.access if isinstance(location, Pkcs11Uri) else None)

    @property
    def monitor_targets(self) -> tuple[MonitorTarget, ...]:
        """The configured targets, or this deployment's own responder."""
        if self.monitor.targets:
            return self.monitor.targets
        r = self.responder
        return (MonitorTarget("origin", f"http://{r.listen_host}:{r.listen_port}/", site=r.site),)

    @property
    def purge_recheck(self) -> int | None:
        """[purge] recheck_after as configured; None when absent."""
        return self.purge.recheck_after

    @property
    def purge_recheck_after(self) -> int:
        """Seconds until the second purge pass (purger/service.py says why): by default the
        staleness bound plus a margin when responders read replicas, none on one database."""
        if self.purge_recheck is not None:
            return self.purge_recheck
        return int(self.responder.max_staleness) + 2 if self.replicas else 0

    @property
    def is_postgres(self) -> bool:
        return bool(self.database) and self.database.startswith(_POSTGRES)

    @property
    def base_dir(self) -> Path:
        return self.path.parent


# --- reading a file -------------------------------------------------------------------------


class _Loader:
    """Reads the declared tables out of parsed TOML, collecting every problem instead of
    stopping at the first. A value that cannot be used is replaced by its default (or None for
    a required key) so the rest can still be checked; the result is then refused anyway."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.problems: list[tuple[str, str]] = []

    def table(self, kind: type, value: Any, where: str, **fixed: Any) -> Any:
        prefix = f"{where}." if where else ""
        if not isinstance(value, dict):
            self.problems.append((where, f"must be a [{where}] table"))
            value = {}
        allowed = known_keys(kind)
        for name in value:
            if name not in allowed:
                self.problems.append(
                    (prefix + name, f"unknown key; known keys here: {', '.join(sorted(allowed))}")
                )
        instance = kind(**self._values(kind, value, prefix), **fixed)
        rules = getattr(instance, "problems", None)
        if rules is not None:
            self.problems.extend((prefix + key, message) for key, message in rules())
        return instance

    def _values(self, kind: type, value: dict[str, Any], prefix: str) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for f, spec in _declared(kind):
            key = prefix + f.name
            if isinstance(spec, Table):
                if spec.embedded:
                    values[f.name] = spec.kind(**self._values(spec.kind, value, prefix))
                elif spec.many is not None:
                    values[f.name] = self.tables(spec, value.get(f.name), key)
                else:
                    values[f.name] = self.table(spec.kind, value.get(f.name, {}), key)
                continue
            if f.name not in value:
                if spec.required is not None:
                    self.problems.append((key, f"required: {spec.required}"))
                    values[f.name] = None
                continue
            try:
                read = spec.read(value[f.name])
            except ValueError as exc:
                self.problems.append((key, str(exc)))
                if spec.required is not None:
                    values[f.name] = None
                continue
            problem = spec.bound(read) if spec.bound and read is not None else None
            if problem:
                self.problems.append((key, problem))
            values[f.name] = self.base / read if isinstance(read, Path) else read
        return values

    def tables(self, spec: Table, items: Any, where: str) -> Any:
        assert spec.many is not None
        if items is None or items == []:
            if spec.required is not None:
                self.problems.append((where, spec.required))
            return spec.many()
        if not isinstance(items, list):
            self.problems.append((where, f"must be a list of [[{where}]] tables"))
            return spec.many()
        found = []
        names: set[str] = set()
        for index, item in enumerate(items):
            at = f"{where}[{index}]"
            if not isinstance(item, dict):
                self.problems.append((at, "must be a table"))
                continue
            instance = self.table(spec.kind, item, at)
            name = getattr(instance, "name", None)
            if spec.unique and isinstance(name, str):
                if name in names:
                    self.problems.append(
                        (at + ".name", f"{name!r} is used by another {spec.unique}")
                    )
                names.add(name)
            found.append(instance)
        return spec.many(found)


def load_config(path: Path) -> Config:
    """Parse and validate a configuration file (but do not open keys; see load_issuer_material)."""
    path = path.resolve()  # every message names the file one way: absolute
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(
            [
                (
                    "config",
                    "file does not exist; create it, or point --config "
                    "(or $CERTSTATUS_CONFIG) at one that does",
                )
            ],
            path,
        ) from None
    except OSError as exc:  # a directory, no permission, an I/O error
        raise ConfigError([("config", f"cannot read: {exc.strerror or exc}")], path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("config", f"not valid TOML: {exc}")], path) from None
    loader = _Loader(path.parent)
    config: Config = loader.table(Config, data, "", path=path)
    if loader.problems:
        raise ConfigError(loader.problems, path)
    return config


@dataclass(frozen=True)
class IssuerCertificates:
    """An issuer's public material, checked: what a responder, ingest and the monitor need.

    Nothing here is secret. A web node builds only these (R25: nodes facing the internet hold
    no key), so a responder starts on a host where no key file exists."""

    config: IssuerConfig
    certificate: x509.Certificate
    responder_certificate: x509.Certificate

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def crl(self) -> CrlLayout | None:
        return self.config.crl


@dataclass(frozen=True)
class IssuerMaterial(IssuerCertificates):
    """An issuer's certificates and its keys, checked and ready to sign: signing roles only
    (the signer, the CRL builder, `sign`, `crl build`)."""

    responder_key: SigningKey
    issuer_key: SigningKey | None = None
    responder_key_ref: KeyRef | None = None

    @property
    def key_ref(self) -> KeyRef:
        """Where the responder key is: signing processes open it for themselves."""
        assert self.responder_key_ref is not None  # load_issuer_material sets it
        return self.responder_key_ref


def _public_key_der(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _read_issuer_certificates(
    config: Config, now: dt.datetime | None, problems: list[tuple[str, str]]
) -> list[tuple[int, IssuerCertificates]]:
    """Each issuer's certificates with its index, refusing a responder certificate that breaks
    R6 or expires within the configured margin (R21); problems are appended, not raised."""
    now = now or dt.datetime.now(dt.UTC)
    margin = dt.timedelta(seconds=config.signing.responder_expiry_margin)
    loaded: list[tuple[int, IssuerCertificates]] = []
    for index, issuer in enumerate(config.issuers):
        prefix = f"issuers[{index}]."
        try:
            ca = load_certificate(issuer.certificate)
        except CertificateError as exc:
            problems.append((prefix + "certificate", str(exc)))
            continue
        try:
            responder = load_certificate(issuer.responder_certificate)
        except CertificateError as exc:
            problems.append((prefix + "responder_certificate", str(exc)))
            continue
        for problem in responder_problems(responder, ca, now, margin):
            problems.append(
                (
                    prefix + "responder_certificate",
                    f"{issuer.responder_certificate} {problem} (R6/R21)",
                )
            )
        loaded.append((index, IssuerCertificates(issuer, ca, responder)))
    return loaded


def load_issuer_certificates(
    config: Config, now: dt.datetime | None = None
) -> list[IssuerCertificates]:
    """Every issuer's public material, checked (R6, R21), opening no key file: what a
    responder (`serve` with run_signer = false) and `check-config --role responder` use."""
    problems: list[tuple[str, str]] = []
    loaded = _read_issuer_certificates(config, now, problems)
    if problems:
        raise ConfigError(problems, config.path)
    return [public for _, public in loaded]


def _open_configured_key(
    config: Config, location: KeyLocation, where: str, problems: list[tuple[str, str]]
) -> tuple[SigningKey | None, KeyRef]:
    """Open one configured key, appending its problem (and logging its warnings loudly)."""
    ref = config.key_ref(location)
    try:
        key = open_key(ref)
    except (KeyFileError, KeyUnavailableError) as exc:
        problems.append((where, str(exc)))
        return None, ref
    for warning in key_warnings(key):
        log.warning("%s: %s: WARNING: %s", config.path, where, warning)
    return key, ref


def load_issuer_material(config: Config, now: dt.datetime | None = None) -> list[IssuerMaterial]:
    """Every issuer's certificates and keys, for a signing role: the public checks of
    load_issuer_certificates, then each key opened (a PEM file or a token) and matched to its
    certificate. A CRL publisher (crl_url) needs issuer_key here; a web node never calls this
    (R25)."""
    problems: list[tuple[str, str]] = []
    loaded: list[IssuerMaterial] = []
    for index, public in _read_issuer_certificates(config, now, problems):
        issuer = public.config
        prefix = f"issuers[{index}]."
        key = ref = None
        if issuer.responder_key is None:
            problems.append(
                (
                    prefix + "responder_key",
                    "required by the signing roles (sign, signer, serve with run_signer = true): "
                    "the responder certificate's private key (PEM file or pkcs11: URI)",
                )
            )
        else:
            key, ref = _open_configured_key(
                config, issuer.responder_key, prefix + "responder_key", problems
            )
        if key is not None and key.public_key_der() != _public_key_der(
            public.responder_certificate
        ):
            problems.append(
                (
                    prefix + "responder_certificate",
                    f"{issuer.responder_certificate} does not match its private key "
                    f"{issuer.responder_key} (R6/R21); install the matching certificate",
                )
            )
        issuer_key = None
        if issuer.issuer_key is not None:
            issuer_key, _ = _open_configured_key(
                config, issuer.issuer_key, prefix + "issuer_key", problems
            )
            if issuer_key is not None and issuer_key.public_key_der() != _public_key_der(
                public.certificate
            ):
                problems.append(
                    (
                        prefix + "issuer_key",
                        f"{issuer.issuer_key} is not the key of {issuer.certificate}",
                    )
                )
        elif issuer.crl_url:
            problems.append(
                (
                    prefix + "issuer_key",
                    "required with crl_url by the CRL builder: the issuer's private key (PEM "
                    "file or pkcs11: URI) signs its CRLs",
                )
            )
        if key is None:
            continue
        loaded.append(
            IssuerMaterial(
                issuer, public.certificate, public.responder_certificate, key, issuer_key, ref
            )
        )
    if problems:
        raise ConfigError(problems, config.path)
    return loaded
