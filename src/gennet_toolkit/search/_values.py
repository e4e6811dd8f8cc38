"""Field declarations, operators and the typed parsing of query-string values."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import math
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from gennet_toolkit.exceptions import BadRequest, ConfigurationError, FieldError

__all__ = [
    "COMPARISON_OPERATORS",
    "LIKE_OPERATORS",
    "LIST_OPERATORS",
    "OPERATORS",
    "Field",
    "InvalidFilter",
]

#: Every operator a field may allow.
OPERATORS: frozenset[str] = frozenset(
    {
        "eq",
        "ne",
        "lt",
        "lte",
        "gt",
        "gte",
        "in",
        "not_in",
        "contains",
        "icontains",
        "startswith",
        "isnull",
        "between",
    }
)
#: Operators that take a comma-separated list of values.
LIST_OPERATORS: frozenset[str] = frozenset({"in", "not_in"})
#: Operators compiled to an escaped ``LIKE``; text fields only.
LIKE_OPERATORS: frozenset[str] = frozenset({"contains", "icontains", "startswith"})
#: Operators that need an ordered type (not bool, enum or UUID).
COMPARISON_OPERATORS: frozenset[str] = frozenset({"lt", "lte", "gt", "gte", "between"})

SUPPORTED_TYPES: tuple[type, ...] = (
    int,
    float,
    decimal.Decimal,
    bool,
    dt.date,
    dt.datetime,
    str,
    uuid.UUID,
)

_INT_RE = re.compile(r"[+-]?[0-9]{1,20}")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
# Decimal bounds PostgreSQL's numeric accepts comfortably; beyond them it raises.
_DECIMAL_MAX_DIGITS = 40
_DECIMAL_MAX_EXPONENT = 100


class InvalidFilter(BadRequest):
    """A filter, sort or search parameter was not declared or its value is invalid (400).

    ``errors[]`` names each offending parameter; submitted values are never echoed.
    """

    code = "invalid_filter"
    title = "Invalid filter"
    default_detail = "The filter, sort or search parameters are not valid."


class BadValue(Exception):
    """Internal: one value failed to parse; ``code`` and ``detail`` are client-safe."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail

    def field_error(self, name: str | None) -> FieldError:
        """The problem ``errors[]`` entry for parameter ``name``."""
        return FieldError(self.detail, location="query", name=name, code=self.code)


@dataclass(frozen=True, slots=True)
class Field:
    """How one public filter name maps to a column, and what clients may do with it.

    ``type`` is the Python type values are parsed as (``int``, ``float``,
    ``Decimal``, ``bool``, ``date``, ``datetime``, ``str``, ``UUID`` or an
    ``enum.Enum`` subclass); ``None`` infers it from the column. ``ops`` are the
    allowed operators, ``sortable`` allows ``sort=name``/``sort=-name``. ``path`` is
    the attribute path from the model (``"regulator.symbol"`` goes through the
    ``regulator`` relationship); it defaults to the public name.
    """

    ops: tuple[str, ...] = ("eq",)
    type: Any = None
    sortable: bool = False
    path: str | None = None

    @classmethod
    def coerce(cls, spec: Field | str | Iterable[str]) -> Field:
        """Accept a :class:`Field`, ``"eq,in"`` or ``["eq", "in"]`` as a field spec."""
        if isinstance(spec, Field):
            return spec
        if isinstance(spec, str):
            ops = tuple(p.strip() for p in spec.split(",") if p.strip())
        else:
            ops = tuple(spec)
        return cls(ops=ops)


# --------------------------------------------------------------------------- parsing


def _check_text(raw: str, max_length: int) -> str:
    if len(raw) > max_length:
        raise BadValue("value_too_long", f"The value is longer than {max_length} characters.")
    if "\x00" in raw:
        raise BadValue("invalid_value", "The value contains a NUL character.")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise BadValue("invalid_value", "The value is not valid Unicode text.") from None
    return raw


def _int_parser(bits: int) -> Callable[[str], object]:
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

    def parse(raw: str) -> object:
        if not _INT_RE.fullmatch(raw):
            raise BadValue("invalid_value", "The value is not an integer.")
        value = int(raw)
        if not low <= value <= high:
            raise BadValue("out_of_range", "The integer is out of range.")
        return value

    return parse


def _parse_float(raw: str) -> object:
    if not _FLOAT_RE.fullmatch(raw):
        raise BadValue("invalid_value", "The value is not a number.")
    value = float(raw)
    if not math.isfinite(value):
        raise BadValue("out_of_range", "The number is out of range.")
    return value


