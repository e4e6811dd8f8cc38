"""api_keys: key format, hashing, verification, expiry, revocation, rotation, last use."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import timedelta
from typing import Any

import pytest

from gennet_toolkit import api_keys
from gennet_toolkit.api_keys import (
    ApiKeyManager,
    ApiKeyPrincipal,
    InvalidApiKey,
    MemoryKeyStore,
    key_pattern,
    looks_like_key,
    parse_key,
)
from gennet_toolkit.exceptions import (
    ConfigurationError,
    Conflict,
    NotFound,
    ServiceUnavailable,
    ValidationFailed,
)
from tests._api_keys_helpers import PEPPER, CountingStore, FakeClock

pytestmark = pytest.mark.anyio


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


@pytest.fixture
def manager(store: CountingStore, clock: FakeClock) -> ApiKeyManager:
    return ApiKeyManager(store, pepper=PEPPER, clock=clock, last_used_interval=60)


def _flip(token: str, index: int) -> str:
    ch = token[index]
    return token[:index] + ("B" if ch != "B" else "C") + token[index + 1 :]


def test_public_names_are_exactly_all() -> None:
    public = {n for n in dir(api_keys) if not n.startswith("_")} - {
        "annotations",
        "TYPE_CHECKING",
        "Any",
    }
    assert set(api_keys.__all__) == public | {"SqlKeyStore"}
    assert api_keys.SqlKeyStore.__name__ == "SqlKeyStore"


# ---------------------------------------------------------------------- format


async def test_created_key_has_prefix_id_secret_and_checksum(manager: ApiKeyManager) -> None:
    created = await manager.create("lab-1", {"grn:read"})
    assert re.fullmatch(r"gnk_[0-9A-Za-z]{12}_[0-9A-Za-z]{38}", created.key)
    assert created.key.split("_")[1] == created.id
    assert looks_like_key(created.key)
    assert key_pattern().search(f"leaked in a log: {created.key}.") is not None


async def test_plaintext_is_never_in_repr_or_store(
    manager: ApiKeyManager, store: CountingStore
) -> None:
    created = await manager.create("lab-1", {"grn:read"})
    secret = created.key.split("_")[2][:-6]
    assert created.key not in repr(created)
    assert created.key not in str(created)
    record = await store.get(created.id)
    assert record is not None
    assert secret not in repr(record)
    assert secret not in repr(record.__dict__ if hasattr(record, "__dict__") else "")
    assert secret not in record.key_hash
    assert created.key not in record.key_hash
    assert "secret=<redacted>" in repr(parse_key(created.key))


async def test_stored_hash_is_hmac_sha256_of_id_and_secret_with_pepper(
    manager: ApiKeyManager, store: CountingStore
) -> None:
    created = await manager.create("lab-1", ())
    parsed = parse_key(created.key)
    assert parsed is not None
    record = await store.get(created.id)
    assert record is not None
    assert record.algorithm == "hmac-sha256"
    expected = hmac.new(
        PEPPER.encode(), f"{parsed.key_id}:{parsed.secret}".encode(), hashlib.sha256
    ).hexdigest()
    assert record.key_hash == expected


async def test_without_pepper_sha256_is_stored_and_verifies(clock: FakeClock) -> None:
    store = MemoryKeyStore()
    keys = ApiKeyManager(store, clock=clock)
    created = await keys.create("lab-1", ())
    record = await store.get(created.id)
    assert record is not None
    assert record.algorithm == "sha256"
    assert (await keys.verify(created.key)).key_id == created.id
    # A manager that lost its pepper cannot accept peppered keys: it fails closed.
    peppered = ApiKeyManager(store, pepper=PEPPER, clock=clock)
    other = await peppered.create("lab-1", ())
    with pytest.raises(InvalidApiKey):
        await keys.verify(other.key)


@pytest.mark.parametrize("index", [5, 20, -1, -7])
async def test_typo_is_rejected_by_checksum_without_store_lookup(
    manager: ApiKeyManager, store: CountingStore, index: int
) -> None:
    created = await manager.create("lab-1", ())
    typo = _flip(created.key, index)
    assert not looks_like_key(typo)
    before = store.calls["get"]
    with pytest.raises(InvalidApiKey) as info:
        await manager.verify(typo)
    assert info.value.reason == "malformed"
    assert store.calls["get"] == before


@pytest.mark.parametrize(
    "token",
    [
        "",
        "gnk_",
        "Bearer gnk_x",
        "sk_live_abc",
        "gnk_" + "a" * 12 + "_" + "b" * 38 + "!",
        "x" * 10_000,
        "gnk_" + "a" * 12 + "_" + "b" * 38,
    ],
)
async def test_garbage_tokens_never_reach_the_store(
    manager: ApiKeyManager, store: CountingStore, token: str
) -> None:
    with pytest.raises(InvalidApiKey):
        await manager.verify(token)
    assert store.calls["get"] == 0


def test_looks_like_key_handles_non_strings_and_other_prefixes() -> None:
    assert not looks_like_key(None)
    assert not looks_like_key(b"gnk_")
    with pytest.raises(ValueError, match="prefix"):
        looks_like_key("x", prefix="Bad-Prefix")


async def test_custom_prefix_is_used_and_enforced(clock: FakeClock) -> None:
    keys = ApiKeyManager(MemoryKeyStore(), pepper=PEPPER, prefix="gnk_test", clock=clock)
    created = await keys.create("lab-1", ())
    assert created.key.startswith("gnk_test_")
    assert looks_like_key(created.key, prefix="gnk_test")
    assert not looks_like_key(created.key)
    assert (await keys.verify(created.key)).owner == "lab-1"


# ---------------------------------------------------------------------- verify


async def test_verify_returns_principal_with_owner_scopes_and_key_id(
    manager: ApiKeyManager,
) -> None:
    created = await manager.create("lab-1", ["grn:read", "grn:write"], name="ci")
    principal = await manager.verify(created.key)
    assert principal == ApiKeyPrincipal(
        key_id=created.id, owner="lab-1", scopes=frozenset({"grn:read", "grn:write"}), name="ci"
    )
    assert principal.is_authenticated
    assert principal.identity == "lab-1"
    assert principal.display_name == "ci"


async def test_unknown_id_and_wrong_secret_both_use_compare_digest_and_one_error(
    manager: ApiKeyManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    created = await manager.create("lab-1", ())
    body = f"gnk_{created.id}_{'A' * 32}"
    wrong_secret = body + api_keys._format.checksum(body)
    body2 = f"gnk_{'Z' * 12}_{'A' * 32}"
    unknown_id = body2 + api_keys._format.checksum(body2)
    errors = []
    for token in (wrong_secret, unknown_id):
        with pytest.raises(InvalidApiKey) as info:
            await manager.verify(token)
        errors.append(info.value)
    assert len(calls) == 2  # one constant-time compare on each path
    assert {e.reason for e in errors} == {"mismatch", "unknown"}
    assert errors[0].to_problem() == errors[1].to_problem()
    assert errors[0].headers == errors[1].headers
    await manager.verify(created.key)
    assert len(calls) == 3


async def test_key_expires_at_its_expiry_by_injected_clock(
    manager: ApiKeyManager, clock: FakeClock
) -> None:
    created = await manager.create("lab-1", (), expires_in=timedelta(hours=1))
    assert created.info.expires_at == clock.now + timedelta(hours=1)
    clock.advance(3599)
    await manager.verify(created.key)
    clock.advance(1)
    with pytest.raises(InvalidApiKey) as info:
        await manager.verify(created.key)
    assert info.value.reason == "expired"
    assert await manager.list_keys("lab-1") == []
    assert [k.id for k in await manager.list_keys("lab-1", include_inactive=True)] == [created.id]


async def test_expires_in_accepts_seconds_and_rejects_negative(
    manager: ApiKeyManager, clock: FakeClock
) -> None:
    created = await manager.create("lab-1", (), expires_in=30)
    assert created.info.expires_at == clock.now + timedelta(seconds=30)
    with pytest.raises(ValueError, match="negative"):
        await manager.create("lab-1", (), expires_in=-1)


async def test_revoked_key_fails_and_revoke_reports_state(manager: ApiKeyManager) -> None:
    created = await manager.create("lab-1", ())
    assert await manager.revoke(created.id) is True
    with pytest.raises(InvalidApiKey) as info:
        await manager.verify(created.key)
    assert info.value.reason == "revoked"
    assert await manager.revoke(created.id) is False
    with pytest.raises(NotFound):
        await manager.revoke("nope")
    info2 = await manager.get(created.id)
    assert info2 is not None
    assert info2.revoked_at is not None


async def test_rotate_keeps_old_key_until_grace_period_ends(
    manager: ApiKeyManager, clock: FakeClock
) -> None:
    old = await manager.create("lab-1", ["grn:read"], name="ci", expires_in=timedelta(days=90))
    clock.advance(10)
    new = await manager.rotate(old.id, grace_period=timedelta(minutes=5))
    assert new.key != old.key
    assert new.id != old.id
    assert new.info.scopes == old.info.scopes
    assert new.info.name == "ci"
    assert new.info.expires_at == clock.now + timedelta(days=90)  # same lifetime as the old
    assert (await manager.verify(old.key)).key_id == old.id
    assert (await manager.verify(new.key)).key_id == new.id
    old_info = await manager.get(old.id)
    assert old_info is not None
    assert old_info.replaced_by == new.id
    clock.advance(300)
    with pytest.raises(InvalidApiKey):
        await manager.verify(old.key)
    assert (await manager.verify(new.key)).owner == "lab-1"
    with pytest.raises(Conflict):
        await manager.rotate(old.id)


async def test_rotate_never_extends_old_key_and_refuses_inactive(
    manager: ApiKeyManager, clock: FakeClock
) -> None:
    old = await manager.create("lab-1", (), expires_in=60)
    await manager.rotate(old.id, grace_period=timedelta(days=1))
    info = await manager.get(old.id)
    assert info is not None
    assert info.expires_at == clock.now + timedelta(seconds=60)
    revoked = await manager.create("lab-1", ())
    await manager.revoke(revoked.id)
    with pytest.raises(Conflict):
        await manager.rotate(revoked.id)
    with pytest.raises(NotFound):
        await manager.rotate("missing")


async def test_rotate_with_zero_grace_cuts_old_key_at_once(manager: ApiKeyManager) -> None:
    old = await manager.create("lab-1", ())
    new = await manager.rotate(old.id, grace_period=0)
    with pytest.raises(InvalidApiKey):
        await manager.verify(old.key)
    await manager.verify(new.key)


async def test_last_used_is_written_at_most_once_per_interval(
    manager: ApiKeyManager, store: CountingStore, clock: FakeClock
) -> None:
    created = await manager.create("lab-1", ())
    for _ in range(50):
        await manager.verify(created.key)
    assert store.calls["touch"] == 1
    info = await manager.get(created.id)
    assert info is not None
    assert info.last_used_at == clock.now
    clock.advance(59)
    for _ in range(10):
        await manager.verify(created.key)
    assert store.calls["touch"] == 1
    clock.advance(2)
    await manager.verify(created.key)
    # The store's own last_used_at (61 s old) allows it; the local throttle uses the
    # monotonic clock, which the fake clock does not move: still one write.
    assert store.calls["touch"] == 1


async def test_last_used_throttle_holds_across_managers_sharing_a_store(
    store: CountingStore, clock: FakeClock
) -> None:
    a = ApiKeyManager(store, pepper=PEPPER, clock=clock, last_used_interval=60)
    b = ApiKeyManager(store, pepper=PEPPER, clock=clock, last_used_interval=60)
    created = await a.create("lab-1", ())
    for _ in range(5):
        await a.verify(created.key)
        await b.verify(created.key)
    # b sees a's fresh last_used_at in the record it already read: no write at all.
    assert store.calls["touch"] == 1


async def test_last_used_interval_none_never_writes_and_zero_always(
    store: CountingStore, clock: FakeClock
) -> None:
    never = ApiKeyManager(store, pepper=PEPPER, clock=clock, last_used_interval=None)
    created = await never.create("lab-1", ())
    for _ in range(3):
        await never.verify(created.key)
    assert store.calls["touch"] == 0
    always = ApiKeyManager(store, pepper=PEPPER, clock=clock, last_used_interval=0)
    for _ in range(3):
        clock.advance(1)
        await always.verify(created.key)
    assert store.calls["touch"] == 3


async def test_list_keys_per_owner_has_no_secret(manager: ApiKeyManager, clock: FakeClock) -> None:
    a = await manager.create("lab-1", ["grn:read"], name="a")
    clock.advance(1)
    b = await manager.create("lab-1", ["grn:write"], name="b")
    await manager.create("lab-2", ())
    keys = await manager.list_keys("lab-1")
    assert [k.id for k in keys] == [a.id, b.id]
    text = repr(keys)
    assert a.key not in text
    assert "hash" not in text
    assert keys[0].hint == f"gnk_{a.id}_…"


@pytest.mark.parametrize(
    ("owner", "scopes", "name", "pointer"),
    [
        ("", (), "", "#/owner"),
        ("x" * 256, (), "", "#/owner"),
        ("lab", "grn:read", "", "#/scopes"),
        ("lab", ["bad scope<script>"], "", "#/scopes/0"),
        ("lab", [f"s{i}" for i in range(65)], "", "#/scopes"),
        ("lab", (), "n" * 256, "#/name"),
    ],
)
async def test_create_rejects_bad_arguments_without_echoing_them(
    manager: ApiKeyManager, owner: str, scopes: Any, name: str, pointer: str
) -> None:
    with pytest.raises(ValidationFailed) as info:
        await manager.create(owner, scopes, name=name)
    problem = info.value.to_problem()
    assert pointer in [e.get("pointer") for e in problem["errors"]]
    assert "<script>" not in str(problem)


def test_manager_rejects_short_pepper_and_bad_options() -> None:
    with pytest.raises(ConfigurationError):
        ApiKeyManager(MemoryKeyStore(), pepper="short")
    with pytest.raises(ConfigurationError):
        ApiKeyManager(MemoryKeyStore(), last_used_interval=-1)
    with pytest.raises(ValueError, match="prefix"):
        ApiKeyManager(MemoryKeyStore(), prefix="GNK")


async def test_from_env_reads_pepper_prefix_and_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_API_KEYS_PEPPER", PEPPER)
    monkeypatch.setenv("APP_API_KEYS_PREFIX", "gnk_live")
    monkeypatch.setenv("APP_API_KEYS_LAST_USED_INTERVAL", "300")
    keys = ApiKeyManager.from_env("APP_")
    assert isinstance(keys.store, MemoryKeyStore)
    assert keys.prefix == "gnk_live"
    assert keys.last_used_interval == 300
    created = await keys.create("lab-1", ())
    assert created.key.startswith("gnk_live_")
    record = await keys.store.get(created.id)
    assert record is not None
    assert record.algorithm == "hmac-sha256"
    monkeypatch.setenv("APP_API_KEYS_PEPPER", "short-secret")
    with pytest.raises(ConfigurationError) as info:
        ApiKeyManager.from_env("APP_")
    assert "short-secret" not in str(info.value)


async def test_store_outage_is_service_unavailable_never_allow(
    manager: ApiKeyManager, store: CountingStore
) -> None:
    created = await manager.create("lab-1", ())

    async def down(key_id: str) -> None:
        raise ServiceUnavailable("down")

    store.get = down  # type: ignore[method-assign,assignment]
    with pytest.raises(ServiceUnavailable):
        await manager.verify(created.key)


def test_scope_wildcards_cover_whole_segments_only() -> None:
    p = ApiKeyPrincipal("id", "o", frozenset({"grn:*", "admin"}))
    assert p.has_scopes("grn:read", "grn:genes:write", "admin")
    assert not p.has_scopes("grnx:read")
    assert not p.has_scopes("admin:read")
    assert ApiKeyPrincipal("id", "o", frozenset({"*"})).has_scopes("anything")
    assert not ApiKeyPrincipal("id", "o", frozenset({"grn*"})).has_scopes("grnx")


async def test_cache_ttl_serves_verifications_without_store_reads(
    store: CountingStore, clock: FakeClock
) -> None:
    keys = ApiKeyManager(store, pepper=PEPPER, clock=clock, cache_ttl=5)
    created = await keys.create("lab-1", ["grn:read"])
    for _ in range(20):
        await keys.verify(created.key)
    assert store.calls["get"] == 1
    clock.advance(5)
    await keys.verify(created.key)
    assert store.calls["get"] == 2
    # A wrong secret for a cached id is still refused: the hash is compared every time.
    body = f"gnk_{created.id}_{'A' * 32}"
    with pytest.raises(InvalidApiKey):
        await keys.verify(body + api_keys._format.checksum(body))


async def test_cache_revocation_here_is_immediate_elsewhere_within_ttl(
    store: CountingStore, clock: FakeClock
) -> None:
    here = ApiKeyManager(store, pepper=PEPPER, clock=clock, cache_ttl=5)
    elsewhere = ApiKeyManager(store, pepper=PEPPER, clock=clock, cache_ttl=5)
    created = await here.create("lab-1", ())
    await here.verify(created.key)
    await elsewhere.verify(created.key)
    await here.revoke(created.id)
    with pytest.raises(InvalidApiKey):
        await here.verify(created.key)
    await elsewhere.verify(created.key)  # still cached in the other process
    clock.advance(5)
    with pytest.raises(InvalidApiKey):
        await elsewhere.verify(created.key)


async def test_cache_expiry_is_still_checked_on_cached_records(
    store: CountingStore, clock: FakeClock
) -> None:
    keys = ApiKeyManager(store, pepper=PEPPER, clock=clock, cache_ttl=3600)
    created = await keys.create("lab-1", (), expires_in=10)
    await keys.verify(created.key)
    clock.advance(10)
    with pytest.raises(InvalidApiKey):
        await keys.verify(created.key)
    with pytest.raises(ConfigurationError):
        ApiKeyManager(store, cache_ttl=-1)
