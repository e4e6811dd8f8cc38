"""tracing: per-request overhead of TracingMiddleware vs OpenTelemetryMiddleware.

A Starlette app with 30 routes, ``GET /items/42`` driven in-process (no HTTP client).
Both middlewares record through the same SDK TracerProvider with a SimpleSpanProcessor
and an in-memory exporter (cleared between rounds so memory stays flat). The request
carries a ``traceparent`` and a ``tracestate`` so both parse and continue a trace.
The peer runs twice: with its default ``send``/``receive`` spans and with
``exclude_spans=["send", "receive"]`` (the same span count as ours).
"""

from __future__ import annotations

from typing import Any

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from benchmarks._asgi import make_scope, request_driver, thirty_route_app
from benchmarks._harness import Suite
from benchmarks._sdk_floor import SdkFloorMiddleware
from gennet_toolkit.tracing import TracingMiddleware

HEADERS = [
    ("host", "api.example.org"),
    ("user-agent", "bench/1.0"),
    ("accept", "application/json"),
    ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
]


def _clearing(fn: Any, exporter: InMemorySpanExporter) -> Any:
    calls = 0

    async def one() -> None:
        nonlocal calls
        await fn()
        calls += 1
        if calls % 1000 == 0:  # keep memory flat without copying the span list per call
            exporter.clear()

    return one


FLOOR = "SDK floor (span calls only)"


def main() -> None:
    """Run the tracing suite and write benchmarks/results/tracing.{json,md}."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    scope = make_scope("/items/42", headers=HEADERS)

    bare = thirty_route_app()
    ours = TracingMiddleware(thirty_route_app(), tracer_provider=provider)
    peer = OpenTelemetryMiddleware(thirty_route_app(), tracer_provider=provider)
    floor = SdkFloorMiddleware(thirty_route_app(), tracer_provider=provider)
    peer_lean = OpenTelemetryMiddleware(
        thirty_route_app(), tracer_provider=provider, exclude_spans=["send", "receive"]
    )

    suite = Suite(
        "tracing",
        description=(
            "Per-request cost, Starlette app with 30 routes, GET /items/42 with traceparent "
            "and tracestate, same SDK provider (SimpleSpanProcessor + InMemorySpanExporter)."
        ),
        baseline="bare starlette",
    )
    suite.add("bare starlette", request_driver(bare, scope))
    suite.add("gennet TracingMiddleware", _clearing(request_driver(ours, scope), exporter))
    suite.add("otel-asgi (default)", _clearing(request_driver(peer, scope), exporter))
    suite.add(
        "otel-asgi (exclude send/receive)", _clearing(request_driver(peer_lean, scope), exporter)
    )
    suite.add(FLOOR, _clearing(request_driver(floor, scope), exporter))
    suite.compare("gennet TracingMiddleware", "otel-asgi (default)")
    suite.compare("gennet TracingMiddleware", "otel-asgi (exclude send/receive)")
    suite.compare("gennet TracingMiddleware", FLOOR)
    suite.compare(FLOOR, "otel-asgi (exclude send/receive)")
    suite.note("overhead ratio = (ours - bare) / (peer - bare); goal: at most 0.5")
    suite.note(
        "SDK floor: only the SDK calls (parent context, start_span with the same "
        "attributes, attach, set_attributes, update_name, end, detach), all values "
        "constant; ours vs the floor near 1.0 means what is left is the SDK's cost"
    )
    suite.run()


if __name__ == "__main__":
    main()
