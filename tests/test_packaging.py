"""The public surface: the version, the names DESIGN.md promises, docstrings on all of them."""

from __future__ import annotations

import importlib
import inspect

import pytest

import gennet_toolkit
from tests.isolation import ALLOWED, present

#: The names ../shared/DESIGN.md lists per module: a contract outside tests import.
CONTRACT: dict[str, list[str]] = {
    "exceptions": [
        "GenNetError",
        "BadRequest",
        "ValidationFailed",
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "Conflict",
        "PayloadTooLarge",
        "RateLimitExceeded",
        "ServiceUnavailable",
        "UpstreamError",
        "CircuitOpenError",
        "ConcurrencyError",
    ],
    "error_handler": ["ErrorHandlerMiddleware", "problem_response", "install_error_handlers"],
    "backends": ["from_url"],
    "logging_middleware": [
        "CorrelationIdMiddleware",
        "get_correlation_id",
        "CorrelationIdFilter",
        "JsonFormatter",
        "AccessLogMiddleware",
        "configure_logging",
    ],
    "metrics": ["PrometheusMiddleware", "metrics_app", "BusinessMetrics"],
    "tracing": [
        "TracingMiddleware",
        "traced",
        "setup_tracing",
        "current_trace_id",
        "inject_headers",
    ],
    "health_checks": [
        "HealthRegistry",
        "redis_check",
        "sqlalchemy_check",
        "http_check",
        "health_app",
    ],
    "monitoring": ["Monitor", "AlertRule"],
    "compression": ["CompressionMiddleware"],
    "api_versioning": ["VersioningMiddleware", "get_api_version"],
    "rate_limit": [
        "RateLimiter",
        "RateLimitMiddleware",
        "Rule",
        "rate_limited",
        "by_ip",
        "by_user",
        "by_api_key",
    ],
    "validation": [
        "validate_body",
        "validate_query",
        "GeneSymbol",
        "EnsemblGeneId",
        "Probability",
        "NonEmptyStr",
    ],
    "cache": ["Cache"],
    "advanced_cache": ["LRUCache", "LFUCache", "FIFOCache", "TTLCache", "TieredCache", "warm"],
    "circuit_breaker": ["CircuitBreaker"],
    "http_client": ["ResilientClient", "RetryPolicy"],
    "task_queue": ["TaskQueue", "TaskResult"],
    "websocket_manager": ["ConnectionManager"],
    "pagination": ["CursorPaginator", "Page"],
    "search": ["FilterSet"],
    "batch_operations": ["BatchProcessor", "BatchResult", "ItemError"],
    "event_sourcing": ["EventStore", "AuditTrailMiddleware"],
    "workflow_templates": ["TemplateRegistry", "Template"],
    "api_keys": ["ApiKeyManager", "ApiKeyMiddleware", "require_scopes"],
    "rbac": ["Permission", "Role", "RBAC", "require_permission"],
}

BUILT = [m for m in CONTRACT if present(f"gennet_toolkit.{m}")]


def test_version_is_exposed_and_matches_metadata() -> None:
    from importlib.metadata import version

    assert gennet_toolkit.__version__ == version("gennet-toolkit")


def test_top_level_package_imports_no_module() -> None:
    import subprocess
    import sys

    code = (
        "import sys, gennet_toolkit\n"
        "print(sorted(m for m in sys.modules if m.startswith('gennet_toolkit.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['gennet_toolkit._version']"


def test_contract_covers_every_module_in_the_isolation_table() -> None:
    listed = {m.removeprefix("gennet_toolkit.") for m in ALLOWED} - {"gennet_toolkit", "types"}
    assert listed == set(CONTRACT)


@pytest.mark.parametrize("name", BUILT)
def test_contract_names_exist_and_are_exported(name: str) -> None:
    module = importlib.import_module(f"gennet_toolkit.{name}")
    exported = set(getattr(module, "__all__", ()))
    for attr in CONTRACT[name]:
        assert hasattr(module, attr), f"gennet_toolkit.{name}.{attr} is missing"
        assert attr in exported, f"gennet_toolkit.{name}.{attr} is not in __all__"


@pytest.mark.parametrize("name", BUILT)
def test_every_exported_name_exists_and_is_documented(name: str) -> None:
    module = importlib.import_module(f"gennet_toolkit.{name}")
    assert module.__doc__, f"gennet_toolkit.{name} has no module docstring"
    for attr in module.__all__:
        obj = getattr(module, attr)  # AttributeError if __all__ lies
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"gennet_toolkit.{name}.{attr} has no docstring"


def test_py_typed_marker_ships() -> None:
    from importlib.resources import files

    assert files("gennet_toolkit").joinpath("py.typed").is_file()
