"""``@rate_limited``: per-route limits for Starlette/FastAPI endpoints and plain functions."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ParamSpec, TypeVar, cast

from gennet_toolkit.exceptions import ConfigurationError, GenNetError, ServiceUnavailable
from gennet_toolkit.rate_limit._headers import (
    HEADER_MODES,
    HeaderMode,
    exceeded,
    header_pairs,
    problem_parts,
)
from gennet_toolkit.rate_limit._keys import by_ip
from gennet_toolkit.rate_limit._limiter import Decision, RateLimiter
from gennet_toolkit.rate_limit._limits import Limit, Rule
from gennet_toolkit.rate_limit._middleware import STATE_KEY

__all__ = ["rate_limited"]

P = ParamSpec("P")
R = TypeVar("R")

_CONNECTION_TYPES = ("Request", "HTTPConnection", "WebSocket")


def _connection_param(fn: Callable[..., Any]) -> tuple[int, str] | None:
    """(position, name) of a Starlette ``Request`` parameter, if ``fn`` is an endpoint."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    for i, param in enumerate(params):
        if param.kind not in (
            param.POSITIONAL_ONLY,
            param.POSITIONAL_OR_KEYWORD,
            param.KEYWORD_ONLY,
        ):
            continue
        ann = param.annotation
        ann_name = ann if isinstance(ann, str) else getattr(ann, "__name__", "")
        ann_name = str(ann_name).rsplit(".", 1)[-1]
        if ann_name in _CONNECTION_TYPES or (ann is param.empty and param.name == "request"):
            position = i if param.kind != param.KEYWORD_ONLY else -1
            return position, param.name
    return None


def _scope_of(conn: Any) -> dict[str, Any] | None:
    scope = getattr(conn, "scope", None)
    return scope if isinstance(scope, dict) and scope.get("type") in ("http", "websocket") else None


def rate_limited(
    limit: str | Limit | Sequence[str | Limit],
    *,
    key: Callable[..., str | None] | str | None = None,
    limiter: RateLimiter | None = None,
    name: str = "route",
    cost: int = 1,
    headers: HeaderMode = "draft",
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Limit calls of a function or endpoint: ``@rate_limited("10/second", key=by_user)``.

    On a Starlette/FastAPI endpoint (a parameter annotated ``Request`` or named
    ``request``), ``key`` receives the request's scope (default :data:`by_ip`) and a refusal
    returns a 429 problem+json response with ``Retry-After`` (an outage with
    ``fail_open=False``: 503). Allowed responses carry the rate-limit headers (merged with
    :class:`RateLimitMiddleware`'s when it is installed).

    On any other sync or async function, ``key`` receives the call's arguments
    (``key=lambda user_id, **_: user_id``) or is a constant string (the default: one
    quota for all calls); a refusal raises :class:`RateLimitExceeded`, an outage with
    ``fail_open=False`` raises ``ServiceUnavailable``. ``limiter`` defaults to a
    private in-memory :class:`RateLimiter`; sync functions use its blocking form.
    """
    rule = Rule(limit, key="-", name=name, cost=cost)
    if headers not in HEADER_MODES:
        raise ConfigurationError(
            f"headers must be 'draft', 'legacy', 'both' or None, got {headers!r}"
        )
    if key is not None and not isinstance(key, str) and not callable(key):
        raise ConfigurationError(f"key must be callable or a string, got {key!r}")

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        lim = limiter if limiter is not None else RateLimiter()
        namespace = f"fn:{fn.__module__}.{fn.__qualname__}:{rule.name}:"
        conn_param = _connection_param(fn)
        constant = key if isinstance(key, str) else ("*" if key is None else None)
        scope_key: Callable[[Any], str | None] = (
            by_ip if key is None else cast(Callable[[Any], "str | None"], key)
        )
        if isinstance(key, str):
            scope_key = lambda scope: key  # noqa: E731

        def find_scope(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
            if conn_param is None:
                return None
            position, pname = conn_param
            if pname in kwargs:
                return _scope_of(kwargs[pname])
            if 0 <= position < len(args):
                return _scope_of(args[position])
            return None

        def key_for(scope: dict[str, Any] | None, args: Any, kwargs: Any) -> str | None:
            if scope is not None:
                return scope_key(scope)
            if constant is not None:
                return constant
            return cast(Callable[..., "str | None"], key)(*args, **kwargs)

        def refused(
            exc: GenNetError, scope: dict[str, Any] | None, decision: Decision | None
        ) -> Any:
            extra = header_pairs([decision], headers) if decision is not None else []
            if scope is None:
                raise exc
            return _problem_response(exc, scope, extra)

        def finish(
            result: Any, scope: dict[str, Any] | None, decision: Decision, middleware: bool
        ) -> Any:
            if scope is not None and not middleware and headers is not None:
                target = getattr(result, "headers", None)
                if target is not None and hasattr(target, "__setitem__"):
                    for hname, hvalue in header_pairs([decision], headers):
                        target[hname] = hvalue
            return result

        def record(scope: dict[str, Any] | None, decision: Decision) -> bool:
            """Share the decision with RateLimitMiddleware; True if one is installed."""
            if scope is None:
                return False
            state = scope.setdefault("state", {})
            shared = state.get(STATE_KEY)
            if isinstance(shared, list):
                shared.append(decision)
                return True
            return False

        if inspect.iscoroutinefunction(fn):
            afn = cast(Callable[P, Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                scope = find_scope(args, kwargs)
                ident = key_for(scope, args, kwargs)
                if ident is None:
                    return await afn(*args, **kwargs)
                try:
                    decision = await lim.check(rule, namespace + str(ident))
                except ServiceUnavailable as exc:
                    return refused(exc, scope, None)
                if decision.degraded:
                    return await afn(*args, **kwargs)
                middleware = record(scope, decision)
                if not decision.allowed:
                    return refused(exceeded(decision), scope, decision)
                return finish(await afn(*args, **kwargs), scope, decision, middleware)

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(fn)
        def sync_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            scope = find_scope(args, kwargs)
            ident = key_for(scope, args, kwargs)
            if ident is None:
                return fn(*args, **kwargs)
            try:
                decision = lim.check_sync(rule, namespace + str(ident))
            except ServiceUnavailable as exc:
                return refused(exc, scope, None)
            if decision.degraded:
                return fn(*args, **kwargs)
            middleware = record(scope, decision)
            if not decision.allowed:
                return refused(exceeded(decision), scope, decision)
            return finish(fn(*args, **kwargs), scope, decision, middleware)

        return cast(Callable[P, R], sync_wrapper)

    return decorate


def _problem_response(
    exc: GenNetError, scope: dict[str, Any], extra: Sequence[tuple[str, str]]
) -> Any:
    # Only endpoints get here, so Starlette is installed.
    from starlette.responses import Response

    payload, raw = problem_parts(exc, scope, extra)
    response = Response(payload, status_code=exc.status_code, media_type="application/problem+json")
    # Response computed content-type and content-length already; add the rest.
    for hname, hvalue in raw:
        if hname not in (b"content-type", b"content-length"):
            response.raw_headers.append((hname, hvalue))
    return response
