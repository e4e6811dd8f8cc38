"""Request-scoped context shared between modules without importing each other.

The logging middleware sets the correlation id here; the error handler, the HTTP
client and the task queue read it. Keeping the ContextVar in a private module with no
dependencies lets each of those stay independent of the others.
"""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["correlation_id_var"]

#: The current request's correlation id, or ``None`` outside a request.
correlation_id_var: ContextVar[str | None] = ContextVar("gennet_correlation_id", default=None)
