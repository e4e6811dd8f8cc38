"""Route templates for labels: read what the router left in the scope, match only as a fallback.

Starlette (1.x) and FastAPI store the matched route in ``scope["route"]`` and extend
``scope["root_path"]`` by each ``Mount`` they pass, on the very scope dict the
middleware handed down. So after the call the template costs a few dict reads; the
mount part of ``root_path`` is raw text (``/tenants/acme``) and is mapped back to the
mount templates (``/tenants/{tenant}``) with a walk over mounts only, cached for
parameter-free prefixes. Re-matching every route (starlette-exporter spends most of
its time there) happens only when a layer in between copied the scope.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gennet_toolkit.types import ASGIApp, Scope

__all__: list[str] = []

_PREFIX_CACHE_SIZE = 512
_MATCH_NONE, _MATCH_PARTIAL, _MATCH_FULL = 0, 1, 2


class RouteResolver:
    """Turns a finished request's scope into a bounded route label."""

    __slots__ = ("_app", "_prefixes", "_routes", "unmatched")

    def __init__(self, app: ASGIApp, unmatched: str) -> None:
        self._app = app
        self.unmatched = unmatched
        self._routes: Sequence[Any] | None = None
        # raw mount prefix -> template; only parameter-free prefixes land here, so
        # the size is bounded by the app's mounts, not by what clients send.
        self._prefixes: dict[str, str] = {}

    def resolve(self, scope: Scope, path: str, root_path: str) -> str:
        """Template of the route that served ``scope``; ``unmatched`` when none did."""
        route = scope.get("route")
        if route is None:
            if "router" in scope and "endpoint" not in scope:
                return self.unmatched  # a router ran and matched nothing (404)
            return self._match(scope, path, root_path)
        template: object
        if getattr(route, "routes", None) is not None:
            # A Mount is the final route: a mounted router found nothing (404), or a
            # plain app (StaticFiles) serves everything below the prefix.
            template = self.unmatched if route.routes else "/{path}"
        else:
            template = _fastapi_template(scope, route) or getattr(route, "path", None)
        if not isinstance(template, str) or template == self.unmatched:
            return self.unmatched
        new_root = scope.get("root_path", "")
        if new_root == root_path or not new_root.startswith(root_path):
            return template
        prefix = self._mount_prefix(scope, path, root_path, new_root[len(root_path) :])
        return self.unmatched if prefix is None else prefix + template

    def _mount_prefix(self, scope: Scope, path: str, root_path: str, raw: str) -> str | None:
        cached = self._prefixes.get(raw)
        if cached is not None:
            return cached
        router = scope.get("router")
        routes = getattr(router, "routes", None) if router is not None else self._app_routes()
        if not routes:
            return None
        template = _walk_mounts(routes, _route_path(path, root_path), raw)
        if template == raw and len(self._prefixes) < _PREFIX_CACHE_SIZE:
            self._prefixes[raw] = template
        return template

    def _app_routes(self) -> Sequence[Any]:
        if self._routes is None:
            self._routes = _find_routes(self._app)
        return self._routes

    def _match(self, scope: Scope, path: str, root_path: str) -> str:
        routes = self._app_routes()
        if not routes:
            return self.unmatched
        probe = {
            "type": "http",
            "path": path,
            "root_path": root_path,
            "method": scope.get("method", "GET"),
            "headers": scope.get("headers", []),
            "path_params": {},
        }
        template = _match_routes(routes, probe, depth=0)
        return self.unmatched if template is None else template


def _find_routes(app: Any) -> Sequence[Any]:
    # Through the middleware chain (each layer's ``.app``) to the first router.
    for _ in range(32):
        routes = getattr(app, "routes", None)
        if isinstance(routes, list):
            return routes
        app = getattr(app, "app", None)
        if app is None:
            break
    return []


def _route_path(path: str, root_path: str) -> str:
    return path[len(root_path) :] if root_path and path.startswith(root_path) else path


def _fastapi_template(scope: Scope, route: Any) -> str | None:
    # FastAPI >= 0.16x keeps included routers' routes with their local path and records
    # the full one in its effective route context; older versions copy routes with the
    # full path, so route.path is right there and this returns None.
    fastapi_scope = scope.get("fastapi")
    if not isinstance(fastapi_scope, dict):
        return None
    context = fastapi_scope.get("effective_route_context")
    if context is None or getattr(context, "original_route", None) is not route:
        return None
    template = getattr(context, "path", None)
    return template if isinstance(template, str) and template else None


def _walk_mounts(routes: Sequence[Any], path: str, raw: str) -> str | None:
    """Map the raw mount prefix ``raw`` of ``path`` to the mounts' templates."""
    if not raw:
        return ""
    for route in routes:
        children = getattr(route, "routes", None)
        if children is None:
            continue
        regex = getattr(route, "path_regex", None)
        if regex is None:  # Host: no path of its own, look inside
            found = _walk_mounts(children, path, raw)
            if found is not None:
                return found
            continue
        if "path" not in regex.groupindex:
            continue
        m = regex.match(path)
        if m is None:
            continue
        remaining = "/" + m.group("path")
        matched = path[: len(path) - len(remaining)]
        if not matched or not raw.startswith(matched):
            continue
        rest = _walk_mounts(children, remaining, raw[len(matched) :])
        if rest is not None:
            return str(getattr(route, "path", "")) + rest
    return None


def _match_routes(routes: Sequence[Any], scope: dict[str, Any], depth: int) -> str | None:
    if depth > 16:
        return None
    partial: tuple[Any, dict[str, Any]] | None = None
    for route in routes:
        try:
            match, child = route.matches(scope)
        except Exception:  # a route that cannot read the probe scope does not match it
            continue
        value = getattr(match, "value", _MATCH_NONE)
        if value == _MATCH_FULL:
            return _template_of(route, {**scope, **child}, depth)
        if value == _MATCH_PARTIAL and partial is None:
            partial = (route, child)
    if partial is not None:
        route, child = partial
        return _template_of(route, {**scope, **child}, depth)
    return None


def _template_of(route: Any, scope: dict[str, Any], depth: int) -> str | None:
    children = getattr(route, "routes", None)
    own = str(getattr(route, "path", ""))
    if children is None:
        return own
    if not children:
        return own + "/{path}"
    rest = _match_routes(children, scope, depth + 1)
    return None if rest is None else own + rest
