"""``SqlKeyStore``: key records in one SQLAlchemy 2 table (sync or async engine).

With a sync ``Engine`` each call runs in a worker thread so the event loop never
blocks; with an ``AsyncEngine`` (aiosqlite, asyncpg) it is awaited directly. The
table is created by the store on first use (``CREATE TABLE IF NOT EXISTS``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from gennet_toolkit._env import env_str
from gennet_toolkit._optional import require
from gennet_toolkit.api_keys._model import KeyIdConflict, KeyRecord, KeyStore
from gennet_toolkit.exceptions import ConfigurationError, ServiceUnavailable

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["SqlKeyStore"]

T = TypeVar("T")
_FEATURE = "gennet_toolkit.api_keys.SqlKeyStore"
_ASYNC_DRIVERS = ("+aiosqlite", "+asyncpg", "+psycopg_async", "+aiomysql", "+asyncmy")


def _aware(value: datetime | None) -> datetime | None:
    # SQLite drops the offset; everything is written as UTC, so naive means UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


class SqlKeyStore(KeyStore):
    """Key records in the table ``table_name`` (default ``gennet_api_keys``).

    ``SqlKeyStore(engine, *, table_name="gennet_api_keys", schema=None)`` where
    ``engine`` is a sync ``sqlalchemy.Engine`` or an ``AsyncEngine``::

        store = SqlKeyStore(create_async_engine("postgresql+asyncpg://…/app"))

    The id is the primary key (lookups are one indexed read), ``owner`` is indexed for
    listing. A refused or broken connection raises ``ServiceUnavailable`` (503).
    """

    def __init__(
        self,
        engine: sa.Engine | AsyncEngine,
        *,
        table_name: str = "gennet_api_keys",
        schema: str | None = None,
    ) -> None:
        sa_mod = require("sqlalchemy", extra="sql", feature=_FEATURE)
        from sqlalchemy import exc as sa_exc
        from sqlalchemy.ext.asyncio import AsyncEngine

        self._sa = sa_mod
        self._exc = sa_exc
        self.engine = engine
        self._async = isinstance(engine, AsyncEngine)
        if not self._async and not isinstance(engine, sa_mod.Engine):
            raise ConfigurationError("SqlKeyStore needs a sqlalchemy Engine or AsyncEngine")
        meta = sa_mod.MetaData(schema=schema)
        tz = sa_mod.DateTime(timezone=True)
        self.table = sa_mod.Table(
            table_name,
            meta,
            sa_mod.Column("id", sa_mod.String(32), primary_key=True),
            sa_mod.Column("owner", sa_mod.String(255), nullable=False, index=True),
            sa_mod.Column("name", sa_mod.String(255), nullable=False, default=""),
            sa_mod.Column("scopes", sa_mod.Text, nullable=False),
            sa_mod.Column("key_hash", sa_mod.String(128), nullable=False),
            sa_mod.Column("algorithm", sa_mod.String(32), nullable=False),
            sa_mod.Column("prefix", sa_mod.String(16), nullable=False),
            sa_mod.Column("created_at", tz, nullable=False),
            sa_mod.Column("expires_at", tz),
            sa_mod.Column("revoked_at", tz),
            sa_mod.Column("last_used_at", tz),
            sa_mod.Column("replaced_by", sa_mod.String(32)),
        )
        # Built once: lookups run on every request, statement construction is not free.
        self._get_stmt = self.table.select().where(self.table.c.id == sa_mod.bindparam("key_id"))
        self._ready = False
        self._lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> SqlKeyStore:
        """Build on a new engine for ``url`` (async when the driver is, e.g. ``+asyncpg``)."""
        sa_mod = require("sqlalchemy", extra="sql", feature=_FEATURE)
        scheme = url.split("://", 1)[0]
        if any(scheme.endswith(d) for d in _ASYNC_DRIVERS):
            from sqlalchemy.ext.asyncio import create_async_engine

            return cls(create_async_engine(url, pool_pre_ping=True), **kw)
        return cls(sa_mod.create_engine(url, pool_pre_ping=True), **kw)

    @classmethod
    def from_env(cls, prefix: str = "GENNET_", **kw: Any) -> SqlKeyStore:
        """Build from ``{prefix}API_KEYS_URL`` and ``{prefix}API_KEYS_TABLE``."""
        url = env_str(prefix + "API_KEYS_URL")
        if url is None:
            raise ConfigurationError(f"{prefix}API_KEYS_URL is not set")
        if (table := env_str(prefix + "API_KEYS_TABLE")) is not None:
            kw.setdefault("table_name", table)
        return cls.from_url(url, **kw)

    # ------------------------------------------------------------------ running

    def _unavailable(self, exc: BaseException) -> BaseException | None:
        if isinstance(exc, self._exc.IntegrityError):
            return None
        if isinstance(exc, self._exc.SQLAlchemyError | OSError):
            return ServiceUnavailable("The API key store is unavailable.", retry_after=1)
        return None

    async def _run(self, fn: Callable[[Any], T], *, write: bool) -> T:
        """Run ``fn(connection)`` in a transaction, mapping outages to 503."""
        try:
            if not self._ready:
                await self._create()
            return await self._call(fn, write=write)
        except KeyIdConflict:
            raise
        except (self._exc.SQLAlchemyError, OSError) as exc:
            if isinstance(exc, self._exc.IntegrityError):
                raise KeyIdConflict() from exc
            mapped = self._unavailable(exc)
            if mapped is None:  # pragma: no cover - defensive
                raise
            raise mapped from exc

    async def _call(self, fn: Callable[[Any], T], *, write: bool) -> T:
        if self._async:
            engine: Any = self.engine
            if write:
                async with engine.begin() as aconn:
                    return await aconn.run_sync(fn)  # type: ignore[no-any-return]
            async with engine.connect() as aconn:
                return await aconn.run_sync(fn)  # type: ignore[no-any-return]

        def sync() -> T:
            sync_engine: Any = self.engine
            ctx = sync_engine.begin() if write else sync_engine.connect()
            with ctx as conn:
                return fn(conn)

        return await asyncio.to_thread(sync)

    async def _create(self) -> None:
        async with self._lock:
            if not self._ready:
                await self._call(lambda c: self.table.create(c, checkfirst=True), write=True)
                self._ready = True

    async def create_table(self) -> None:
        """Create the table now (it is otherwise created on first use)."""
        await self._run(lambda c: None, write=False)

    async def drop_table(self) -> None:
        """Drop the table (tests, teardown)."""
        await self._run(lambda c: self.table.drop(c, checkfirst=True), write=True)
        self._ready = False

    async def ping(self) -> None:
        """Raise ``ServiceUnavailable`` unless the database answers."""
        await self._run(lambda c: c.execute(self._sa.text("SELECT 1")), write=False)

    # ------------------------------------------------------------------ rows

    def _row(self, record: KeyRecord) -> dict[str, Any]:
        return {
            "id": record.id,
            "owner": record.owner,
            "name": record.name,
            "scopes": json.dumps(list(record.scopes)),
            "key_hash": record.key_hash,
            "algorithm": record.algorithm,
            "prefix": record.prefix,
            "created_at": _utc(record.created_at),
            "expires_at": _utc(record.expires_at),
            "revoked_at": _utc(record.revoked_at),
            "last_used_at": _utc(record.last_used_at),
            "replaced_by": record.replaced_by,
        }

    @staticmethod
    def _record(row: Any) -> KeyRecord:
        m = row._mapping
        created = _aware(m["created_at"])
        if created is None:  # pragma: no cover - NOT NULL column
            raise ServiceUnavailable("The API key store returned a corrupt row.")
        return KeyRecord(
            id=m["id"],
            owner=m["owner"],
            name=m["name"],
            scopes=tuple(json.loads(m["scopes"])),
            key_hash=m["key_hash"],
            algorithm=m["algorithm"],
            prefix=m["prefix"],
            created_at=created,
            expires_at=_aware(m["expires_at"]),
            revoked_at=_aware(m["revoked_at"]),
            last_used_at=_aware(m["last_used_at"]),
            replaced_by=m["replaced_by"],
        )

    # ------------------------------------------------------------------ KeyStore

    async def insert(self, record: KeyRecord) -> None:
        """Add a new key (``KeyIdConflict`` on a duplicate id)."""
        row = self._row(record)
        await self._run(lambda c: c.execute(self.table.insert().values(**row)), write=True)

    async def get(self, key_id: str) -> KeyRecord | None:
        """The record of ``key_id`` (one primary-key read), or ``None``."""
        stmt, params = self._get_stmt, {"key_id": key_id}

        def run(conn: Any) -> KeyRecord | None:
            row = conn.execute(stmt, params).first()
            return None if row is None else self._record(row)

        return await self._run(run, write=False)

    async def list_by_owner(self, owner: str) -> list[KeyRecord]:
        """All keys of ``owner``, oldest first."""
        t = self.table
        stmt = t.select().where(t.c.owner == owner).order_by(t.c.created_at, t.c.id)
        return await self._run(lambda c: [self._record(r) for r in c.execute(stmt)], write=False)

    async def revoke(self, key_id: str, when: datetime) -> bool:
        """Set ``revoked_at`` unless already revoked (one conditional UPDATE)."""
        t = self.table
        stmt = (
            t.update()
            .where(t.c.id == key_id, t.c.revoked_at.is_(None))
            .values(revoked_at=_utc(when))
        )
        return await self._run(lambda c: c.execute(stmt).rowcount == 1, write=True)

    async def replace(self, old_id: str, new: KeyRecord, old_expires_at: datetime) -> bool:
        """Insert ``new`` and shorten ``old_id``'s life, in one transaction."""
        sa_mod = self._sa
        t = self.table
        cut = _utc(old_expires_at)
        new_expiry = sa_mod.case(
            (t.c.expires_at.is_(None), sa_mod.literal(cut, t.c.expires_at.type)),
            (t.c.expires_at < cut, t.c.expires_at),
            else_=sa_mod.literal(cut, t.c.expires_at.type),
        )
        update = (
            t.update()
            .where(t.c.id == old_id, t.c.revoked_at.is_(None), t.c.replaced_by.is_(None))
            .values(expires_at=new_expiry, replaced_by=new.id)
        )
        row = self._row(new)

        def run(conn: Any) -> bool:
            # The conditional UPDATE claims the old key first: of two concurrent
            # rotations exactly one matches, and the loser inserts nothing.
            if conn.execute(update).rowcount != 1:
                return False
            conn.execute(t.insert().values(**row))
            return True

        return await self._run(run, write=True)

    async def touch(self, key_id: str, when: datetime, not_since: datetime) -> bool:
        """Record a use unless a later one is stored (one conditional UPDATE)."""
        t = self.table
        stmt = (
            t.update()
            .where(
                t.c.id == key_id,
                (t.c.last_used_at.is_(None)) | (t.c.last_used_at < _utc(not_since)),
            )
            .values(last_used_at=_utc(when))
        )
        return await self._run(lambda c: c.execute(stmt).rowcount == 1, write=True)
