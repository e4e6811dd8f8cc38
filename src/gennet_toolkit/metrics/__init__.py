"""Prometheus metrics for ASGI apps: RED metrics per route template, ``/metrics``, domain helpers.

* :class:`PrometheusMiddleware` counts, times and sizes requests, labelled by method,
  route template (never the raw path) and status.
* :func:`metrics_app` serves a registry as Prometheus text or OpenMetrics (with trace
  exemplars), chosen by ``Accept``; multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR``
  is set, with :func:`gunicorn_child_exit` and :func:`clear_multiprocess_dir` for gunicorn.
* :class:`BusinessMetrics` creates domain counters and histograms idempotently and
  times functions with ``@timed``.

Needs the ``metrics`` extra (prometheus-client). Importing this module does not import
it: constructing the middleware, the endpoint or ``BusinessMetrics`` does, and fails
with an ``ImportError`` naming the extra when it is missing.
"""

from __future__ import annotations

from gennet_toolkit.metrics._business import BusinessMetrics
from gennet_toolkit.metrics._exposition import (
    clear_multiprocess_dir,
    gunicorn_child_exit,
    metrics_app,
)
from gennet_toolkit.metrics._middleware import (
    DEFAULT_BUCKETS,
    METHODS,
    UNMATCHED,
    PrometheusMiddleware,
)

__all__ = [
    "DEFAULT_BUCKETS",
    "METHODS",
    "UNMATCHED",
    "BusinessMetrics",
    "PrometheusMiddleware",
    "clear_multiprocess_dir",
    "gunicorn_child_exit",
    "metrics_app",
]
