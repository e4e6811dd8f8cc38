"""The limiter: runs a rule's limits against a backend, with the outage policy."""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from gennet_toolkit._env import env_bool, env_str
from gennet_toolkit.backends import Backend, RateLimitResult, from_url
from gennet_toolkit.exceptions import ConfigurationError, ServiceUnavailable
from gennet_toolkit.rate_limit._limits import Limit, Rule, parse_limits

__all__ = ["Decision", "RateLimiter", "Strategy"]

Strategy = Literal["sliding_window", "fixed_window", "token_bucket"]

# token_bucket is GCRA: a bucket of `limit` tokens refilled evenly over the period.
_OPERATIONS = {
    "sliding_window": "sliding_window",
    "fixed_window": "fixed_window",
    "token_bucket": "gcra",
    "gcra": "gcra",
}

# Keys go inside the backend's {hash tag}: braces, spaces and control bytes must not.
_SAFE_KEY = re.compile(r"[\x21-\x7a|~]{1,160}")

logger = logging.getLogger("gennet_toolkit.rate_limit")

AsyncOp = Callable[[str, int, float, int], Awaitable[RateLimitResult]]
SyncOp = Callable[[str, int, float, int], RateLimitResult]


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one rule for one request.

    ``results`` pairs each checked limit with its policy name and backend result,
    shortest window first; checking stops at the first limit that refuses.
    ``degraded`` means the backend was down and ``fail_open`` let the request through
    unchecked (then ``results`` is empty).
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


def storage_key(key: str) -> str:
    """``key`` as it may enter a store: short, printable, no hash-tag braces."""
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
        op = _OPERATIONS.get(strategy)
        if op is None:
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
        self._op_name = op
        self._op: AsyncOp = getattr(self.backend, op)
        self._sync_op: SyncOp | None = None
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
        if self._down and self._backing_off():
            return None
        try:
            result = await self._op(storage_key(key) + lim.suffix, lim.amount, lim.period, cost)
        except Exception as exc:  # any backend failure is an outage, never a 500
            self._failed(exc)
            return None
        if self._down:
            self._recovered()
        return result

    async def check(self, rule: Rule, key: str) -> Decision:
        """Apply every limit of ``rule`` for ``key``, shortest window first.

        Stops at the first refusal, so a request refused by a short burst limit does
        not also spend the longer (daily) quota.
        """
        results: list[tuple[str, Limit, RateLimitResult]] = []
        for lim, name in rule.policies:
            result = await self.hit(lim, key, cost=rule.cost)
            if result is None:
                return _ALLOWED_UNCHECKED
            results.append((name, lim, result))
            if not result.allowed:
                return Decision(False, tuple(results))
        return Decision(True, tuple(results))

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
        if self._down and self._backing_off():
            return None
        try:
            op = self._sync_op
            if op is None:
                op = self._sync_op = getattr(self.backend.sync, self._op_name)
            result = op(storage_key(key) + lim.suffix, lim.amount, lim.period, cost)
        except Exception as exc:  # any backend failure is an outage, never a 500
            self._failed(exc)
            return None
        if self._down:
            self._recovered()
        return result

    def check_sync(self, rule: Rule, key: str) -> Decision:
        """The blocking form of :meth:`check`."""
        results: list[tuple[str, Limit, RateLimitResult]] = []
        for lim, name in rule.policies:
            result = self.hit_sync(lim, key, cost=rule.cost)
            if result is None:
                return _ALLOWED_UNCHECKED
            results.append((name, lim, result))
            if not result.allowed:
                return Decision(False, tuple(results))
        return Decision(True, tuple(results))

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


def _single(text: str) -> Limit:
    limits = parse_limits(text)
    if len(limits) != 1:
        raise ConfigurationError("hit() takes one limit; use check() with a Rule for several")
    return limits[0]
