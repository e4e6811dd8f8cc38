"""Property tests for gennet_toolkit.search: any query string is a result or a 400.

And once compiled, the statement runs on SQLite and PostgreSQL without a database error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select
from sqlalchemy.exc import DBAPIError

from gennet_toolkit.search import OPERATORS, FilterResult, InvalidFilter, create_search_index
from tests.services import Database
from tests.test_search import FS, INTERACTIONS, NASTY, Base, Gene, Interaction, gene_rows

FIELDS = [
    "id",
    "symbol",
    "description",
    "weight",
    "kind",
    "essential",
    "uid",
    "created_at",
    "regulates.target.symbol",
    "regulates.sign",
    "password_hash",
    "nope",
]
OPS = [*sorted(OPERATORS), "regex", "", "eq__eq"]
INTERESTING = [
    "",
    "0",
    "-1",
    "0.5",
    "1e308",
    "1e309",
    "-0",
    "99999999999999999999999",
    "nan",
    "true",
    "no",
    "tf",
    "GENE",
    "2024-01-02",
    "2024-01-02T03:04:05+14:00",
    "9999-12-31T23:59:59-12:00",
    "0001-01-01T00:00:00+01:00",
    "00000000-0000-0000-0000-000000000003",
    "lacZ,lacY",
    '"a,b",c',
    '"',
    "0.1,0.9",
    "-weight,symbol",
    "+id",
    "%",
    "_",
    "/",
    "\\",
    "\x00",
    "\ud800",
    "'; DROP TABLE search_genes; --",
    *NASTY,
]

texts = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
values = st.one_of(st.sampled_from(INTERESTING), texts)
# Characters databases refuse (NUL, lone surrogates) get a branch of their own.
REFUSED = ["\x00", "a\x00b", "\ud800", "x\udfff", "\x00,a"]
db_values = st.one_of(st.sampled_from(INTERESTING), st.sampled_from(REFUSED), texts)


@st.composite
def names(draw: st.DrawFn) -> str:
    """Parameter names: mostly well-formed, in both syntaxes, some random."""
    field = draw(st.sampled_from(FIELDS))
    op = draw(st.sampled_from(OPS))
    form = draw(st.integers(0, 5))
    if form == 0:
        return field
    if form == 1:
        return f"{field}__{op}"
    if form == 2:
        return f"filter[{field}][{op}]"
    if form == 3:
        return f"filter[{field}]"
    if form == 4:
        return draw(st.sampled_from(["sort", "q", "cursor", "page[size]", "filter[", "__"]))
    return draw(texts)


params = st.lists(st.tuples(names(), values), max_size=8)

DECLARED = sorted((field, op) for field, ops in FS.describe()["filters"].items() for op in ops)


@st.composite
def declared_pairs(draw: st.DrawFn) -> tuple[str, str]:
    """A declared field and operator in either syntax, with any value."""
    field, op = draw(st.sampled_from(DECLARED))
    name = draw(
        st.sampled_from(
            [f"{field}__{op}", f"filter[{field}][{op}]"] + ([field] if op == "eq" else [])
        )
    )
    return name, draw(db_values)


# Mostly accepted queries, so the database sees many odd values that passed parsing.
accepted = st.lists(
    st.one_of(
        declared_pairs(),
        st.tuples(st.just("q"), values),
        st.tuples(st.just("sort"), st.sampled_from(["-weight,symbol", "id", "-created_at"])),
    ),
    max_size=4,
    unique_by=lambda pair: pair[0].replace("filter[", "").split("]")[0].split("__")[0],
)


def outcome(p: list[tuple[str, str]], **kw: Any) -> FilterResult | None:
    """Apply; a 400 is fine (None), any other exception fails the test."""
    try:
        return FS.apply(select(Gene.id), p, **kw)
    except InvalidFilter as exc:
        error = exc
    assert error.status_code == 400
    assert error.errors
    return None


@settings(max_examples=400, deadline=None)
@given(params, st.sampled_from(["sqlite", "postgresql"]))
def test_any_query_is_a_result_or_a_400(p: list[tuple[str, str]], dialect: str) -> None:
    result = outcome(p, dialect=dialect)
    if result is not None:
        assert result.fingerprint.startswith("f1:")
        # Parameter order never changes the fingerprint.
        again = FS.apply(select(Gene.id), list(reversed(p)), dialect=dialect)
        assert again.fingerprint == result.fingerprint


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_raw_query_string_is_a_result_or_a_400(raw: str) -> None:
    outcome(raw, dialect="sqlite")  # type: ignore[arg-type]


@pytest.fixture
def loaded(database: Database) -> Iterator[Any]:
    """An engine on a database with the network and its search index."""
    eng = database.engine()
    Base.metadata.create_all(eng)
    with eng.begin() as conn:
        conn.execute(insert(Gene), gene_rows())
        conn.execute(insert(Interaction), INTERACTIONS)
        create_search_index(conn, Gene, ["symbol", "description"])
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.mark.slow
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(p=st.one_of(accepted, params))
def test_accepted_queries_never_cause_a_database_error(
    loaded: Any, p: list[tuple[str, str]]
) -> None:
    result = outcome(p, dialect=loaded)
    if result is None:
        return
    with loaded.connect() as conn:
        try:
            conn.execute(result.select).all()
        except DBAPIError as exc:  # pragma: no cover - the failure this test looks for
            pytest.fail(f"database error for {p!r}: {exc.orig!r}")
