"""api_keys on SqlKeyStore: SQLite and PostgreSQL, sync and async engines, outages → 503."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from gennet_toolkit.api_keys import ApiKeyManager, ApiKeyMiddleware, InvalidApiKey, SqlKeyStore
from gennet_toolkit.exceptions import Conflict, ServiceUnavailable
from tests._api_keys_helpers import PEPPER, FakeClock
from tests.services import Database, closed_port_url

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sync", "async"])
async def sql_store(
    request: pytest.FixtureRequest, database: Database
) -> AsyncIterator[SqlKeyStore]:
    engine: Any = database.engine() if request.param == "sync" else database.async_engine()
    store = SqlKeyStore(engine)
    yield store
    if request.param == "sync":
        engine.dispose()
    else:
        await engine.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def manager(sql_store: SqlKeyStore, clock: FakeClock) -> ApiKeyManager:
    return ApiKeyManager(sql_store, pepper=PEPPER, clock=clock, last_used_interval=60)


async def test_store_creates_its_table_and_roundtrips_a_key(
    manager: ApiKeyManager, sql_store: SqlKeyStore, clock: FakeClock
) -> None:
    created = await manager.create(
        "lab-1", ["grn:read", "grn:write"], expires_in=timedelta(days=1), name="ci"
    )
    record = await sql_store.get(created.id)
    assert record is not None
    assert record.scopes == ("grn:read", "grn:write")
    assert record.name == "ci"
    assert record.created_at == clock.now
    assert record.expires_at == clock.now + timedelta(days=1)
    assert record.created_at.tzinfo is not None
    principal = await manager.verify(created.key)
    assert principal.owner == "lab-1"
    assert principal.scopes == {"grn:read", "grn:write"}

    # Only the hash is in the table.
    def dump(conn: Any) -> str:
        return repr(conn.execute(sa.select(sql_store.table)).all())

    text = await sql_store._run(dump, write=False)
    assert created.key.split("_")[2][:-6] not in text


async def test_sql_expiry_revocation_and_rotation(manager: ApiKeyManager, clock: FakeClock) -> None:
    a = await manager.create("lab-1", (), expires_in=60)
    clock.advance(61)
    with pytest.raises(InvalidApiKey):
        await manager.verify(a.key)
    b = await manager.create("lab-1", ())
    assert await manager.revoke(b.id) is True
    assert await manager.revoke(b.id) is False
    with pytest.raises(InvalidApiKey):
        await manager.verify(b.key)
    c = await manager.create("lab-1", ["grn:read"])
    d = await manager.rotate(c.id, grace_period=timedelta(seconds=30))
    await manager.verify(c.key)
    await manager.verify(d.key)
    with pytest.raises(Conflict):
        await manager.rotate(c.id)
    clock.advance(30)
    with pytest.raises(InvalidApiKey):
        await manager.verify(c.key)
    assert (await manager.verify(d.key)).scopes == {"grn:read"}
    listed = await manager.list_keys("lab-1", include_inactive=True)
    assert {k.id for k in listed} == {a.id, b.id, c.id, d.id}
    assert [k.id for k in await manager.list_keys("lab-1")] == [d.id]


async def test_rotation_never_extends_an_earlier_expiry_in_sql(
    manager: ApiKeyManager, clock: FakeClock
) -> None:
    old = await manager.create("lab-1", (), expires_in=10)
    await manager.rotate(old.id, grace_period=timedelta(hours=1))
    info = await manager.get(old.id)
    assert info is not None
    assert info.expires_at == clock.now + timedelta(seconds=10)


async def test_sql_last_used_is_throttled_by_a_conditional_update(
    sql_store: SqlKeyStore, manager: ApiKeyManager, clock: FakeClock
) -> None:
    created = await manager.create("lab-1", ())
    t0 = clock.now
    assert await sql_store.touch(created.id, t0, t0 - timedelta(seconds=60)) is True
    assert await sql_store.touch(created.id, t0, t0 - timedelta(seconds=60)) is False
    later = t0 + timedelta(seconds=61)
    assert await sql_store.touch(created.id, later, later - timedelta(seconds=60)) is True
    info = await manager.get(created.id)
    assert info is not None
    assert info.last_used_at == later


async def test_concurrent_rotations_yield_exactly_one_successor(
    manager: ApiKeyManager, database: Database
) -> None:
    created = await manager.create("lab-1", ())
    results = await asyncio.gather(
        *(manager.rotate(created.id) for _ in range(4)), return_exceptions=True
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, Conflict) for r in results if isinstance(r, BaseException))


async def test_sql_store_down_gives_service_unavailable_and_503() -> None:
    url = closed_port_url("postgresql+psycopg").replace("/0", "/gennet")
    store = SqlKeyStore.from_url(url, table_name="keys")
    keys = ApiKeyManager(store, pepper=PEPPER)
    # A well-formed key for an id that the dead store cannot look up.
    from gennet_toolkit.api_keys._format import generate_key

    token, _ = generate_key()
    with pytest.raises(ServiceUnavailable):
        await keys.verify(token)
    with pytest.raises(ServiceUnavailable):
        await keys.create("lab-1", ())

    async def ok(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - never reached
        raise AssertionError("a request must not pass while the store is down")

    transport = httpx.ASGITransport(app=ApiKeyMiddleware(ok, keys))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        resp = await c.get("/", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 503
    assert resp.headers["content-type"] == "application/problem+json"
    assert token not in resp.text
    assert "psycopg" not in resp.text
    assert "127.0.0.1" not in resp.text


async def test_async_postgres_store_down_gives_503() -> None:
    url = closed_port_url("postgresql+asyncpg").replace("/0", "/gennet")
    store = SqlKeyStore.from_url(url)
    from gennet_toolkit.api_keys._format import generate_key

    token, _ = generate_key()
    with pytest.raises(ServiceUnavailable):
        await ApiKeyManager(store).verify(token)
    await store.engine.dispose()  # type: ignore[misc]


async def test_store_recovers_when_the_database_comes_back(
    database: Database, clock: FakeClock
) -> None:
    engine = database.engine()
    store = SqlKeyStore(engine)
    keys = ApiKeyManager(store, pepper=PEPPER, clock=clock)
    created = await keys.create("lab-1", ())
    good = store.engine
    store.engine = sa.create_engine(closed_port_url("postgresql+psycopg").replace("/0", "/x"))
    with pytest.raises(ServiceUnavailable):
        await keys.verify(created.key)
    store.engine.dispose()  # type: ignore[union-attr]
    store.engine = good
    assert (await keys.verify(created.key)).owner == "lab-1"
    engine.dispose()


def test_sql_store_rejects_non_engines_and_from_env_needs_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gennet_toolkit.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError):
        SqlKeyStore("sqlite://")  # type: ignore[arg-type]
    monkeypatch.delenv("GENNET_API_KEYS_URL", raising=False)
    with pytest.raises(ConfigurationError):
        SqlKeyStore.from_env()


async def test_manager_from_env_with_sqlite_url(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("GENNET_API_KEYS_URL", f"sqlite+aiosqlite:///{tmp_path}/keys.db")
    monkeypatch.setenv("GENNET_API_KEYS_PEPPER", PEPPER)
    keys = ApiKeyManager.from_env()
    assert isinstance(keys.store, SqlKeyStore)
    created = await keys.create("lab-1", ["grn:read"])
    assert (await keys.verify(created.key)).key_id == created.id
    await keys.store.engine.dispose()  # type: ignore[misc]
