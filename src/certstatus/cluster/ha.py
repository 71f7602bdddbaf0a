"""`certstatus cluster up --ha`: PostgreSQL nodes run by Patroni, with one etcd member as the
place where the leader is elected, on loopback, in one directory.

Why Patroni and etcd rather than a home-made election: leader leases, fencing of a leader that
lost the DCS (it demotes itself), synchronous-standby bookkeeping (only a synchronous standby
may be promoted, so no acknowledged write is lost) and pg_rewind of a returning old leader are
exactly the parts that are easy to get subtly wrong.

Every node has two link proxies (cluster/proxy.py), so faults are real network faults:
- `repl`: in front of its PostgreSQL, advertised as its connect_address, so every standby
  streaming from it, and pg_rewind against it, goes through the proxy;
- `dcs`: between its Patroni and etcd.
`isolate-leader` cuts both links of the leader: its Patroni cannot renew the leader lease (it
demotes itself after retry_timeout) and no standby receives its WAL (in synchronous mode, no
write on it can be acknowledged any more). Clients still reach its port directly, as they
would in a real partition that leaves the clients' side connected: that is the case the
synchronous mode must make safe.

Timings (ttl, loop_wait, retry_timeout) are short so that a lost leader is replaced in about
ttl seconds; Patroni requires loop_wait + 2 * retry_timeout <= ttl. The README discusses the
trade-off (a shorter ttl is a faster failover but also a leader demoted by a slower etcd).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from certstatus.cluster.local import (
    DATABASE,
    STATE_FILE,
    Cluster,
    ClusterError,
    Node,
    _terminate,
    parse_sites,
    postgres_bin,
)
from certstatus.ports import free_port

SCOPE = "certstatus"
SYNC_MODES = ("strict", "degrade", "off")
PATRONI = "patroni"
ETCD = "etcd"


@dataclass(frozen=True)
class Timings:
    """Patroni's election timings, in seconds: ttl is the leader lease, loop_wait the pause
    between two runs of each Patroni's loop, retry_timeout how long a failing DCS or PostgreSQL
    call is retried before the leader gives up its role."""

    ttl: int = 10
    loop_wait: int = 2
    retry_timeout: int = 4

    def problems(self) -> str | None:
        if self.loop_wait + 2 * self.retry_timeout > self.ttl:
            return (
                f"loop_wait + 2 * retry_timeout ({self.loop_wait} + 2 * {self.retry_timeout}) "
                f"must not exceed ttl ({self.ttl}), or a healthy leader can lose its lease"
            )
        if self.loop_wait < 1:
            return "loop_wait must be at least 1 s"
        return None


def _tool(name: str) -> str:
    for directory in ("/usr/bin", "/usr/local/bin"):
        path = Path(directory) / name
        if path.exists():
            return str(path)
    raise ClusterError(
        f"{name} not found; install Patroni and etcd (Debian: apt-get install -y patroni "
        "python3-etcd etcd-server)"
    )


@dataclass
class HaCluster(Cluster):
    """PostgreSQL under Patroni. Roles move: `primary` and `replicas` ask Patroni who leads now,
    and nodes are named by site (a1, a2, b1) rather than by role."""

    etcd_port: int = 0
    etcd_peer_port: int = 0
    etcd_pid: int | None = None
    timings: Timings = field(default_factory=Timings)
    sync: str = "strict"

    # layout -----------------------------------------------------------------------------

    def patroni_config(self, node: Node) -> Path:
        return self.pg_dir / f"patroni-{node.name}.yml"

    def patroni_log(self, node: Node) -> Path:
        return self.dir / f"patroni-{node.name}.log"

    def dcs_control(self, node: Node) -> Path:
        return self.dir / f"dcs-{node.name}.json"

    @property
    def writer_url(self) -> str:
        """Every node, and libpq keeps the one that accepts writes: whichever leads now."""
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        return f"postgresql://postgres@{hosts}/{DATABASE}?target_session_attrs=read-write"

    @property
    def read_nodes(self) -> list[Node]:
        return list(self.nodes)

    @property
    def primary(self) -> Node:
        leader = self.leader()
        if leader is None:
            raise ClusterError("no leader right now (a failover may be under way)")
        return leader

    @property
    def replicas(self) -> list[Node]:
        leader = self.leader()
        return [n for n in self.nodes if leader is None or n.name != leader.name]

    def node(self, name: str) -> Node:
        """A node by name; "leader" names whichever node leads now."""
        return self.primary if name == "leader" else super().node(name)

    # state ------------------------------------------------------------------------------

    def save(self) -> None:
        state = {
            "ha": {
                "etcd_port": self.etcd_port,
                "etcd_peer_port": self.etcd_peer_port,
                "etcd_pid": self.etcd_pid,
                "timings": asdict(self.timings),
                "sync": self.sync,
            },
            "bin": str(self.bin),
            "keep_wal_mb": self.keep_wal_mb,
            "shared_buffers_mb": self.shared_buffers_mb,
            "nodes": [asdict(n) for n in self.nodes],
        }
        (self.dir / STATE_FILE).write_text(json.dumps(state, indent=2))

    @classmethod
    def from_state(cls, directory: Path, state: dict[str, Any]) -> HaCluster:
        ha = state["ha"]
        return cls(
            directory.resolve(),
            Path(state["bin"]),
            [Node(**n) for n in state["nodes"]],
            state["keep_wal_mb"],
            state.get("shared_buffers_mb", 32),
            etcd_port=ha["etcd_port"],
            etcd_peer_port=ha["etcd_peer_port"],
            etcd_pid=ha.get("etcd_pid"),
            timings=Timings(**ha["timings"]),
            sync=ha["sync"],
        )

    # lifecycle --------------------------------------------------------------------------

    @classmethod
    def up_ha(
        cls,
        directory: Path,
        replicas: int = 2,
        sites: str | None = None,
        timings: Timings | None = None,
        sync: str = "strict",
        keep_wal_mb: int = 32,
        shared_buffers_mb: int = 32,
    ) -> HaCluster:
        """etcd, then the first node's Patroni (it bootstraps and leads), then the standbys
        (each cloned by Patroni from the leader); returns once a synchronous standby is
        streaming (with sync on) and the certstatus database exists."""
        timings = timings or Timings()
        if (problem := timings.problems()) is not None:
            raise ClusterError(f"timings: {problem}")
        if sync not in SYNC_MODES:
            raise ClusterError(f"--sync: expected one of {', '.join(SYNC_MODES)}, got {sync!r}")
        if sync != "off" and replicas < 1:
            raise ClusterError("synchronous acknowledgement needs at least one standby")
        patroni, etcd = _tool(PATRONI), _tool(ETCD)
        directory = directory.resolve()
        if (directory / STATE_FILE).exists():
            raise ClusterError(
                f"{directory} already holds a cluster; `certstatus cluster down --dir "
                f"{directory}` first, or use another directory"
            )
        leftovers = [p for p in (directory / "pg", directory / "etcd") if p.exists()]
        if leftovers:
            raise ClusterError(
                f"{leftovers[0]} holds data of an earlier cluster; remove it or use another "
                "directory (a new cluster must not start from an old leader's data)"
            )
        site_names = parse_sites(sites, replicas)
        directory.mkdir(parents=True, exist_ok=True)
        cluster = cls(
            directory,
            postgres_bin(),
            keep_wal_mb=keep_wal_mb,
            shared_buffers_mb=shared_buffers_mb,
            etcd_port=free_port(),
            etcd_peer_port=free_port(),
            timings=timings,
            sync=sync,
        )
        cluster._prepare_dirs()
        counters: dict[str, int] = {}
        # the first leader lives on the first site; --sites counts the standbys, as without --ha
        for site in [site_names[0] if site_names else "a", *site_names]:
            counters[site] = counters.get(site, 0) + 1
            cluster.nodes.append(
                Node(
                    f"{site}{counters[site]}",
                    "member",
                    free_port(),
                    site,
                    proxy_port=free_port(),
                    api_port=free_port(),
                    dcs_port=free_port(),
                )
            )
        cluster.save()
        try:
            cluster._start_etcd(etcd)
            for node in cluster.nodes:
                cluster._write_patroni_config(node)
                cluster._start_links(node)
            first = cluster.nodes[0]
            cluster._start_patroni(first, patroni)
            cluster.wait_leader(90, expect=first.name)
            for node in cluster.nodes[1:]:
                cluster._start_patroni(node, patroni)
            cluster.wait_members(120)
            cluster.query(cluster._admin_node(first), f"CREATE DATABASE {DATABASE}", timeout=10)
        except BaseException:
            cluster.down()
            raise
        return cluster

    def _prepare_dirs(self) -> None:
        if os.geteuid() == 0:
            self.dir.chmod(0o755)
            probe = subprocess.run(
                ["runuser", "-u", "postgres", "--", "test", "-x", str(self.dir)], check=False
            )
            if probe.returncode != 0:
                raise ClusterError(
                    f"{self.dir} is not reachable by the postgres user; use a directory "
                    "whose parents it can traverse (e.g. under /tmp)"
                )
        for path in (self.pg_dir, self.run_dir):
            path.mkdir(exist_ok=True)
            path.chmod(0o700 if path == self.run_dir else 0o755)
            self._own(path)

    def _start_etcd(self, etcd: str) -> None:
        data = self.dir / "etcd"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        client = f"http://127.0.0.1:{self.etcd_port}"
        log = (self.dir / "etcd.log").open("ab")
        process = subprocess.Popen(
            [
                etcd,
                "--name",
                "e1",
                "--data-dir",
                str(data),
                "--listen-client-urls",
                client,
                "--advertise-client-urls",
                client,
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
                "--initial-cluster",
                f"e1={peer}",
                "--initial-cluster-state",
                "new",
                "--logger",
                "zap",
                "--log-level",
                "warn",
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        self.etcd_pid = process.pid
        self.save()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ClusterError(
                    f"etcd exited with {process.returncode}; see {self.dir}/etcd.log"
                )
            with (
                contextlib.suppress(OSError, ValueError),
                urllib.request.urlopen(client + "/health", timeout=1) as answer,
            ):
                if json.loads(answer.read()).get("health") == "true":
                    return
            time.sleep(0.1)
        raise ClusterError("etcd did not become healthy within 30 s")

    def _start_links(self, node: Node) -> None:
        """The node's two link proxies: repl (in front of its PostgreSQL) and dcs (to etcd)."""
        assert node.proxy_port is not None and node.dcs_port is not None
        self.control(node).write_text(json.dumps({"mode": "ok"}))
        self.dcs_control(node).write_text(json.dumps({"mode": "ok"}))
        node.proxy_pid = self._spawn_proxy(
            node.proxy_port, node.port, self.control(node), f"link-{node.name}.log"
        )
        node.dcs_proxy_pid = self._spawn_proxy(
            node.dcs_port, self.etcd_port, self.dcs_control(node), f"dcs-{node.name}.log"
        )
        self.save()

    def _write_patroni_config(self, node: Node) -> None:
        """Patroni's configuration for one node (JSON is YAML, so no YAML writer is needed)."""
        t = self.timings
        parameters = {
            "unix_socket_directories": str(self.run_dir),
            "wal_level": "replica",
            "hot_standby": "on",
            "hot_standby_feedback": "on",
            "wal_log_hints": "on",  # pg_rewind needs it without data checksums
            "max_wal_senders": 20,
            "max_replication_slots": 20,
            "max_slot_wal_keep_size": f"{self.keep_wal_mb}MB",
            "max_wal_size": "64MB",
            "min_wal_size": "32MB",
            "checkpoint_completion_target": 0,
            # a standby whose leader changed retries its stream after 1 s, not 5: with strict
            # synchronous mode, writes wait until a standby streams from the new leader
            "wal_retrieve_retry_interval": "1s",
            "wal_receiver_timeout": "10s",
            "wal_sender_timeout": "10s",
            "shared_buffers": f"{self.shared_buffers_mb}MB",
            "max_connections": 100,
            "synchronous_commit": "on",
        }
        config = {
            "scope": SCOPE,
            "namespace": "/certstatus/",
            "name": node.name,
            "log": {"level": "WARNING"},
            "restapi": {
                "listen": f"127.0.0.1:{node.api_port}",
                "connect_address": f"127.0.0.1:{node.api_port}",
            },
            "etcd3": {"hosts": [f"127.0.0.1:{node.dcs_port}"], "use_proxies": True},
            "bootstrap": {
                "dcs": {
                    "ttl": t.ttl,
                    "loop_wait": t.loop_wait,
                    "retry_timeout": t.retry_timeout,
                    "maximum_lag_on_failover": 1024 * 1024,
                    "synchronous_mode": self.sync != "off",
                    "synchronous_mode_strict": self.sync == "strict",
                    "postgresql": {
                        "use_pg_rewind": True,
                        "use_slots": True,
                        "parameters": parameters,
                    },
                },
                "initdb": [{"encoding": "UTF8"}, "no-locale"],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{node.port}",
                "connect_address": f"127.0.0.1:{node.proxy_port}",
                "data_dir": str(self.data(node)),
                "bin_dir": str(self.bin),
                "pgpass": str(self.pg_dir / f"pgpass-{node.name}"),
                "authentication": {
                    "superuser": {"username": "postgres"},
                    "replication": {"username": "postgres"},
                    "rewind": {"username": "postgres"},
                },
                "parameters": {"unix_socket_directories": str(self.run_dir)},
                "pg_hba": [
                    "local all all trust",
                    "host all all 127.0.0.1/32 trust",
                    "host replication all 127.0.0.1/32 trust",
                ],
            },
            "tags": {"site": node.site},
        }
        path = self.patroni_config(node)
        path.write_text(json.dumps(config, indent=2))
        self._own(path)

    def _start_patroni(self, node: Node, patroni: str | None = None) -> None:
        log = self.patroni_log(node).open("ab")
        as_postgres: dict[str, Any] = {}
        if os.geteuid() == 0:
            as_postgres = {"user": "postgres", "group": "postgres", "extra_groups": []}
        process = subprocess.Popen(
            [patroni or _tool(PATRONI), str(self.patroni_config(node))],
            stdout=log,
            stderr=log,
            start_new_session=True,
            cwd=str(self.pg_dir),
            env={"PATH": "/usr/bin:/bin", "HOME": str(self.pg_dir), "LC_ALL": "C.UTF-8"},
            **as_postgres,
        )
        node.patroni_pid = process.pid
        self.save()

    def start(self, node: Node) -> None:
        """Start the node's Patroni (a node stopped or killed rejoins: as a standby if another
        node leads, after pg_rewind if its timeline diverged)."""
        if node.patroni_pid and _runs(node.patroni_pid, str(self.patroni_config(node))):
            raise ClusterError(f"{node.name}: Patroni is already running (pid {node.patroni_pid})")
        self._start_patroni(node)

    def stop(self, node: Node, mode: str = "fast") -> None:
        """Stop the node's Patroni, which stops its PostgreSQL (a leader hands over first)."""
        if node.patroni_pid and _runs(node.patroni_pid, str(self.patroni_config(node))):
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.patroni_pid, signal.SIGTERM)
            if not _wait_gone(node.patroni_pid, 45):
                self.kill(node)
            node.patroni_pid = None
            self.save()
        if self.data(node).exists() and self._running(node):
            Cluster.stop(self, node, "immediate")

    def kill(self, node: Node) -> None:
        """A node lost at once: SIGKILL its Patroni, its postmaster and every backend."""
        pids = []
        if node.patroni_pid and _runs(node.patroni_pid, str(self.patroni_config(node))):
            pids.append(node.patroni_pid)
        postmaster = self._postmaster_pid(node)
        if postmaster:
            pids += [postmaster, *_children(postmaster)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in pids:
            _wait_gone(pid, 10)
        node.patroni_pid = None
        self.save()

    def _postmaster_pid(self, node: Node) -> int | None:
        try:
            pid = int((self.data(node) / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _alive(pid) and _runs(pid, str(self.data(node))) else None

    def down(self) -> None:
        """Stop every Patroni, every PostgreSQL, etcd and every link proxy; nothing is left.

        The Patroni processes are killed first, so none of them starts a failover or restarts
        its PostgreSQL while the others stop (SIGTERM to all of them took ~20 s: a leader
        waits for its standbys on the way down); then each PostgreSQL gets a fast shutdown."""
        for node in self.nodes:
            if node.patroni_pid and _runs(node.patroni_pid, str(self.patroni_config(node))):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node.patroni_pid, signal.SIGKILL)
        for node in self.nodes:
            if node.patroni_pid:
                _wait_gone(node.patroni_pid, 10)
            node.patroni_pid = None
        running = [n for n in self.nodes if self._postmaster_pid(n)]
        stops = [self._pg_ctl_stop(n) for n in running]
        for node, stop in zip(running, stops, strict=True):
            try:
                stop.wait(timeout=30)
            except subprocess.TimeoutExpired:
                stop.kill()
            postmaster = self._postmaster_pid(node)
            if postmaster:
                Cluster.stop(self, node, "immediate")
                _wait_gone(postmaster, 10)
        helpers = [self.etcd_pid] + [p for n in self.nodes for p in (n.proxy_pid, n.dcs_proxy_pid)]
        for pid in helpers:  # all at once: each takes a moment to go
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGTERM)
        for pid in helpers:
            if pid:
                _terminate(pid)
        for node in self.nodes:
            node.proxy_pid = node.dcs_proxy_pid = None
        self.etcd_pid = None
        (self.dir / STATE_FILE).unlink(missing_ok=True)

    def _pg_ctl_stop(self, node: Node) -> subprocess.Popen[bytes]:
        """pg_ctl stop -m fast, started (not awaited) so every node stops at once."""
        args = [str(self.bin / "pg_ctl"), "-D", str(self.data(node)), "-w", "-m", "fast", "stop"]
        if os.geteuid() == 0:
            args = ["runuser", "-u", "postgres", "--", *args]
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    # Patroni's view -----------------------------------------------------------------------

    def api(self, node: Node, path: str, timeout: float = 2) -> tuple[int, Any]:
        """GET Patroni's REST API of `node`: (HTTP status, JSON body); (0, None) if unreachable."""
        url = f"http://127.0.0.1:{node.api_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as error:
            with contextlib.suppress(ValueError):
                return error.code, json.loads(error.read() or b"null")
            return error.code, None
        except (OSError, ValueError):
            return 0, None

    def members(self) -> list[dict[str, Any]]:
        """The cluster as Patroni's DCS holds it (from the first node that answers)."""
        for node in self.nodes:
            status, body = self.api(node, "/cluster")
            if status == 200 and body:
                return list(body.get("members", []))
        return []

    def leader(self) -> Node | None:
        """The node that holds the leader lock and whose Patroni confirms it runs as primary,
        or None. The DCS alone still names a leader that died, until its lease runs out."""
        for member in self.members():
            if member.get("role") == "leader" and member.get("state") == "running":
                node = self.node(member["name"])
                return node if self.api(node, "/primary", timeout=1)[0] == 200 else None
        return None

    def wait_leader(
        self, timeout: float, expect: str | None = None, other_than: str | None = None
    ) -> Node:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader()
            if (
                leader is not None
                and (expect is None or leader.name == expect)
                and (other_than is None or leader.name != other_than)
                and self._accepts_writes(leader)
            ):
                return leader
            time.sleep(0.2)
        raise ClusterError(f"no leader{f' {expect}' if expect else ''} within {timeout:.0f}s")

    def _accepts_writes(self, node: Node) -> bool:
        try:
            rows = self.query(self._admin_node(node), "SELECT pg_is_in_recovery()", timeout=2)
        except psycopg.Error:
            return False
        return rows == [(False,)]

    def wait_members(self, timeout: float, count: int | None = None) -> None:
        """Until every node runs (or `count` of them), and with sync on, one is synchronous."""
        want = len(self.nodes) if count is None else count
        deadline = time.monotonic() + timeout
        members: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            members = self.members()
            running = [m for m in members if m.get("state") in ("running", "streaming")]
            synced = self.sync == "off" or any(m.get("role") == "sync_standby" for m in members)
            if len(running) >= want and synced and self.leader() is not None:
                return
            time.sleep(0.3)
        raise ClusterError(f"cluster not complete within {timeout:.0f}s: {members}")

    def wait_rejoined(self, node: Node, timeout: float) -> None:
        """Until `node` runs as a standby in Patroni's view and streams from the current leader
        in the leader's (after pg_rewind if its timeline diverged). Neither alone will do:
        Patroni says "running" as soon as PostgreSQL starts, and while Patroni clones a node,
        pg_basebackup's own WAL stream shows under the node's name on the leader."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = any(
                m.get("name") == node.name
                and m.get("role") in ("replica", "sync_standby")
                and m.get("state") in ("running", "streaming")
                for m in self.members()
            )
            if running and self._streaming(node):
                return
            time.sleep(0.3)
        raise ClusterError(f"{node.name} did not rejoin as a standby within {timeout:.0f}s")

    def _streaming(self, node: Node) -> bool:
        leader = self.leader()
        if leader is None or leader.name == node.name:
            return False
        try:
            rows = self.query(
                self._admin_node(leader),
                "SELECT 1 FROM pg_stat_replication WHERE application_name = %s "
                "AND state = 'streaming'",
                (node.name,),
                timeout=2,
            )
        except psycopg.Error:
            return False
        return bool(rows)

    def _admin_node(self, node: Node) -> Node:
        from certstatus.cluster.local import _admin

        return _admin(node)

    # faults -----------------------------------------------------------------------------

    def set_link(self, node: Node, mode: str, delay_ms: int = 0) -> None:
        """Both of the node's links: replication from it (and pg_rewind against it) and its
        Patroni's connection to etcd."""
        state = json.dumps({"mode": mode, "delay_ms": delay_ms})
        self.control(node).write_text(state)
        self.dcs_control(node).write_text(state)

    def require_leader(self, node: Node, fault: str) -> Node:
        leader = self.leader()
        if leader is None:
            raise ClusterError(f"{fault}: no leader right now (a failover may be under way)")
        if node.name not in ("leader", leader.name):
            raise ClusterError(f"{fault}: {node.name} is not the leader ({leader.name} is)")
        return leader

    def kill_leader(self, node: Node) -> Node:
        leader = self.require_leader(node, "kill-leader")
        self.kill(leader)
        return leader

    def isolate_leader(self, node: Node) -> Node:
        leader = self.require_leader(node, "isolate-leader")
        self.set_link(leader, "cut")
        return leader

    def lose_wal(self, node: Node, timeout: float = 120) -> None:
        raise ClusterError("lose-wal is for a cluster without --ha (Patroni manages the slots)")

    def rebuild(self, node: Node) -> None:
        """Stop the node, remove its data, start its Patroni: it clones the leader again."""
        leader = self.leader()
        if leader is None:
            # a rebuild clones the leader; and wiping the synchronous standby while the leader
            # is down would leave no node Patroni may promote without losing acknowledged writes
            raise ClusterError(
                "no leader right now: a rebuild clones the leader; wait for the failover "
                "(`certstatus cluster status`)"
            )
        if leader.name == node.name:
            raise ClusterError(f"{node.name} leads; only a standby can be rebuilt")
        self.stop(node)
        self._remove_data(node)
        self.set_link(node, "ok")
        self._start_patroni(node)
        self.wait_rejoined(node, 120)

    # status -----------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """Every node as Patroni sees it (role, state, timeline, lag) with its site, port,
        replayed heartbeat age and link state."""
        by_name = {m.get("name"): m for m in self.members()}
        rows = []
        for node in self.nodes:
            member = by_name.get(node.name, {})
            if self.api(node, "/liveness", timeout=1)[0] != 200:
                member = {}  # the DCS may still list a node whose Patroni just died
            row: dict[str, Any] = {
                "name": node.name,
                "role": member.get("role", "down"),
                "state": member.get("state", "unreachable"),
                "timeline": member.get("timeline"),
                "lag": member.get("lag"),
                "site": node.site,
                "host": "127.0.0.1",
                "port": node.port,
            }
            row.update(self.heartbeat_fields(node))
            try:
                row["link"] = json.loads(self.control(node).read_text())["mode"]
            except (OSError, ValueError, KeyError):
                row["link"] = "unknown"
            rows.append(row)
        return rows


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _runs(pid: int, marker: str) -> bool:
    """Whether `pid` is still the process we mean (its command line names `marker`): a pid
    saved in the state file may have been reused since by an unrelated process."""
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (a postmaster's backends), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found
