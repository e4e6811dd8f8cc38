"""Shared pieces of the cache: sentinels, TTL parsing, stats, call and policy records."""

from __future__ import annotations

import datetime as dt
import logging
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gennet_toolkit.exceptions import ConfigurationError

__all__ = ["MISS", "TTL", "CacheStats"]

logger = logging.getLogger("gennet_toolkit.cache")


class _Miss:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISS"

    def __bool__(self) -> bool:
        return False


#: Returned by ``get(key, default=MISS)`` for a missing entry; ``None`` is a value.
MISS: Any = _Miss()


class _Unset:
    __slots__ = ()


_UNSET: Any = _Unset()

TTL = float | int | str | dt.timedelta | None

_TTL_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def _ttl(spec: TTL, what: str = "ttl") -> float | None:
    """Seconds from ``60``, ``"10m"``, ``"1h"``, ``timedelta``; ``None`` means no expiry."""
    if spec is None:
        return None
    if isinstance(spec, dt.timedelta):
        seconds = spec.total_seconds()
    elif isinstance(spec, str):
        m = _TTL_RE.match(spec)
        if m is None:
            raise ConfigurationError(f"{what} {spec!r} is not a duration like 30, '30s', '10m'")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    elif isinstance(spec, bool) or not isinstance(spec, int | float):
        raise ConfigurationError(f"{what} must be seconds, a duration string or a timedelta")
    else:
        seconds = float(spec)
    if not 0 < seconds < math.inf:
        raise ConfigurationError(f"{what} must be positive and finite, got {spec!r}")
    return seconds


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters since the cache was made (or :meth:`Cache.reset_stats`).

    ``hits``/``misses`` count lookups; ``coalesced`` callers that waited for another's
    load instead of calling the function; ``refreshes`` early recomputations before
    expiry; ``loads`` function calls whose result was offered to the cache; ``errors``
    backend failures and unreadable entries. Counts are approximate under threads.
    """

    hits: int
    misses: int
    coalesced: int
    refreshes: int
    loads: int
    errors: int

    @property
    def hit_ratio(self) -> float:
        """``hits / (hits + misses)``; 0.0 before the first lookup."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class _Counters:
    __slots__ = ("coalesced", "errors", "hits", "loads", "misses", "refreshes")

    def __init__(self) -> None:
        self.hits = self.misses = self.coalesced = self.refreshes = self.loads = self.errors = 0


def _backoff(attempt: int) -> float:
    # Growing, jittered polls: waiters in several processes do not hit Redis in lockstep.
    return min(0.05, 0.002 * 2.0**attempt) * (0.5 + random.random() / 2)


#: A deferred call: the function and its arguments (no functools.partial per hit).
_Call = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class _Policy:
    ttl: float | None
    jitter: float
    condition: Callable[[Any], bool] | None
    early: float


def _exact(pattern: str) -> str:
    if any(c in pattern for c in "*?["):
        raise ValueError("invalidate() takes an exact key or a prefix ending in '*'")
    return pattern


def _pattern_prefix(pattern: str) -> str:
    return _exact(pattern[:-1])
