"""The limiter: runs a rule's limits against a backend, with the outage policy."""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Literal, NamedTuple

from gennet_toolkit._env import env_bool, env_str
from gennet_toolkit.backends import Backend, MemoryBackend, RateLimitResult, from_url
from gennet_toolkit.exceptions import ConfigurationError, ServiceUnavailable
from gennet_toolkit.rate_limit._limits import Limit, Rule, parse_limits

__all__ = ["Decision", "RateLimiter", "Strategy"]

Strategy = Literal["sliding_window", "fixed_window", "token_bucket"]

# token_bucket is GCRA: a bucket of `limit` tokens refilled evenly over the period.
_ALGORITHMS = {
    "sliding_window": "sliding_window",
    "fixed_window": "fixed_window",
    "token_bucket": "gcra",
    "gcra": "gcra",
}

# Keys go inside the backend's {hash tag}: braces, spaces and control bytes must not.
_SAFE_KEY = re.compile(r"[\x21-\x7a|~]{1,160}")

logger = logging.getLogger("gennet_toolkit.rate_limit")

Pairs = tuple[tuple[int, float], ...]
AsyncOp = Callable[[str, str, Pairs, int], Awaitable[tuple[RateLimitResult, ...]]]
SyncOp = Callable[[str, str, Pairs, int], tuple[RateLimitResult, ...]]


class Decision(NamedTuple):
    """The outcome of one rule for one request.

    ``results`` pairs each limit of the rule with its policy name and backend result,
    shortest window first. All of them were checked in one atomic call: when one
    refuses, nothing was spent on any, and the others report the quota they still have.
    ``degraded`` means the backend was down and ``fail_open`` let the request through
    unchecked (then ``results`` is empty). A named tuple: one is built per check, and
    it is the cheapest immutable record to build.
    """

    allowed: bool
    results: tuple[tuple[str, Limit, RateLimitResult], ...] = ()
    degraded: bool = False

    @property
    def retry_after(self) -> float:
        """Seconds until a refused request could pass (0 when allowed)."""
        return max((r.retry_after for _, _, r in self.results if not r.allowed), default=0.0)

    @property
    def violated(self) -> list[str]:
        """Names of the policies that refused the request."""
        return [name for name, _, r in self.results if not r.allowed]


_ALLOWED_UNCHECKED = Decision(True, (), degraded=True)


@lru_cache(maxsize=4096)
def storage_key(key: str) -> str:
    """``key`` as it may enter a store: short, printable, no hash-tag braces.

    Cached (bounded): the same clients come back, and the check (or the hash of an
    unsafe key) then costs one lookup.
    """
    if _SAFE_KEY.fullmatch(key):
        return key
    return "h:" + hashlib.blake2b(key.encode("utf-8", "replace"), digest_size=16).hexdigest()


