"""W3C Trace Context Level 2 parsing and formatting, without any OpenTelemetry import.

The rules, as the specification states them (https://www.w3.org/TR/trace-context-2/):

``traceparent``
    * ``version "-" trace-id "-" parent-id "-" trace-flags``, lower-case hex only;
      leading and trailing OWS (spaces, tabs) is not part of the value.
    * Version ``ff`` is invalid. Version ``00`` is exactly 55 characters.
    * A higher version is parsed as far as version 00 goes: at least 55 characters,
      and a 56th character, if any, must be ``-``; the rest is ignored.
    * An all-zero trace-id or parent-id is invalid.
    * More than one ``traceparent`` header is invalid (the trace restarts).
    * Flags: bit 0 ``sampled``, bit 1 ``random`` (Level 2: the right-most 7 bytes of
      the trace-id are random). Other bits are reserved and are zeroed when we send.

``tracestate``
    * Only read when ``traceparent`` was valid; several header lines are joined with
      ``,`` in order (RFC 9110 field order).
    * Empty and whitespace-only list members are allowed and skipped.
    * ``key = simple-key / multi-tenant-key`` (256 chars, or 241 ``@`` 14), value up
      to 256 printable characters without ``,`` and ``=``, not ending in a space.
    * More than 32 members, a duplicated key, or any malformed member means the
      header could not be parsed, and a header that cannot be parsed is dropped
      whole (the official test suite checks exactly this).
    * When sending, at most ``limit`` (512) characters: whole entries are removed,
      entries longer than 128 characters first, then from the right (the spec's
      truncation rule), so one oversized entry never costs the others.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "FLAG_RANDOM",
    "FLAG_SAMPLED",
    "KNOWN_FLAGS",
    "MAX_TRACESTATE_MEMBERS",
    "TRACESTATE_PROPAGATION_LIMIT",
    "TraceParent",
    "format_traceparent",
    "format_tracestate",
    "is_valid_tracestate_key",
    "is_valid_tracestate_value",
    "parse_traceparent",
    "parse_tracestate",
    "traceparent_ids",
]

FLAG_SAMPLED = 0x01
FLAG_RANDOM = 0x02
#: Flags this implementation understands (Level 2); other bits are sent as zero.
KNOWN_FLAGS = FLAG_SAMPLED | FLAG_RANDOM
MAX_TRACESTATE_MEMBERS = 32
#: The spec asks vendors to propagate at least 512 characters of ``tracestate``.
TRACESTATE_PROPAGATION_LIMIT = 512
_TRUNCATE_FIRST_LONGER_THAN = 128

# Future versions may grow the header; anything this long is not a trace context but
# an attack on the parser ("only disallow prohibitively large headers").
_MAX_TRACEPARENT_LENGTH = 512
# Bounded work for tracestate: 32 members of at most 256 + 1 + 256 characters, plus OWS.
_MAX_TRACESTATE_INPUT = 32 * 520

_OWS = " \t"
_V00_LENGTH = 55
_PREFIX = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_IDS = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_ZERO_TRACE_ID = "0" * 32
_ZERO_PARENT_ID = "0" * 16

_KEYCHARS = r"[a-z0-9_\-*/]"
_KEY = re.compile(
    rf"[a-z]{_KEYCHARS}{{0,255}}"  # simple-key
    rf"|[a-z0-9]{_KEYCHARS}{{0,240}}@[a-z]{_KEYCHARS}{{0,13}}"  # tenant-id "@" system-id
)
_VALUE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A parsed ``traceparent``: ids as integers, flags reduced to the known bits."""

    version: int
    trace_id: int
    parent_id: int
    flags: int

    @property
    def sampled(self) -> bool:
        """The caller may have recorded this request."""
        return bool(self.flags & FLAG_SAMPLED)

    @property
    def random(self) -> bool:
        """Level 2: the right-most 7 bytes of the trace-id were generated randomly."""
        return bool(self.flags & FLAG_RANDOM)

    def to_header(self) -> str:
        """This context as a version-00 header value (the only version we send)."""
        return format_traceparent(self.trace_id, self.parent_id, self.flags)


