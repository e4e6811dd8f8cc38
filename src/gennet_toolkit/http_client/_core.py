"""The machinery both clients share: breaker protocol, per-attempt preparation, errors.

:class:`Core` plans attempts, stamps each one (timeouts shrunk to the deadline,
correlation id, trace context) and maps outcomes to toolkit errors, so the async and
sync clients only send and sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from gennet_toolkit._context import correlation_id_var
from gennet_toolkit._optional import require
from gennet_toolkit.exceptions import ConfigurationError, UpstreamError
from gennet_toolkit.http_client._policy import Plan, RetryBudget, RetryPolicy, UpstreamTimeout

if TYPE_CHECKING:
    import httpx

__all__ = ["UNSET", "Breaker", "BreakerGuard", "Core", "ServerError"]

_FEATURE = "gennet_toolkit.http_client"
UNSET: Any = object()


class BreakerGuard(AbstractContextManager[Any], AbstractAsyncContextManager[Any], Protocol):
    """One protected attempt: usable as ``with`` (sync client) and ``async with`` (async).

    Entering may raise (typically ``CircuitOpenError``) to refuse the attempt; an
    exception leaving the block is a failure, a clean exit a success.
    """


@runtime_checkable
class Breaker(Protocol):
    """What ``breaker=`` accepts: anything with ``calling()`` returning a guard.

    :class:`gennet_toolkit.circuit_breaker.CircuitBreaker` fits. Each attempt runs
    inside ``breaker.calling()``; connection errors, timeouts and 5xx answers leave the
    block as exceptions (failures), 4xx answers exit cleanly (the upstream is alive).
    A refusal on entry is raised to the caller at once and never retried.
    """

    def calling(self) -> BreakerGuard:
        """A context manager guarding one attempt."""
        ...


class ServerError(Exception):
    """Carries a 5xx response out of the breaker block so the breaker counts it."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _httpx() -> Any:
    return require("httpx", extra="http", feature=_FEATURE)


def _tracing_injector(tracer_provider: Any) -> Callable[..., Any] | None:
    # Trace context is a bonus, never a dependency: without opentelemetry the client
    # still works and only the correlation id is sent.
    try:
        from gennet_toolkit.tracing import inject_headers
        from gennet_toolkit.tracing._propagation import load_otel

        load_otel()
        from opentelemetry import trace
    except ImportError:
        return None
    get_current_span = trace.get_current_span
    get_provider = trace.get_tracer_provider
    no_op = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)

    def inject(headers: Any, **kwargs: Any) -> None:
        # With no span to continue and no SDK to start one, inject_headers would
        # write nothing; skipping it saves its span and URL parsing on every call.
        # Checked per call: an SDK installed after the client is built still counts.
        if not get_current_span().get_span_context().is_valid and isinstance(
            tracer_provider or get_provider(), no_op
        ):
            return
        inject_headers(headers, tracer_provider=tracer_provider, **kwargs)

    return inject


def _safe_url(url: httpx.URL) -> str:
    # For hooks and logs: no credentials, no query string (tokens live there).
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}{url.path}"


