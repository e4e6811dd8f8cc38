"""Parameter schemas: hardening at publish time, one compiled validator per version, safe errors."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from gennet_toolkit._optional import require
from gennet_toolkit.exceptions import FieldError, ValidationFailed, json_pointer
from gennet_toolkit.workflow_templates._regex import UnsafePattern, check_pattern

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

__all__ = [
    "DIALECT",
    "CompiledSchema",
    "SchemaProblem",
    "canonical_json",
    "check_schema",
    "check_json_value",
    "storable",
]

#: The only JSON Schema dialect accepted (nf-core/nf-schema use it too).
DIALECT = "https://json-schema.org/draft/2020-12/schema"
_DIALECTS = {DIALECT, DIALECT + "#"}
MAX_SCHEMA_BYTES = 256 * 1024
MAX_DEPTH = 32
MAX_KEY_LENGTH = 256
MAX_ERRORS = 50
_FEATURE = "gennet_toolkit.workflow_templates"
# Formats cheap to check and without third-party checkers; others stay annotations.
_FORMATS = ("date", "time", "email", "ipv4", "ipv6", "uuid")
_REF_KEYWORDS = ("$ref", "$dynamicRef")
_PATTERN_MAP_KEYWORDS = ("patternProperties",)
_BASE_URI = "urn:gennet:workflow-template:parameters"
# Root keywords after which adding ``additionalProperties: false`` would change meaning.
_OPEN_KEYWORDS = frozenset(
    {
        "additionalProperties",
        "unevaluatedProperties",
        "patternProperties",
        "allOf",
        "anyOf",
        "oneOf",
        "$ref",
        "$dynamicRef",
        "if",
        "dependentSchemas",
    }
)


class SchemaProblem(ValueError):
    """The parameter schema is refused; ``pointer`` locates the problem inside it."""

    def __init__(self, message: str, pointer: str = "") -> None:
        super().__init__(message)
        self.pointer = pointer


def canonical_json(value: Any) -> str:
    """The canonical JSON text of ``value`` (sorted keys, no spaces, no NaN), for digests."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def storable(text: str) -> bool:
    """Whether ``text`` can go to the database as it is: no NUL (PostgreSQL refuses it in
    text columns) and no lone surrogate (no driver can encode it), so neither is a 500."""
    if "\x00" in text:
        return False
    return text.isascii() or _encodable(text)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_json_value(value: Any, *, max_depth: int = MAX_DEPTH, what: str = "value") -> None:
    """Raise :class:`SchemaProblem` unless ``value`` is plain JSON within ``max_depth``.

    Iterative, so a deeply nested payload cannot exhaust the stack.
    """
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        if len(path) > max_depth:
            raise SchemaProblem(f"the {what} is nested more than {max_depth} levels", "")
        if isinstance(node, dict):
            for key, child in node.items():
                if not isinstance(key, str):
                    raise SchemaProblem(
                        f"the {what} has a non-string object key", json_pointer(path)
                    )
                if not (key.isascii() or _encodable(key)):
                    raise SchemaProblem(
                        f"the {what} has an object key that is not valid Unicode",
                        json_pointer(path),
                    )
                if len(key) > MAX_KEY_LENGTH:
                    raise SchemaProblem(
                        f"the {what} has an object key longer than {MAX_KEY_LENGTH} characters",
                        json_pointer(path),
                    )
                stack.append((child, (*path, key)))
        elif isinstance(node, list):
            stack.extend((child, (*path, i)) for i, child in enumerate(node))
        elif isinstance(node, str):
            # A lone surrogate ("\ud800" in a JSON body) cannot be encoded or stored.
            if not (node.isascii() or _encodable(node)):
                raise SchemaProblem(
                    f"the {what} contains text that is not valid Unicode", json_pointer(path)
                )
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise SchemaProblem(f"the {what} contains NaN or infinity", json_pointer(path))
        elif node is not None and not isinstance(node, str | int | bool):
            raise SchemaProblem(f"the {what} contains a non-JSON value", json_pointer(path))


