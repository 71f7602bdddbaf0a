"""A short run of benchmarks/fuzz.py against a real `certstatus serve`: mutated OCSP requests and
broken HTTP framing get answers (never a 5xx), unmutated requests get what their oracle says,
the server stays healthy, keeps its workers and logs no traceback. The long run (1 000 000
requests) is a benchmark: `python -m benchmarks.fuzz --requests 1000000`."""

from __future__ import annotations

import pytest
from benchmarks.fuzz import fuzz


@pytest.mark.integration
def test_a_short_fuzz_run_leaves_the_responder_healthy() -> None:
    report = fuzz(requests=1_500, seconds=8, seed=16, concurrency=16, check_every=1)
    detail = f"failures {report.failures[:5]}, log {report.log_errors[:5]}"
    assert report.ok, detail
    assert report.fivexx == 0 and report.tracebacks == 0, detail
    assert report.requests >= 500, f"only {report.requests} requests in {report.seconds}s"
    assert report.health_checks >= 2 and report.health_failures == 0
    assert report.processes_start == report.processes_end  # no worker died and was replaced
    # the run reached every kind of answer it is meant to provoke
    for kind in ("200 successful/good", "200 successful/revoked", "200 malformedRequest", "400"):
        assert report.answers[kind] > 0, (kind, dict(report.answers))
    assert sum(c for k, c in report.answers.items() if k.startswith("200 unauthorized")) > 0
    # a few seconds cannot show a leak; a jump of tens of MiB would still be one
    assert report.rss_end_kib - report.rss_warm_kib < 30 * 1024, report
