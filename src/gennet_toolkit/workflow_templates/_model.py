"""Templates, steps and workflow runs: plain immutable values, validated on construction."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from gennet_toolkit.exceptions import ConfigurationError, FieldError, ValidationFailed, json_pointer
from gennet_toolkit.workflow_templates._schema import (
    SchemaProblem,
    canonical_json,
    check_json_value,
    check_schema,
    storable,
)
from gennet_toolkit.workflow_templates._semver import SemVer

__all__ = ["InvalidTemplate", "Step", "Template", "WorkflowRun"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_STEP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
_TAG = re.compile(r"[a-z0-9][a-z0-9._:-]{0,63}")
_PARAM_REF = re.compile(r"\$\{params\.([A-Za-z_][A-Za-z0-9_]{0,127})\}")
MAX_STEPS = 256
MAX_TAGS = 32
MAX_DESCRIPTION = 10_000
MAX_USES = 256


class InvalidTemplate(ConfigurationError):
    """A template definition is refused (422): bad name or version, cyclic or dangling
    steps, an unsafe parameter schema. ``errors`` point into the template document
    (``/steps/2/depends_on/0``, ``/parameters/properties/x/pattern``); the detail never
    quotes submitted values.
    """

    status_code = 422
    code = "invalid_template"
    default_detail = "The workflow template is invalid."


def is_template_name(value: object) -> bool:
    """Whether ``value`` could name a template (anything else cannot exist: a 404)."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def _invalid(message: str, pointer: str) -> InvalidTemplate:
    return InvalidTemplate(
        "The workflow template is invalid: " + message + ".",
        errors=[FieldError(message[:1].upper() + message[1:] + ".", pointer=pointer)],
    )


