"""One TOML file describes a deployment. Every error names the key and what would fix it."""

from __future__ import annotations

import datetime as dt
import os
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certstatus.crl.layout import CrlLayout, layout_problems
from certstatus.crl.schedule import CrlPolicy
from certstatus.keys.base import KeyFileError, SigningKey
from certstatus.keys.certificates import CertificateError, load_certificate, responder_problems
from certstatus.keys.pem import load_pem_key
from certstatus.ocsp.schedule import SchedulePolicy

DEFAULT_PATH = Path("certstatus.toml")
_DURATION = re.compile(r"(\d+)\s*([dhms])")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


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


@dataclass(frozen=True)
class IssuerConfig:
    name: str
    certificate: Path
    responder_certificate: Path
    responder_key: Path
    issuer_key: Path | None = None
    crl: CrlLayout | None = None


@dataclass(frozen=True)
class ResponderConfig:
    """granian is the default server: it measured 0.38 of nginx's requests/s against uvicorn's
    0.23 on this project's benchmark (benchmarks/serving.py)."""

    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    workers: int = 0
    server: str = "granian"
    run_signer: bool = True
    max_post_body: int = 10_000
    request_timeout: int = 5
    site: str | None = None
    max_staleness: float = 5.0
    primary_fallback: bool = True
    fallback_concurrency: int = 4
    drain_file: str | None = None  # while it exists /readyz fails: maintenance without a stop

    @property
    def process_count(self) -> int:
        return self.workers or (os.cpu_count() or 1)


@dataclass(frozen=True)
class ReplicaConfig:
    """A hot standby the responder may read from, in preference order."""

    name: str
    url: str
    site: str | None = None


@dataclass(frozen=True)
class CacheConfig:
    """A cache in front of the responders that the purger keeps in step with status changes."""

    name: str
    kind: str  # "varnish" or "tag-api"
    url: str
    token_env: str | None = None


@dataclass(frozen=True)
class MonitorTarget:
    name: str
    url: str
    kind: str = "origin"  # "origin" (also probed on /readyz) or "cdn"


@dataclass(frozen=True)
class MonitorConfig:
    """`certstatus monitor`: the outside view. Defaults follow the Baseline Requirements'
    15 minutes from issuance to an authoritative answer, with a warning at 10."""

    listen: str = "127.0.0.1:9470"
    targets: tuple[MonitorTarget, ...] = ()
    warn_after: int = 600
    critical_after: int = 900
    checkpoints: tuple[int, ...] = (1, 3, 10, 30, 60, 120, 300, 600, 900)
    post_fraction: float = 0.1
    sample_every: int = 10
    sample_size: int = 10
    crl_every: int = 60
    webhook: str | None = None
    startup_grace: int = 10  # seconds a part never seen yet may be starting before it pages


@dataclass(frozen=True)
class SigningConfig:
    policy: SchedulePolicy = field(default_factory=SchedulePolicy)
    workers: int = 0
    batch_size: int = 256
    lease: int = 300
    responder_expiry_margin: int = 14 * 86400
    metrics_listen: str | None = None  # the signing roles' /metrics, e.g. "127.0.0.1:9465"

    @property
    def process_count(self) -> int:
        return self.workers or (os.cpu_count() or 1)


@dataclass(frozen=True)
class Config:
    path: Path
    database: str
    issuers: list[IssuerConfig]
    responder: ResponderConfig
    signing: SigningConfig
    crl: CrlPolicy = field(default_factory=CrlPolicy)
    replicas: list[ReplicaConfig] = field(default_factory=list)
    caches: list[CacheConfig] = field(default_factory=list)
    purge_recheck: int | None = None
    monitor: MonitorConfig = field(default_factory=MonitorConfig)

    @property
    def monitor_targets(self) -> tuple[MonitorTarget, ...]:
        """The configured targets, or this deployment's own responder."""
        if self.monitor.targets:
            return self.monitor.targets
        r = self.responder
        return (MonitorTarget("origin", f"http://{r.listen_host}:{r.listen_port}/"),)

    @property
    def purge_recheck_after(self) -> int:
        """Seconds until the second purge pass (purger/service.py says why): by default the
        staleness bound plus a margin when responders read replicas, none on one database."""
        if self.purge_recheck is not None:
            return self.purge_recheck
        return int(self.responder.max_staleness) + 2 if self.replicas else 0

    @property
    def is_postgres(self) -> bool:
        return self.database.startswith(("postgres://", "postgresql://"))

    @property
    def base_dir(self) -> Path:
        return self.path.parent


