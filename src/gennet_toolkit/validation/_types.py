"""Reusable pydantic field types for gene-regulatory-network services.

Every type is an ``Annotated`` alias, so it works as a model field, in a
``TypeAdapter`` and in FastAPI signatures alike. Error messages describe the rule and
never quote the submitted value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    StringConstraints,
    create_model,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "GENE_SYMBOL_MAX_LENGTH",
    "BacterialGeneSymbol",
    "EnsemblGeneId",
    "GeneSymbol",
    "HumanGeneSymbol",
    "MouseGeneSymbol",
    "NonEmptyStr",
    "Probability",
    "TypeRegistry",
    "gene_symbol_convention",
    "pattern_type",
]

#: Longest gene symbol accepted. The longest approved HGNC symbols are under 20
#: characters; 32 leaves room for MGI RIKEN names without allowing abuse.
GENE_SYMBOL_MAX_LENGTH = 32

# HGNC (human): upper-case letters and digits, starting with a letter; "orf" is the one
# lower-case part (C1orf112); hyphenated parts for HLA-A, MT-CO1, NKX2-1, etc.
_HUMAN = re.compile(r"[A-Z][A-Z0-9]*(?:orf[0-9]+)?(?:-[A-Z0-9]+)*")
# MGI (mouse/rat): capital first letter then lower-case letters and digits (Trp53, Hoxa1,
# Gm10000); hyphenated parts (Hist1h2-ps1, H2-K1 also passes as human); RIKEN clone
# names start with digits (0610005C13Rik).
_MOUSE = re.compile(r"(?:[A-Z][a-z0-9]*[a-z][a-z0-9]*|[0-9]{7}[A-Z][0-9]{2}Rik)(?:-[A-Za-z0-9]+)*")
# Bacterial (Demerec): three lower-case letters plus an optional upper-case locus letter
# (lacZ, rpoS, dnaA, recA, gyr).
_BACTERIAL = re.compile(r"[a-z]{3}[A-Z]?")

_ENSEMBL = re.compile(r"ENS(?:[A-Z]{3,6})?G[0-9]{11}(?:\.[0-9]{1,4})?")

Convention = Literal["human", "mouse", "bacterial"]


def gene_symbol_convention(symbol: str) -> Convention | None:
    """Which naming convention ``symbol`` follows, or ``None`` if it follows none.

    Checked in the order human (HGNC), mouse (MGI), bacterial, so an all-capitals symbol
    is "human" even when a mouse gene has the same spelling.
    """
    if len(symbol) > GENE_SYMBOL_MAX_LENGTH:
        return None
    if _HUMAN.fullmatch(symbol):
        return "human"
    if _MOUSE.fullmatch(symbol):
        return "mouse"
    if _BACTERIAL.fullmatch(symbol):
        return "bacterial"
    return None


def _symbol_checker(*allowed: Convention) -> Callable[[str], str]:
    names = ", ".join(allowed)

    def check(value: str) -> str:
        if gene_symbol_convention(value) not in allowed:
            raise PydanticCustomError(
                "gene_symbol",
                "Not a valid gene symbol ({names} naming convention, at most {max_length} "
                "characters).",
                {"names": names, "max_length": GENE_SYMBOL_MAX_LENGTH},
            )
        return value

    return check


def _symbol_type(description: str, examples: list[str], *allowed: Convention) -> Any:
    return Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=GENE_SYMBOL_MAX_LENGTH),
        AfterValidator(_symbol_checker(*allowed)),
        Field(description=description, examples=examples),
    ]


#: A gene symbol in the HGNC (TP53, C1orf112, HLA-A), MGI (Trp53, 0610005C13Rik) or
#: bacterial (lacZ, rpoS) convention. Surrounding whitespace is stripped; case is kept,
#: since it carries the species.
GeneSymbol = _symbol_type(
    "Gene symbol: HGNC (TP53), MGI (Trp53) or bacterial (lacZ) convention.",
    ["TP53", "Trp53", "lacZ"],
    "human",
    "mouse",
    "bacterial",
)
#: An HGNC human gene symbol (TP53, C1orf112, HLA-A).
HumanGeneSymbol = _symbol_type("HGNC human gene symbol.", ["TP53", "C1orf112"], "human")
#: An MGI mouse gene symbol (Trp53, Hoxa1, 0610005C13Rik).
MouseGeneSymbol = _symbol_type("MGI mouse gene symbol.", ["Trp53", "Hoxa1"], "mouse")
#: A bacterial gene symbol (lacZ, rpoS).
BacterialGeneSymbol = _symbol_type("Bacterial gene symbol.", ["lacZ", "rpoS"], "bacterial")


def _check_ensembl(value: str) -> str:
    if len(value) > 32 or not _ENSEMBL.fullmatch(value):
        raise PydanticCustomError(
            "ensembl_gene_id",
            "Not a valid Ensembl gene id (ENSG or ENS<species>G, 11 digits, optional .version).",
        )
    return value


#: An Ensembl gene id: ``ENSG00000141510``, species-prefixed ``ENSMUSG00000059552``,
#: optionally versioned ``ENSG00000141510.17``.
EnsemblGeneId = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=32),
    AfterValidator(_check_ensembl),
    Field(description="Ensembl stable gene id.", examples=["ENSG00000141510"]),
]


def _no_bool(value: Any) -> Any:
    # pydantic's lax float turns true into 1.0; a probability of "true" is a client bug.
    if isinstance(value, bool):
        raise PydanticCustomError("float_type", "Input should be a number, not a boolean.")
    return value


#: A finite float in [0, 1]; booleans, NaN and infinities are rejected.
Probability = Annotated[
    float,
    # Constraints before the validator so they reach the JSON schema as minimum/maximum.
    Field(ge=0.0, le=1.0, allow_inf_nan=False, description="A probability in [0, 1]."),
    BeforeValidator(_no_bool),
]

#: A string with surrounding whitespace stripped, then 1 to 1024 characters long.
#: Narrow it further with ``Annotated[NonEmptyStr, Field(max_length=80)]``.
NonEmptyStr = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1024)
]


def pattern_type(
    name: str,
    pattern: str,
    *,
    max_length: int = 256,
    description: str | None = None,
    message: str | None = None,
    examples: list[str] | None = None,
) -> Any:
    """Build an ``Annotated[str, ...]`` type checked against a full-match regex.

    The length is checked before the regex (bounded work per value) and the error
    code is ``name`` in snake case; the message never quotes the value::

        UniProtAccession = pattern_type(
            "UniProtAccession", r"[OPQ][0-9][A-Z0-9]{3}[0-9]|[A-NR-Z][0-9][A-Z0-9]{3}[0-9]",
            max_length=10,
        )
    """
    if max_length < 1:
        raise ValueError("max_length must be at least 1")
    compiled = re.compile(pattern)
    code = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
    text = message or f"Not a valid {name}."

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise PydanticCustomError(code, text)
        return value

    return Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=max_length),
        AfterValidator(check),
        Field(
            description=description or name,
            examples=examples,
            json_schema_extra={"pattern": pattern},
        ),
    ]


class TypeRegistry(Mapping[str, Any]):
    """Named field types, so models can be declared from data (templates, configs).

    A registry starts empty, or with the built-in types via :meth:`with_builtins`; no
    global registry exists, so two services never share mutations::

        types = TypeRegistry.with_builtins()
        types.register("UniProtAccession", pattern_type("UniProtAccession", r"..."))
        Params = types.model("Params", {"gene": "GeneSymbol", "cutoff": "Probability"})
    """

    def __init__(self) -> None:
        self._types: dict[str, Any] = {}

    @classmethod
    def with_builtins(cls) -> TypeRegistry:
        """A registry holding GeneSymbol, EnsemblGeneId, Probability, NonEmptyStr and kin."""
        reg = cls()
        for name, tp in {
            "GeneSymbol": GeneSymbol,
            "HumanGeneSymbol": HumanGeneSymbol,
            "MouseGeneSymbol": MouseGeneSymbol,
            "BacterialGeneSymbol": BacterialGeneSymbol,
            "EnsemblGeneId": EnsemblGeneId,
            "Probability": Probability,
            "NonEmptyStr": NonEmptyStr,
        }.items():
            reg.register(name, tp)
        return reg

    def register(self, name: str, annotated: Any, *, replace: bool = False) -> Any:
        """Add ``annotated`` under ``name`` and return it (usable as an assignment)."""
        if not name.isidentifier():
            raise ValueError(f"type name must be an identifier, got {name!r}")
        if name in self._types and not replace:
            raise ValueError(f"type {name!r} is already registered (pass replace=True)")
        self._types[name] = annotated
        return annotated

    def __getitem__(self, name: str) -> Any:
        try:
            return self._types[name]
        except KeyError:
            raise KeyError(f"unknown type {name!r}; registered: {sorted(self._types)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._types)

    def __len__(self) -> int:
        return len(self._types)

    def model(
        self, model_name: str, fields: Mapping[str, str], *, optional: frozenset[str] = frozenset()
    ) -> type[BaseModel]:
        """A pydantic model whose fields use registered types by name (extra fields forbidden).

        Fields named in ``optional`` default to ``None``.
        """
        spec: dict[str, Any] = {}
        for field_name, type_name in fields.items():
            tp = self[type_name]
            spec[field_name] = (tp | None, None) if field_name in optional else (tp, ...)
        model: type[BaseModel] = create_model(model_name, __config__={"extra": "forbid"}, **spec)
        return model