class RateLimiter:
    """Counts requests against limits in a shared backend.

    ``RateLimiter(backend="memory://", strategy="sliding_window", fail_open=True)``.
    ``backend`` is a URL (``memory://``, ``redis://host:6379/0``) or a
    :class:`~gennet_toolkit.backends.Backend`. ``strategy``: ``"sliding_window"`` (two-window
    weighted counter, the default), ``"fixed_window"`` or ``"token_bucket"`` (GCRA). With
    ``fail_open=True`` a backend outage lets requests through; with ``False`` they get
    503. Either way the outage is logged once, and its end once. ``prefix`` goes in
    front of every key when ``backend`` is a URL. ``outage_backoff`` (seconds, default
    0: off) stops calling a failed backend for that long, so an unreachable host does
    not cost each request a connect timeout. Every check is one backend call (one Lua
    round trip on Redis); async methods never block the loop.
    """

    def __init__(
        self,
        backend: str | Backend = "memory://",
        *,
        strategy: Strategy = "sliding_window",
        fail_open: bool = True,
        prefix: str = "",
        outage_backoff: float = 0.0,
    ) -> None:
        algorithm = _ALGORITHMS.get(strategy)
        if algorithm is None:
            raise ConfigurationError(
                f"unknown rate-limit strategy {strategy!r}: use sliding_window, "
                "fixed_window or token_bucket"
            )
        self.strategy = strategy
        self.fail_open = fail_open
        self._owns_backend = isinstance(backend, str)
        if isinstance(backend, str):
            self.backend: Backend = from_url(backend, prefix=prefix)
        elif prefix:
            raise ConfigurationError("prefix= applies to backend URLs; set it on the Backend")
        else:
            self.backend = backend
        self._algorithm = algorithm
        self._op: AsyncOp = self.backend.rate_limits
        self._sync_op: SyncOp | None = None
        # The memory backend's async form only forwards to its sync form and never
        # waits, so async checks call the sync form directly: two coroutines fewer per
        # check. (Exact type only: a subclass may override the async form.)
        self._inline = type(self.backend) is MemoryBackend
        if not outage_backoff >= 0:
            raise ConfigurationError(f"outage_backoff must be >= 0 seconds, got {outage_backoff!r}")
        self.outage_backoff = outage_backoff
        self._down = False
        self._skip_until = 0.0
        self._health_lock = threading.Lock()

    @classmethod
    def from_env(cls, prefix: str = "GENNET_", **overrides: object) -> RateLimiter:
        """Configure from ``{prefix}RATE_LIMIT_BACKEND`` (else ``{prefix}BACKEND_URL``,
        else ``memory://``), ``{prefix}RATE_LIMIT_STRATEGY`` and
        ``{prefix}RATE_LIMIT_FAIL_OPEN`` (``true``/``false``); keywords override."""
        kwargs: dict[str, object] = {
            "backend": env_str(prefix + "RATE_LIMIT_BACKEND")
            or env_str(prefix + "BACKEND_URL")
            or "memory://",
            "strategy": env_str(prefix + "RATE_LIMIT_STRATEGY", "sliding_window"),
        }
        fail_open = env_bool(prefix + "RATE_LIMIT_FAIL_OPEN")
        if fail_open is not None:
            kwargs["fail_open"] = fail_open
        kwargs.update(overrides)
        return cls(**kwargs)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return (
            f"RateLimiter(backend={self.backend!r}, strategy={self.strategy!r}, "
            f"fail_open={self.fail_open!r})"
        )

    # ------------------------------------------------------------------ async

    async def hit(self, limit: Limit | str, key: str, *, cost: int = 1) -> RateLimitResult | None:
        """Spend ``cost`` of ``limit`` for ``key``: one atomic backend call.

        Returns the backend's result, or ``None`` when the backend is down and
        ``fail_open`` lets the call through; raises ``ServiceUnavailable`` when it is
        down and ``fail_open=False``. ``cost=0`` only peeks.
        """
        lim = limit if isinstance(limit, Limit) else _single(limit)
        if self._inline:
            results = self._spend_sync(lim.pairs, key, cost)
        else:
            results = await self._spend(lim.pairs, key, cost)
        return None if results is None else results[0]

    async def check(self, rule: Rule, key: str) -> Decision:
        """Apply every limit of ``rule`` for ``key`` in one atomic backend call.

        The rule's cost is spent on all its limits or on none: a request refused by
        the per-second limit spends nothing of the hourly one, and vice versa.
        """
        if self._inline:
            results = self._spend_sync(rule.pairs, key, rule.cost)
        else:
            results = await self._spend(rule.pairs, key, rule.cost)
        if results is None:
            return _ALLOWED_UNCHECKED
        return _decide(rule, results)

    async def _spend(self, pairs: Pairs, key: str, cost: int) -> tuple[RateLimitResult, ...] | None:
        if self._down and self._backing_off():
            return None
        try:
            results = await self._op(self._algorithm, storage_key(key), pairs, cost)
        except Exception as exc:  # any backend failure is an outage, never a 500
            self._failed(exc)
            return None
        if self._down:
            self._recovered()
        return results

    async def aclose(self) -> None:
        """Close the backend if this limiter created it from a URL."""
        if self._owns_backend:
            await self.backend.aclose()

    def close(self) -> None:
        """Close the backend's blocking connections if this limiter created it from a URL."""
        if self._owns_backend:
            close = getattr(self.backend, "close", None)
            if close is not None:
                close()

    # ------------------------------------------------------------------ sync

    def hit_sync(self, limit: Limit | str, key: str, *, cost: int = 1) -> RateLimitResult | None:
        """The blocking form of :meth:`hit`, for sync functions and worker threads."""
        lim = limit if isinstance(limit, Limit) else _single(limit)
        results = self._spend_sync(lim.pairs, key, cost)
        return None if results is None else results[0]

    def check_sync(self, rule: Rule, key: str) -> Decision:
        """The blocking form of :meth:`check`."""
        results = self._spend_sync(rule.pairs, key, rule.cost)
        if results is None:
            return _ALLOWED_UNCHECKED
        return _decide(rule, results)

    def _spend_sync(self, pairs: Pairs, key: str, cost: int) -> tuple[RateLimitResult, ...] | None:
        if self._down and self._backing_off():
            return None
        try:
            op = self._sync_op
            if op is None:
                op = self._sync_op = self.backend.sync.rate_limits
            results = op(self._algorithm, storage_key(key), pairs, cost)
        except Exception as exc:  # any backend failure is an outage, never a 500
            self._failed(exc)
            return None
        if self._down:
            self._recovered()
        return results

    # ------------------------------------------------------------------ outages

    def _backing_off(self) -> bool:
        """Within ``outage_backoff`` of a failure: skip the backend (pass or raise 503)."""
        if time.monotonic() >= self._skip_until:
            return False
        if not self.fail_open:
            raise ServiceUnavailable(
                "Rate limiting is temporarily unavailable; retry shortly.", retry_after=1
            )
        return True

    def _failed(self, exc: Exception) -> None:
        with self._health_lock:
            first = not self._down
            self._down = True
            if self.outage_backoff:
                self._skip_until = time.monotonic() + self.outage_backoff
        if first:
            cause = exc.__cause__ or exc
            logger.warning(
                "rate limiting backend unavailable (%s: %s); %s requests until it recovers",
                type(cause).__name__,
                cause,
                "letting through" if self.fail_open else "refusing (503)",
            )
        if not self.fail_open:
            raise ServiceUnavailable(
                "Rate limiting is temporarily unavailable; retry shortly.", retry_after=1
            ) from exc

    def _recovered(self) -> None:
        with self._health_lock:
            was_down = self._down
            self._down = False
        if was_down:
            logger.warning("rate limiting backend recovered; limits apply again")


def _decide(rule: Rule, results: tuple[RateLimitResult, ...]) -> Decision:
    if len(results) == 1:  # most rules: skip the generator machinery
        ((lim, name),), (result,) = rule.policies, results
        return Decision(result.allowed, ((name, lim, result),))
    checked = tuple(
        (name, lim, result) for (lim, name), result in zip(rule.policies, results, strict=True)
    )
    return Decision(all(r.allowed for r in results), checked)


def _single(text: str) -> Limit:
    limits = parse_limits(text)
    if len(limits) != 1:
        raise ConfigurationError("hit() takes one limit; use check() with a Rule for several")
    return limits[0]
