"""The same rules, the same samples: Monitor and ``promtool test rules`` must agree.

A synthetic four-hour series (one sample a minute) feeds a Monitor on a fake clock and a
promtool unit-test file. At every minute the Monitor's pending and firing alerts become
the file's expectations (``ALERTS`` samples for both states, ``alert_rule_test`` for the
firing ones with their rendered ``$value``), so promtool fails on any difference in
state or value. promtool is found on PATH, in ``$PROMTOOL`` or at
``/tmp/prom/usr/bin/promtool`` (Debian's package, unpacked without installing:
``apt-get download prometheus && dpkg -x prometheus_*.deb /tmp/prom``).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from gennet_toolkit.monitoring import (
    AlertRule,
    AlertState,
    BurnRateWindow,
    Monitor,
    slo_burn_rate_rules,
)
from gennet_toolkit.monitoring._export import quote
from tests.services import unavailable


def find_promtool() -> str | None:
    """promtool from $PROMTOOL, PATH, or the unpacked Debian package."""
    for candidate in (
        os.environ.get("PROMTOOL"),
        shutil.which("promtool"),
        "/tmp/prom/usr/bin/promtool",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


PROMTOOL = find_promtool()


@pytest.fixture
def promtool() -> str:
    """promtool's path; skipped without it, or failed under GENNET_REQUIRE_SERVICES=1."""
    if PROMTOOL is None:
        unavailable(
            "promtool not found (set PROMTOOL, or: apt-get download prometheus && "
            "dpkg -x prometheus_*.deb /tmp/prom)"
        )
    assert PROMTOOL is not None
    return PROMTOOL


MINUTES = 240
BUCKETS = (0.1, 0.25, 0.5, 1.0)
# One representative observation per bucket, +Inf last.
BUCKET_VALUES = (0.05, 0.2, 0.4, 0.8, 2.0)


def rules() -> list[AlertRule]:
    """One rule per aggregation, operators of every kind, for/keep_firing_for, an SLO."""
    slo = slo_burn_rate_rules(
        "Api",
        errors="http_errors_total",
        total="http_requests_total",
        objective=0.99,
        period=4 * 3600,
        windows=(
            BurnRateWindow(1800, 300, 0.25, "page"),  # 2x
            BurnRateWindow(7200, 900, 0.5, "ticket"),  # 1x
        ),
    )
    return [
        AlertRule(
            "HighRequestRate",
            "http_requests_total",
            ">",
            2.0,
            120,
            "page",
            aggregation="rate",
            window=300,
            annotations={"value": "{{ $value }}", "summary": "rate on core"},
            labels={"team": "core"},
        ),
        AlertRule(
            "LowTraffic",
            "http_requests_total",
            "<",
            700,
            0,
            "ticket",
            aggregation="increase",
            window=600,
            annotations={"value": "{{ $value }}"},
        ),
        AlertRule(
            "SlowP90",
            "http_request_duration_seconds",
            ">",
            0.4,
            60,
            "page",
            aggregation="quantile",
            quantile=0.9,
            keep_firing_for=180,
            annotations={"value": "{{ $value }}"},
        ),
        AlertRule(
            "SlowMean",
            "http_request_duration_seconds",
            ">=",
            0.35,
            0,
            "warning",
            aggregation="mean",
            annotations={"value": "{{ $value }}"},
        ),
        AlertRule(
            "BusyHistogram",
            "http_request_duration_seconds",
            ">",
            2.0,
            60,
            "warning",
            aggregation="count_rate",
            window=120,
        ),
        AlertRule("QueueDeep", "queue_depth", ">=", 8, 120, "warning", aggregation="avg_over_time"),
        AlertRule(
            "QueueSpike", "queue_depth", ">", 15, 0, "page", aggregation="max_over_time", window=600
        ),
        AlertRule(
            "QueueNeverEmpty",
            "queue_depth",
            ">",
            2,
            300,
            "ticket",
            aggregation="min_over_time",
            window=600,
        ),
        AlertRule("QueueNow", "queue_depth", "!=", 0, 0, "info", aggregation="last"),
        AlertRule(
            "ErrorRatio",
            "http_errors_total",
            ">",
            0.05,
            60,
            "page",
            aggregation="ratio",
            denominator="http_requests_total",
            window=600,
            short_window=120,
            keep_firing_for=120,
            annotations={"value": "{{ $value }}"},
        ),
        *slo,
    ]


@dataclass(frozen=True)
class Minute:
    """What happens in one minute of the synthetic series."""

    requests: int
    errors: int
    obs: list[int]  # observations per bucket, +Inf last
    depth: float


