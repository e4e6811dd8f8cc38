"""gennet_toolkit.monitoring: windows, alert lifecycle, notifiers, lifespan, rule export."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from gennet_toolkit import monitoring
from gennet_toolkit.exceptions import ConfigurationError
from gennet_toolkit.monitoring import (
    AlertEvent,
    AlertRule,
    AlertState,
    CallbackNotifier,
    LogNotifier,
    Monitor,
    MonitorMiddleware,
    WebhookNotifier,
    slo_burn_rate_rules,
)
from gennet_toolkit.monitoring._export import quote
from gennet_toolkit.types import Message
from tests.services import closed_port_url


class FakeClock:
    """Seconds that move only when the test says so."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def rate_rule(**kw: Any) -> AlertRule:
    opts: dict[str, Any] = {
        "name": "HighRate",
        "metric": "requests_total",
        "op": ">",
        "threshold": 1.0,
        "for_seconds": 120,
        "severity": "page",
        "aggregation": "rate",
        "window": 300,
    }
    opts.update(kw)
    return AlertRule(**opts)


def feed_rate(monitor: Monitor, clock: FakeClock, per_minute: int, minutes: int) -> list[str]:
    """Add ``per_minute`` requests each minute, evaluating each time; the state after each."""
    counter = monitor.counter("requests_total")
    states = []
    for _ in range(minutes):
        clock.advance(60)
        counter.inc(per_minute)
        monitor.evaluate()
        states.append(monitor.alert("HighRate").state.value)
    return states


# --- public surface --------------------------------------------------------------------


def test_public_names_are_exactly_the_documented_ones() -> None:
    assert sorted(monitoring.__all__) == sorted(
        [
            "AGGREGATIONS",
            "DEFAULT_BUCKETS",
            "DEFAULT_BURN_RATE_WINDOWS",
            "METRIC_KINDS",
            "OPS",
            "Alert",
            "AlertEvent",
            "AlertRule",
            "AlertState",
            "BurnRateWindow",
            "CallbackNotifier",
            "Counter",
            "Gauge",
            "Histogram",
            "LogNotifier",
            "MetricKind",
            "Monitor",
            "MonitorMiddleware",
            "Notifier",
            "WebhookNotifier",
            "slo_burn_rate_rules",
        ]
    )
    for name in monitoring.__all__:
        assert hasattr(monitoring, name)


def test_alert_rule_takes_the_design_signature_positionally() -> None:
    rule = AlertRule("HighLatency", "latency_seconds", ">", 0.5, 60, "page")
    assert (rule.name, rule.metric, rule.op, rule.threshold) == (
        "HighLatency",
        "latency_seconds",
        ">",
        0.5,
    )
    assert (rule.for_seconds, rule.severity, rule.keep_firing_for) == (60, "page", 0.0)


# --- bad configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"op": "=>"}, "op '=>' is not one of"),
        ({"op": "gt"}, "op 'gt' is not one of"),
        ({"for_seconds": -1}, "for_seconds must be finite and >= 0"),
        ({"for_seconds": math.inf}, "for_seconds must be finite"),
        ({"for_seconds": "60"}, "for_seconds must be a number"),
        ({"keep_firing_for": -5}, "keep_firing_for must be finite and >= 0"),
        ({"window": 0}, "window must be finite and > 0"),
        ({"window": 0.0001}, "whole milliseconds"),
        ({"aggregation": "p99"}, "unknown aggregation 'p99'"),
        ({"aggregation": "quantile"}, "needs quantile in [0, 1]"),
        ({"aggregation": "quantile", "quantile": 1.5}, "needs quantile in [0, 1]"),
        ({"quantile": 0.9}, "quantile only applies"),
        ({"aggregation": "ratio"}, "needs a valid denominator"),
        ({"denominator": "x_total"}, "denominator only applies"),
        ({"threshold": math.nan}, "threshold must be a number"),
        ({"threshold": True}, "threshold must be a number"),
        ({"severity": ""}, "severity must be a non-empty string"),
        ({"short_window": 600}, "short_window must be shorter than window"),
        ({"metric": 'requests_total{job="x"}'}, "is not a valid metric name"),
        ({"metric": "up or vector(1)"}, "is not a valid metric name"),
        ({"name": "High Rate"}, "must match"),
        ({"labels": {"__name__": "x"}}, "must match"),
        ({"labels": {"severity": "low"}}, "set by the rule itself"),
        ({"labels": {"team": 3}}, "must be a string"),
        ({"annotations": {"summary": "on {{ $labels.job }}"}}, "uses $labels"),
        ({"kind": "summary"}, "unknown metric kind 'summary'"),
        ({"kind": "gauge"}, "aggregation 'rate' reads a counter, not a gauge"),
    ],
)
def test_bad_rule_settings_fail_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        rate_rule(**kwargs)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"evaluation_interval": 0}, "evaluation_interval"),
        ({"evaluation_interval": math.nan}, "evaluation_interval"),
        ({"queue_size": 0}, "queue_size"),
        ({"queue_size": 2.5}, "queue_size"),
        ({"notify_timeout": 0}, "notify_timeout"),
        ({"retention": -1}, "retention"),
        ({"buckets": (0.1, 0.1)}, "buckets must be distinct"),
        ({"notifiers": [object()]}, "has no send(event) method"),
    ],
)
def test_bad_monitor_settings_fail_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        Monitor(**kwargs)