def parse_traceparent(values: str | Sequence[str]) -> TraceParent | None:
    """Parse the ``traceparent`` header line(s); ``None`` means "restart the trace".

    Pass every line received: two or more lines are invalid even when identical.
    """
    if isinstance(values, str):
        value = values
    elif len(values) == 1:
        value = values[0]
    else:
        return None
    parts = traceparent_ids(value)
    return None if parts is None else TraceParent(*parts)


def traceparent_ids(value: str) -> tuple[int, int, int, int] | None:
    """``(version, trace_id, parent_id, flags)`` of one ``traceparent`` line, or ``None``.

    The same rules as :func:`parse_traceparent` without building a :class:`TraceParent`:
    the middleware calls this once per request.
    """
    if len(value) == _V00_LENGTH and value[:3] == "00-":
        # The common case, no OWS: one regex over the ids, then straight to integers.
        if _IDS.fullmatch(value) is None:
            return None
        trace_id = int(value[3:35], 16)
        parent_id = int(value[36:52], 16)
        if not trace_id or not parent_id:
            return None
        return 0, trace_id, parent_id, int(value[53:], 16) & KNOWN_FLAGS
    value = value.strip(_OWS)
    size = len(value)
    if size < _V00_LENGTH or size > _MAX_TRACEPARENT_LENGTH:
        return None
    match = _PREFIX.fullmatch(value, 0, _V00_LENGTH)
    if match is None:
        return None
    version, trace_id_hex, parent_id_hex, flags = match.groups()
    if version == "ff":
        return None
    if version == "00":
        if size != _V00_LENGTH:
            return None
    elif size > _V00_LENGTH and value[_V00_LENGTH] != "-":
        return None
    if trace_id_hex == _ZERO_TRACE_ID or parent_id_hex == _ZERO_PARENT_ID:
        return None
    return (int(version, 16), int(trace_id_hex, 16), int(parent_id_hex, 16),
            int(flags, 16) & KNOWN_FLAGS)  # fmt: skip


def format_traceparent(trace_id: int, span_id: int, flags: int) -> str:
    """A version-00 ``traceparent`` value; reserved flag bits are cleared."""
    return f"00-{trace_id:032x}-{span_id:016x}-{flags & KNOWN_FLAGS:02x}"


def is_valid_tracestate_key(key: str) -> bool:
    """``simple-key`` (1-256 chars) or ``tenant-id@system-id`` (1-241 @ 1-14 chars)."""
    return _KEY.fullmatch(key) is not None


def is_valid_tracestate_value(value: str) -> bool:
    """1-256 printable ASCII characters without ``,`` or ``=``, not ending in a space."""
    return _VALUE.fullmatch(value) is not None


def parse_tracestate(values: str | Iterable[str]) -> list[tuple[str, str]] | None:
    """Parse the ``tracestate`` header line(s) into ordered ``(key, value)`` pairs.

    Returns ``[]`` for an empty header and ``None`` when the header cannot be parsed
    (too many members, a duplicated key, a malformed member): the caller must then
    neither use nor propagate it.
    """
    combined = values if isinstance(values, str) else ",".join(values)
    if len(combined) > _MAX_TRACESTATE_INPUT:
        return None
    members: list[tuple[str, str]] = []
    seen: set[str] = set()
    for raw in combined.split(","):
        member = raw.strip(_OWS)
        if not member:
            continue  # empty and whitespace-only members are explicitly allowed
        key, sep, value = member.partition("=")
        if not sep or _KEY.fullmatch(key) is None or _VALUE.fullmatch(value) is None:
            return None
        if key in seen:
            return None
        seen.add(key)
        members.append((key, value))
        if len(members) > MAX_TRACESTATE_MEMBERS:
            return None
    return members


def format_tracestate(
    members: Iterable[tuple[str, str]], limit: int = TRACESTATE_PROPAGATION_LIMIT
) -> str:
    """Render members as a header value of at most ``limit`` characters.

    Truncation removes whole entries only: first those longer than 128 characters,
    then from the right, as the specification prescribes.
    """
    entries = [f"{k}={v}" for k, v in members]
    text = ",".join(entries)
    if len(text) <= limit:
        return text
    entries = [e for e in entries if len(e) <= _TRUNCATE_FIRST_LONGER_THAN]
    total = sum(len(e) for e in entries) + max(len(entries) - 1, 0)
    while entries and total > limit:
        dropped = entries.pop()
        total -= len(dropped) + (1 if entries else 0)
    return ",".join(entries)
