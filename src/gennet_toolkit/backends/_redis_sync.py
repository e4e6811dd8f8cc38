"""The sync form of the Redis backend, on the blocking ``redis`` client (no event loop)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any, TypeVar

from gennet_toolkit.backends._redis_common import RedisOptions, translate
from gennet_toolkit.backends._redis_ops import Op, Ops, channel_name, script
from gennet_toolkit.backends.base import (
    Limits,
    Message,
    RateLimitResult,
    SyncBackend,
    SyncSubscription,
    Value,
)

__all__ = ()

T = TypeVar("T")

# Pub/sub reads wake at least this often, so a closed subscription is noticed.
_POLL = 1.0


class RedisSync(SyncBackend):
    """The sync form of :class:`~gennet_toolkit.backends.RedisBackend`."""

    def __init__(self, redis: ModuleType, url: str, prefix: str, options: RedisOptions) -> None:
        self.prefix = prefix
        self._redis = redis
        self._ops = Ops(prefix)
        self._options = options
        self._url = url
        self._guard = threading.Lock()
        self._client: Any = None
        self._registered: set[str] = set()

    def __repr__(self) -> str:
        return f"RedisSync(prefix={self.prefix!r})"

    def client(self) -> Any:
        """The ``redis.Redis`` client (created on first use; connects lazily)."""
        if self._client is None:
            with self._guard:
                if self._client is None:
                    pool = self._redis.BlockingConnectionPool.from_url(
                        self._url, **self._options.pool_kwargs(self._redis, asyncio=False)
                    )
                    self._client = self._redis.Redis(connection_pool=pool)
        return self._client

    def run(self, op: Op[T]) -> T:
        """Send ``op`` (registering its script once per client) and parse the reply."""
        client = self.client()
        try:
            if op.script is None:
                return op.parse(client.execute_command(*op.args))
            return op.parse(self._eval(client, op.script, op))
        except self._redis.RedisError as exc:
            raise translate(exc, self._redis) from exc

    def _eval(self, client: Any, name: str, op: Op[Any]) -> Any:
        source, sha = script(name)
        if name not in self._registered:
            client.execute_command("SCRIPT", "LOAD", source)
            self._registered.add(name)
        try:
            return client.execute_command("EVALSHA", sha, op.numkeys, *op.args)
        except self._redis.exceptions.NoScriptError:
            # The server restarted (or flushed its scripts): register again, once.
            client.execute_command("SCRIPT", "LOAD", source)
            return client.execute_command("EVALSHA", sha, op.numkeys, *op.args)

    def ping(self) -> None:
        """See :meth:`Backend.ping`."""
        self.run(self._ops.ping())

    def get(self, key: str) -> bytes | None:
        """See :meth:`Backend.get`."""
        return self.run(self._ops.get(key))

    def set(self, key: str, value: Value, *, ttl: float | None = None, nx: bool = False) -> bool:
        """See :meth:`Backend.set`."""
        return self.run(self._ops.set(key, value, ttl, nx))

    def delete(self, *keys: str) -> int:
        """See :meth:`Backend.delete`."""
        return self.run(self._ops.delete(keys)) if keys else 0

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """See :meth:`Backend.get_many`."""
        return self.run(self._ops.get_many(keys)) if keys else []

    def set_many(self, items: Mapping[str, Value], *, ttl: float | None = None) -> None:
        """See :meth:`Backend.set_many`."""
        if items:
            self.run(self._ops.set_many(items, ttl))

    def ttl(self, key: str) -> float | None:
        """See :meth:`Backend.ttl`."""
        return self.run(self._ops.ttl(key))

    def expire(self, key: str, ttl: float) -> bool:
        """See :meth:`Backend.expire`."""
        return self.run(self._ops.expire(key, ttl))

    def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        """See :meth:`Backend.incr`."""
        return self.run(self._ops.incr(key, amount, ttl))

    def compare_and_set(
        self, key: str, expected: Value | None, new: Value | None, *, ttl: float | None = None
    ) -> bool:
        """See :meth:`Backend.compare_and_set`."""
        return self.run(self._ops.compare_and_set(key, expected, new, ttl))

    def release_lock(self, key: str, token: str) -> bool:
        """See :meth:`Backend.release_lock`."""
        return self.run(self._ops.release_lock(key, token))

    def extend_lock(self, key: str, token: str, ttl: float) -> bool:
        """See :meth:`Backend.extend_lock`."""
        return self.run(self._ops.extend_lock(key, token, ttl))

    def publish(self, channel: str, message: Value) -> int:
        """See :meth:`Backend.publish`."""
        return self.run(self._ops.publish(channel, message))

    def subscribe(self, *channels: str) -> SyncSubscription:
        """See :meth:`Backend.subscribe`."""
        pubsub = self.client().pubsub()
        sub = _RedisSyncSubscription(pubsub, self._redis, len(self.prefix))
        try:
            pubsub.subscribe(*(self.prefix + c for c in channels))
            # Wait for the confirmations: only then are later publishes delivered.
            pending = len(set(channels))
            deadline = time.monotonic() + self._options.socket_timeout
            while pending and time.monotonic() < deadline:
                reply = pubsub.get_message(timeout=_POLL)
                if reply is not None and reply["type"] == "subscribe":
                    pending -= 1
        except self._redis.RedisError as exc:
            sub.close()
            raise translate(exc, self._redis) from exc
        return sub

    def delete_prefix(self, prefix: str) -> int:
        """See :meth:`Backend.delete_prefix`."""
        client = self.client()
        pattern = self._ops.scan_pattern(prefix)
        deleted, cursor = 0, 0
        try:
            while True:
                cursor, keys = client.scan(cursor=cursor, match=pattern, count=1000)
                if keys:
                    deleted += int(client.unlink(*keys))
                if int(cursor) == 0:
                    return deleted
        except self._redis.RedisError as exc:
            raise translate(exc, self._redis) from exc

    def fixed_window(self, key: str, limit: int, period: float, cost: int = 1) -> RateLimitResult:
        """See :meth:`Backend.fixed_window`."""
        return self.run(self._ops.rate("fixed_window", key, limit, period, cost))

    def sliding_window(self, key: str, limit: int, period: float, cost: int = 1) -> RateLimitResult:
        """See :meth:`Backend.sliding_window`."""
        return self.run(self._ops.rate("sliding_window", key, limit, period, cost))

    def gcra(self, key: str, limit: int, period: float, cost: int = 1) -> RateLimitResult:
        """See :meth:`Backend.gcra`."""
        return self.run(self._ops.rate("gcra", key, limit, period, cost))

    def rate_limits(
        self, algorithm: str, key: str, limits: Limits, cost: int = 1
    ) -> tuple[RateLimitResult, ...]:
        """See :meth:`Backend.rate_limits`."""
        return self.run(self._ops.rate_limits(algorithm, key, limits, cost))

    def close(self) -> None:
        """Close the sync pool's connections (a later call opens new ones)."""
        with self._guard:
            client, self._client = self._client, None
            self._registered = set()
        if client is not None:
            client.close()
            client.connection_pool.disconnect()


