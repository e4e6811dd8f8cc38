"""A hand-written OpenAPI 3.1 document of the /v1 routes (schemathesis can test it)."""

from __future__ import annotations

from typing import Any

from .models import GeneIn, InteractionIn, NetworkIn, RunIn

__all__ = ["openapi_schema"]

_PROBLEM = {
    "description": "Problem",
    "content": {"application/problem+json": {"schema": {"type": "object"}}},
}
_JSON = {"application/json": {"schema": {"type": "object"}}}
_NID = {"name": "network_id", "in": "path", "required": True, "schema": {"type": "integer"}}
_PAGE = [
    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
    {
        "name": "page_size",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": 500},
    },
    {"name": "sort", "in": "query", "schema": {"type": "string"}},
]


def _op(
    summary: str, params: list[dict[str, Any]] | None = None, body: Any = None, ok: int = 200
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": params or [],
        "responses": {str(ok): {"description": "OK", "content": _JSON}, "4XX": _PROBLEM},
    }
    if body is not None:
        schema = body.model_json_schema() if hasattr(body, "model_json_schema") else body
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
    return op


def _q(name: str, kind: str = "string") -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": {"type": kind}}


def openapi_schema() -> dict[str, Any]:
    """The document served at ``/openapi.json``."""
    batch = {"type": "array", "maxItems": 1000, "items": InteractionIn.model_json_schema()}
    paths = {
        "/v1/networks": {
            "get": _op("List networks", [*_PAGE, _q("organism"), _q("name__startswith")]),
            "post": _op("Create a network", body=NetworkIn, ok=201),
        },
        "/v1/networks/{network_id}": {"get": _op("One network with counts", [_NID])},
        "/v1/networks/{network_id}/genes": {
            "get": _op("List genes", [_NID, *_PAGE, _q("symbol__in"), _q("q")]),
            "post": _op("Add a gene", [_NID], GeneIn, 201),
        },
        "/v1/networks/{network_id}/interactions": {
            "get": _op(
                "List interactions",
                [_NID, *_PAGE, _q("regulator"), _q("sign"), _q("weight__gte", "number")],
            ),
            "post": _op("Add an interaction", [_NID], InteractionIn, 201),
        },
        "/v1/networks/{network_id}/interactions/batch": {
            "post": _op("Create many interactions", [_NID, _q("atomic", "boolean")], batch, 201),
        },
        "/v1/genes/{symbol}/annotation": {
            "get": _op(
                "Gene annotation (optional upstream)",
                [{"name": "symbol", "in": "path", "required": True, "schema": {"type": "string"}}],
            ),
        },
        "/v1/workflows": {"get": _op("Workflow templates", [_q("tag"), _q("text"), _q("cursor")])},
        "/v1/workflows/{name}/runs": {
            "post": _op(
                "Start a workflow run",
                [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                RunIn,
                202,
            ),
        },
        "/v1/tasks/{task_id}": {
            "get": _op(
                "Status of a run",
                [{"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            ),
        },
        "/v1/audit": {"get": _op("Audit trail (admin)", [_q("from", "integer")])},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "GRN example service (gennet-toolkit)", "version": "1.0.0"},
        "components": {
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
        },
        "security": [{"apiKey": []}],
        "paths": paths,
    }
