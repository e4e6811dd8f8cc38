"""The one table of which optional dependencies each module may import, and its check.

Each toolkit module is imported in a fresh interpreter; every top-level package it
pulled into ``sys.modules`` that belongs to an optional extra must be one of the
extras the table allows for it. Importing must also leave logging untouched (no
handlers added, no levels changed): modules have no import-time side effects.

Run it with ``nox -s isolation`` or ``python tests/isolation.py [module ...]``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

#: Import names provided by each extra (top-level packages, including their own deps
#: that only ever arrive through that extra).
EXTRA_PACKAGES: dict[str, frozenset[str]] = {
    "redis": frozenset({"redis"}),
    "metrics": frozenset({"prometheus_client"}),
    "otel": frozenset({"opentelemetry"}),
    "brotli": frozenset({"brotli"}),
    "http": frozenset({"httpx", "httpcore", "h11", "tenacity"}),
    # pybreaker is a benchmark peer only: no module may import it.
    "msgpack": frozenset({"msgpack"}),
    "_peers": frozenset(
        {
            "pybreaker",
            "cachetools",
            "limits",
            "slowapi",
            "casbin",
            "cashews",
            "aiocache",
            "broadcaster",
        }
    ),
    "sql": frozenset({"sqlalchemy", "aiosqlite", "greenlet"}),
    "postgres": frozenset({"asyncpg", "psycopg", "psycopg_binary"}),
    "jsonschema": frozenset({"jsonschema", "jsonschema_specifications", "referencing"}),
    "crypto": frozenset({"cryptography"}),
    "celery": frozenset({"celery", "kombu", "billiard", "vine"}),
    "rq": frozenset({"rq"}),
    # Not extras, but frameworks a module must never import on its own.
    "_never": frozenset({"fastapi", "uvicorn", "structlog"}),
}

#: The allowed extras per module. Modules not present on disk are skipped.
ALLOWED: dict[str, frozenset[str]] = {
    # foundation
    "gennet_toolkit": frozenset(),
    "gennet_toolkit.types": frozenset(),
    "gennet_toolkit.exceptions": frozenset(),
    "gennet_toolkit.error_handler": frozenset(),
    "gennet_toolkit.backends": frozenset(),
    # observability
    "gennet_toolkit.logging_middleware": frozenset(),
    "gennet_toolkit.metrics": frozenset(),
    "gennet_toolkit.tracing": frozenset(),
    "gennet_toolkit.health_checks": frozenset(),
    "gennet_toolkit.monitoring": frozenset(),
    # HTTP layer
    "gennet_toolkit.compression": frozenset(),
    "gennet_toolkit.api_versioning": frozenset(),
    "gennet_toolkit.rate_limit": frozenset(),
    "gennet_toolkit.validation": frozenset(),
    # resilience and state
    "gennet_toolkit.cache": frozenset({"msgpack"}),
    "gennet_toolkit.advanced_cache": frozenset(),
    "gennet_toolkit.circuit_breaker": frozenset(),
    "gennet_toolkit.http_client": frozenset({"http"}),
    "gennet_toolkit.task_queue": frozenset(),
    "gennet_toolkit.websocket_manager": frozenset(),
    # data
    "gennet_toolkit.pagination": frozenset({"sql", "crypto"}),
    "gennet_toolkit.search": frozenset({"sql"}),
    "gennet_toolkit.batch_operations": frozenset({"sql"}),
    "gennet_toolkit.event_sourcing": frozenset({"sql"}),
    "gennet_toolkit.workflow_templates": frozenset({"sql", "jsonschema"}),
    # security
    "gennet_toolkit.api_keys": frozenset({"sql"}),
    "gennet_toolkit.rbac": frozenset(),
}

_PROBE = """
import json, logging, sys
root = logging.getLogger()
before_handlers, before_level = list(root.handlers), root.level
loaded_before = set(sys.modules)
import importlib
importlib.import_module(sys.argv[1])
new = sorted({m.partition('.')[0] for m in set(sys.modules) - loaded_before})
side_effects = []
if list(root.handlers) != before_handlers or root.level != before_level:
    side_effects.append("configured the root logger")
print(json.dumps({"new": new, "side_effects": side_effects}))
"""

SRC = Path(__file__).resolve().parents[1] / "src" / "gennet_toolkit"


def present(module: str) -> bool:
    """Whether ``module`` exists in the source tree (as a file or a package)."""
    parts = module.split(".")[1:]
    if not parts:
        return True
    base = SRC.joinpath(*parts)
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def check(module: str) -> list[str]:
    """Problems found when importing ``module`` alone; an empty list means it is clean."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, module], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        return [f"import failed: {proc.stderr.strip().splitlines()[-1:]}"]
    report = json.loads(proc.stdout)
    allowed = (
        set().union(*(EXTRA_PACKAGES[e] for e in ALLOWED[module])) if ALLOWED[module] else set()
    )
    optional = set().union(*EXTRA_PACKAGES.values())
    problems = [
        f"imports {name!r}, which is not in its extras {sorted(ALLOWED[module])}"
        for name in report["new"]
        if name in optional and name not in allowed
    ]
    problems += report["side_effects"]
    return problems


_BARE_PROBE = """
import importlib, sys
mod, extras = sys.argv[1], sys.argv[2].split(",") if sys.argv[2] else []
try:
    importlib.import_module(mod)
except ImportError as exc:
    # A module built on its extra (SQLAlchemy for the data modules) may refuse to import,
    # but only with the hint that names that extra.
    if not any(f'pip install "gennet-toolkit[{e}]"' in str(exc) for e in extras):
        raise
    raise SystemExit(0)
if mod == "gennet_toolkit.backends":
    # The Lua scripts are package data: the installed wheel must carry every one.
    from gennet_toolkit.backends._redis_ops import SCRIPTS, script
    for name in SCRIPTS:
        script(name)
    from gennet_toolkit.backends import from_url
    try:
        from_url("redis://127.0.0.1:6379/0")
    except ImportError as exc:
        assert 'pip install "gennet-toolkit[redis]"' in str(exc), str(exc)
    else:
        raise SystemExit("the Redis backend worked without the redis extra")
"""


def check_bare(module: str) -> list[str]:
    """In an environment without any extra: the module imports, and missing extras say so."""
    proc = subprocess.run(
        [sys.executable, "-c", _BARE_PROBE, module, ",".join(sorted(ALLOWED[module]))],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return [f"failed without extras: {lines[-1] if lines else proc.returncode}"]
    return []


def main(argv: list[str]) -> int:
    """Check the named modules (default: every module present); print a line per module.

    ``--bare`` runs the no-extras check instead (for an environment with only the core
    dependencies installed).
    """
    bare = "--bare" in argv
    names = [a for a in argv if not a.startswith("--")]
    modules = names or [m for m in ALLOWED if present(m)]
    failed = 0
    for module in modules:
        problems = check_bare(module) if bare else check(module)
        status = "ok" if not problems else "FAIL: " + "; ".join(problems)
        print(f"{module:40} {status}")
        failed += bool(problems)
    mode = "without extras" if bare else "import table"
    print(f"isolation ({mode}): {len(modules) - failed} modules clean, {failed} with problems")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
