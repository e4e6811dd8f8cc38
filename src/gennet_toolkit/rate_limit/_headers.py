"""Rate-limit response headers: draft-ietf-httpapi-ratelimit-headers and the legacy set."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from typing import Literal

from gennet_toolkit._context import correlation_id_var
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


def problem_parts(
    exc: GenNetError, scope: Scope, extra_headers: Sequence[tuple[str, str]] = ()
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The problem+json body and raw headers for ``exc`` answering ``scope``."""
    body = exc.to_problem(instance=scope.get("path"), correlation_id=correlation_id_var.get())
    payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items()]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra_headers]
    return payload, headers


async def send_problem(
    exc: GenNetError, scope: Scope, send: Send, extra_headers: Sequence[tuple[str, str]] = ()
) -> None:
    """Answer with ``exc`` as ``application/problem+json``."""
    payload, headers = problem_parts(exc, scope, extra_headers)
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
