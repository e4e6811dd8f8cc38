"""RateLimitMiddleware: pure ASGI, rules checked before the app sees the request."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

from gennet_toolkit._env import env_list, env_str
from gennet_toolkit.exceptions import ConfigurationError, ServiceUnavailable
from gennet_toolkit.rate_limit._headers import (
    HEADER_MODES,
    RATE_LIMIT_HEADER_NAMES,
    HeaderMode,
    exceeded,
    header_pairs,
    send_problem,
)
from gennet_toolkit.rate_limit._keys import ClientIP
from gennet_toolkit.rate_limit._limiter import Decision, RateLimiter
from gennet_toolkit.rate_limit._limits import Rule, path_matches
from gennet_toolkit.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["STATE_KEY", "RateLimitMiddleware"]

#: Where decisions for the current request live in ``scope["state"]``: the middleware's,
#: then those of ``@rate_limited`` endpoints, so one set of headers describes them all.
STATE_KEY = "gennet_toolkit.rate_limit"

logger = logging.getLogger("gennet_toolkit.rate_limit")


class RateLimitMiddleware:
    """Limit HTTP requests by rules; refuse with 429 problem+json and ``Retry-After``.

    ``RateLimitMiddleware(app, limiter, rules=[Rule("100/minute", key=by_ip)],
    exempt_paths=["/health"], headers="draft")``. Every applicable rule is checked in
    order until one refuses. ``headers`` picks ``"draft"`` (``RateLimit-Policy`` +
    ``RateLimit``), ``"legacy"`` (``X-RateLimit-*``), ``"both"`` or ``None``. When the
    backend is down the limiter's ``fail_open`` decides: pass, or 503 problem+json.
    Lifespan and websocket scopes pass straight through.
    """

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter | None = None,
        *,
        rules: Sequence[Rule] = (),
        exempt_paths: Iterable[str] = (),
        headers: HeaderMode = "draft",
    ) -> None:
        self.app = app
        self.limiter = limiter if limiter is not None else RateLimiter()
        self.rules = tuple(rules)
        for rule in self.rules:
            if not isinstance(rule, Rule):
                raise ConfigurationError(f"rules must be Rule objects, got {rule!r}")
        names = [name for rule in self.rules for _, name in rule.policies]
        if len(set(names)) != len(names):
            raise ConfigurationError(
                "rate-limit rules need distinct names (they name the header policies "
                "and the counters): pass Rule(..., name=...)"
            )
        if headers not in HEADER_MODES:
            raise ConfigurationError(
                f"headers must be 'draft', 'legacy', 'both' or None, got {headers!r}"
            )
        self.headers = headers
        self.exempt_paths = tuple(p.rstrip("/") or "/" for p in exempt_paths)
        # Counters are namespaced by rule name, so two rules never share one.
        self._namespaces = tuple(f"mw:{rule.name}:" for rule in self.rules)

    @classmethod
    def from_env(
        cls,
        app: ASGIApp,
        limiter: RateLimiter | None = None,
        *,
        prefix: str = "GENNET_",
        **overrides: Any,
    ) -> RateLimitMiddleware:
        """Configure from ``{prefix}RATE_LIMIT_DEFAULT`` (e.g. ``100/minute``, one
        rule keyed by client IP), ``{prefix}RATE_LIMIT_TRUSTED_PROXIES`` (comma-separated
        CIDRs), ``{prefix}RATE_LIMIT_EXEMPT_PATHS`` (comma-separated) and
        ``{prefix}RATE_LIMIT_HEADERS`` (``draft``/``legacy``/``both``/``none``); the
        limiter defaults to :meth:`RateLimiter.from_env`. Keywords override."""
        kwargs: dict[str, Any] = {}
        if default := env_str(prefix + "RATE_LIMIT_DEFAULT"):
            proxies = env_list(prefix + "RATE_LIMIT_TRUSTED_PROXIES", [])
            kwargs["rules"] = [Rule(default, key=ClientIP(trusted_proxies=proxies))]
        if exempt := env_list(prefix + "RATE_LIMIT_EXEMPT_PATHS"):
            kwargs["exempt_paths"] = exempt
        # Set but blank is meaningful here: no headers at all, like "none".
        mode = os.environ.get(prefix + "RATE_LIMIT_HEADERS")
        if mode is not None:
            kwargs["headers"] = None if mode.strip().lower() in {"", "none"} else mode.strip()
        kwargs.update(overrides)
        if limiter is None:
            limiter = RateLimiter.from_env(prefix)
        return cls(app, limiter, **kwargs)

    def _exempt(self, path: str) -> bool:
        return any(path_matches(path, p) if p != "/" else path == "/" for p in self.exempt_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.exempt_paths and self._exempt(scope["path"])):
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET")
        path = scope["path"]
        decisions: list[Decision] = []
        for rule, namespace in zip(self.rules, self._namespaces, strict=True):
            if not rule.applies(method, path):
                continue
            try:
                key = rule.key(scope)
            except Exception:
                # A broken key function is a bug to fix, not a reason to answer 500.
                logger.exception("rate-limit key function of rule %r failed", rule.name)
                continue
            if key is None:
                continue
            try:
                decision = await self.limiter.check(rule, namespace + key)
            except ServiceUnavailable as exc:
                await send_problem(exc, scope, send)
                return
            if decision.degraded:
                continue
            decisions.append(decision)
            if not decision.allowed:
                await send_problem(
                    exceeded(decision), scope, send, header_pairs(decisions, self.headers)
                )
                return

        if self.headers is None:
            # Decorated endpoints then write their own headers, if they want any.
            await self.app(scope, receive, send)
            return
        mode = self.headers
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        # Shared with nested limiters and decorated endpoints of this request.
        shared: list[Decision] = state.setdefault(STATE_KEY, [])
        shared.extend(decisions)
        own = len(decisions)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = header_pairs(shared, mode)
                if extra:
                    headers = list(message.get("headers") or ())
                    if len(shared) != own:
                        # A decorated endpoint set its own: replace them with the merged set.
                        headers = [
                            h for h in headers if h[0].lower() not in RATE_LIMIT_HEADER_NAMES
                        ]
                    headers += [(k.lower().encode(), v.encode()) for k, v in extra]
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
