"""A local Varnish in front of origin responders: `certstatus cache up|status|down`.

For demos, drills, tests and the monitor's "through the CDN" target. A production cache runs
the same deploy/varnish/certstatus.vcl under its own service manager.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from certstatus.ports import free_port

STATE_FILE = "cache.json"


class CacheError(RuntimeError):
    pass


@dataclass(frozen=True)
class CacheState:
    """What `cache up` started, so status and down find it again."""

    listen: str
    admin: str
    origins: list[str]
    pid: int
    workdir: str

    @property
    def url(self) -> str:
        return f"http://{self.listen}/"


def backends_vcl(origins: list[tuple[str, int]], purgers: tuple[str, ...] = ("127.0.0.1",)) -> str:
    """backends.vcl for certstatus.vcl: each origin probed on /readyz (so a responder with no
    fresh source, or draining, stops receiving misses) and the addresses allowed to purge."""
    probe = (
        'probe readyz {\n    .url = "/readyz";\n    .interval = 500ms;\n    .timeout = 400ms;\n'
        "    .window = 3;\n    .threshold = 2;\n    .initial = 1;\n}\n"
    )
    backends = "".join(
        f'backend origin{i} {{ .host = "{host}"; .port = "{port}"; .probe = readyz; }}\n'
        for i, (host, port) in enumerate(origins)
    )
    acl = "acl purgers { " + " ".join(f'"{a}";' for a in purgers) + " }\n"
    adds = "".join(f"    origins.add_backend(origin{i});\n" for i in range(len(origins)))
    return f"vcl 4.1;\n\n{probe}\n{backends}\n{acl}\nsub certstatus_add_origins {{\n{adds}}}\n"


def parse_origin(text: str) -> tuple[str, int]:
    host, _, port = text.removeprefix("http://").rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise CacheError(f'origin {text!r}: expected "host:port", e.g. 127.0.0.1:8080')
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
        raise CacheError(f"origin {text!r}: the local cache only fronts loopback origins")
    return host.strip("[]"), int(port)


class LocalVarnish:
    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()

    @property
    def state_path(self) -> Path:
        return self.directory / STATE_FILE

    def up(self, origins: list[str], port: int = 0, memory: str = "256m") -> CacheState:
        binary = shutil.which("varnishd") or "/usr/sbin/varnishd"
        if not Path(binary).exists():
            raise CacheError("varnishd not found: apt-get install -y varnish varnish-modules")
        if not origins:
            raise CacheError("give at least one --origin host:port")
        if self.state() is not None:
            raise CacheError(f"a cache is already running from {self.directory}; cache down first")
        parsed = [parse_origin(o) for o in origins]
        self.directory.mkdir(parents=True, exist_ok=True)
        # varnishd reads its VCL and runs its child as an unprivileged user, which may not
        # reach DIRECTORY (a private home or temp dir): its files live in a readable place
        home = Path(tempfile.mkdtemp(prefix="certstatus-varnish-"))
        home.chmod(0o755)
        vcl = resources.files("certstatus.cache").joinpath("certstatus.vcl").read_text()
        (home / "certstatus.vcl").write_text(vcl)
        (home / "backends.vcl").write_text(backends_vcl(parsed))
        for name in ("certstatus.vcl", "backends.vcl"):
            (home / name).chmod(0o644)
            shutil.copy(home / name, self.directory / name)  # for the operator to read
        listen = f"127.0.0.1:{port or free_port()}"
        admin = f"127.0.0.1:{free_port()}"
        workdir = home / "work"
        pidfile = home / "varnishd.pid"
        pidfile.unlink(missing_ok=True)
        command = [
            binary,
            "-n", str(workdir),
            "-a", listen,
            "-T", admin,
            "-f", str(home / "certstatus.vcl"),
            "-p", f"vcl_path={home}",
            "-p", "default_grace=0",
            "-p", "default_keep=0",
            "-s", f"malloc,{memory}",
            "-P", str(pidfile),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            shutil.rmtree(home, ignore_errors=True)
            raise CacheError(f"varnishd did not start:\n{done.stderr or done.stdout}")
        pid = _wait_pid(pidfile)
        state = CacheState(listen, admin, [f"{h}:{p}" for h, p in parsed], pid, str(workdir))
        self.state_path.write_text(json.dumps(asdict(state), indent=2))
        _wait_listening(listen)
        return state

    def state(self) -> CacheState | None:
        try:
            state = CacheState(**json.loads(self.state_path.read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return None
        return state if _alive(state.pid) else None

    def down(self) -> bool:
        state = self.state()
        self.state_path.unlink(missing_ok=True)
        if state is None:
            return False
        os.kill(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while _alive(state.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(state.pid):
            os.kill(state.pid, signal.SIGKILL)
        shutil.rmtree(Path(state.workdir).parent, ignore_errors=True)
        return True

    def _tool(self, *command: str) -> Any:
        """The JSON a Varnish tool prints about the running cache (varnishstat, varnishadm)."""
        state = self.state()
        if state is None:
            raise CacheError(f"no cache running from {self.directory}")
        program, *args = command
        done = subprocess.run(
            [program, "-n", state.workdir, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise CacheError(f"{program} failed: {done.stderr or done.stdout}")
        return json.loads(done.stdout)

    def stats(self) -> dict[str, int]:
        """Hits, misses and origin fetches, from varnishstat."""
        counters = self._tool("varnishstat", "-1", "-j").get("counters", {})
        wanted = {
            "hits": "MAIN.cache_hit",
            "misses": "MAIN.cache_miss",
            "passes": "MAIN.s_pass",
            "origin_requests": "MAIN.backend_req",
            "objects": "MAIN.n_object",
            "purged": "MAIN.n_obj_purged",
        }
        return {k: int(counters.get(v, {}).get("value", 0)) for k, v in wanted.items()}

    def origin_health(self) -> dict[str, bool]:
        """Each origin's probe verdict, from varnishadm backend.list."""
        listing = self._tool("varnishadm", "backend.list", "-j")[-1]
        health = {}
        for name, info in listing.items():
            origin = name.rsplit(".", 1)[-1]
            if origin.removeprefix("origin").isdigit():
                health[origin] = info.get("probe_message", [0, 0, ""])[2] == "healthy"
        return health


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_pid(pidfile: Path) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            return int(pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            time.sleep(0.05)
    raise CacheError(f"varnishd wrote no pid file at {pidfile}")


def _wait_listening(listen: str) -> None:
    host, _, port = listen.rpartition(":")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise CacheError(f"varnishd is not listening on {listen}")