class _Reader:
    """Reads typed values out of a TOML table, collecting problems instead of stopping at the first."""

    def __init__(self, table: dict[str, Any], prefix: str, problems: list[tuple[str, str]]):
        self.table = table
        self.prefix = prefix
        self.problems = problems

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def get(self, name: str, kind: type, default: Any, hint: str) -> Any:
        if name not in self.table:
            return default
        value = self.table[name]
        if kind is int and isinstance(value, bool):
            value = None
        if not isinstance(value, kind):
            self.problems.append((self.key(name), f"expected {hint}, got {value!r}"))
            return default
        return value

    def duration(self, name: str, default: int) -> int:
        if name not in self.table:
            return default
        try:
            return parse_duration(self.table[name])
        except ValueError:
            self.problems.append(
                (
                    self.key(name),
                    f'expected a duration like "7d", "3h" or seconds, got {self.table[name]!r}',
                )
            )
            return default

    def unknown(self, allowed: set[str]) -> None:
        for name in self.table:
            if name not in allowed:
                self.problems.append(
                    (self.key(name), f"unknown key; known keys here: {', '.join(sorted(allowed))}")
                )


def _responder(table: dict[str, Any], problems: list[tuple[str, str]]) -> ResponderConfig:
    r = _Reader(table, "responder.", problems)
    r.unknown(
        {
            "listen",
            "workers",
            "server",
            "run_signer",
            "max_post_body",
            "request_timeout",
            "site",
            "max_staleness",
            "primary_fallback",
            "fallback_concurrency",
            "drain_file",
        }
    )
    listen = r.get("listen", str, "127.0.0.1:8080", 'a "host:port" string')
    host, _, port_text = listen.rpartition(":")
    port = int(port_text) if port_text.isdigit() else -1
    if not host or not 0 <= port <= 65535:
        problems.append(
            ("responder.listen", f'expected "host:port", e.g. "127.0.0.1:8080", got {listen!r}')
        )
        host, port = "127.0.0.1", 8080
    workers = r.get("workers", int, 0, "a number of processes (0 = one per core)")
    if workers < 0:
        problems.append(("responder.workers", "must be 0 (one per core) or more"))
    server = r.get("server", str, "granian", '"granian" or "uvicorn"')
    if server not in ("uvicorn", "granian"):
        problems.append(("responder.server", f'must be "uvicorn" or "granian", got {server!r}'))
    max_body = r.get("max_post_body", int, 10_000, "a size in bytes")
    if not 512 <= max_body <= 65_536:
        problems.append(("responder.max_post_body", "must be between 512 and 65536 bytes"))
    timeout = r.duration("request_timeout", 5)
    if not 1 <= timeout <= 60:
        problems.append(("responder.request_timeout", "must be between 1s and 60s"))
    staleness = r.duration("max_staleness", 5)
    if not 1 <= staleness <= 3600:
        problems.append(("responder.max_staleness", "must be between 1s and 1h"))
    fallback_concurrency = r.get("fallback_concurrency", int, 4, "a number of queries")
    if not 1 <= fallback_concurrency <= 256:
        problems.append(("responder.fallback_concurrency", "must be between 1 and 256"))
    return ResponderConfig(
        listen_host=host.strip("[]"),
        listen_port=port,
        workers=workers,
        server=server,
        run_signer=r.get("run_signer", bool, True, "true or false"),
        max_post_body=max_body,
        request_timeout=timeout,
        site=r.get("site", str, None, "a site name") or None,
        max_staleness=float(staleness),
        primary_fallback=r.get("primary_fallback", bool, True, "true or false"),
        fallback_concurrency=fallback_concurrency,
        drain_file=r.get("drain_file", str, "", "a file path") or None,
    )


