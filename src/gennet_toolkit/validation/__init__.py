"""Request validation with pydantic 2, answered as RFC 9457 problem details.

- :func:`validate_body` / :func:`validate_query` decorate Starlette endpoints and pass
  the validated model as the argument after the request;
- :func:`parse_body` does the same for any ASGI ``receive`` (no framework needed);
- :class:`BodySizeLimitMiddleware` caps request bodies for a whole app while they stream;
- field types for gene-network services (:data:`GeneSymbol`, :data:`EnsemblGeneId`,
  :data:`Probability`, :data:`NonEmptyStr`), :func:`pattern_type` and
  :class:`TypeRegistry` for your own.

Malformed JSON is a 400, a schema violation a 422 with one ``errors[]`` entry per field
(JSON pointer + message, never the submitted value), a foreign or missing Content-Type a
415 and an oversized body a 413.
"""

from __future__ import annotations

from gennet_toolkit.validation._body import (
    DEFAULT_MAX_SIZE,
    BodySizeLimitMiddleware,
    ClientDisconnected,
    parse_body,
    read_body,
)
from gennet_toolkit.validation._decorators import problem_response, validate_body, validate_query
from gennet_toolkit.validation._types import (
    GENE_SYMBOL_MAX_LENGTH,
    BacterialGeneSymbol,
    EnsemblGeneId,
    GeneSymbol,
    HumanGeneSymbol,
    MouseGeneSymbol,
    NonEmptyStr,
    Probability,
    TypeRegistry,
    gene_symbol_convention,
    pattern_type,
)

__all__ = [
    "DEFAULT_MAX_SIZE",
    "GENE_SYMBOL_MAX_LENGTH",
    "BacterialGeneSymbol",
    "BodySizeLimitMiddleware",
    "ClientDisconnected",
    "EnsemblGeneId",
    "GeneSymbol",
    "HumanGeneSymbol",
    "MouseGeneSymbol",
    "NonEmptyStr",
    "Probability",
    "TypeRegistry",
    "gene_symbol_convention",
    "parse_body",
    "pattern_type",
    "problem_response",
    "read_body",
    "validate_body",
    "validate_query",
]
