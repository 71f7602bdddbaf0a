"""Failure drills on a real local cluster: the founding incident and its cousins, end to end."""

from certstatus.drill.runner import DRILLS, DrillReport, run_drill

__all__ = ["DRILLS", "DrillReport", "run_drill"]