def _parse_decimal(raw: str) -> object:
    if not _FLOAT_RE.fullmatch(raw):
        raise BadValue("invalid_value", "The value is not a decimal number.")
    value = decimal.Decimal(raw)
    digits = value.as_tuple().digits
    if len(digits) > _DECIMAL_MAX_DIGITS or abs(value.adjusted()) > _DECIMAL_MAX_EXPONENT:
        raise BadValue("out_of_range", "The decimal number is out of range.")
    return value


def _parse_bool(raw: str) -> object:
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise BadValue("invalid_value", "The value is not a boolean (true or false).")


def _parse_date(raw: str) -> object:
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise BadValue("invalid_value", "The value is not an ISO 8601 date.") from None


def _datetime_parser(timezone: bool | None) -> Callable[[str], object]:
    def parse(raw: str) -> object:
        try:
            value = dt.datetime.fromisoformat(raw)
        except ValueError:
            raise BadValue("invalid_value", "The value is not an ISO 8601 datetime.") from None
        # Compare like with like: naive columns hold UTC, aware ones get an offset.
        if timezone is False and value.tzinfo is not None:
            try:
                value = value.astimezone(dt.UTC).replace(tzinfo=None)
            except OverflowError:
                raise BadValue("out_of_range", "The datetime is out of range.") from None
        elif timezone is True and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value

    return parse


def _parse_uuid(raw: str) -> object:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise BadValue("invalid_value", "The value is not a UUID.") from None


def _enum_parser(enum_cls: type[enum.Enum]) -> Callable[[str], object]:
    by_text: dict[str, enum.Enum] = {}
    for member in enum_cls:
        by_text.setdefault(member.name, member)
    for member in enum_cls:
        by_text[str(member.value)] = member

    def parse(raw: str) -> object:
        try:
            return by_text[raw]
        except KeyError:
            allowed = ", ".join(sorted({str(m.value) for m in enum_cls}))
            raise BadValue("invalid_value", f"The value is not one of: {allowed}.") from None

    return parse


def value_parser(
    py_type: Any, *, max_length: int, int_bits: int = 64, timezone: bool | None = None
) -> Callable[[str], object]:
    """A function turning one raw query-string value into ``py_type`` or raising BadValue."""
    inner: Callable[[str], object]
    if isinstance(py_type, type) and issubclass(py_type, enum.Enum):
        inner = _enum_parser(py_type)
    elif py_type is bool:
        inner = _parse_bool
    elif py_type is int:
        inner = _int_parser(int_bits)
    elif py_type is float:
        inner = _parse_float
    elif py_type is decimal.Decimal:
        inner = _parse_decimal
    elif py_type is dt.datetime:
        inner = _datetime_parser(timezone)
    elif py_type is dt.date:
        inner = _parse_date
    elif py_type is uuid.UUID:
        inner = _parse_uuid
    elif py_type is str:

        def inner(raw: str) -> object:
            return raw

    else:
        raise ConfigurationError(f"search: unsupported field type {py_type!r}")

    def parse(raw: str) -> object:
        return inner(_check_text(raw, max_length))

    return parse


def split_list(raw: str, *, max_items: int) -> list[str]:
    """Split ``a,b,"c,d"`` into items; double quotes protect commas, ``""`` is a quote."""
    items: list[str] = []
    i, n = 0, len(raw)
    while True:
        if i < n and raw[i] == '"':
            # A quoted item runs to the next lone quote; "" inside stands for one quote.
            buf: list[str] = []
            i += 1
            while True:
                if i >= n:
                    raise BadValue("invalid_value", "A quoted value is not closed.")
                if raw[i] == '"':
                    if i + 1 < n and raw[i + 1] == '"':
                        buf.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                buf.append(raw[i])
                i += 1
            if i < n and raw[i] != ",":
                raise BadValue("invalid_value", "Text follows a quoted value.")
            item = "".join(buf)
        else:
            j = raw.find(",", i)
            j = n if j == -1 else j
            item, i = raw[i:j], j
        items.append(item)
        if len(items) > max_items:
            raise BadValue("too_many_values", f"At most {max_items} values are allowed.")
        if i >= n:
            return items
        i += 1


def escape_like(value: str, escape: str = "/") -> str:
    """Escape LIKE wildcards (``%``, ``_``) and the escape character itself."""
    return (
        value.replace(escape, escape + escape).replace("%", escape + "%").replace("_", escape + "_")
    )
