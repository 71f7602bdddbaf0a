"""Key separation (R25): web nodes hold no private key.

A responder (`serve` with run_signer = false) reads only the issuer and responder certificates:
it starts and answers where no key file exists, and it never opens a key path (a FIFO there
would block the open for ever). `check-config --role responder` checks a web node's file without
keys; the signing roles refuse to start without theirs. The processes that face the network
(the server and its workers, in `serve` and in the demo) carry no private key in memory.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from certstatus.config import ConfigError, load_config, load_issuer_certificates
from tests.conftest import Deployment, make_deployment, serving, wait_ready
from tests.test_responder_http import request_der

CLI = [sys.executable, "-m", "certstatus.cli"]


def signed_then_keys_removed(directory: Path) -> tuple[Deployment, int, int]:
    """A deployment whose responses were signed (on the 'signer host'), then its key files
    removed, as on a web node: (deployment, good serial, revoked serial)."""
    deployment = make_deployment(directory)
    store = deployment.store()
    good, revoked = deployment.good_and_revoked(store)
    store.close()
    for name in ("responder.key", "issuer.key"):
        (deployment.dir / name).unlink()
    return deployment, good.serial_number, revoked.serial_number


def status_of(deployment: Deployment, serial: int) -> ocsp.OCSPCertStatus:
    import urllib.request

    der = request_der(deployment.ca.certificate, serial, hashes.SHA256())
    post = urllib.request.Request(deployment.url, der, {"content-type": "application/ocsp-request"})
    with urllib.request.urlopen(post, timeout=5) as answer:
        parsed = ocsp.load_der_ocsp_response(answer.read())
    assert parsed.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    return parsed.certificate_status


def key_named(line: str) -> str:
    """The configuration key a one-line error names (FILE: KEY: problem)."""
    found = re.search(r"\.toml: ([a-z_.\[\]0-9]+): ", line)
    assert found, line
    return found.group(1)


def check_config(deployment: Deployment, *role: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "check-config", "--config", str(deployment.config_path), *role],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_config_role_responder_needs_no_key_file_r25(tmp_path: Path) -> None:
    deployment, _, _ = signed_then_keys_removed(tmp_path / "ca")
    web = check_config(deployment, "--role", "responder")
    assert web.returncode == 0, web.stderr
    assert "1 issuer(s) (responder)" in web.stdout
    signer = check_config(deployment)  # the signing roles' view: keys required
    assert signer.returncode == 2
    lines = signer.stderr.strip().splitlines()
    keys = sorted(key_named(line) for line in lines)
    assert keys == ["issuers[0].issuer_key", "issuers[0].responder_key"], lines
    assert "cannot read key file" in lines[0] and "Traceback" not in signer.stderr


def test_a_web_node_config_may_name_no_key_at_all_r25(tmp_path: Path) -> None:
    deployment = make_deployment(tmp_path / "ca")
    text = deployment.config_path.read_text()
    text = text.replace('responder_key = "responder.key"\n', "").replace(
        'issuer_key = "issuer.key"\n', ""
    )
    deployment.config_path.write_text(text)
    assert [m.name for m in load_issuer_certificates(load_config(deployment.config_path))] == [
        "demo"
    ]
    refused = check_config(deployment, "--role", "signer")
    assert refused.returncode == 2
    keys = sorted(key_named(line) for line in refused.stderr.strip().splitlines())
    assert keys == ["issuers[0].issuer_key", "issuers[0].responder_key"], refused.stderr
    assert "required by the signing roles" in refused.stderr


def test_responder_certificate_is_still_checked_without_keys_r6(tmp_path: Path) -> None:
    """Public checks stay: a web node refuses a responder certificate breaking R6."""
    deployment = make_deployment(tmp_path / "ca")
    (deployment.dir / "responder.pem").write_bytes((deployment.dir / "issuer.pem").read_bytes())
    with pytest.raises(ConfigError, match=r"issuers\[0\]\.responder_certificate: .*\(R6/R21\)"):
        load_issuer_certificates(deployment.config)


@pytest.mark.integration
def test_serve_without_any_key_file_answers_good_and_revoked_r25(tmp_path: Path) -> None:
    deployment, good, revoked = signed_then_keys_removed(tmp_path / "ca")
    with serving(deployment):
        assert status_of(deployment, good) == ocsp.OCSPCertStatus.GOOD
        assert status_of(deployment, revoked) == ocsp.OCSPCertStatus.REVOKED


@pytest.mark.integration
def test_serve_never_opens_a_key_path_r25(tmp_path: Path) -> None:
    """Both key paths are FIFOs with no writer: any open() of them would block the process
    for good, so a responder that becomes ready and answers never opened them. (Tests run as
    root, so an unreadable file would prove nothing.) With strace installed, the system calls
    are checked too."""
    deployment, good, _ = signed_then_keys_removed(tmp_path / "ca")
    keys = [deployment.dir / "responder.key", deployment.dir / "issuer.key"]
    for path in keys:
        os.mkfifo(path, 0o600)
    strace = shutil.which("strace")
    log = tmp_path / "strace.log"
    prefix = [strace, "-f", "-qq", "-e", "trace=open,openat,openat2", "-o", str(log)]
    process = subprocess.Popen(
        [*(prefix if strace else []), *CLI, "serve", "--config", str(deployment.config_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # strace's pid is not serve's: stop the whole group we made
    )
    try:
        wait_ready(deployment.url, process, timeout=60)
        assert status_of(deployment, good) == ocsp.OCSPCertStatus.GOOD
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        deadline = time.monotonic() + 20
        while serving_pids(deployment.config_path) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert serving_pids(deployment.config_path) == [], "serve outlived the test"
    if strace:
        opened = log.read_text()
        assert "certstatus.toml" in opened  # the trace does see the server's own opens
        for path in keys:
            assert path.name not in opened, [ln for ln in opened.splitlines() if path.name in ln]


def serving_pids(config: Path) -> list[int]:
    """Processes still running `serve` for this configuration."""
    wanted = str(config).encode()
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if wanted in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def key_traces(path: Path) -> list[bytes]:
    """Byte strings that betray a key in a process's memory: the private scalar big-endian
    (as Python and DER hold it) and little-endian (as OpenSSL's BIGNUM limbs hold it on this
    machine), and the first base64 line of its PEM file (the file as read)."""
    pem = path.read_bytes()
    key = serialization.load_pem_private_key(pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    return [scalar, scalar[::-1], pem.splitlines()[1]]


def listening_processes(port: int) -> list[int]:
    """Every process holding the listening socket on 127.0.0.1:port: the server and the
    workers it forked, i.e. exactly the processes a network client talks to."""
    wanted = f"0100007F:{port:04X}"
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and fields[3] == "0A":  # LISTEN
            inodes.add(f"socket:[{fields[9]}]")
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        if inodes & set(links(proc / "fd")):
            found.append(int(proc.name))
    return found


def parent_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("PPid:", 1)[1].split()[0])


def links(directory: Path) -> list[str]:
    """The targets of a process's file descriptors; those closed meanwhile are skipped."""
    found = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return found
    for entry in entries:
        try:
            found.append(os.readlink(entry))
        except OSError:
            continue
    return found


