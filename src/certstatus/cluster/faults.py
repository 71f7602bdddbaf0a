"""The faults a node of the local cluster can be given, and the drills built from them.

Named once, here, so `certstatus cluster fault` and the drills cannot drift apart; kept free of
heavy imports (no psycopg) because the command line reads the names on every start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from certstatus.cluster.local import Cluster, Node

# name -> what it does to (cluster, node, milliseconds); the cures are faults too
FAULTS: dict[str, Callable[[Cluster, Node, int | None], None]] = {
    "pause-replay": lambda c, n, ms: c.pause_replay(n, True),
    "resume-replay": lambda c, n, ms: c.pause_replay(n, False),
    "stall-link": lambda c, n, ms: c.set_link(n, "stall"),
    "delay-link": lambda c, n, ms: c.set_link(n, "delay", ms or 0),
    "heal-link": lambda c, n, ms: c.set_link(n, "ok"),
    "stop": lambda c, n, ms: c.stop(n),
    "start": lambda c, n, ms: c.start(n),
    "lose-wal": lambda c, n, ms: c.lose_wal(n),
}

# The replica drills: the fault each gives its replicas and the cure; None: a replica that lost
# its WAL has no cure but a rebuild from a fresh base backup.
REPLICA_DRILLS: dict[str, tuple[str, str | None]] = {
    "incident": ("lose-wal", None),
    "pause-replay": ("pause-replay", "resume-replay"),
    "stall-link": ("stall-link", "heal-link"),
}
DRILLS = (*REPLICA_DRILLS, "primary-down")


def apply_fault(cluster: Cluster, node: Node, action: str, milliseconds: int | None = None) -> None:
    """Give `node` the fault named `action` (or a cure: resume-replay, heal-link, start)."""
    from certstatus.cluster.local import ClusterError

    if action not in FAULTS:
        raise ClusterError(f"unknown fault {action!r}; faults: {', '.join(FAULTS)}")
    if action == "delay-link" and not milliseconds:
        raise ClusterError("delay-link needs MILLISECONDS, e.g. `delay-link 300`")
    FAULTS[action](cluster, node, milliseconds)
