"""Route templates of finished requests: read what the router left in the scope.

Starlette (1.x) and FastAPI store the matched route in ``scope["route"]`` and extend
``scope["root_path"]`` by each ``Mount`` they pass, on the very scope dict a middleware
handed down. So after the call the template costs a few dict reads: the mount part of
``root_path`` is raw text (``/tenants/acme``) and is mapped back to the mount templates
(``/tenants/{tenant}``) by a walk over mounts only, cached for parameter-free prefixes.
FastAPI (>= 0.16x) keeps routes of included routers with their local path and records
the full one in ``scope["fastapi"]["effective_route_context"]``. Re-matching every route
happens only when a layer in between copied the scope, so the route never came back.

Policy stays with the callers: what an unmatched request is called (``None`` here),
whether a request that a mounted router did not match is named after the mount
(``mount_misses``), and whether convertors are dropped (``formatted``:
``/items/{id:int}`` becomes ``/items/{id}``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from gennet_toolkit.types import Scope

__all__ = [
    "RouteResolver",
    "find_routes",
    "route_instance",
    "route_path",
    "route_template",
]

_CACHE_SIZE = 1024
_MATCH_NONE, _MATCH_PARTIAL, _MATCH_FULL = 0, 1, 2
# Starlette's own parameter syntax; path_format is the template with convertors dropped.
_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(:[a-zA-Z_][a-zA-Z0-9_]*)?}")


def find_routes(app: object) -> Sequence[Any]:
    """The routes of the first router down ``app``'s middleware chain (each ``.app``)."""
    for _ in range(32):
        routes = getattr(app, "routes", None)
        if isinstance(routes, list):
            return routes
        app = getattr(app, "app", None)
        if app is None:
            break
    return []


def route_template(
    scope: Scope,
    *,
    root_path: str | None = None,
    routes: Sequence[Any] | None = None,
    mount_misses: bool = False,
    formatted: bool = False,
) -> str | None:
    """The template of the route that served the finished ``scope``, ``None`` if none did.

    ``root_path`` is the one the caller saw before the app ran (default: Starlette's
    ``app_root_path``, else the scope's); the template is relative to it. ``routes``
    are the routes seen at that root (default: those of ``scope["router"]``). No cache
    and no re-matching: middleware should keep a :class:`RouteResolver`.
    """
    if root_path is None:
        root_path = scope.get("app_root_path", scope.get("root_path", ""))
    found = _from_scope(scope, root_path, mount_misses)
    if found is None:
        return None
    template, raw = found
    if raw:
        if routes is None:
            routes = find_routes(scope.get("router"))
        prefix = _walk_mounts(routes, route_path(scope.get("path", ""), root_path), raw)
        if prefix is None:
            return None
        template = prefix + template
    return _PARAM.sub(r"{\1}", template) if formatted else template


def route_instance(scope: Scope) -> str | None:
    """The matched route's full template (``/api/v1/genes/{symbol}``), or ``None``.

    A problem body's ``instance``: the server's ``root_path`` plus the mount and route
    templates, so it never carries what the client typed in the path. ``None`` when no
    route matched (yet): a 404 from the router, or middleware answering before routing.
    """
    if scope.get("route") is None and "endpoint" not in scope:
        return None
    base = scope.get("app_root_path", scope.get("root_path", ""))
    # FastAPI's router sets only "endpoint" for plain Starlette routes: the resolver
    # matches again against the outermost router's routes in that case.
    resolver = RouteResolver(scope.get("router"), formatted=True)
    template = resolver.resolve(scope, root_path=base)
    return None if template is None else base + template


