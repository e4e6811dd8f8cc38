"""In-process monitoring with Prometheus alerting semantics.

- :class:`Monitor` keeps rolling-window counters, gauges and latency histograms, samples
  them like a Prometheus scrape and evaluates :class:`AlertRule` s with PromQL's
  arithmetic: inactive → pending (condition true for ``for_seconds``) → firing →
  resolved (after ``keep_firing_for``);
- notifiers (:class:`LogNotifier`, :class:`WebhookNotifier`, :class:`CallbackNotifier`)
  each get a bounded queue drained by a background task, so a slow or failing notifier
  never blocks evaluation or requests;
- :class:`MonitorMiddleware` starts and stops evaluation with the app's lifespan and
  records request counts, 5xx and latency; :meth:`Monitor.running` does the same for any
  lifespan function;
- :meth:`Monitor.export_prometheus_rules` writes the same rules as a Prometheus rule file
  (checked with ``promtool``), and :func:`slo_burn_rate_rules` builds the SRE workbook's
  multiwindow, multi-burn-rate alerts.
"""

from __future__ import annotations

from gennet_toolkit.monitoring._middleware import MonitorMiddleware
from gennet_toolkit.monitoring._monitor import Monitor
from gennet_toolkit.monitoring._notifiers import (
    AlertEvent,
    CallbackNotifier,
    LogNotifier,
    Notifier,
    WebhookNotifier,
)
from gennet_toolkit.monitoring._rules import (
    AGGREGATIONS,
    DEFAULT_BURN_RATE_WINDOWS,
    OPS,
    Alert,
    AlertRule,
    AlertState,
    BurnRateWindow,
    slo_burn_rate_rules,
)
from gennet_toolkit.monitoring._windows import (
    DEFAULT_BUCKETS,
    METRIC_KINDS,
    Counter,
    Gauge,
    Histogram,
    MetricKind,
)

__all__ = [
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
