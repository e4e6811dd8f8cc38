"""Configuration of the GRN service, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["Settings"]


def _async_url(url: str) -> str:
    """Give a plain database URL its async driver (aiosqlite, asyncpg)."""
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("sqlite://") and "+" not in url.split("://", 1)[0]:
        return "sqlite+aiosqlite://" + url.split("://", 1)[1]
    return url


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from the environment; defaults need no servers."""

    database_url: str = "sqlite+aiosqlite:///./grn_demo.db"
    backend_url: str = "memory://"
    secret: str = "grn-demo-secret-change-me-0123456789"
    audit_key: bytes = b"grn-demo-audit-key-change-me-32B!"
    upstream_url: str | None = None
    rate_limit: str = "50/second;2000/minute"
    task_queue_url: str = "inprocess://"
    seed: bool = True

    @classmethod
    def from_env(cls, prefix: str = "GRN_") -> Settings:
        """Read ``DATABASE_URL`` and ``GRN_*`` variables (``GRN_UPSTREAM_URL``...)."""
        env = os.environ
        return cls(
            database_url=_async_url(
                env.get(f"{prefix}DATABASE_URL")
                or env.get("DATABASE_URL")
                or "sqlite+aiosqlite:///./grn_demo.db"
            ),
            backend_url=env.get(f"{prefix}BACKEND_URL", "memory://"),
            secret=env.get(f"{prefix}SECRET", cls.secret),
            audit_key=env.get(f"{prefix}AUDIT_KEY", cls.audit_key.decode()).encode(),
            upstream_url=env.get(f"{prefix}UPSTREAM_URL") or None,
            rate_limit=env.get(f"{prefix}RATE_LIMIT", cls.rate_limit),
            task_queue_url=env.get(f"{prefix}TASK_QUEUE_URL", "inprocess://"),
            seed=env.get(f"{prefix}SEED", "1") != "0",
        )
