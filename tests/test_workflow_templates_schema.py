"""workflow_templates without a database: semver, template validation, schema hardening."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field

import gennet_toolkit.workflow_templates as wt
from gennet_toolkit.exceptions import ConfigurationError, ValidationFailed
from gennet_toolkit.workflow_templates import (
    InvalidTemplate,
    SemVer,
    Step,
    Template,
    UnsafePattern,
    check_pattern,
)
from gennet_toolkit.workflow_templates._schema import CompiledSchema

STEPS = [Step("run", uses="tool")]


def make(parameters: Any = None, **kw: Any) -> Template:
    return Template(
        kw.pop("name", "t"),
        kw.pop("version", "1.0.0"),
        kw.pop("steps", STEPS),
        parameters=parameters,
        **kw,
    )


def pointers(exc: InvalidTemplate | ValidationFailed) -> list[str | None]:
    return [e.pointer for e in exc.errors]


def test_public_names_are_exactly_all() -> None:
    public = {n for n in dir(wt) if not n.startswith("_")} - {"annotations"}
    assert set(wt.__all__) == public
    assert {"TemplateRegistry", "Template", "Step", "SqlTemplateStore"} <= public


# --------------------------------------------------------------------------- semver


SPEC_ORDER = [
    "0.9.9",
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.9.0",
    "1.10.0",
    "2.0.0",
    "10.0.0",
]


def test_semver_precedence_follows_the_spec_and_is_numeric() -> None:
    parsed = [SemVer.parse(v) for v in SPEC_ORDER]
    assert sorted([*parsed[6:], *parsed[:6]]) == parsed
    assert SemVer.parse("1.10.0") > SemVer.parse("1.9.0")
    assert sorted(p.sort_key() for p in reversed(parsed)) == [p.sort_key() for p in parsed]


@pytest.mark.parametrize(
    "bad",
    [
        "1.0",
        "v1.0.0",
        "01.0.0",
        "1.0.0-",
        "1.0.0-01",
        "1.0.0+build",
        "1.0.0 ",
        "",
        "1.0.0-a..b",
        "99999999999.0.0",
        "1." * 40 + "0",
    ],
)
def test_malformed_semver_is_refused_as_invalid_template(bad: str) -> None:
    with pytest.raises(ValueError, match="version"):
        SemVer.parse(bad)
    with pytest.raises(InvalidTemplate) as info:
        make(version=bad)
    assert info.value.status_code == 422
    assert pointers(info.value) == ["/version"]
    assert bad.strip() == "" or bad not in json.dumps(info.value.to_problem())


def test_non_string_version_is_invalid_template_not_type_error() -> None:
    with pytest.raises(InvalidTemplate):
        make(version=1)


_ident = st.one_of(
    st.integers(0, 10**9).map(str),
    st.from_regex(r"[0-9]{0,3}[A-Za-z-][0-9A-Za-z-]{0,5}", fullmatch=True),
)
_versions = st.builds(
    lambda a, b, c, pre: f"{a}.{b}.{c}" + ("-" + ".".join(pre) if pre else ""),
    st.integers(0, 12),
    st.integers(0, 12),
    st.integers(0, 12),
    st.lists(_ident, max_size=3),
)


@given(st.lists(_versions, min_size=2, max_size=8))
def test_sort_key_orders_like_semver_precedence(versions: list[str]) -> None:
    parsed = [SemVer.parse(v) for v in versions]
    by_precedence = sorted(parsed)
    by_key = sorted(parsed, key=SemVer.sort_key)
    assert [p._precedence() for p in by_key] == [p._precedence() for p in by_precedence]
    assert all(str(SemVer.parse(str(p))) == str(p) for p in parsed)


# --------------------------------------------------------------------------- steps


def test_cyclic_steps_are_refused_with_a_pointer() -> None:
    steps = [
        Step("a", uses="x", depends_on=["c"]),
        Step("b", uses="x", depends_on=["a"]),
        Step("c", uses="x", depends_on=["b"]),
    ]
    with pytest.raises(InvalidTemplate, match="cycle") as info:
        make(steps=steps)
    assert isinstance(info.value, ConfigurationError)
    assert info.value.to_problem()["status"] == 422
    assert pointers(info.value)[0].startswith("/steps/")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("steps", "pointer"),
    [
        ([Step("a", uses="x", depends_on=["nope"])], "/steps/0/depends_on/0"),
        ([Step("a", uses="x", depends_on=["a"])], "/steps/0/depends_on/0"),
        ([Step("a", uses="x"), Step("a", uses="y")], "/steps/1/name"),
        ([Step("a b", uses="x")], "/steps/0/name"),
        ([Step("a", uses="")], "/steps/0/uses"),
        ([Step("a", uses="x", inputs={"n": float("nan")})], "/steps/0/inputs/n"),
        ([], "/steps"),
        ([Step(f"s{i}", uses="x") for i in range(300)], "/steps"),
    ],
)
def test_bad_steps_are_refused(steps: list[Step], pointer: str) -> None:
    with pytest.raises(InvalidTemplate) as info:
        make(steps=steps)
    assert pointers(info.value) == [pointer]


def test_steps_come_out_in_dependency_order() -> None:
    t = make(
        steps=[
            Step("c", uses="x", depends_on=["a", "b"]),
            Step("b", uses="x", depends_on=["a"]),
            Step("a", uses="x"),
        ]
    )
    assert t.order == ("a", "b", "c")


def test_template_from_json_document_validates_shapes() -> None:
    good = make(tags=["grn"], description="d").to_dict()
    assert Template.from_dict(json.loads(json.dumps(good))) == make(tags=["grn"], description="d")
    for bad in (
        {"name": "t"},
        {**good, "steps": "x"},
        {**good, "steps": [1]},
        {**good, "tags": 5},
        {**good, "name": None},
        {**good, "description": 3},
        {**good, "tags": ["UPPER"]},
        [1, 2],
    ):
        with pytest.raises(InvalidTemplate):
            Template.from_dict(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("step", "pointer"),
    [
        ({"name": "a", "uses": "x", "inputs": [1]}, "/steps/0/inputs"),
        ({"name": "a", "uses": "x", "inputs": None}, "/steps/0/inputs"),
        ({"name": "a", "uses": "x", "depends_on": 5}, "/steps/0/depends_on"),
        ({"name": "a", "uses": "x", "depends_on": [1]}, "/steps/0/depends_on"),
        ({"name": 7, "uses": "x"}, "/steps/0/name"),
        ({"uses": "x"}, "/steps/0/name"),
        ({"name": "a", "uses": ["x"]}, "/steps/0/uses"),
    ],
)
def test_malformed_step_documents_are_invalid_templates(step: Any, pointer: str) -> None:
    doc = {"name": "t", "version": "1.0.0", "steps": [step]}
    with pytest.raises(InvalidTemplate) as info:
        Template.from_dict(doc)
    assert pointers(info.value) == [pointer]


def test_a_single_dependency_may_be_a_string() -> None:
    t = make(steps=[Step("a", uses="x"), Step("b", uses="x", depends_on="a")])  # type: ignore[arg-type]
    assert t.steps[1].depends_on == ("a",)


def test_step_input_referring_to_an_undeclared_parameter_is_refused() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "additionalProperties": False,
    }
    with pytest.raises(InvalidTemplate) as info:
        make(schema, steps=[Step("s", uses="x", inputs={"v": ["${params.b}"]})])
    assert pointers(info.value) == ["/steps/0/inputs/v/0"]


# --------------------------------------------------------------------------- schemas


@pytest.mark.parametrize(
    ("schema", "pointer"),
    [
        ({"$ref": "https://evil.example/schema.json"}, "/parameters/$ref"),
        ({"properties": {"a": {"$ref": "other.json#/x"}}}, "/parameters/properties/a/$ref"),
        (
            {"properties": {"a": {"$dynamicRef": "file:///etc/passwd"}}},
            "/parameters/properties/a/$dynamicRef",
        ),
        ({"properties": {"a": {"$ref": "#/$defs/missing"}}}, "/parameters/properties/a/$ref"),
        ({"$defs": {"x": {"$id": "https://x.example/x"}}}, "/parameters/$defs/x/$id"),
        ({"$schema": "http://json-schema.org/draft-07/schema#"}, "/parameters/$schema"),
        ({"type": "strnig"}, "/parameters/type"),
        (
            {"properties": {"n": {"type": "integer", "default": "four"}}},
            "/parameters/properties/n/default",
        ),
    ],
)
def test_unsafe_or_invalid_schemas_are_refused_at_publish(
    schema: dict[str, Any], pointer: str
) -> None:
    with pytest.raises(InvalidTemplate) as info:
        make(schema)
    assert pointers(info.value) == [pointer]


def test_local_refs_and_pydantic_nested_models_work() -> None:
    class Region(BaseModel):
        chrom: str = Field(pattern=r"^chr[0-9XYM]{1,2}$")
        start: int = Field(ge=0)

    class Params(BaseModel):
        region: Region
        threads: int = 4

    t = make(Params)
    assert "$defs" in t.parameters
    compiled = CompiledSchema(t.parameters)
    assert compiled.validate({"region": {"chrom": "chr1", "start": 5}}) == {
        "region": {"chrom": "chr1", "start": 5},
        "threads": 4,
    }
    with pytest.raises(ValidationFailed) as info:
        compiled.validate({"region": {"chrom": "chrQQQ", "start": -1}})
    assert sorted(pointers(info.value)) == ["/region/chrom", "/region/start"]


def test_parameters_of_the_wrong_kind_are_refused() -> None:
    with pytest.raises(InvalidTemplate):
        make(int)
    with pytest.raises(InvalidTemplate):
        make("not a schema")


EVIL = [
    r"^(a+)+$",
    r"(a|aa)*$",
    r"^(\w+\s?)*$",
    r"^([a-zA-Z0-9]+)*@",
    r"a*a*a*a*a*b",
    r"^\d+\d+$",
    r"\w+.\w+x",
    r"(.*a){12}",
    r"\w*\d+",
    r"[^a]*\s+",
    r"\s*[\u00a0]+",
    r"(a)\1",
    r"(?i)abc",
    "a?" * 30 + "a" * 30,
    "x" * 300,
    "(unclosed",
]


@pytest.mark.parametrize("pattern", EVIL)
def test_patterns_prone_to_catastrophic_backtracking_are_refused(pattern: str) -> None:
    with pytest.raises(UnsafePattern):
        check_pattern(pattern)
    with pytest.raises(InvalidTemplate) as info:
        make({"properties": {"p": {"type": "string", "pattern": pattern}}})
    assert pointers(info.value) == ["/parameters/properties/p/pattern"]
    with pytest.raises(InvalidTemplate):
        make({"patternProperties": {pattern: {"type": "string"}}})


SAFE = [
    r"^\S+\.f(ast)?q\.gz$",
    r"^([\S\s]*\/)?[^\s\/]+\.(fa|fasta)(\.gz)?$",
    r"^\d+\.\d+\.\d+$",
    r"^ENSG\d{11}$",
    r"^[ACGTN]+$",
    r"^(csv|tsv|json)$",
    r"^https?://\S+$",
    r"^[A-Z][a-z]+_[0-9]+\.[a-z]{2,4}$",
    r"^\d+(\.\d+)?\.?\s*(K|M|G|T)?B$",
    r"^\w+\s+\w+$",
]


@pytest.mark.parametrize("pattern", SAFE)
def test_real_world_nf_core_style_patterns_are_accepted(pattern: str) -> None:
    check_pattern(pattern)


def test_strings_longer_than_the_pattern_cap_fail_validation_without_matching() -> None:
    schema = make({"properties": {"p": {"type": "string", "pattern": r"^[a-z]+\.txt$"}}}).parameters
    compiled = CompiledSchema(schema, max_pattern_input=50)
    assert compiled.validate({"p": "a" * 40 + ".txt"})
    with pytest.raises(ValidationFailed) as info:
        compiled.validate({"p": "a" * 51})
    assert info.value.errors[0].code == "pattern"
    assert "long" in info.value.errors[0].detail


def test_cheap_formats_are_checked() -> None:
    schema = {
        "properties": {
            "d": {"type": "string", "format": "date"},
            "e": {"type": "string", "format": "email"},
            "u": {"type": "string", "format": "uuid"},
            "x": {"type": "string", "format": "made-up"},
        }
    }
    compiled = CompiledSchema(make(schema).parameters)
    with pytest.raises(ValidationFailed) as info:
        compiled.validate({"d": "2024-13-45", "e": "no-at-sign", "u": "nope", "x": "anything"})
    assert sorted(pointers(info.value)) == ["/d", "/e", "/u"]
    assert {e.code for e in info.value.errors} == {"format"}


def test_error_messages_never_contain_submitted_values() -> None:
    secret = "hunter2-SECRET-value"
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "integer"},
            "b": {"enum": ["x", "y"]},
            "c": {"type": "string", "maxLength": 3},
            "d": {"type": "string", "pattern": "^z$"},
            "e": {"anyOf": [{"type": "integer"}, {"type": "boolean"}]},
            "f": {"const": 1},
            "g": {"type": "string", "format": "email"},
        },
        "required": ["must"],
    }
    compiled = CompiledSchema(make(schema).parameters)
    with pytest.raises(ValidationFailed) as info:
        compiled.validate(dict.fromkeys("abcdefg", secret) | {secret: 1})
    body = json.dumps(info.value.to_problem())
    assert "hunter2" not in body.replace(f"/{secret}", "")  # the unknown key's pointer only
    assert set(pointers(info.value)) == {f"/{k}" for k in "abcdefg"} | {"/must", f"/{secret}"}


def test_unknown_parameters_are_rejected_unless_the_schema_allows_them() -> None:
    closed = CompiledSchema(make({"properties": {"a": {"type": "integer"}}}).parameters)
    with pytest.raises(ValidationFailed) as info:
        closed.validate({"a": 1, "typo": 2})
    assert pointers(info.value) == ["/typo"]
    assert info.value.errors[0].code == "unknown_parameter"
    opened = CompiledSchema(
        make({"properties": {"a": {"type": "integer"}}, "additionalProperties": True}).parameters
    )
    assert opened.validate({"a": 1, "extra": 2}) == {"a": 1, "extra": 2}
    lax = CompiledSchema(
        make({"properties": {"a": {"type": "integer"}}}).parameters, reject_unknown=False
    )
    assert lax.validate({"extra": 2}) == {"extra": 2}


def test_defaults_are_deep_copies_and_nested_defaults_apply() -> None:
    schema = {
        "properties": {
            "opts": {
                "type": "object",
                "default": {},
                "properties": {"k": {"type": "integer", "default": 3}},
            },
            "lst": {"type": "array", "default": [1]},
        }
    }
    compiled = CompiledSchema(make(schema).parameters)
    first = compiled.validate({})
    assert first == {"opts": {"k": 3}, "lst": [1]}
    first["lst"].append(2)
    assert compiled.validate({})["lst"] == [1]


def test_huge_or_deep_schemas_are_refused() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(40):
        node["items"] = {}
        node = node["items"]
    with pytest.raises(InvalidTemplate, match="nested"):
        make(deep)
    big = {"properties": {f"p{i}": {"description": "x" * 1000} for i in range(300)}}
    with pytest.raises(InvalidTemplate, match="larger"):
        make(big)


def test_digest_is_canonical_and_covers_every_field() -> None:
    doc = make(
        {"properties": {"b": {"type": "integer"}, "a": {"type": "string"}}},
        tags=["y", "x"],
        description="d",
    ).to_dict()
    shuffled = json.loads(json.dumps(doc, sort_keys=False))
    shuffled["parameters"] = {"properties": dict(reversed(doc["parameters"]["properties"].items()))}
    shuffled["tags"] = ["x", "y", "x"]
    same = Template.from_dict(shuffled)
    assert same.digest == Template.from_dict(doc).digest
    assert hash(same) == hash(Template.from_dict(doc))
    for change in (
        {"description": "e"},
        {"tags": ["x"]},
        {"version": "1.0.1"},
        {"steps": [{"name": "run", "uses": "other"}]},
    ):
        assert Template.from_dict({**doc, **change}).digest != same.digest


def test_a_remote_ref_hidden_where_a_local_ref_points_is_refused() -> None:
    schema = {
        "properties": {"a": {"$ref": "#/x-vendor/inner"}},
        "x-vendor": {"inner": {"$ref": "https://evil.example/s.json"}},
    }
    with pytest.raises(InvalidTemplate) as info:
        make(schema)
    assert pointers(info.value) == ["/parameters/x-vendor/inner/$ref"]


def test_property_names_that_look_like_keywords_are_just_names() -> None:
    t = make({"properties": {"$ref": {"type": "string"}, "pattern": {"type": "string"}}})
    assert CompiledSchema(t.parameters).validate({"$ref": "x", "pattern": "(a+)+"}) == {
        "$ref": "x",
        "pattern": "(a+)+",
    }


# --------------------------------------------------------------------------- fuzzing

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(st.text(max_size=40))
def test_any_pattern_text_is_either_accepted_or_refused_cleanly(pattern: str) -> None:
    with contextlib.suppress(UnsafePattern):
        check_pattern(pattern)


@given(
    st.dictionaries(
        st.sampled_from(["name", "version", "steps", "parameters", "tags", "description", "x"]),
        _json,
        max_size=6,
    )
)
def test_any_template_document_is_a_template_or_an_invalid_template(doc: dict[str, Any]) -> None:
    # Only InvalidTemplate may escape; anything else fails the test.
    with contextlib.suppress(InvalidTemplate):
        Template.from_dict(doc)


@pytest.fixture(scope="module")
def fuzz_registry() -> Iterator[Any]:
    from gennet_toolkit.workflow_templates import SqlTemplateStore, TemplateRegistry

    store = SqlTemplateStore.in_memory()
    registry = TemplateRegistry(store, max_params_bytes=2048)
    registry.create(
        make(
            {
                "properties": {
                    "n": {"type": "integer", "minimum": 0, "default": 1},
                    "s": {"type": "string", "pattern": r"^[a-z]+\.txt$"},
                    "l": {"type": "array", "items": {"enum": ["a", "b"]}},
                    "o": {
                        "type": "object",
                        "properties": {"k": {"type": "boolean", "default": True}},
                    },
                },
                "required": ["s"],
            },
            steps=[Step("run", uses="x", inputs={"all": ["${params.n}", "${params.s}"]})],
        )
    )
    yield registry
    store.engine.dispose()


@given(
    _json
    | st.fixed_dictionaries(
        {"s": st.sampled_from(["a.txt", "b", "x" * 2000])},
        optional={"n": _json, "l": _json, "o": _json, "zz": _json},
    )
)
def test_any_params_are_a_run_or_a_4xx(fuzz_registry: Any, params: Any) -> None:
    from gennet_toolkit.exceptions import PayloadTooLarge

    try:
        run = fuzz_registry.instantiate("t", params)
    except (ValidationFailed, PayloadTooLarge):
        return  # both are 4xx
    assert run.params["s"].endswith(".txt")


def test_rendering_substitutes_references_and_evaluates_nothing() -> None:
    from gennet_toolkit.workflow_templates._model import render

    params = {"x": [1, 2], "s": "a${params.x}b", "n": None}
    assert render("${params.x}", params) == [1, 2]
    assert render("pre-${params.x}-${params.s}", params) == "pre-[1,2]-a${params.x}b"  # one pass
    with pytest.raises(ValidationFailed):  # a plain key lookup, never an attribute
        render("${params.__class__}", params)
    for inert in (
        "${ params.x }",
        "{{ params.x }}",
        "${params.x.y}",
        "${env.HOME}",
        "$(rm -rf /)",
        "${params.x",
    ):
        assert render(inert, params) == inert
    assert render({"k": ["${params.n}"]}, params) == {"k": [None]}
    with pytest.raises(ValidationFailed) as info:
        render("${params.missing}", params)
    assert pointers(info.value) == ["/missing"]
