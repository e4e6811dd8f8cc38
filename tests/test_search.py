"""Tests for gennet_toolkit.search: declared filters, sorting and full-text search."""

from __future__ import annotations

import datetime as dt
import enum
import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import (
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    Uuid,
    delete,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gennet_toolkit.exceptions import BadRequest, ConfigurationError
from gennet_toolkit.search import (
    Field,
    FilterSet,
    FullText,
    InvalidFilter,
    create_search_index,
    fts5_query,
    postgres_search_ddl,
    sqlite_search_ddl,
)
from gennet_toolkit.search._values import escape_like, split_list
from tests.services import Database

PROBLEM = "application/problem+json"
SECRET = "hunter2-secret-value"
CURSOR_SECRET = "search-tests-cursor-secret-0123456789"


class Base(DeclarativeBase):
    """Declarative base of the search test models."""


class Kind(enum.Enum):
    TF = "tf"
    GENE = "gene"


class Gene(Base):
    __tablename__ = "search_genes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    symbol: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(Text)
    weight: Mapped[float | None] = mapped_column(Float)
    kind: Mapped[Kind] = mapped_column(Enum(Kind), default=Kind.GENE)
    essential: Mapped[bool] = mapped_column(default=False)
    uid: Mapped[uuid.UUID] = mapped_column(Uuid, default=uuid.uuid4)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    password_hash: Mapped[str] = mapped_column(String(128), default="s3cret-hash")

    regulates: Mapped[list[Interaction]] = relationship(
        back_populates="regulator", foreign_keys="Interaction.regulator_id"
    )


class Interaction(Base):
    __tablename__ = "search_interactions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    regulator_id: Mapped[int] = mapped_column(ForeignKey("search_genes.id"))
    target_id: Mapped[int] = mapped_column(ForeignKey("search_genes.id"))
    sign: Mapped[str] = mapped_column(String(16))
    weight: Mapped[float] = mapped_column(Float)

    regulator: Mapped[Gene] = relationship(back_populates="regulates", foreign_keys=[regulator_id])
    target: Mapped[Gene] = relationship(foreign_keys=[target_id])


BASE_TIME = dt.datetime(2024, 1, 1, 12, 0, 0)

GENES: list[dict[str, Any]] = [
    {
        "id": 1,
        "symbol": "lacI",
        "description": "lac operon repressor protein",
        "weight": 0.9,
        "kind": Kind.TF,
        "essential": False,
    },
    {
        "id": 2,
        "symbol": "lacZ",
        "description": "beta-galactosidase",
        "weight": 0.5,
        "kind": Kind.GENE,
        "essential": True,
    },
    {
        "id": 3,
        "symbol": "lacY",
        "description": "lactose permease",
        "weight": 0.5,
        "kind": Kind.GENE,
        "essential": False,
    },
    {
        "id": 4,
        "symbol": "crp",
        "description": "cAMP receptor protein, global regulator",
        "weight": None,
        "kind": Kind.TF,
        "essential": True,
    },
    {
        "id": 5,
        "symbol": "a_%b",
        "description": '100% pure_test /slash\\ "quoted"',
        "weight": 0.1,
        "kind": Kind.GENE,
        "essential": False,
    },
    {
        "id": 6,
        "symbol": "aXYb",
        "description": "wildcard bait",
        "weight": 0.2,
        "kind": Kind.GENE,
        "essential": False,
    },
    {
        "id": 7,
        "symbol": "LACI",
        "description": "upper-case twin",
        "weight": 0.3,
        "kind": Kind.GENE,
        "essential": False,
    },
]

INTERACTIONS: list[dict[str, Any]] = [
    {"id": 1, "regulator_id": 1, "target_id": 2, "sign": "repression", "weight": 0.9},
    {"id": 2, "regulator_id": 1, "target_id": 3, "sign": "repression", "weight": 0.8},
    {"id": 3, "regulator_id": 4, "target_id": 2, "sign": "activation", "weight": 0.7},
    {"id": 4, "regulator_id": 4, "target_id": 3, "sign": "activation", "weight": 0.6},
    {"id": 5, "regulator_id": 4, "target_id": 1, "sign": "activation", "weight": 0.2},
]


def gene_rows() -> list[dict[str, Any]]:
    """Genes with deterministic uids and timestamps."""
    rows = []
    for g in GENES:
        row = dict(g)
        row["uid"] = uuid.UUID(int=g["id"])
        row["created_at"] = BASE_TIME + dt.timedelta(days=g["id"])
        rows.append(row)
    return rows


def gene_filters(**options: Any) -> FilterSet:
    """The FilterSet most tests use; password_hash is deliberately not declared."""
    return FilterSet(
        Gene,
        {
            "id": Field(ops=("eq", "in", "gt"), sortable=True),
            "symbol": Field(
                ops=("eq", "ne", "in", "not_in", "contains", "icontains", "startswith"),
                sortable=True,
            ),
            "description": "contains,icontains,isnull",
            "weight": Field(
                ops=("eq", "lt", "lte", "gt", "gte", "between", "isnull"), sortable=True
            ),
            "kind": "eq,in,not_in",
            "essential": "eq",
            "uid": "eq,in",
            "created_at": Field(ops=("gte", "lt", "between"), sortable=True),
            "regulates.target.symbol": "eq,in,icontains",
            "regulates.sign": "eq",
        },
        searchable=["symbol", "description"],
        **options,
    )


FS = gene_filters()


def problem_of(exc: BadRequest) -> dict[str, Any]:
    """The problem body as a client would receive it."""
    return json.loads(json.dumps(exc.to_problem(instance="/genes")))


def rejected(params: Any, fs: FilterSet = FS) -> dict[str, Any]:
    """Apply ``params`` expecting a 400 and return its problem body."""
    with pytest.raises(InvalidFilter) as info:
        fs.apply(select(Gene), params, dialect="sqlite")
    assert info.value.status_code == 400
    assert isinstance(info.value, BadRequest)
    body = problem_of(info.value)
    assert body["code"] == "invalid_filter"
    return body


# --------------------------------------------------------------------------- parsing (no DB)


def test_undeclared_field_is_rejected_naming_the_parameter() -> None:
    body = rejected({"colour": "blue"})
    assert body["errors"] == [
        {
            "detail": "Unknown filter parameter.",
            "location": "query",
            "parameter": "colour",
            "code": "unknown_filter",
        }
    ]


@pytest.mark.parametrize(
    "params",
    [
        {"password_hash": SECRET},
        {"password_hash__startswith": SECRET},
        {"filter[password_hash][gte]": SECRET},
        {"sort": "-password_hash"},
        {"sort": "password_hash"},
        {"regulates.regulator.password_hash": SECRET},
    ],
)
def test_hidden_columns_give_no_filter_or_sort_oracle(params: dict[str, str]) -> None:
    body = rejected(params)
    assert SECRET not in json.dumps(body)
    assert "password_hash" not in body["detail"]


def test_sorting_a_field_declared_without_sortable_is_rejected() -> None:
    body = rejected({"sort": "symbol,kind"})
    assert body["errors"][0]["parameter"] == "sort"
    assert body["errors"][0]["code"] == "not_sortable"
    assert "Sort key 2" in body["errors"][0]["detail"]


def test_operator_not_declared_for_the_field_is_rejected() -> None:
    body = rejected({"kind__contains": "t"})
    error = body["errors"][0]
    assert error["code"] == "operator_not_allowed"
    assert error["parameter"] == "kind__contains"
    assert "eq, in, not_in" in error["detail"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("id", "12abc"),
        ("id", "99999999999"),  # past PostgreSQL's integer
        ("weight", "nan"),
        ("weight", "inf"),
        ("weight", "1e999"),
        ("weight", "0x10"),
        ("essential", "maybe"),
        ("created_at__gte", "2024-13-01"),
        ("created_at__gte", "yesterday"),
        ("uid", "not-a-uuid"),
        ("kind", "protein"),
        ("symbol", "a\x00b"),
        ("symbol", "\ud800"),
        ("weight__between", "0.1"),
        ("weight__between", "0.1,0.2,0.3"),
        ("weight__isnull", "perhaps"),
    ],
)
def test_values_are_parsed_by_type_and_bad_ones_are_a_400_without_echo(
    name: str, value: str
) -> None:
    body = rejected([(name, value)])
    assert body["errors"][0]["code"] in {"invalid_value", "out_of_range", "too_many_values"}
    assert value not in json.dumps(body, ensure_ascii=False)


