"""Wiring of the GRN example service: ``uvicorn examples.grn_app.app:app``.

Every cross-cutting concern is a gennet-toolkit middleware; the order below is the
order a request meets them (outermost first).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from gennet_toolkit.api_keys import ApiKeyMiddleware
from gennet_toolkit.api_versioning import VersioningMiddleware
from gennet_toolkit.compression import CompressionMiddleware
from gennet_toolkit.error_handler import ErrorHandlerMiddleware, install_error_handlers
from gennet_toolkit.event_sourcing import AuditTrailMiddleware
from gennet_toolkit.health_checks import (
    HealthLifespanMiddleware,
    HealthRegistry,
    health_app,
    sqlalchemy_check,
)
from gennet_toolkit.logging_middleware import (
    AccessLogMiddleware,
    CorrelationIdMiddleware,
    configure_logging,
)
from gennet_toolkit.metrics import PrometheusMiddleware, metrics_app
from gennet_toolkit.monitoring import AlertRule, LogNotifier, Monitor, MonitorMiddleware
from gennet_toolkit.rate_limit import ClientIP, RateLimiter, RateLimitMiddleware, Rule, by_user
from gennet_toolkit.rbac import RBACMiddleware
from gennet_toolkit.tracing import TracingMiddleware
from gennet_toolkit.validation import BodySizeLimitMiddleware

from .openapi import openapi_schema
from .routes import routes
from .services import Services
from .settings import Settings

__all__ = ["RBAC_RULES", "app", "create_app"]

_PUBLIC = ("/health/*", "/metrics", "/openapi.json")

#: Route-level permissions (paths below the /v1 prefix, which versioning moves to root_path).
RBAC_RULES: dict[str, str | None] = {
    "GET /networks": "network:read",
    "POST /networks": "network:write",
    "GET /networks/{network_id:int}": "network:read",
    "GET /networks/{network_id:int}/genes": "gene:read",
    "POST /networks/{network_id:int}/genes": "gene:write",
    "GET /networks/{network_id:int}/interactions": "interaction:read",
    "POST /networks/{network_id:int}/interactions": "interaction:write",
    "POST /networks/{network_id:int}/interactions/batch": "interaction:write",
    "GET /genes/{symbol}/annotation": "gene:read",
    "GET /workflows": "template:read",
    "POST /workflows/{name}/runs": "template:instantiate",
    "GET /tasks/{task_id}": "template:read",
    "GET /audit": "audit:read",
    "POST /keys": "apikey:manage",
    "GET /openapi.json": None,
    "/health/{rest:path}": None,
    "/metrics": None,
}


def _monitor() -> Monitor:
    monitor = Monitor(evaluation_interval=15, notifiers=[LogNotifier()])
    monitor.add_rule(
        AlertRule(
            "GrnHighErrorRate",
            "http_errors_total",
            ">",
            0.05,
            300,
            "page",
            aggregation="ratio",
            denominator="http_requests_total",
            window=300,
            annotations={"summary": "more than 5% of requests fail"},
        )
    )
    monitor.add_rule(
        AlertRule(
            "GrnSlowRequests",
            "http_request_duration_seconds",
            ">",
            0.5,
            300,
            "ticket",
            aggregation="quantile",
            quantile=0.99,
            window=300,
            annotations={"summary": "p99 latency is {{ $value }}s"},
        )
    )
    return monitor


def create_app(settings: Settings | None = None, *, log_json: bool = True) -> Starlette:
    """Build the service; tables, seed data and the demo admin key are made at startup."""
    settings = settings or Settings.from_env()
    registry = CollectorRegistry()
    svc = Services(settings, registry)
    health = HealthRegistry(version="1.0.0", service_id="grn-example")
    health.add("db", sqlalchemy_check(svc.engine), startup=True)
    monitor = _monitor()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if log_json:
            configure_logging("INFO", json=True, static_fields={"service": "grn"})
        await svc.start()
        try:
            yield
        finally:
            await svc.stop()

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(openapi_schema())

    app = Starlette(
        routes=[
            *routes,
            Route("/openapi.json", openapi, include_in_schema=False),
            Mount("/health", app=health_app(health)),
            Route("/metrics", metrics_app(registry)),
        ],
        middleware=[
            Middleware(CorrelationIdMiddleware),
            Middleware(ErrorHandlerMiddleware),
            # Moves /v1 into root_path, so everything inside sees route templates.
            Middleware(VersioningMiddleware, versions=[1], default=1),
            Middleware(AccessLogMiddleware),
            Middleware(TracingMiddleware, exclude_paths=["/health", "/metrics"]),
            Middleware(
                PrometheusMiddleware, registry=registry, exclude_paths=["/metrics", "/health"]
            ),
            Middleware(MonitorMiddleware, monitor=monitor),
            Middleware(CompressionMiddleware, minimum_size=500),
            Middleware(HealthLifespanMiddleware, registry=health),
            Middleware(ApiKeyMiddleware, manager=svc.keys, exempt_paths=list(_PUBLIC)),
            Middleware(
                RateLimitMiddleware,
                limiter=RateLimiter(settings.backend_url, strategy="sliding_window"),
                rules=[Rule(settings.rate_limit, key=by_user | ClientIP(), name="client")],
                exempt_paths=["/health/live", "/health/ready", "/health/startup"],
            ),
            Middleware(AuditTrailMiddleware, store=svc.audit),
            Middleware(RBACMiddleware, rbac=svc.rbac, rules=RBAC_RULES, principal=svc.principal),
            Middleware(BodySizeLimitMiddleware, max_size=1_048_576),
        ],
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.state.grn = svc
    app.state.monitor = monitor
    return app


app = create_app()