def _signing(table: dict[str, Any], problems: list[tuple[str, str]]) -> SigningConfig:
    r = _Reader(table, "signing.", problems)
    r.unknown(
        {
            "validity",
            "refresh_after",
            "backdate",
            "jitter",
            "workers",
            "batch_size",
            "lease",
            "responder_expiry_margin",
            "metrics_listen",
        }
    )
    defaults = SchedulePolicy()
    policy = SchedulePolicy(
        validity=r.duration("validity", defaults.validity),
        refresh_after=r.duration("refresh_after", defaults.refresh_after),
        backdate=r.duration("backdate", defaults.backdate),
        jitter=r.duration("jitter", defaults.jitter),
    )
    problems.extend((f"signing.{key}", message) for key, message in policy.problems())
    workers = r.get("workers", int, 0, "a number of processes (0 = one per core)")
    batch = r.get("batch_size", int, 256, "a number of certificates")
    if workers < 0:
        problems.append(("signing.workers", "must be 0 (one per core) or more"))
    if not 1 <= batch <= 100_000:
        problems.append(("signing.batch_size", "must be between 1 and 100000"))
    lease = r.duration("lease", 300)
    if lease < 10:
        problems.append(("signing.lease", "must be at least 10s"))
    margin = r.duration("responder_expiry_margin", 14 * 86400)
    if margin < policy.validity:
        problems.append(
            (
                "signing.responder_expiry_margin",
                "must be at least the response validity, or responses would be cut "
                "short by the responder certificate's expiry (R4)",
            )
        )
    metrics_listen = r.get("metrics_listen", str, "", 'a "host:port" string') or None
    if metrics_listen is not None and not _is_listen(metrics_listen):
        problems.append(
            (
                "signing.metrics_listen",
                f'expected "host:port", e.g. "127.0.0.1:9465", got {metrics_listen!r}',
            )
        )
    return SigningConfig(policy, workers, batch, lease, margin, metrics_listen)


def _is_listen(value: str) -> bool:
    host, _, port = value.rpartition(":")
    return bool(host) and port.isdigit() and 0 <= int(port) <= 65535


def _crl(table: dict[str, Any], problems: list[tuple[str, str]]) -> CrlPolicy:
    r = _Reader(table, "crl.", problems)
    r.unknown({"period", "validity", "debounce", "jitter"})
    defaults = CrlPolicy()
    policy = CrlPolicy(
        period=r.duration("period", defaults.period),
        validity=r.duration("validity", defaults.validity),
        debounce=r.duration("debounce", defaults.debounce),
        jitter=r.duration("jitter", defaults.jitter),
    )
    problems.extend((f"crl.{key}", message) for key, message in policy.problems())
    return policy


def _tables(items: Any, key: str, problems: list[tuple[str, str]]) -> Iterator[_Reader]:
    """A reader for each table of an array of tables ([[key]]); a value that is no such array,
    or an item that is no table, is a problem named by its key. Absent: no tables."""
    if items is None:
        return
    if not isinstance(items, list):
        problems.append((key, f"must be a list of [[{key}]] tables"))
        return
    for index, item in enumerate(items):
        if isinstance(item, dict):
            yield _Reader(item, f"{key}[{index}].", problems)
        else:
            problems.append((f"{key}[{index}]", "must be a table"))


