"""`certstatus cluster`: a primary and hot-standby replicas on loopback, in one directory.

Each replica streams from the primary through its own replication slot (WAL kept for it up to
max_slot_wal_keep_size) and through a TCP proxy, so a drill can stall or slow its link. Run as
root, every PostgreSQL process runs as the `postgres` user in postgres-owned directories.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from certstatus.ports import free_port

DATABASE = "certstatus"
STATE_FILE = "cluster.json"


class ClusterError(RuntimeError):
    pass


def postgres_bin() -> Path:
    """Where initdb and friends live: PATH first, then Debian's versioned directory."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    raise ClusterError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found; install "
        "postgresql (Debian: apt-get install -y postgresql)"
    )


def parse_sites(spec: str | None, replicas: int) -> list[str]:
    """'a:2,b:2' -> ['a', 'a', 'b', 'b']; without a spec every replica is on site 'a'."""
    if not spec:
        return ["a"] * replicas
    sites: list[str] = []
    for part in spec.split(","):
        name, _, count = part.partition(":")
        if not name or not count.isdigit():
            raise ClusterError(f"--sites: expected name:count[,name:count], got {spec!r}")
        sites += [name] * int(count)
    return sites


@dataclass
class Node:
    name: str
    role: str  # "primary" or "replica"
    port: int
    site: str | None = None
    proxy_port: int | None = None
    proxy_pid: int | None = None
    # under Patroni (cluster/ha.py): its REST API, its link to etcd, its Patroni process
    api_port: int | None = None
    dcs_port: int | None = None
    dcs_proxy_pid: int | None = None
    patroni_pid: int | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"


