"""The HMAC hash chain: canonical record encoding, link computation and verification.

``h_i = HMAC-SHA256(key, canonical(record_i))`` where the canonical form is the
sorted-key compact JSON of position, stream id, version, type, schema version, data,
actor, metadata, timestamp and ``h_{i-1}``. Positions are gap-free (1, 2, 3, …), so a
deleted, inserted, edited or reordered row breaks the chain at its position; deleting
the newest rows leaves a valid shorter chain, which only an anchor kept outside the
database can expose.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gennet_toolkit.event_sourcing._events import dumps, iso

__all__ = ["GENESIS", "ChainAnchor", "ChainChecker", "VerifyReport", "link"]

#: The "previous hash" of the first record.
GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class ChainAnchor:
    """The chain head ``(position, hash)``: persist it outside the database.

    ``verify(anchor=...)`` then proves that the record at ``position`` still has this
    hash, so truncating or rolling the log back past it is detected.
    """

    position: int
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``{"position": …, "hash": …}``)."""
        return {"position": self.position, "hash": self.hash}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChainAnchor:
        """The inverse of :meth:`to_dict`."""
        return cls(position=int(data["position"]), hash=str(data["hash"]))


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Outcome of :meth:`EventStore.verify`.

    ``ok`` is true when every checked record links correctly (and the anchor, if any,
    matched). Otherwise ``first_broken`` is the first position that fails and
    ``reason`` one of ``"hash mismatch"``, ``"missing position"``, ``"unexpected
    position"``, ``"anchor mismatch"``, ``"truncated"``. ``checked`` counts records
    read; ``head`` is the last good ``(position, hash)``.
    """

    ok: bool
    checked: int
    first_broken: int | None = None
    reason: str | None = None
    head: ChainAnchor | None = None


def link(
    key: bytes,
    *,
    position: int,
    stream_id: str,
    version: int,
    type: str,
    schema_version: int,
    data: Any,
    actor: str | None,
    metadata: Any,
    occurred_at: datetime,
    previous: str,
) -> str:
    """The hex HMAC-SHA256 of one record's canonical encoding."""
    canonical = dumps(
        {
            "actor": actor,
            "data": data,
            "metadata": metadata,
            "occurred_at": iso(occurred_at),
            "position": position,
            "previous": previous,
            "schema_version": schema_version,
            "stream_id": stream_id,
            "type": type,
            "version": version,
        }
    )
    return hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()


class ChainChecker:
    """Checks records fed in position order; remembers the first break."""

    __slots__ = ("_anchor", "_key", "broken", "checked", "expected", "head", "previous", "reason")

    def __init__(
        self,
        key: bytes,
        *,
        anchor: ChainAnchor | None = None,
        start: int = 1,
        previous: str = GENESIS,
    ) -> None:
        self._key = key
        self._anchor = anchor
        self.expected = start
        self.previous = previous
        self.checked = 0
        self.head: ChainAnchor | None = None
        self.broken: int | None = None
        self.reason: str | None = None

    def feed(self, row: Any) -> bool:
        """Check one stored row (attributes as in the events table); False once broken."""
        self.checked += 1
        position = int(row.position)
        if position != self.expected:
            self.broken = self.expected if position > self.expected else position
            self.reason = "missing position" if position > self.expected else "unexpected position"
            return False
        computed = link(
            self._key,
            position=position,
            stream_id=row.stream_id,
            version=row.version,
            type=row.type,
            schema_version=row.schema_version,
            data=row.data,
            actor=row.actor,
            metadata=row.metadata,
            occurred_at=row.occurred_at,
            previous=self.previous,
        )
        if not hmac.compare_digest(computed, str(row.hash)):
            self.broken, self.reason = position, "hash mismatch"
            return False
        anchor = self._anchor
        if (
            anchor is not None
            and position == anchor.position
            and not hmac.compare_digest(computed, anchor.hash)
        ):
            # A valid chain that differs from the anchored one: rolled back and rewritten.
            self.broken, self.reason = position, "anchor mismatch"
            return False
        self.previous = computed
        self.head = ChainAnchor(position, computed)
        self.expected = position + 1
        return True

    def report(self) -> VerifyReport:
        """The report, checking the anchor's position was reached."""
        anchor = self._anchor
        if self.broken is not None:
            return VerifyReport(False, self.checked, self.broken, self.reason, self.head)
        if anchor is not None:
            last = self.head.position if self.head else self.expected - 1
            if last < anchor.position:
                return VerifyReport(False, self.checked, last + 1, "truncated", self.head)
        return VerifyReport(True, self.checked, None, None, self.head)