def test_every_error_is_reported_at_once() -> None:
    body = rejected([("colour", "x"), ("weight__gte", "heavy"), ("sort", "password_hash")])
    assert [e["code"] for e in body["errors"]] == [
        "unknown_filter",
        "invalid_value",
        "not_sortable",
    ]


def test_parameter_names_that_are_not_plain_are_not_echoed() -> None:
    body = rejected([("<script>alert(1)</script>", "x")])
    assert "parameter" not in body["errors"][0]
    assert "script" not in json.dumps(body)


def test_clause_count_is_capped() -> None:
    fs = gene_filters(max_clauses=2)
    body = rejected({"weight__gte": "0.1", "weight__lte": "0.9", "symbol": "lacZ"}, fs)
    assert body["errors"][0]["code"] == "too_many_clauses"


def test_a_flood_of_parameters_is_refused_before_parsing_them() -> None:
    body = rejected([("colour", "x")] * 10_000)
    assert len(body["errors"]) == 1
    assert body["errors"][0]["code"] == "too_many_clauses"


def test_in_list_size_is_capped_across_repeated_parameters() -> None:
    fs = gene_filters(max_in=3)
    assert fs.apply(select(Gene), {"symbol__in": "a,b,c"}).filters
    assert rejected({"symbol__in": "a,b,c,d"}, fs)["errors"][0]["code"] == "too_many_values"
    repeated = [("symbol__in", "a,b"), ("symbol__in", "c,d")]
    assert rejected(repeated, fs)["errors"][0]["code"] == "too_many_values"


