"""Shared fixtures. Real-service fixtures live in ``tests/services.py``."""

from __future__ import annotations

import pytest

from tests.services import (  # noqa: F401  (re-exported as fixtures)
    amqp_url,
    database,
    postgres_url,
    redis_prefix,
    redis_server,
    redis_server_url,
    redis_url,
    sqlite_url,
)


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (the toolkit targets asyncio servers)."""
    return "asyncio"
