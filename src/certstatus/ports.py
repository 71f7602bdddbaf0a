"""Free loopback ports for the servers certstatus starts itself (clusters, caches, tests).

Picked below the kernel's ephemeral range: a port chosen by binding to port 0 comes from that
range, and between choosing it and the server binding it, any outgoing connection on the
machine may take it as its source port (seen: a replica's postmaster failing with "Address
already in use"). Ports below the range are never handed out to outgoing connections.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

_given: set[int] = set()
_lock = threading.Lock()


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port nothing listens on, not handed out before by this process."""
    top = max(_ephemeral_start(), 12000)
    with _lock:
        for _ in range(1000):
            port = random.randrange(10000, top)
            if port in _given:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _given.add(port)
            return port
    raise RuntimeError("no free port below the ephemeral range")