def test_value_length_is_capped() -> None:
    fs = gene_filters(max_value_length=8)
    body = rejected({"symbol": "x" * 9}, fs)
    assert body["errors"][0]["code"] == "value_too_long"
    assert rejected({"symbol__in": "ok," + "y" * 9}, fs)["errors"][0]["code"] == "value_too_long"


def test_sort_keys_and_search_size_are_capped() -> None:
    fs = gene_filters(max_sort=2, max_search_length=10, max_search_terms=2)
    assert rejected({"sort": "id,symbol,weight"}, fs)["errors"][0]["code"] == "too_many_values"
    assert rejected({"q": "x" * 11}, fs)["errors"][0]["code"] == "value_too_long"
    assert rejected({"q": "a b c"}, fs)["errors"][0]["code"] == "too_many_values"


def test_repeated_scalar_parameter_is_ambiguous_and_rejected() -> None:
    body = rejected([("symbol", "lacZ"), ("filter[symbol]", "lacY")])
    assert body["errors"][0]["code"] == "duplicate_value"


def test_repeated_sort_key_is_rejected() -> None:
    assert rejected({"sort": "weight,-weight"})["errors"][0]["code"] == "duplicate_value"


def test_search_is_refused_when_nothing_is_searchable() -> None:
    fs = FilterSet(Gene, {"symbol": "eq"})
    assert rejected({"q": "lac"}, fs)["errors"][0]["parameter"] == "q"


def test_pagination_parameters_are_left_alone() -> None:
    params = [("cursor", "abc"), ("page_size", "10"), ("page[size]", "5"), ("symbol", "lacZ")]
    result = FS.apply(select(Gene), params)
    assert result.filters == (("symbol", "eq", ("lacZ",)),)


def test_jsonapi_and_double_underscore_syntax_are_equivalent() -> None:
    plain = FS.apply(select(Gene), "weight__gte=0.5&symbol=lacZ&kind__in=tf,gene")
    jsonapi = FS.apply(
        select(Gene), "filter[weight][gte]=0.5&filter[symbol]=lacZ&filter[kind][in]=tf,gene"
    )
    assert plain.filters == jsonapi.filters
    assert plain.fingerprint == jsonapi.fingerprint


def test_fingerprint_is_independent_of_parameter_and_list_order() -> None:
    a = FS.apply(select(Gene), "symbol__in=lacZ,lacY&weight__gte=0.50&cursor=x&sort=-weight")
    b = FS.apply(select(Gene), "weight__gte=0.5&symbol__in=lacY,lacZ,lacY")
    c = FS.apply(select(Gene), "weight__gte=0.6&symbol__in=lacY,lacZ")
    d = FS.apply(select(Gene), "weight__gte=0.5&symbol__in=lacY,lacZ&q=repressor", dialect="sqlite")
    assert a.fingerprint == b.fingerprint
    assert len({a.fingerprint, c.fingerprint, d.fingerprint}) == 3
    assert "lacZ" not in a.fingerprint  # a hash: cursors carrying it leak no filter values


def test_fingerprint_differs_between_models() -> None:
    other = FilterSet(Interaction, {"weight": "gte"})
    assert other.apply(select(Interaction), "weight__gte=0.5").fingerprint != (
        FS.apply(select(Gene), "weight__gte=0.5").fingerprint
    )


def test_in_values_split_on_commas_with_quotes_for_literal_commas() -> None:
    assert split_list('a,"b,c",d', max_items=10) == ["a", "b,c", "d"]
    assert split_list('"say ""hi""",', max_items=10) == ['say "hi"', ""]
    assert split_list("", max_items=10) == [""]
    body = rejected({"symbol__in": 'a,"unclosed'})
    assert body["errors"][0]["code"] == "invalid_value"
    assert rejected({"symbol__in": '"a"b'})["errors"][0]["code"] == "invalid_value"


def test_like_escaping_covers_wildcards_and_the_escape_character() -> None:
    assert escape_like("100%_a/b") == "100/%/_a//b"


def test_sql_uses_an_explicit_escape_and_bound_parameters() -> None:
    result = FS.apply(select(Gene), {"symbol__contains": "x'; DROP TABLE--"}, dialect="postgresql")
    sql = str(result.select)
    assert "ESCAPE '/'" in sql
    assert "DROP" not in sql


