"""The retry policy and the per-call planner shared by the async and sync clients.

Nothing here does I/O: the planner is told what happened (a response or an exception)
and answers "retry after this many seconds" or "stop". Both clients drive the same
planner, so the retry rules exist once.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC
from typing import TYPE_CHECKING, Any

from gennet_toolkit._env import env_bool, env_float, env_int, env_list
from gennet_toolkit.exceptions import ConfigurationError, UpstreamError

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DEFAULT_METHODS",
    "DEFAULT_STATUSES",
    "RetryBudget",
    "RetryEvent",
    "RetryPolicy",
    "UpstreamTimeout",
    "parse_retry_after",
]

logger = logging.getLogger("gennet_toolkit.http_client")

#: Idempotent methods (RFC 9110 §9.2.2) retried by default.
DEFAULT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: Statuses worth another attempt: rate limited or a gateway/overload answer.
DEFAULT_STATUSES = frozenset({429, 502, 503, 504})


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer in time, or the call's deadline ran out (504)."""

    status_code = 504
    code = "upstream_timeout"
    default_detail = "An upstream service did not answer in time."


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """What the ``on_retry`` hook receives before each backoff sleep.

    ``attempt`` is the attempt that just failed (1-based); ``wait`` the seconds about to
    be slept; ``status`` or ``exception`` says why; ``retry_after`` is the server's
    ``Retry-After`` in seconds when it sent one. ``url`` carries no query string.
    """

    method: str
    url: str
    attempt: int
    wait: float
    elapsed: float
    status: int | None = None
    exception: BaseException | None = None
    retry_after: float | None = None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP-date).

    Returns ``None`` when absent or unparseable, ``0.0`` for a date in the past.
    ``now`` is the wall-clock time (``time.time()``) the date is compared with.
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # Not RFC-conformant, but common; nan/inf/negatives are refused.
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigurationError(message)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how long to wait before calling an upstream again.

    - ``attempts``: total tries including the first (``1`` disables retries).
    - Backoff before retry *n* is full jitter, ``uniform(0, min(backoff_max,
      backoff_base * 2**(n-1)))``; ``jitter=False`` sleeps the upper bound instead.
    - ``statuses``: responses retried (429, 502, 503, 504 by default).
    - ``methods``: methods whose requests may be sent twice (idempotent ones by
      default). Other methods are retried only when the request carries
      ``idempotency_header`` or the call passes ``idempotent=True``.
    - ``retry_unsent``: connection failures (refused, connect timeout, no pooled
      connection) happen before any byte leaves, so they are retried for every method.
    - Read timeouts and broken connections are retried for retryable methods only.
    - ``exceptions``: more exception types (raised by a custom transport or breaker)
      retried for retryable methods; once retries run out they propagate unchanged.
    - ``retry_after``: honour the server's ``Retry-After`` (seconds or HTTP-date),
      capped by ``backoff_max`` and by the call's deadline.
    - ``on_retry``: called with a :class:`RetryEvent` before each sleep (metrics,
      logs); an exception it raises is logged and ignored.
    """

    attempts: int = 3
    backoff_base: float = 0.1
    backoff_max: float = 5.0
    jitter: bool = True
    statuses: Collection[int] = DEFAULT_STATUSES
    methods: Collection[str] = DEFAULT_METHODS
    idempotency_header: str | None = "Idempotency-Key"
    retry_unsent: bool = True
    retry_after: bool = True
    exceptions: tuple[type[Exception], ...] = ()
    on_retry: Callable[[RetryEvent], Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        attempts: object = self.attempts
        _check(
            isinstance(attempts, int) and not isinstance(attempts, bool) and attempts >= 1,
            "attempts must be an integer >= 1",
        )
        for name in ("backoff_base", "backoff_max"):
            value: object = getattr(self, name)
            _check(
                isinstance(value, int | float) and math.isfinite(value) and value >= 0,
                f"{name} must be a finite number >= 0",
            )
        _check(self.backoff_base <= self.backoff_max, "backoff_base must be <= backoff_max")
        statuses = frozenset(self.statuses)
        _check(
            all(type(s) is int and 100 <= s <= 599 for s in statuses),
            "statuses must be HTTP status codes (100-599)",
        )
        _check(not isinstance(self.methods, str), "methods must be a collection of names")
        extra: object = self.exceptions
        if isinstance(extra, type):
            extra = (extra,)
        if not (
            isinstance(extra, tuple | list | frozenset | set)
            and all(isinstance(e, type) and issubclass(e, Exception) for e in extra)
        ):
            # BaseExceptions (CancelledError, KeyboardInterrupt) are refused: a
            # cancelled call must stop, never be retried (jd/tenacity#529).
            raise ConfigurationError(
                "exceptions must be Exception subclasses (cancellation is never retried)"
            )
        object.__setattr__(self, "exceptions", tuple(extra))
        object.__setattr__(self, "statuses", statuses)
        object.__setattr__(self, "methods", frozenset(m.upper() for m in self.methods))

    @classmethod
    def from_env(cls, prefix: str = "GENNET_", **overrides: Any) -> RetryPolicy:
        """Read ``{prefix}HTTP_RETRY_ATTEMPTS``, ``_BACKOFF_BASE``, ``_BACKOFF_MAX``,
        ``_JITTER``, ``_STATUSES`` and ``_METHODS`` (comma-separated); keyword
        arguments win over the environment."""
        p = f"{prefix}HTTP_RETRY_"
        kwargs: dict[str, Any] = {}
        if (attempts := env_int(f"{p}ATTEMPTS")) is not None:
            kwargs["attempts"] = attempts
        if (base := env_float(f"{p}BACKOFF_BASE")) is not None:
            kwargs["backoff_base"] = base
        if (top := env_float(f"{p}BACKOFF_MAX")) is not None:
            kwargs["backoff_max"] = top
        if (jitter := env_bool(f"{p}JITTER")) is not None:
            kwargs["jitter"] = jitter
        if (statuses := env_list(f"{p}STATUSES")) is not None:
            try:
                kwargs["statuses"] = frozenset(int(s) for s in statuses)
            except ValueError:
                raise ConfigurationError(f"{p}STATUSES must list status codes") from None
        if (methods := env_list(f"{p}METHODS")) is not None:
            kwargs["methods"] = frozenset(methods)
        kwargs.update(overrides)
        return cls(**kwargs)

    def backoff(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to sleep before retry number ``retry`` (1 for the first retry)."""
        # 2.0**n raises OverflowError past n=1023; by then the cap has long applied.
        ceiling = min(self.backoff_max, self.backoff_base * 2.0 ** min(retry - 1, 1000))
        return ceiling * rand() if self.jitter else ceiling


