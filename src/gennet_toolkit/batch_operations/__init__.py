"""Batch create, upsert and delete over SQLAlchemy 2, atomic or with per-item results.

- :class:`BatchProcessor` wraps one table and a ``sessionmaker`` or
  ``async_sessionmaker``: :meth:`~BatchProcessor.create_many`,
  :meth:`~BatchProcessor.upsert_many` (``ON CONFLICT DO UPDATE`` on SQLite and
  PostgreSQL), :meth:`~BatchProcessor.delete_many` (by primary key only: there is no
  filter-based bulk delete), and ``a``-prefixed async forms;
- ``atomic=True`` writes all items in one transaction or none of them;
  ``atomic=False`` writes the valid ones and says, per index, why the others failed.
  Failures are found set-based (checks in Python, one ``SELECT … IN`` per chunk for
  foreign keys, ``INSERT … ON CONFLICT … RETURNING`` per chunk), and only a chunk that
  still fails is bisected under savepoints;
- :class:`BatchResult` and :class:`ItemError` carry the outcome; ``to_dict()`` is the
  response body and ``status_code`` its HTTP status (200, 207, or the failures' status);
- idempotency keys replay a stored result, and a key reused with another payload is a
  409; item-count and byte caps answer 413.

Item errors carry a stable ``code`` and a fixed ``detail``: never a submitted value,
never database error text.
"""

from __future__ import annotations

from gennet_toolkit._optional import require

# Everything here is built on SQLAlchemy: without it, fail at import with the install hint.
require("sqlalchemy", extra="sql", feature="gennet_toolkit.batch_operations")

from gennet_toolkit.batch_operations._processor import BatchProcessor  # noqa: E402
from gennet_toolkit.batch_operations._result import CODES, BatchResult, ItemError  # noqa: E402

__all__ = ["BatchProcessor", "BatchResult", "ItemError", "CODES"]