@dataclass(frozen=True)
class Snapshot:
    """The Monitor's metric values and pending/firing alerts after one minute."""

    requests: float
    errors: float
    buckets: list[float]
    count: float
    sum: float
    depth: float
    alerts: dict[str, tuple[AlertState, dict[str, str], dict[str, str]]]


def synthetic_minutes(seed: int = 7) -> list[Minute]:
    """Per-minute increments with calm phases, a traffic surge, slow periods, errors."""
    rng = random.Random(seed)
    out: list[Minute] = []
    for minute in range(MINUTES):
        surge = 40 <= minute < 70 or 150 <= minute < 165
        slow = 90 <= minute < 110 or 200 <= minute < 204
        quiet = 120 <= minute < 135
        requests = rng.randint(150, 170) if surge else (rng.randint(5, 9) if quiet else 60)
        errors = rng.randint(8, 20) if 55 <= minute < 80 or 170 <= minute < 173 else 0
        spread = [70, 20, 6, 3, 1] if not slow else [10, 20, 30, 25, 15]
        observations = [n * requests // 100 for n in spread]
        depth = (
            rng.randint(9, 18)
            if 30 <= minute < 60
            else (rng.choice([0, 0, 1, 3]) if minute < 180 else 4)
        )
        out.append(Minute(requests, errors, observations, float(depth)))
    return out


def run_monitor(data: list[Minute]) -> tuple[Monitor, list[Snapshot]]:
    """Feed the series minute by minute; the snapshot of metrics and alerts at each one."""
    now = [0.0]
    monitor = Monitor(clock=lambda: now[0], evaluation_interval=60)
    requests = monitor.counter("http_requests_total")
    errors = monitor.counter("http_errors_total")
    latency = monitor.histogram("http_request_duration_seconds", buckets=BUCKETS)
    queue = monitor.gauge("queue_depth")
    for rule in rules():
        monitor.add_rule(rule)
    snapshots: list[Snapshot] = []
    for minute, row in enumerate(data):
        now[0] = minute * 60.0
        requests.inc(row.requests)
        errors.inc(row.errors)
        for value, n in zip(BUCKET_VALUES, row.obs, strict=True):
            for _ in range(n):
                latency.observe(value)
        queue.set(row.depth)
        monitor.evaluate()
        snapshots.append(
            Snapshot(
                requests=requests.value,
                errors=errors.value,
                buckets=_cumulative(latency._counts),
                count=float(latency.count),
                sum=latency.sum,
                depth=queue.value,
                alerts={
                    a.rule.name: (a.state, dict(a.rule.all_labels), dict(a.annotations))
                    for a in monitor.alerts()
                },
            )
        )
    return monitor, snapshots


def _cumulative(counts: list[int]) -> list[float]:
    total, out = 0, []
    for n in counts:
        total += n
        out.append(float(total))
    return out


def _series(name: str, values: list[float]) -> dict[str, str]:
    return {"series": name, "values": " ".join(repr(float(v)) for v in values)}


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f"{k}={quote(v)}" for k, v in sorted(labels.items())) + "}"


def unit_test_file(monitor: Monitor, snaps: list[Snapshot]) -> dict[str, object]:
    """The promtool unit test: same samples in, the Monitor's alerts as expectations."""
    series = [
        _series("http_requests_total", [s.requests for s in snaps]),
        _series("http_errors_total", [s.errors for s in snaps]),
        _series("http_request_duration_seconds_count", [s.count for s in snaps]),
        _series("http_request_duration_seconds_sum", [s.sum for s in snaps]),
        _series("queue_depth", [s.depth for s in snaps]),
    ]
    for i, bound in enumerate((*BUCKETS, "+Inf")):
        le = bound if isinstance(bound, str) else repr(bound)
        series.append(
            _series(
                f'http_request_duration_seconds_bucket{{le="{le}"}}',
                [s.buckets[i] for s in snaps],
            )
        )
    alert_tests: list[dict[str, object]] = []
    expr_tests: list[dict[str, object]] = []
    names = [r.name for r in monitor.rules]
    for minute, snap in enumerate(snaps):
        alerts = snap.alerts
        for name in names:
            state = alerts.get(name)
            firing = state is not None and state[0] is AlertState.FIRING
            alert_tests.append(
                {
                    "eval_time": f"{minute}m",
                    "alertname": name,
                    "exp_alerts": (
                        [{"exp_labels": state[1], "exp_annotations": state[2]}]
                        if firing and state is not None
                        else []
                    ),
                }
            )
        expr_tests.append(
            {
                "expr": "ALERTS",
                "eval_time": f"{minute}m",
                "exp_samples": [
                    {
                        "labels": "ALERTS"
                        + _labels({"alertname": n, "alertstate": st.value, **labels}),
                        "value": 1,
                    }
                    for n, (st, labels, _) in sorted(alerts.items())
                ],
            }
        )
    return {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": alert_tests,
                "promql_expr_test": expr_tests,
            }
        ],
    }


