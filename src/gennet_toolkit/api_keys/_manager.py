"""``ApiKeyManager``: issue, verify, revoke and rotate keys over a :class:`KeyStore`.

Hashing. A key's secret is 190 random bits, so a slow password KDF (bcrypt, Argon2)
buys nothing: no one can brute-force 2**190 candidates however fast the hash is, while
a KDF costs tens of milliseconds of CPU per request and hands attackers a DoS lever.
The store keeps ``HMAC-SHA256(pepper, "<id>:<secret>")``; the pepper lives outside the
database (environment, secret manager), so a leaked table alone cannot even confirm a
guessed key, and binding the id stops hashes being swapped between rows. Without a
pepper, plain SHA-256 of the same string is used (still safe, given the entropy); each
record remembers which, so a pepper can be introduced for new keys later.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from gennet_toolkit._env import env_float, env_str
from gennet_toolkit.api_keys._format import DEFAULT_PREFIX, _Parser, generate_key
from gennet_toolkit.api_keys._model import (
    ApiKey,
    ApiKeyPrincipal,
    CreatedKey,
    InvalidApiKey,
    KeyIdConflict,
    KeyRecord,
    KeyStore,
    MemoryKeyStore,
)
from gennet_toolkit.exceptions import (
    ConfigurationError,
    Conflict,
    FieldError,
    NotFound,
    ServiceUnavailable,
    ValidationFailed,
)

__all__ = ["ApiKeyManager"]

logger = logging.getLogger("gennet_toolkit.api_keys")

_SCOPE_RE = re.compile(r"[A-Za-z0-9_.:*-]{1,100}")
_MAX_SCOPES = 64
_MAX_TEXT = 255
_MIN_PEPPER = 16
# Compared against when the id is unknown, so that path also does one digest compare.
_DUMMY_HASH = "0" * 64
_THROTTLE_ENTRIES = 10_000


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _seconds(value: timedelta | float | None, what: str) -> timedelta | None:
    if value is None:
        return None
    delta = value if isinstance(value, timedelta) else timedelta(seconds=float(value))
    if delta.total_seconds() < 0:
        raise ValueError(f"{what} must not be negative")
    return delta


class ApiKeyManager:
    """Issue and check API keys; only hashes are stored.

    ``ApiKeyManager(store, *, pepper=None, prefix="gnk", last_used_interval=60,
    clock=<UTC now>, realm="api")``::

        keys = ApiKeyManager(MemoryKeyStore(), pepper=os.environ["API_KEY_PEPPER"])
        created = await keys.create("lab-42", {"grn:read"}, expires_in=timedelta(days=90))
        created.key                 # 'gnk_…' shown once; only its HMAC is stored
        principal = await keys.verify(created.key)   # ApiKeyPrincipal or InvalidApiKey

    ``last_used_interval`` (seconds) bounds ``last_used_at`` writes to one per key per
    interval; ``0`` writes on every use, ``None`` never. ``clock`` returns an aware
    UTC ``datetime`` (inject one in tests). ``cache_ttl`` (seconds, default 0: off)
    keeps fetched records in this process that long: a revocation or rotation through
    this manager applies at once, one made elsewhere within ``cache_ttl``.
    """

    def __init__(
        self,
        store: KeyStore | None = None,
        *,
        pepper: bytes | str | None = None,
        prefix: str = DEFAULT_PREFIX,
        last_used_interval: float | None = 60.0,
        clock: Callable[[], datetime] = _utcnow,
        realm: str = "api",
        cache_ttl: float = 0.0,
    ) -> None:
        self.store: KeyStore = store if store is not None else MemoryKeyStore()
        if isinstance(pepper, str):
            pepper = pepper.encode()
        if pepper is not None and len(pepper) < _MIN_PEPPER:
            raise ConfigurationError(f"the pepper must be at least {_MIN_PEPPER} bytes")
        self._pepper = pepper
        self._algorithm = "hmac-sha256" if pepper is not None else "sha256"
        self._parser = _Parser(prefix)
        self.prefix = prefix
        if last_used_interval is not None and last_used_interval < 0:
            raise ConfigurationError("last_used_interval must not be negative")
        self.last_used_interval = last_used_interval
        self.clock = clock
        if not re.fullmatch(r"[A-Za-z0-9 ._-]{1,64}", realm):
            raise ConfigurationError("realm must be 1-64 plain characters")
        self.realm = realm
        # key id -> monotonic time of our last write; bounded, oldest dropped first.
        self._touched: OrderedDict[str, float] = OrderedDict()
        self._store_down = False
        if cache_ttl < 0:
            raise ConfigurationError("cache_ttl must not be negative")
        self.cache_ttl = cache_ttl
        self._cache_delta = timedelta(seconds=cache_ttl)
        # key id -> (record, fetched at); only records that exist are cached, so
        # random ids cannot fill it, and it is bounded like the throttle map.
        self._cache: OrderedDict[str, tuple[KeyRecord, datetime]] = OrderedDict()

    @classmethod
    def from_env(
        cls, prefix: str = "GENNET_", *, store: KeyStore | None = None, **overrides: Any
    ) -> ApiKeyManager:
        """Build from ``{prefix}API_KEYS_URL`` (``memory://`` default, or an SQLAlchemy URL),
        ``_PEPPER``, ``_PREFIX``, ``_LAST_USED_INTERVAL``, ``_REALM`` and ``_CACHE_TTL``."""
        p = prefix + "API_KEYS_"
        kw: dict[str, Any] = {}
        if (pepper := env_str(p + "PEPPER")) is not None:
            kw["pepper"] = pepper
        if (key_prefix := env_str(p + "PREFIX")) is not None:
            kw["prefix"] = key_prefix
        if (interval := env_float(p + "LAST_USED_INTERVAL")) is not None:
            kw["last_used_interval"] = interval
        if (realm := env_str(p + "REALM")) is not None:
            kw["realm"] = realm
        if (ttl := env_float(p + "CACHE_TTL")) is not None:
            kw["cache_ttl"] = ttl
        kw.update(overrides)
        if store is None:
            url = env_str(p + "URL", "memory://")
            if url == "memory://":
                store = MemoryKeyStore()
            else:
                from gennet_toolkit.api_keys._sql import SqlKeyStore

                store = SqlKeyStore.from_url(url)
        try:
            return cls(store, **kw)
        except ValueError as exc:
            raise ConfigurationError(f"{p}*: {exc}") from None

    # ------------------------------------------------------------------ hashing

    def _hash(self, key_id: str, secret: str, algorithm: str) -> str:
        data = f"{key_id}:{secret}".encode("ascii")
        if algorithm == "hmac-sha256":
            if self._pepper is None:
                # A peppered key cannot be checked without the pepper: fail closed.
                return _DUMMY_HASH
            return hmac.digest(self._pepper, data, "sha256").hex()
        return hashlib.sha256(data).hexdigest()

    # ------------------------------------------------------------------ issuing

    def _validate(
        self, owner: object, scopes: object, name: object
    ) -> tuple[str, tuple[str, ...], str]:
        errors: list[FieldError] = []
        if not isinstance(owner, str) or not 0 < len(owner) <= _MAX_TEXT:
            errors.append(FieldError("owner must be 1-255 characters.", pointer="/owner"))
        items: list[object] = []
        if isinstance(scopes, str) or not isinstance(scopes, Iterable):
            # A bare string would be split into characters: refuse it instead.
            errors.append(FieldError("scopes must be a collection of strings.", pointer="/scopes"))
        else:
            items = list(scopes)
        if len(items) > _MAX_SCOPES:
            errors.append(FieldError("too many scopes (at most 64).", pointer="/scopes"))
        for i, item in enumerate(items):
            if not isinstance(item, str) or not _SCOPE_RE.fullmatch(item):
                errors.append(
                    FieldError(
                        "a scope is 1-100 characters of A-Z a-z 0-9 _ . : * -",
                        pointer=f"/scopes/{i}",
                    )
                )
        if not isinstance(name, str) or len(name) > _MAX_TEXT:
            errors.append(FieldError("name must be at most 255 characters.", pointer="/name"))
        if errors or not isinstance(owner, str) or not isinstance(name, str):
            raise ValidationFailed(errors=errors)
        return owner, tuple(sorted({str(i) for i in items})), name

    def _new_record(
        self, owner: str, scopes: tuple[str, ...], name: str, expires_at: datetime | None
    ) -> tuple[str, KeyRecord]:
        token, key_id = generate_key(self.prefix)
        secret = token[len(self.prefix) + 1 + len(key_id) + 1 : -6]
        record = KeyRecord(
            id=key_id,
            owner=owner,
            name=name,
            scopes=scopes,
            key_hash=self._hash(key_id, secret, self._algorithm),
            algorithm=self._algorithm,
            created_at=self.clock(),
            expires_at=expires_at,
            prefix=self.prefix,
        )
        return token, record

    async def create(
        self,
        owner: str,
        scopes: Iterable[str] = (),
        expires_in: timedelta | float | None = None,
        *,
        name: str = "",
    ) -> CreatedKey:
        """Issue a key for ``owner`` with ``scopes``; the plaintext is in the result only.

        ``expires_in`` is a ``timedelta`` or seconds (``None``: never expires). Invalid
        arguments raise :class:`ValidationFailed` (422) without echoing them.
        """
        owner, scope_t, name = self._validate(owner, scopes, name)
        delta = _seconds(expires_in, "expires_in")
        for _ in range(3):
            now = self.clock()
            token, record = self._new_record(
                owner, scope_t, name, None if delta is None else now + delta
            )
            try:
                await self.store.insert(record)
            except KeyIdConflict:
                continue  # 71 random bits collided: astronomically rare, just draw again
            return CreatedKey(token, record.info())
        raise Conflict("Could not allocate a unique key id.")  # pragma: no cover

    # ------------------------------------------------------------------ checking

    async def verify(self, token: str | None) -> ApiKeyPrincipal:
        """The principal of a valid key, or :class:`InvalidApiKey` (401, one generic detail).

        Shape and checksum are checked offline first, so typos and random strings
        never reach the store. Then the record is fetched by id and the hash compared
        with :func:`hmac.compare_digest`; an unknown id runs the same compare against a
        dummy. Expired and revoked keys fail like unknown ones. A store outage raises
        :class:`~gennet_toolkit.exceptions.ServiceUnavailable` (503): never "allow".
        """
        if not token:
            raise InvalidApiKey("missing", realm=self.realm)
        parsed = self._parser.parse(token)
        if parsed is None:
            raise InvalidApiKey("malformed", realm=self.realm)
        record = await self._get(parsed.key_id)
        if record is None:
            computed = self._hash(parsed.key_id, parsed.secret, self._algorithm)
            hmac.compare_digest(computed.encode(), _DUMMY_HASH.encode())
            raise InvalidApiKey("unknown", realm=self.realm)
        computed = self._hash(parsed.key_id, parsed.secret, record.algorithm)
        if not hmac.compare_digest(computed.encode(), record.key_hash.encode()):
            raise InvalidApiKey("mismatch", realm=self.realm)
        now = self.clock()
        if record.revoked_at is not None and record.revoked_at <= now:
            raise InvalidApiKey("revoked", realm=self.realm)
        if record.expires_at is not None and now >= record.expires_at:
            raise InvalidApiKey("expired", realm=self.realm)
        await self._touch(record, now)
        return ApiKeyPrincipal(
            key_id=record.id, owner=record.owner, scopes=frozenset(record.scopes), name=record.name
        )

    async def _get(self, key_id: str) -> KeyRecord | None:
        if self.cache_ttl > 0:
            hit = self._cache.get(key_id)
            if hit is not None:
                if self.clock() - hit[1] < self._cache_delta:
                    return hit[0]
                del self._cache[key_id]
        try:
            record = await self.store.get(key_id)
        except ServiceUnavailable:
            if not self._store_down:
                self._store_down = True
                logger.error("API key store unavailable; requests get 503 until it recovers")
            raise
        if self._store_down:
            self._store_down = False
            logger.warning("API key store available again")
        if record is not None and self.cache_ttl > 0:
            self._cache[key_id] = (record, self.clock())
            while len(self._cache) > _THROTTLE_ENTRIES:
                self._cache.popitem(last=False)
        return record

    async def _touch(self, record: KeyRecord, now: datetime) -> None:
        interval = self.last_used_interval
        if interval is None:
            return
        if interval > 0:
            if record.last_used_at is not None and now - record.last_used_at < timedelta(
                seconds=interval
            ):
                return
            mono = time.monotonic()
            last = self._touched.get(record.id)
            if last is not None and mono - last < interval:
                return
            self._touched[record.id] = mono
            self._touched.move_to_end(record.id)
            while len(self._touched) > _THROTTLE_ENTRIES:
                self._touched.popitem(last=False)
        if record.id in self._cache:
            cached = self._cache[record.id]
            self._cache[record.id] = (dataclasses.replace(record, last_used_at=now), cached[1])
        try:
            await self.store.touch(record.id, now, now - timedelta(seconds=interval))
        except ServiceUnavailable:
            # The key was verified against the store a moment ago; losing one
            # last-used write must not turn a valid request into an error.
            logger.warning("could not record last use of API key %s", record.id)

    # ------------------------------------------------------------------ managing

    async def get(self, key_id: str) -> ApiKey | None:
        """The metadata of ``key_id`` (no secret, no hash), or ``None``."""
        record = await self.store.get(key_id)
        return None if record is None else record.info()

    async def list_keys(self, owner: str, *, include_inactive: bool = False) -> list[ApiKey]:
        """The keys of ``owner``, oldest first; revoked and expired ones only on request."""
        now = self.clock()
        infos = [r.info() for r in await self.store.list_by_owner(owner)]
        return infos if include_inactive else [k for k in infos if k.is_active(now)]

    async def revoke(self, key_id: str) -> bool:
        """Revoke ``key_id`` now; False if it was already revoked, NotFound if unknown."""
        self._cache.pop(key_id, None)
        revoked = await self.store.revoke(key_id, self.clock())
        # Again after the write: a verify running meanwhile may have cached the old row.
        self._cache.pop(key_id, None)
        if revoked:
            self._touched.pop(key_id, None)
            return True
        if await self.store.get(key_id) is None:
            raise NotFound("No such API key.")
        return False

    async def rotate(
        self,
        key_id: str,
        grace_period: timedelta | float = timedelta(hours=24),
        *,
        expires_in: timedelta | float | None = None,
    ) -> CreatedKey:
        """Issue a successor with the same owner, name and scopes; the old key keeps
        working for ``grace_period`` (never beyond its own expiry), then fails.

        The successor lives as long as the old key was meant to (``expires_in``
        overrides). NotFound for an unknown id, Conflict (409) for a revoked,
        expired or already rotated key.
        """
        grace = _seconds(grace_period, "grace_period") or timedelta(0)
        self._cache.pop(key_id, None)
        old = await self.store.get(key_id)
        if old is None:
            raise NotFound("No such API key.")
        now = self.clock()
        if not old.info().is_active(now) or old.replaced_by is not None:
            raise Conflict("Only an active key that was not rotated yet can be rotated.")
        if expires_in is not None:
            delta = _seconds(expires_in, "expires_in")
        elif old.expires_at is not None:
            delta = old.expires_at - old.created_at
        else:
            delta = None
        for _ in range(3):
            token, record = self._new_record(
                old.owner, old.scopes, old.name, None if delta is None else now + delta
            )
            try:
                done = await self.store.replace(key_id, record, now + grace)
            except KeyIdConflict:
                continue
            finally:
                self._cache.pop(key_id, None)
            if not done:
                raise Conflict("Only an active key that was not rotated yet can be rotated.")
            return CreatedKey(token, record.info())
        raise Conflict("Could not allocate a unique key id.")  # pragma: no cover