@dataclass(frozen=True)
class Step:
    """One step of a workflow: ``uses`` names the action (a task name, a tool id), ``inputs``
    are JSON values where ``"${params.name}"`` is replaced by a parameter at
    instantiation, ``depends_on`` names steps that must finish first.

    ``Step("align", uses="bwa-mem", inputs={"reads": "${params.reads}"}, depends_on=["qc"])``
    """

    name: str
    uses: str
    inputs: Mapping[str, Any] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Malformed values (from JSON) are kept as they are for Template to report
        # with a pointer; only well-formed ones are normalised here.
        deps: object = self.depends_on
        if isinstance(deps, str):
            object.__setattr__(self, "depends_on", (deps,))
        elif isinstance(deps, list | tuple):
            object.__setattr__(self, "depends_on", tuple(deps))
        inputs: object = self.inputs
        if isinstance(inputs, Mapping):
            object.__setattr__(self, "inputs", MappingProxyType(dict(inputs)))

    def to_dict(self) -> dict[str, Any]:
        """The step as JSON (the form stored and digested)."""
        return {
            "name": self.name,
            "uses": self.uses,
            "inputs": dict(self.inputs),
            "depends_on": list(self.depends_on),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Step:
        """Build a step from its JSON form."""
        return cls(
            name=data.get("name"),  # type: ignore[arg-type]  # checked by Template
            uses=data.get("uses"),  # type: ignore[arg-type]
            inputs=data.get("inputs", {}),
            depends_on=data.get("depends_on", ()),
        )


def _schema_from(parameters: Any) -> dict[str, Any]:
    if parameters is None:
        return {"type": "object"}
    if isinstance(parameters, type):
        schema_fn = getattr(parameters, "model_json_schema", None)
        if schema_fn is None:
            raise TypeError("parameters must be a JSON Schema dict or a pydantic model class")
        return dict(schema_fn(mode="validation"))
    if isinstance(parameters, Mapping):
        return dict(parameters)
    raise TypeError("parameters must be a JSON Schema dict or a pydantic model class")


def topological_order(steps: Iterable[Step]) -> tuple[str, ...]:
    """Step names in an order where every step follows its dependencies (stable, Kahn)."""
    steps = list(steps)
    pending = {s.name: set(s.depends_on) for s in steps}
    order: list[str] = []
    ready = [s.name for s in steps if not s.depends_on]
    while ready:
        name = ready.pop(0)
        order.append(name)
        for s in steps:
            deps = pending[s.name]
            if name in deps:
                deps.discard(name)
                if not deps:
                    ready.append(s.name)
    return tuple(order)


@dataclass(frozen=True)
class Template:
    """An immutable workflow template version.

    ``Template(name, version, steps, parameters=<JSON Schema dict or pydantic model class>,
    tags=(), description="")``. Construction validates everything and raises
    :class:`InvalidTemplate` (422, a ``ConfigurationError``): the name, the semantic
    version, unique step names, dependencies that exist and form no cycle, parameter
    references that the schema declares, and the parameter schema itself (draft 2020-12,
    local ``$ref`` only, safe ``pattern``, defaults valid). ``digest`` is
    ``sha256:<hex>`` over the canonical JSON of :meth:`to_dict`.
    """

    name: str
    version: str
    steps: tuple[Step, ...]
    parameters: Any = None
    tags: tuple[str, ...] = ()
    description: str = ""
    digest: str = field(init=False, repr=False, compare=False)
    order: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Fields are typed for callers, but values may come from JSON: check them anyway.
        name: object = self.name
        steps_in: object = self.steps
        tags_in: object = self.tags
        description: object = self.description
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise _invalid(
                "the name must be 1-128 letters, digits, '.', '_' or '-', starting with a "
                "letter or digit",
                "/name",
            )
        try:
            semver = SemVer.parse(self.version)
        except ValueError as exc:
            raise _invalid(str(exc), "/version") from None
        object.__setattr__(self, "version", str(semver))
        if not isinstance(steps_in, list | tuple) or not all(
            isinstance(s, Step | Mapping) for s in steps_in
        ):
            raise _invalid("'steps' must be a list of steps", "/steps")
        steps = tuple(s if isinstance(s, Step) else Step.from_dict(s) for s in steps_in)
        object.__setattr__(self, "steps", steps)
        try:
            schema = _schema_from(self.parameters)
        except TypeError as exc:
            raise _invalid(str(exc), "/parameters") from None
        try:
            schema = check_schema(schema)
        except SchemaProblem as exc:
            raise _invalid(str(exc), "/parameters" + exc.pointer) from None
        object.__setattr__(self, "parameters", schema)
        tags = (tags_in,) if isinstance(tags_in, str) else tags_in
        if (
            not isinstance(tags, list | tuple)
            or len(tags) > MAX_TAGS
            or not all(isinstance(t, str) and _TAG.fullmatch(t) for t in tags)
        ):
            raise _invalid(
                f"at most {MAX_TAGS} tags of lower-case letters, digits and '.', '_', ':', '-'",
                "/tags",
            )
        object.__setattr__(self, "tags", tuple(sorted(set(tags))))
        if (
            not isinstance(description, str)
            or len(description) > MAX_DESCRIPTION
            or not storable(description)
        ):
            raise _invalid(
                f"the description must be text of at most {MAX_DESCRIPTION}", "/description"
            )
        self._check_steps(schema)
        object.__setattr__(self, "order", topological_order(steps))
        try:
            digest = hashlib.sha256(canonical_json(self.to_dict()).encode()).hexdigest()
        except UnicodeEncodeError:  # a lone surrogate in some text field
            raise _invalid("the template contains text that is not valid Unicode", "") from None
        object.__setattr__(self, "digest", "sha256:" + digest)

    def _check_steps(self, schema: dict[str, Any]) -> None:
        if not self.steps:
            raise _invalid("a template needs at least one step", "/steps")
        if len(self.steps) > MAX_STEPS:
            raise _invalid(f"a template has at most {MAX_STEPS} steps", "/steps")
        seen: set[str] = set()
        for i, step in enumerate(self.steps):
            step_name: object = step.name
            uses: object = step.uses
            if not isinstance(step_name, str) or not _STEP_NAME.fullmatch(step_name):
                raise _invalid(
                    "a step name must be an identifier of at most 64 characters", f"/steps/{i}/name"
                )
            if step.name in seen:
                raise _invalid("step names must be unique", f"/steps/{i}/name")
            seen.add(step.name)
            if not isinstance(uses, str) or not 0 < len(uses) <= MAX_USES:
                raise _invalid(
                    f"'uses' must be text of 1-{MAX_USES} characters", f"/steps/{i}/uses"
                )
            inputs: object = step.inputs
            deps: object = step.depends_on
            if not isinstance(inputs, Mapping):
                raise _invalid("step inputs must be an object", f"/steps/{i}/inputs")
            if not isinstance(deps, tuple) or not all(isinstance(d, str) for d in deps):
                raise _invalid(
                    "'depends_on' must be a list of step names", f"/steps/{i}/depends_on"
                )
            try:
                check_json_value(dict(step.inputs), what="step inputs")
            except SchemaProblem as exc:
                raise _invalid(str(exc), f"/steps/{i}/inputs{exc.pointer}") from None
        declared = schema.get("properties")
        open_schema = schema.get("additionalProperties", True) is not False and not isinstance(
            schema.get("unevaluatedProperties"), bool
        )
        for i, step in enumerate(self.steps):
            for j, dep in enumerate(step.depends_on):
                if dep not in seen:
                    raise _invalid(
                        "a step depends on an unknown step", f"/steps/{i}/depends_on/{j}"
                    )
                if dep == step.name:
                    raise _invalid("a step depends on itself", f"/steps/{i}/depends_on/{j}")
            for ref, where in _param_refs(step.inputs):
                if not open_schema and (not isinstance(declared, dict) or ref not in declared):
                    raise _invalid(
                        "a step input refers to a parameter the schema does not declare",
                        f"/steps/{i}/inputs{where}",
                    )
        order = topological_order(self.steps)
        if len(order) != len(self.steps):
            stuck = next(i for i, s in enumerate(self.steps) if s.name not in order)
            raise _invalid("the steps' dependencies form a cycle", f"/steps/{stuck}/depends_on")

    def __hash__(self) -> int:
        return hash(self.digest)

    def to_dict(self) -> dict[str, Any]:
        """The template as JSON: what is stored, digested and compared on re-publish."""
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "tags": list(self.tags),
            "parameters": self.parameters,
            "steps": [s.to_dict() for s in self.steps],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Template:
        """Build (and validate) a template from its JSON form, e.g. a request body."""
        if not isinstance(data, Mapping):
            raise _invalid("a template must be a JSON object", "")
        steps = data.get("steps")
        if not isinstance(steps, list) or not all(isinstance(s, Mapping) for s in steps):
            raise _invalid("'steps' must be a list of objects", "/steps")
        tags = data.get("tags", ())
        return cls(
            name=data.get("name"),  # type: ignore[arg-type]  # validated in __post_init__
            version=data.get("version"),  # type: ignore[arg-type]
            steps=tuple(Step.from_dict(s) for s in steps),
            parameters=data.get("parameters"),
            tags=tuple(tags) if isinstance(tags, list | tuple) else tags,
            description=data.get("description", ""),
        )

    @property
    def semver(self) -> SemVer:
        """The parsed version."""
        return SemVer.parse(self.version)


def _param_refs(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, path)]
    while stack:
        node, here = stack.pop()
        if isinstance(node, str):
            out.extend((m[1], json_pointer(here)) for m in _PARAM_REF.finditer(node))
        elif isinstance(node, Mapping):
            stack.extend((v, (*here, k)) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, (*here, i)) for i, v in enumerate(node))
    return out


