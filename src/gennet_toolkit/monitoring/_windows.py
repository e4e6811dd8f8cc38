"""Metrics kept in process, sampled like a Prometheus scrape, and the PromQL functions over them.

Each metric keeps its live value (cheap to update from any thread) plus a history of
samples taken at every :meth:`Monitor.sample` / evaluation tick, as Prometheus would
scrape it. Window functions run on that history with the arithmetic of Prometheus 2.x
(closed ``[t - range, t]`` ranges, ``rate``'s extrapolation, ``histogram_quantile``'s
linear interpolation), so a rule gives the same answer here and in Prometheus when both
see the same samples. Timestamps are integer milliseconds, as in Prometheus.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Sequence
from typing import Literal

__all__ = ()

MetricKind = Literal["counter", "gauge", "histogram"]
METRIC_KINDS: tuple[MetricKind, ...] = ("counter", "gauge", "histogram")

#: Prometheus' default lookback for an instant selector (a gauge's last value).
LOOKBACK_MS = 5 * 60 * 1000

#: Latency buckets (seconds) of prometheus_client, a sensible default for HTTP handlers.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip


def to_ms(seconds: float) -> int:
    """Seconds (float) to integer milliseconds, the unit of Prometheus timestamps."""
    return round(seconds * 1000)


class _History:
    """Samples ``(t_ms, value)`` in time order; old ones are dropped in batches."""

    __slots__ = ("decreased", "times", "values")

    def __init__(self) -> None:
        self.times: list[int] = []
        self.values: list[float] = []
        # Whether a value ever went down: only then must rate() scan for counter resets.
        self.decreased = False

    def append(self, t_ms: int, value: float) -> None:
        if self.times and t_ms <= self.times[-1]:
            # Same timestamp: the newer reading wins (one sample per scrape time).
            # An older one (a clock stepping back) is dropped, as Prometheus drops
            # out-of-order samples.
            if t_ms == self.times[-1]:
                if len(self.values) > 1 and not value >= self.values[-2]:
                    self.decreased = True
                self.values[-1] = value
            return
        if self.values and not value >= self.values[-1]:
            self.decreased = True
        self.times.append(t_ms)
        self.values.append(value)

    def trim(self, oldest_ms: int) -> None:
        cut = bisect.bisect_left(self.times, oldest_ms)
        # Slicing the front off a list is O(n): do it only once half of it is stale.
        if cut and cut * 2 >= len(self.times):
            del self.times[:cut]
            del self.values[:cut]

    def bounds(self, start_ms: int, end_ms: int) -> tuple[int, int]:
        """Indices ``lo, hi`` of the samples in the closed range (Prometheus 2.x)."""
        return bisect.bisect_left(self.times, start_ms), bisect.bisect_right(self.times, end_ms)

    def window(self, start_ms: int, end_ms: int) -> tuple[list[int], list[float]]:
        lo, hi = self.bounds(start_ms, end_ms)
        return self.times[lo:hi], self.values[lo:hi]

    def last(self, at_ms: int) -> tuple[int, float] | None:
        i = bisect.bisect_right(self.times, at_ms)
        if not i:
            return None
        return self.times[i - 1], self.values[i - 1]


class Counter:
    """A monotonic counter (``..._total``); ``inc()`` is thread-safe."""

    kind: MetricKind = "counter"
    __slots__ = ("_history", "_lock", "_value", "description", "name")

    def __init__(self, name: str, description: str = "") -> None:
        self.name = name
        self.description = description
        self._value = 0.0
        self._lock = threading.Lock()
        self._history = _History()

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (>= 0; a counter never goes down)."""
        if not amount >= 0:  # also rejects NaN
            raise ValueError(f"counter {self.name}: increment must be >= 0, got {amount!r}")
        with self._lock:
            self._value += amount

    @property
    def value(self) -> float:
        """The running total since the monitor started."""
        return self._value

    def _sample(self, t_ms: int) -> None:
        self._history.append(t_ms, self._value)

    def _trim(self, oldest_ms: int) -> None:
        self._history.trim(oldest_ms)