def memory_holds(pid: int, needles: list[bytes]) -> list[bytes]:
    """Which needles occur anywhere in the process's readable memory (read as root)."""
    hits = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("r"):
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            if end - start > 1 << 30:
                continue
            try:
                mem.seek(start)
                chunk = mem.read(end - start)
            except (OSError, OverflowError, ValueError):
                continue
            hits.update(n for n in needles if n in chunk)
    return sorted(hits)


def assert_network_processes_hold_no_key(port: int, directory: Path) -> list[int]:
    deadline = time.monotonic() + 20
    workers = os.cpu_count() or 1  # workers = 0: one per core
    while len(held := listening_processes(port)) < workers and time.monotonic() < deadline:
        time.sleep(0.2)  # one worker may answer /readyz while another still starts
    assert len(held) >= workers, held
    # and the server itself: the workers' parent, which under the native server listens too
    # (its parent, whoever launched `serve`, is not part of it)
    parents = {parent_of(pid) for pid in held}
    pids = sorted(set(held) | (parents & set(held) or parents))
    assert len(pids) >= 2, pids
    keys = [directory / "responder.key", directory / "issuer.key"]
    needles = [trace for path in keys for trace in key_traces(path)]
    # the probe works: a process that has loaded the keys is caught by it
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from certstatus.keys.pem import load_pem_key;"
            "keys = [load_pem_key(Path(p)) for p in sys.argv[1:]]; print(flush=True);"
            "sys.stdin.read()",
            *map(str, keys),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"\n"
        live = [key_traces(path)[1] for path in keys]  # OpenSSL's copy of each loaded key
        assert set(live) <= set(memory_holds(holder.pid, needles))
    finally:
        holder.kill()
        holder.wait()
    for pid in pids:
        assert memory_holds(pid, needles) == [], f"process {pid} holds a private key"
    return pids


