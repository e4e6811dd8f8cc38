"""Real services for the tests: Redis, PostgreSQL, RabbitMQ, and throwaway Redis servers.

A test that needs a service asks for its fixture (``redis_url``, ``postgres_url``,
``amqp_url``). When the service does not answer, the test is skipped with the reason,
unless ``GENNET_REQUIRE_SERVICES=1`` (set by ``.ci/run``), where it fails instead.

Every run cleans up after itself: Redis keys live under a per-test prefix in a
dedicated database (``/15`` by default) and are deleted afterwards; PostgreSQL gets a
fresh database per test session, dropped at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://127.0.0.1:5432/test")
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")

#: A short id for this test run; keys and databases it creates carry it.
RUN_ID = uuid.uuid4().hex[:8]


def services_required() -> bool:
    """True when missing services must fail the run (``GENNET_REQUIRE_SERVICES=1``)."""
    return os.environ.get("GENNET_REQUIRE_SERVICES", "") not in {"", "0", "false", "no"}


def unavailable(reason: str) -> None:
    """Skip the current test with ``reason``, or fail it when services are required."""
    if services_required():
        pytest.fail(f"required service unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_port_url(scheme: str = "redis") -> str:
    """A URL pointing at a loopback port with no server: every connection is refused."""
    return f"{scheme}://127.0.0.1:{free_port()}/0"


# --------------------------------------------------------------------------- Redis


@pytest.fixture(scope="session")
def redis_server_url() -> str:
    """The shared Redis server's URL, after checking it answers."""
    host, port = _host_port(REDIS_URL, 6379)
    if not port_open(host, port):
        unavailable(f"Redis is not reachable at {host}:{port} (set REDIS_URL)")
    return REDIS_URL


@pytest.fixture
def redis_prefix(request: pytest.FixtureRequest, redis_server_url: str) -> Iterator[str]:
    """A key prefix unique to this test; every key under it is deleted afterwards."""
    prefix = f"gntest:{RUN_ID}:{uuid.uuid4().hex[:8]}:"
    yield prefix
    import redis

    client = redis.Redis.from_url(redis_server_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    """The Redis URL for a test (database 15 unless ``REDIS_URL`` says otherwise)."""
    return redis_server_url


class RedisServer:
    """A ``redis-server`` of the test's own on a spare loopback port, to stop and restart.

    Used by failure tests: ``stop()`` kills it (connections are refused), ``start()``
    brings it back on the same port with an empty dataset.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.mkdtemp(prefix="gntest-redis-")
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it accepts connections."""
        exe = shutil.which("redis-server")
        if exe is None:
            unavailable("redis-server is not installed")
        assert exe is not None
        self._proc = subprocess.Popen(
            [
                exe,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if port_open("127.0.0.1", self.port, timeout=0.2):
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        """Kill the server (SIGKILL: no graceful shutdown, like a crash)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=10)
            self._proc = None
        deadline = time.monotonic() + 5
        while port_open("127.0.0.1", self.port, timeout=0.1) and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self) -> None:
        """Stop, then start again on the same port."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private, running Redis server that the test may kill and restart."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


# --------------------------------------------------------------------------- PostgreSQL


def _with_driver(url: str, driver: str) -> str:
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    if scheme == "postgres":
        scheme = "postgresql"
    return urlunsplit((f"{scheme}+{driver}", *parts[1:]))


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, as a ``postgresql+psycopg`` URL.

    The database is created from ``DATABASE_URL`` and dropped after the session.
    Use :func:`async_url` for the asyncpg form of the same database.
    """
    host, port = _host_port(DATABASE_URL, 5432)
    if not port_open(host, port):
        unavailable(f"PostgreSQL is not reachable at {host}:{port} (set DATABASE_URL)")
    try:
        import psycopg
    except ImportError:  # pragma: no cover - the test extra installs it
        unavailable("psycopg is not installed")
        raise
    admin = _with_driver(DATABASE_URL, "psycopg").replace("postgresql+psycopg", "postgresql")
    name = f"gntest_{RUN_ID}_{os.getpid()}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(_with_driver(DATABASE_URL, "psycopg"), name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def async_url(url: str) -> str:
    """The async driver form of a database URL (asyncpg for PostgreSQL, aiosqlite for SQLite)."""
    if url.startswith("sqlite"):
        return url.replace("sqlite://", "sqlite+aiosqlite://", 1).replace(
            "sqlite+pysqlite", "sqlite+aiosqlite"
        )
    return _with_driver(url, "asyncpg")


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    """A file-backed SQLite database in the test's temporary directory (sync driver URL)."""
    return f"sqlite:///{tmp_path}/test.db"


@dataclass
class Database:
    """One test database: SQLite in a temp dir, or a private schema on PostgreSQL.

    ``url`` is the sync SQLAlchemy URL, ``async_url`` the async one; ``engine()`` and
    ``async_engine()`` build engines whose connections see only this test's schema.
    """

    kind: str
    url: str
    async_url: str
    schema: str | None = None

    def engine(self, **kw: Any) -> Any:
        """A sync SQLAlchemy engine on this database."""
        from sqlalchemy import create_engine

        if self.schema:
            kw.setdefault("connect_args", {})["options"] = f"-csearch_path={self.schema}"
        return create_engine(self.url, **kw)

    def async_engine(self, **kw: Any) -> Any:
        """An async SQLAlchemy engine (aiosqlite or asyncpg) on this database."""
        from sqlalchemy.ext.asyncio import create_async_engine

        if self.schema:
            kw.setdefault("connect_args", {})["server_settings"] = {"search_path": self.schema}
        return create_async_engine(self.async_url, **kw)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Database]:
    """A :class:`Database`, once on SQLite and once on PostgreSQL (own schema, dropped after)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/test.db"
        yield Database("sqlite", url, async_url(url))
        return
    base = request.getfixturevalue("postgres_url")
    schema = f"t_{uuid.uuid4().hex[:10]}"
    import psycopg

    plain = base.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield Database("postgres", base, async_url(base), schema)
    finally:
        with psycopg.connect(plain, autocommit=True) as conn, contextlib.suppress(Exception):
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


# --------------------------------------------------------------------------- RabbitMQ


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """The RabbitMQ broker's URL, after checking it answers."""
    host, port = _host_port(AMQP_URL, 5672)
    if not port_open(host, port):
        unavailable(f"RabbitMQ is not reachable at {host}:{port} (set AMQP_URL)")
    return AMQP_URL
