"""Rate-limit response headers: draft-ietf-httpapi-ratelimit-headers and the legacy set."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from typing import Literal

from gennet_toolkit import _problem
from gennet_toolkit.exceptions import GenNetError, RateLimitExceeded
from gennet_toolkit.rate_limit._limiter import Decision
from gennet_toolkit.types import Scope, Send

__all__ = [
    "HeaderMode",
    "RATE_LIMIT_HEADER_NAMES",
    "exceeded",
    "header_pairs",
    "problem_parts",
    "send_problem",
]

HeaderMode = Literal["draft", "legacy", "both"] | None
HEADER_MODES = ("draft", "legacy", "both", None)

#: Every header this module writes (lower case), so merged responses never repeat one.
RATE_LIMIT_HEADER_NAMES = frozenset(
    {
        b"ratelimit",
        b"ratelimit-policy",
        b"x-ratelimit-limit",
        b"x-ratelimit-remaining",
        b"x-ratelimit-reset",
    }
)


def _ceil(seconds: float) -> int:
    return max(0, math.ceil(seconds - 1e-9))


def header_pairs(decisions: Iterable[Decision], mode: HeaderMode) -> list[tuple[str, str]]:
    """The header (name, value) pairs describing ``decisions`` in ``mode``.

    Draft: ``RateLimit-Policy: "default";q=100;w=60`` and ``RateLimit:
    "default";r=42;t=17``, one list member per limit checked. ``t`` is the time until
    the quota is restored (at most the window) or, for a refused limit, the time until
    a request can pass. Legacy: ``X-RateLimit-Limit/-Remaining/-Reset`` (epoch
    seconds) for the most constrained limit.
    """
    if mode is None:
        return []
    policies: list[str] = []
    states: list[str] = []
    tightest: tuple[int, int, int] | None = None  # (remaining, -t, quota)
    for decision in decisions:
        for name, lim, result in decision.results:
            remaining = max(0, result.remaining)
            if result.allowed:
                t = _ceil(min(result.reset_after, lim.period))
            else:
                t = _ceil(result.retry_after)
            policies.append(f'"{name}";q={lim.amount};w={lim.window}')
            states.append(f'"{name}";r={remaining};t={t}')
            candidate = (remaining, -t, lim.amount)
            if tightest is None or candidate < tightest:
                tightest = candidate
    if not policies:
        return []
    out: list[tuple[str, str]] = []
    if mode in ("draft", "both"):
        out.append(("RateLimit-Policy", ", ".join(policies)))
        out.append(("RateLimit", ", ".join(states)))
    if mode in ("legacy", "both") and tightest is not None:
        remaining, neg_t, quota = tightest
        out.append(("X-RateLimit-Limit", str(quota)))
        out.append(("X-RateLimit-Remaining", str(remaining)))
        out.append(("X-RateLimit-Reset", str(math.ceil(time.time()) - neg_t)))
    return out


def exceeded(decision: Decision) -> RateLimitExceeded:
    """The 429 error for a refused decision; the body names the violated policies."""
    retry = decision.retry_after
    seconds = _ceil(retry)
    return RateLimitExceeded(
        f"Rate limit exceeded; retry in {seconds} second{'s' if seconds != 1 else ''}.",
        retry_after=retry,
        extra={"violated-policies": decision.violated},
    )


def _raw(pairs: Sequence[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in pairs]


def problem_parts(
    exc: GenNetError, scope: Scope, extra_headers: Sequence[tuple[str, str]] = ()
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The problem+json body and raw headers for ``exc`` answering ``scope``."""
    return _problem.problem_parts(exc, scope, headers=_raw(extra_headers))


async def send_problem(
    exc: GenNetError, scope: Scope, send: Send, extra_headers: Sequence[tuple[str, str]] = ()
) -> None:
    """Answer with ``exc`` as ``application/problem+json``."""
    await _problem.send_problem(exc, scope, send, headers=_raw(extra_headers))