@pytest.mark.parametrize(
    "spec",
    [
        {"symbol": "eq,regex"},
        {"weight": "contains"},
        {"essential": "lt"},
        {"nope": "eq"},
        {"regulates.target": "eq"},
        {"regulates.target.symbol": Field(ops=("eq",), sortable=True)},
        {"a__b": "eq"},
        {"id": Field(type=str)},
        {"weight": Field(type=dt.date)},
        {"kind": Field(type=str)},
    ],
)
def test_bad_declarations_fail_at_construction(spec: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        FilterSet(Gene, spec)


def test_declared_types_may_narrow_numbers_and_name_the_enum() -> None:
    fs = FilterSet(Gene, {"weight": Field(ops=("gte",), type=int), "kind": Field(type=Kind)})
    result = fs.apply(select(Gene), "weight__gte=1&kind=tf")
    assert result.filters == (("kind", "eq", ("tf",)), ("weight", "gte", ("1",)))
    assert fs.describe() == {
        "filters": {"weight": ["gte"], "kind": ["eq"]},
        "sortable": [],
        "searchable": False,
    }


def test_decimal_values_are_bounded() -> None:
    from decimal import Decimal

    from sqlalchemy import Column, MetaData, Numeric, Table

    table = Table(
        "prices", MetaData(), Column("id", Integer, primary_key=True), Column("p", Numeric(10, 2))
    )
    fs = FilterSet(table, {"p": "gte"})
    assert fs.apply(select(table), "p__gte=1.50").filters == (("p", "gte", ("1.5",)),)
    assert isinstance(fs.parse("p__gte=2").clauses[("p", "gte")][0], Decimal)
    for bad in ("1e999999999", "1" * 41, "NaN", "1.2.3"):
        with pytest.raises(InvalidFilter):
            fs.apply(select(table), [("p__gte", bad)])


def test_default_sort_must_be_sortable() -> None:
    with pytest.raises(ConfigurationError):
        FilterSet(Gene, {"symbol": "eq"}, default_sort=["symbol"])


def test_from_env_reads_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_SEARCH_MAX_IN", "2")
    fs = FilterSet.from_env(Gene, {"symbol": "in"}, prefix="APP_")
    assert fs.max_in == 2
    monkeypatch.setenv("APP_SEARCH_MAX_IN", "two")
    with pytest.raises(ConfigurationError):
        FilterSet.from_env(Gene, {"symbol": "in"}, prefix="APP_")


NASTY = [
    '"',
    '""',
    'unbalanced "quote',
    "(",
    "())(",
    "NEAR(a b)",
    "a AND OR NOT b",
    "NOT",
    "*",
    "lac*",
    "^lac",
    "symbol:lac",
    "-lac",
    "a OR",
    "'; DROP TABLE search_genes; --",
    "\\",
    "ü ß 中文 😀",
    "\u0000null\u0001",
    "   ",
    "&|!<->:*",
    "x" * 256,
    " ".join(["w"] * 16),
]


def test_fts5_query_quotes_every_term_and_doubles_embedded_quotes() -> None:
    assert fts5_query('lac AND "rep') == '"lac" "AND" """rep"'
    assert fts5_query("NEAR(a b)*") == '"NEAR(a" "b)*"'
    assert fts5_query(" \x00 ") == ""


def test_ddl_helpers_emit_fts5_and_gin_statements() -> None:
    sqlite_sql = sqlite_search_ddl(Gene, ["symbol", "description"])
    assert "USING fts5" in sqlite_sql[0]
    assert sum("CREATE TRIGGER" in s for s in sqlite_sql) == 3
    (pg_sql,) = postgres_search_ddl(Gene, ["symbol", "description"], config="simple")
    assert "USING gin" in pg_sql
    assert "to_tsvector('simple'::regconfig" in pg_sql
    with pytest.raises(ConfigurationError):
        sqlite_search_ddl(Gene, ["symbol; DROP"])
    with pytest.raises(ConfigurationError):
        FilterSet(Gene, {}, searchable=FullText(("symbol",), config="english'); --"))


# --------------------------------------------------------------------------- on the databases


@pytest.fixture
def engine(database: Database) -> Iterator[Any]:
    """An engine on a database holding the small network, with its full-text index."""
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


def ids(engine: Any, params: Any, fs: FilterSet = FS, **kw: Any) -> list[int]:
    """The gene ids ``params`` select, in result order."""
    result = fs.apply(select(Gene.id), params, **{"dialect": engine, **kw})
    with engine.connect() as conn:
        return list(conn.scalars(result.select))


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ("symbol=lacZ", [2]),
        ("symbol__ne=lacZ&weight__gte=0.5", [1, 3]),
        ("weight__lt=0.3", [5, 6]),
        ("weight__lte=0.3", [5, 6, 7]),
        ("weight__gt=0.5", [1]),
        ("filter[weight][between]=0.2,0.5", [2, 3, 6, 7]),
        ("weight__isnull=true", [4]),
        ("description__isnull=false&weight__isnull=false&weight__gte=0.9", [1]),
        ("symbol__in=lacZ,lacY,nope", [2, 3]),
        ('symbol__in="lacZ",lacY&symbol__not_in=lacY', [2]),
        ("kind=tf", [1, 4]),
        ("kind__in=tf,GENE&kind__not_in=gene", [1, 4]),
        ("essential=true", [2, 4]),
        ("essential=no", [1, 3, 5, 6, 7]),
        (f"uid={uuid.UUID(int=3)}", [3]),
        (f"uid__in={uuid.UUID(int=3)},{uuid.UUID(int=4).hex}", [3, 4]),
        ("created_at__gte=2024-01-06", [5, 6, 7]),
        ("created_at__lt=2024-01-03T12:00:00", [1]),
        # An aware value compares in UTC against the naive (UTC) column.
        ("created_at__lt=2024-01-03T13:00:00%2B02:00", [1]),
        ("created_at__between=2024-01-02T00:00:00Z,2024-01-04T00:00:00Z", [1, 2]),
        ("startswith=x&symbol__startswith=lac", [1, 2, 3]),
        ("id__gt=5&sort=-id", [7, 6]),
        ("sort=-weight,symbol", [1, 3, 2, 7, 6, 5, 4]),
    ],
)
def test_operators_select_the_right_rows(engine: Any, params: str, expected: list[int]) -> None:
    if params.startswith("startswith=x&"):
        params = params.removeprefix("startswith=x&")
        expected = sorted(expected)
    got = ids(engine, params)
    if "sort=" in params:
        nulls_last = [i for i in got if i != 4] + [i for i in got if i == 4]
        assert nulls_last == expected  # NULL placement is the database's
    else:
        assert sorted(got) == expected


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("contains", "%", [5]),
        ("contains", "_", [5]),
        ("contains", "a_%", [5]),
        ("contains", "a_b", []),  # "_" is not a wildcard: aXYb must not match
        ("startswith", "a_", [5]),
        ("startswith", "a%", []),
        ("icontains", "A_%B", [5]),
        ("icontains", "%", [5]),
    ],
)
def test_like_wildcards_are_matched_literally(
    engine: Any, op: str, value: str, expected: list[int]
) -> None:
    assert sorted(ids(engine, [(f"symbol__{op}", value)])) == expected


