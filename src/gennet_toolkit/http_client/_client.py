"""ResilientClient (async) and SyncResilientClient on httpx.

Both build one :class:`~gennet_toolkit.http_client._core.Core` holding the policy and
the retry decisions; each class only sends and sleeps.
"""

from __future__ import annotations

import asyncio
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from gennet_toolkit._env import env_float, env_str
from gennet_toolkit.http_client._core import UNSET, Breaker, Core, ServerError
from gennet_toolkit.http_client._policy import Plan, RetryBudget, RetryPolicy

if TYPE_CHECKING:
    import httpx

__all__ = ["ResilientClient", "SyncResilientClient"]


class _Base(ABC):
    """Constructor and options shared by both clients."""

    _core: Core

    def __init__(
        self,
        base_url: str | httpx.URL = "",
        *,
        timeout: float | httpx.Timeout | None = 5.0,
        retry: RetryPolicy | None = None,
        retry_budget: RetryBudget | None = None,
        breaker: Breaker | None = None,
        headers: Mapping[str, str] | None = None,
        limits: httpx.Limits | None = None,
        deadline: float | None = 30.0,
        correlation_header: str | None = "X-Request-ID",
        propagate_trace: bool = True,
        tracer_provider: Any = None,
        raise_server_errors: bool = True,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        **httpx_options: Any,
    ) -> None:
        self._core = Core(
            retry=RetryPolicy() if retry is None else retry,
            retry_budget=retry_budget,
            breaker=breaker,
            deadline=deadline,
            correlation_header=correlation_header,
            propagate_trace=propagate_trace,
            tracer_provider=tracer_provider,
            raise_server_errors=raise_server_errors,
            clock=clock,
            rand=rand,
        )
        hx = self._core._httpx
        options: dict[str, Any] = {
            "base_url": base_url,
            "timeout": timeout,
            "headers": headers,
            **httpx_options,
        }
        if limits is not None:
            options["limits"] = limits
        self._open(hx, options)

    @abstractmethod
    def _open(self, hx: Any, options: dict[str, Any]) -> None:
        """Create the httpx client (async or sync) from ``options``."""

    @classmethod
    def from_env(cls, prefix: str = "GENNET_", **overrides: Any) -> Self:
        """Build from ``{prefix}HTTP_BASE_URL``, ``HTTP_TIMEOUT``, ``HTTP_DEADLINE``
        (``0`` = none), ``HTTP_CORRELATION_HEADER``, the ``HTTP_RETRY_*`` variables of
        :meth:`RetryPolicy.from_env` and, if any is set, the ``HTTP_RETRY_BUDGET_*``
        ones of :meth:`RetryBudget.from_env`; keyword arguments win."""
        kwargs: dict[str, Any] = {}
        if (base_url := env_str(f"{prefix}HTTP_BASE_URL")) is not None:
            kwargs["base_url"] = base_url
        if (timeout := env_float(f"{prefix}HTTP_TIMEOUT")) is not None:
            kwargs["timeout"] = timeout
        if (deadline := env_float(f"{prefix}HTTP_DEADLINE")) is not None:
            kwargs["deadline"] = deadline or None
        if (header := env_str(f"{prefix}HTTP_CORRELATION_HEADER")) is not None:
            kwargs["correlation_header"] = header
        if "retry" not in overrides:
            kwargs["retry"] = RetryPolicy.from_env(prefix)
        if "retry_budget" not in overrides and any(
            env_str(f"{prefix}HTTP_RETRY_BUDGET_{name}") is not None
            for name in ("RATIO", "MIN_PER_SECOND", "BURST")
        ):
            kwargs["retry_budget"] = RetryBudget.from_env(prefix)
        kwargs.update(overrides)
        return cls(**kwargs)

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy applied to every call."""
        return self._core.retry

    def _prepare(
        self,
        method: str,
        url: str | httpx.URL,
        idempotent: bool | None,
        deadline: float | None,
        kwargs: dict[str, Any],
    ) -> tuple[httpx.Request, Plan, dict[str, Any]]:
        request = self._build(method, url, kwargs)
        plan = self._core.plan(request, idempotent, deadline)
        base = dict(request.extensions.get("timeout") or {})
        return request, plan, base

    @abstractmethod
    def _build(self, method: str, url: str | httpx.URL, kwargs: dict[str, Any]) -> httpx.Request:
        """Build the request with the underlying httpx client."""


class ResilientClient(_Base):
    """An ``httpx.AsyncClient`` that retries safely, keeps a deadline and propagates context.

        async with ResilientClient("http://genes.internal", retry=RetryPolicy(attempts=4)) as c:
            response = await c.get("/v1/genes/lacZ")

    Each call: at most ``retry.attempts`` tries within ``deadline`` seconds in total
    (``None``: no overall limit), each try's timeouts shrunk to the time left and the
    whole try cancelled when the deadline passes. 4xx responses are returned (pass
    ``raise_for_status=True`` to raise ``httpx.HTTPStatusError``); a 5xx after retries
    raises :class:`~gennet_toolkit.exceptions.UpstreamError` (502), a connection failure
    ``UpstreamError`` with code ``upstream_unreachable``, a timeout
    :class:`UpstreamTimeout` (504), an open breaker its own error (``CircuitOpenError``).
    Other keyword arguments go to ``httpx.AsyncClient`` (``transport=``, ``auth=``, …);
    ``sleep`` replaces ``anyio.sleep`` and ``clock`` ``time.monotonic`` (tests).
    """

    _client: httpx.AsyncClient
    _sleep: Callable[[float], Awaitable[Any]]

    def __init__(
        self,
        base_url: str | httpx.URL = "",
        *,
        sleep: Callable[[float], Awaitable[Any]] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(base_url, **options)
        if sleep is None:
            import anyio

            sleep = anyio.sleep
        self._sleep = sleep

    def _open(self, hx: Any, options: dict[str, Any]) -> None:
        self._client = hx.AsyncClient(**options)

    def _build(self, method: str, url: str | httpx.URL, kwargs: dict[str, Any]) -> httpx.Request:
        return self._client.build_request(method, url, **kwargs)

    @property
    def httpx_client(self) -> httpx.AsyncClient:
        """The underlying ``httpx.AsyncClient`` (requests sent on it are not retried)."""
        return self._client

    async def request(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        idempotent: bool | None = None,
        deadline: float | None = UNSET,
        raise_for_status: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send one logical request, retrying per the policy.

        ``idempotent=True`` allows retrying a method the policy would not (a POST you
        know is safe to repeat), ``False`` forbids it; ``deadline`` overrides the
        client's for this call. Other arguments are ``httpx.AsyncClient.request``'s
        (``params``, ``headers``, ``json``, ``content``, ``timeout``, …).
        """
        core = self._core
        request, plan, base = self._prepare(method, url, idempotent, deadline, kwargs)
        wait: float | None
        while True:
            remaining = core.begin(request, plan, base)
            try:
                response = await self._attempt(request, remaining)
            except core.errors as exc:
                wait = core.after_error(exc, plan)
            else:
                wait = core.after_response(response, plan)
                if wait is None:
                    return core.finish(response, plan, raise_for_status)
                await response.aclose()
            await self._sleep(wait)

    async def _attempt(self, request: httpx.Request, remaining: float | None) -> httpx.Response:
        breaker = self._core.breaker
        if breaker is None:
            return await self._send(request, remaining)
        try:
            async with breaker.calling():
                response = await self._send(request, remaining)
                if response.status_code >= 500:
                    raise ServerError(response)
                return response
        except ServerError as answered:
            return answered.response

    async def _send(self, request: httpx.Request, remaining: float | None) -> httpx.Response:
        if remaining is None:
            return await self._client.send(request)
        # httpx timeouts are per operation: a slow-drip body never trips them
        # (encode/httpx#1450). This bounds the whole attempt. asyncio.timeout costs a
        # third of anyio.fail_after; anyio covers the other event loops (trio).
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            import anyio

            with anyio.fail_after(remaining):
                return await self._client.send(request)
        async with asyncio.timeout(remaining):
            return await self._client.send(request)

    async def get(self, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
        """``GET``; see :meth:`request`."""
        return await self.request("GET", url, **kwargs)

    async def head(self, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
        """``HEAD``; see :meth:`request`."""
        return await self.request("HEAD", url, **kwargs)

    async def options(self, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
        """``OPTIONS``; see :meth:`request`."""
        return await self.request("OPTIONS", url, **kwargs)

    async def post(self, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
        """``POST`` (retried only with an idempotency key or ``idempotent=True``)."""
        return await self.request("POST", url, **kwargs)

    async def put(self, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
        """``PUT``; see :meth:`request`."""
        return await self.request("PUT", url, **kwargs)

    async def patch(self, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
        """``PATCH`` (retried only with an idempotency key or ``idempotent=True``)."""
        return await self.request("PATCH", url, **kwargs)

    async def delete(self, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
        """``DELETE``; see :meth:`request`."""
        return await self.request("DELETE", url, **kwargs)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        await self._client.__aenter__()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._client.__aexit__(et, e, tb)


class SyncResilientClient(_Base):
    """The blocking twin of :class:`ResilientClient` on ``httpx.Client``; same options.

    One difference: without an event loop there is nothing to cancel a slow-drip body
    with, so each attempt is bounded by its (shrunk) per-phase timeouts, not by a
    guard around the whole attempt. ``sleep`` replaces ``time.sleep``.
    """

    _client: httpx.Client
    _sleep: Callable[[float], Any]

    def __init__(
        self,
        base_url: str | httpx.URL = "",
        *,
        sleep: Callable[[float], Any] = time.sleep,
        **options: Any,
    ) -> None:
        super().__init__(base_url, **options)
        self._sleep = sleep

    def _open(self, hx: Any, options: dict[str, Any]) -> None:
        self._client = hx.Client(**options)

    def _build(self, method: str, url: str | httpx.URL, kwargs: dict[str, Any]) -> httpx.Request:
        return self._client.build_request(method, url, **kwargs)

    @property
    def httpx_client(self) -> httpx.Client:
        """The underlying ``httpx.Client`` (requests sent on it are not retried)."""
        return self._client

    def request(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        idempotent: bool | None = None,
        deadline: float | None = UNSET,
        raise_for_status: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send one logical request, retrying per the policy (see ``ResilientClient``)."""
        core = self._core
        request, plan, base = self._prepare(method, url, idempotent, deadline, kwargs)
        wait: float | None
        while True:
            core.begin(request, plan, base)
            try:
                response = self._attempt(request)
            except core.errors as exc:
                wait = core.after_error(exc, plan)
            else:
                wait = core.after_response(response, plan)
                if wait is None:
                    return core.finish(response, plan, raise_for_status)
                response.close()
            self._sleep(wait)

    def _attempt(self, request: httpx.Request) -> httpx.Response:
        breaker = self._core.breaker
        if breaker is None:
            return self._client.send(request)
        try:
            with breaker.calling():
                response = self._client.send(request)
                if response.status_code >= 500:
                    raise ServerError(response)
                return response
        except ServerError as answered:
            return answered.response

    def get(self, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
        """``GET``; see :meth:`request`."""
        return self.request("GET", url, **kwargs)

    def head(self, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
        """``HEAD``; see :meth:`request`."""
        return self.request("HEAD", url, **kwargs)

    def options(self, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
        """``OPTIONS``; see :meth:`request`."""
        return self.request("OPTIONS", url, **kwargs)

    def post(self, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
        """``POST`` (retried only with an idempotency key or ``idempotent=True``)."""
        return self.request("POST", url, **kwargs)

    def put(self, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
        """``PUT``; see :meth:`request`."""
        return self.request("PUT", url, **kwargs)

    def patch(self, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
        """``PATCH`` (retried only with an idempotency key or ``idempotent=True``)."""
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: str | httpx.URL, **kwargs: Any) -> httpx.Response:
        """``DELETE``; see :meth:`request`."""
        return self.request("DELETE", url, **kwargs)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> Self:
        self._client.__enter__()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._client.__exit__(et, e, tb)
