"""Each strategy's documented worst case, shown with boundary bursts on a fake clock.

With a limit L per period P:

- fixed window: up to 2L in an instant, L at the end of one window and L at the start
  of the next;
- sliding window counter: at most L + L*d/P in any interval of length d (no 2L burst);
- token bucket (GCRA): a burst of L, then exactly one request per P/L.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from gennet_toolkit.backends import MemoryBackend
from gennet_toolkit.rate_limit import RateLimiter, Rule

LIMIT = 100
PERIOD = 60.0


class FakeClock:
    """A ``time.monotonic`` stand-in that moves only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def admitted(strategy: str, schedule: list[float]) -> list[float]:
    """The request times (sorted ``schedule``) that ``strategy`` lets through."""
    clock = FakeClock()
    limiter = RateLimiter(MemoryBackend(clock=clock), strategy=strategy)  # type: ignore[arg-type]
    rule = Rule(f"{LIMIT}/minute", key="k")
    out = []
    for t in schedule:
        clock.now = t
        if limiter.check_sync(rule, "k").allowed:
            out.append(t)
    return out


def most_in_any_interval(times: list[float], span: float) -> int:
    """The largest number of ``times`` inside any closed interval of length ``span``."""
    best = start = 0
    for end, t in enumerate(times):
        while times[start] < t - span - 1e-9:
            start += 1
        best = max(best, end - start + 1)
    return best


def boundary_burst() -> list[float]:
    # One request opens the window at t=0; a burst just before it ends and one just after.
    return [0.0] + [59.9] * 200 + [60.0] * 200


def test_fixed_window_admits_twice_the_limit_at_the_boundary() -> None:
    times = admitted("fixed_window", boundary_burst())
    assert len(times) == 2 * LIMIT
    assert most_in_any_interval(times, 0.1) == 2 * LIMIT - 1  # 199 within 100 ms


def test_sliding_window_counter_has_no_burst_at_the_boundary() -> None:
    times = admitted("sliding_window", boundary_burst())
    assert most_in_any_interval(times, 0.1) == LIMIT - 1  # the 99 left before the boundary
    assert len(times) == LIMIT
    assert 60.0 not in times  # the previous window still weighs fully
    # The previous window's weight fades linearly: a tenth of the period frees a tenth.
    later = admitted("sliding_window", [*boundary_burst(), *[66.0] * 50])
    assert len(later) == LIMIT + 10


def test_token_bucket_allows_one_burst_then_a_smooth_rate() -> None:
    schedule = [0.0] * 150 + [round(0.1 * i, 1) for i in range(1, 301)]  # then every 100 ms
    times = admitted("token_bucket", schedule)
    assert times[:LIMIT] == [0.0] * LIMIT  # the burst
    steady = times[LIMIT:]
    gaps = {round(b - a, 6) for a, b in itertools.pairwise(steady)}
    assert gaps == {0.6}  # exactly P/L apart
    assert len(steady) == 50  # 30 s / 0.6 s


def test_every_strategy_is_exact_for_a_burst_inside_one_window() -> None:
    for strategy in ("fixed_window", "sliding_window", "token_bucket"):
        assert len(admitted(strategy, [10.0] * 500)) == LIMIT, strategy


schedules = st.lists(
    st.tuples(st.floats(min_value=0.0, max_value=70.0), st.integers(min_value=1, max_value=150)),
    min_size=1,
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(schedules)
def test_sliding_and_bucket_never_exceed_limit_plus_rate_in_any_interval(
    bursts: list[tuple[float, int]],
) -> None:
    schedule: list[float] = []
    t = 0.0
    for gap, count in bursts:
        t += gap
        schedule += [t] * count
    for strategy in ("sliding_window", "token_bucket"):
        times = admitted(strategy, schedule)
        for span in (0.0, 1.0, 10.0, 30.0, 60.0, 120.0):
            bound = LIMIT + LIMIT * span / PERIOD + 1
            assert most_in_any_interval(times, span) <= bound, (strategy, span)


# --------------------------------------------------------------------------- several limits


def test_a_request_refused_by_any_limit_of_a_rule_spends_none_of_them() -> None:
    # Every limit of a rule is checked in one atomic call: a refusal, whichever limit
    # gives it, leaves every limit's state exactly as it was.
    for strategy in ("fixed_window", "sliding_window", "token_bucket"):
        clock = FakeClock()
        limiter = RateLimiter(MemoryBackend(clock=clock), strategy=strategy)  # type: ignore[arg-type]
        rule = Rule("3/second;10/minute", key="k", name="k")

        def state(limiter: RateLimiter = limiter, rule: Rule = rule) -> list[tuple[int, float]]:
            peeks = [limiter.hit_sync(lim, "k", cost=0) for lim in rule.limits]
            return [(p.remaining, p.reset_after) for p in peeks if p is not None]

        refused_by = set()
        for step in range(300):  # 5 requests a second for a minute
            clock.now = step * 0.2
            before = state()
            decision = limiter.check_sync(rule, "k")
            assert [name for name, _, _ in decision.results] == ["k-1s", "k-60s"]
            if not decision.allowed:
                assert state() == before
                refused_by.update(decision.violated)
        assert refused_by == {"k-1s", "k-60s"}  # both limits had their turn refusing


def test_fixed_window_multi_limit_rule_boundaries() -> None:
    clock = FakeClock()
    limiter = RateLimiter(MemoryBackend(clock=clock), strategy="fixed_window")
    rule = Rule("2/second;3/minute", key="k", name="k")

    def run(t: float) -> tuple[bool, list[int]]:
        clock.now = t
        decision = limiter.check_sync(rule, "k")
        return decision.allowed, [r.remaining for _, _, r in decision.results]

    assert [run(0.0) for _ in range(3)] == [(True, [1, 2]), (True, [0, 1]), (False, [0, 1])]
    assert run(0.999) == (False, [0, 1])
    assert run(1.0) == (True, [1, 0])  # a new second; the minute's last unit
    assert run(1.0) == (False, [1, 0])  # refused by the minute: the second is not spent
    assert run(60.0) == (True, [1, 2])  # both windows over
