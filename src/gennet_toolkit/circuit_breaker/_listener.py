"""The listener interface of ``CircuitBreaker``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gennet_toolkit.circuit_breaker._breaker import CircuitBreaker
    from gennet_toolkit.circuit_breaker._state import State

__all__ = ["CircuitBreakerListener"]


class CircuitBreakerListener:
    """Override any of these hooks and pass the listener in ``listeners=``.

    Hooks run in the process and the thread or task that made the call, after the
    breaker's state is updated and outside any lock. A hook that raises is logged and
    ignored: it never changes the outcome of the call.
    """

    def state_change(self, breaker: CircuitBreaker, old: State, new: State) -> None:
        """The breaker changed state (in this process's doing)."""

    def failure(self, breaker: CircuitBreaker, exc: BaseException) -> None:
        """A protected call raised an error that counts as a failure."""

    def success(self, breaker: CircuitBreaker) -> None:
        """A protected call returned (or raised an excluded error)."""

    def rejected(self, breaker: CircuitBreaker, retry_after: float) -> None:
        """A call was refused with ``CircuitOpenError``."""
