"""api_keys: the cost of ``ApiKeyManager.verify`` against common alternatives.

Suites:

- ``api-keys-verify``: one verification of a valid key per call.
  - ``ours-memory``: checksum → id lookup in ``MemoryKeyStore`` → HMAC-SHA256 +
    ``compare_digest`` → expiry/revocation → throttled last-used (one write per minute).
  - ``ours-sqlite-sync`` / ``ours-sqlite-async``: the same over ``SqlKeyStore`` on a
    SQLite file (sync engine run in a worker thread; aiosqlite).
  - ``sha256-dict`` / ``sha256-sqlite``: the plain baseline, SHA-256 of the whole token
    looked up by hash (a dict, or an indexed column through the bare ``sqlite3``
    driver): no format check, no expiry, no last-used.
  - ``ours-sqlite-cached``: the sync SQLite store with ``cache_ttl=5`` (records kept
    in process for 5 s; revocations through the same manager apply at once).
  - ``naive-bcrypt`` when ``bcrypt`` is installed, else ``naive-pbkdf2``: what a
    password-style store does per request, a slow KDF of the secret
    (bcrypt cost 12, or PBKDF2-HMAC-SHA256 at passlib's default 29,000 rounds).
- ``api-keys-reject``: one *typo'd* key per call: ours refuses it on the checksum
  alone; the naive KDF store still looks the id up and runs the KDF.
- ``api-keys-middleware``: one request through ``ApiKeyMiddleware`` (memory store) vs
  the bare app, driven in-process.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import sqlite3
import tempfile
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from benchmarks._asgi import make_scope, request_driver
from benchmarks._harness import Suite
from gennet_toolkit.api_keys import (
    ApiKeyManager,
    ApiKeyMiddleware,
    InvalidApiKey,
    MemoryKeyStore,
    SqlKeyStore,
    parse_key,
)

PEPPER = b"bench-pepper-0123456789abcdef"
PBKDF2_ROUNDS = 29_000  # passlib's pbkdf2_sha256 default
N_KEYS = 1_000  # keys in every store, so lookups are not against a one-row table


class TouchCounter(MemoryKeyStore):
    """A memory store counting last-used writes."""

    def __init__(self) -> None:
        super().__init__()
        self.touches = 0

    async def touch(self, key_id: str, when: datetime, not_since: datetime) -> bool:
        self.touches += 1
        return await super().touch(key_id, when, not_since)


def naive_kdf() -> tuple[str, Callable[[str], bytes], Callable[[str, bytes], bool]]:
    """The slow hash a password-style key store would use, and its check."""
    try:
        import bcrypt
    except ImportError:
        salt = os.urandom(16)

        def make(secret: str) -> bytes:
            return hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, PBKDF2_ROUNDS)

        def check(secret: str, stored: bytes) -> bool:
            return hmac.compare_digest(make(secret), stored)

        return "naive-pbkdf2", make, check

    def make_b(secret: str) -> bytes:
        return bytes(bcrypt.hashpw(secret.encode(), bcrypt.gensalt(12)))

    def check_b(secret: str, stored: bytes) -> bool:
        return bool(bcrypt.checkpw(secret.encode(), stored))

    return "naive-bcrypt", make_b, check_b


async def _fill(manager: ApiKeyManager) -> str:
    token = ""
    for i in range(N_KEYS):
        created = await manager.create(f"owner-{i % 50}", ["grn:read"])
        token = created.key
    return token


def main() -> None:
    """Build and run the three suites."""
    tmp = tempfile.mkdtemp(prefix="bench-api-keys-")
    db_path = os.path.join(tmp, "keys.db")

    # --- ours: memory
    mem_store = TouchCounter()
    mem = ApiKeyManager(mem_store, pepper=PEPPER, last_used_interval=60)
    mem_token = asyncio.run(_fill(mem))

    # --- ours: SQLite (sync engine, keys created here; async engine reads the same file)
    engine = sa.create_engine(f"sqlite:///{db_path}")
    sql_sync = ApiKeyManager(SqlKeyStore(engine), pepper=PEPPER, last_used_interval=60)
    sql_token = asyncio.run(_fill(sql_sync))
    sql_cached = ApiKeyManager(
        SqlKeyStore(engine), pepper=PEPPER, last_used_interval=60, cache_ttl=5
    )
    async_engine = create_async_engine(f"sqlite+aiosqlite:///{db_path}")
    sql_async = ApiKeyManager(SqlKeyStore(async_engine), pepper=PEPPER, last_used_interval=60)

    # --- baselines: SHA-256 of the whole token, looked up by hash
    tokens = [asyncio.run(mem.create("x", ())).key for _ in range(N_KEYS)]
    by_hash = {hashlib.sha256(t.encode()).hexdigest(): ("x", ("grn:read",)) for t in tokens}
    plain_token = tokens[-1]
    raw = sqlite3.connect(os.path.join(tmp, "plain.db"), check_same_thread=False)
    raw.execute("CREATE TABLE keys (hash TEXT PRIMARY KEY, owner TEXT, scopes TEXT)")
    raw.executemany("INSERT INTO keys VALUES (?, ?, ?)", [(h, "x", "grn:read") for h in by_hash])
    raw.commit()

    def sha256_dict() -> Any:
        return by_hash[hashlib.sha256(plain_token.encode()).hexdigest()]

    def sha256_sqlite() -> Any:
        digest = hashlib.sha256(plain_token.encode()).hexdigest()
        row = raw.execute("SELECT owner, scopes FROM keys WHERE hash = ?", (digest,)).fetchone()
        if row is None:
            raise LookupError
        return row

    # --- naive KDF per request: id lookup, then the slow hash of the secret
    kdf_label, kdf_make, kdf_check = naive_kdf()
    parsed = parse_key(mem_token)
    assert parsed is not None
    kdf_table = {parsed.key_id: kdf_make(parsed.secret)}

    def naive_verify(token: str) -> bool:
        key_id, _, rest = token[4:].partition("_")
        stored = kdf_table.get(key_id, b"")
        return kdf_check(rest[:-6], stored)

    typo = mem_token[:20] + ("a" if mem_token[20] != "a" else "b") + mem_token[21:]

    async def ours_memory() -> None:
        await mem.verify(mem_token)

    async def ours_sqlite_sync() -> None:
        await sql_sync.verify(sql_token)

    async def ours_sqlite_cached() -> None:
        await sql_cached.verify(sql_token)

    async def ours_sqlite_async() -> None:
        await sql_async.verify(sql_token)

    verify = Suite(
        "api-keys-verify",
        description=f"one valid-key verification per call ({N_KEYS} keys per store)",
    )
    verify.add("ours-memory", ours_memory)
    verify.add("ours-sqlite-sync", ours_sqlite_sync)
    verify.add("ours-sqlite-async", ours_sqlite_async)
    verify.add("ours-sqlite-cached", ours_sqlite_cached)
    verify.add("sha256-dict", sha256_dict)
    verify.add("sha256-sqlite", sha256_sqlite)
    verify.add(kdf_label, lambda: naive_verify(mem_token))
    verify.compare("ours-memory", "sha256-dict")
    verify.compare("ours-memory", kdf_label)
    verify.compare("ours-sqlite-sync", "sha256-sqlite")
    verify.compare("ours-sqlite-async", "sha256-sqlite")
    verify.compare("ours-sqlite-async", kdf_label)
    verify.compare("ours-sqlite-cached", "sha256-sqlite")
    before = mem_store.touches
    verify.run()
    verify.note(
        f"last-used writes by ours-memory during the whole suite: {mem_store.touches - before} "
        "(throttle: one per key per 60 s)"
    )
    verify.write(verify.markdown())

    async def ours_reject() -> None:
        try:
            await mem.verify(typo)
        except InvalidApiKey:
            return
        raise AssertionError("a typo'd key was accepted")

    reject = Suite("api-keys-reject", description="one mistyped key rejected per call")
    reject.add("ours-checksum", ours_reject)
    reject.add(kdf_label, lambda: naive_verify(typo))
    reject.compare("ours-checksum", kdf_label)
    reject.run()

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    scope = make_scope("/genes", headers=[("x-api-key", mem_token)])
    guarded = ApiKeyMiddleware(bare, mem)
    mw = Suite(
        "api-keys-middleware",
        description="one request through ApiKeyMiddleware (memory store) vs the bare app",
        baseline="bare-app",
    )
    mw.add("bare-app", request_driver(bare, scope))
    mw.add("ApiKeyMiddleware", request_driver(guarded, scope))
    mw.compare("ApiKeyMiddleware", "bare-app")
    mw.run()

    engine.dispose()
    raw.close()
    asyncio.run(async_engine.dispose())


if __name__ == "__main__":
    main()
