"""Per-item outcomes of a batch: :class:`ItemError` and :class:`BatchResult`."""

from __future__ import annotations

import datetime as _dt
import decimal
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CODES", "BatchResult", "ItemError"]

#: Every item error code, with its per-item HTTP status and the fixed detail text.
#: Details are written once here so that no submitted value can reach a response.
CODES: Mapping[str, tuple[int, str]] = {
    "invalid_item": (422, "The item is not a JSON object."),
    "unknown_field": (422, "The item has fields that are not writable columns."),
    "required": (422, "A required field is missing."),
    "not_null": (422, "The field may not be null."),
    "invalid_type": (422, "The field has the wrong type."),
    "too_long": (422, "The field is longer than the column allows."),
    "out_of_range": (422, "The number is outside the column's range."),
    "invalid_value": (422, "The database rejected a value of the item."),
    "check_violation": (422, "The item violates a check constraint."),
    "foreign_key": (422, "The item references a row that does not exist."),
    "missing_key": (422, "The item lacks a value for a key column."),
    "forbidden": (403, "You are not allowed to write this item."),
    "duplicate_in_batch": (409, "An earlier item in the batch has the same key."),
    "duplicate": (409, "A row with the same key already exists."),
    "still_referenced": (409, "The row is still referenced by other rows."),
    "conflict": (409, "The item conflicts with the current state of the table."),
    "not_found": (404, "No row with this key exists."),
}

_ITEM_STATUS = {"created": 201, "updated": 200, "deleted": 200}


@dataclass(frozen=True, slots=True)
class ItemError:
    """Why the item at ``index`` was not written.

    ``code`` is one of :data:`CODES`; ``detail`` is the fixed text for that code
    (never a submitted value nor database error text); ``field`` names the column
    concerned when there is one (always a real column name, never client input).
    """

    index: int
    detail: str
    code: str = "invalid_value"
    field: str | None = None

    @classmethod
    def of(cls, index: int, code: str, field: str | None = None) -> ItemError:
        """The error for ``code`` with its standard detail."""
        return cls(index, CODES[code][1], code, field)

    @property
    def status(self) -> int:
        """The per-item HTTP status (409 for duplicates, 422 for invalid items, …)."""
        return CODES.get(self.code, (422, ""))[0]

    def to_dict(self) -> dict[str, Any]:
        """``{"code", "detail", "field"?}``: the ``error`` member of a per-item result."""
        out: dict[str, Any] = {"code": self.code, "detail": self.detail}
        if self.field is not None:
            out["field"] = self.field
        return out


def jsonable(value: Any) -> Any:
    """A key value in a JSON-friendly form (UUIDs, decimals and dates as strings)."""
    if isinstance(value, tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, uuid.UUID | decimal.Decimal):
        return str(value)
    if isinstance(value, _dt.date | _dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


@dataclass(slots=True)
class BatchResult:
    """The outcome of one batch call, item by item.

    ``BatchResult(created, failed=[ItemError(index, detail, code)], updated=…,
    deleted=…, keys=…, operation=…, atomic=…, total=…)``. ``created``, ``updated``
    and ``deleted`` list the indices (into the submitted items) that were written;
    ``failed`` lists an :class:`ItemError` per rejected index; ``keys`` maps written
    indices to their primary key where it is known (submitted, or learnt by
    ``RETURNING``). When ``atomic`` and ``failed`` is not empty, nothing was written
    (``rejected``). ``replayed`` is true when the result was served from an
    idempotency key instead of writing again. ``total`` defaults to the number of
    indices mentioned.
    """

    created: list[int] = field(default_factory=list)
    failed: list[ItemError] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)
    keys: dict[int, Any] = field(default_factory=dict)
    operation: str = "create"
    atomic: bool = True
    total: int = -1
    replayed: bool = False

    def __post_init__(self) -> None:
        if self.total < 0:
            self.total = len(self.created) + len(self.updated) + len(self.deleted)
            self.total += len(self.failed)

    @property
    def ok(self) -> bool:
        """True when every item was written."""
        return not self.failed

    @property
    def rejected(self) -> bool:
        """True for an atomic batch that wrote nothing because some item failed."""
        return self.atomic and bool(self.failed)

    @property
    def counts(self) -> dict[str, int]:
        """Items per outcome: created, updated, deleted, failed and total."""
        return {
            "created": len(self.created),
            "updated": len(self.updated),
            "deleted": len(self.deleted),
            "failed": len(self.failed),
            "total": self.total,
        }

    @property
    def status_code(self) -> int:
        """The HTTP status for the whole response.

        200 when every item was written; 207 (multi-status) for a non-atomic batch
        with failures; for a rejected atomic batch the failures' common status, else
        409 when any failure is a conflict and 422 otherwise.
        """
        if not self.failed:
            return 200
        if not self.atomic:
            return 207
        statuses = {e.status for e in self.failed}
        if len(statuses) == 1:
            return statuses.pop()
        return 409 if 409 in statuses else 422

    def item_results(self) -> list[dict[str, Any]]:
        """One entry per item (AIP-style), ordered by index.

        Written items: ``{"index", "status", "result", "key"?}``; failed ones:
        ``{"index", "status", "error": {...}}``. For a rejected atomic batch only the
        failures are listed, as nothing else was written.
        """
        out: list[dict[str, Any]] = []
        for name, indices in (
            ("created", self.created),
            ("updated", self.updated),
            ("deleted", self.deleted),
        ):
            for i in indices:
                entry: dict[str, Any] = {"index": i, "status": _ITEM_STATUS[name], "result": name}
                if i in self.keys:
                    entry["key"] = jsonable(self.keys[i])
                out.append(entry)
        out.extend(
            {"index": e.index, "status": e.status, "error": e.to_dict()} for e in self.failed
        )
        out.sort(key=lambda entry: int(entry["index"]))
        return out

    def to_dict(self) -> dict[str, Any]:
        """The JSON body for an API response: outcome, counts and per-item results."""
        outcome = "ok" if not self.failed else ("rejected" if self.atomic else "partial")
        return {
            "operation": self.operation,
            "atomic": self.atomic,
            "outcome": outcome,
            "replayed": self.replayed,
            "counts": self.counts,
            "results": self.item_results(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatchResult:
        """Rebuild a result from :meth:`to_dict` (keys come back in their JSON form)."""
        result = cls(
            operation=str(data["operation"]),
            atomic=bool(data["atomic"]),
            total=int(data["counts"]["total"]),
        )
        result.replayed = bool(data.get("replayed", False))
        for entry in data["results"]:
            i = int(entry["index"])
            if "error" in entry:
                err = entry["error"]
                result.failed.append(ItemError(i, err["detail"], err["code"], err.get("field")))
                continue
            getattr(result, entry["result"]).append(i)
            if "key" in entry:
                key = entry["key"]
                result.keys[i] = tuple(key) if isinstance(key, list) else key
        return result
