"""``@require_permission``: guard Starlette/FastAPI endpoints and plain functions."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast

from gennet_toolkit._problem import problem_parts
from gennet_toolkit.exceptions import ConfigurationError, Forbidden, GenNetError, Unauthorized
from gennet_toolkit.rbac._permission import Permission
from gennet_toolkit.rbac._policy import RBAC
from gennet_toolkit.rbac._principal import principal_from_scope, resolve_principal

__all__ = ["require_permission"]

P = ParamSpec("P")
R = TypeVar("R")

_CONNECTION_TYPES = ("Request", "HTTPConnection", "WebSocket")
_PRINCIPAL_PARAMS = ("principal", "user")


def _connection_param(sig: inspect.Signature | None) -> tuple[int, str] | None:
    """(position, name) of a Starlette ``Request`` parameter, if the function is an endpoint."""
    if sig is None:
        return None
    for i, param in enumerate(sig.parameters.values()):
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        ann = param.annotation
        ann_name = ann if isinstance(ann, str) else getattr(ann, "__name__", "")
        ann_name = str(ann_name).rsplit(".", 1)[-1]
        if ann_name in _CONNECTION_TYPES or (ann is param.empty and param.name == "request"):
            return (i if param.kind != param.KEYWORD_ONLY else -1), param.name
    return None


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], where: tuple[int, str]) -> Any:
    position, name = where
    if name in kwargs:
        return kwargs[name]
    if 0 <= position < len(args):
        return args[position]
    return None


def require_permission(
    *permissions: str | Permission,
    rbac: RBAC | None = None,
    principal: Callable[..., Any] | None = None,
    resource: Callable[..., Any] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Allow calls only to principals holding every one of ``permissions``.

        @require_permission("network:write", rbac=rbac)
        async def update_network(request: Request) -> Response: ...

        @require_permission("network:delete", rbac=rbac, resource=lambda net, **_: net)
        def delete_network(net: Network, *, principal: User) -> None: ...

    On a Starlette/FastAPI endpoint (a parameter annotated ``Request`` or named
    ``request``) the principal is ``principal(request)`` (default: the scope's
    ``state.principal``, ``state.user`` or ``user``) and a refusal *returns* a
    ``application/problem+json`` response: 401 with no authenticated principal, else 403
    (WebSocket endpoints raise instead). The body never names the permission.

    On any other sync or async function the principal is ``principal(*args, **kwargs)``
    or the argument named ``principal`` or ``user``; a refusal raises
    :class:`~gennet_toolkit.exceptions.Unauthorized` or
    :class:`~gennet_toolkit.exceptions.Forbidden`. ``resource`` (called like
    ``principal``; it may be async on async functions) gives the instance that
    conditional grants see. ``rbac`` defaults to ``RBAC()`` with the predefined roles.
    The wrapper keeps the signature and exposes ``required_permissions``.
    """
    if not permissions:
        raise ConfigurationError("require_permission() needs at least one permission")
    required = tuple(str(Permission.parse(p)) for p in permissions)
    if principal is not None and not callable(principal):
        raise ConfigurationError("require_permission(principal=...) must be callable")
    if resource is not None and not callable(resource):
        raise ConfigurationError("require_permission(resource=...) must be callable")
    engine = rbac if rbac is not None else RBAC()

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        try:
            sig: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            sig = None
        conn = _connection_param(sig)
        by_name: tuple[int, str] | None = None
        if conn is None and principal is None:
            params = list(sig.parameters.values()) if sig is not None else []
            for i, param in enumerate(params):
                if param.name in _PRINCIPAL_PARAMS:
                    by_name = (i if param.kind != param.KEYWORD_ONLY else -1), param.name
                    break
            if by_name is None:
                raise ConfigurationError(
                    f"@require_permission on {fn.__qualname__}: no Request parameter and no "
                    "'principal' or 'user' parameter; pass principal=callable(*args, **kwargs)"
                )

        def who(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
            """(the principal, the connection if an endpoint)."""
            if conn is not None:
                connection = _arg(args, kwargs, conn)
                if principal is not None:
                    return principal(connection), connection
                scope = getattr(connection, "scope", None)
                return (principal_from_scope(scope) if isinstance(scope, dict) else None), (
                    connection
                )
            if principal is not None:
                return principal(*args, **kwargs), None
            return _arg(args, kwargs, cast(tuple[int, str], by_name)), None

        def target(args: tuple[Any, ...], kwargs: dict[str, Any], connection: Any) -> Any:
            if resource is None:
                return None
            return resource(connection) if conn is not None else resource(*args, **kwargs)

        def refusal(subject: Any, obj: Any) -> GenNetError | None:
            if all(engine.is_allowed(subject, p, obj) for p in required):
                return None
            if resolve_principal(subject)[1] is None:
                return Unauthorized()
            return Forbidden()

        def refuse(exc: GenNetError, connection: Any) -> Any:
            scope = getattr(connection, "scope", None)
            if not isinstance(scope, dict) or scope.get("type") != "http":
                raise exc
            return _problem_response(exc, scope)

        if inspect.iscoroutinefunction(fn):
            afn = cast(Callable[P, Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                subject, connection = who(args, kwargs)
                obj = target(args, kwargs, connection)
                if inspect.isawaitable(obj):
                    obj = await obj
                exc = refusal(subject, obj)
                if exc is not None:
                    return refuse(exc, connection)
                return await afn(*args, **kwargs)

            async_wrapper.required_permissions = required  # type: ignore[attr-defined]
            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(fn)
        def sync_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            subject, connection = who(args, kwargs)
            exc = refusal(subject, target(args, kwargs, connection))
            if exc is not None:
                return refuse(exc, connection)
            return fn(*args, **kwargs)

        sync_wrapper.required_permissions = required  # type: ignore[attr-defined]
        return cast(Callable[P, R], sync_wrapper)

    return decorate


def _problem_response(exc: GenNetError, scope: dict[str, Any]) -> Any:
    # Only HTTP endpoints get here, so Starlette is installed.
    from starlette.responses import Response

    payload, raw = problem_parts(exc, scope)
    response = Response(payload, status_code=exc.status_code, media_type="application/problem+json")
    for hname, hvalue in raw:
        if hname not in (b"content-type", b"content-length"):
            response.raw_headers.append((hname, hvalue))
    return response