@pytest.fixture(scope="module")
def scenario() -> tuple[Monitor, list[Snapshot]]:
    return run_monitor(synthetic_minutes())


def test_synthetic_series_exercises_every_state(
    scenario: tuple[Monitor, list[Snapshot]],
) -> None:
    # Guards the comparison below against a series on which nothing ever happens.
    monitor, snaps = scenario
    seen: dict[str, set[AlertState]] = {r.name: set() for r in monitor.rules}
    for snap in snaps:
        for name, (state, _, _) in snap.alerts.items():
            seen[name].add(state)
    fired = {name for name, states in seen.items() if AlertState.FIRING in states}
    assert fired >= {
        "HighRequestRate",
        "LowTraffic",
        "SlowP90",
        "SlowMean",
        "QueueDeep",
        "QueueSpike",
        "QueueNeverEmpty",
        "QueueNow",
        "ErrorRatio",
        "BusyHistogram",
        "ApiErrorBudgetBurn2x",
        "ApiErrorBudgetBurn1x",
    }
    assert any(AlertState.PENDING in s for s in seen.values())


def test_exported_rules_pass_promtool_check(
    promtool: str, scenario: tuple[Monitor, list[Snapshot]], tmp_path: Path
) -> None:
    monitor, _ = scenario
    path = tmp_path / "rules.yml"
    monitor.export_prometheus_rules(path)
    proc = subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(monitor.rules)} rules found" in proc.stdout


def test_monitor_and_promtool_agree_on_every_alert_state(
    promtool: str, scenario: tuple[Monitor, list[Snapshot]], tmp_path: Path
) -> None:
    monitor, snaps = scenario
    monitor.export_prometheus_rules(tmp_path / "rules.yml")
    test_file = tmp_path / "rules_test.yml"
    test_file.write_text(yaml.safe_dump(unit_test_file(monitor, snaps), sort_keys=False))
    proc = subprocess.run(
        [promtool, "test", "rules", str(test_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "SUCCESS" in output


def test_promtool_comparison_can_fail(
    promtool: str, scenario: tuple[Monitor, list[Snapshot]], tmp_path: Path
) -> None:
    # The same file with one firing alert dropped must fail: the comparison is live.
    monitor, snaps = scenario
    monitor.export_prometheus_rules(tmp_path / "rules.yml")
    content = unit_test_file(monitor, snaps)
    group: list[dict[str, list[dict[str, object]]]] = content["tests"]  # type: ignore[assignment]
    tests = group[0]["alert_rule_test"]
    victim = next(t for t in tests if t["exp_alerts"])
    victim["exp_alerts"] = []
    test_file = tmp_path / "rules_test.yml"
    test_file.write_text(yaml.safe_dump(content, sort_keys=False))
    proc = subprocess.run(
        [promtool, "test", "rules", str(test_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert str(victim["alertname"]) in proc.stdout + proc.stderr


AWKWARD = (
    'quote " backslash \\ newline\n tab\t hash # colon: dash - '
    "accents é ✓ 🧬 next-line \x85 line-sep \u2028 control \x01 delete \x7f end"
)


def test_awkward_label_and_annotation_text_reaches_prometheus_unchanged(
    promtool: str, tmp_path: Path
) -> None:
    # Prometheus must read back exactly what the rule holds: YAML quoting is ours alone.
    now = [0.0]
    rule = AlertRule(
        "Awkward",
        "queue_depth",
        ">",
        0,
        0,
        "page",
        aggregation="last",
        labels={"note": AWKWARD},
        annotations={"summary": AWKWARD, "value": "{{ $value }}"},
    )
    monitor = Monitor(clock=lambda: now[0], evaluation_interval=60, rules=[rule])
    monitor.gauge("queue_depth").set(3)
    monitor.evaluate()
    (alert,) = monitor.alerts()
    assert alert.annotations == {"summary": AWKWARD, "value": "3"}
    monitor.export_prometheus_rules(tmp_path / "rules.yml")
    content = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": "queue_depth", "values": "3 3"}],
                "alert_rule_test": [
                    {
                        "eval_time": "1m",
                        "alertname": "Awkward",
                        "exp_alerts": [
                            {
                                "exp_labels": dict(rule.all_labels),
                                "exp_annotations": alert.annotations,
                            }
                        ],
                    }
                ],
            }
        ],
    }
    test_file = tmp_path / "rules_test.yml"
    test_file.write_text(yaml.safe_dump(content, sort_keys=False))
    for args in (["check", "rules", "rules.yml"], ["test", "rules", str(test_file)]):
        proc = subprocess.run(
            [promtool, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
