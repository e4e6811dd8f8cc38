"""API keys: issue, store (hashed), verify, revoke, rotate, and guard ASGI apps with them.

- keys look like ``gnk_<id>_<secret><crc32>``; :func:`looks_like_key` checks the shape
  and checksum offline, so secret scanners recognise leaked keys and typos never
  reach the store;
- :class:`ApiKeyManager` shows the plaintext once and stores only an HMAC-SHA256
  (pepper) of it, verifies by id lookup plus ``hmac.compare_digest``, checks expiry
  and revocation, rotates with a grace period and throttles ``last_used_at`` writes;
- :class:`MemoryKeyStore` (no extra) and :class:`SqlKeyStore` (extra ``sql``;
  SQLAlchemy 2, sync or async engine, SQLite and PostgreSQL);
- :class:`ApiKeyMiddleware` (pure ASGI) reads ``X-API-Key`` or ``Authorization:
  Bearer`` and answers 401/403/503 as problem+json; :func:`require_scopes` guards
  endpoints and plain functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gennet_toolkit.api_keys._format import (
    ParsedKey,
    key_pattern,
    looks_like_key,
    parse_key,
)
from gennet_toolkit.api_keys._manager import ApiKeyManager
from gennet_toolkit.api_keys._middleware import (
    ApiKeyMiddleware,
    current_principal,
    require_scopes,
)
from gennet_toolkit.api_keys._model import (
    ANONYMOUS,
    AnonymousPrincipal,
    ApiKey,
    ApiKeyPrincipal,
    CreatedKey,
    InsufficientScope,
    InvalidApiKey,
    KeyIdConflict,
    KeyRecord,
    KeyStore,
    MemoryKeyStore,
)

if TYPE_CHECKING:
    from gennet_toolkit.api_keys._sql import SqlKeyStore

__all__ = [
    "ANONYMOUS",
    "AnonymousPrincipal",
    "ApiKey",
    "ApiKeyManager",
    "ApiKeyMiddleware",
    "ApiKeyPrincipal",
    "CreatedKey",
    "InsufficientScope",
    "InvalidApiKey",
    "KeyIdConflict",
    "KeyRecord",
    "KeyStore",
    "MemoryKeyStore",
    "ParsedKey",
    "SqlKeyStore",
    "current_principal",
    "key_pattern",
    "looks_like_key",
    "parse_key",
    "require_scopes",
]


def __getattr__(name: str) -> Any:
    # SqlKeyStore is loaded on first use so that the memory store needs no extra.
    if name == "SqlKeyStore":
        from gennet_toolkit.api_keys._sql import SqlKeyStore

        return SqlKeyStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