@pytest.mark.parametrize(
    ("value", "expected"), [("/slash", [5]), ("\\", [5]), ("//", []), ('"quoted"', [5])]
)
def test_the_escape_character_and_backslashes_are_literal(
    engine: Any, value: str, expected: list[int]
) -> None:
    assert ids(engine, [("description__contains", value)]) == expected


def test_contains_is_case_sensitive_and_icontains_is_not(engine: Any) -> None:
    assert sorted(ids(engine, {"symbol__contains": "laci"})) == []
    assert sorted(ids(engine, {"symbol__contains": "LAC"})) == [7]
    assert sorted(ids(engine, {"symbol__startswith": "LA"})) == [7]
    assert sorted(ids(engine, {"symbol__icontains": "laci"})) == [1, 7]


def test_relation_paths_are_exists_subqueries_without_duplicate_rows(engine: Any) -> None:
    result = FS.apply(select(Gene.id), {"regulates.target.symbol__in": "lacZ,lacY,lacI"})
    sql = str(result.select).upper()
    assert "EXISTS" in sql
    assert "JOIN" not in sql
    with engine.connect() as conn:
        got = list(conn.scalars(result.select))
    assert got == [1, 4]  # crp regulates three of them, and appears once
    assert ids(engine, {"regulates.sign": "activation"}) == [4]
    assert ids(engine, {"regulates.target.symbol__icontains": "LACI"}) == [4]


def test_results_are_ordered_by_primary_key_without_a_sort(engine: Any) -> None:
    assert ids(engine, "weight__gte=0.1") == [1, 2, 3, 5, 6, 7]
    assert ids(engine, "weight__gte=0.1&sort=-weight")[-1] == 5
    assert len(FS.apply(select(Gene), "sort=-weight").order_by) == 2


def test_sorting_by_the_primary_key_adds_no_second_tiebreak() -> None:
    result = FS.apply(select(Gene), "sort=-id")
    assert [str(c) for c in result.order_by] == ["search_genes.id DESC"]


