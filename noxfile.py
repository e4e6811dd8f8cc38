"""Developer sessions: ``nox -s tests lint typecheck isolation bench docs demo``.

Every session installs what it needs from this project's own files. Pass extra
arguments after ``--``: ``nox -s tests -- -k backends -x``.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "isolation", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False

ROOT = Path(__file__).parent
PYTHON = ["3.11", "3.12", "3.13"]


@nox.session(python=PYTHON[0])
def tests(session: nox.Session) -> None:
    """The whole suite against the real services (see tests/services.py)."""
    session.install("-e", ".[dev]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON[0])
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over sources, tests, benchmarks and examples."""
    session.install("ruff>=0.6")
    targets = [
        p for p in ("src", "tests", "benchmarks", "examples", "noxfile.py") if Path(p).exists()
    ]
    session.run("ruff", "check", *targets)
    session.run("ruff", "format", "--check", *targets)


@nox.session(python=PYTHON[0])
def typecheck(session: nox.Session) -> None:
    """mypy --strict on src/ with every extra (and the OpenTelemetry SDK) installed."""
    session.install(
        "-e", ".[all,test]", "mypy>=1.10", "types-redis", "types-jsonschema", "types-cachetools"
    )
    session.run("mypy", "--strict", "src")


@nox.session(python=PYTHON[0], venv_backend="venv", reuse_venv=False)
def isolation(session: nox.Session) -> None:
    """Each module imports alone: without extras at all, then only its own extras' packages."""
    session.install(".")
    session.run("python", "tests/isolation.py", "--bare")
    session.install(".[all]")
    session.run("python", "tests/isolation.py")


@nox.session(python=PYTHON[0])
def bench(session: nox.Session) -> None:
    """Every benchmark, side by side with its peer library; results in benchmarks/results/."""
    session.install("-e", ".[all,test,bench]")
    only = set(session.posargs)
    for path in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        if only and path.stem.removeprefix("bench_") not in only:
            continue
        session.log(f"running {path.name}")
        session.run("python", "-m", f"benchmarks.{path.stem}", env={"PYTHONPATH": str(ROOT)})
    results = ROOT / "benchmarks" / "results"
    if results.exists():
        summary = "\n".join(
            p.read_text() for p in sorted(results.glob("*.md")) if p.name != "SUMMARY.md"
        )
        (results / "SUMMARY.md").write_text("# Benchmark results\n\n" + summary)
        session.log(f"summary written to {results / 'SUMMARY.md'}")


@nox.session(python=PYTHON[0])
def docs(session: nox.Session) -> None:
    """Build the documentation with mkdocs in strict mode."""
    session.install("mkdocs>=1.6")
    session.run("mkdocs", "build", "--strict", "--site-dir", str(ROOT / "site"))


@nox.session(python=PYTHON[0])
def demo(session: nox.Session) -> None:
    """Run the example GRN service on embedded defaults (SQLite, in-memory backends)."""
    session.install("-e", ".[all]", "uvicorn>=0.29")
    port = os.environ.get("PORT", "8000")
    session.run("uvicorn", "examples.grn_app.app:app", "--port", port, *session.posargs)