@pytest.mark.integration
def test_serve_with_signer_keeps_keys_out_of_the_web_processes_r25(tmp_path: Path) -> None:
    """run_signer = true: the signing roles hold the keys in their own spawned process; the
    server and its workers, which clients talk to, never read them."""
    deployment = make_deployment(tmp_path / "ca", run_signer=True)
    with serving(deployment):
        assert_network_processes_hold_no_key(deployment.port, deployment.dir)


@pytest.mark.integration
def test_demo_responder_processes_hold_no_private_key_r25(tmp_path: Path) -> None:
    from certstatus.ports import free_port
    from tests.test_cli import start_demo, stop

    port = free_port()
    process = start_demo(tmp_path / "demo", port, certs=20)
    try:
        wait_ready(f"http://127.0.0.1:{port}/", process, timeout=90)
        pids = assert_network_processes_hold_no_key(port, tmp_path / "demo")
        assert process.pid not in pids  # the demo's own process (the CA) does not serve
    finally:
        _, err = stop(process)
    assert "stopped cleanly" in err and "Traceback" not in err, err


def test_files_are_created_with_their_final_mode(tmp_path: Path) -> None:
    """Keys 0600 from creation, whatever the umask, written atomically (R25, issue 16)."""
    from certstatus.demo.ca import DemoCA, write_key
    from certstatus.files import PRIVATE, PUBLIC, write_file

    previous = os.umask(0)  # the widest umask: only the mode given at creation limits it
    try:
        write_key(tmp_path / "k.pem", DemoCA.create().key)
        write_file(tmp_path / "pub", b"x", PUBLIC)
        (tmp_path / "old").write_bytes(b"old")  # 0666 under umask 0
        write_file(tmp_path / "old", b"new", PRIVATE)  # replaced, not reused with its mode
    finally:
        os.umask(previous)
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "pub").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "old").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "old").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pem", "old", "pub"]  # no staging


def test_key_file_is_never_wider_than_0600_while_written(tmp_path: Path) -> None:
    """Traced: the key file is created by open() with mode 0600 and never chmod-ed."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace not installed")
    script = (
        "from pathlib import Path; from certstatus.demo.ca import DemoCA, write_key; "
        f"write_key(Path({str(tmp_path / 'k.pem')!r}), DemoCA.create().key)"
    )
    log = tmp_path / "trace"
    subprocess.run(
        [
            strace,
            "-f",
            "-qq",
            "-e",
            "trace=openat,chmod,fchmod,fchmodat",
            "-o",
            str(log),
            sys.executable,
            "-c",
            script,
        ],
        check=True,
        timeout=60,
    )
    lines = [ln for ln in log.read_text().splitlines() if "k.pem" in ln or "chmod" in ln]
    created = [ln for ln in lines if "O_CREAT" in ln]
    assert created and all("0600" in ln for ln in created), lines
    assert not [ln for ln in lines if "chmod(" in ln and "0600" not in ln], lines


def test_demo_files_are_not_world_readable(tmp_path: Path) -> None:
    from certstatus.demo.run import DemoFiles, create

    files = DemoFiles(tmp_path / "demo")
    create(files, "127.0.0.1:1", 3)
    for name in ("issuer.key", "responder.key", "certstatus.toml", "certstatus.db"):
        assert (files.dir / name).stat().st_mode & 0o777 == 0o600, name
    assert (files.dir / "issuer.pem").stat().st_mode & 0o777 == 0o644
    assert files.dir.stat().st_mode & 0o777 == 0o711
    for wal in files.dir.glob("certstatus.db-*"):
        assert wal.stat().st_mode & 0o077 == 0, wal
