"""Circuit breakers for sync and async calls, with state shared across processes.

::

    from gennet_toolkit.circuit_breaker import CircuitBreaker

    breaker = CircuitBreaker("genes-db", fail_max=5, reset_timeout=30,
                             exclude=[KeyError], backend="redis://127.0.0.1:6379/0")

    @breaker
    async def fetch(gene_id: str) -> dict: ...

    with breaker:          # or: async with breaker:
        call_upstream()

While the breaker is open, calls raise
:class:`~gennet_toolkit.exceptions.CircuitOpenError` (503, ``Retry-After``).
"""

from __future__ import annotations

from gennet_toolkit.circuit_breaker._breaker import CircuitBreaker
from gennet_toolkit.circuit_breaker._listener import CircuitBreakerListener
from gennet_toolkit.circuit_breaker._options import Exclude
from gennet_toolkit.circuit_breaker._state import State
from gennet_toolkit.exceptions import CircuitOpenError

__all__ = ["CircuitBreaker", "CircuitBreakerListener", "CircuitOpenError", "Exclude", "State"]
