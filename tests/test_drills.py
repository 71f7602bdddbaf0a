"""The drills of issue 4 on real clusters (F1, the founding incident): zero non-authoritative
answers for serials signed on the primary more than 2 s before the request, a broken replica
taken out of use within 5 s, a healed one used again; with the primary down, hits are served,
misses get tryLater with no-store and /readyz fails. Each drill tears its cluster down."""

from __future__ import annotations

import subprocess

import pytest

from certstatus.drill import run_drill
from tests.conftest import postgres_dir

pytestmark = pytest.mark.integration


def leftover_processes(marker: str) -> list[str]:
    listing = subprocess.run(
        ["ps", "-eo", "args"], capture_output=True, text=True, check=True
    ).stdout
    return [line for line in listing.splitlines() if marker in line]


@pytest.mark.parametrize("name", ["incident", "pause-replay", "stall-link"])
def test_replica_drills_f1(name: str, tmp_path_factory) -> None:
    directory = postgres_dir(tmp_path_factory, "drill")
    report = run_drill(name, warmup=3, hold=5, directory=directory / "cluster")
    assert report.late_non_authoritative == 0, report.late_examples
    assert report.late_after_ingest == 0
    broken = 2 if name == "incident" else 1
    assert len(report.detection_s) == broken
    assert all(t is not None and t <= 5 for t in report.detection_s.values()), report
    assert report.reused == dict.fromkeys(report.detection_s, True)
    assert report.answers.get("good", 0) > 100 and report.answers.get("revoked", 0) > 0
    if name == "incident":
        assert report.primary_fallbacks > 0  # misses on lagging replicas went to the primary
    assert report.passed
    assert leftover_processes(str(directory)) == []


def test_primary_down_drill_f1_f9(tmp_path_factory) -> None:
    directory = postgres_dir(tmp_path_factory, "drill")
    report = run_drill("primary-down", warmup=3, hold=5, directory=directory / "cluster")
    assert report.hits_during_fault > 0
    assert report.misses_try_later_no_store
    assert report.readyz_failed
    assert report.reused == {"primary": True}
    assert report.late_non_authoritative == 0, report.late_examples
    assert report.late_after_ingest == 0
    assert leftover_processes(str(directory)) == []