class RouteResolver:
    """Turns a finished request's scope into its route template, or ``None``.

    Built once per middleware around ``app`` (whose routes are used for the mount walk
    and, when a layer copied the scope, for matching again); ``resolve`` is cheap.
    """

    __slots__ = ("_app", "_formatted", "_mount_misses", "_plain", "_prefixes", "_routes")

    def __init__(
        self, app: object = None, *, mount_misses: bool = False, formatted: bool = False
    ) -> None:
        self._app = app
        self._mount_misses = mount_misses
        self._formatted = formatted
        self._routes: Sequence[Any] | None = None
        # raw mount prefix -> template; only parameter-free prefixes land here, so the
        # size is bounded by the app's mounts, not by what clients send.
        self._prefixes: dict[str, str] = {}
        self._plain: dict[str, str] = {}

    def resolve(
        self, scope: Scope, path: str | None = None, root_path: str | None = None
    ) -> str | None:
        """Template of the route that served ``scope``; ``None`` when none did.

        ``path`` and ``root_path`` are the values the caller saw before the app ran
        (defaults: the scope's ``path``, and ``app_root_path`` or ``root_path``).
        """
        if path is None:
            path = scope.get("path", "")
        if root_path is None:
            root_path = scope.get("app_root_path", scope.get("root_path", ""))
        template: str | None
        if scope.get("route") is None:
            if "router" in scope and "endpoint" not in scope:
                return None  # a router ran and matched nothing (404)
            template = self._match(scope, path, root_path)
        elif (found := _from_scope(scope, root_path, self._mount_misses)) is None:
            return None
        elif found[1]:
            prefix = self._mount_prefix(scope, path, root_path, found[1])
            template = None if prefix is None else prefix + found[0]
        else:
            template = found[0]
        if template is None or not self._formatted:
            return template
        plain = self._plain.get(template)
        if plain is None:
            plain = _PARAM.sub(r"{\1}", template)
            if len(self._plain) < _CACHE_SIZE:
                self._plain[template] = plain
        return plain

    def _mount_prefix(self, scope: Scope, path: str, root_path: str, raw: str) -> str | None:
        cached = self._prefixes.get(raw)
        if cached is not None:
            return cached
        routes = self._app_routes() or find_routes(scope.get("router"))
        template = _walk_mounts(routes, route_path(path, root_path), raw)
        if template == raw and len(self._prefixes) < _CACHE_SIZE:
            self._prefixes[raw] = template
        return template

    def _app_routes(self) -> Sequence[Any]:
        if self._routes is None:
            self._routes = find_routes(self._app)
        return self._routes

    def _match(self, scope: Scope, path: str, root_path: str) -> str | None:
        routes = self._app_routes()
        if not routes:
            return None
        probe = {
            "type": scope.get("type", "http"),
            "path": path,
            "root_path": root_path,
            "method": scope.get("method", "GET"),
            "headers": scope.get("headers", []),
            "path_params": {},
        }
        return _match_routes(routes, probe, 0, self._mount_misses)


def _from_scope(scope: Scope, root_path: str, mount_misses: bool) -> tuple[str, str] | None:
    """The route's own template and the raw mount prefix (below ``root_path``) before it."""
    route = scope.get("route")
    if route is None:
        return None
    template: object
    children = getattr(route, "routes", None)
    if children is not None:
        # A Mount is the final route: a plain app (StaticFiles) serves everything below
        # its prefix, or a mounted router found nothing (a 404).
        if children and not mount_misses:
            return None
        template = "/{path}"
    else:
        template = _fastapi_template(scope, route) or getattr(route, "path", None)
    if not isinstance(template, str):
        return None
    new_root = scope.get("root_path", "")
    if new_root == root_path or not new_root.startswith(root_path):
        return template, ""
    return template, new_root[len(root_path) :]


def route_path(path: str, root_path: str) -> str:
    """``path`` below ``root_path``, as Starlette routes it (``path`` includes the root).

    Only a whole-segment prefix is stripped: root ``/api`` leaves ``/apix/1`` alone.
    """
    if not root_path or not path.startswith(root_path):
        return path
    if len(path) == len(root_path):
        return ""
    return path[len(root_path) :] if path[len(root_path)] == "/" else path


def _fastapi_template(scope: Scope, route: Any) -> str | None:
    # Recent FastAPI keeps included routers' routes with their local path and records the
    # full one in its effective route context; older versions copy routes with the full
    # path, so route.path is right there and this returns None.
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


def _match_routes(
    routes: Sequence[Any], scope: dict[str, Any], depth: int, mount_misses: bool
) -> str | None:
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
            return _template_of(route, {**scope, **child}, depth, mount_misses)
        if value == _MATCH_PARTIAL and partial is None:
            partial = (route, child)
    if partial is not None:
        route, child = partial
        return _template_of(route, {**scope, **child}, depth, mount_misses)
    return None


def _template_of(route: Any, scope: dict[str, Any], depth: int, mount_misses: bool) -> str | None:
    children = getattr(route, "routes", None)
    own = getattr(route, "path", "" if children is not None else None)  # Host: no path
    if not isinstance(own, str):
        return None  # e.g. FastAPI's included-router wrapper: its route is not visible
    if children is None:
        return own
    if not children:
        return own + "/{path}"
    rest = _match_routes(children, scope, depth + 1, mount_misses)
    if rest is None:
        return own + "/{path}" if mount_misses else None
    return own + rest
