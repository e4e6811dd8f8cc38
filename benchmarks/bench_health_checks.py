"""health_checks: one probe request, ours vs fastapi-health (the anchor), both in FastAPI.

Both apps sit in the same FastAPI app: ours as ``app.mount("/health", health_app(...))``,
fastapi-health as ``add_api_route("/health/ready", health([...]))`` with the same three
async checks. Suites:

- ``io``: each check awaits 2 ms (a dependency round trip), no caching on our side;
  fastapi-health resolves its conditions one after the other, ours runs them at once;
- ``instant``: the checks return at once, no caching: the machinery alone (a task and a
  timeout per check vs FastAPI's dependency resolution);
- ``cached``: our default 1 s cache against fastapi-health running its instant checks;
- ``live``: ``/live`` vs a fastapi-health endpoint without conditions.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI
from fastapi_health import health

from benchmarks._asgi import make_scope, request_driver
from benchmarks._harness import Suite
from gennet_toolkit.health_checks import HealthRegistry, health_app


def checks(delay: float) -> list[Any]:
    def factory(name: str) -> Any:
        async def check() -> bool:
            if delay:
                await asyncio.sleep(delay)
            return True

        check.__name__ = name
        return check

    return [factory(n) for n in ("db", "cache", "queue")]


def ours(delay: float, cache_ttl: float) -> Any:
    registry = HealthRegistry(cache_ttl=cache_ttl)
    for check in checks(delay):
        registry.add(check.__name__, check)
    app = FastAPI()
    app.mount("/health", health_app(registry))
    return app


def peer(delay: float) -> Any:
    app = FastAPI()
    app.add_api_route("/health/ready", health(checks(delay)))
    app.add_api_route("/health/live", health([]))
    return app


def suite(name: str, description: str, ours_app: Any, peer_app: Any, path: str) -> Suite:
    s = Suite(f"health_checks-{name}", description=description)
    s.add("ours", request_driver(ours_app, make_scope(path)))
    s.add("fastapi-health", request_driver(peer_app, make_scope(path)))
    s.compare("ours", "fastapi-health")
    return s


def main() -> None:
    suites = [
        suite(
            "io",
            "GET /health/ready, three checks each awaiting 2 ms, no cache",
            ours(0.002, 0),
            peer(0.002),
            "/health/ready",
        ),
        suite(
            "instant",
            "GET /health/ready, three instant async checks, no cache",
            ours(0, 0),
            peer(0),
            "/health/ready",
        ),
        suite(
            "cached",
            "GET /health/ready, ours with its default 1 s cache",
            ours(0, 1.0),
            peer(0),
            "/health/ready",
        ),
        suite("live", "GET /health/live", ours(0, 1.0), peer(0), "/health/live"),
    ]
    for s in suites:
        s.run()


if __name__ == "__main__":
    main()
