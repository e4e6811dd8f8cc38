"""api_versioning: per-request cost of VersioningMiddleware vs mounting per version.

Peers: fastapi-versioning's design (one FastAPI sub-app per version, mounted at
``/v1``, ``/v2`` under a parent FastAPI app) and a bare Starlette ``Mount("/v1", …)`` of a
router. Ours wraps the single app and resolves the URL prefix, a header, or runs a
five-step chain of response migrations (Cadwyn-style) on a 20-field JSON body.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route, Router

from benchmarks._asgi import make_scope, request_driver
from benchmarks._harness import Suite
from gennet_toolkit.api_versioning import ChangeContext, VersionChange, VersioningMiddleware

ITEM = {f"field_{i}": i for i in range(20)}


async def item(request: Request) -> JSONResponse:
    return JSONResponse({"id": request.path_params["item_id"], **ITEM})


def routes() -> list[Route]:
    filler = [Route(f"/r{i}/{{x}}", item) for i in range(28)]
    return [*filler, Route("/items/{item_id}", item)]


def bare_app() -> Any:
    return Starlette(routes=routes())


def ours(**options: Any) -> Any:
    return VersioningMiddleware(bare_app(), [1, 2, 3, 4, 5, 6], 6, **options)


def starlette_mount() -> Any:
    return Starlette(routes=[Mount(f"/v{v}", app=Router(routes=routes())) for v in range(1, 7)])


def fastapi_subapps() -> Any:
    # What fastapi-versioning's VersionedFastAPI builds: a parent app mounting one
    # FastAPI sub-app per version.
    parent = FastAPI()
    for v in range(1, 7):
        sub = FastAPI()

        @sub.get("/items/{item_id}")
        async def read(item_id: str) -> dict[str, Any]:
            return {"id": item_id, **ITEM}

        for i in range(28):
            sub.add_api_route(f"/r{i}/{{x}}", read)
        parent.mount(f"/v{v}", sub)
    return parent


class Rename(VersionChange):
    def __init__(self, step: int) -> None:
        self.old, self.new = f"field_{step}", f"renamed_{step}"

    def downgrade_response(self, body: Any, ctx: ChangeContext) -> Any:
        if isinstance(body, dict) and self.old in body:
            body[self.new] = body.pop(self.old)
        return body


def main() -> None:
    """Run the suites and write benchmarks/results/api_versioning*.{json,md}."""
    url = make_scope("/v1/items/42")
    suite = Suite(
        "api_versioning",
        description="one GET /v1/items/42 (30-route app, 20-field JSON) per call",
        baseline="bare app (no versioning)",
    )
    suite.add("bare app (no versioning)", request_driver(bare_app(), make_scope("/items/42")))
    suite.add("gennet url prefix", request_driver(ours(), url))
    suite.add(
        "gennet header",
        request_driver(ours(), make_scope("/items/42", headers=[("API-Version", "1")])),
    )
    suite.add("starlette Mount per version", request_driver(starlette_mount(), url))
    suite.add("fastapi sub-app per version", request_driver(fastapi_subapps(), url))
    suite.compare("gennet url prefix", "starlette Mount per version")
    suite.compare("gennet url prefix", "fastapi sub-app per version")
    suite.run()

    chain = {v: Rename(v) for v in range(2, 7)}
    transforms = Suite(
        "api_versioning-transforms",
        description="GET /items/42 as version 1: five response migrations vs none",
        baseline="bare app (no versioning)",
    )
    transforms.add("bare app (no versioning)", request_driver(bare_app(), make_scope("/items/42")))
    transforms.add(
        "gennet head version", request_driver(ours(changes=chain), make_scope("/v6/items/42"))
    )
    transforms.add("gennet 5 migrations", request_driver(ours(changes=chain), url))
    transforms.compare("gennet 5 migrations", "gennet head version")
    transforms.run()


if __name__ == "__main__":
    main()