def test_filters_work_on_a_core_table(engine: Any) -> None:
    table = Gene.__table__
    fs = FilterSet(table, {"symbol": "in", "weight": Field(ops=("gte",), sortable=True)})
    result = fs.apply(select(table.c.id), "symbol__in=lacZ,lacI&sort=-weight")
    with engine.connect() as conn:
        assert list(conn.scalars(result.select)) == [1, 2]


# --------------------------------------------------------------------------- full text


def test_full_text_search_finds_and_ranks(engine: Any) -> None:
    assert ids(engine, {"q": "repressor"}) == [1]
    assert sorted(ids(engine, {"q": "protein"})) == [1, 4]
    # "receptor protein" matches crp best: both terms, in a short description.
    assert ids(engine, {"q": "receptor protein"}) == [4]
    ranked = ids(engine, {"q": "lac"})
    assert ranked[0] == 1


def test_search_combines_with_filters_and_explicit_sort(engine: Any) -> None:
    assert ids(engine, {"q": "protein", "kind": "tf", "sort": "-id"}) == [4, 1]


@pytest.mark.parametrize("text", NASTY)
def test_no_search_input_causes_a_database_error(engine: Any, text: str) -> None:
    for dialect in (engine, engine.dialect.name):
        got = ids(engine, [("q", text)], dialect=dialect)
        assert isinstance(got, list)


def test_search_without_a_known_dialect_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="dialect"):
        FS.apply(select(Gene), {"q": "lac"})
    with pytest.raises(ConfigurationError):
        FS.apply(select(Gene), {"q": "lac"}, dialect="mysql")


def test_search_joins_one_row_per_match_and_filters_use_exists(engine: Any) -> None:
    # lacI matches twice over ("lac" in symbol and description): still one row.
    result = FS.apply(
        select(Gene.id), {"q": "lac operon", "regulates.sign": "repression"}, dialect=engine
    )
    with engine.connect() as conn:
        assert list(conn.scalars(result.select)) == [1]


def test_search_index_follows_inserts_updates_and_deletes(engine: Any) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(Gene),
            [
                {
                    "id": 50,
                    "symbol": "araC",
                    "description": "arabinose operon regulator",
                    "created_at": BASE_TIME,
                }
            ],
        )
    assert ids(engine, {"q": "arabinose"}) == [50]
    with engine.begin() as conn:
        conn.execute(update(Gene).where(Gene.id == 50).values(description="xylose"))
    assert ids(engine, {"q": "arabinose"}) == []
    assert ids(engine, {"q": "xylose"}) == [50]
    with engine.begin() as conn:
        conn.execute(delete(Gene).where(Gene.id == 50))
    assert ids(engine, {"q": "xylose"}) == []


def test_create_search_index_is_idempotent(engine: Any) -> None:
    create_search_index(engine, Gene, ["symbol", "description"])
    assert ids(engine, {"q": "repressor"}) == [1]


def test_dialect_is_taken_from_an_engine_or_session(engine: Any) -> None:
    with Session(engine) as session:
        result = FS.apply(
            select(Gene), {"q": "repressor", "symbol__contains": "lac"}, dialect=session
        )
        assert [g.symbol for g in session.scalars(result.select)] == ["lacI"]
    name = engine.dialect.name
    by_engine = FS.apply(select(Gene.id), {"q": "repressor"}, dialect=engine)
    by_name = FS.apply(select(Gene.id), {"q": "repressor"}, dialect=name)
    assert str(by_engine.select.compile(engine)) == str(by_name.select.compile(engine))


@pytest.mark.postgres
def test_postgres_search_uses_the_gin_index(database: Database, engine: Any) -> None:
    if database.kind != "postgres":
        pytest.skip("PostgreSQL only")
    result = FS.apply(select(Gene.id), {"q": "repressor"}, dialect="postgresql")
    with engine.connect() as conn:
        conn.execute(text("SET enable_seqscan = off"))
        compiled = result.select.compile(engine)
        plan = conn.exec_driver_sql("EXPLAIN " + str(compiled), compiled.params).scalars().all()
    assert any("ix_search_genes_fulltext" in line for line in plan), plan


def test_a_stored_tsvector_column_is_searched_and_kept_current(
    database: Database, engine: Any
) -> None:
    spec = FullText(("symbol", "description"), vector_column="search_vector")
    create_search_index(engine, Gene, spec)
    create_search_index(engine, Gene, spec)  # idempotent
    fs = FilterSet(Gene, {"kind": "eq"}, searchable=spec)
    assert ids(engine, {"q": "receptor protein"}, fs) == [4]
    with engine.begin() as conn:
        conn.execute(update(Gene).where(Gene.id == 4).values(description="xylose"))
    assert ids(engine, {"q": "receptor"}, fs) == []
    assert ids(engine, {"q": "xylose", "kind": "tf"}, fs) == [4]
    if database.kind == "postgres":
        result = fs.apply(select(Gene.id), {"q": "xylose"}, dialect="postgresql")
        with engine.connect() as conn:
            conn.execute(text("SET enable_seqscan = off"))
            compiled = result.select.compile(engine)
            plan = conn.exec_driver_sql("EXPLAIN " + str(compiled), compiled.params)
            assert any("ix_search_genes_search_vector" in line for line in plan.scalars())


