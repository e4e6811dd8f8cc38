"""The Redis backend: state shared by every process and host that uses the same Redis.

Async operations use ``redis.asyncio``; ``backend.sync`` uses the blocking ``redis``
client, so sync code never runs an event loop. Every read-modify-write is one round
trip (a command or a Lua script read with ``importlib.resources`` and registered once
per client). Pools are ``BlockingConnectionPool``: a burst waits for a free connection
for a bounded time. Connection failures raise
:class:`~gennet_toolkit.exceptions.ServiceUnavailable`, and the backend recovers by
itself when Redis comes back (fresh connections, scripts registered again).

``redis.asyncio`` connections belong to the event loop that opened them, so the
backend keeps one pool per running loop; call ``await backend.aclose()`` on each loop
before it ends (for example in the app's lifespan shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from gennet_toolkit.backends._redis_common import (
    RedisOptions,
    checked_async_pool,
    load_redis,
    translate,
)
from gennet_toolkit.backends._redis_ops import Op, Ops, channel_name, script
from gennet_toolkit.backends._redis_sync import RedisSync
from gennet_toolkit.backends.base import (
    Backend,
    Limits,
    Message,
    RateLimitResult,
    Subscription,
    Value,
)

__all__ = ["RedisBackend", "RedisOptions"]

T = TypeVar("T")

_POLL = 1.0


class _LoopClient:
    """One loop's async client and the scripts registered through it."""

    __slots__ = ("client", "registered")

    def __init__(self, client: Any) -> None:
        self.client = client
        self.registered: set[str] = set()


class RedisBackend(Backend):
    """:class:`Backend` on Redis (``redis://`` or ``rediss://``), shared across processes.

    ``RedisBackend("redis://127.0.0.1:6379/0", prefix="app:", max_connections=50)``;
    the keyword options are those of :class:`RedisOptions`. Nothing connects until the
    first operation.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "",
        max_connections: int = 50,
        pool_timeout: float = 5.0,
        socket_timeout: float = 5.0,
        socket_connect_timeout: float = 2.0,
        retries: int = 0,
    ) -> None:
        self._redis = load_redis()
        self.prefix = prefix
        self.options = RedisOptions(
            max_connections=max_connections,
            pool_timeout=pool_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            retries=retries,
        )
        self._url = url
        self._ops = Ops(prefix)
        self._sync = RedisSync(self._redis, url, prefix, self.options)
        self._guard = threading.Lock()
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClient] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        # The URL may carry a password: never print it.
        return f"RedisBackend(prefix={self.prefix!r})"

    @property
    def sync(self) -> RedisSync:
        """The blocking form, on its own sync connection pool."""
        return self._sync

    def _loop_client(self) -> _LoopClient:
        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is None:
            with self._guard:
                entry = self._clients.get(loop)
                if entry is None:
                    # Forget pools of loops that have ended: nothing can use them again.
                    for dead in [lp for lp in self._clients if lp.is_closed()]:
                        del self._clients[dead]
                    aio = self._redis.asyncio
                    pool_class = checked_async_pool(aio.BlockingConnectionPool)
                    pool = pool_class.from_url(
                        self._url, **self.options.pool_kwargs(self._redis, asyncio=True)
                    )
                    entry = self._clients[loop] = _LoopClient(aio.Redis(connection_pool=pool))
        return entry

    def client(self) -> Any:
        """The running loop's ``redis.asyncio.Redis`` client (created on first use)."""
        return self._loop_client().client

    async def run(self, op: Op[T]) -> T:
        """Send ``op`` (registering its script once per client) and parse the reply."""
        entry = self._loop_client()
        try:
            if op.script is None:
                return op.parse(await entry.client.execute_command(*op.args))
            return op.parse(await self._eval(entry, op.script, op))
        except self._redis.RedisError as exc:
            raise translate(exc, self._redis) from exc

    async def _eval(self, entry: _LoopClient, name: str, op: Op[Any]) -> Any:
        source, sha = script(name)
        client = entry.client
        if name not in entry.registered:
            await client.execute_command("SCRIPT", "LOAD", source)
            entry.registered.add(name)
        try:
            return await client.execute_command("EVALSHA", sha, op.numkeys, *op.args)
        except self._redis.exceptions.NoScriptError:
            # The server restarted (or flushed its scripts): register again, once.
            await client.execute_command("SCRIPT", "LOAD", source)
            return await client.execute_command("EVALSHA", sha, op.numkeys, *op.args)

    async def ping(self) -> None:
        """See :meth:`Backend.ping`."""
        await self.run(self._ops.ping())

    async def get(self, key: str) -> bytes | None:
        """See :meth:`Backend.get`."""
        return await self.run(self._ops.get(key))

    async def set(
        self, key: str, value: Value, *, ttl: float | None = None, nx: bool = False
    ) -> bool:
        """See :meth:`Backend.set`."""
        return await self.run(self._ops.set(key, value, ttl, nx))

    async def delete(self, *keys: str) -> int:
        """See :meth:`Backend.delete`."""
        return await self.run(self._ops.delete(keys)) if keys else 0

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """See :meth:`Backend.get_many`."""
        return await self.run(self._ops.get_many(keys)) if keys else []

    async def set_many(self, items: Mapping[str, Value], *, ttl: float | None = None) -> None:
        """See :meth:`Backend.set_many`."""
        if items:
            await self.run(self._ops.set_many(items, ttl))

    async def ttl(self, key: str) -> float | None:
        """See :meth:`Backend.ttl`."""
        return await self.run(self._ops.ttl(key))

    async def expire(self, key: str, ttl: float) -> bool:
        """See :meth:`Backend.expire`."""
        return await self.run(self._ops.expire(key, ttl))

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        """See :meth:`Backend.incr`."""
        return await self.run(self._ops.incr(key, amount, ttl))

    async def compare_and_set(
        self, key: str, expected: Value | None, new: Value | None, *, ttl: float | None = None
    ) -> bool:
        """See :meth:`Backend.compare_and_set`."""
        return await self.run(self._ops.compare_and_set(key, expected, new, ttl))

    async def release_lock(self, key: str, token: str) -> bool:
        """See :meth:`Backend.release_lock`."""
        return await self.run(self._ops.release_lock(key, token))

    async def extend_lock(self, key: str, token: str, ttl: float) -> bool:
        """See :meth:`Backend.extend_lock`."""
        return await self.run(self._ops.extend_lock(key, token, ttl))

    async def publish(self, channel: str, message: Value) -> int:
        """See :meth:`Backend.publish`."""
        return await self.run(self._ops.publish(channel, message))

    async def subscribe(self, *channels: str) -> Subscription:
        """See :meth:`Backend.subscribe`."""
        pubsub = self.client().pubsub()
        sub = _RedisSubscription(pubsub, self._redis, len(self.prefix))
        try:
            await pubsub.subscribe(*(self.prefix + c for c in channels))
            # Wait for the confirmations: only then are later publishes delivered.
            pending = len(set(channels))
            deadline = time.monotonic() + self.options.socket_timeout
            while pending and time.monotonic() < deadline:
                reply = await pubsub.get_message(timeout=_POLL)
                if reply is not None and reply["type"] == "subscribe":
                    pending -= 1
        except self._redis.RedisError as exc:
            await sub.aclose()
            raise translate(exc, self._redis) from exc
        return sub

    async def delete_prefix(self, prefix: str) -> int:
        """See :meth:`Backend.delete_prefix`."""
        client = self.client()
        pattern = self._ops.scan_pattern(prefix)
        deleted, cursor = 0, 0
        try:
            while True:
                cursor, keys = await client.scan(cursor=cursor, match=pattern, count=1000)
                if keys:
                    deleted += int(await client.unlink(*keys))
                if int(cursor) == 0:
                    return deleted
        except self._redis.RedisError as exc:
            raise translate(exc, self._redis) from exc

    async def fixed_window(
        self, key: str, limit: int, period: float, cost: int = 1
    ) -> RateLimitResult:
        """See :meth:`Backend.fixed_window`."""
        return await self.run(self._ops.rate("fixed_window", key, limit, period, cost))

    async def sliding_window(
        self, key: str, limit: int, period: float, cost: int = 1
    ) -> RateLimitResult:
        """See :meth:`Backend.sliding_window`."""
        return await self.run(self._ops.rate("sliding_window", key, limit, period, cost))

    async def gcra(self, key: str, limit: int, period: float, cost: int = 1) -> RateLimitResult:
        """See :meth:`Backend.gcra`."""
        return await self.run(self._ops.rate("gcra", key, limit, period, cost))

    async def rate_limits(
        self, algorithm: str, key: str, limits: Limits, cost: int = 1
    ) -> tuple[RateLimitResult, ...]:
        """See :meth:`Backend.rate_limits`."""
        return await self.run(self._ops.rate_limits(algorithm, key, limits, cost))

    async def aclose(self) -> None:
        """Close the running loop's pool and the sync pool (later calls reconnect)."""
        loop = asyncio.get_running_loop()
        with self._guard:
            entry = self._clients.pop(loop, None)
        if entry is not None:
            await entry.client.aclose()
            await entry.client.connection_pool.disconnect()
        self._sync.close()

    def close(self) -> None:
        """Close the sync pool; async pools need :meth:`aclose` on their own loop."""
        self._sync.close()


