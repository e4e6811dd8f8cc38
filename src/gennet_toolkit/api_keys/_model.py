"""Key records, the authenticated principal, errors, and the store interface."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from gennet_toolkit.exceptions import Forbidden, GenNetError, Unauthorized

__all__ = [
    "ANONYMOUS",
    "AnonymousPrincipal",
    "ApiKey",
    "ApiKeyPrincipal",
    "CreatedKey",
    "InsufficientScope",
    "InvalidApiKey",
    "KeyIdConflict",
    "KeyRecord",
    "KeyStore",
    "MemoryKeyStore",
    "scope_allows",
]

#: The one detail every authentication failure shares: missing, malformed, unknown id,
#: wrong secret, expired and revoked keys are indistinguishable to the client.
GENERIC_DETAIL = "A valid API key is required."


class InvalidApiKey(Unauthorized):
    """No valid API key (401). ``reason`` is for logs and tests, never sent to the client.

    Reasons: ``missing``, ``malformed`` (shape or checksum), ``unknown``, ``mismatch``,
    ``expired``, ``revoked``, ``ambiguous`` (two different keys in one request).
    """

    code = "invalid_api_key"
    default_detail = GENERIC_DETAIL

    def __init__(self, reason: str = "invalid", *, realm: str = "api") -> None:
        self.reason = reason
        # RFC 6750 section 3.1: no error code when no credentials were presented at all.
        scheme = f'Bearer realm="{realm}"'
        if reason != "missing":
            scheme += ', error="invalid_token"'
        super().__init__(GENERIC_DETAIL, scheme=scheme)


class InsufficientScope(Forbidden):
    """The key is valid but lacks a scope the operation requires (403)."""

    code = "insufficient_scope"

    def __init__(self, missing: Iterable[str]) -> None:
        self.missing = tuple(sorted(missing))
        # The names are the server's own, never the client's input: safe to show.
        super().__init__(
            "The API key lacks the required scope(s): " + ", ".join(self.missing) + ".",
            extra={"required_scopes": list(self.missing)},
        )


class KeyIdConflict(GenNetError):
    """A store already holds this key id (a random collision; the manager retries)."""

    code = "key_id_conflict"


def scope_allows(granted: Iterable[str], required: str) -> bool:
    """True if a granted scope covers ``required``.

    ``*`` covers everything; ``grn:*`` covers ``grn:read`` and ``grn:genes:write``
    (whole ``:``-segments only: ``grn*`` is no wildcard and covers nothing else).
    """
    for scope in granted:
        if scope in (required, "*"):
            return True
        if scope.endswith(":*") and required.startswith(scope[:-1]):
            return True
    return False


@dataclass(frozen=True, slots=True)
class ApiKey:
    """What is known about a key, without anything secret (safe to list and log)."""

    id: str
    owner: str
    name: str
    scopes: frozenset[str]
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    replaced_by: str | None = None
    prefix: str = "gnk"

    @property
    def hint(self) -> str:
        """How the key starts (``gnk_<id>_…``), to let a user tell keys apart."""
        return f"{self.prefix}_{self.id}_…"

    def is_active(self, now: datetime) -> bool:
        """Neither revoked nor expired at ``now``."""
        if self.revoked_at is not None and self.revoked_at <= now:
            return False
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key as a store keeps it: the metadata plus the hash of its secret."""

    id: str
    owner: str
    name: str
    scopes: tuple[str, ...]
    key_hash: str = dataclasses.field(repr=False)
    algorithm: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    replaced_by: str | None = None
    prefix: str = "gnk"

    def info(self) -> ApiKey:
        """The public view (no hash)."""
        return ApiKey(
            id=self.id,
            owner=self.owner,
            name=self.name,
            scopes=frozenset(self.scopes),
            created_at=self.created_at,
            expires_at=self.expires_at,
            revoked_at=self.revoked_at,
            last_used_at=self.last_used_at,
            replaced_by=self.replaced_by,
            prefix=self.prefix,
        )


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """The result of ``create``/``rotate``: the plaintext ``key`` (shown once) and ``info``.

    ``repr`` and ``str`` hide the key so that logging the object cannot leak it.
    """

    key: str = dataclasses.field(repr=False)
    info: ApiKey

    @property
    def id(self) -> str:
        """The key id (public)."""
        return self.info.id

    def __str__(self) -> str:
        return repr(self)


@dataclass(frozen=True, slots=True)
class ApiKeyPrincipal:
    """Who a verified key speaks for; goes into ``scope["user"]`` and ``scope["auth"]``.

    Compatible with Starlette's ``BaseUser`` (``is_authenticated``, ``display_name``,
    ``identity``) and ``AuthCredentials`` (``scopes``), so ``request.user`` and
    Starlette's own ``@requires`` work with it.
    """

    key_id: str
    owner: str
    scopes: frozenset[str]
    name: str = ""

    @property
    def is_authenticated(self) -> bool:
        """Always true: a principal only exists for a verified key."""
        return True

    @property
    def identity(self) -> str:
        """The owner the key was issued to."""
        return self.owner

    @property
    def display_name(self) -> str:
        """The key's name, or its owner when it has none."""
        return self.name or self.owner

    def has_scopes(self, *required: str) -> bool:
        """True if every required scope is granted (``grn:*`` and ``*`` are wildcards)."""
        return all(scope_allows(self.scopes, r) for r in required)