@pytest.mark.anyio
async def test_async_engine_runs_the_compiled_select(database: Database, engine: Any) -> None:
    aengine = database.async_engine()
    try:
        async with AsyncSession(aengine) as session:
            result = FS.apply(
                select(Gene),
                "symbol__icontains=LAC&weight__gte=0.5&sort=-weight",
                dialect=session,
            )
            genes = (await session.scalars(result.select)).all()
            searched = FS.apply(select(Gene.id), {"q": "repressor"}, dialect=session)
            found = (await session.scalars(searched.select)).all()
    finally:
        await aengine.dispose()
    assert found == [1]
    assert [g.id for g in genes] == [1, 2, 3]


# --------------------------------------------------------------------------- HTTP


def gene_app(engine: Any) -> Starlette:
    """A Starlette app listing genes through the FilterSet."""
    from gennet_toolkit.error_handler import install_error_handlers

    async def list_genes(request: Request) -> JSONResponse:
        with Session(engine) as session:
            result = FS.apply(select(Gene), request.query_params, dialect=session)
            genes = session.scalars(result.select).all()
        return JSONResponse(
            {
                "data": [g.symbol for g in genes],
                "meta": {"filters": [list(f[:2]) for f in result.filters]},
            }
        )

    app = Starlette(routes=[Route("/genes", list_genes)])
    install_error_handlers(app)
    return app


