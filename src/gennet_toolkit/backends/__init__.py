"""Shared state for the stateful modules (cache, rate_limit, circuit_breaker, websockets).

Pick a backend by URL::

    from gennet_toolkit.backends import from_url

    backend = from_url("memory://")                       # in-process, the default
    backend = from_url("redis://127.0.0.1:6379/0", prefix="app:")  # shared by processes

    await backend.set("k", b"v", ttl=60)                  # async form
    backend.sync.incr("hits", ttl=60)                     # sync form, same semantics

Importing this package imports no optional dependency; ``redis://`` needs the
``redis`` extra and says so when it is missing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from gennet_toolkit.backends.base import (
    Backend,
    Lock,
    LockNotAcquired,
    Message,
    RateLimitResult,
    Subscription,
    SyncBackend,
    SyncLock,
    SyncSubscription,
    Value,
)
from gennet_toolkit.backends.memory import MemoryBackend
from gennet_toolkit.exceptions import ConfigurationError

if TYPE_CHECKING:
    from gennet_toolkit.backends.redis import RedisBackend

__all__ = [
    "Backend",
    "Lock",
    "LockNotAcquired",
    "MemoryBackend",
    "Message",
    "RateLimitResult",
    "RedisBackend",
    "Subscription",
    "SyncBackend",
    "SyncLock",
    "SyncSubscription",
    "Value",
    "from_env",
    "from_url",
]

_MEMORY_OPTIONS = frozenset({"queue_size"})
_REDIS_OPTIONS = frozenset(
    {"max_connections", "pool_timeout", "socket_timeout", "socket_connect_timeout", "retries"}
)


def __getattr__(name: str) -> Any:
    # RedisBackend is importable from here without importing redis up front.
    if name == "RedisBackend":
        from gennet_toolkit.backends.redis import RedisBackend

        return RedisBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def from_url(
    url: str = "memory://",
    *,
    prefix: str = "",
    clock: Callable[[], float] | None = None,
    **options: Any,
) -> Backend:
    """The backend a URL names: ``memory://`` or ``redis://`` / ``rediss://``.

    ``prefix`` is prepended to every key and channel. ``clock`` (memory only) replaces
    ``time.monotonic``. ``options`` go to :class:`MemoryBackend` (``queue_size``) or
    :class:`RedisBackend` (``max_connections``, ``pool_timeout``, ``socket_timeout``,
    ``socket_connect_timeout``, ``retries``). An unknown scheme or option raises
    :class:`~gennet_toolkit.exceptions.ConfigurationError`.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        _check_options(options, _MEMORY_OPTIONS, scheme)
        return MemoryBackend(prefix=prefix, clock=clock, **options)
    if scheme in {"redis", "rediss"}:
        _check_options(options, _REDIS_OPTIONS, scheme)
        if clock is not None:
            raise ConfigurationError("clock= applies to memory:// only; Redis keeps its own time")
        from gennet_toolkit.backends.redis import RedisBackend

        return RedisBackend(url, prefix=prefix, **options)
    # Only the scheme: the rest of a URL may hold a password.
    raise ConfigurationError(
        f"unknown backend scheme {scheme!r}: use memory://, redis:// or rediss://"
    )


def from_env(prefix: str = "GENNET_", **options: Any) -> Backend:
    """The backend named by ``{prefix}BACKEND_URL`` (default ``memory://``).

    ``{prefix}BACKEND_PREFIX`` sets the key prefix. For Redis, the pool is sized from
    ``{prefix}BACKEND_MAX_CONNECTIONS``, ``…_POOL_TIMEOUT``, ``…_SOCKET_TIMEOUT``,
    ``…_SOCKET_CONNECT_TIMEOUT`` and ``…_RETRIES`` when set. ``options`` go to
    :func:`from_url` and win over the environment.
    """
    url = os.environ.get(prefix + "BACKEND_URL", "memory://")
    key_prefix = os.environ.get(prefix + "BACKEND_PREFIX", "")
    if urlsplit(url).scheme.lower() in {"redis", "rediss"}:
        for name in sorted(_REDIS_OPTIONS - set(options)):
            var = f"{prefix}BACKEND_{name.upper()}"
            raw = os.environ.get(var)
            if raw is None:
                continue
            cast = int if name in {"max_connections", "retries"} else float
            try:
                options[name] = cast(raw)
            except ValueError:
                raise ConfigurationError(f"{var} must be a number, got {raw!r}") from None
    return from_url(url, prefix=key_prefix, **options)


def _check_options(options: dict[str, Any], allowed: frozenset[str], scheme: str) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigurationError(
            f"unknown option(s) for {scheme}:// backends: {', '.join(unknown)}"
            f" (known: {', '.join(sorted(allowed))})"
        )
