"""W3C Trace Context Level 2 test vectors for our parser (no OpenTelemetry needed).

Each row is one rule of the specification (https://www.w3.org/TR/trace-context-2/),
written from the spec text and the cases of its conformance suite.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gennet_toolkit.tracing import (
    TraceParent,
    format_traceparent,
    format_tracestate,
    parse_traceparent,
    parse_tracestate,
)
from gennet_toolkit.tracing._tracecontext import (
    is_valid_tracestate_key,
    is_valid_tracestate_value,
    traceparent_ids,
)

TID = "12345678901234567890123456789012"
PID = "1234567890123456"
VALID = f"00-{TID}-{PID}-01"

# (id, header lines, expected (trace_id, parent_id, flags) or None = restart the trace)
TRACEPARENT_VECTORS: list[tuple[str, list[str], tuple[str, str, int] | None]] = [
    ("valid-sampled", [VALID], (TID, PID, 0x01)),
    ("valid-not-sampled", [f"00-{TID}-{PID}-00"], (TID, PID, 0x00)),
    ("ows-leading-space", [" " + VALID], (TID, PID, 0x01)),
    ("ows-leading-tab", ["\t" + VALID], (TID, PID, 0x01)),
    ("ows-trailing-space", [VALID + " "], (TID, PID, 0x01)),
    ("ows-trailing-tab", [VALID + "\t"], (TID, PID, 0x01)),
    ("ows-both-sides", ["\t " + VALID + " \t"], (TID, PID, 0x01)),
    ("v00-trailing-char", [VALID + "."], None),
    ("v00-future-fields", [VALID + "-what-the-future-will-be-like"], None),
    ("future-version-cc", [f"cc-{TID}-{PID}-01"], (TID, PID, 0x01)),
    ("future-version-extra-field", [f"cc-{TID}-{PID}-01-what-the-future-will-be-like"],
     (TID, PID, 0x01)),
    ("future-version-bad-delimiter", [f"cc-{TID}-{PID}-01.what-the-future-will-be-like"], None),
    ("future-version-too-short", [f"cc-{TID}-{PID}-1"], None),
    ("version-ff-forbidden", [f"ff-{TID}-{PID}-01"], None),
    ("version-illegal-leading", [f".0-{TID}-{PID}-01"], None),
    ("version-illegal-trailing", [f"0.-{TID}-{PID}-01"], None),
    ("version-upper-case", [f"0A-{TID}-{PID}-01"], None),
    ("version-too-long-3", [f"000-{TID}-{PID}-01"], None),
    ("version-too-long-4", [f"0000-{TID}-{PID}-01"], None),
    ("version-too-short", [f"0-{TID}-{PID}-01"], None),
    ("trace-id-all-zero", [f"00-{'0' * 32}-{PID}-01"], None),
    ("trace-id-illegal-leading", [f"00-.{TID[1:]}-{PID}-01"], None),
    ("trace-id-illegal-trailing", [f"00-{TID[:-1]}.-{PID}-01"], None),
    ("trace-id-upper-case", [f"00-{'ABCDEF' + TID[6:]}-{PID}-01"], None),
    ("trace-id-too-long", [f"00-{TID}3-{PID}-01"], None),
    ("trace-id-too-short", [f"00-{TID[:-1]}-{PID}-01"], None),
    ("parent-id-all-zero", [f"00-{TID}-{'0' * 16}-01"], None),
    ("parent-id-illegal-leading", [f"00-{TID}-.{PID[1:]}-01"], None),
    ("parent-id-illegal-trailing", [f"00-{TID}-{PID[:-1]}.-01"], None),
    ("parent-id-upper-case", [f"00-{TID}-ABCDEF{PID[6:]}-01"], None),
    ("parent-id-too-long", [f"00-{TID}-{PID}7-01"], None),
    ("parent-id-too-short", [f"00-{TID}-{PID[:-1]}-01"], None),
    ("flags-illegal-leading", [f"00-{TID}-{PID}-.0"], None),
    ("flags-illegal-trailing", [f"00-{TID}-{PID}-0."], None),
    ("flags-upper-case", [f"00-{TID}-{PID}-0A"], None),
    ("flags-too-long", [f"00-{TID}-{PID}-001"], None),
    ("flags-too-short", [f"00-{TID}-{PID}-1"], None),
    ("flags-random-level-2", [f"00-{TID}-{PID}-02"], (TID, PID, 0x02)),
    ("flags-sampled-and-random", [f"00-{TID}-{PID}-03"], (TID, PID, 0x03)),
    ("flags-reserved-bits-ignored", [f"00-{TID}-{PID}-ff"], (TID, PID, 0x03)),
    ("duplicated-header-distinct", [f"00-{TID[:-1]}1-{PID}-01", VALID], None),
    ("duplicated-header-identical", [VALID, VALID], None),
    ("empty-value", [""], None),
    ("no-header", [], None),
    ("wrong-delimiter", [f"00_{TID}_{PID}_01"], None),
    ("non-ascii", [f"00-{TID[:-1]}é-{PID}-01"], None),
    ("prohibitively-long-future-version", [f"cc-{TID}-{PID}-01-" + "a" * 600], None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("lines", "expected"),
    [pytest.param(lines, expected, id=name) for name, lines, expected in TRACEPARENT_VECTORS],
)
def test_traceparent_vector(lines: list[str], expected: tuple[str, str, int] | None) -> None:
    parsed = parse_traceparent(lines)
    if expected is None:
        assert parsed is None
    else:
        assert parsed is not None
        trace_id, parent_id, flags = expected
        assert (f"{parsed.trace_id:032x}", f"{parsed.parent_id:016x}", parsed.flags) == (
            trace_id,
            parent_id,
            flags,
        )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param(lines[0], expected, id=name)
        for name, lines, expected in TRACEPARENT_VECTORS
        if len(lines) == 1
    ],
)
def test_middleware_fast_path_takes_the_same_decisions_as_the_parser(
    line: str, expected: tuple[str, str, int] | None
) -> None:
    ids = traceparent_ids(line)
    parsed = parse_traceparent(line)
    assert ids == (None if parsed is None else (parsed.version, parsed.trace_id,
                                                 parsed.parent_id, parsed.flags))  # fmt: skip
    assert (ids is None) == (expected is None)


def test_traceparent_accepts_a_single_string() -> None:
    assert parse_traceparent(VALID) == TraceParent(0, int(TID, 16), int(PID, 16), 1)


def test_traceparent_flags_sampled_and_random_properties() -> None:
    parsed = parse_traceparent(f"00-{TID}-{PID}-02")
    assert parsed is not None
    assert parsed.random
    assert not parsed.sampled


def test_future_version_is_sent_back_as_version_00() -> None:
    parsed = parse_traceparent(f"cc-{TID}-{PID}-09-future")
    assert parsed is not None
    assert parsed.to_header() == f"00-{TID}-{PID}-01"


def test_format_traceparent_clears_reserved_flags() -> None:
    assert format_traceparent(1, 2, 0xFF) == f"00-{1:032x}-{2:016x}-03"


ALL_KEY_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_-*/"
ALL_VALUE_CHARS = (
    "".join(map(chr, range(0x20, 0x2C)))
    + "".join(map(chr, range(0x2D, 0x3D)))
    + "".join(map(chr, range(0x3E, 0x7F)))
)
MEMBERS_32 = ",".join(f"bar{i:02d}={i:02d}" for i in range(1, 33))

# (id, header lines, expected members or None = the header is dropped whole)
TRACESTATE_VECTORS: list[tuple[str, list[str], list[tuple[str, str]] | None]] = [
    ("two-members", ["foo=1,bar=2"], [("foo", "1"), ("bar", "2")]),
    ("lines-combined-in-order", ["foo=1,bar=2", "rojo=1,congo=2", "baz=3"],
     [("foo", "1"), ("bar", "2"), ("rojo", "1"), ("congo", "2"), ("baz", "3")]),
    ("empty-header", [""], []),
    ("empty-line-after", ["foo=1", ""], [("foo", "1")]),
    ("empty-line-before", ["", "foo=1"], [("foo", "1")]),
    ("ows-around-members", ["foo=1 \t , \t bar=2, \t baz=3"],
     [("foo", "1"), ("bar", "2"), ("baz", "3")]),
    ("ows-leading-trailing", ["\t foo=1 \t"], [("foo", "1")]),
    ("empty-and-blank-members-skipped", [", ,\t,foo=1,,"], [("foo", "1")]),
    ("value-leading-space-kept", ["foo= 1"], [("foo", " 1")]),
    ("all-allowed-characters", [f"{ALL_KEY_CHARS}={ALL_VALUE_CHARS}"],
     [(ALL_KEY_CHARS, ALL_VALUE_CHARS)]),
    ("all-allowed-characters-tenant", [f"{ALL_KEY_CHARS}@a-z0-9_-*/={ALL_VALUE_CHARS}"],
     [(f"{ALL_KEY_CHARS}@a-z0-9_-*/", ALL_VALUE_CHARS)]),
    ("tenant-may-start-with-digit", ["1tenant@vendor=x"], [("1tenant@vendor", "x")]),
    ("duplicate-key-same-value", ["foo=1,foo=1"], None),
    ("duplicate-key-other-value", ["foo=1,foo=2"], None),
    ("duplicate-key-across-lines", ["foo=1", "foo=2"], None),
    ("key-with-space", ["foo =1"], None),
    ("key-upper-case", ["FOO=1"], None),
    ("key-with-dot", ["foo.bar=1"], None),
    ("simple-key-starts-with-digit", ["1abc=1"], None),
    ("vendor-empty-system", ["foo@=1,bar=2"], None),
    ("vendor-empty-tenant", ["@foo=1,bar=2"], None),
    ("vendor-double-at", ["foo@@bar=1,bar=2"], None),
    ("vendor-two-ats", ["foo@bar@baz=1,bar=2"], None),
    ("vendor-system-starts-with-digit", ["foo@1bar=1"], None),
    ("members-32-allowed", [MEMBERS_32],
     [(f"bar{i:02d}", f"{i:02d}") for i in range(1, 33)]),
    ("members-33-dropped", [MEMBERS_32, "bar33=33"], None),
    ("key-256-allowed", ["foo=1", "z" * 256 + "=1"], [("foo", "1"), ("z" * 256, "1")]),
    ("key-257-dropped", ["foo=1", "z" * 257 + "=1"], None),
    ("tenant-241-system-14-allowed", ["foo=1", "t" * 241 + "@" + "v" * 14 + "=1"],
     [("foo", "1"), ("t" * 241 + "@" + "v" * 14, "1")]),
    ("tenant-242-dropped", ["foo=1", "t" * 242 + "@v=1"], None),
    ("system-15-dropped", ["foo=1", "t@" + "v" * 15 + "=1"], None),
    ("value-with-equals", ["foo=bar=baz"], None),
    ("value-empty", ["foo=,bar=3"], None),
    ("value-256-allowed", ["foo=" + "v" * 256], [("foo", "v" * 256)]),
    ("value-257-dropped", ["foo=" + "v" * 257], None),
    ("value-with-tab", ["foo=a\tb"], None),
    ("value-non-ascii", ["foo=café"], None),
    ("member-without-equals", ["foo"], None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("lines", "expected"),
    [pytest.param(lines, expected, id=name) for name, lines, expected in TRACESTATE_VECTORS],
)
def test_tracestate_vector(lines: list[str], expected: list[tuple[str, str]] | None) -> None:
    assert parse_tracestate(lines) == expected


def test_tracestate_key_and_value_predicates() -> None:
    assert is_valid_tracestate_key("congo")
    assert is_valid_tracestate_key("tenant@rojo")
    assert not is_valid_tracestate_key("Congo")
    assert is_valid_tracestate_value("t61rcWkgMzE")
    assert not is_valid_tracestate_value("a ")


def test_tracestate_under_the_limit_is_sent_unchanged() -> None:
    members = [("rojo", "00f067aa0ba902b7"), ("congo", "t61rcWkgMzE")]
    assert format_tracestate(members) == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"


def test_tracestate_truncation_drops_entries_over_128_chars_first() -> None:
    small = [(f"k{i}", "v" * 40) for i in range(8)]  # 8 x 43 chars
    big = ("big", "x" * 200)
    text = format_tracestate([small[0], big, *small[1:]], limit=512)
    assert "big=" not in text
    assert text == ",".join(f"k{i}={'v' * 40}" for i in range(8))


def test_tracestate_truncation_then_drops_from_the_right_whole_entries() -> None:
    members = [(f"k{i:02d}", "v" * 100) for i in range(10)]  # 104 chars each
    text = format_tracestate(members, limit=512)
    assert len(text) <= 512
    assert text == ",".join(f"k{i:02d}={'v' * 100}" for i in range(4))


_hex_ish = st.text(alphabet="0123456789abcdef0A.", min_size=0, max_size=34)
_traceparent_like = st.builds(
    lambda lead, version, trace_id, parent_id, flags, tail, seps: (
        f"{lead}{version}{seps[0]}{trace_id}{seps[1]}{parent_id}{seps[2]}{flags}{tail}"
    ),
    st.sampled_from(["", " ", "\t", " \t"]),
    st.sampled_from(["00", "01", "cc", "fe", "ff", "0A", "0", "000", ".0"]),
    st.one_of(st.just(TID), st.just("0" * 32), _hex_ish),
    st.one_of(st.just(PID), st.just("0" * 16), _hex_ish.map(lambda s: s[:17])),
    st.sampled_from(["00", "01", "02", "03", "ff", "0A", "1", "001", ".0"]),
    st.sampled_from(["", " ", "\t ", "-", "-future", ".future", "-a-b"]),
    st.sampled_from([("-", "-", "-"), ("-", "-", "_"), ("_", "-", "-")]),
)


@settings(max_examples=400, deadline=None)
@given(_traceparent_like)
def test_traceparent_agrees_with_the_opentelemetry_propagator(value: str) -> None:
    """Differential oracle: for a single header both parsers take the same decision."""
    from opentelemetry.trace import get_current_span
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    theirs = get_current_span(
        TraceContextTextMapPropagator().extract({"traceparent": value})
    ).get_span_context()
    ours = parse_traceparent(value)
    if ours is None:
        assert not theirs.is_valid
    else:
        assert theirs.is_valid
        assert (ours.trace_id, ours.parent_id) == (theirs.trace_id, theirs.span_id)
        assert ours.sampled == theirs.trace_flags.sampled
