"""Versioned workflow templates on SQLAlchemy: publish, discover, instantiate, count usage.

- :class:`Template` (name, semantic version, :class:`Step` DAG, a JSON Schema or pydantic
  model for the parameters, tags, description) is validated when built: cyclic or
  dangling steps, remote ``$ref``, ReDoS-prone ``pattern`` and bad defaults are an
  :class:`InvalidTemplate` (422, also a ``ConfigurationError``);
- :class:`TemplateRegistry` over :class:`SqlTemplateStore` (and :class:`AsyncTemplateRegistry`
  over :class:`AsyncSqlTemplateStore`): ``create``/``publish`` immutable versions (same
  content again is a no-op, different content a 409), ``get`` (latest by semver),
  ``discover`` by tag and text with keyset cursors, ``instantiate`` into a
  :class:`WorkflowRun` with validated parameters, rendered steps and provenance, and
  ``usage`` counts per version rolled up in SQL;
- parameter schemas are compiled once per version (draft 2020-12); bad parameters are a
  422 whose ``errors[]`` carry JSON pointers and never the submitted values.
"""

from __future__ import annotations

from gennet_toolkit.workflow_templates._model import (
    InvalidTemplate,
    RenderedStep,
    Step,
    Template,
    WorkflowRun,
)
from gennet_toolkit.workflow_templates._regex import UnsafePattern, check_pattern
from gennet_toolkit.workflow_templates._registry import (
    AsyncTemplateRegistry,
    TemplatePage,
    TemplateRegistry,
    TemplateUsage,
)
from gennet_toolkit.workflow_templates._semver import SemVer
from gennet_toolkit.workflow_templates._sql import (
    AsyncSqlTemplateStore,
    InvalidCursor,
    SqlTemplateStore,
    TemplateSummary,
)

__all__ = [
    "AsyncSqlTemplateStore",
    "AsyncTemplateRegistry",
    "InvalidCursor",
    "InvalidTemplate",
    "RenderedStep",
    "SemVer",
    "SqlTemplateStore",
    "Step",
    "Template",
    "TemplatePage",
    "TemplateRegistry",
    "TemplateSummary",
    "TemplateUsage",
    "UnsafePattern",
    "WorkflowRun",
    "check_pattern",
]
