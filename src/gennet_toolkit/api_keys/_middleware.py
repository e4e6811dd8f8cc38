"""``ApiKeyMiddleware`` (pure ASGI) and the ``require_scopes`` decorator."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar, cast

from gennet_toolkit._env import env_bool, env_list, env_str
from gennet_toolkit._problem import send_problem
from gennet_toolkit.api_keys._manager import ApiKeyManager
from gennet_toolkit.api_keys._model import (
    ANONYMOUS,
    AnonymousPrincipal,
    ApiKeyPrincipal,
    InsufficientScope,
    InvalidApiKey,
    scope_allows,
)
from gennet_toolkit.exceptions import ConfigurationError, GenNetError
from gennet_toolkit.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ApiKeyMiddleware", "current_principal", "require_scopes"]

P = ParamSpec("P")
R = TypeVar("R")

_principal_var: ContextVar[ApiKeyPrincipal | None] = ContextVar(
    "gennet_api_key_principal", default=None
)


def current_principal() -> ApiKeyPrincipal | None:
    """The principal of the request being served (set by :class:`ApiKeyMiddleware`)."""
    return _principal_var.get()


def _compile_exempt(paths: Iterable[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    exact: set[str] = set()
    prefixes: list[str] = []
    for p in paths:
        if not isinstance(p, str) or not p.startswith("/"):  # type: ignore[redundant-expr]
            raise ConfigurationError("exempt paths must start with '/'")
        if p.endswith("/*"):
            # "/health/*" covers "/health" and everything below it, segment-wise:
            # never "/health-admin" (the prefix-regex pitfall of other libraries).
            base = p[:-2].rstrip("/")
            exact.add(base or "/")
            prefixes.append(base + "/")
        elif "*" in p:
            raise ConfigurationError("'*' is only allowed as a final '/*' segment")
        else:
            exact.add(p)
    return frozenset(exact), tuple(prefixes)


def _suspicious(path: str) -> bool:
    # Dot segments and empty segments could make an exempt-looking path reach
    # another route after normalisation somewhere downstream: never exempt those.
    return "//" in path or "/./" in path or "/../" in path or path.endswith(("/.", "/.."))


class ApiKeyMiddleware:
    """Authenticate every HTTP (and websocket) request by API key.

    ``ApiKeyMiddleware(app, manager, *, header="X-API-Key", bearer=True,
    exempt_paths=(), allow_anonymous=False)``. The key comes from ``header`` or
    ``Authorization: Bearer <key>`` (never from the query string). A verified key
    puts an :class:`ApiKeyPrincipal` into ``scope["user"]`` and ``scope["auth"]``
    (and :func:`current_principal`). A missing or bad key gets 401 problem+json with
    ``WWW-Authenticate`` and one generic detail whatever the reason; a store outage
    gets 503. ``exempt_paths`` are exact paths, or ``/prefix/*`` for a subtree.
    With ``allow_anonymous`` a request *without* a key passes as
    :data:`ANONYMOUS` (a presented but bad key is still refused).
    :class:`InsufficientScope` and :class:`InvalidApiKey` raised by the app (see
    :func:`require_scopes`) are answered as 403/401 problem+json here.
    """

    def __init__(
        self,
        app: ASGIApp,
        manager: ApiKeyManager,
        *,
        header: str = "X-API-Key",
        bearer: bool = True,
        exempt_paths: Iterable[str] = (),
        allow_anonymous: bool = False,
    ) -> None:
        if not isinstance(manager, ApiKeyManager):
            raise ConfigurationError("ApiKeyMiddleware needs an ApiKeyManager")
        if not header or not header.isascii() or any(c in header for c in " :\r\n"):
            raise ConfigurationError("header must be a plain HTTP header name")
        self.app = app
        self.manager = manager
        self._header = header.lower().encode("latin-1")
        self._bearer = bearer
        self._exact, self._prefixes = _compile_exempt(exempt_paths)
        self._allow_anonymous = allow_anonymous

    @classmethod
    def from_env(
        cls, app: ASGIApp, manager: ApiKeyManager, prefix: str = "GENNET_", **overrides: Any
    ) -> ApiKeyMiddleware:
        """Options from ``{prefix}API_KEYS_HEADER``, ``_BEARER``, ``_EXEMPT_PATHS``
        (comma-separated) and ``_ALLOW_ANONYMOUS``."""
        p = prefix + "API_KEYS_"
        kw: dict[str, Any] = {}
        if (header := env_str(p + "HEADER")) is not None:
            kw["header"] = header
        if (bearer := env_bool(p + "BEARER")) is not None:
            kw["bearer"] = bearer
        if (paths := env_list(p + "EXEMPT_PATHS")) is not None:
            kw["exempt_paths"] = paths
        if (anon := env_bool(p + "ALLOW_ANONYMOUS")) is not None:
            kw["allow_anonymous"] = anon
        kw.update(overrides)
        return cls(app, manager, **kw)

    def _exempt(self, path: str) -> bool:
        if path in self._exact:
            return True
        return bool(self._prefixes) and path.startswith(self._prefixes) and not _suspicious(path)

    def _token(self, scope: Scope) -> str | None:
        found: list[str] = []
        for name, value in scope.get("headers", ()):
            if name == self._header:
                found.append(value.decode("latin-1").strip())
            elif self._bearer and name == b"authorization":
                text = value.decode("latin-1").strip()
                scheme, _, cred = text.partition(" ")
                if scheme.lower() == "bearer":
                    found.append(cred.strip())
        if not found:
            return None
        if len(set(found)) > 1:
            # Two different keys: refuse rather than guess which one was meant.
            raise InvalidApiKey("ambiguous", realm=self.manager.realm)
        return found[0] or None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or self._exempt(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        principal: ApiKeyPrincipal | AnonymousPrincipal
        try:
            token = self._token(scope)
            if token is None and self._allow_anonymous:
                principal = ANONYMOUS
            else:
                principal = await self.manager.verify(token)
        except GenNetError as exc:  # InvalidApiKey (401) or ServiceUnavailable (503)
            await self._refuse(exc, scope, send)
            return
        scope["user"] = principal
        scope["auth"] = principal
        reset = _principal_var.set(principal if principal.is_authenticated else None)  # type: ignore[arg-type]
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] in ("http.response.start", "websocket.accept"):
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except (InsufficientScope, InvalidApiKey) as exc:
            # Raised by require_scopes in an app with no handler for them; once the
            # response has started we cannot answer, so re-raise to the server.
            if started:
                raise
            await self._refuse(exc, scope, send)
        finally:
            _principal_var.reset(reset)

    async def _refuse(self, exc: GenNetError, scope: Scope, send: Send) -> None:
        if scope["type"] == "websocket":
            # Closing before accept makes the server answer the handshake with 403.
            await send({"type": "websocket.close", "code": 1008, "reason": ""})
            return
        await send_problem(exc, scope, send)


def _principal_from(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    for value in (*args, *kwargs.values()):
        conn_scope = getattr(value, "scope", None)
        if isinstance(conn_scope, dict) and "type" in conn_scope:
            return conn_scope.get("auth") or conn_scope.get("user")
    return _principal_var.get()


def _check(principal: Any, required: tuple[str, ...]) -> None:
    if principal is None or not getattr(principal, "is_authenticated", False):
        raise InvalidApiKey("missing")
    granted = getattr(principal, "scopes", ())
    missing = [r for r in required if not scope_allows(granted, r)]
    if missing:
        raise InsufficientScope(missing)


def require_scopes(*scopes: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Refuse the call unless the current key holds every scope (403 otherwise, 401
    without a key).

    Works on Starlette/FastAPI endpoints and on any sync or async function called
    while a request is served: the principal is taken from a ``Request``-like
    argument's ``scope["auth"]`` or from :func:`current_principal`::

        @require_scopes("grn:write")
        async def create_network(request: Request) -> Response: ...
    """
    if not scopes or not all(isinstance(s, str) and s for s in cast(tuple[object, ...], scopes)):
        raise ConfigurationError("require_scopes needs at least one non-empty scope")
    required = tuple(scopes)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(fn):
            async_fn = cast(Callable[P, Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                _check(_principal_from(args, kwargs), required)
                return await async_fn(*args, **kwargs)

            async_wrapper.required_scopes = required  # type: ignore[attr-defined]
            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            _check(_principal_from(args, kwargs), required)
            return fn(*args, **kwargs)

        wrapper.required_scopes = required  # type: ignore[attr-defined]
        return wrapper

    return decorate