class _RedisSubscription(Subscription):
    def __init__(self, pubsub: Any, redis: Any, strip: int) -> None:
        self._pubsub = pubsub
        self._redis = redis
        self._strip = strip
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    async def get(self, timeout: float | None = None) -> Message | None:  # noqa: ASYNC109
        deadline = None if timeout is None else time.monotonic() + timeout
        may_reconnect = True
        while not self._closed:
            wait = _POLL if deadline is None else min(_POLL, deadline - time.monotonic())
            if wait <= 0:
                return None
            try:
                reply = await self._pubsub.get_message(timeout=wait)
            except self._redis.RedisError as exc:
                if self.closed:  # by another task or thread while this one waited
                    return None
                if may_reconnect and await self._reconnect(exc):
                    may_reconnect = False
                    continue
                raise translate(exc, self._redis) from exc
            may_reconnect = True
            if reply is not None and reply["type"] == "message":
                return Message(channel_name(reply["channel"], self._strip), reply["data"])
        return None

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        # the connection is gone already, which is what closing wants
        with contextlib.suppress(self._redis.RedisError):
            await self._pubsub.aclose()

    async def _reconnect(self, exc: BaseException) -> bool:
        """After a lost connection, connect again and resubscribe; ``False`` if Redis is down.

        A subscription only reads, and SUBSCRIBE is idempotent, so reconnecting can
        never apply anything twice (unlike re-sending a command).
        """
        conn = self._pubsub.connection
        if conn is None or not isinstance(exc, self._redis.ConnectionError):
            return False
        try:
            await conn.disconnect()
            await conn.connect()  # its connect callback subscribes to every channel again
        except self._redis.RedisError:
            return False
        return True