class Gauge:
    """A value that goes up and down (queue depth, pool usage); thread-safe."""

    kind: MetricKind = "gauge"
    __slots__ = ("_history", "_lock", "_value", "description", "name")

    def __init__(self, name: str, description: str = "") -> None:
        self.name = name
        self.description = description
        self._value = 0.0
        self._lock = threading.Lock()
        self._history = _History()

    def set(self, value: float) -> None:
        """Set the current value."""
        self._value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (may be negative)."""
        with self._lock:
            self._value += amount

    def dec(self, amount: float = 1.0) -> None:
        """Subtract ``amount``."""
        self.inc(-amount)

    @property
    def value(self) -> float:
        """The current value."""
        return self._value

    def _sample(self, t_ms: int) -> None:
        self._history.append(t_ms, self._value)

    def _trim(self, oldest_ms: int) -> None:
        self._history.trim(oldest_ms)


class Histogram:
    """Observations counted in cumulative ``le`` buckets, like a Prometheus histogram."""

    kind: MetricKind = "histogram"
    __slots__ = (
        "_bucket_history",
        "_count_history",
        "_counts",
        "_lock",
        "_sum",
        "_sum_history",
        "bounds",
        "description",
        "name",
    )

    def __init__(
        self, name: str, description: str = "", *, buckets: Sequence[float] = DEFAULT_BUCKETS
    ) -> None:
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if not bounds or any(math.isnan(b) for b in bounds) or len(set(bounds)) != len(bounds):
            raise ValueError(
                f"histogram {name}: buckets must be distinct finite numbers, got {list(buckets)!r}"
            )
        self.name = name
        self.description = description
        self.bounds: tuple[float, ...] = (*bounds, math.inf)
        self._counts = [0] * len(self.bounds)  # per bucket, not cumulative
        self._sum = 0.0
        self._lock = threading.Lock()
        self._bucket_history = [_History() for _ in self.bounds]
        self._count_history = _History()
        self._sum_history = _History()

    def observe(self, value: float) -> None:
        """Record one observation (seconds, bytes, ...)."""
        if math.isnan(value):  # NaN would poison the sum (and so the mean) for good
            raise ValueError(f"histogram {self.name}: cannot observe NaN")
        i = bisect.bisect_left(self.bounds, value)
        with self._lock:
            self._counts[i] += 1
            self._sum += value

    @property
    def count(self) -> int:
        """Number of observations since the monitor started."""
        return sum(self._counts)

    @property
    def sum(self) -> float:
        """Sum of all observations."""
        return self._sum

    def _sample(self, t_ms: int) -> None:
        with self._lock:
            counts = list(self._counts)
            total = self._sum
        cumulative = 0
        for history, n in zip(self._bucket_history, counts, strict=True):
            cumulative += n
            history.append(t_ms, float(cumulative))
        self._count_history.append(t_ms, float(cumulative))
        self._sum_history.append(t_ms, total)

    def _trim(self, oldest_ms: int) -> None:
        for history in (*self._bucket_history, self._count_history, self._sum_history):
            history.trim(oldest_ms)


Metric = Counter | Gauge | Histogram


# --- PromQL functions (Prometheus 2.x arithmetic, operation for operation) ---------------


def _go_seconds(range_ms: int) -> float:
    # time.Duration.Seconds(): whole seconds plus the nanosecond remainder / 1e9.
    return float(range_ms // 1000) + float((range_ms % 1000) * 1_000_000) / 1e9


def extrapolated_rate(
    history: _History, at_ms: int, range_ms: int, *, is_rate: bool
) -> float | None:
    """``rate()`` (``is_rate``) or ``increase()`` of a counter; None when < 2 samples."""
    lo, hi = history.bounds(at_ms - range_ms, at_ms)
    n = hi - lo
    if n < 2:
        return None
    times, values = history.times, history.values
    first_t, last_t = times[lo], times[hi - 1]
    first_v = values[lo]
    result = values[hi - 1] - first_v
    if history.decreased:
        last = 0.0
        for i in range(lo, hi):  # a counter reset adds the value before the drop
            v = values[i]
            if v < last:
                result += last
            last = v
    range_start, range_end = at_ms - range_ms, at_ms
    duration_to_start = float(first_t - range_start) / 1000
    duration_to_end = float(range_end - last_t) / 1000
    sampled_interval = float(last_t - first_t) / 1000
    average_between = sampled_interval / float(n - 1)
    if result > 0 and first_v >= 0:
        duration_to_zero = sampled_interval * (first_v / result)
        duration_to_start = min(duration_to_start, duration_to_zero)
    threshold = average_between * 1.1
    extrapolate_to = sampled_interval
    extrapolate_to += duration_to_start if duration_to_start < threshold else average_between / 2
    extrapolate_to += duration_to_end if duration_to_end < threshold else average_between / 2
    factor = extrapolate_to / sampled_interval
    if is_rate:
        factor /= _go_seconds(range_ms)
    return result * factor


def over_time(history: _History, at_ms: int, range_ms: int, func: str) -> float | None:
    """``avg_over_time`` / ``max_over_time`` / ``min_over_time``; None on an empty range."""
    _, values = history.window(at_ms - range_ms, at_ms)
    if not values:
        return None
    if func == "max_over_time":
        best = values[0]
        for v in values:  # Go: a NaN first value is replaced by any number
            if v > best or math.isnan(best):
                best = v
        return best
    if func == "min_over_time":
        best = values[0]
        for v in values:
            if v < best or math.isnan(best):
                best = v
        return best
    # avg_over_time: the incremental mean of Prometheus 2.42 (no overflow on huge values);
    # later versions may differ in the last bit, never in a comparison that matters.
    mean = 0.0
    count = 0.0
    for v in values:
        count += 1
        if math.isinf(mean):
            if math.isinf(v) and (mean > 0) == (v > 0):
                continue
            if not math.isinf(v) and not math.isnan(v):
                continue
        mean += v / count - mean / count
    return mean


def instant(history: _History, at_ms: int) -> float | None:
    """The instant selector: the last sample within the 5-minute lookback."""
    found = history.last(at_ms)
    if found is None or found[0] <= at_ms - LOOKBACK_MS:
        return None
    return found[1]


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """``histogram_quantile`` over ``(upper_bound, cumulative_rate)`` pairs."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    buckets = sorted(buckets, key=lambda b: b[0])
    if not buckets or not math.isinf(buckets[-1][0]):
        return math.nan
    # ensureMonotonic: rates of cumulative buckets can dip through float error.
    fixed: list[tuple[float, float]] = []
    current_max = buckets[0][1]
    for upper, count in buckets:
        current_max = max(current_max, count)
        fixed.append((upper, current_max))
    buckets = fixed
    if len(buckets) < 2:
        return math.nan
    observations = buckets[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = 0
    while b < len(buckets) - 1 and not buckets[b][1] >= rank:
        b += 1
    if b == len(buckets) - 1:
        return buckets[-2][0]
    if b == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    bucket_start = 0.0
    bucket_end, count = buckets[b]
    if b > 0:
        bucket_start = buckets[b - 1][0]
        count -= buckets[b - 1][1]
        rank -= buckets[b - 1][1]
    return bucket_start + (bucket_end - bucket_start) * (rank / count)


def histogram_quantile(hist: Histogram, q: float, at_ms: int, range_ms: int) -> float | None:
    """``histogram_quantile(q, sum by (le) (rate(h_bucket[range])))``; NaN means no data."""
    buckets: list[tuple[float, float]] = []
    for upper, history in zip(hist.bounds, hist._bucket_history, strict=True):
        r = extrapolated_rate(history, at_ms, range_ms, is_rate=True)
        if r is not None:
            buckets.append((upper, r))
    if not buckets:
        return None
    return bucket_quantile(q, buckets)


def divide(num: float, den: float) -> float:
    """IEEE 754 division as in Go: x/0 is ±Inf, 0/0 is NaN."""
    if den == 0:
        if num == 0 or math.isnan(num):
            return math.nan
        return math.copysign(math.inf, num) * math.copysign(1.0, den)
    return num / den