def render(value: Any, params: Mapping[str, Any]) -> Any:
    """Substitute ``${params.name}`` in step inputs: no expressions, no code execution.

    A string that is exactly one reference becomes the parameter's JSON value (type kept);
    references inside longer strings are replaced by the value's text (strings as they
    are, other values as canonical JSON).
    """
    if isinstance(value, str):
        whole = _PARAM_REF.fullmatch(value)
        if whole:
            return _lookup(params, whole[1])
        return _PARAM_REF.sub(lambda m: _as_text(_lookup(params, m[1])), value)
    if isinstance(value, Mapping):
        return {k: render(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, params) for v in value]
    return value


def _lookup(params: Mapping[str, Any], name: str) -> Any:
    if name not in params:
        raise ValidationFailed(
            "The workflow parameters are invalid.",
            errors=[
                FieldError(
                    "Required by a step but missing.", pointer=json_pointer([name]), code="required"
                )
            ],
        )
    return params[name]


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else canonical_json(value)


@dataclass(frozen=True)
class RenderedStep:
    """A step of a :class:`WorkflowRun`, with its inputs rendered from the parameters."""

    name: str
    uses: str
    inputs: dict[str, Any]
    depends_on: tuple[str, ...]


@dataclass(frozen=True)
class WorkflowRun:
    """One instantiation of a template version: what to run and where it came from.

    ``steps`` come in dependency order; ``provenance`` (template, concrete version,
    template digest, params digest) is what a run should carry so that re-running it
    never silently picks a newer version (Galaxy #18367).
    """

    id: str
    template: str
    version: str
    digest: str
    params: dict[str, Any]
    steps: tuple[RenderedStep, ...]
    created_at: datetime

    @property
    def params_digest(self) -> str:
        """``sha256:<hex>`` over the canonical JSON of the validated parameters."""
        return "sha256:" + hashlib.sha256(canonical_json(self.params).encode()).hexdigest()

    @property
    def provenance(self) -> dict[str, str]:
        """Template name, version and digests, for labels, logs and task metadata."""
        return {
            "run_id": self.id,
            "template": self.template,
            "version": self.version,
            "digest": self.digest,
            "params_digest": self.params_digest,
        }

    def to_dict(self) -> dict[str, Any]:
        """The run as JSON (for a task queue message or an API response)."""
        return {
            **self.provenance,
            "params": self.params,
            "created_at": self.created_at.isoformat(),
            "steps": [
                {
                    "name": s.name,
                    "uses": s.uses,
                    "inputs": s.inputs,
                    "depends_on": list(s.depends_on),
                }
                for s in self.steps
            ],
        }
