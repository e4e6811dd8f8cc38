"""The load algorithm, written once as a sans-IO plan.

A plan is a generator yielding small operations (read, write, lock, sleep, call the
loader) and receiving their results; ``Cache._arun`` executes them with ``await``,
``_SyncCore._run`` blocking. A cache hit never comes here: only misses, refreshes and
``set`` do, where a backend round trip dwarfs the generator's cost.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from gennet_toolkit.cache._base import _CacheBase
from gennet_toolkit.cache._common import MISS, _backoff, _Call, _Miss, _Policy, logger
from gennet_toolkit.exceptions import ServiceUnavailable

__all__: list[str] = []

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Get:
    key: str


@dataclass(frozen=True, slots=True)
class _GetMany:
    keys: list[str]


@dataclass(frozen=True, slots=True)
class _Put:
    key: str
    value: bytes
    ttl: float | None
    nx: bool = False


@dataclass(frozen=True, slots=True)
class _Lookup:
    ekey: str
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Lock:
    name: str
    ttl: float


@dataclass(frozen=True, slots=True)
class _Acquire:
    lock: Any


@dataclass(frozen=True, slots=True)
class _Release:
    lock: Any


@dataclass(frozen=True, slots=True)
class _Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class _Load:
    call: _Call


_Op = _Get | _GetMany | _Put | _Lookup | _Lock | _Acquire | _Release | _Sleep | _Load
Plan = Generator[_Op, Any, T]


class _Planner(_CacheBase):
    def _tokens_plan(self, tags: tuple[str, ...]) -> Plan[dict[str, bytes] | None]:
        # Read before the load: an invalidation during the load then makes the entry
        # stale at once (its recorded token no longer matches).
        if not tags:
            return {}
        keys = [self._tp + t for t in tags]
        current = yield _GetMany(keys)
        out: dict[str, bytes] = {}
        for tag, key, found in zip(tags, keys, current, strict=True):
            tok = found
            if tok is None:
                new = secrets.token_hex(8).encode()
                if (yield _Put(key, new, self._tag_ttl, nx=True)):
                    tok = new
                else:
                    tok = yield _Get(key)
                    if tok is None:
                        return None
            out[tag] = tok
        return out

    def _write_plan(
        self, ekey: str, value: Any, policy: _Policy, delta: float, tokens: dict[str, bytes] | None
    ) -> Plan[bool]:
        record, ttl = self._encode(value, policy, delta, tokens or {})
        if tokens is None or self._bypass():
            return False
        try:
            written: bool = yield _Put(ekey, record, ttl)
            return written
        except ServiceUnavailable as exc:
            self._failed(exc)
            return False

    def _set_plan(
        self, ekey: str, value: Any, policy: _Policy, tags: tuple[str, ...]
    ) -> Plan[bool]:
        if self._bypass():
            self._encode(value, policy, 0.0, {})  # still refuse unsafe values
            return False
        try:
            tokens = yield from self._tokens_plan(tags)
        except ServiceUnavailable as exc:
            self._failed(exc)
            tokens = None
        return (yield from self._write_plan(ekey, value, policy, 0.0, tokens))

    def _load_plan(
        self, ekey: str, tags: tuple[str, ...], call: _Call, policy: _Policy, stale: Any
    ) -> Plan[Any]:
        lock = None
        tokens: dict[str, bytes] | None = None
        try:
            if not self._bypass():
                try:
                    tokens = yield from self._tokens_plan(tags)
                    if self._use_lock:
                        lock = yield _Lock(self._lp + ekey, self._lock_ttl)
                        if not (yield _Acquire(lock)):
                            if type(stale) is not _Miss:
                                lock = None
                                return stale  # another process refreshes; serve stale
                            found, lock = yield from self._wait_plan(ekey, tags, lock)
                            if type(found) is not _Miss:
                                self._n.coalesced += 1
                                return found
                            if lock is not None:
                                tokens = yield from self._tokens_plan(tags)
                        if lock is not None and type(stale) is _Miss:
                            found, _ = yield _Lookup(ekey, tags)
                            if type(found) is not _Miss:
                                self._n.coalesced += 1
                                return found
                except ServiceUnavailable as exc:
                    self._failed(exc)
                    tokens = None
            t0 = time.perf_counter()
            result = yield _Load(call)
            delta = time.perf_counter() - t0
            self._n.loads += 1
            if policy.condition is None or policy.condition(result):
                yield from self._write_plan(ekey, result, policy, delta, tokens)
            return result
        finally:
            if lock is not None:
                with contextlib.suppress(ServiceUnavailable):  # it expires by itself
                    yield _Release(lock)

    def _wait_plan(self, ekey: str, tags: tuple[str, ...], lock: Any) -> Plan[tuple[Any, Any]]:
        """Wait (bounded) for the process holding the lock; ``(value, lock-if-taken)``."""
        deadline = time.monotonic() + self._lock_wait
        attempt = 0
        while (left := deadline - time.monotonic()) > 0:
            yield _Sleep(min(left, _backoff(attempt)))
            attempt += 1
            found, _ = yield _Lookup(ekey, tags)
            if type(found) is not _Miss or self._down:
                return found, None
            if (yield _Acquire(lock)):
                return MISS, lock
        logger.info("cache lock wait ran out after %.1fs; loading without it", self._lock_wait)
        return MISS, None
