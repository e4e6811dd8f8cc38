"""Connection settings and error translation shared by the async and sync Redis clients."""

from __future__ import annotations

import select
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any

from gennet_toolkit._optional import require
from gennet_toolkit.exceptions import ConfigurationError, ServiceUnavailable

__all__ = ()

#: The client-facing text of every Redis outage: no host, port or driver message.
UNAVAILABLE = "The shared state store is unavailable; retry later."


def load_redis() -> ModuleType:
    """The ``redis`` package, or an ImportError naming the ``redis`` extra."""
    require("redis.asyncio", extra="redis", feature="gennet_toolkit.backends")
    return require("redis", extra="redis", feature="gennet_toolkit.backends")


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """Pool and socket settings of :class:`~gennet_toolkit.backends.RedisBackend`.

    ``max_connections`` caps each pool; a burst beyond it waits up to ``pool_timeout``
    seconds for a free connection instead of failing. Pooled connections are checked
    when taken from the pool, so a restarted Redis costs no failed call. ``retries``
    (default 0) re-sends a command on a fresh connection after a connection error: a
    reset after Redis ran the command would apply it twice, so enable it only if your
    operations tolerate that. Timeouts are never retried.
    """

    max_connections: int = 50
    pool_timeout: float = 5.0
    socket_timeout: float = 5.0
    socket_connect_timeout: float = 2.0
    retries: int = 0

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ConfigurationError("max_connections must be >= 1")
        if self.retries < 0:
            raise ConfigurationError("retries must be >= 0")
        for name in ("pool_timeout", "socket_timeout", "socket_connect_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds")

    def pool_kwargs(self, redis: ModuleType, *, asyncio: bool) -> dict[str, Any]:
        """Keyword arguments for ``BlockingConnectionPool.from_url``."""
        retry_mod = redis.asyncio.retry if asyncio else redis.retry
        retry = retry_mod.Retry(
            redis.backoff.NoBackoff(),
            self.retries,
            supported_errors=(redis.exceptions.ConnectionError,),
        )
        return {
            "max_connections": self.max_connections,
            "timeout": self.pool_timeout,
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.socket_connect_timeout,
            "retry": retry,
        }


# Poll bits meaning "the peer closed or reset this socket". POLLRDHUP (Linux) reports
# the peer's FIN even while unread data is pending, and never fires for mere data (a TLS
# session ticket, a RESP3 push); where it does not exist, any readiness on an idle
# pooled connection counts, which at worst costs one needless reconnect.
_POLLRDHUP = getattr(select, "POLLRDHUP", 0)
_CLOSED = (
    _POLLRDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL if hasattr(select, "poll") else 0
)


def peer_closed(connection: Any) -> bool:
    """Whether the server already closed an idle, connected ``redis.asyncio`` connection.

    redis-py's pool check (``can_read()``) only looks at what the event loop has
    already read into the connection's ``StreamReader``. When the loop has not run
    since Redis died (a busy loop, or no await in between), the server's FIN still
    sits in the kernel, the check passes, and the command is written into a dead
    socket: its failure is only seen on the read, after the send, where it cannot be
    told apart from a command that Redis did run, so it can never be retried safely.
    Asking the kernel (one ``poll`` with no timeout) catches the closed socket before
    anything is sent. Unknown connection shapes answer ``False``: redis-py's own check
    still applies.
    """
    transport = getattr(getattr(connection, "_writer", None), "transport", None)
    if transport is None:
        return False
    if transport.is_closing():
        return True
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    fd = sock.fileno()
    if fd < 0:
        return True
    if _CLOSED:
        poller = select.poll()
        poller.register(fd, select.POLLIN | _CLOSED)
        events = poller.poll(0)
        mask = _CLOSED if _POLLRDHUP else _CLOSED | select.POLLIN
        return any(revents & mask for _, revents in events)
    readable, _, _ = select.select([fd], [], [], 0)
    return bool(readable)


@cache
def checked_async_pool(base: Any) -> Any:
    """``base`` (redis.asyncio's BlockingConnectionPool) that drops dead idle connections.

    Before redis-py's own checks, a pooled connection whose server has gone (see
    :func:`peer_closed`) is disconnected, so the pool connects afresh and the first
    command after a Redis restart succeeds. Nothing is ever re-sent.
    """

    async def ensure_connection(self: Any, connection: Any) -> None:
        if connection.is_connected and peer_closed(connection):
            await connection.disconnect()
        await base.ensure_connection(self, connection)

    return type(
        "CheckedBlockingConnectionPool",
        (base,),
        {"ensure_connection": ensure_connection, "__doc__": checked_async_pool.__doc__},
    )


def translate(exc: BaseException, redis: ModuleType) -> Exception:
    """The toolkit error for a redis-py error (the caller raises it ``from exc``).

    A value of the wrong kind at a key is the caller's :class:`ValueError`; anything
    else (refused, timed out, out of memory, read-only replica) means the store cannot
    serve right now: :class:`ServiceUnavailable`.
    """
    if isinstance(exc, redis.exceptions.ResponseError):
        text = str(exc)
        if text.startswith("WRONGTYPE") or "not an integer" in text:
            return ValueError("the value at this key does not fit this operation")
    return ServiceUnavailable(UNAVAILABLE, retry_after=1)