def _replicas(items: Any, problems: list[tuple[str, str]]) -> list[ReplicaConfig]:
    found = []
    for r in _tables(items, "replicas", problems):
        prefix = r.prefix
        r.unknown({"name", "url", "site"})
        name = r.get("name", str, "", "a node name")
        url = r.get("url", str, "", "a postgresql:// URL")
        if not name:
            problems.append((prefix + "name", "required"))
        if not url.startswith(("postgres://", "postgresql://")):
            problems.append((prefix + "url", 'required: e.g. "postgresql://host:5433/certstatus"'))
        found.append(ReplicaConfig(name, url, r.get("site", str, None, "a site name") or None))
    return found


def _caches(items: Any, problems: list[tuple[str, str]]) -> list[CacheConfig]:
    found: list[CacheConfig] = []
    for r in _tables(items, "caches", problems):
        prefix = r.prefix
        r.unknown({"name", "kind", "url", "token_env"})
        name = r.get("name", str, "", "a cache name")
        if not _NAME.match(name):
            problems.append((prefix + "name", "required: letters, digits, '.', '_' or '-'"))
        elif name in {c.name for c in found}:
            problems.append((prefix + "name", f"{name!r} is used by another cache"))
        kind = r.get("kind", str, "varnish", '"varnish" or "tag-api"')
        if kind not in ("varnish", "tag-api"):
            problems.append((prefix + "kind", f'must be "varnish" or "tag-api", got {kind!r}'))
        url = r.get("url", str, "", "an http(s) URL")
        if not url.startswith(("http://", "https://")):
            problems.append(
                (prefix + "url", 'required: e.g. "http://127.0.0.1:6081/" for a Varnish')
            )
        token_env = r.get("token_env", str, "", "an environment variable name") or None
        if kind == "tag-api" and not token_env:
            problems.append(
                (
                    prefix + "token_env",
                    "required for a tag-api cache: the variable holding its token",
                )
            )
        found.append(CacheConfig(name, kind, url, token_env))
    return found


def _monitor(table: Any, problems: list[tuple[str, str]]) -> MonitorConfig:
    if not isinstance(table, dict):
        problems.append(("monitor", "must be a [monitor] table"))
        return MonitorConfig()
    r = _Reader(table, "monitor.", problems)
    r.unknown(
        {
            "listen",
            "targets",
            "warn_after",
            "critical_after",
            "checkpoints",
            "post_fraction",
            "sample_every",
            "sample_size",
            "crl_every",
            "webhook",
            "startup_grace",
        }
    )
    defaults = MonitorConfig()
    listen = r.get("listen", str, defaults.listen, 'a "host:port" string')
    if not _is_listen(listen):
        problems.append(("monitor.listen", f'expected "host:port", got {listen!r}'))
    warn = r.duration("warn_after", defaults.warn_after)
    critical = r.duration("critical_after", defaults.critical_after)
    if not 0 < warn <= critical:
        problems.append(("monitor.warn_after", "must be more than 0 and at most critical_after"))
    if critical > 900:
        problems.append(
            ("monitor.critical_after", "must be at most 15m: the Baseline Requirements' bound")
        )
    checkpoints = defaults.checkpoints
    if "checkpoints" in table:
        try:
            checkpoints = tuple(sorted(parse_duration(v) for v in table["checkpoints"]))
            if not checkpoints or checkpoints[0] <= 0:
                raise ValueError("empty")
        except (ValueError, TypeError):
            problems.append(
                ("monitor.checkpoints", 'expected a list of durations like ["1s", "10s", "1m"]')
            )
            checkpoints = defaults.checkpoints
    fraction = table.get("post_fraction", defaults.post_fraction)
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, int | float)
        or not 0 <= fraction <= 1
    ):
        problems.append(("monitor.post_fraction", f"expected a fraction 0..1, got {fraction!r}"))
        fraction = defaults.post_fraction
    webhook = r.get("webhook", str, "", "an Alertmanager URL") or None
    if webhook is not None and not webhook.startswith(("http://", "https://")):
        problems.append(("monitor.webhook", 'expected e.g. "http://127.0.0.1:9093/api/v2/alerts"'))
    return MonitorConfig(
        listen=listen,
        targets=_monitor_targets(table.get("targets", []), problems),
        warn_after=warn,
        critical_after=critical,
        checkpoints=checkpoints,
        post_fraction=float(fraction),
        sample_every=r.duration("sample_every", defaults.sample_every),
        sample_size=r.get("sample_size", int, defaults.sample_size, "a number of serials"),
        crl_every=r.duration("crl_every", defaults.crl_every),
        webhook=webhook,
        startup_grace=r.duration("startup_grace", defaults.startup_grace),
    )


