"""Keyset (cursor) pagination for SQLAlchemy 2 selects, with opaque signed cursors.

- :class:`CursorPaginator` pages any ``Select`` (ORM or Core) on a sync ``Session`` or an
  ``AsyncSession`` by keyset, never OFFSET: forward and backward, mixed ASC/DESC, NULL-safe
  with the same NULL placement on SQLite and PostgreSQL, the primary keys appended as a
  unique tiebreak;
- :class:`Page` carries the items, cursors, ``has_next``/``has_prev``, an opt-in total,
  Relay ``page_info`` and an RFC 8288 ``Link`` header (:func:`link_header`);
- cursors are versioned, bound to the sort and the filter fingerprint and HMAC-signed
  when a secret is set: a malformed, tampered, foreign, stale or expired cursor is an
  :class:`InvalidCursor` (400 problem+json), never a 500;
- client sorts (``sort="-created_at,name"``) may name only the declared ``sortable``
  keys (:class:`InvalidSort`, 400), so hidden columns are never sort oracles.
"""

from __future__ import annotations

from gennet_toolkit.pagination._cursor import (
    CURSOR_VERSION,
    Cursor,
    CursorCodec,
    InvalidCursor,
    query_hash,
)
from gennet_toolkit.pagination._paginator import (
    CursorPaginator,
    InvalidPageSize,
    InvalidSort,
    Page,
    link_header,
)

__all__ = [
    "CURSOR_VERSION",
    "Cursor",
    "CursorCodec",
    "CursorPaginator",
    "InvalidCursor",
    "InvalidPageSize",
    "InvalidSort",
    "Page",
    "link_header",
    "query_hash",
]
