"""The Monitor: metrics, rule evaluation, notification dispatch, lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, TypeVar

from gennet_toolkit._env import env_float, env_int, env_str
from gennet_toolkit.exceptions import ConfigurationError
from gennet_toolkit.monitoring import _windows as w
from gennet_toolkit.monitoring._export import rules_yaml, write_atomically
from gennet_toolkit.monitoring._notifiers import (
    AlertEvent,
    LogNotifier,
    Notifier,
    WebhookNotifier,
    _Channel,
)
from gennet_toolkit.monitoring._rules import AGGREGATIONS, Alert, AlertRule, AlertState, is_name

__all__ = ()

logger = logging.getLogger("gennet_toolkit.monitoring")

_M = TypeVar("_M", w.Counter, w.Gauge, w.Histogram)

#: Queries take a fresh sample at most this often (ms), so a hot read path cannot bloat history.
_QUERY_SAMPLE_SPACING_MS = 1000


class Monitor:
    """Rolling-window metrics with Prometheus-style alert rules evaluated in process.

    ::

        monitor = Monitor(rules=[AlertRule("SlowApi", "http_request_duration_seconds", ">",
                                           0.5, 60, "page", aggregation="quantile",
                                           quantile=0.99)],
                          notifiers=[LogNotifier()])
        monitor.histogram("http_request_duration_seconds").observe(0.12)
        async with monitor.running():   # or MonitorMiddleware(app, monitor=monitor)
            ...

    Every ``evaluation_interval`` seconds the monitor samples each metric (as a Prometheus
    scrape would) and evaluates each rule on those samples with PromQL's arithmetic;
    :meth:`export_prometheus_rules` writes the same rules for a real Prometheus.
    ``clock`` returns seconds (``time.time`` by default); inject a fake one in tests.
    Notifications go through one bounded queue per notifier, drained by a background
    task, so evaluation and request handling never wait for a notifier.
    """

    def __init__(
        self,
        *,
        rules: Iterable[AlertRule] = (),
        notifiers: Iterable[Notifier] = (),
        evaluation_interval: float = 15.0,
        clock: Callable[[], float] = time.time,
        name: str = "gennet",
        queue_size: int = 256,
        notify_timeout: float = 10.0,
        retention: float = 0.0,
        buckets: Sequence[float] = w.DEFAULT_BUCKETS,
    ) -> None:
        if not evaluation_interval > 0 or math.isinf(evaluation_interval):
            raise ConfigurationError("Monitor evaluation_interval must be a finite number > 0")
        if type(queue_size) is not int or queue_size < 1:
            raise ConfigurationError("Monitor queue_size must be an integer >= 1")
        if not notify_timeout > 0:
            raise ConfigurationError("Monitor notify_timeout must be > 0 seconds")
        if not retention >= 0:
            raise ConfigurationError("Monitor retention must be >= 0 seconds")
        try:
            w.Histogram("buckets_check", buckets=buckets)
        except ValueError as exc:
            raise ConfigurationError(f"Monitor buckets: {exc}") from None
        self.name = name
        self.evaluation_interval = float(evaluation_interval)
        self._clock = clock
        self._buckets = tuple(buckets)
        self._base_retention = float(retention)
        self._metrics: dict[str, w.Metric] = {}
        self._rules: dict[str, AlertRule] = {}
        self._alerts: dict[str, Alert] = {}
        self._lock = threading.RLock()
        self._last_sample_ms: int | None = None
        self._last_now_ms = -(2**62)
        self._channels: list[_Channel] = []
        for notifier in notifiers:
            if not callable(getattr(notifier, "send", None)):
                raise ConfigurationError(f"notifier {notifier!r} has no send(event) method")
            self._channels.append(_Channel(notifier, maxsize=queue_size, timeout=notify_timeout))
        self._task: asyncio.Task[None] | None = None
        self._failing_rules: set[str] = set()
        self.evaluations = 0
        for rule in rules:
            self.add_rule(rule)

    @classmethod
    def from_env(cls, prefix: str = "GENNET_", **overrides: Any) -> Monitor:
        """Read ``{prefix}MONITOR_EVALUATION_INTERVAL``, ``_QUEUE_SIZE``, ``_NOTIFY_TIMEOUT``,
        ``_NAME``; notifiers are a :class:`LogNotifier` plus a :class:`WebhookNotifier` when
        ``{prefix}MONITOR_WEBHOOK_URL`` is set. Keyword ``overrides`` win."""
        p = f"{prefix}MONITOR_"
        notifiers: list[Notifier] = [LogNotifier()]
        if env_str(f"{p}WEBHOOK_URL") is not None:
            notifiers.append(WebhookNotifier.from_env(prefix))
        kwargs: dict[str, Any] = {
            "evaluation_interval": env_float(f"{p}EVALUATION_INTERVAL", 15.0),
            "notify_timeout": env_float(f"{p}NOTIFY_TIMEOUT", 10.0),
            "queue_size": env_int(f"{p}QUEUE_SIZE", 256),
            "name": env_str(f"{p}NAME", "gennet"),
            "notifiers": notifiers,
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    def __repr__(self) -> str:
        return f"<Monitor {self.name!r} metrics={len(self._metrics)} rules={len(self._rules)}>"

    # --- metrics ----------------------------------------------------------------------

    def _get(self, name: str, kind: type[_M], make: Callable[[], _M]) -> _M:
        metric = self._metrics.get(name)
        if metric is None:
            with self._lock:
                metric = self._metrics.get(name)
                if metric is None:
                    if not is_name(name):
                        raise ConfigurationError(f"{name!r} is not a valid metric name")
                    metric = make()
                    if self._last_sample_ms is not None:
                        # Born at zero at the last sample, as a scrape would first see it.
                        metric._sample(self._last_sample_ms)
                    self._metrics[name] = metric
        if not isinstance(metric, kind):
            raise ConfigurationError(f"metric {name!r} is a {metric.kind}, not a {kind.kind}")
        return metric

    def counter(self, name: str, description: str = "") -> w.Counter:
        """The counter ``name``, created on first use (same object afterwards)."""
        return self._get(name, w.Counter, lambda: w.Counter(name, description))

    def gauge(self, name: str, description: str = "") -> w.Gauge:
        """The gauge ``name``, created on first use."""
        return self._get(name, w.Gauge, lambda: w.Gauge(name, description))

    def histogram(
        self, name: str, description: str = "", *, buckets: Sequence[float] | None = None
    ) -> w.Histogram:
        """The histogram ``name`` (buckets fixed at creation), created on first use."""
        chosen = self._buckets if buckets is None else tuple(buckets)
        hist = self._get(name, w.Histogram, lambda: w.Histogram(name, description, buckets=chosen))
        if buckets is not None and hist.bounds != w.Histogram(name, buckets=chosen).bounds:
            raise ConfigurationError(
                f"histogram {name!r} already exists with other buckets; declare it (with its "
                "buckets) before adding rules that read it"
            )
        return hist

    def register(
        self,
        name: str,
        kind: str,
        description: str = "",
        *,
        buckets: Sequence[float] | None = None,
    ) -> w.Metric:
        """The metric ``name`` of ``kind`` (``"counter"``, ``"gauge"``, ``"histogram"``)."""
        if kind == "counter":
            return self.counter(name, description)
        if kind == "gauge":
            return self.gauge(name, description)
        if kind == "histogram":
            return self.histogram(name, description, buckets=buckets)
        raise ConfigurationError(
            f"unknown metric kind {kind!r}; supported: {', '.join(w.METRIC_KINDS)}"
        )

    def metric(self, name: str) -> w.Metric | None:
        """The metric called ``name``, or None."""
        return self._metrics.get(name)

    # --- rules ------------------------------------------------------------------------

    def add_rule(self, rule: AlertRule) -> None:
        """Add a rule; its metrics are created (or checked) with the kind it reads."""
        if not isinstance(rule, AlertRule):
            raise ConfigurationError(f"expected an AlertRule, got {type(rule).__name__}")
        if rule.name in self._rules:
            raise ConfigurationError(f"an alert rule named {rule.name!r} already exists")
        for name in rule.metrics:
            self.register(name, AGGREGATIONS[rule.aggregation][0])
        with self._lock:
            self._rules[rule.name] = rule
            self._alerts[rule.name] = Alert(rule)

    @property
    def rules(self) -> tuple[AlertRule, ...]:
        """The rules, in the order they were added."""
        return tuple(self._rules.values())

    def alert(self, name: str) -> Alert:
        """The live alert of rule ``name`` (KeyError if there is no such rule)."""
        return self._alerts[name]

    def alerts(self) -> list[Alert]:
        """Alerts that are pending or firing."""
        return [a for a in self._alerts.values() if a.state is not AlertState.INACTIVE]

    def _retention_ms(self) -> int:
        longest = max((r.longest_window for r in self._rules.values()), default=0.0)
        keep = max(longest, self._base_retention, w.LOOKBACK_MS / 1000)
        return round((keep + 2 * self.evaluation_interval) * 1000)

    # --- sampling and queries ---------------------------------------------------------

    def _now_ms(self, now: float | None) -> int:
        t = w.to_ms(self._clock() if now is None else now)
        # A wall clock stepping back must not reorder samples or alert times.
        self._last_now_ms = max(self._last_now_ms, t)
        return self._last_now_ms

    def sample(self, now: float | None = None) -> None:
        """Record every metric's current value at ``now`` (what a scrape does)."""
        with self._lock:
            t = self._now_ms(now)
            oldest = t - self._retention_ms()
            for metric in self._metrics.values():
                metric._sample(t)
                metric._trim(oldest)
            self._last_sample_ms = t

    def query(
        self,
        metric: str,
        aggregation: str = "last",
        window: float = 300.0,
        *,
        quantile: float | None = None,
        denominator: str | None = None,
    ) -> float | None:
        """The value an AlertRule with these settings would compare; None without data.

        ``monitor.query("http_requests_total", "rate", 60)`` is requests per second over
        the last minute. Takes a fresh sample first (at most once a second).
        """
        probe = AlertRule(
            "query",
            metric,
            ">",
            0,
            aggregation=aggregation,
            window=window,
            quantile=quantile,
            denominator=denominator,
        )
        with self._lock:
            now_ms = self._now_ms(None)
            last = self._last_sample_ms
            if last is None or now_ms - last >= _QUERY_SAMPLE_SPACING_MS:
                self.sample(now_ms / 1000)
            return probe.compute(self._metrics, now_ms)

    # --- evaluation -------------------------------------------------------------------

    def evaluate(self, now: float | None = None) -> list[AlertEvent]:
        """Sample, then evaluate every rule at ``now``; queue and return the notifications."""
        events: list[AlertEvent] = []
        with self._lock:
            self.sample(now)
            now_ms = self._last_now_ms
            self.evaluations += 1
            for name, alert in self._alerts.items():
                try:
                    value = alert.rule.compute(self._metrics, now_ms)
                    transition = alert.step(now_ms, value)
                except Exception:  # one broken rule must not stop the others
                    if name not in self._failing_rules:
                        self._failing_rules.add(name)
                        logger.exception("monitoring: evaluating rule %s failed", name)
                    continue
                self._failing_rules.discard(name)
                if transition is not None:
                    events.append(self._event(alert, transition, now_ms))
        for event in events:
            for channel in self._channels:
                channel.put(event)
        return events

    def _event(self, alert: Alert, status: str, now_ms: int) -> AlertEvent:
        rule = alert.rule
        return AlertEvent(
            alertname=rule.name,
            status=status,
            severity=rule.severity,
            value=alert.value,
            labels=rule.all_labels,
            annotations=dict(alert.annotations),
            expr=rule.promql(),
            active_at=alert.active_at,
            fired_at=alert.fired_at,
            resolved_at=alert.resolved_at,
            at=now_ms / 1000,
            monitor=self.name,
        )

    # --- lifecycle --------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether background evaluation is running."""
        return self._task is not None

    async def start(self) -> None:
        """Start background evaluation and notification delivery (idempotent)."""
        if self._task is not None:
            return
        for channel in self._channels:
            channel.start()
        self._task = asyncio.create_task(self._run(), name=f"gennet-monitor-{self.name}")

    async def _run(self) -> None:
        while True:
            try:
                self.evaluate()
            except Exception:  # keep evaluating: the next tick may succeed
                logger.exception("monitoring: evaluation failed")
            await asyncio.sleep(self.evaluation_interval)

    async def flush(self, wait: float = 5.0) -> bool:
        """Wait up to ``wait`` seconds for queued notifications; False if some remain."""
        deadline = asyncio.get_running_loop().time() + wait
        while not all(c.idle for c in self._channels):
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    async def stop(self, grace: float = 5.0) -> None:
        """Stop evaluating, give queued notifications ``grace`` seconds, stop the workers."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await self.flush(grace)
        for channel in self._channels:
            await channel.stop()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Monitor]:
        """``async with monitor.running():`` — start, and stop on exit (for lifespans)."""
        await self.start()
        try:
            yield self
        finally:
            await self.stop()

    def lifespan(
        self, inner: Callable[[Any], contextlib.AbstractAsyncContextManager[Any]] | None = None
    ) -> Callable[[Any], contextlib.AbstractAsyncContextManager[Any]]:
        """A lifespan for ``Starlette(lifespan=...)`` / ``FastAPI(lifespan=...)`` that runs
        the monitor around your own ``inner`` lifespan (whose state it passes on)::

            app = Starlette(routes=..., lifespan=monitor.lifespan(my_lifespan))
        """

        @contextlib.asynccontextmanager
        async def _lifespan(app: Any) -> AsyncIterator[Any]:
            async with self.running():
                if inner is None:
                    yield None
                else:
                    async with inner(app) as state:
                        yield state

        return _lifespan

    def stats(self) -> dict[str, Any]:
        """Counts for dashboards and tests: evaluations and, per notifier, delivery."""
        return {
            "evaluations": self.evaluations,
            "notifiers": {
                repr(c.notifier): {
                    "delivered": c.delivered,
                    "failed": c.failed,
                    "dropped": c.dropped,
                    "queued": len(c.queue),
                }
                for c in self._channels
            },
        }

    # --- export -----------------------------------------------------------------------

    def export_prometheus_rules(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        group: str | None = None,
        interval: float | None = None,
        prometheus_version: str = "2.42",
    ) -> str:
        """The rules as a Prometheus rule file (YAML); also written to ``path`` if given.

        ``interval`` defaults to the monitor's evaluation interval, so Prometheus holds
        ``for`` durations over the same number of evaluations.
        """
        text = rules_yaml(
            self._rules.values(),
            group=group or self.name,
            interval=self.evaluation_interval if interval is None else interval,
            prometheus_version=prometheus_version,
        )
        if path is not None:
            write_atomically(path, text)
        return text
