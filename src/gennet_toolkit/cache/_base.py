"""State, failure policy and entry records shared by the async and sync cores."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote

from gennet_toolkit._cache_keys import shorten
from gennet_toolkit._singleflight import AsyncFlights, SyncFlights
from gennet_toolkit.backends import Backend
from gennet_toolkit.cache._common import (
    _UNSET,
    MISS,
    TTL,
    CacheStats,
    _Counters,
    _Policy,
    _ttl,
    logger,
)
from gennet_toolkit.cache._serializers import Serializer
from gennet_toolkit.exceptions import ConfigurationError, ServiceUnavailable

__all__: list[str] = []


class _CacheBase:
    """What both cores read: set up by :class:`~gennet_toolkit.cache.Cache`."""

    namespace: str
    fail_open: bool
    _backend: Backend
    _owns_backend: bool
    _serializer: Serializer
    _default_ttl: float | None
    _lock_ttl: float
    _lock_wait: float
    _early: float
    _tag_ttl: float | None
    _max_key: int
    _retry_interval: float
    _clock: Callable[[], float]
    _use_lock: bool
    _coalesce_reads: bool
    _prefix: str
    _kp: str
    _tp: str
    _lp: str
    _n: _Counters
    _aflights: AsyncFlights
    _tflights: SyncFlights
    _down: bool
    _down_until: float

    # ------------------------------------------------------------------ stats

    def stats(self) -> CacheStats:
        """A snapshot of the hit/miss/error counters."""
        n = self._n
        # Waits on another caller's load are counted by the single-flights themselves.
        coalesced = n.coalesced + self._aflights.coalesced + self._tflights.coalesced
        return CacheStats(n.hits, n.misses, coalesced, n.refreshes, n.loads, n.errors)

    def reset_stats(self) -> None:
        """Zero the counters."""
        self._n = _Counters()
        self._aflights.coalesced = self._tflights.coalesced = 0

    # ------------------------------------------------------------------ failure policy

    def _bypass(self) -> bool:
        # After a failure the backend is skipped for retry_interval: an unreachable host
        # would otherwise cost a connect timeout on every call.
        if self._down and time.monotonic() < self._down_until:
            if not self.fail_open:
                raise ServiceUnavailable("The cache is unavailable; retry later.")
            return True
        return False

    def _failed(self, exc: ServiceUnavailable) -> None:
        self._n.errors += 1
        self._down_until = time.monotonic() + self._retry_interval
        if not self._down:
            self._down = True
            logger.warning(
                "cache backend unavailable (%s); %s until it answers again",
                type(exc.__cause__ or exc).__name__,
                "calling functions uncached" if self.fail_open else "answering 503",
            )
        if not self.fail_open:
            raise ServiceUnavailable("The cache is unavailable; retry later.") from exc

    def _recovered(self) -> None:
        if self._down:
            self._down = False
            logger.warning("cache backend answers again; caching resumed")

    # ------------------------------------------------------------------ records

    def _ekey(self, key: str) -> str:
        return self._kp + key

    def _encode(
        self, value: Any, policy: _Policy, delta: float, tokens: dict[str, bytes]
    ) -> tuple[bytes, float | None]:
        payload = self._serializer.dumps(value)
        ttl = policy.ttl
        if ttl is not None and policy.jitter:
            ttl *= 1.0 - random.random() * policy.jitter
        exp = b"" if ttl is None else repr(self._clock() + ttl).encode()
        early = b"" if not policy.early else repr(policy.early).encode()
        tags = b",".join(quote(t, safe=":").encode() + b"=" + tok for t, tok in tokens.items())
        d = repr(round(delta, 6)).encode()
        return b"g1|" + exp + b"|" + d + b"|" + early + b"|" + tags + b"|" + payload, ttl

    def _read(
        self, raw: bytes | None, fetched: dict[str, bytes | None]
    ) -> tuple[Any, bool, list[str]]:
        """A lookup's answer from what it read: ``(value, refresh_now, record_tags_not_
        fetched)``; value MISS if absent, stale or unreadable (the read worked: the
        backend is up)."""
        if self._down:
            self._recovered()
        if raw is None:
            return MISS, False, []
        try:
            head, exp, d, early, tags, payload = raw.split(b"|", 5)
            if head != b"g1":
                raise ValueError("not a cache record")
            if tags:
                missing = []
                for item in tags.split(b","):
                    name_b, _, tok = item.partition(b"=")
                    name = unquote(name_b.decode())
                    if name not in fetched:
                        missing.append(name)
                    elif fetched[name] != tok:
                        return MISS, False, []
                if missing:
                    return MISS, False, missing
            value = self._serializer.loads(payload)
            refresh = False
            if exp and early:
                # XFetch (Vattani et al.): recompute before expiry with a probability that
                # grows as expiry nears and with how long the value took to compute.
                beta_delta = float(early) * float(d)
                if beta_delta > 0:
                    gap = -beta_delta * math.log(1.0 - random.random())
                    refresh = self._clock() + gap >= float(exp)
            return value, refresh, []
        except ValueError as exc:
            self._bad_record(exc)
            return MISS, False, []

    def _bad_record(self, exc: Exception) -> None:
        self._n.errors += 1
        logger.warning("unreadable cache entry treated as a miss (%s)", type(exc).__name__)

    # ------------------------------------------------------------------ arguments

    def _policy(
        self,
        ttl: TTL,
        jitter: float = 0.0,
        condition: Callable[[Any], bool] | None = None,
        early_refresh: float | None = None,
    ) -> _Policy:
        seconds = self._default_ttl if ttl is _UNSET else _ttl(ttl)
        if not 0 <= jitter < 1:
            raise ConfigurationError(f"jitter must be a fraction in [0, 1), got {jitter!r}")
        early = self._early if early_refresh is None else float(early_refresh)
        if not 0 <= early < math.inf:
            raise ConfigurationError("early_refresh must be >= 0")
        return _Policy(seconds, jitter, condition, early)

    def _check_key(self, key: str) -> str:
        if not key:
            raise ValueError("cache keys are non-empty strings")
        return shorten(key, self._max_key)
