"""Idempotency keys for batches: the same key and payload replay the stored result.

Keys live in a small table (``gennet_batch_idempotency`` by default) with the payload
digest, the stored result and an expiry. The key is claimed with
``INSERT … ON CONFLICT DO NOTHING`` in the batch's own transaction, so the claim, the
writes and the stored result commit together, and a concurrent request with the same
key waits for the first one and then replays it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Generator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from gennet_toolkit.batch_operations._ops import Execute, Op, Plan, dialect_insert
from gennet_toolkit.batch_operations._result import BatchResult
from gennet_toolkit.exceptions import BadRequest, Conflict

__all__ = ["check_key", "digest", "idempotent", "make_table", "purge_plan"]

_KEY_RE = re.compile(r"[\x21-\x7e]{1,255}")


def make_table(name: str) -> sa.Table:
    """The key table (its own MetaData, so it never joins the application's)."""
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("scope", sa.String(255), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("expires_at", sa.Float, nullable=False, index=True),
    )


def check_key(key: Any) -> str:
    """Accept 1–255 visible ASCII characters; anything else is a 400 (value not echoed)."""
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise BadRequest(
            "The idempotency key must be 1 to 255 visible ASCII characters.",
            code="invalid_idempotency_key",
        )
    return key


def digest(operation: str, options: Mapping[str, Any], payload: Sequence[Any]) -> str:
    """SHA-256 over a canonical JSON form of the operation, its options and the items."""
    text = json.dumps(
        [operation, dict(options), list(payload)],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
        ensure_ascii=False,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def idempotent(
    plan: Plan,
    table: sa.Table,
    *,
    dialect: str,
    scope: str,
    key: str,
    payload_digest: str,
    now: float,
    ttl: float,
) -> Generator[Op, Any, BatchResult]:
    """Wrap ``plan``: replay a stored result, refuse a reused key, or run and store."""
    c = table.c
    this = sa.and_(c.scope == scope, c.key == key)
    # Expired keys of this scope go first, so a key can be used again after its TTL.
    yield Execute(sa.delete(table).where(c.scope == scope, c.expires_at < now))
    claim = (
        dialect_insert(table, dialect)
        .values(scope=scope, key=key, digest=payload_digest, result=None, expires_at=now + ttl)
        .on_conflict_do_nothing()
        .returning(c.key)
    )
    claimed = yield Execute(claim, fetch=True)
    if not claimed:
        stored = yield Execute(sa.select(c.digest, c.result).where(this), fetch=True)
        if not stored or stored[0][1] is None:
            raise Conflict(
                "A batch with this idempotency key is still being processed.",
                code="idempotency_in_progress",
            )
        if stored[0][0] != payload_digest:
            raise Conflict(
                "This idempotency key was used with a different payload.",
                code="idempotency_key_reused",
            )
        replay = BatchResult.from_dict(json.loads(stored[0][1]))
        replay.replayed = True
        plan.close()
        return replay
    result = yield from plan
    if not result.rejected:
        body = json.dumps(result.to_dict(), separators=(",", ":"))
        yield Execute(sa.update(table).where(this).values(result=body))
    return result


def purge_plan(table: sa.Table, now: float) -> Generator[Op, Any, None]:
    """Delete every expired key."""
    yield Execute(sa.delete(table).where(table.c.expires_at < now))
