"""The faults a node of the local cluster can be given, and the drills built from them.

Named once, here, so `certstatus cluster fault` and the drills cannot drift apart; kept free of
heavy imports (no psycopg) because the command line reads the names on every start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from certstatus.cluster.ha import HaCluster
    from certstatus.cluster.local import Cluster, Node


def _ha(cluster: Cluster, fault: str) -> HaCluster:
    """The cluster under Patroni that a leader fault needs, or a one-line refusal."""
    from certstatus.cluster.ha import HaCluster
    from certstatus.cluster.local import ClusterError

    if not isinstance(cluster, HaCluster):
        raise ClusterError(f"{fault} needs a cluster under Patroni (`cluster up --ha`)")
    return cluster


# name -> what it does to (cluster, node, milliseconds); the cures are faults too
FAULTS: dict[str, Callable[[Cluster, Node, int | None], object]] = {
    "pause-replay": lambda c, n, ms: c.pause_replay(n, True),
    "resume-replay": lambda c, n, ms: c.pause_replay(n, False),
    "stall-link": lambda c, n, ms: c.set_link(n, "stall"),
    "delay-link": lambda c, n, ms: c.set_link(n, "delay", ms or 0),
    "heal-link": lambda c, n, ms: c.set_link(n, "ok"),
    "stop": lambda c, n, ms: c.stop(n),
    "start": lambda c, n, ms: c.start(n),
    "lose-wal": lambda c, n, ms: c.lose_wal(n),
    # under Patroni (cluster up --ha); NODE is the leader's name or "leader"
    "kill-leader": lambda c, n, ms: _ha(c, "kill-leader").kill_leader(n),
    "isolate-leader": lambda c, n, ms: _ha(c, "isolate-leader").isolate_leader(n),
    "kill": lambda c, n, ms: _ha(c, "kill").kill(n),
}
# the faults whose NODE may be given as "leader" (resolved when the fault is applied)
LEADER_FAULTS = ("kill-leader", "isolate-leader")

# The replica drills: the fault each gives its replicas and the cure; None: a replica that lost
# its WAL has no cure but a rebuild from a fresh base backup.
REPLICA_DRILLS: dict[str, tuple[str, str | None]] = {
    "incident": ("lose-wal", None),
    "pause-replay": ("pause-replay", "resume-replay"),
    "stall-link": ("stall-link", "heal-link"),
}
DRILLS = (*REPLICA_DRILLS, "primary-down")


def apply_fault(cluster: Cluster, node: Node, action: str, milliseconds: int | None = None) -> None:
    """Give `node` the fault named `action` (or a cure: resume-replay, heal-link, start).
    Under Patroni, heal-link heals both of the node's links (replication and etcd), and
    start starts its Patroni again: a killed or isolated old leader rejoins as a standby."""
    from certstatus.cluster.local import ClusterError

    if action not in FAULTS:
        raise ClusterError(f"unknown fault {action!r}; faults: {', '.join(FAULTS)}")
    if action == "delay-link" and not milliseconds:
        raise ClusterError("delay-link needs MILLISECONDS, e.g. `delay-link 300`")
    FAULTS[action](cluster, node, milliseconds)