def test_rule_on_a_metric_of_another_kind_is_refused() -> None:
    monitor = Monitor()
    monitor.gauge("requests_total")
    with pytest.raises(ConfigurationError, match="is a gauge, not a counter"):
        monitor.add_rule(rate_rule())


def test_metric_names_and_kinds_are_checked() -> None:
    monitor = Monitor()
    with pytest.raises(ConfigurationError, match="not a valid metric name"):
        monitor.counter("bad-name")
    monitor.histogram("latency_seconds", buckets=(0.1, 1.0))
    with pytest.raises(ConfigurationError, match="other buckets"):
        monitor.histogram("latency_seconds", buckets=(0.5,))
    with pytest.raises(ConfigurationError, match="is a histogram, not a counter"):
        monitor.counter("latency_seconds")
    with pytest.raises(ValueError, match="distinct finite"):
        monitor.histogram("other_seconds", buckets=(math.nan,))
    with pytest.raises(ValueError, match="must be >= 0"):
        monitor.counter("c_total").inc(-1)
    with pytest.raises(ValueError, match="must be >= 0"):
        monitor.counter("c_total").inc(math.nan)
    with pytest.raises(ValueError, match="cannot observe NaN"):
        monitor.histogram("latency_seconds").observe(math.nan)


def test_register_checks_the_metric_kind() -> None:
    monitor = Monitor()
    assert monitor.register("a_total", "counter") is monitor.counter("a_total")
    assert monitor.register("g", "gauge") is monitor.gauge("g")
    assert monitor.register("h", "histogram", buckets=(1.0,)) is monitor.histogram("h")
    with pytest.raises(ConfigurationError, match="unknown metric kind 'summary'"):
        monitor.register("s", "summary")
    assert rate_rule().kind == "counter"
    assert rate_rule(kind="counter") == rate_rule()