@dataclass
class Cluster:
    dir: Path
    bin: Path
    nodes: list[Node] = field(default_factory=list)
    keep_wal_mb: int = 32
    shared_buffers_mb: int = 32  # light for drills; a serving benchmark sizes it to the table
    # WAL between checkpoints. 64 MB keeps a rehearsal cluster small and its checkpoints
    # frequent; a write benchmark sizes it as production would (a checkpoint every 64 MB
    # makes nearly every page's next change write a full page image into the WAL).
    max_wal_mb: int = 64

    # layout -----------------------------------------------------------------------------

    @property
    def pg_dir(self) -> Path:
        return self.dir / "pg"

    @property
    def run_dir(self) -> Path:
        return self.pg_dir / "run"

    def data(self, node: Node) -> Path:
        return self.pg_dir / node.name

    def log(self, node: Node) -> Path:
        return self.pg_dir / f"{node.name}.log"

    def control(self, node: Node) -> Path:
        return self.dir / f"link-{node.name}.json"

    @property
    def primary(self) -> Node:
        return next(n for n in self.nodes if n.role == "primary")

    @property
    def replicas(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "replica"]

    @property
    def writer_url(self) -> str:
        """Where writers connect: the primary (under Patroni, whichever node leads)."""
        return self.primary.url

    @property
    def read_nodes(self) -> list[Node]:
        """The nodes responders read as replicas (under Patroni, every node: roles move)."""
        return self.replicas

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.nodes)
        raise ClusterError(f"no node {name!r} in {self.dir}; nodes: {known}")

    def save(self) -> None:
        state = {
            "bin": str(self.bin),
            "keep_wal_mb": self.keep_wal_mb,
            "shared_buffers_mb": self.shared_buffers_mb,
            "max_wal_mb": self.max_wal_mb,
            "nodes": [asdict(n) for n in self.nodes],
        }
        (self.dir / STATE_FILE).write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, directory: Path) -> Cluster:
        """The cluster in `directory`: a plain one, or one under Patroni (cluster/ha.py)."""
        try:
            state = json.loads((directory / STATE_FILE).read_text())
        except FileNotFoundError:
            raise ClusterError(
                f"no cluster in {directory} (run `certstatus cluster up --dir {directory}` first)"
            ) from None
        if "ha" in state:
            from certstatus.cluster.ha import HaCluster

            return HaCluster.from_state(directory, state)
        return cls(
            directory.resolve(),
            Path(state["bin"]),
            [Node(**n) for n in state["nodes"]],
            state["keep_wal_mb"],
            state.get("shared_buffers_mb", 32),
            state.get("max_wal_mb", 64),
        )

    # running commands -------------------------------------------------------------------

    def _as_postgres(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        command = args if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *args]
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
        if check and result.returncode != 0:
            raise ClusterError(f"{' '.join(args[:2])} failed: {result.stderr.strip()[-600:]}")
        return result

    def _own(self, path: Path) -> None:
        if os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")

    def query(
        self, node: Node, sql: str, params: tuple[Any, ...] = (), timeout: int = 3
    ) -> list[tuple[Any, ...]]:
        with psycopg.connect(node.url, connect_timeout=timeout, autocommit=True) as conn:
            cursor = conn.execute(sql.encode(), params)
            return cursor.fetchall() if cursor.description else []

    # lifecycle --------------------------------------------------------------------------

    @classmethod
    def up(
        cls,
        directory: Path,
        replicas: int = 2,
        sites: str | None = None,
        keep_wal_mb: int = 32,
        shared_buffers_mb: int = 32,
        max_wal_mb: int = 64,
    ) -> Cluster:
        directory = directory.resolve()
        if (directory / STATE_FILE).exists():
            raise ClusterError(
                f"{directory} already holds a cluster; `certstatus cluster down "
                f"{directory}` first, or use another directory"
            )
        site_names = parse_sites(sites, replicas)
        directory.mkdir(parents=True, exist_ok=True)
        cluster = cls(
            directory,
            postgres_bin(),
            keep_wal_mb=keep_wal_mb,
            shared_buffers_mb=shared_buffers_mb,
            max_wal_mb=max_wal_mb,
        )
        if os.geteuid() == 0:
            directory.chmod(0o755)
            probe = subprocess.run(
                ["runuser", "-u", "postgres", "--", "test", "-x", str(directory)], check=False
            )
            if probe.returncode != 0:
                raise ClusterError(
                    f"{directory} is not reachable by the postgres user; use a "
                    "directory whose parents it can traverse (e.g. under /tmp)"
                )
        cluster.pg_dir.mkdir(exist_ok=True)
        cluster.run_dir.mkdir(exist_ok=True)
        cluster._own(cluster.pg_dir)
        cluster._own(cluster.run_dir)
        cluster.nodes.append(Node("primary", "primary", free_port()))
        counters: dict[str, int] = {}
        for site in site_names:
            counters[site] = counters.get(site, 0) + 1
            cluster.nodes.append(
                Node(f"{site}{counters[site]}", "replica", free_port(), site, free_port())
            )
        cluster.save()
        try:
            cluster._init_primary()
            for node in cluster.replicas:
                cluster._create_replica(node)
        except BaseException:
            cluster.down()
            raise
        return cluster

    def _settings(self, node: Node) -> str:
        return "\n".join(
            [
                "listen_addresses = '127.0.0.1'",
                f"port = {node.port}",
                f"unix_socket_directories = '{self.run_dir}'",
                "wal_level = replica",
                "max_wal_senders = 20",
                "max_replication_slots = 20",
                f"max_slot_wal_keep_size = {self.keep_wal_mb}MB",
                "wal_keep_size = 0",
                f"max_wal_size = {self.max_wal_mb}MB",
                # a rehearsal cluster checkpoints at once; a production-sized WAL spreads them
                f"checkpoint_completion_target = {0 if self.max_wal_mb <= 64 else 0.9}",
                "min_wal_size = 32MB",
                "hot_standby = on",
                "hot_standby_feedback = on",
                "synchronous_commit = on",
                "wal_receiver_timeout = 10s",
                "wal_sender_timeout = 10s",
                f"shared_buffers = {self.shared_buffers_mb}MB",
                "max_connections = 100",
                "",
            ]
        )

    def _init_primary(self) -> None:
        primary = self.primary
        data = self.data(primary)
        self._as_postgres(
            [
                str(self.bin / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
            ]
        )
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(self._settings(primary))
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\n")
        self.start(primary)
        self.query(_admin(primary), f"CREATE DATABASE {DATABASE}")

    def _create_replica(self, node: Node) -> None:
        self.control(node).write_text(json.dumps({"mode": "ok"}))
        self._start_proxy(node)
        self._create_replica_data(node)

    def _start_proxy(self, node: Node) -> None:
        assert node.proxy_port is not None
        node.proxy_pid = self._spawn_proxy(
            node.proxy_port, self.primary.port, self.control(node), f"link-{node.name}.log"
        )
        self.save()

    def _spawn_proxy(self, listen: int, target: int, control: Path, log_name: str) -> int:
        """A link proxy (cluster/proxy.py) from `listen` to `target`, once it accepts."""
        log = (self.dir / log_name).open("ab")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "certstatus.cluster.proxy",
                str(listen),
                str(target),
                str(control),
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", listen), timeout=0.2).close()
                return process.pid
            except OSError:
                time.sleep(0.05)
        _terminate(process.pid)
        raise ClusterError(f"link proxy {log_name} did not start")

    def start(self, node: Node) -> None:
        self._as_postgres(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data(node)),
                "-l",
                str(self.log(node)),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )

    def stop(self, node: Node, mode: str = "fast") -> None:
        self._as_postgres(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data(node)),
                "-w",
                "-t",
                "30",
                "-m",
                mode,
                "stop",
            ],
            check=False,
        )

    def down(self) -> None:
        """Stop every node and proxy; no process is left behind."""
        for node in reversed(self.nodes):
            if self.data(node).exists():
                self.stop(node, "fast")
                if self._running(node):
                    self.stop(node, "immediate")
            if node.proxy_pid:
                _terminate(node.proxy_pid)
                node.proxy_pid = None
        (self.dir / STATE_FILE).unlink(missing_ok=True)

    def _running(self, node: Node) -> bool:
        status = self._as_postgres(
            [str(self.bin / "pg_ctl"), "-D", str(self.data(node)), "status"], check=False
        )
        return status.returncode == 0

    # faults -----------------------------------------------------------------------------

    def set_link(self, node: Node, mode: str, delay_ms: int = 0) -> None:
        if node.role != "replica":
            raise ClusterError("link faults apply to replicas (the link is replica -> primary)")
        self.control(node).write_text(json.dumps({"mode": mode, "delay_ms": delay_ms}))

    def pause_replay(self, node: Node, paused: bool = True) -> None:
        self.query(
            node, "SELECT pg_wal_replay_pause()" if paused else "SELECT pg_wal_replay_resume()"
        )

    def lose_wal(self, node: Node, timeout: float = 120) -> None:
        """The founding incident: the replica's link fails, the primary writes more WAL than it
        keeps for the slot, drops it, and the replica can never catch up by itself.

        The link is cut rather than stalled: a walsender terminated to release its slot would
        otherwise hang sending its goodbye into the stalled socket, keeping the slot alive."""
        self.set_link(node, "cut")
        primary = self.primary
        self.query(primary, "CREATE TABLE IF NOT EXISTS drill_wal_filler (b bytea)")
        deadline = time.monotonic() + timeout
        while self._slot(node).get("wal_status") != "lost":
            if time.monotonic() > deadline:
                raise ClusterError(f"slot {node.name} still not lost after {timeout}s")
            self.query(
                primary,
                "INSERT INTO drill_wal_filler SELECT decode(repeat(md5(g::text),"
                " 64), 'hex') FROM generate_series(1, 40000) g",
                timeout=30,
            )
            self.query(primary, "SELECT pg_switch_wal()")
            self.query(primary, "CHECKPOINT", timeout=60)
        self.query(primary, "TRUNCATE drill_wal_filler")
        self.set_link(node, "ok")

    def rebuild(self, node: Node) -> None:
        """Re-seed a replica from a fresh base backup, with a new slot."""
        if node.role != "replica":
            raise ClusterError("only a replica can be rebuilt")
        self.stop(node, "immediate")
        self._wait_stopped(node)
        if self._slot(node):
            self.query(self.primary, "SELECT pg_drop_replication_slot(%s)", (node.name,))
        self.set_link(node, "ok")
        for attempt in (1, 2):
            self._remove_data(node)
            try:
                self._create_replica_data(node)
                return
            except ClusterError:
                # seen once in CI: the base backup could not chmod a file it had just
                # copied; a second attempt into a clean directory is cheap
                if attempt == 2:
                    raise
                if self._slot(node):
                    self.query(self.primary, "SELECT pg_drop_replication_slot(%s)", (node.name,))

    def _remove_data(self, node: Node) -> None:
        data = self.data(node)
        self._as_postgres(["rm", "-rf", str(data)], check=False)
        if data.exists():
            shutil.rmtree(data, ignore_errors=True)

    def _wait_stopped(self, node: Node, timeout: float = 15) -> None:
        """Until the node's postmaster is gone: its data directory is about to be replaced."""
        pidfile = self.data(node) / "postmaster.pid"
        deadline = time.monotonic() + timeout
        while pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if pidfile.exists():
            with contextlib.suppress(ValueError, IndexError, ProcessLookupError, PermissionError):
                os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
            time.sleep(0.5)

    def _create_replica_data(self, node: Node) -> None:
        data = self.data(node)
        self._as_postgres(
            [
                str(self.bin / "pg_basebackup"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.primary.port),
                "-U",
                "postgres",
                "-D",
                str(data),
                "-C",
                "-S",
                node.name,
                "-X",
                "stream",
                "-R",
                "-c",
                "fast",
            ]
        )
        with (data / "postgresql.auto.conf").open("a") as conf:
            conf.write(
                f"port = {node.port}\n"
                f"primary_conninfo = 'host=127.0.0.1 port={node.proxy_port} "
                f"user=postgres application_name={node.name}'\n"
                f"primary_slot_name = '{node.name}'\n"
            )
        self.start(node)

    # status -----------------------------------------------------------------------------

    def _slot(self, node: Node) -> dict[str, Any]:
        rows = self.query(
            self.primary,
            "SELECT active, wal_status, safe_wal_size FROM "
            "pg_replication_slots WHERE slot_name = %s",
            (node.name,),
        )
        if not rows:
            return {}
        active, wal_status, safe = rows[0]
        return {"active": active, "wal_status": wal_status, "safe_wal_size": safe}

    def heartbeat_fields(self, node: Node) -> dict[str, Any]:
        """up, heartbeat ("ok", "none", "no schema", "unreachable") and staleness_s of a node,
        from the heartbeat it holds (its replayed copy on a standby)."""
        try:
            age = self.query(
                node,
                "SELECT floor(extract(epoch FROM clock_timestamp()) * "
                "1000)::bigint - at_ms, at_ms FROM heartbeat WHERE id = 1",
                timeout=2,
            )
        except psycopg.Error as exc:
            up = "heartbeat" in str(exc)  # up, but no schema yet
            return {
                "up": up,
                "heartbeat": "no schema" if up else "unreachable",
                "staleness_s": None,
            }
        state, staleness = _heartbeat_state(age)
        return {"up": True, "heartbeat": state, "staleness_s": staleness}

    def status(self) -> list[dict[str, Any]]:
        """Every node: role, site, address, staleness (from the replayed heartbeat), and for
        replicas the slot's wal_status and safe_wal_size as the primary sees them."""
        rows = []
        for node in self.nodes:
            row: dict[str, Any] = {
                "name": node.name,
                "role": node.role,
                "site": node.site,
                "host": "127.0.0.1",
                "port": node.port,
            }
            row.update(self.heartbeat_fields(node))
            if node.role == "replica":
                try:
                    row.update({f"slot_{k}": v for k, v in self._slot(node).items()})
                except psycopg.Error:
                    row["slot_wal_status"] = "unknown (primary down)"
                try:
                    row["link"] = json.loads(self.control(node).read_text())["mode"]
                except (OSError, ValueError, KeyError):
                    row["link"] = "unknown"
            rows.append(row)
        return rows


def _heartbeat_state(rows: list[tuple[Any, ...]]) -> tuple[str, float | None]:
    """("ok", age) once a heartbeat was written; ("none", None) before the first one: the
    table starts at 0, and an age counted from 1970 is a number no one should read."""
    if not rows or rows[0][1] == 0:
        return "none", None
    return "ok", round(max(0, rows[0][0]) / 1000, 3)


def _terminate(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM a proxy's process group and wait for it to go, so `down` leaves nothing behind."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _admin(node: Node) -> Node:
    """The same server, through the maintenance database (before ours exists)."""

    class Admin(Node):
        @property
        def url(self) -> str:
            return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    return Admin(**asdict(node))
