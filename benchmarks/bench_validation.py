"""validation: per-request cost of validate_body vs FastAPI's own body validation.

Both apps validate the same 20-gene network body against the same pydantic model and
answer a small JSON response; the invalid case returns 422 in both (problem+json for
ours). The bare case calls ``model_validate_json`` on the bytes with no HTTP at all.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from benchmarks._asgi import make_scope, request_driver
from benchmarks._harness import Suite
from gennet_toolkit.validation import GeneSymbol, NonEmptyStr, Probability, validate_body


class Gene(BaseModel):
    symbol: GeneSymbol
    name: NonEmptyStr


class Edge(BaseModel):
    regulator: GeneSymbol
    target: GeneSymbol
    weight: Probability


class Network(BaseModel):
    name: NonEmptyStr
    genes: list[Gene]
    edges: list[Edge]


def payload(valid: bool = True) -> bytes:
    genes = [{"symbol": f"GENE{i}", "name": f"gene {i}"} for i in range(20)]
    edges = [{"regulator": f"GENE{i}", "target": f"GENE{i + 1}", "weight": 0.5} for i in range(19)]
    if not valid:
        edges[3]["weight"] = 2.0
    return json.dumps({"name": "net", "genes": genes, "edges": edges}).encode()


def ours_app() -> Any:
    @validate_body(Network)
    async def create(request: Request, net: Network) -> Response:
        return JSONResponse({"genes": len(net.genes)})

    return Starlette(routes=[Route("/networks", create, methods=["POST"])])


def fastapi_app() -> Any:
    app = FastAPI()

    @app.post("/networks")
    async def create(net: Network) -> dict[str, int]:
        return {"genes": len(net.genes)}

    return app


def main() -> None:
    """Run the suites and write benchmarks/results/validation*.{json,md}."""
    for valid in (True, False):
        body = payload(valid)
        headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
        scope = make_scope("/networks", "POST", headers)
        kind = "valid" if valid else "invalid (422)"
        suite = Suite(
            "validation" if valid else "validation-invalid",
            description=f"one POST of a 20-gene network ({len(body)} bytes), {kind} body",
        )
        suite.add("gennet validate_body", request_driver(ours_app(), scope, body))
        suite.add("fastapi body param", request_driver(fastapi_app(), scope, body))
        suite.add("bare model_validate_json", lambda b=body: _bare(b))
        suite.compare("gennet validate_body", "fastapi body param")
        suite.run()


def _bare(body: bytes) -> None:
    with contextlib.suppress(ValueError):
        Network.model_validate_json(body)


if __name__ == "__main__":
    main()
