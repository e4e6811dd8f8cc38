"""Rate limiting for ASGI apps and plain functions, in memory or shared through Redis.

:class:`RateLimiter` counts against a backend (``memory://`` or ``redis://``) with a
fixed window, a sliding window counter or a token bucket (GCRA), one atomic call per
check. :class:`RateLimitMiddleware` applies :class:`Rule` objects to requests and answers
429 problem+json with ``Retry-After`` and the draft ``RateLimit`` headers;
:func:`rate_limited` limits one endpoint or function. Key functions :data:`by_ip` (proxy
headers only from trusted proxies), :data:`by_user`, :data:`by_api_key` compose with
``|`` and ``&``.
"""

from __future__ import annotations

from gennet_toolkit.exceptions import RateLimitExceeded
from gennet_toolkit.rate_limit._decorator import rate_limited
from gennet_toolkit.rate_limit._headers import HeaderMode, header_pairs
from gennet_toolkit.rate_limit._keys import ClientIP, Key, by_api_key, by_ip, by_user
from gennet_toolkit.rate_limit._limiter import Decision, RateLimiter, Strategy
from gennet_toolkit.rate_limit._limits import KeyFunc, Limit, Rule, parse_limits
from gennet_toolkit.rate_limit._middleware import STATE_KEY, RateLimitMiddleware

__all__ = [
    "STATE_KEY",
    "ClientIP",
    "Decision",
    "HeaderMode",
    "Key",
    "KeyFunc",
    "Limit",
    "RateLimitExceeded",
    "RateLimitMiddleware",
    "RateLimiter",
    "Rule",
    "Strategy",
    "by_api_key",
    "by_ip",
    "by_user",
    "header_pairs",
    "parse_limits",
    "rate_limited",
]