@pytest.mark.anyio
async def test_starlette_endpoint_answers_200_and_problem_json_400(engine: Any) -> None:
    transport = httpx.ASGITransport(app=gene_app(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        ok = await client.get("/genes", params={"weight__gte": "0.5", "sort": "-weight"})
        bad = await client.get("/genes", params={"sort": "-password_hash", "weight__gte": SECRET})
    assert ok.status_code == 200
    assert ok.json()["data"] == ["lacI", "lacZ", "lacY"]
    assert bad.status_code == 400
    assert bad.headers["content-type"].startswith(PROBLEM)
    body = bad.json()
    assert body["code"] == "invalid_filter"
    assert {e["parameter"] for e in body["errors"]} == {"sort", "weight__gte"}
    assert SECRET not in bad.text


# --------------------------------------------------------------------------- with pagination


def walk_pages(session: Session, params: Any, page_size: int) -> list[int]:
    """Every gene id of a filtered, sorted query, page by page through cursors."""
    from gennet_toolkit.pagination import CursorPaginator

    result = FS.apply(select(Gene), params, dialect=session)
    paginator = CursorPaginator(order_by=result.order_by, secret=CURSOR_SECRET)
    seen: list[int] = []
    cursor = None
    while True:
        page = paginator.paginate(
            session,
            result.select,
            cursor=cursor,
            page_size=page_size,
            fingerprint=result.fingerprint,
        )
        seen += [g.id for g in page.items]
        if not page.has_next:
            return seen
        cursor = page.next_cursor


@pytest.mark.parametrize("page_size", [1, 2, 3])
def test_filtered_results_page_through_cursor_pagination(engine: Any, page_size: int) -> None:
    # Rank ties and distinct ranks: descriptions repeat "protein" 1-3 times.
    extra = [
        {
            "id": 100 + i,
            "symbol": f"g{i}",
            "description": " ".join(["protein"] * (i % 3 + 1) + ["filler"] * (i % 4)),
            "weight": (i % 5) / 10 or None,
            "created_at": BASE_TIME,
        }
        for i in range(17)
    ]
    with engine.begin() as conn:
        conn.execute(insert(Gene), extra)
    with Session(engine) as session:
        everything = ids(engine, "weight__gte=0.1&sort=-weight")
        assert walk_pages(session, "weight__gte=0.1&sort=-weight", page_size) == everything
        ranked = ids(engine, {"q": "protein"})
        assert len(ranked) == 19
        assert walk_pages(session, {"q": "protein"}, page_size) == ranked


def test_a_cursor_from_another_filter_is_rejected(engine: Any) -> None:
    from gennet_toolkit.pagination import CursorPaginator, InvalidCursor

    with Session(engine) as session:
        first = FS.apply(select(Gene), "weight__gte=0.1&sort=-weight", dialect=session)
        paginator = CursorPaginator(order_by=first.order_by, secret=CURSOR_SECRET)
        page = paginator.paginate(session, first.select, page_size=2, fingerprint=first.fingerprint)
        other = FS.apply(select(Gene), "weight__gte=0.5&sort=-weight", dialect=session)
        with pytest.raises(InvalidCursor) as info:
            paginator.paginate(
                session,
                other.select,
                cursor=page.next_cursor,
                page_size=2,
                fingerprint=other.fingerprint,
            )
    assert info.value.status_code == 400


def test_default_sort_applies_only_without_sort_or_search(engine: Any) -> None:
    fs = gene_filters(default_sort=["-weight"])
    assert ids(engine, "weight__gte=0.5", fs) == [1, 2, 3]
    assert ids(engine, "weight__gte=0.5&sort=symbol", fs) == [1, 3, 2]
    assert ids(engine, "q=protein&sort=id", fs) == [1, 4]


@pytest.mark.anyio
async def test_fastapi_endpoint_answers_200_and_problem_json_400(engine: Any) -> None:
    from fastapi import FastAPI

    from gennet_toolkit.error_handler import install_error_handlers

    app = FastAPI()
    install_error_handlers(app)

    @app.get("/genes")
    def list_genes(request: Request) -> dict[str, Any]:
        with Session(engine) as session:
            result = FS.apply(select(Gene), request.query_params, dialect=session)
            return {"data": [g.symbol for g in session.scalars(result.select)]}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        ok = await client.get("/genes?filter[symbol][in]=lacZ,crp&q=protein")
        bad = await client.get("/genes?filter[password_hash]=" + SECRET)
    assert ok.status_code == 200
    assert ok.json() == {"data": ["crp"]}
    assert bad.status_code == 400
    assert bad.headers["content-type"].startswith(PROBLEM)
    assert bad.json()["errors"][0]["parameter"] == "filter[password_hash]"
    assert SECRET not in bad.text


def test_filters_only_narrow_an_already_authorised_select(engine: Any) -> None:
    # Authorisation stays in SQL, before any LIMIT: filters are ANDed onto it.
    visible = select(Gene.id).where(Gene.kind == Kind.GENE)
    result = FS.apply(visible, "symbol__startswith=lac&q=lactose", dialect=engine)
    with engine.connect() as conn:
        assert list(conn.scalars(result.select)) == [3]
        assert list(conn.scalars(FS.apply(visible, "kind=tf").select)) == []


BOUNDARY_QUERIES = [
    "id=2147483647",
    "id__in=-2147483648,0",
    "weight__gte=1e308",
    "weight__lte=-1e308",
    "created_at__gte=2024-01-06T00:00:00%2B14:00",
    "created_at__lt=0001-01-01T00:00:00",
    "uid=00000000000000000000000000000003",
    "symbol__icontains=%25_/\\",
    "symbol=" + "x" * 256,
    "q=" + "%22" * 30,
]


@pytest.mark.anyio
async def test_boundary_values_run_on_the_async_drivers(database: Database, engine: Any) -> None:
    # asyncpg types parameters from the column (int4, timestamp): bounds must hold there.
    aengine = database.async_engine()
    try:
        async with AsyncSession(aengine) as session:
            for query in BOUNDARY_QUERIES:
                result = FS.apply(select(Gene.id), query, dialect=session)
                assert isinstance((await session.scalars(result.select)).all(), list)
    finally:
        await aengine.dispose()


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


def test_docs_example_filters_pages_and_binds_cursors_to_the_filter(tmp_path: Path) -> None:
    # The documented search + pagination endpoint, end to end over HTTP.
    driver = """
        from starlette.testclient import TestClient
        with Session(engine) as s:
            s.add_all(
                Gene(symbol=f"g{i:02}", description="lac repressor" if i % 2 else "kinase",
                     weight=i / 100)
                for i in range(70)
            )
            s.commit()
        with TestClient(app) as c:
            q = {"weight__gte": "0.1", "sort": "-weight"}
            first = c.get("/genes", params=q)
            second = c.get("/genes", params={**q, "cursor": first.json()["next"]})
            moved = c.get("/genes", params={"weight__gte": "0.2", "sort": "-weight",
                                            "cursor": first.json()["next"]})
            text = c.get("/genes", params={"q": "repressor", "symbol__startswith": "g1"})
            bad = c.get("/genes?sort=-password_hash&weight__gte=heavy")
        ids = [g["id"] for g in first.json()["data"] + second.json()["data"]]
        print(ids == list(range(70, 10, -1)), second.json()["next"])
        print(moved.status_code, moved.json()["code"])
        print(sorted(g["symbol"] for g in text.json()["data"]))
        print(bad.status_code, [(e["parameter"], e["code"]) for e in bad.json()["errors"]])
    """
    out = run_docs_example("search.md", driver, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "True None",
        "400 invalid_cursor",
        "['g11', 'g13', 'g15', 'g17', 'g19']",
        "400 [('weight__gte', 'invalid_value'), ('sort', 'not_sortable')]",
    ]
