"""A resilient HTTP client on httpx: safe retries, one deadline, context propagation.

    from gennet_toolkit.http_client import ResilientClient, RetryPolicy

    async with ResilientClient("http://genes.internal", retry=RetryPolicy(attempts=4)) as c:
        response = await c.get("/v1/genes/lacZ")

Retries only idempotent methods (POST with an ``Idempotency-Key``), with full-jitter
backoff, honouring ``Retry-After``, inside a total deadline; every request carries the
correlation id and, when opentelemetry is installed, W3C trace context. Needs the
``http`` extra (``pip install "gennet-toolkit[http]"``), imported when a client is built.
"""

from __future__ import annotations

from gennet_toolkit.http_client._client import ResilientClient, SyncResilientClient
from gennet_toolkit.http_client._core import Breaker, BreakerGuard
from gennet_toolkit.http_client._policy import (
    DEFAULT_METHODS,
    DEFAULT_STATUSES,
    RetryBudget,
    RetryEvent,
    RetryPolicy,
    UpstreamTimeout,
    parse_retry_after,
)

__all__ = [
    "DEFAULT_METHODS",
    "DEFAULT_STATUSES",
    "Breaker",
    "BreakerGuard",
    "ResilientClient",
    "RetryBudget",
    "RetryEvent",
    "RetryPolicy",
    "SyncResilientClient",
    "UpstreamTimeout",
    "parse_retry_after",
]
