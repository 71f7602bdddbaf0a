"""The alert rules in deploy/prometheus, with promtool from Debian's prometheus package: every
rule passes its unit tests, every rule has a test that makes it fire, and a stopped signer's
recorded metrics make the refresh-lag and backlog rules fire (F4, R4)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import yaml

from certstatus.signer.metrics import RolesCollector
from tests.conftest import Deployment
from tests.test_purger import Clock

RULES = Path(__file__).parent.parent / "deploy" / "prometheus" / "certstatus-rules.yml"
RULE_TESTS = RULES.parent / "tests" / "certstatus-rules.test.yml"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_rules_are_valid_and_pass_their_unit_tests() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_rule_has_a_test_that_makes_it_fire() -> None:
    rules = yaml.safe_load(RULES.read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert names - fired == set(), f"rules without a firing test: {sorted(names - fired)}"


def test_a_broken_rule_test_fails() -> None:
    """The harness can fail: a test expecting the wrong value is reported."""
    tests = yaml.safe_load(RULE_TESTS.read_text())
    tests["rule_files"] = [str(RULES)]
    case = tests["tests"][0]["alert_rule_test"][1]
    case["exp_alerts"][0]["exp_labels"]["replica"] = "r2"
    broken = RULE_TESTS.parent / "broken.test.yml"
    try:
        broken.write_text(yaml.safe_dump(tests))
        assert promtool("test", "rules", str(broken)).returncode != 0
    finally:
        broken.unlink(missing_ok=True)


def humanize_duration(seconds: float) -> str:
    """Prometheus's humanizeDuration for whole seconds of at least one."""
    value = int(seconds)
    days, rest = divmod(value, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m {secs}s"
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def first_firing(values: list[float], threshold: float, hold_minutes: int) -> int:
    """The minute a `> threshold for hold_minutes` rule fires over one sample per minute."""
    start = next(i for i, v in enumerate(values) if v > threshold)
    return start + hold_minutes


def test_a_stopped_signer_fires_the_refresh_and_backlog_alerts(
    deployment: Deployment, tmp_path: Path
) -> None:
    """Responses signed at T0, then the signer stops: new certificates wait, existing
    responses age. The signing roles' collector is sampled once a minute of (injected) time
    around the 3-day mark; promtool, fed those samples, fires CertstatusRefreshBehind and
    CertstatusSigningBacklog where the recorded values cross their thresholds."""
    store = deployment.store()
    t0 = int(time.time())
    clock = Clock(t0)
    ingest = deployment.ingest(store)
    ingest.add_certificates([(deployment.leaf(), "t") for _ in range(3)], t0)
    with deployment.signer(store, clock=clock) as signer:
        signer.sign_due()
    # the signer is stopped from here on; certificates keep arriving
    start = t0 + 3 * 86400 - 40 * 60
    ingest.add_certificates([(deployment.leaf(), "t") for _ in range(2)], start)
    materials = deployment.materials()
    collector = RolesCollector(store, materials, {"demo": 1}, clock=clock, cache_for=0)
    refresh_lag: list[float] = []
    backlog: list[float] = []
    for minute in range(80):
        clock.now = start + 60 * minute
        samples = {
            metric.name: metric.samples[0].value
            for metric in collector.collect()
            if metric.samples and not metric.samples[0].labels
        }
        refresh_lag.append(samples["certstatus_signer_oldest_this_update_age_seconds"])
        backlog.append(samples["certstatus_signer_oldest_due_age_seconds"])
    assert refresh_lag == sorted(refresh_lag) and refresh_lag[-1] > 3 * 86400  # it grew
    assert backlog[-1] >= 79 * 60

    refresh_at = first_firing(refresh_lag, 3 * 86400, 15)
    backlog_at = first_firing(backlog, 600, 5)
    test = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": "certstatus_signer_oldest_this_update_age_seconds",
                        "values": " ".join(str(int(v)) for v in refresh_lag),
                    },
                    {
                        "series": "certstatus_signer_oldest_due_age_seconds",
                        "values": " ".join(str(int(v)) for v in backlog),
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": f"{refresh_at - 1}m",
                        "alertname": "CertstatusRefreshBehind",
                        "exp_alerts": [],
                    },
                    {
                        "eval_time": f"{refresh_at}m",
                        "alertname": "CertstatusRefreshBehind",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning"},
                                "exp_annotations": {
                                    "summary": "An unexpired certificate's response is "
                                    f"{humanize_duration(refresh_lag[refresh_at])} old",
                                    "description": "Responses are refreshed after 3 days at the "
                                    "latest (R4); the signer is behind.",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": f"{backlog_at - 1}m",
                        "alertname": "CertstatusSigningBacklog",
                        "exp_alerts": [],
                    },
                    {
                        "eval_time": f"{backlog_at}m",
                        "alertname": "CertstatusSigningBacklog",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning"},
                                "exp_annotations": {
                                    "summary": "A certificate has waited "
                                    f"{humanize_duration(backlog[backlog_at])} to be signed"
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    recorded = tmp_path / "recorded.test.yml"
    recorded.write_text(yaml.safe_dump(test))
    result = promtool("test", "rules", str(recorded))
    assert result.returncode == 0, result.stdout + result.stderr


def known_metric_names() -> set[str]:
    """Every metric name certstatus exports, read from its source (counters gain _total,
    histograms _bucket/_count/_sum)."""
    import re

    names: set[str] = set()
    source = Path(__file__).parent.parent / "src" / "certstatus"
    for path in source.rglob("*.py"):
        names.update(re.findall(r'"(certstatus_[a-z_]+)"', path.read_text()))
    expanded = set(names)
    for name in names:
        expanded.update({name + "_total", name + "_bucket", name + "_count", name + "_sum"})
    return expanded | {"up"}


def test_rules_and_dashboard_use_only_metrics_that_exist() -> None:
    """A renamed metric must not leave an alert or a panel silently empty."""
    import json
    import re

    known = known_metric_names()
    rules = yaml.safe_load(RULES.read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads(
        (RULES.parent.parent / "grafana" / "certstatus-dashboard.json").read_text()
    )
    exprs += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\b(certstatus_[a-z_]+|up)\b", expr)}
    assert used - known == set()
    assert len(dashboard["panels"]) >= 10
