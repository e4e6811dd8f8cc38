"""ResilientClient / SyncResilientClient: retry rules, deadline, hooks, breaker, errors.

Unit-level logic runs on ``httpx.MockTransport`` with a fake clock and sleep (no real
waiting); tests against a real uvicorn upstream live in test_http_client_live.py.
"""

from __future__ import annotations

import asyncio
import email.utils
import importlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gennet_toolkit._context import correlation_id_var
from gennet_toolkit.exceptions import (
    CircuitOpenError,
    ConfigurationError,
    GenNetError,
    UpstreamError,
)
from gennet_toolkit.http_client import (
    Breaker,
    ResilientClient,
    RetryBudget,
    RetryEvent,
    RetryPolicy,
    SyncResilientClient,
    UpstreamTimeout,
    parse_retry_after,
)

pytestmark = pytest.mark.anyio

Handler = Callable[[httpx.Request], httpx.Response]


@dataclass
class FakeTime:
    """A monotonic clock that only moves when the client sleeps or a handler says so."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    async def asleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class Upstream:
    """A scripted upstream: answers from ``script`` in order (the last one repeats)."""

    script: list[Any]
    seen: list[httpx.Request] = field(default_factory=list)
    timeouts: list[dict[str, float]] = field(default_factory=list)
    cost: float = 0.0
    time: FakeTime | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        # A snapshot: the client re-sends one Request object, stamping new headers.
        self.seen.append(
            httpx.Request(
                request.method, request.url, headers=request.headers.copy(), content=request.content
            )
        )
        self.timeouts.append(dict(request.extensions.get("timeout", {})))
        if self.time is not None:
            self.time.now += self.cost
        step = self.script[min(len(self.seen), len(self.script)) - 1]
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, int):
            return httpx.Response(step, text="secret-body-token")
        assert isinstance(step, httpx.Response)
        return step

    @property
    def calls(self) -> int:
        return len(self.seen)


def make(
    script: list[Any],
    *,
    sync: bool = False,
    retry: RetryPolicy | None = None,
    cost: float = 0.0,
    **options: Any,
) -> tuple[Any, Upstream, FakeTime]:
    fake = FakeTime()
    upstream = Upstream(script, cost=cost, time=fake)
    options.setdefault("retry", retry or RetryPolicy(attempts=3, backoff_base=0.5, backoff_max=4))
    options.setdefault("deadline", 60.0)
    options.setdefault("propagate_trace", False)
    cls = SyncResilientClient if sync else ResilientClient
    client = cls(
        "http://upstream.test",
        transport=httpx.MockTransport(upstream),
        clock=fake.clock,
        sleep=fake.sleep if sync else fake.asleep,
        **options,
    )
    return client, upstream, fake


# --------------------------------------------------------------------------- methods


async def test_get_is_retried_on_503_until_it_succeeds() -> None:
    client, upstream, fake = make([503, 502, 200])
    response = await client.get("/genes")
    assert response.status_code == 200
    assert upstream.calls == 3
    assert len(fake.sleeps) == 2


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"])
async def test_idempotent_methods_are_retried(method: str) -> None:
    client, upstream, _ = make([504, 200])
    assert (await client.request(method, "/x")).status_code == 200
    assert upstream.calls == 2


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_non_idempotent_methods_are_not_retried(method: str) -> None:
    client, upstream, fake = make([503, 200])
    with pytest.raises(UpstreamError):
        await client.request(method, "/x", json={"a": 1})
    assert upstream.calls == 1
    assert fake.sleeps == []


async def test_post_with_an_idempotency_key_is_retried() -> None:
    client, upstream, _ = make([503, 200])
    response = await client.post("/x", json={"a": 1}, headers={"idempotency-key": "k-1"})
    assert response.status_code == 200
    assert upstream.calls == 2
    # The same body and key go out on every attempt.
    assert [r.content for r in upstream.seen] == [b'{"a":1}'] * 2
    assert all(r.headers["Idempotency-Key"] == "k-1" for r in upstream.seen)


async def test_post_explicitly_marked_idempotent_is_retried() -> None:
    client, upstream, _ = make([503, 200])
    assert (await client.post("/x", content=b"abc", idempotent=True)).status_code == 200
    assert upstream.calls == 2


async def test_post_is_retried_when_the_policy_lists_it() -> None:
    policy = RetryPolicy(methods={"GET", "post"}, backoff_base=0, backoff_max=0)
    client, upstream, _ = make([503, 200], retry=policy)
    assert (await client.post("/x")).status_code == 200
    assert upstream.calls == 2


async def test_get_marked_not_idempotent_is_not_retried() -> None:
    client, upstream, _ = make([503, 200])
    with pytest.raises(UpstreamError):
        await client.get("/x", idempotent=False)
    assert upstream.calls == 1


async def test_streamed_body_is_never_replayed() -> None:
    async def body() -> Any:
        yield b"chunk"

    client, upstream, _ = make([503, 200])
    with pytest.raises(UpstreamError):
        await client.put("/x", content=body(), idempotent=True)
    assert upstream.calls == 1


# --------------------------------------------------------------------------- statuses


async def test_4xx_is_returned_to_the_caller_without_retry() -> None:
    client, upstream, _ = make([404])
    response = await client.get("/missing")
    assert response.status_code == 404
    assert upstream.calls == 1


async def test_raise_for_status_opt_in_raises_httpx_error_on_4xx() -> None:
    client, _, _ = make([404])
    with pytest.raises(httpx.HTTPStatusError):
        await client.get("/missing", raise_for_status=True)


async def test_429_is_retried_then_returned_when_attempts_run_out() -> None:
    client, upstream, _ = make([429])
    response = await client.get("/busy")
    assert response.status_code == 429
    assert upstream.calls == 3


async def test_500_is_not_retried_by_default_but_raised() -> None:
    client, upstream, _ = make([500, 200])
    with pytest.raises(UpstreamError):
        await client.get("/x")
    assert upstream.calls == 1


async def test_5xx_after_retries_is_upstream_error_without_body_or_url_secrets() -> None:
    client, upstream, _ = make([503])
    with pytest.raises(UpstreamError) as info:
        await client.get("/genes?api_key=url-secret-token")
    err = info.value
    assert err.status_code == 502
    assert upstream.calls == 3
    assert isinstance(err.__cause__, httpx.HTTPStatusError)
    assert err.__cause__.response.status_code == 503
    problem = err.to_problem(instance="/here")
    rendered = repr(problem) + str(err)
    for secret in ("url-secret-token", "secret-body-token", "upstream.test"):
        assert secret not in rendered
    assert problem["upstream_status"] == 503
    assert problem["attempts"] == 3


async def test_raise_server_errors_false_returns_the_last_5xx() -> None:
    client, upstream, _ = make([503], raise_server_errors=False)
    response = await client.get("/x")
    assert response.status_code == 503
    assert upstream.calls == 3


async def test_custom_status_list_is_honoured() -> None:
    policy = RetryPolicy(statuses={500}, backoff_base=0, backoff_max=0)
    client, upstream, _ = make([500, 200], retry=policy)
    assert (await client.get("/x")).status_code == 200
    client, upstream, _ = make([503, 200], retry=policy)
    with pytest.raises(UpstreamError):
        await client.get("/x")
    assert upstream.calls == 1


# --------------------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2", 2.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-3", None),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
    ],
)
def test_retry_after_parses_seconds_and_http_dates(value: str | None, expected: float) -> None:
    now = email.utils.parsedate_to_datetime("Wed, 21 Oct 2015 07:27:30 GMT").timestamp()
    assert parse_retry_after(value, now=now) == expected


def _busy(retry_after: str, status: int = 503) -> httpx.Response:
    return httpx.Response(status, headers={"Retry-After": retry_after})


async def test_retry_after_seconds_are_honoured_exactly() -> None:
    client, _, fake = make([_busy("3"), 200])
    assert (await client.get("/x")).status_code == 200
    assert fake.sleeps == [3.0]


async def test_retry_after_is_capped_by_backoff_max() -> None:
    client, _, fake = make([_busy("120", 429), 200])
    assert (await client.get("/x")).status_code == 200
    assert fake.sleeps == [4.0]


async def test_retry_after_http_date_is_honoured_and_capped() -> None:
    far = email.utils.formatdate(time.time() + 3600, usegmt=True)
    near = email.utils.formatdate(time.time() + 3, usegmt=True)
    client, _, fake = make([_busy(far), _busy(near), 200])
    assert (await client.get("/x")).status_code == 200
    assert fake.sleeps[0] == 4.0
    # Dates have one-second resolution: "3 s from now" is 2 to 3 s away.
    assert 1.0 <= fake.sleeps[1] <= 3.0


async def test_retry_after_beyond_the_deadline_gives_up_without_sleeping() -> None:
    policy = RetryPolicy(backoff_max=60)
    client, upstream, fake = make([_busy("20"), 200], retry=policy, deadline=10)
    with pytest.raises(UpstreamError):
        await client.get("/x")
    assert upstream.calls == 1
    assert fake.sleeps == []


async def test_retry_after_can_be_ignored() -> None:
    policy = RetryPolicy(retry_after=False, jitter=False, backoff_base=0.25)
    client, _, fake = make([_busy("3"), 200], retry=policy)
    await client.get("/x")
    assert fake.sleeps == [0.25]


# --------------------------------------------------------------------------- deadline


async def test_deadline_is_never_slept_past_and_attempt_timeouts_shrink() -> None:
    policy = RetryPolicy(attempts=10, backoff_base=1, backoff_max=1, jitter=False)
    client, upstream, fake = make([503], retry=policy, deadline=5.0, cost=1.5, timeout=3.0)
    start = fake.now
    with pytest.raises(UpstreamError):
        await client.get("/slow")
    # 1.5 + 1 + 1.5 + 1 = 5.0 would reach the deadline: the second sleep never happens.
    assert upstream.calls == 2
    assert fake.sleeps == [1.0]
    assert fake.now - start <= 5.0
    first, second = upstream.timeouts
    assert first == {"connect": 3.0, "read": 3.0, "write": 3.0, "pool": 3.0}
    assert second["read"] == pytest.approx(2.5)  # 5 - 1.5 - 1 left
    assert set(second.values()) == {second["read"]}


async def test_per_call_deadline_overrides_the_client_one() -> None:
    policy = RetryPolicy(attempts=10, backoff_base=1, backoff_max=1, jitter=False)
    client, upstream, _ = make([503], retry=policy, deadline=None, cost=1.0)
    with pytest.raises(UpstreamError):
        await client.get("/x", deadline=3.5)
    assert upstream.calls == 2


async def test_no_deadline_leaves_timeouts_untouched() -> None:
    client, upstream, _ = make([200], deadline=None, timeout=httpx.Timeout(2.0, read=None))
    await client.get("/x")
    assert upstream.timeouts == [{"connect": 2.0, "read": None, "write": 2.0, "pool": 2.0}]


async def test_oversleeping_past_the_deadline_raises_upstream_timeout() -> None:
    client, upstream, fake = make([503, 200], deadline=5.0)

    async def oversleep(seconds: float) -> None:
        fake.now += 10

    client._sleep = oversleep
    with pytest.raises(UpstreamTimeout) as info:
        await client.get("/x")
    assert info.value.status_code == 504
    assert upstream.calls == 1


# --------------------------------------------------------------------------- jitter


@given(
    retry=st.integers(min_value=1, max_value=200),
    rand=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    base=st.floats(min_value=0.0, max_value=5.0),
    extra=st.floats(min_value=0.0, max_value=60.0),
)
def test_full_jitter_stays_between_zero_and_the_capped_exponential(
    retry: int, rand: float, base: float, extra: float
) -> None:
    policy = RetryPolicy(backoff_base=base, backoff_max=base + extra)
    ceiling = min(base + extra, base * 2 ** (retry - 1))
    wait = policy.backoff(retry, lambda: rand)
    assert 0.0 <= wait <= ceiling
    assert RetryPolicy(backoff_base=base, backoff_max=base + extra, jitter=False).backoff(
        retry
    ) == pytest.approx(ceiling)


async def test_client_sleeps_are_jittered_within_bounds() -> None:
    policy = RetryPolicy(attempts=6, backoff_base=1, backoff_max=8)
    client, _, fake = make([503], retry=policy, rand=iter([0.5, 0.99, 0.0, 0.25, 0.5]).__next__)
    with pytest.raises(UpstreamError):
        await client.get("/x")
    assert fake.sleeps == [0.5, 0.99 * 2, 0.0, 0.25 * 8, 0.5 * 8]


# --------------------------------------------------------------------------- exceptions


def _connect_error() -> httpx.ConnectError:
    return httpx.ConnectError("All connection attempts failed")


async def test_connection_failures_are_retried_even_for_post() -> None:
    client, upstream, _ = make([_connect_error(), _connect_error(), 201])
    assert (await client.post("/x", json={})).status_code == 201
    assert upstream.calls == 3


async def test_connection_failure_after_retries_is_upstream_unreachable() -> None:
    client, upstream, _ = make([_connect_error()])
    with pytest.raises(UpstreamError) as info:
        await client.get("/x")
    assert info.value.code == "upstream_unreachable"
    assert info.value.status_code == 502
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert upstream.calls == 3


async def test_retry_unsent_false_does_not_retry_post_connection_failures() -> None:
    client, upstream, _ = make([_connect_error(), 200], retry=RetryPolicy(retry_unsent=False))
    with pytest.raises(UpstreamError):
        await client.post("/x")
    assert upstream.calls == 1


async def test_read_timeout_is_retried_for_get_only() -> None:
    read_timeout = httpx.ReadTimeout("timed out")
    client, upstream, _ = make([read_timeout, 200])
    assert (await client.get("/x")).status_code == 200
    assert upstream.calls == 2
    client, upstream, _ = make([read_timeout, 200])
    with pytest.raises(UpstreamTimeout) as info:
        await client.post("/x")
    assert info.value.status_code == 504
    assert upstream.calls == 1


async def test_protocol_error_is_upstream_error() -> None:
    client, upstream, _ = make([httpx.RemoteProtocolError("peer closed connection")])
    with pytest.raises(UpstreamError) as info:
        await client.get("/x")
    assert info.value.code == "upstream_error"
    assert upstream.calls == 3


async def test_programming_errors_propagate_untouched() -> None:
    client, upstream, _ = make([ValueError("bug in a transport")])
    with pytest.raises(ValueError, match="bug in a transport"):
        await client.get("/x")
    assert upstream.calls == 1


async def test_cancellation_during_backoff_stops_retrying() -> None:
    client, upstream, _ = make([503, 200])
    with anyio.CancelScope() as scope:

        async def cancelled_sleep(seconds: float) -> None:
            scope.cancel()
            await anyio.sleep(seconds)

        client._sleep = cancelled_sleep
        await client.get("/x")
    assert scope.cancelled_caught
    assert upstream.calls == 1


# --------------------------------------------------------------------------- budget


async def test_retry_budget_stops_retry_storms() -> None:
    budget = RetryBudget(ratio=0.5, min_per_second=0, burst=2)
    client, upstream, _ = make([503], retry_budget=budget)
    attempts = []
    for _ in range(4):
        before = upstream.calls
        with pytest.raises(UpstreamError):
            await client.get("/x")
        attempts.append(upstream.calls - before)
    # Two tokens to start, half a token per call, one token per retry.
    assert attempts == [3, 1, 2, 1]


def test_retry_budget_earns_tokens_over_time() -> None:
    fake = FakeTime()
    budget = RetryBudget(ratio=0, min_per_second=2, burst=3, clock=fake.clock)
    assert [budget.withdraw() for _ in range(4)] == [True, True, True, False]
    fake.now += 0.5
    assert budget.withdraw()
    assert not budget.withdraw()
    fake.now += 100
    assert budget.balance == 3  # capped by burst


def test_retry_budget_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENNET_HTTP_RETRY_BUDGET_RATIO", "0.2")
    monkeypatch.setenv("GENNET_HTTP_RETRY_BUDGET_BURST", "5")
    client = SyncResilientClient.from_env()
    budget = client._core.retry_budget
    assert isinstance(budget, RetryBudget)
    assert (budget.ratio, budget.min_per_second, budget.burst) == (0.2, 1.0, 5.0)
    monkeypatch.setenv("GENNET_HTTP_RETRY_BUDGET_BURST", "0")
    with pytest.raises(ConfigurationError):
        RetryBudget.from_env()


async def test_concurrent_calls_keep_separate_retry_state() -> None:
    events: list[RetryEvent] = []
    policy = RetryPolicy(attempts=3, backoff_base=0, backoff_max=0, on_retry=events.append)
    answers = {"/a": [503, 503, 200], "/b": [502, 200]}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(answers[request.url.path].pop(0))

    async def nap(seconds: float) -> None:
        await anyio.lowlevel.checkpoint()  # let the other call run between attempts

    client = ResilientClient(
        "http://upstream.test",
        retry=policy,
        transport=httpx.MockTransport(handler),
        sleep=nap,
        propagate_trace=False,
    )
    results: dict[str, int] = {}

    async def call(path: str) -> None:
        results[path] = (await client.get(path)).status_code

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, "/a")
        tg.start_soon(call, "/b")
    assert results == {"/a": 200, "/b": 200}
    by_url: dict[str, list[int]] = {}
    for e in events:
        by_url.setdefault(e.url.rsplit("/", 1)[1], []).append(e.attempt)
    assert by_url == {"a": [1, 2], "b": [1]}


# --------------------------------------------------------------------------- hook


async def test_on_retry_hook_sees_every_retry_without_query_strings() -> None:
    events: list[RetryEvent] = []
    policy = RetryPolicy(attempts=3, backoff_base=1, jitter=False, on_retry=events.append)
    client, _, _ = make([_busy("2"), _connect_error(), 200], retry=policy)
    await client.get("/genes?token=hidden")
    assert [(e.attempt, e.status, e.retry_after, e.wait) for e in events] == [
        (1, 503, 2.0, 2.0),
        (2, None, None, 2.0),
    ]
    assert isinstance(events[1].exception, httpx.ConnectError)
    assert all(e.url == "http://upstream.test/genes" and e.method == "GET" for e in events)


async def test_a_failing_hook_is_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    def boom(event: RetryEvent) -> None:
        raise RuntimeError("hook broke")

    client, upstream, _ = make([503, 200], retry=RetryPolicy(on_retry=boom))
    with caplog.at_level(logging.WARNING, logger="gennet_toolkit.http_client"):
        assert (await client.get("/x")).status_code == 200
    assert upstream.calls == 2
    assert "on_retry hook raised" in caplog.text


# --------------------------------------------------------------------------- headers


async def test_correlation_id_is_sent_on_every_attempt() -> None:
    client, upstream, _ = make([503, 200])
    token = correlation_id_var.set("req-42")
    try:
        await client.get("/x")
    finally:
        correlation_id_var.reset(token)
    assert [r.headers["X-Request-ID"] for r in upstream.seen] == ["req-42", "req-42"]


async def test_correlation_header_name_is_configurable_and_explicit_value_wins() -> None:
    client, upstream, _ = make([200, 200], correlation_header="X-Correlation-ID")
    token = correlation_id_var.set("req-7")
    try:
        await client.get("/x")
        await client.get("/x", headers={"x-correlation-id": "mine"})
    finally:
        correlation_id_var.reset(token)
    assert upstream.seen[0].headers["X-Correlation-ID"] == "req-7"
    assert "X-Request-ID" not in upstream.seen[0].headers
    assert upstream.seen[1].headers["X-Correlation-ID"] == "mine"


async def test_no_correlation_header_outside_a_request() -> None:
    client, upstream, _ = make([200])
    await client.get("/x")
    assert "X-Request-ID" not in upstream.seen[0].headers


async def test_trace_context_is_injected_per_attempt() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    client, upstream, _ = make([503, 200], propagate_trace=True, tracer_provider=provider)
    with provider.get_tracer("test").start_as_current_span("handler") as parent:
        await client.get("/x")
    trace_id = format(parent.get_span_context().trace_id, "032x")
    parents = [r.headers["traceparent"].split("-") for r in upstream.seen]
    assert [p[1] for p in parents] == [trace_id, trace_id]
    # Each attempt is its own client span: distinct parent-ids, none the handler's.
    assert parents[0][2] != parents[1][2]
    assert format(parent.get_span_context().span_id, "016x") not in {p[2] for p in parents}
    assert trace.get_current_span() is not parent


async def test_trace_propagation_can_be_switched_off() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    client, upstream, _ = make([200], propagate_trace=False, tracer_provider=provider)
    with provider.get_tracer("test").start_as_current_span("handler"):
        await client.get("/x")
    assert "traceparent" not in upstream.seen[0].headers


# --------------------------------------------------------------------------- breaker


class _Guard:
    def __init__(self, breaker: FakeBreaker) -> None:
        self.breaker = breaker

    def __enter__(self) -> None:
        self.breaker.admit()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.breaker.outcomes.append("ok" if e is None else type(e).__name__)

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(et, e, tb)


@dataclass
class FakeBreaker:
    """Implements the Breaker protocol; opens after ``fail_max`` recorded failures."""

    fail_max: int = 100
    outcomes: list[str] = field(default_factory=list)

    def admit(self) -> None:
        if sum(o != "ok" for o in self.outcomes) >= self.fail_max:
            raise CircuitOpenError(retry_after=30)

    def calling(self) -> _Guard:
        return _Guard(self)


def test_fake_breaker_satisfies_the_protocol() -> None:
    assert isinstance(FakeBreaker(), Breaker)


@pytest.mark.parametrize("sync", [False, True])
async def test_breaker_counts_5xx_and_connect_errors_but_not_4xx(sync: bool) -> None:
    breaker = FakeBreaker()
    client, _, _ = make([503, _connect_error(), 404], breaker=breaker, sync=sync)
    response = client.get("/x") if sync else await client.get("/x")
    assert response.status_code == 404
    assert breaker.outcomes[0] == "ServerError"
    assert breaker.outcomes[1:] == ["ConnectError", "ok"]


async def test_open_breaker_refuses_at_once_and_is_not_retried() -> None:
    breaker = FakeBreaker(fail_max=2)
    client, upstream, fake = make([503], retry=RetryPolicy(attempts=5), breaker=breaker)
    with pytest.raises(CircuitOpenError):
        await client.get("/x")
    assert upstream.calls == 2  # the third attempt was refused by the breaker
    assert len(fake.sleeps) == 2  # and nothing was slept after the refusal
    with pytest.raises(CircuitOpenError):
        await client.get("/x")
    assert upstream.calls == 2
    assert len(fake.sleeps) == 2


async def test_real_circuit_breaker_plugs_in() -> None:
    from gennet_toolkit.circuit_breaker import CircuitBreaker

    breaker = CircuitBreaker("upstream", fail_max=2, reset_timeout=60)
    client, upstream, _ = make([503], breaker=breaker)
    with pytest.raises(CircuitOpenError):
        await client.get("/x")
    assert upstream.calls == 2


# --------------------------------------------------------------------------- sync


def test_sync_client_follows_the_same_rules() -> None:
    client, upstream, fake = make([_busy("1"), 502, 200], sync=True)
    token = correlation_id_var.set("sync-1")
    try:
        assert client.get("/x").status_code == 200
    finally:
        correlation_id_var.reset(token)
    assert upstream.calls == 3
    assert fake.sleeps[0] == 1.0
    assert {r.headers["X-Request-ID"] for r in upstream.seen} == {"sync-1"}

    client, upstream, _ = make([503, 200], sync=True)
    with pytest.raises(UpstreamError):
        client.post("/x", json={})
    assert upstream.calls == 1
    assert client.post("/x", json={}, idempotent=True).status_code == 200


def test_sync_client_context_manager_closes_the_pool() -> None:
    client, _, _ = make([200], sync=True)
    with client as c:
        assert c.head("/x").status_code == 200
    assert c.httpx_client.is_closed


async def test_async_client_context_manager_closes_the_pool() -> None:
    client, _, _ = make([200])
    async with client as c:
        assert (await c.options("/x")).status_code == 200
    assert c.httpx_client.is_closed


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": 0},
        {"attempts": 2.5},
        {"attempts": True},
        {"backoff_base": -1},
        {"backoff_max": float("inf")},
        {"backoff_base": 5, "backoff_max": 1},
        {"statuses": {999}},
        {"methods": "GET"},
    ],
)
def test_invalid_policy_is_a_configuration_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize("kwargs", [{"deadline": 0}, {"deadline": -1}, {"retry": 3}])
def test_invalid_client_options_are_configuration_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        ResilientClient("http://upstream.test", **kwargs)


def test_breaker_without_calling_is_rejected() -> None:
    with pytest.raises(ConfigurationError):
        ResilientClient("http://upstream.test", breaker=object())  # type: ignore[arg-type]


def test_from_env_reads_client_and_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENNET_HTTP_BASE_URL", "http://genes.test/v1/")
    monkeypatch.setenv("GENNET_HTTP_DEADLINE", "0")
    monkeypatch.setenv("GENNET_HTTP_TIMEOUT", "1.5")
    monkeypatch.setenv("GENNET_HTTP_RETRY_ATTEMPTS", "5")
    monkeypatch.setenv("GENNET_HTTP_RETRY_STATUSES", "503, 429")
    monkeypatch.setenv("GENNET_HTTP_RETRY_METHODS", "GET,POST")
    monkeypatch.setenv("GENNET_HTTP_RETRY_JITTER", "off")
    client = SyncResilientClient.from_env(propagate_trace=False)
    assert client.retry == RetryPolicy(
        attempts=5, statuses={503, 429}, methods={"GET", "POST"}, jitter=False
    )
    assert client.httpx_client.base_url == "http://genes.test/v1/"
    assert client.httpx_client.timeout.read == 1.5
    assert client._core.deadline is None
    assert ResilientClient.from_env(deadline=3)._core.deadline == 3.0


def test_from_env_error_names_the_variable_not_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENNET_HTTP_RETRY_STATUSES", "503,s3cr3t")
    with pytest.raises(ConfigurationError) as info:
        RetryPolicy.from_env()
    assert "GENNET_HTTP_RETRY_STATUSES" in str(info.value)
    assert "s3cr3t" not in str(info.value)


# --------------------------------------------------------------------------- packaging


@pytest.fixture
def without_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(sys.modules):
        if name == "httpx" or name.startswith(("httpx.", "gennet_toolkit.http_client")):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "httpx", None)  # makes `import httpx` fail


@pytest.mark.usefixtures("without_httpx")
def test_missing_extra_names_the_pip_command() -> None:
    module = importlib.import_module("gennet_toolkit.http_client")  # importing is fine
    policy = module.RetryPolicy(attempts=2)  # so is building a policy
    for cls in (module.ResilientClient, module.SyncResilientClient):
        with pytest.raises(ImportError) as info:
            cls("http://upstream.test", retry=policy)
        assert 'pip install "gennet-toolkit[http]"' in str(info.value)
        assert "gennet_toolkit.http_client" in str(info.value)


def test_errors_belong_to_the_toolkit_family() -> None:
    assert issubclass(UpstreamTimeout, UpstreamError)
    assert issubclass(UpstreamError, GenNetError)
    assert UpstreamTimeout().status_code == 504


async def test_a_recording_provider_starts_a_trace_even_without_a_current_span() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    client, upstream, _ = make([200], propagate_trace=True, tracer_provider=TracerProvider())
    await client.get("/x")
    assert upstream.seen[0].headers["traceparent"].startswith("00-")


async def test_without_a_span_or_sdk_no_traceparent_is_invented() -> None:
    client, upstream, _ = make([200], propagate_trace=True)
    await client.get("/x")
    assert "traceparent" not in upstream.seen[0].headers


class FlakyTransportError(Exception):
    """Raised by a custom transport; not an httpx error."""


async def test_policy_exceptions_are_retried_for_idempotent_methods_then_reraised() -> None:
    policy = RetryPolicy(exceptions=(FlakyTransportError,), backoff_base=0, backoff_max=0)
    client, upstream, _ = make([FlakyTransportError("once"), 200], retry=policy)
    assert (await client.get("/x")).status_code == 200
    assert upstream.calls == 2
    client, upstream, _ = make([FlakyTransportError("always")], retry=policy)
    with pytest.raises(FlakyTransportError, match="always"):
        await client.get("/x")
    assert upstream.calls == 3
    client, upstream, _ = make([FlakyTransportError("post")], retry=policy)
    with pytest.raises(FlakyTransportError):
        await client.post("/x")
    assert upstream.calls == 1


@pytest.mark.parametrize("bad", [asyncio.CancelledError, KeyboardInterrupt, "ValueError", 3])
def test_cancellation_can_never_be_made_retryable(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="cancellation is never retried"):
        RetryPolicy(exceptions=(bad,))
