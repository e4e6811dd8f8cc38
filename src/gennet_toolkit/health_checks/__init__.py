"""Liveness, readiness and startup probes in the IETF ``application/health+json`` shape.

- :class:`HealthRegistry` holds the checks: sync or async callables, each with its own
  timeout, run concurrently, their reports cached for ``cache_ttl`` and shared by
  concurrent requests (one run at a time per probe, however many probes arrive);
- :func:`redis_check`, :func:`sqlalchemy_check`, :func:`http_check` are built-in checks
  (extras ``redis``, ``sql``, ``http``, imported lazily);
- :func:`health_app` serves ``/live`` (never touches a dependency), ``/ready`` (503 when
  a critical check fails or shutdown has begun, ``warn`` + 200 when only non-critical
  ones fail) and ``/startup`` (503 until the startup checks first pass, then 200);
- :class:`HealthLifespanMiddleware` or :meth:`HealthRegistry.lifespan` tie the probes
  to the app's lifespan so readiness fails as soon as shutdown starts.

A raising or hanging check is a ``fail`` with a short ``output`` ("timeout",
"connection refused", the exception class name), never a 500 and never the exception
text (unless ``debug=True``).
"""

from __future__ import annotations

from gennet_toolkit.health_checks._app import HealthApp, HealthLifespanMiddleware, health_app
from gennet_toolkit.health_checks._builtin import http_check, redis_check, sqlalchemy_check
from gennet_toolkit.health_checks._registry import (
    HEALTH_MEDIA_TYPE,
    Check,
    CheckOutcome,
    CheckResult,
    HealthRegistry,
    HealthReport,
    Probe,
    Status,
    failure_category,
)

__all__ = [
    "HealthRegistry",
    "health_app",
    "HealthApp",
    "HealthLifespanMiddleware",
    "redis_check",
    "sqlalchemy_check",
    "http_check",
    "Check",
    "CheckResult",
    "CheckOutcome",
    "HealthReport",
    "Probe",
    "Status",
    "HEALTH_MEDIA_TYPE",
    "failure_category",
]
