"""monitoring: the cost of recording one observation, of one request, of one evaluation.

- record: ``Counter.inc()`` and ``Histogram.observe()`` of ours against prometheus_client's
  (the same work: a lock and an add; a bucket search for the histogram);
- request: ``MonitorMiddleware`` around a 30-route Starlette app against the bare app
  (overhead ratio against the baseline);
- evaluate: one ``Monitor.evaluate()`` with the four SLO burn-rate rules over full
  histories (3 days at a 15 s interval), which runs every ``evaluation_interval`` in the
  background, not per request.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram as PromHistogram

from benchmarks._asgi import make_scope, request_driver, thirty_route_app
from benchmarks._harness import Suite
from gennet_toolkit.monitoring import Monitor, MonitorMiddleware, slo_burn_rate_rules


def record_suites() -> None:
    monitor = Monitor()
    counter = monitor.counter("requests_total")
    hist = monitor.histogram("latency_seconds")
    registry = CollectorRegistry()
    prom_counter = PromCounter("requests", "requests", registry=registry)
    prom_hist = PromHistogram("latency_seconds", "latency", registry=registry)

    suite = Suite("monitoring-record", description="one counter increment / one observation")
    suite.add("gennet Counter.inc", counter.inc)
    suite.add("prometheus_client Counter.inc", prom_counter.inc)
    suite.add("gennet Histogram.observe", lambda: hist.observe(0.042))
    suite.add("prometheus_client Histogram.observe", lambda: prom_hist.observe(0.042))
    suite.compare("gennet Counter.inc", "prometheus_client Counter.inc")
    suite.compare("gennet Histogram.observe", "prometheus_client Histogram.observe")
    suite.run()


def request_suite() -> None:
    scope = make_scope("/items/15")
    bare = thirty_route_app()
    wrapped = MonitorMiddleware(thirty_route_app(), monitor=Monitor())
    suite = Suite(
        "monitoring-request",
        description="one GET through a 30-route Starlette app",
        baseline="bare starlette",
    )
    suite.add("bare starlette", request_driver(bare, scope))
    suite.add("gennet MonitorMiddleware", request_driver(wrapped, scope))
    suite.run()


def evaluate_suite() -> None:
    now = [0.0]
    monitor = Monitor(
        clock=lambda: now[0],
        rules=slo_burn_rate_rules("Api", errors="errors_total", total="requests_total"),
    )
    errors, total = monitor.counter("errors_total"), monitor.counter("requests_total")
    for _ in range(3 * 24 * 240):  # three days of 15-second samples
        now[0] += 15
        total.inc(300)
        errors.inc(1)
        monitor.sample()

    def one() -> None:
        now[0] += 15
        monitor.evaluate()

    suite = Suite(
        "monitoring-evaluate",
        description="one evaluation of the 4 SLO burn-rate rules over 3-day histories",
        rounds=5,
    )
    suite.add("gennet Monitor.evaluate", one)
    suite.run()


def main() -> None:
    """Run the suites and write benchmarks/results/monitoring-*.{json,md}."""
    record_suites()
    request_suite()
    evaluate_suite()


if __name__ == "__main__":
    main()