class _RedisSyncSubscription(SyncSubscription):
    def __init__(self, pubsub: Any, redis: ModuleType, strip: int) -> None:
        self._pubsub = pubsub
        self._redis = redis
        self._strip = strip
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def get(self, timeout: float | None = None) -> Message | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        may_reconnect = True
        while not self._closed:
            wait = _POLL if deadline is None else min(_POLL, deadline - time.monotonic())
            if wait <= 0:
                return None
            try:
                reply = self._pubsub.get_message(timeout=wait)
            except self._redis.RedisError as exc:
                if self.closed:  # by another task or thread while this one waited
                    return None
                if may_reconnect and self._reconnect(exc):
                    may_reconnect = False
                    continue
                raise translate(exc, self._redis) from exc
            may_reconnect = True
            if reply is not None and reply["type"] == "message":
                return Message(channel_name(reply["channel"], self._strip), reply["data"])
        return None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # the connection is gone already, which is what closing wants
        with contextlib.suppress(self._redis.RedisError):
            self._pubsub.close()

    def _reconnect(self, exc: BaseException) -> bool:
        """After a lost connection, connect again and resubscribe; ``False`` if Redis is down.

        A subscription only reads, and SUBSCRIBE is idempotent, so reconnecting can
        never apply anything twice (unlike re-sending a command).
        """
        conn = self._pubsub.connection
        if conn is None or not isinstance(exc, self._redis.ConnectionError):
            return False
        try:
            conn.disconnect()
            conn.connect()  # its connect callback subscribes to every channel again
        except self._redis.RedisError:
            return False
        return True
