"""The service fixtures the backend tests stand on (tests/services.py), run as pytest would.

Each test runs a small test file in a child pytest, so what is checked is the outcome
a developer or CI sees: a missing service skips with its reason, fails under
``GENNET_REQUIRE_SERVICES=1``, and whatever a test created is gone after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import closed_port_url

ROOT = Path(__file__).resolve().parents[1]
# The child runs outside the project's config, so the service markers are unknown there.
QUIET = ("-W", "ignore::pytest.PytestUnknownMarkWarning")

NEEDS_EVERY_SERVICE = """
from tests.services import (
    amqp_url, postgres_url, redis_prefix, redis_server, redis_server_url, redis_url,
)

def test_redis(redis_url): pass
def test_redis_prefix(redis_prefix): pass
def test_postgres(postgres_url): pass
def test_amqp(amqp_url): pass
def test_private_redis_server(redis_server): pass
"""

LEAVES_DATA_BEHIND = """
import json, os, pathlib
import redis
from sqlalchemy import text
from tests.services import database, postgres_url, redis_prefix, redis_server_url, redis_url

OUT = pathlib.Path(os.environ["SERVICES_PROBE_OUT"])

def _record(**kw):
    data = json.loads(OUT.read_text()) if OUT.exists() else {}
    data.update(kw)
    OUT.write_text(json.dumps(data))

def test_writes_redis_keys(redis_url, redis_prefix):
    client = redis.Redis.from_url(redis_url)
    client.set(redis_prefix + "a", "1")
    client.set(redis_prefix + "b:c", "2")
    client.close()
    _record(redis_url=redis_url, redis_prefix=redis_prefix)

def test_creates_a_table(database, postgres_url):
    if database.kind != "postgres":
        return
    engine = database.engine()
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE leftover (id int)"))
    engine.dispose()
    _record(database=postgres_url.rsplit("/", 1)[1])
"""


def run_child_pytest(
    tmp_path: Path, source: str, *, env: dict[str, str], require: bool
) -> subprocess.CompletedProcess[str]:
    """Run ``source`` as a test file in a fresh pytest, from outside the project's config."""
    (tmp_path / "test_child.py").write_text(source)
    child_env = {k: v for k, v in os.environ.items() if k != "GENNET_REQUIRE_SERVICES"}
    child_env.update(env, PYTHONPATH=str(ROOT))
    if require:
        child_env["GENNET_REQUIRE_SERVICES"] = "1"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rsf",
            "-p",
            "no:cacheprovider",
            *QUIET,
            "test_child.py",
        ],
        cwd=tmp_path,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def nothing_answers(tmp_path: Path) -> dict[str, str]:
    """Service URLs on closed loopback ports, and a PATH without ``redis-server``."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    return {
        "REDIS_URL": closed_port_url("redis"),
        "DATABASE_URL": closed_port_url("postgresql"),
        "AMQP_URL": closed_port_url("amqp"),
        "PATH": str(empty),
    }


def test_unreachable_services_skip_with_their_reason(
    tmp_path: Path, nothing_answers: dict[str, str]
) -> None:
    proc = run_child_pytest(tmp_path, NEEDS_EVERY_SERVICE, env=nothing_answers, require=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "5 skipped" in out
    for reason in (
        "Redis is not reachable",
        "PostgreSQL is not reachable",
        "RabbitMQ is not reachable",
        "redis-server is not installed",
    ):
        assert reason in out


def test_unreachable_services_fail_when_services_are_required(
    tmp_path: Path, nothing_answers: dict[str, str]
) -> None:
    proc = run_child_pytest(tmp_path, NEEDS_EVERY_SERVICE, env=nothing_answers, require=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "5 errors" in out  # a fixture that fails is an error at setup
    assert "skipped" not in out
    assert out.count("required service unavailable") >= 5


@pytest.mark.redis
@pytest.mark.postgres
def test_each_test_leaves_no_keys_schema_or_database_behind(
    tmp_path: Path, redis_url: str, postgres_url: str
) -> None:
    import psycopg
    import redis

    out_file = tmp_path / "created.json"
    proc = run_child_pytest(
        tmp_path, LEAVES_DATA_BEHIND, env={"SERVICES_PROBE_OUT": str(out_file)}, require=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    created = json.loads(out_file.read_text())

    client = redis.Redis.from_url(created["redis_url"])
    try:
        assert list(client.scan_iter(match=created["redis_prefix"] + "*")) == []
    finally:
        client.close()

    # pg_database is shared by every database: ask from the parent session's own.
    with psycopg.connect(postgres_url.replace("+psycopg", ""), autocommit=True) as conn:
        databases = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
    assert created["database"] not in databases
    # The parent session's own database is still there: the child dropped only its own.
    assert postgres_url.rsplit("/", 1)[1] in databases