def _walk_schema(
    schema: Any, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[Any, tuple[str | int, ...]]]:
    stack = [(schema, path)]
    while stack:
        node, here = stack.pop()
        yield node, here
        if isinstance(node, dict):
            stack.extend((v, (*here, k)) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, (*here, i)) for i, v in enumerate(node))


def _subschemas(schema: Any) -> Iterator[tuple[dict[str, Any], tuple[str | int, ...]]]:
    """Every object in the schema document that may act as a subschema.

    Over-approximated on purpose: a ``$ref`` can point anywhere in the document (into
    unknown keywords or ``default`` values too), so only name maps are skipped.
    """
    for node, path in _walk_schema(schema):
        if isinstance(node, dict):
            parent = path[-1] if path else None
            # Under "properties"/"$defs"/… the keys are names, not keywords.
            if parent in ("properties", "$defs", "patternProperties", "dependentSchemas"):
                continue
            yield node, path


def check_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Harden and meta-validate a parameter schema; return it as a plain dict.

    Refused with :class:`SchemaProblem`: non-JSON content, more than 256 KiB or 32 levels,
    a ``$schema`` other than draft 2020-12, nested ``$id``, any ``$ref``/``$dynamicRef``
    that is not a local ``#…`` reference or does not resolve, an unsafe or invalid
    ``pattern`` (see ``_regex``), a schema invalid against the 2020-12 meta-schema, and
    ``default`` values that do not validate against their own property schema.
    """
    if not isinstance(schema, Mapping):
        raise SchemaProblem("the parameter schema must be a JSON object")
    doc = dict(schema)
    check_json_value(doc, what="parameter schema")
    if len(canonical_json(doc).encode()) > MAX_SCHEMA_BYTES:
        raise SchemaProblem(f"the parameter schema is larger than {MAX_SCHEMA_BYTES} bytes")
    dialect = doc.get("$schema")
    if dialect is not None and dialect not in _DIALECTS:
        raise SchemaProblem("only JSON Schema draft 2020-12 is supported", "/$schema")
    jsonschema = require("jsonschema", extra="jsonschema", feature=_FEATURE)
    try:
        jsonschema.Draft202012Validator.check_schema(doc)
    except jsonschema.SchemaError as exc:
        raise SchemaProblem(
            f"not a valid JSON Schema (2020-12): the {exc.validator!r} rule fails here",
            json_pointer(exc.absolute_path),
        ) from None
    refs: list[tuple[str, tuple[str | int, ...]]] = []
    for node, path in _subschemas(doc):
        if "$id" in node and path:
            raise SchemaProblem("$id is only allowed at the root", json_pointer((*path, "$id")))
        for kw in _REF_KEYWORDS:
            if kw in node:
                ref = node[kw]
                if not isinstance(ref, str) or not ref.startswith("#"):
                    raise SchemaProblem(
                        "only local references (starting with '#') are allowed",
                        json_pointer((*path, kw)),
                    )
                refs.append((ref, (*path, kw)))
        patterns: list[tuple[Any, tuple[str | int, ...]]] = []
        if "pattern" in node and isinstance(node["pattern"], str):
            patterns.append((node["pattern"], (*path, "pattern")))
        for kw in _PATTERN_MAP_KEYWORDS:
            if isinstance(node.get(kw), dict):
                patterns.extend((key, (*path, kw, key)) for key in node[kw])
        for pattern, where in patterns:
            try:
                check_pattern(pattern)
            except UnsafePattern as exc:
                raise SchemaProblem(f"unsafe pattern: {exc}", json_pointer(where)) from None
    validator = _build_validator(doc)
    resolver = validator._resolver  # type: ignore[attr-defined]  # the document's own resolver
    for ref, where in refs:
        try:
            resolver.lookup(ref)
        except Exception:
            # referencing raises several unrelated types for a bad pointer.
            raise SchemaProblem("this reference does not resolve", json_pointer(where)) from None
    _check_defaults(doc, validator)
    return doc


def _check_defaults(doc: dict[str, Any], validator: Validator) -> None:
    # nf-core/tools#823: a default of the wrong type is only noticed at run time.
    for node, path in _subschemas(doc):
        props = node.get("properties")
        if not isinstance(props, dict):
            continue
        for name, sub in props.items():
            if (
                isinstance(sub, dict)
                and "default" in sub
                and not validator.evolve(schema=sub).is_valid(sub["default"])
            ):
                raise SchemaProblem(
                    "the default does not match its own schema",
                    json_pointer((*path, "properties", name, "default")),
                )


def _refuse_retrieval(uri: str) -> Any:
    # Never fetch a schema from the network or the filesystem.
    referencing = require("referencing", extra="jsonschema", feature=_FEATURE)
    raise referencing.exceptions.NoSuchResource(ref=uri)


def _build_validator(doc: dict[str, Any], *, max_pattern_input: int = 1024) -> Validator:
    jsonschema = require("jsonschema", extra="jsonschema", feature=_FEATURE)
    referencing = require("referencing", extra="jsonschema", feature=_FEATURE)
    rjs = require("referencing.jsonschema", extra="jsonschema", feature=_FEATURE)
    resource = referencing.Resource(contents=doc, specification=rjs.DRAFT202012)
    uri = doc.get("$id") if isinstance(doc.get("$id"), str) else _BASE_URI
    registry = referencing.Registry(retrieve=_refuse_retrieval).with_resource(uri, resource)
    cls = _validator_class(max_pattern_input)
    fmt = jsonschema.FormatChecker(formats=_FORMATS)
    return cls(doc, registry=registry, format_checker=fmt)  # type: ignore[no-any-return]


_CLASSES: dict[int, Any] = {}


def _validator_class(max_pattern_input: int) -> Any:
    cls = _CLASSES.get(max_pattern_input)
    if cls is not None:
        return cls
    jsonschema = require("jsonschema", extra="jsonschema", feature=_FEATURE)

    def pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[Any]:
        # The static check bounds backtracking polynomially; the length cap bounds the rest.
        if not validator.is_type(instance, "string"):
            return
        if len(instance) > max_pattern_input:
            yield jsonschema.ValidationError("too long to check against the pattern")
        elif not re.search(patrn, instance):
            yield jsonschema.ValidationError("does not match the pattern")

    cls = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": pattern})
    _CLASSES[max_pattern_input] = cls
    return cls


_MESSAGES: dict[str, str] = {
    "type": "Expected {value}.",
    "enum": "Must be one of the allowed values.",
    "const": "Must be the constant value.",
    "pattern": "Does not match the pattern.",
    "format": "Not a valid {value}.",
    "minLength": "Shorter than {value} characters.",
    "maxLength": "Longer than {value} characters.",
    "minimum": "Less than {value}.",
    "maximum": "Greater than {value}.",
    "exclusiveMinimum": "Must be greater than {value}.",
    "exclusiveMaximum": "Must be less than {value}.",
    "multipleOf": "Not a multiple of {value}.",
    "minItems": "Fewer than {value} items.",
    "maxItems": "More than {value} items.",
    "uniqueItems": "Items must be unique.",
    "minProperties": "Fewer than {value} properties.",
    "maxProperties": "More than {value} properties.",
    "required": "Required parameter is missing.",
    "additionalProperties": "Unknown parameter.",
    "unevaluatedProperties": "Unknown parameter.",
    "anyOf": "Matches none of the allowed alternatives.",
    "oneOf": "Must match exactly one of the alternatives.",
    "not": "Matches a disallowed schema.",
    "false": "No value is allowed here.",
}


def _describe(keyword: str, value: Any) -> str:
    template = _MESSAGES.get(keyword)
    if template is None:
        return f"Does not satisfy the {keyword!r} rule of the parameter schema."
    if keyword == "type":
        value = " or ".join(value) if isinstance(value, list) else value
    if isinstance(value, dict | list):
        value = "value"
    return template.format(value=value)


class CompiledSchema:
    """A parameter schema compiled once: validates, fills defaults, reports safe errors."""

    __slots__ = ("_validator", "schema")

    def __init__(
        self,
        schema: dict[str, Any],
        *,
        max_pattern_input: int = 1024,
        reject_unknown: bool = True,
    ) -> None:
        self.schema = schema
        effective = schema
        if reject_unknown and "properties" in schema and not _OPEN_KEYWORDS.intersection(schema):
            # A typo in a parameter name must not pass silently (pydantic's default
            # schema allows extra keys; nf-schema warns about them).
            effective = {**schema, "additionalProperties": False}
        self._validator = _build_validator(effective, max_pattern_input=max_pattern_input)

    def errors(self, instance: Any) -> list[FieldError]:
        """Field errors for ``instance`` (JSON pointers, messages from the schema, no values)."""
        out: list[FieldError] = []
        for err in self._validator.iter_errors(instance):
            raw_keyword: object = err.validator
            keyword = str(raw_keyword) if isinstance(raw_keyword, str) else "false"
            base = tuple(err.absolute_path)
            if keyword == "required" and isinstance(instance_at(instance, base), dict):
                required: Any = err.validator_value
                missing = [n for n in required if n not in instance_at(instance, base)]
                out.extend(
                    FieldError(
                        _describe("required", None),
                        pointer=json_pointer((*base, n)),
                        code="required",
                    )
                    for n in missing
                )
            elif keyword in ("additionalProperties", "unevaluatedProperties"):
                extras: list[str | None] = [*_extra_keys(instance_at(instance, base), err.schema)]
                out.extend(
                    FieldError(
                        _describe(keyword, None),
                        pointer=json_pointer(base if k is None else (*base, k)),
                        code="unknown_parameter",
                    )
                    for k in extras or [None]
                )
            else:
                # Our own pattern keyword writes safe messages; jsonschema's quote the value.
                detail = (
                    err.message[:1].upper() + err.message[1:] + "."
                    if keyword == "pattern"
                    else _describe(keyword, err.validator_value)
                )
                out.append(
                    FieldError(
                        detail,
                        pointer=json_pointer(base),
                        code=keyword,
                    )
                )
            if len(out) >= MAX_ERRORS:
                break
        out.sort(key=lambda e: e.pointer or "")
        return out[:MAX_ERRORS]

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        """Return ``params`` with defaults applied, or raise :class:`ValidationFailed` (422)."""
        filled: dict[str, Any] = apply_defaults(self.schema, params)
        errors = self.errors(filled)
        if errors:
            raise ValidationFailed("The workflow parameters are invalid.", errors=errors)
        return filled


def instance_at(instance: Any, path: tuple[Any, ...]) -> Any:
    """The part of ``instance`` at ``path`` (a JSON path from a validation error)."""
    node = instance
    for part in path:
        node = node[part]
    return node


def _extra_keys(instance: Any, schema: Any) -> list[str]:
    if not isinstance(instance, dict) or not isinstance(schema, dict):
        return []
    props = schema.get("properties", {}) if isinstance(schema.get("properties"), dict) else {}
    pats = schema.get("patternProperties", {})
    pats = pats if isinstance(pats, dict) else {}
    return sorted(k for k in instance if k not in props and not any(re.search(p, k) for p in pats))


def apply_defaults(schema: Any, value: Any) -> Any:
    """A copy of ``value`` with missing object properties filled from ``default`` (recursively).

    Defaults are filled from ``properties`` only (not through ``$ref`` or combinators),
    like nf-schema and Snakemake's ``validate(set_default=True)``.
    """
    if not isinstance(schema, dict) or not isinstance(value, dict):
        return value
    props = schema.get("properties")
    if not isinstance(props, dict):
        return dict(value)
    out = dict(value)
    for name, sub in props.items():
        if not isinstance(sub, dict):
            continue
        if name not in out and "default" in sub:
            default = sub["default"]
            # Containers are copied so a caller mutating the run cannot change the schema.
            out[name] = (
                json.loads(json.dumps(default)) if isinstance(default, dict | list) else default
            )
        if name in out:
            out[name] = apply_defaults(sub, out[name])
    return out