def _monitor_targets(items: Any, problems: list[tuple[str, str]]) -> tuple[MonitorTarget, ...]:
    targets = []
    for t in _tables(items, "monitor.targets", problems):
        prefix = t.prefix
        t.unknown({"name", "url", "kind"})
        name = t.get("name", str, "", "a target name")
        url = t.get("url", str, "", "an http(s) URL")
        kind = t.get("kind", str, "origin", '"origin" or "cdn"')
        if not _NAME.match(name):
            problems.append((prefix + "name", "required: letters, digits, '.', '_' or '-'"))
        if not url.startswith(("http://", "https://")):
            problems.append((prefix + "url", 'required: e.g. "http://127.0.0.1:8080/"'))
        if kind not in ("origin", "cdn"):
            problems.append((prefix + "kind", f'must be "origin" or "cdn", got {kind!r}'))
        targets.append(MonitorTarget(name, url, kind))
    return tuple(targets)


def _purge_recheck(table: Any, problems: list[tuple[str, str]]) -> int | None:
    if not isinstance(table, dict):
        problems.append(("purge", "must be a [purge] table"))
        return None
    r = _Reader(table, "purge.", problems)
    r.unknown({"recheck_after"})
    if "recheck_after" not in table:
        return None
    value = r.duration("recheck_after", 0)
    if not 0 <= value <= 3600:
        problems.append(("purge.recheck_after", "must be between 0 (off) and 1h"))
    return value


def _issuers(items: Any, base: Path, problems: list[tuple[str, str]]) -> list[IssuerConfig]:
    if not isinstance(items, list) or not items:
        problems.append(
            (
                "issuers",
                "add at least one [[issuers]] table with name, certificate, "
                "responder_certificate and responder_key",
            )
        )
        return []
    issuers: list[IssuerConfig] = []
    seen: set[str] = set()
    for r in _tables(items, "issuers", problems):
        prefix = r.prefix
        r.unknown(
            {
                "name",
                "certificate",
                "responder_certificate",
                "responder_key",
                "issuer_key",
                "crl_url",
                "crl_partitions",
            }
        )
        name = r.get("name", str, "", "a short name")
        if not _NAME.match(name):
            problems.append((prefix + "name", "required: letters, digits, '.', '_' or '-'"))
        elif name in seen:
            problems.append((prefix + "name", f"{name!r} is used by another issuer"))
        seen.add(name)
        paths = []
        for key in ("certificate", "responder_certificate", "responder_key"):
            value = r.get(key, str, "", "a file path")
            if not value:
                problems.append((prefix + key, "required: path to a PEM file"))
            paths.append(base / value)
        crl_url = r.get(
            "crl_url",
            str,
            "",
            'a URL template like "http://crl.example.com/{issuer}/{partition}.crl"',
        )
        partitions = r.get("crl_partitions", int, 1, "a number of CRL partitions")
        issuer_key = r.get("issuer_key", str, "", "a file path")
        layout = None
        if crl_url:
            found = layout_problems(crl_url, partitions)
            problems.extend(
                (prefix + ("crl_partitions" if "partitions" in p else "crl_url"), p) for p in found
            )
            if not found and _NAME.match(name):
                layout = CrlLayout(name, crl_url, partitions)
            if not issuer_key:
                problems.append(
                    (
                        prefix + "issuer_key",
                        "required with crl_url: the issuer's PEM private key signs its CRLs",
                    )
                )
        elif "crl_partitions" in r.table:
            problems.append((prefix + "crl_url", "required with crl_partitions"))
        issuers.append(
            IssuerConfig(
                name,
                certificate=paths[0],
                responder_certificate=paths[1],
                responder_key=paths[2],
                issuer_key=base / issuer_key if issuer_key else None,
                crl=layout,
            )
        )
    return issuers