@dataclass(frozen=True, slots=True)
class AnonymousPrincipal:
    """The ``scope["user"]`` of a request without a key, when anonymous requests are allowed."""

    scopes: frozenset[str] = frozenset()
    identity: str = ""
    display_name: str = ""
    is_authenticated: bool = False

    def has_scopes(self, *required: str) -> bool:
        """True only when nothing is required."""
        return not required


#: The one anonymous principal.
ANONYMOUS = AnonymousPrincipal()


class KeyStore(abc.ABC):
    """Where key records live. Every method is async; ``datetime`` values are aware UTC.

    Implementations raise :class:`~gennet_toolkit.exceptions.ServiceUnavailable` when
    their backend is unreachable, and :class:`KeyIdConflict` from ``insert`` on a
    duplicate id. Writes are single atomic statements (or one transaction).
    """

    @abc.abstractmethod
    async def insert(self, record: KeyRecord) -> None:
        """Add a new key."""

    @abc.abstractmethod
    async def get(self, key_id: str) -> KeyRecord | None:
        """The record of ``key_id``, or ``None``."""

    @abc.abstractmethod
    async def list_by_owner(self, owner: str) -> list[KeyRecord]:
        """All keys of ``owner``, oldest first."""

    @abc.abstractmethod
    async def revoke(self, key_id: str, when: datetime) -> bool:
        """Set ``revoked_at`` unless already revoked; False if unknown or already revoked."""

    @abc.abstractmethod
    async def replace(self, old_id: str, new: KeyRecord, old_expires_at: datetime) -> bool:
        """Atomically insert ``new`` and let ``old_id`` expire at ``old_expires_at``
        (never later than it already would) with ``replaced_by = new.id``.

        False (and nothing written) if ``old_id`` is unknown, revoked or already replaced.
        """

    @abc.abstractmethod
    async def touch(self, key_id: str, when: datetime, not_since: datetime) -> bool:
        """Set ``last_used_at = when`` unless it is already at or after ``not_since``.

        The condition makes the throttle hold across processes sharing one store.
        """

    async def ping(self) -> None:  # noqa: B027 - optional hook with a no-op default
        """Raise :class:`ServiceUnavailable` unless the store answers."""


class MemoryKeyStore(KeyStore):
    """Keys in a dict: tests, single-process services, and the benchmark baseline.

    Every method completes without awaiting, so each one is atomic on its event loop.
    """

    def __init__(self) -> None:
        self._records: dict[str, KeyRecord] = {}

    def __len__(self) -> int:
        return len(self._records)

    async def insert(self, record: KeyRecord) -> None:
        """Add a new key."""
        if record.id in self._records:
            raise KeyIdConflict()
        self._records[record.id] = record

    async def get(self, key_id: str) -> KeyRecord | None:
        """The record of ``key_id``, or ``None``."""
        return self._records.get(key_id)

    async def list_by_owner(self, owner: str) -> list[KeyRecord]:
        """All keys of ``owner``, oldest first."""
        found = [r for r in self._records.values() if r.owner == owner]
        return sorted(found, key=lambda r: (r.created_at, r.id))

    async def revoke(self, key_id: str, when: datetime) -> bool:
        """Set ``revoked_at`` unless already revoked."""
        rec = self._records.get(key_id)
        if rec is None or rec.revoked_at is not None:
            return False
        self._records[key_id] = dataclasses.replace(rec, revoked_at=when)
        return True

    async def replace(self, old_id: str, new: KeyRecord, old_expires_at: datetime) -> bool:
        """Insert ``new`` and shorten ``old_id``'s life to ``old_expires_at``."""
        rec = self._records.get(old_id)
        if rec is None or rec.revoked_at is not None or rec.replaced_by is not None:
            return False
        if new.id in self._records:
            raise KeyIdConflict()
        expires = old_expires_at
        if rec.expires_at is not None and rec.expires_at < expires:
            expires = rec.expires_at
        self._records[old_id] = dataclasses.replace(rec, expires_at=expires, replaced_by=new.id)
        self._records[new.id] = new
        return True

    async def touch(self, key_id: str, when: datetime, not_since: datetime) -> bool:
        """Record a use unless one at or after ``not_since`` is already recorded."""
        rec = self._records.get(key_id)
        if rec is None or (rec.last_used_at is not None and rec.last_used_at >= not_since):
            return False
        self._records[key_id] = dataclasses.replace(rec, last_used_at=when)
        return True