class Core:
    """Everything the two clients share: configuration and the retry decisions."""

    __slots__ = (
        "_builtin",
        "_httpx",
        "_inject",
        "_timeout_types",
        "_transient",
        "_unsent",
        "breaker",
        "clock",
        "correlation_header",
        "deadline",
        "errors",
        "raise_server_errors",
        "rand",
        "retry",
        "retry_budget",
        "tracer_provider",
    )

    def __init__(
        self,
        *,
        retry: RetryPolicy,
        breaker: Breaker | None,
        deadline: float | None,
        correlation_header: str | None,
        propagate_trace: bool,
        tracer_provider: Any,
        raise_server_errors: bool,
        clock: Callable[[], float],
        rand: Callable[[], float],
        retry_budget: RetryBudget | None = None,
    ) -> None:
        hx = _httpx()
        if not isinstance(retry, RetryPolicy):
            raise ConfigurationError("retry must be a RetryPolicy")
        if breaker is not None and not callable(getattr(breaker, "calling", None)):
            raise ConfigurationError("breaker must have a calling() method (see Breaker)")
        budget: object = deadline
        if budget is not None and not (isinstance(budget, int | float) and budget > 0):
            raise ConfigurationError("deadline must be a positive number of seconds or None")
        self._httpx = hx
        self.retry = retry
        if retry_budget is not None and not isinstance(retry_budget, RetryBudget):
            raise ConfigurationError("retry_budget must be a RetryBudget")
        self.retry_budget = retry_budget
        self.breaker = breaker
        self.deadline = None if deadline is None else float(deadline)
        self.correlation_header = correlation_header or None
        self._inject = _tracing_injector(tracer_provider) if propagate_trace else None
        self.tracer_provider = tracer_provider
        self.raise_server_errors = raise_server_errors
        self.clock = clock
        self.rand = rand
        # Nothing was sent: safe to repeat for any method.
        self._unsent: tuple[type[BaseException], ...] = (
            hx.ConnectError,
            hx.ConnectTimeout,
            hx.PoolTimeout,
        )
        # The request may have reached the upstream: repeat only if that is harmless.
        self._transient: tuple[type[BaseException], ...] = (
            hx.ReadTimeout,
            hx.WriteTimeout,
            hx.ReadError,
            hx.WriteError,
            hx.RemoteProtocolError,
        )
        self._timeout_types = (hx.TimeoutException, TimeoutError)
        #: What an attempt may end with that the planner handles; anything else
        #: (cancellation, programming errors, an open breaker) propagates untouched.
        self._builtin: tuple[type[Exception], ...] = (hx.TransportError, TimeoutError)
        self.errors: tuple[type[Exception], ...] = self._builtin + retry.exceptions

    def plan(self, request: httpx.Request, idempotent: bool | None, deadline: float | None) -> Plan:
        """Fresh per-call retry state for ``request``."""
        policy = self.retry
        method = request.method
        if idempotent is None:
            key = policy.idempotency_header
            idempotent = method in policy.methods or (key is not None and key in request.headers)
        if idempotent and not isinstance(request.stream, self._httpx.ByteStream):
            # A streamed body is consumed by the first attempt; it cannot be replayed.
            idempotent = False
        now = self.clock()
        if self.retry_budget is not None:
            self.retry_budget.deposit()
        budget = self.deadline if deadline is UNSET else deadline
        return Plan(
            policy=policy,
            method=method,
            url=_safe_url(request.url),
            may_repeat=bool(idempotent),
            clock=self.clock,
            wall=time.time,
            rand=self.rand,
            deadline_at=None if budget is None else now + budget,
            started=now,
            budget=self.retry_budget,
        )

    def begin(self, request: httpx.Request, plan: Plan, base: Mapping[str, Any]) -> float | None:
        """Count an attempt, stamp its headers and timeouts; return the time left."""
        plan.attempt += 1
        remaining = plan.remaining()
        if remaining is not None:
            if remaining <= 0:
                raise self._timeout(plan, None)
            # Each phase's timeout shrinks to the budget left, so one slow attempt
            # cannot outlive the call's deadline.
            request.extensions["timeout"] = {
                phase: remaining if limit is None else min(limit, remaining)
                for phase, limit in base.items()
            }
        headers = request.headers
        if self.correlation_header is not None and self.correlation_header not in headers:
            correlation_id = correlation_id_var.get()
            if correlation_id:
                headers[self.correlation_header] = correlation_id
        if self._inject is not None:
            # Per attempt: every try gets its own client span id (W3C parent-id).
            self._inject(headers, method=plan.method, url=plan.url, correlation_header=None)
        return remaining

    def after_response(self, response: httpx.Response, plan: Plan) -> float | None:
        """Seconds to wait before retrying, or ``None`` when this response is final."""
        return plan.retry_status(response)

    def after_error(self, exc: Exception, plan: Plan) -> float:
        """Seconds to wait before retrying, or raise the toolkit error for ``exc``."""
        if not isinstance(exc, self._builtin):
            # One of the policy's own exception types: retried like a read error,
            # re-raised as it is once that is over.
            wait = plan.retry_error(exc, unsent=False, transient=True)
            if wait is None:
                raise exc
            return wait
        if isinstance(exc, TimeoutError):
            # The deadline itself ran out (async guard): no time for another attempt.
            raise self._timeout(plan, exc) from exc
        wait = plan.retry_error(
            exc,
            unsent=isinstance(exc, self._unsent),
            transient=isinstance(exc, self._transient),
        )
        if wait is None:
            raise self._transport_error(exc, plan) from exc
        return wait

    def finish(
        self, response: httpx.Response, plan: Plan, raise_for_status: bool
    ) -> httpx.Response:
        """Return the final response, or raise for a 5xx (or any error when asked)."""
        if response.status_code >= 500 and self.raise_server_errors:
            raise self._server_error(response, plan)
        if raise_for_status and response.status_code >= 400:
            response.raise_for_status()
        return response

    # ------------------------------------------------------------------ errors

    def _server_error(self, response: httpx.Response, plan: Plan) -> UpstreamError:
        status = response.status_code
        cause = self._httpx.HTTPStatusError(
            f"upstream answered {status}", request=response.request, response=response
        )
        # The detail never carries the upstream body or URL: both may hold secrets,
        # and this error can end up in a problem+json response.
        err = UpstreamError(
            f"The upstream service answered {status} after {plan.attempt} attempt(s).",
            extra={"upstream_status": status, "attempts": plan.attempt},
        )
        err.__cause__ = cause
        return err

    def _timeout(self, plan: Plan, exc: BaseException | None) -> UpstreamTimeout:
        err = UpstreamTimeout(
            f"The upstream service did not answer in time ({plan.attempt} attempt(s)).",
            extra={"attempts": plan.attempt},
        )
        err.__cause__ = exc
        return err

    def _transport_error(self, exc: Exception, plan: Plan) -> UpstreamError:
        if isinstance(exc, self._timeout_types):
            return self._timeout(plan, exc)
        if isinstance(exc, self._unsent):
            return UpstreamError(
                f"Could not connect to the upstream service ({plan.attempt} attempt(s)).",
                code="upstream_unreachable",
                extra={"attempts": plan.attempt},
            )
        return UpstreamError(
            f"The connection to the upstream service failed ({plan.attempt} attempt(s)).",
            extra={"attempts": plan.attempt},
        )