def load_config(path: Path) -> Config:
    """Parse and validate a configuration file (but do not open keys; see load_issuer_material)."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(
            [("config", "file does not exist; create one or pass --config")], path
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("config", f"not valid TOML: {exc}")], path) from None
    problems: list[tuple[str, str]] = []
    top = _Reader(data, "", problems)
    top.unknown(
        {
            "database",
            "responder",
            "signing",
            "issuers",
            "crl",
            "replicas",
            "caches",
            "purge",
            "monitor",
        }
    )
    database = top.get("database", str, "", 'a SQLite path or "sqlite:///abs/path.db"')
    if not database:
        problems.append(("database", 'required: e.g. database = "certstatus.db"'))
    sections = {}
    for section in ("responder", "signing", "crl"):
        value = data.get(section, {})
        if not isinstance(value, dict):
            problems.append((section, f"must be a [{section}] table"))
            value = {}
        sections[section] = value
    config = Config(
        path=path.resolve(),
        database=database,
        issuers=_issuers(data.get("issuers"), path.resolve().parent, problems),
        responder=_responder(sections["responder"], problems),
        signing=_signing(sections["signing"], problems),
        crl=_crl(sections["crl"], problems),
        replicas=_replicas(data.get("replicas"), problems),
        caches=_caches(data.get("caches"), problems),
        purge_recheck=_purge_recheck(data.get("purge", {}), problems),
        monitor=_monitor(data.get("monitor", {}), problems),
    )
    if config.replicas and not config.is_postgres:
        problems.append(("replicas", "replicas need a PostgreSQL primary in database"))
    if problems:
        raise ConfigError(problems, path)
    return config


@dataclass(frozen=True)
class IssuerMaterial:
    """An issuer's certificates and responder key, checked and ready to sign."""

    config: IssuerConfig
    certificate: x509.Certificate
    responder_certificate: x509.Certificate
    responder_key: SigningKey
    issuer_key: SigningKey | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def crl(self) -> CrlLayout | None:
        return self.config.crl


def _public_key_der(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_issuer_material(config: Config, now: dt.datetime | None = None) -> list[IssuerMaterial]:
    """Open every issuer's certificates and key, refusing a responder certificate that breaks R6
    or expires within the configured margin (R21)."""
    now = now or dt.datetime.now(dt.UTC)
    margin = dt.timedelta(seconds=config.signing.responder_expiry_margin)
    problems: list[tuple[str, str]] = []
    loaded: list[IssuerMaterial] = []
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
        try:
            key = load_pem_key(issuer.responder_key)
        except KeyFileError as exc:
            problems.append((prefix + "responder_key", str(exc)))
            continue
        issuer_key = None
        if issuer.issuer_key is not None:
            try:
                issuer_key = load_pem_key(issuer.issuer_key)
            except KeyFileError as exc:
                problems.append((prefix + "issuer_key", str(exc)))
            else:
                if issuer_key.public_key_der() != _public_key_der(ca):
                    problems.append(
                        (
                            prefix + "issuer_key",
                            f"{issuer.issuer_key} is not the key of {issuer.certificate}",
                        )
                    )
        for problem in responder_problems(responder, ca, now, margin, key.public_key_der()):
            problems.append(
                (
                    prefix + "responder_certificate",
                    f"{issuer.responder_certificate} {problem} (R6/R21)",
                )
            )
        loaded.append(IssuerMaterial(issuer, ca, responder, key, issuer_key))
    if problems:
        raise ConfigError(problems, config.path)
    return loaded
