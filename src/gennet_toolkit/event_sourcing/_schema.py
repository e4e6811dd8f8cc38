"""The two tables of an event store (events and snapshots), built per store instance."""

from __future__ import annotations

from gennet_toolkit._optional import require

require("sqlalchemy", extra="sql", feature="gennet_toolkit.event_sourcing")

import sqlalchemy as sa  # noqa: E402  (after the require() above, for its clear error)

from gennet_toolkit.event_sourcing._events import MAX_NAME_LENGTH  # noqa: E402

__all__ = ["Tables"]

_NAME = sa.String(MAX_NAME_LENGTH)


class Tables:
    """``{prefix}events`` and ``{prefix}snapshots`` on a private :class:`sqlalchemy.MetaData`.

    ``position`` is assigned by the store (head + 1, under a lock) rather than by a
    sequence, so positions are gap-free and follow commit order. ``data`` and ``meta``
    are JSON text written by the store, so what was hashed is what is stored.
    """

    def __init__(self, prefix: str = "gennet_") -> None:
        self.metadata = sa.MetaData()
        self.events = sa.Table(
            f"{prefix}events",
            self.metadata,
            sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("stream_id", _NAME, nullable=False),
            sa.Column("version", sa.Integer, nullable=False),
            sa.Column("type", _NAME, nullable=False),
            sa.Column("schema_version", sa.Integer, nullable=False),
            sa.Column("data", sa.Text, nullable=False),
            sa.Column("actor", _NAME, nullable=True),
            sa.Column("correlation_id", _NAME, nullable=True),
            sa.Column("meta", sa.Text, nullable=False),
            sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("hash", sa.String(64), nullable=False),
            # The optimistic-concurrency guarantee: one event per (stream, version),
            # whatever path wrote it.
            sa.UniqueConstraint("stream_id", "version", name=f"{prefix}events_stream_version"),
            sa.Index(f"{prefix}events_type", "type", "position"),
            sa.Index(f"{prefix}events_actor", "actor", "position"),
            sa.Index(f"{prefix}events_correlation", "correlation_id"),
            sa.Index(f"{prefix}events_occurred", "occurred_at"),
        )
        self.snapshots = sa.Table(
            f"{prefix}snapshots",
            self.metadata,
            sa.Column("stream_id", _NAME, primary_key=True),
            sa.Column("version", sa.Integer, nullable=False),
            sa.Column("state", sa.Text, nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        )