def test_importing_the_module_has_no_side_effects() -> None:
    code = (
        "import logging, sys, threading, gennet_toolkit.monitoring;"
        "assert threading.active_count() == 1;"
        "assert not logging.getLogger().handlers;"
        "assert not logging.getLogger('gennet_toolkit.monitoring').handlers;"
        "assert 'httpx' not in sys.modules and 'yaml' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_duplicate_rule_names_are_refused() -> None:
    monitor = Monitor(rules=[rate_rule()])
    with pytest.raises(ConfigurationError, match="already exists"):
        monitor.add_rule(rate_rule(threshold=5))


# --- alert lifecycle --------------------------------------------------------------------


def test_alert_goes_pending_then_firing_after_for_then_resolves() -> None:
    clock = FakeClock()
    events: list[AlertEvent] = []
    monitor = Monitor(clock=clock, evaluation_interval=60, rules=[rate_rule()])
    states = feed_rate(monitor, clock, 30, 3)  # 0.5/s: below the threshold
    assert states == ["inactive"] * 3
    for _ in range(8):
        clock.advance(60)
        monitor.counter("requests_total").inc(600)  # 10/s
        events += monitor.evaluate()
        states.append(monitor.alert("HighRate").state.value)
    # Pending at the first true evaluation, firing once it held for 2 minutes.
    assert states[3:6] == ["pending", "pending", "firing"]
    assert [(e.alertname, e.status) for e in events] == [("HighRate", "firing")]
    alert = monitor.alert("HighRate")
    assert alert.fired_at is not None
    assert alert.active_at is not None
    assert alert.fired_at - alert.active_at == 120
    for _ in range(10):
        clock.advance(60)
        events += monitor.evaluate()  # no traffic: the rate drops to 0
    assert [e.status for e in events] == ["firing", "resolved"]
    assert monitor.alert("HighRate").state is AlertState.INACTIVE
    assert events[1].resolved_at is not None


def test_pending_alert_that_clears_never_notifies() -> None:
    clock = FakeClock()
    monitor = Monitor(clock=clock, evaluation_interval=60, rules=[rate_rule(for_seconds=600)])
    feed_rate(monitor, clock, 30, 6)
    states = feed_rate(monitor, clock, 600, 2)
    assert states == ["pending", "pending"]
    events = []
    for _ in range(10):
        clock.advance(60)
        events += monitor.evaluate()
    assert events == []
    assert monitor.alerts() == []


def test_zero_for_fires_on_the_first_true_evaluation() -> None:
    clock = FakeClock()
    monitor = Monitor(clock=clock, evaluation_interval=60, rules=[rate_rule(for_seconds=0)])
    feed_rate(monitor, clock, 30, 3)
    assert feed_rate(monitor, clock, 600, 1) == ["firing"]


def test_keep_firing_for_holds_a_firing_alert_after_the_condition_clears() -> None:
    clock = FakeClock()
    rule = AlertRule(
        "QueueHigh", "queue", ">", 10, 0, "page", aggregation="last", keep_firing_for=180
    )
    monitor = Monitor(clock=clock, evaluation_interval=60, rules=[rule])
    gauge = monitor.gauge("queue")
    states, statuses = [], []
    for depth in [50, 0, 0, 0, 0, 50, 0]:
        clock.advance(60)
        gauge.set(depth)
        statuses += [e.status for e in monitor.evaluate()]
        states.append(monitor.alert("QueueHigh").state.value)
    # Clears at t2; still firing at t2, t3, t4 (< 3m), resolved at t5 (= 3m).
    assert states == ["firing", "firing", "firing", "firing", "inactive", "firing", "firing"]
    assert statuses == ["firing", "resolved", "firing"]


def test_no_data_and_nan_keep_alerts_inactive() -> None:
    clock = FakeClock()
    slow = AlertRule(
        "Slow", "latency_seconds", "<", 0.1, 0, "page", aggregation="quantile", quantile=0.9
    )
    errors = AlertRule(
        "Errors", "errors_total", "<", 0.5, 0, "page", aggregation="ratio", denominator="req_total"
    )
    monitor = Monitor(clock=clock, rules=[slow, errors])
    for _ in range(5):
        clock.advance(15)
        assert monitor.evaluate() == []
    # No observations: the quantile and 0/0 are NaN, which compare false, as in PromQL.
    assert math.isnan(monitor.query("latency_seconds", "quantile", 60, quantile=0.9) or 0.0)
    assert math.isnan(monitor.query("errors_total", "ratio", 60, denominator="req_total") or 0.0)
    assert monitor.alerts() == []


def test_a_rule_that_raises_is_logged_once_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(AlertRule):
        def compute(self, metrics: Any, at_ms: int) -> float | None:
            raise RuntimeError("boom")

    clock = FakeClock()
    broken = Broken("Broken", "requests_total", ">", 0, 0, "page", aggregation="rate")
    monitor = Monitor(clock=clock, evaluation_interval=60, rules=[broken, rate_rule()])
    with caplog.at_level(logging.ERROR, logger="gennet_toolkit.monitoring"):
        feed_rate(monitor, clock, 30, 2)
        states = feed_rate(monitor, clock, 600, 4)
    assert states[-1] == "firing"
    assert len([r for r in caplog.records if "Broken" in r.getMessage()]) == 1


# --- windows and queries ------------------------------------------------------------------


def test_rolling_queries_follow_promql() -> None:
    clock = FakeClock(0)
    monitor = Monitor(clock=clock, evaluation_interval=60)
    counter = monitor.counter("requests_total")
    gauge = monitor.gauge("queue")
    hist = monitor.histogram("latency_seconds", buckets=(0.1, 0.5, 1.0))
    for minute in range(10):
        clock.now = minute * 60.0
        counter.inc(120)
        gauge.set(minute)
        for value in (0.05, 0.05, 0.3, 0.7):
            hist.observe(value)
        monitor.sample()
    assert monitor.query("requests_total", "rate", 300) == pytest.approx(2.0)
    assert monitor.query("requests_total", "increase", 300) == pytest.approx(600.0)
    assert monitor.query("queue") == 9
    assert monitor.query("queue", "max_over_time", 120) == 9
    assert monitor.query("queue", "min_over_time", 120) == 7
    assert monitor.query("queue", "avg_over_time", 120) == pytest.approx(8.0)
    # Half the observations are <= 0.1: the median is the top of the first bucket.
    assert monitor.query("latency_seconds", "quantile", 300, quantile=0.5) == pytest.approx(0.1)
    assert monitor.query("latency_seconds", "mean", 300) == pytest.approx(0.275)
    assert monitor.query("latency_seconds", "count_rate", 300) == pytest.approx(4 / 60)
    assert monitor.query("missing_total", "rate", 300) is None


def test_a_gauge_goes_stale_after_five_minutes_without_samples() -> None:
    clock = FakeClock(0)
    monitor = Monitor(clock=clock)
    monitor.gauge("queue").set(3)
    monitor.sample()
    rule = AlertRule("Q", "queue", ">", 1, 0, "page")
    assert rule.compute({"queue": monitor.gauge("queue")}, 299_000) == 3
    assert rule.compute({"queue": monitor.gauge("queue")}, 300_000) is None


def test_a_clock_stepping_back_does_not_reorder_samples() -> None:
    clock = FakeClock(1000)
    monitor = Monitor(clock=clock, evaluation_interval=60, rules=[rate_rule(for_seconds=0)])
    counter = monitor.counter("requests_total")
    for step in (60, 60, -600, 60, 60):
        clock.advance(step)
        counter.inc(600)
        monitor.evaluate()
    assert monitor.alert("HighRate").state is AlertState.FIRING


def test_history_is_trimmed_to_the_longest_window() -> None:
    clock = FakeClock(0)
    monitor = Monitor(clock=clock, evaluation_interval=1, rules=[rate_rule(window=60)])
    counter = monitor.counter("requests_total")
    for _ in range(5000):
        clock.advance(1)
        counter.inc()
        monitor.evaluate()
    # 5 minutes (the instant lookback) + 2 intervals, kept in at most twice that.
    assert len(counter._history.times) <= 2 * 302


def test_counters_are_exact_under_threads() -> None:
    monitor = Monitor()
    counter = monitor.counter("hits_total")
    hist = monitor.histogram("sizes", buckets=(1.0,))

    def work() -> None:
        for _ in range(20_000):
            counter.inc()
            hist.observe(0.5)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter.value == 80_000
    assert hist.count == 80_000


# --- notifiers ----------------------------------------------------------------------------


async def fire_once(monitor: Monitor, clock: FakeClock) -> None:
    feed_rate(monitor, clock, 30, 2)
    feed_rate(monitor, clock, 600, 1)


@pytest.mark.anyio
async def test_callback_notifiers_get_firing_and_resolved_sync_and_async() -> None:
    clock = FakeClock()
    sync_events: list[AlertEvent] = []
    async_events: list[AlertEvent] = []

    async def on_event(event: AlertEvent) -> None:
        async_events.append(event)

    monitor = Monitor(
        clock=clock,
        evaluation_interval=60,
        rules=[rate_rule(for_seconds=0, annotations={"summary": "rate is {{ $value }}/s"})],
        notifiers=[CallbackNotifier(sync_events.append), CallbackNotifier(on_event)],
    )
    async with monitor.running():
        await fire_once(monitor, clock)
        feed_rate(monitor, clock, 0, 10)
        assert await monitor.flush()
    assert [e.status for e in sync_events] == ["firing", "resolved"]
    assert [e.status for e in async_events] == ["firing", "resolved"]
    first = sync_events[0]
    assert first.annotations["summary"].startswith("rate is ")
    assert first.labels == {"severity": "page"}
    body = first.to_dict()
    assert body["labels"] == {"alertname": "HighRate", "severity": "page"}
    assert body["startsAt"].endswith("Z")


@pytest.mark.anyio
async def test_a_hanging_notifier_blocks_neither_evaluation_nor_other_notifiers() -> None:
    clock = FakeClock()
    release = asyncio.Event()
    got: list[str] = []

    async def hang(event: AlertEvent) -> None:
        await release.wait()

    monitor = Monitor(
        clock=clock,
        evaluation_interval=60,
        rules=[rate_rule(for_seconds=0)],
        notifiers=[CallbackNotifier(hang), CallbackNotifier(lambda e: got.append(e.status))],
    )
    async with monitor.running():
        await fire_once(monitor, clock)  # evaluate() returns although hang() never does
        feed_rate(monitor, clock, 0, 10)
        for _ in range(200):
            if len(got) == 2:
                break
            await asyncio.sleep(0.01)
        assert got == ["firing", "resolved"]
        release.set()
        assert await monitor.flush()


@pytest.mark.anyio
async def test_a_slow_notifier_times_out_and_counts_as_failed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()

    async def hang(event: AlertEvent) -> None:
        await asyncio.Event().wait()

    monitor = Monitor(
        clock=clock,
        evaluation_interval=60,
        rules=[rate_rule(for_seconds=0)],
        notifiers=[CallbackNotifier(hang)],
        notify_timeout=0.05,
    )
    with caplog.at_level(logging.WARNING, logger="gennet_toolkit.monitoring"):
        async with monitor.running():
            await fire_once(monitor, clock)
            assert await monitor.flush(5)
    (stats,) = monitor.stats()["notifiers"].values()
    assert stats["failed"] == 1
    assert any("timed out" in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_notifier_failures_are_logged_once_per_incident(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    healthy = {"ok": False}

    def flaky(event: AlertEvent) -> None:
        if not healthy["ok"]:
            raise ConnectionError("receiver down")

    monitor = Monitor(
        clock=clock,
        evaluation_interval=60,
        rules=[rate_rule(for_seconds=0)],
        notifiers=[CallbackNotifier(flaky)],
    )
    with caplog.at_level(logging.INFO, logger="gennet_toolkit.monitoring"):
        async with monitor.running():
            for _ in range(3):  # three incidents' worth of events while it is down
                await fire_once(monitor, clock)
                feed_rate(monitor, clock, 0, 10)
            assert await monitor.flush()
            healthy["ok"] = True
            await fire_once(monitor, clock)
            assert await monitor.flush()
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    recoveries = [r for r in caplog.records if "recovered" in r.getMessage()]
    assert len(failures) == 1
    assert len(recoveries) == 1
    (stats,) = monitor.stats()["notifiers"].values()
    assert stats == {"delivered": 1, "failed": 6, "dropped": 0, "queued": 0}


def test_a_full_queue_drops_the_oldest_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    got: list[AlertEvent] = []
    monitor = Monitor(
        clock=clock,
        evaluation_interval=60,
        rules=[rate_rule(for_seconds=0)],
        notifiers=[CallbackNotifier(got.append)],
        queue_size=2,
    )
    with caplog.at_level(logging.WARNING, logger="gennet_toolkit.monitoring"):
        for _ in range(3):  # not started: six events for a queue of two
            feed_rate(monitor, clock, 30, 2)
            feed_rate(monitor, clock, 600, 1)
            feed_rate(monitor, clock, 0, 10)
    (stats,) = monitor.stats()["notifiers"].values()
    assert stats["dropped"] == 4
    assert stats["queued"] == 2
    assert len([r for r in caplog.records if "dropping" in r.getMessage()]) == 1

    async def deliver() -> None:
        async with monitor.running():
            assert await monitor.flush()

    asyncio.run(deliver())
    # The two newest survived: the last firing and its resolution.
    assert [e.status for e in got] == ["firing", "resolved"]


@pytest.mark.anyio
async def test_log_notifier_logs_firing_as_error_for_pages_and_resolved_as_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    monitor = Monitor(
        clock=clock,
        evaluation_interval=60,
        rules=[rate_rule(for_seconds=0)],
        notifiers=[LogNotifier()],
    )
    with caplog.at_level(logging.INFO, logger="gennet_toolkit.monitoring.alerts"):
        async with monitor.running():
            await fire_once(monitor, clock)
            feed_rate(monitor, clock, 0, 10)
            assert await monitor.flush()
    levels = [(r.levelname, r.alert["status"]) for r in caplog.records if hasattr(r, "alert")]
    assert levels == [("ERROR", "firing"), ("INFO", "resolved")]


# --- webhook ------------------------------------------------------------------------------


def receiver() -> tuple[Starlette, list[dict[str, Any]], list[str]]:
    received: list[dict[str, Any]] = []
    auth: list[str] = []

    async def hook(request: Request) -> JSONResponse:
        received.append(await request.json())
        auth.append(request.headers.get("authorization", ""))
        return JSONResponse({"ok": True})

    async def broken(request: Request) -> PlainTextResponse:
        return PlainTextResponse("no", status_code=503)

    app = Starlette(
        routes=[Route("/hook", hook, methods=["POST"]), Route("/down", broken, methods=["POST"])]
    )
    return app, received, auth


@pytest.mark.anyio
async def test_webhook_posts_alertmanager_shaped_json() -> None:
    app, received, auth = receiver()
    clock = FakeClock()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hooks")
    hook = WebhookNotifier(
        "http://hooks/hook", headers={"Authorization": "Bearer s3cret"}, client=client
    )
    monitor = Monitor(
        clock=clock, evaluation_interval=60, rules=[rate_rule(for_seconds=0)], notifiers=[hook]
    )
    async with monitor.running():
        await fire_once(monitor, clock)
        assert await monitor.flush()
    await client.aclose()
    (payload,) = received
    assert payload["status"] == "firing"
    assert payload["commonLabels"] == {"alertname": "HighRate", "severity": "page"}
    assert payload["alerts"][0]["expr"] == "sum(rate(requests_total[5m])) > 1.0"
    assert auth == ["Bearer s3cret"]


@pytest.mark.anyio
async def test_webhook_failures_never_leak_the_url_secret(caplog: pytest.LogCaptureFixture) -> None:
    app, _, _ = receiver()
    clock = FakeClock()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hooks")
    hook = WebhookNotifier("http://user:pw@hooks/down?token=abc", client=client)
    assert "pw" not in repr(hook)
    assert "abc" not in repr(hook)
    monitor = Monitor(
        clock=clock, evaluation_interval=60, rules=[rate_rule(for_seconds=0)], notifiers=[hook]
    )
    with caplog.at_level(logging.WARNING, logger="gennet_toolkit.monitoring"):
        async with monitor.running():
            await fire_once(monitor, clock)
            assert await monitor.flush()
    await client.aclose()
    text = caplog.text
    assert "failed" in text
    assert "HTTP 503" in text
    assert "abc" not in text
    assert "pw@" not in text


@pytest.mark.anyio
async def test_webhook_to_a_closed_port_fails_quietly_and_evaluation_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    hook = WebhookNotifier(closed_port_url("http") + "hook", timeout=2)
    monitor = Monitor(
        clock=clock, evaluation_interval=60, rules=[rate_rule(for_seconds=0)], notifiers=[hook]
    )
    with caplog.at_level(logging.WARNING, logger="gennet_toolkit.monitoring"):
        async with monitor.running():
            await fire_once(monitor, clock)
            feed_rate(monitor, clock, 0, 10)
            assert await monitor.flush(10)
    (stats,) = monitor.stats()["notifiers"].values()
    assert stats["failed"] == 2
    assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1


@pytest.mark.parametrize("url", ["ftp://x/hook", "/relative", "http://", "not a url"])
def test_webhook_needs_an_absolute_http_url(url: str) -> None:
    with pytest.raises(ConfigurationError, match="absolute http"):
        WebhookNotifier(url)


def test_webhook_and_monitor_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_MONITOR_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    monkeypatch.setenv("APP_MONITOR_WEBHOOK_TIMEOUT", "2.5")
    monkeypatch.setenv("APP_MONITOR_EVALUATION_INTERVAL", "30")
    monkeypatch.setenv("APP_MONITOR_QUEUE_SIZE", "10")
    monitor = Monitor.from_env("APP_")
    assert monitor.evaluation_interval == 30
    notifiers = [c.notifier for c in monitor._channels]
    assert [type(n).__name__ for n in notifiers] == ["LogNotifier", "WebhookNotifier"]
    assert isinstance(notifiers[1], WebhookNotifier)
    assert notifiers[1].timeout == 2.5
    monkeypatch.setenv("APP_MONITOR_QUEUE_SIZE", "many")
    with pytest.raises(ConfigurationError, match="QUEUE_SIZE must be an integer"):
        Monitor.from_env("APP_")
    monkeypatch.delenv("APP_MONITOR_WEBHOOK_URL")
    with pytest.raises(ConfigurationError, match="WEBHOOK_URL is not set"):
        WebhookNotifier.from_env("APP_")


# --- lifespan and request recording ---------------------------------------------------------


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[list[Message]]:
    """Drive the ASGI lifespan protocol as a server does."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    sent: list[Message] = []
    started = asyncio.Event()

    async def receive() -> Message:
        return await inbox.get()

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"].startswith("lifespan.startup."):
            started.set()

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.create_task(app(scope, receive, send))
    await inbox.put({"type": "lifespan.startup"})
    await asyncio.wait_for(started.wait(), 5)
    yield sent
    await inbox.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(task, 5)


def starlette_app() -> Starlette:
    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def boom(request: Request) -> PlainTextResponse:
        raise RuntimeError("boom")

    return Starlette(routes=[Route("/ok", ok), Route("/boom", boom), Route("/health", ok)])


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.get("/ok")
    async def ok() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {}

    return app


@pytest.mark.anyio
@pytest.mark.parametrize("make_app", [starlette_app, fastapi_app], ids=["starlette", "fastapi"])
async def test_middleware_runs_the_monitor_with_the_lifespan(make_app: Any) -> None:
    monitor = Monitor(evaluation_interval=0.01)
    app = MonitorMiddleware(make_app(), monitor=monitor)
    async with lifespan(app) as sent:
        assert {"type": "lifespan.startup.complete"} in sent
        assert monitor.started
        for _ in range(500):
            if monitor.evaluations >= 2:
                break
            await asyncio.sleep(0.01)
        assert monitor.evaluations >= 2
    assert not monitor.started
    assert {"type": "lifespan.shutdown.complete"} in sent


@pytest.mark.anyio
async def test_lifespan_helper_wraps_the_apps_own_lifespan() -> None:
    monitor = Monitor()
    seen: list[str] = []

    @contextlib.asynccontextmanager
    async def own(app: Any) -> AsyncIterator[dict[str, str]]:
        seen.append(f"start, monitor started={monitor.started}")
        yield {"db": "ready"}
        seen.append(f"stop, monitor started={monitor.started}")

    async def state(request: Request) -> JSONResponse:
        return JSONResponse({"db": request.state.db})

    app = Starlette(routes=[Route("/", state)], lifespan=monitor.lifespan(own))
    async with lifespan(app) as sent:
        assert {"type": "lifespan.startup.complete"} in sent
        assert monitor.started
    assert not monitor.started
    assert seen == ["start, monitor started=True", "stop, monitor started=True"]
    # Start again after a stop: the same monitor runs a second lifespan.
    async with lifespan(Starlette(lifespan=monitor.lifespan())):
        assert monitor.started
    assert not monitor.started


@pytest.mark.anyio
async def test_a_client_passed_to_the_webhook_is_not_closed_by_stop() -> None:
    app, received, _ = receiver()
    clock = FakeClock()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://hooks"
    ) as client:
        hook = WebhookNotifier("http://hooks/hook", client=client)
        monitor = Monitor(
            clock=clock, evaluation_interval=60, rules=[rate_rule(for_seconds=0)], notifiers=[hook]
        )
        async with monitor.running():
            await fire_once(monitor, clock)
        assert not client.is_closed
    assert len(received) == 1


@pytest.mark.anyio
async def test_middleware_speaks_lifespan_for_a_bare_asgi_app() -> None:
    async def bare(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise RuntimeError("http only")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    monitor = Monitor()
    app = MonitorMiddleware(bare, monitor=monitor)
    async with lifespan(app) as sent:
        assert monitor.started
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    assert not monitor.started
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        assert (await client.get("/")).status_code == 204
    assert monitor.counter("http_requests_total").value == 1


@pytest.mark.anyio
@pytest.mark.parametrize("make_app", [starlette_app, fastapi_app], ids=["starlette", "fastapi"])
async def test_middleware_counts_requests_errors_and_latency(make_app: Any) -> None:
    monitor = Monitor()
    app = MonitorMiddleware(make_app(), monitor=monitor, exclude_paths=["/health"])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for _ in range(3):
            assert (await client.get("/ok")).status_code == 200
        assert (await client.get("/boom")).status_code == 500
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/nowhere")).status_code == 404
    assert monitor.counter("http_requests_total").value == 5
    assert monitor.counter("http_errors_total").value == 1
    assert monitor.histogram("http_request_duration_seconds").count == 5


@pytest.mark.anyio
async def test_error_ratio_alert_fires_from_recorded_requests() -> None:
    clock = FakeClock()
    events: list[AlertEvent] = []
    monitor = Monitor(
        clock=clock, evaluation_interval=60, notifiers=[CallbackNotifier(events.append)]
    )
    app = MonitorMiddleware(fastapi_app(), monitor=monitor)
    monitor.add_rule(
        AlertRule(
            "Errors",
            "http_errors_total",
            ">",
            0.2,
            0,
            "page",
            aggregation="ratio",
            denominator="http_requests_total",
            window=120,
        )
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        monitor.running(),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        for _ in range(3):
            clock.advance(60)
            for path in ("/ok", "/boom"):
                await client.get(path)
            monitor.evaluate()
        assert await monitor.flush()
    assert [(e.alertname, e.status) for e in events] == [("Errors", "firing")]
    assert events[0].value == pytest.approx(0.5)


# --- export -------------------------------------------------------------------------------


def test_export_is_valid_yaml_with_the_rule_fields(tmp_path: Path) -> None:
    monitor = Monitor(evaluation_interval=30)
    monitor.add_rule(
        AlertRule(
            "SlowP99",
            "latency_seconds",
            ">",
            0.5,
            300,
            "page",
            aggregation="quantile",
            quantile=0.99,
            keep_firing_for=600,
            labels={"team": "grn"},
            annotations={"summary": 'p99 is {{ $value }}s: "slow"\nsee #runbook'},
        )
    )
    path = tmp_path / "rules.yml"
    text = monitor.export_prometheus_rules(path, group="grn-api")
    assert path.read_text() == text
    assert path.stat().st_mode & 0o777 == 0o644
    (group,) = yaml.safe_load(text)["groups"]
    assert group["name"] == "grn-api"
    assert group["interval"] == "30s"
    (rule,) = group["rules"]
    assert rule == {
        "alert": "SlowP99",
        "expr": "histogram_quantile(0.99, sum by (le) (rate(latency_seconds_bucket[5m]))) > 0.5",
        "for": "5m",
        "keep_firing_for": "10m",
        "labels": {"severity": "page", "team": "grn"},
        "annotations": {"summary": 'p99 is {{ $value }}s: "slow"\nsee #runbook'},
    }


def test_keep_firing_for_is_refused_for_prometheus_older_than_2_42() -> None:
    monitor = Monitor(rules=[rate_rule(keep_firing_for=60)])
    with pytest.raises(ConfigurationError, match=r"needs Prometheus >= 2\.42"):
        monitor.export_prometheus_rules(prometheus_version="2.41")
    with pytest.raises(ConfigurationError, match="must look like"):
        monitor.export_prometheus_rules(prometheus_version="latest")
    assert "keep_firing_for: 1m" in monitor.export_prometheus_rules(prometheus_version="2.53.1")


def test_an_empty_monitor_exports_an_empty_group() -> None:
    assert yaml.safe_load(Monitor().export_prometheus_rules())["groups"][0]["rules"] == []


@given(st.text())
def test_yaml_quoting_round_trips_any_text(text: str) -> None:
    assert yaml.safe_load(quote(text)) == text


# --- SLO presets --------------------------------------------------------------------------


def test_slo_presets_follow_the_sre_workbook() -> None:
    rules = slo_burn_rate_rules(
        "Api", errors="http_errors_total", total="http_requests_total", objective=0.999
    )
    summary = [(r.name, r.threshold, r.window, r.short_window, r.severity) for r in rules]
    assert summary == [
        ("ApiErrorBudgetBurn14_4x", 0.0144, 3600, 300, "page"),
        ("ApiErrorBudgetBurn6x", 0.006, 21600, 1800, "page"),
        ("ApiErrorBudgetBurn3x", 0.003, 86400, 7200, "ticket"),
        ("ApiErrorBudgetBurn1x", 0.001, 259200, 21600, "ticket"),
    ]
    assert rules[0].promql() == (
        "(sum(rate(http_errors_total[1h])) / sum(rate(http_requests_total[1h])) > 0.0144) and "
        "(sum(rate(http_errors_total[5m])) / sum(rate(http_requests_total[5m])) > 0.0144)"
    )
    assert rules[0].labels == {"slo": "Api"}


def test_burn_rate_alert_needs_both_windows() -> None:
    clock = FakeClock()
    (rule,) = slo_burn_rate_rules(
        "Api",
        errors="errors_total",
        total="requests_total",
        objective=0.99,
        windows=monitoring.DEFAULT_BURN_RATE_WINDOWS[:1],
    )
    monitor = Monitor(clock=clock, evaluation_interval=60, rules=[rule])
    errors, total = monitor.counter("errors_total"), monitor.counter("requests_total")
    states = []
    for minute in range(90):
        clock.advance(60)
        total.inc(100)
        # An hour-long error burst, then a clean stretch: the 1h ratio stays high
        # for a while, but the 5m window clears quickly and with it the alert.
        errors.inc(30 if 10 <= minute < 70 else 0)
        monitor.evaluate()
        states.append(monitor.alert(rule.name).state)
    assert states[9] is AlertState.INACTIVE
    assert states[40] is AlertState.FIRING
    assert states[80] is AlertState.INACTIVE
    assert monitor.query("errors_total", "ratio", 3600, denominator="requests_total") > 0.144


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"objective": 1.0}, "between 0 and 1"),
        ({"objective": "99.9"}, "must be a number"),
        ({"period": 0}, "period"),
        ({"windows": ()}, "windows"),
    ],
)
def test_slo_presets_reject_bad_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        slo_burn_rate_rules("Api", errors="e_total", total="t_total", **kwargs)


def test_rate_adds_back_counter_resets_like_promql() -> None:
    from gennet_toolkit.monitoring._windows import _History, extrapolated_rate

    history = _History()
    for t, v in [(0, 0.0), (60_000, 10.0), (120_000, 3.0), (180_000, 8.0)]:
        history.append(t, v)
    assert history.decreased
    # 10 before the reset plus 8 after it, over exactly the sampled range.
    assert extrapolated_rate(history, 180_000, 180_000, is_rate=False) == 18.0
    assert extrapolated_rate(history, 180_000, 180_000, is_rate=True) == 0.1
    assert extrapolated_rate(history, 180_000, 30_000, is_rate=True) is None


def test_a_histogram_with_negative_observations_still_evaluates() -> None:
    clock = FakeClock(0)
    monitor = Monitor(clock=clock)
    hist = monitor.histogram("delta", buckets=(0.0, 1.0))
    for value in (5.0, -7.0, 1.0):
        clock.advance(60)
        hist.observe(value)
        monitor.sample()
    mean = monitor.query("delta", "mean", 120)
    assert mean is not None
    assert math.isfinite(mean)


def run_docs_example(page: str, driver: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the first Python block of ``docs/<page>``, then ``driver``, in a fresh process."""
    text = (Path(__file__).resolve().parents[1] / "docs" / page).read_text(encoding="utf-8")
    code = text.split("```python\n", 1)[1].split("\n```", 1)[0]
    return subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code + "\n" + textwrap.dedent(driver)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_docs_example_runs_as_printed(tmp_path: Path) -> None:
    driver = """
        from starlette.testclient import TestClient
        with TestClient(app) as c:
            print(c.get("/build").text, monitor.metric("grn_networks_built_total").value)
    """
    out = run_docs_example("monitoring.md", driver, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["built", "1.0"]
    rules = (tmp_path / "grn-api-rules.yml").read_text(encoding="utf-8")
    assert 'alert: "GrnApiSlow"' in rules
