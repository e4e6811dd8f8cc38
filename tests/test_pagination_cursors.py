"""Cursors: exact value round trips, and every bad cursor is a 400 (never a 500)."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import math
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    MetaData,
    Table,
    Uuid,
    insert,
    select,
)
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gennet_toolkit.error_handler import install_error_handlers
from gennet_toolkit.pagination import CursorCodec, CursorPaginator, InvalidCursor, link_header
from tests.services import Database
from tests.test_pagination import Base, Gene

SECRET = "test-secret-" + "x" * 20
BOUND = "bound-hash"

values_strategy = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text().filter(lambda s: "\x00" not in s and s[:1] < "\ud800"),
    st.floats(allow_nan=True),
    st.decimals(allow_nan=False, places=4, min_value=-(10**12), max_value=10**12),
    st.datetimes(timezones=st.timezones() | st.none()),
    st.dates(),
    st.times(),
    st.uuids(),
    st.binary(max_size=40),
)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, dt.datetime):
        # Same wall time and offset (zoneinfo gap times compare unequal across zones).
        return (
            type(b) is dt.datetime
            and a.replace(tzinfo=None) == b.replace(tzinfo=None)
            and a.utcoffset() == b.utcoffset()
        )
    return type(a) is type(b) and a == b


@settings(max_examples=200, deadline=None)
@given(values=st.lists(values_strategy, max_size=5), signed=st.booleans())
def test_cursor_values_round_trip_with_their_exact_types(values: list[Any], signed: bool) -> None:
    codec = CursorCodec(secret=SECRET if signed else None)
    text = codec.encode(values, "a", BOUND)
    assert text.isascii()
    assert "=" not in text
    decoded = codec.decode(text, bound_to=BOUND, n_values=len(values))
    assert len(decoded.values) == len(values)
    assert all(_same(a, b) for a, b in zip(values, decoded.values, strict=True))
    assert decoded.direction == "a"


@settings(max_examples=200, deadline=None)
@given(values=st.lists(values_strategy, max_size=5), direction=st.sampled_from("abAB"))
def test_cursor_payload_is_canonical_compact_json(values: list[Any], direction: str) -> None:
    # The encoder writes the JSON itself (speed): it must be exactly what json.dumps
    # writes in compact form, and bound to the tag.
    text = CursorCodec(secret=SECRET).encode(values, direction, BOUND, issued_at=7)  # type: ignore[arg-type]
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    body, tag = raw[:-16], raw[-16:]
    assert hmac.compare_digest(hmac.digest(SECRET.encode(), body, "sha256")[:16], tag)
    doc = body[1:].decode("utf-8")
    payload = json.loads(doc)
    assert doc == json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    assert payload[:3] == [direction, 7, BOUND]
    assert len(payload[3]) == len(values)


def test_encode_refuses_an_unknown_direction() -> None:
    with pytest.raises(ValueError, match="direction"):
        CursorCodec().encode([1], "z", BOUND)  # type: ignore[arg-type]


def _cursor_with_dash_and_underscore(codec: CursorCodec) -> str:
    for i in range(10_000):
        text = codec.encode([i, "GATA1" + "?>~" * (i % 5) + "\u00ff" * (i % 3)], "a", BOUND)
        if "-" in text and "_" in text and len(text) % 4:
            return text
    raise AssertionError("no such cursor")


@pytest.mark.parametrize("secret", [None, SECRET])
def test_only_unpadded_base64url_is_accepted(secret: str | None) -> None:
    codec = CursorCodec(secret=secret)
    text = _cursor_with_dash_and_underscore(codec)
    assert codec.decode(text, bound_to=BOUND, n_values=2).values[1].startswith("GATA1")
    variants = [
        text.replace("-", "+"),  # standard alphabet: the same bytes to a lenient decoder
        text.replace("_", "/"),
        text + "=" * (-len(text) % 4),  # padded
        text[:6] + "\n" + text[6:],
        text[:6] + " " + text[6:],
        text + "é",
        text[:6] + "." + text[6:],
    ]
    for variant in variants:
        with pytest.raises(InvalidCursor) as info:
            codec.decode(variant, bound_to=BOUND, n_values=2)
        assert info.value.reason == "malformed"


@pytest.mark.parametrize(
    "doc",
    [b' ["a",0,"bound-hash",[1]]', b'["a",0,"bound-hash",[1]] ', b'["a",0,"bound-hash",[1]]x'],
)
def test_payload_with_surrounding_bytes_is_malformed(doc: bytes) -> None:
    text = base64.urlsafe_b64encode(b"\x01" + doc).rstrip(b"=").decode()
    with pytest.raises(InvalidCursor) as info:
        CursorCodec().decode(text, bound_to=BOUND, n_values=1)
    assert info.value.reason == "malformed"


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_decoder_fuzz_any_text_is_a_cursor_or_invalid_cursor(text: str) -> None:
    for codec in (CursorCodec(), CursorCodec(secret=SECRET)):
        error: InvalidCursor | None = None
        try:
            codec.decode(text, bound_to=BOUND, n_values=2)
        except InvalidCursor as exc:
            error = exc
        if error is not None:
            assert error.status_code == 400
            assert error.code == "invalid_cursor"


def _raw_cursor(payload: Any, *, version: int = 1, key: str | None = None) -> str:
    body = bytes([version]) + json.dumps(payload).encode()
    if key is not None:
        body += hmac.digest(key.encode(), body, "sha256")[:16]
    return base64.urlsafe_b64encode(body).rstrip(b"=").decode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(payload=json_values | st.lists(json_values, min_size=4, max_size=4))
def test_decoder_fuzz_well_formed_json_payloads_never_escape(payload: Any) -> None:
    codec = CursorCodec()
    with contextlib.suppress(InvalidCursor):
        codec.decode(_raw_cursor(payload), bound_to=BOUND, n_values=1)


def test_signed_cursor_tampered_anywhere_is_rejected() -> None:
    codec = CursorCodec(secret=SECRET)
    text = codec.encode([42, "GATA1"], "a", BOUND)
    raw = bytearray(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    for i in range(len(raw)):
        flipped = bytearray(raw)
        flipped[i] ^= 0x01
        forged = base64.urlsafe_b64encode(bytes(flipped)).rstrip(b"=").decode()
        with pytest.raises(InvalidCursor) as info:
            codec.decode(forged, bound_to=BOUND, n_values=2)
        assert info.value.reason in {"signature", "version"}


def test_cursor_signed_with_another_secret_is_rejected_and_rotation_is_honoured() -> None:
    old = CursorCodec(secret="old-secret-" + "o" * 20)
    text = old.encode([1], "a", BOUND)
    with pytest.raises(InvalidCursor) as info:
        CursorCodec(secret=SECRET).decode(text, bound_to=BOUND, n_values=1)
    assert info.value.reason == "signature"
    rotated = CursorCodec(secret=[SECRET, "old-secret-" + "o" * 20])
    assert rotated.decode(text, bound_to=BOUND, n_values=1).values == (1,)


def test_unsigned_cursor_is_refused_by_a_signing_codec() -> None:
    text = CursorCodec().encode([1], "a", BOUND)
    with pytest.raises(InvalidCursor):
        CursorCodec(secret=SECRET).decode(text, bound_to=BOUND, n_values=1)


@pytest.mark.parametrize("version", [0, 2, 255])
def test_stale_or_future_version_is_rejected(version: int) -> None:
    text = _raw_cursor(["a", int(time.time()), BOUND, [1]], version=version, key=SECRET)
    with pytest.raises(InvalidCursor) as info:
        CursorCodec(secret=SECRET).decode(text, bound_to=BOUND, n_values=1)
    assert info.value.reason == "version"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "!!!",
        "abc=",
        "a b",
        "Zm9v",  # "foo": no version byte
        "x" * 5000,  # past max_length
        _raw_cursor(["a", 0, BOUND]),  # too few members
        _raw_cursor(["z", 0, BOUND, [1]]),  # unknown direction
        _raw_cursor(["a", -1, BOUND, [1]]),
        _raw_cursor(["a", True, BOUND, [1]]),
        _raw_cursor(["a", 0, BOUND, [2**64]]),  # beyond BIGINT
        _raw_cursor(["a", 0, BOUND, ["\x00"]]),
        _raw_cursor(["a", 0, BOUND, [["n", "sNaN"]]]),
        _raw_cursor(["a", 0, BOUND, [["n", "1e999999"]]]),
        _raw_cursor(["a", 0, BOUND, [["u", "not-a-uuid"]]]),
        _raw_cursor(["a", 0, BOUND, [["t", "yesterday"]]]),
        _raw_cursor(["a", 0, BOUND, [["q", "1"]]]),
        _raw_cursor(["a", 0, BOUND, [{"k": 1}]]),
        _raw_cursor(["a", 0, BOUND, [1]])[:-3],
        base64.urlsafe_b64encode(b"\x01" + b"[" * 3000).decode().rstrip("="),
    ],
)
def test_malformed_cursor_is_rejected(text: str) -> None:
    codec = CursorCodec(max_length=4096 if len(text) < 4500 else 2048)
    with pytest.raises(InvalidCursor) as info:
        codec.decode(text, bound_to=BOUND, n_values=1)
    assert info.value.reason in {"malformed", "version"}  # "foo" has a foreign first byte


def test_expired_cursor_is_rejected() -> None:
    codec = CursorCodec(secret=SECRET, max_age=60)
    old = codec.encode([1], "a", BOUND, issued_at=int(time.time()) - 3600)
    with pytest.raises(InvalidCursor) as info:
        codec.decode(old, bound_to=BOUND, n_values=1)
    assert info.value.reason == "expired"
    assert codec.decode(codec.encode([1], "a", BOUND), bound_to=BOUND, n_values=1)


# --------------------------------------------------------------------------- on a database


@pytest.fixture
def session(database: Database) -> Iterator[Session]:
    eng = database.engine()
    Base.metadata.create_all(eng)
    with Session(eng) as s:
        s.execute(
            insert(Gene),
            [
                {"id": i, "score": i % 4 or None, "symbol": f"g{i:02d}", "weight": 0.0}
                for i in range(1, 21)
            ],
        )
        s.commit()
        yield s
    eng.dispose()


def test_cursor_from_another_sort_is_rejected(session: Session) -> None:
    by_score = CursorPaginator(order_by=[Gene.score], secret=SECRET, page_size=5)
    by_symbol = CursorPaginator(order_by=[Gene.symbol], secret=SECRET, page_size=5)
    cursor = by_score.paginate(session, select(Gene)).next_cursor
    with pytest.raises(InvalidCursor) as info:
        by_symbol.paginate(session, select(Gene), cursor)
    assert info.value.reason == "mismatch"
    with pytest.raises(InvalidCursor):
        by_score.paginate(session, select(Gene), cursor, order_by=[Gene.score.desc()])


def test_cursor_from_another_filter_is_rejected(session: Session) -> None:
    pager = CursorPaginator(order_by=[Gene.score], secret=SECRET, page_size=3)
    stmt = select(Gene).where(Gene.score > 1)
    cursor = pager.paginate(session, stmt, fingerprint="score__gt=1").next_cursor
    assert pager.paginate(session, stmt, cursor, fingerprint="score__gt=1").items
    for other in ("score__gt=2", None):
        with pytest.raises(InvalidCursor) as info:
            pager.paginate(session, select(Gene), cursor, fingerprint=other)
        assert info.value.reason == "mismatch"


def test_cursor_of_another_named_paginator_is_foreign(session: Session) -> None:
    genes = CursorPaginator(order_by=[Gene.score], secret=SECRET, page_size=3, name="genes")
    admin = CursorPaginator(order_by=[Gene.score], secret=SECRET, page_size=3, name="admin")
    cursor = admin.paginate(session, select(Gene)).next_cursor
    with pytest.raises(InvalidCursor):
        genes.paginate(session, select(Gene), cursor)


def test_forged_unsigned_cursor_with_wrong_types_is_400_not_a_database_error(
    session: Session,
) -> None:
    pager = CursorPaginator(order_by=[Gene.score, Gene.symbol], page_size=3)
    bound = pager.paginate(session, select(Gene)).next_cursor
    assert bound is not None
    decoded = pager.codec.decode(
        bound, bound_to=_bound_of(bound), n_values=3
    )  # (score, symbol, id)
    forged_values: list[list[Any]] = [
        ["x", "g01", 1],  # str for an int column
        [1, 2, 1],  # int for a str column
        [1, "g01", None],  # NULL for the NOT NULL primary key
        [["f", "1.5"], "g01", 1],  # float for an int column
        [True, "g01", 1],  # bool for an int column
        [["t", "2026-01-01T00:00:00+02:00"], "g01", 1],
    ]
    for values in forged_values:
        forged = _raw_cursor(["a", decoded.issued_at, decoded.query_hash, values])
        with pytest.raises(InvalidCursor) as info:
            pager.paginate(session, select(Gene), forged)
        assert info.value.reason == "mismatch"
    # Well-typed forged positions are just positions: no error, a valid page.
    ok = _raw_cursor(["a", decoded.issued_at, decoded.query_hash, [None, None, 5]])
    assert pager.paginate(session, select(Gene), ok).has_prev


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(values=st.lists(values_strategy, min_size=3, max_size=3), direction=st.sampled_from("abAB"))
def test_fuzzed_unsigned_cursor_pages_or_is_400_on_the_database(
    session: Session, values: list[Any], direction: str
) -> None:
    pager = CursorPaginator(order_by=[Gene.score.desc(), Gene.symbol], page_size=4)
    probe = pager.paginate(session, select(Gene)).next_cursor
    assert probe is not None
    cursor = pager.codec.encode(values, direction, _bound_of(probe))  # type: ignore[arg-type]
    try:
        page = pager.paginate(session, select(Gene), cursor)
    except InvalidCursor:
        return
    assert len(page.items) <= 4


@pytest.mark.parametrize("value", [2**31, -(2**31) - 1, 2**63 - 1])
def test_unsigned_cursor_int_wider_than_the_column_is_400_not_a_driver_error(
    session: Session, value: int
) -> None:
    pager = CursorPaginator(order_by=[Gene.score.desc(), Gene.symbol], page_size=4)
    probe = pager.paginate(session, select(Gene)).next_cursor
    assert probe is not None
    cursor = pager.codec.encode([value, "g01", 1], "a", _bound_of(probe))
    if session.get_bind().dialect.name == "sqlite":  # SQLite integers are 64-bit
        pager.paginate(session, select(Gene), cursor)
        return
    with pytest.raises(InvalidCursor):
        pager.paginate(session, select(Gene), cursor)


def _bound_of(cursor: str) -> str:
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    payload = json.loads(raw[1:].decode())
    return str(payload[2])


def test_cursor_does_not_show_a_plain_bookmark() -> None:
    text = CursorCodec(secret=SECRET).encode(["GATA1", 42], "a", BOUND)
    assert "GATA1" not in text
    assert ":" not in text  # not sqlakeyset's ">s:GATA1~i:42" form


def test_query_hash_depends_on_every_part() -> None:
    from gennet_toolkit.pagination import query_hash

    hashes = {query_hash("a", "b", "c"), query_hash("a", "b", "d"), query_hash("ab", "", "c")}
    assert len(hashes) == 3
    assert hashlib.sha256(b"x").digest()  # stdlib sanity for the import


# --------------------------------------------------------------------------- HTTP


def _app(engine: Any, pager: CursorPaginator) -> Starlette:
    async def genes(request: Request) -> JSONResponse:
        cursor, size = pager.query_args(request.query_params)
        with Session(engine) as s:
            page = pager.paginate(s, select(Gene), cursor, size)
        body = {
            "items": [{"id": g.id, "symbol": g.symbol} for g in page.items],
            "page_info": page.page_info,
        }
        return JSONResponse(body, headers={"Link": page.link_header(str(request.url))})

    app = Starlette(routes=[Route("/genes", genes)])
    install_error_handlers(app)
    return app


@pytest.mark.anyio
async def test_starlette_endpoint_pages_by_link_header_and_answers_bad_cursor_with_400(
    database: Database,
) -> None:
    eng = database.engine()
    Base.metadata.create_all(eng)
    with Session(eng) as s:
        s.execute(insert(Gene), [{"id": i, "score": i % 3, "symbol": f"g{i}"} for i in range(7)])
        s.commit()
    pager = CursorPaginator(order_by=[Gene.score], secret=SECRET, page_size=3, max_page_size=5)
    transport = httpx.ASGITransport(app=_app(eng, pager))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            url: str | None = "/genes?page_size=3&q=keep"
            seen: list[int] = []
            while url:
                r = await client.get(url)
                assert r.status_code == 200
                seen += [g["id"] for g in r.json()["items"]]
                links = httpx.Response(200, headers={"link": r.headers["link"]}).links
                assert "q=keep" in links["first"]["url"]
                url = links.get("next", {}).get("url")
            assert sorted(seen) == list(range(7))
            assert len(seen) == 7

            evil = "AQ" + "A" * 40 + "<script>"
            r = await client.get("/genes", params={"cursor": evil})
            assert r.status_code == 400
            assert r.headers["content-type"].startswith("application/problem+json")
            problem = r.json()
            assert problem["code"] == "invalid_cursor"
            assert "<script>" not in r.text
            assert "Traceback" not in r.text

            r = await client.get("/genes", params={"page_size": "501"})
            assert r.status_code == 400
            assert r.json()["code"] == "invalid_page_size"
    finally:
        eng.dispose()


@pytest.mark.anyio
async def test_fastapi_endpoint_answers_tampered_cursor_with_400(database: Database) -> None:
    from fastapi import FastAPI

    eng = database.engine()
    Base.metadata.create_all(eng)
    with Session(eng) as s:
        s.execute(insert(Gene), [{"id": i, "score": i, "symbol": None} for i in range(4)])
        s.commit()
    pager = CursorPaginator(order_by=[Gene.score], secret=SECRET, page_size=2)
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/genes")
    def genes(cursor: str | None = None) -> dict[str, Any]:
        with Session(eng) as s:
            page = pager.paginate(s, select(Gene), cursor)
        return {"ids": [g.id for g in page.items], "next": page.next_cursor}

    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            first = (await client.get("/genes")).json()
            good = first["next"]
            assert (await client.get("/genes", params={"cursor": good})).json()["ids"] == [2, 3]
            tampered = good[:-2] + ("AA" if good[-2:] != "AA" else "BB")
            r = await client.get("/genes", params={"cursor": tampered})
            assert r.status_code == 400
            assert r.json()["code"] == "invalid_cursor"
            assert tampered not in r.text
    finally:
        eng.dispose()


def test_link_header_without_next_or_prev_has_only_first() -> None:
    from gennet_toolkit.pagination import Page

    page: Page[int] = Page(
        items=[1], next_cursor=None, prev_cursor=None, has_next=False, has_prev=False
    )
    assert link_header(page, "http://x/genes?cursor=abc&a=1") == '<http://x/genes?a=1>; rel="first"'
    page.next_cursor = "n-1"
    assert 'rel="next"' in page.link_header("http://x/genes")
    assert Decimal("1")  # keep the import meaningful for the typed strategy above
    assert uuid.UUID(int=1)


# --------------------------------------------------------------------------- typed keys

typed_meta = MetaData()
wide = Table(
    "pg_wide",
    typed_meta,
    Column("id", Uuid, primary_key=True),
    Column("ts", DateTime(timezone=True), nullable=True),
    Column("day", Date, nullable=True),
    Column("flag", Boolean, nullable=True),
    Column("ratio", Float, nullable=True),
    Column("naive", DateTime(timezone=False), nullable=True),
)
WIDE_KEYS = [wide.c.ts.desc(), wide.c.day, wide.c.flag, wide.c.ratio, wide.c.naive]
right_types = [
    st.datetimes(timezones=st.timezones()),
    st.dates(),
    st.booleans(),
    st.floats(),
    st.datetimes(),
    st.uuids(),
]


@pytest.fixture
def wide_session(database: Database) -> Iterator[Session]:
    eng = database.engine()
    typed_meta.create_all(eng)
    base = dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)
    with Session(eng) as s:
        s.execute(
            insert(wide),
            [
                {
                    "id": uuid.UUID(int=i + 1),
                    "ts": None if i % 5 == 0 else base + dt.timedelta(hours=i % 3),
                    "day": dt.date(2026, 1, 1 + i % 2),
                    "flag": None if i % 4 == 0 else bool(i % 2),
                    "ratio": [0.5, float("inf"), -1.25][i % 3],
                    "naive": dt.datetime(2026, 1, 1) + dt.timedelta(seconds=i % 2),
                }
                for i in range(15)
            ],
        )
        s.commit()
        yield s
    eng.dispose()


def test_typed_keys_page_through_every_row(wide_session: Session) -> None:
    pager = CursorPaginator(order_by=WIDE_KEYS, page_size=2)
    seen, cursor = [], None
    while True:
        page = pager.paginate(wide_session, select(wide), cursor)
        seen += [r.id for r in page.items]
        if not page.has_next:
            break
        cursor = page.next_cursor
    assert sorted(seen) == [uuid.UUID(int=i + 1) for i in range(15)]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    values=st.tuples(*(st.one_of(t, values_strategy) for t in right_types)),
    direction=st.sampled_from("abAB"),
)
def test_fuzzed_typed_cursor_pages_or_is_400_never_a_driver_error(
    wide_session: Session, values: tuple[Any, ...], direction: str
) -> None:
    pager = CursorPaginator(order_by=WIDE_KEYS, page_size=3)
    probe = pager.paginate(wide_session, select(wide)).next_cursor
    assert probe is not None
    cursor = pager.codec.encode(values, direction, _bound_of(probe))  # type: ignore[arg-type]
    try:
        page = pager.paginate(wide_session, select(wide), cursor)
    except InvalidCursor:
        return
    assert len(page.items) <= 3


# --------------------------------------------------------------------------- encryption


def test_encrypted_cursor_hides_sort_key_values_and_round_trips() -> None:
    codec = CursorCodec(secret=SECRET, encrypt=True)
    assert codec.encrypted
    text = codec.encode(["alice@example.org", 42], "a", BOUND)
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    assert b"alice" not in raw
    assert b"example" not in raw
    assert text != codec.encode(["alice@example.org", 42], "a", BOUND)  # fresh nonce
    assert codec.decode(text, bound_to=BOUND, n_values=2).values == ("alice@example.org", 42)


def test_encrypted_cursor_tampered_or_foreign_is_rejected() -> None:
    codec = CursorCodec(secret=SECRET, encrypt=True)
    text = codec.encode([1], "a", BOUND)
    raw = bytearray(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    for i in range(1, len(raw)):
        flipped = bytearray(raw)
        flipped[i] ^= 0x80
        forged = base64.urlsafe_b64encode(bytes(flipped)).rstrip(b"=").decode()
        with pytest.raises(InvalidCursor) as info:
            codec.decode(forged, bound_to=BOUND, n_values=1)
        assert info.value.reason == "signature"
    for other in (
        CursorCodec(secret="another-secret-" + "a" * 20, encrypt=True),
        CursorCodec(secret=SECRET),  # signed-only cursors are not accepted either way
    ):
        with pytest.raises(InvalidCursor):
            other.decode(text, bound_to=BOUND, n_values=1)
    with pytest.raises(InvalidCursor):
        codec.decode(CursorCodec(secret=SECRET).encode([1], "a", BOUND), bound_to=BOUND, n_values=1)
    rotated = CursorCodec(secret=["new-secret-" + "n" * 20, SECRET], encrypt=True)
    assert rotated.decode(text, bound_to=BOUND, n_values=1).values == (1,)


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=200
    )
)
def test_encrypted_decoder_fuzz_is_a_cursor_or_invalid_cursor(text: str) -> None:
    with contextlib.suppress(InvalidCursor):
        CursorCodec(secret=SECRET, encrypt=True).decode(text, bound_to=BOUND, n_values=1)


def test_encrypt_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="secret"):
        CursorCodec(encrypt=True)


def test_encrypted_paginator_pages_every_row(session: Session) -> None:
    pager = CursorPaginator(order_by=[Gene.symbol], secret=SECRET, encrypt=True, page_size=6)
    seen, cursor = [], None
    while True:
        page = pager.paginate(session, select(Gene), cursor)
        seen += [g.id for g in page.items]
        if not page.has_next:
            break
        cursor = page.next_cursor
        assert cursor is not None
        assert b"g0" not in base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    assert seen == list(range(1, 21))


def run_docs_example(page: str, driver: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the first Python block of ``docs/<page>``, then ``driver``, in a fresh process."""
    text = (Path(__file__).resolve().parents[1] / "docs" / page).read_text(encoding="utf-8")
    code = text.split("```python\n", 1)[1].split("\n```", 1)[0]
    return subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code + "\n" + textwrap.dedent(driver)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_docs_example_pages_by_link_and_refuses_a_tampered_cursor(tmp_path: Path) -> None:
    driver = """
        from starlette.testclient import TestClient
        with Session(engine) as s:
            s.add_all(Gene(symbol=f"g{i}", degree=(i % 3 or None)) for i in range(7))
            s.commit()
        with TestClient(app) as c:
            first = c.get("/genes?page_size=3")
            assert 'rel="next"' in first.headers["link"], first.headers
            cursor = first.json()["page_info"]["endCursor"]
            second = c.get("/genes", params={"page_size": 3, "cursor": cursor})
            forged = cursor[:10] + ("B" if cursor[10] == "A" else "A") + cursor[11:]
            bad = c.get("/genes", params={"cursor": forged})
            other = c.get("/genes", params={"cursor": cursor, "prefix": "g"})
        print([g["id"] for g in first.json()["items"] + second.json()["items"]])
        print(bad.status_code, bad.headers["content-type"], bad.json()["reason"])
        print(other.status_code, other.json()["reason"])
    """
    out = run_docs_example("pagination.md", driver, tmp_path)
    assert out.returncode == 0, out.stderr
    # degree DESC with NULLs last, then symbol: g2 g5 | g1 g4 | g0 g3 g6
    assert out.stdout.splitlines() == [
        "[3, 6, 2, 5, 1, 4]",
        "400 application/problem+json signature",
        "400 mismatch",
    ]