class RetryBudget:
    """Caps retries to a share of traffic, so a failing upstream is not hit N times harder.

    Every call deposits ``ratio`` tokens, the budget also earns ``min_per_second``
    tokens per second (so rare calls can still retry), and every retry spends one
    token; with none left the call keeps its last outcome instead of retrying. The
    balance never exceeds ``burst`` (nor starts above it). Share one budget between
    the clients calling the same upstream; it is thread-safe. Defaults: retries stay
    under about 10% of calls plus one per second.
    """

    __slots__ = ("_balance", "_clock", "_lock", "_updated", "burst", "min_per_second", "ratio")

    def __init__(
        self,
        *,
        ratio: float = 0.1,
        min_per_second: float = 1.0,
        burst: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value in (("ratio", ratio), ("min_per_second", min_per_second)):
            _check(math.isfinite(value) and value >= 0, f"{name} must be a finite number >= 0")
        _check(math.isfinite(burst) and burst >= 1, "burst must be a finite number >= 1")
        self.ratio = float(ratio)
        self.min_per_second = float(min_per_second)
        self.burst = float(burst)
        self._clock = clock
        self._lock = threading.Lock()
        self._balance = self.burst
        self._updated = clock()

    @classmethod
    def from_env(cls, prefix: str = "GENNET_", **overrides: Any) -> RetryBudget:
        """Read ``{prefix}HTTP_RETRY_BUDGET_RATIO``, ``_MIN_PER_SECOND`` and ``_BURST``;
        keyword arguments win."""
        p = f"{prefix}HTTP_RETRY_BUDGET_"
        kwargs: dict[str, Any] = {}
        for name in ("ratio", "min_per_second", "burst"):
            if (value := env_float(f"{p}{name.upper()}")) is not None:
                kwargs[name] = value
        kwargs.update(overrides)
        return cls(**kwargs)

    def _refill(self, deposit: float) -> None:
        now = self._clock()
        earned = (now - self._updated) * self.min_per_second
        self._updated = now
        self._balance = min(self.burst, self._balance + earned + deposit)

    def deposit(self) -> None:
        """Record one call (its first attempt)."""
        with self._lock:
            self._refill(self.ratio)

    def withdraw(self) -> bool:
        """Spend a token for one retry; ``False`` when the budget is exhausted."""
        with self._lock:
            self._refill(0.0)
            if self._balance < 1.0:
                return False
            self._balance -= 1.0
            return True

    @property
    def balance(self) -> float:
        """Tokens available now (one per retry)."""
        with self._lock:
            self._refill(0.0)
            return self._balance


@dataclass(slots=True)
class Plan:
    """One call's retry state: attempts so far, start time and deadline.

    Kept per call (never on the client) so concurrent calls share no statistics.
    """

    policy: RetryPolicy
    method: str
    url: str
    may_repeat: bool
    clock: Callable[[], float]
    wall: Callable[[], float]
    rand: Callable[[], float]
    deadline_at: float | None
    started: float
    budget: RetryBudget | None = None
    attempt: int = 0

    def remaining(self) -> float | None:
        """Seconds left before the deadline (``None``: no deadline)."""
        if self.deadline_at is None:
            return None
        return self.deadline_at - self.clock()

    def retry_status(self, response: httpx.Response) -> float | None:
        """Seconds to wait before retrying this response, or ``None`` to keep it."""
        if response.status_code not in self.policy.statuses or not self.may_repeat:
            return None
        hint = None
        if self.policy.retry_after:
            hint = parse_retry_after(response.headers.get("retry-after"), now=self.wall())
        return self._next(status=response.status_code, retry_after=hint)

    def retry_error(self, exc: BaseException, *, unsent: bool, transient: bool) -> float | None:
        """Seconds to wait before retrying after ``exc``, or ``None`` to raise it."""
        if unsent and self.policy.retry_unsent:
            return self._next(exception=exc)
        if transient and self.may_repeat:
            return self._next(exception=exc)
        return None

    def _next(
        self,
        *,
        status: int | None = None,
        exception: BaseException | None = None,
        retry_after: float | None = None,
    ) -> float | None:
        if self.attempt >= self.policy.attempts:
            return None
        if retry_after is not None:
            wait = min(retry_after, self.policy.backoff_max)
        else:
            wait = self.policy.backoff(self.attempt, self.rand)
        remaining = self.remaining()
        # Never sleep into the deadline: an attempt started with no time left is wasted.
        if remaining is not None and wait >= remaining:
            return None
        if self.budget is not None and not self.budget.withdraw():
            logger.debug("retry budget exhausted: not retrying %s %s", self.method, self.url)
            return None
        hook = self.policy.on_retry
        if hook is not None:
            event = RetryEvent(
                method=self.method,
                url=self.url,
                attempt=self.attempt,
                wait=wait,
                elapsed=self.clock() - self.started,
                status=status,
                exception=exception,
                retry_after=retry_after,
            )
            try:
                hook(event)
            except Exception:
                logger.warning("on_retry hook raised; ignoring it", exc_info=True)
        logger.debug(
            "retrying %s %s after attempt %d (%s) in %.3fs",
            self.method,
            self.url,
            self.attempt,
            status if status is not None else type(exception).__name__,
            wait,
        )
        return wait
