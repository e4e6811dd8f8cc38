"""A small harness for side-by-side benchmarks against peer libraries.

Cases run in interleaved rounds (A, B, C, A, B, C, …) so that machine noise hits every
case alike; each round times a batch of calls and reports the time per call. The
summary gives the median, the min–max over rounds and, for each declared comparison,
the ratio ours / peer (below 1.0 means ours is cheaper).

    suite = Suite("backends", description="one GET per call")
    suite.add("memory", lambda: backend.sync.get("k"))
    suite.add("redis", redis_get)                 # async functions work too
    suite.compare("memory", "redis")
    suite.run()                                   # prints Markdown, writes results/

Environment: ``GENNET_BENCH_QUICK=1`` shortens every suite (CI smoke runs);
``GENNET_BENCH_OUT`` overrides the results directory.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CaseResult", "Suite", "overhead_ratio"]

Fn = Callable[[], Any] | Callable[[], Awaitable[Any]]

RESULTS_DIR = Path(os.environ.get("GENNET_BENCH_OUT", Path(__file__).parent / "results"))
QUICK = os.environ.get("GENNET_BENCH_QUICK", "") not in {"", "0"}


@dataclass
class CaseResult:
    """Per-call timings of one case, one value (seconds) per round."""

    label: str
    per_call: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """Median seconds per call over rounds."""
        return statistics.median(self.per_call)

    @property
    def low(self) -> float:
        """Fastest round, seconds per call."""
        return min(self.per_call)

    @property
    def high(self) -> float:
        """Slowest round, seconds per call."""
        return max(self.per_call)


@dataclass
class _Case:
    label: str
    fn: Fn
    is_async: bool
    number: int | None


def _fmt(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    if seconds >= 1e-6:
        return f"{seconds * 1e6:.2f} µs"
    return f"{seconds * 1e9:.0f} ns"


def overhead_ratio(ours: float, peer: float, baseline: float) -> float:
    """Ratio of added cost over a baseline: ``(ours - baseline) / (peer - baseline)``."""
    denom = peer - baseline
    return float("inf") if denom <= 0 else max(ours - baseline, 0.0) / denom


class Suite:
    """A group of cases measured side by side in one run.

    ``rounds`` interleaved rounds; each round calls every case ``number`` times
    (auto-calibrated to about ``target`` seconds per round when not given).
    ``baseline`` names a case whose cost is subtracted for overhead ratios (for
    middleware: the bare app).
    """

    def __init__(
        self,
        name: str,
        *,
        description: str = "",
        rounds: int = 15,
        number: int | None = None,
        target: float = 0.05,
        baseline: str | None = None,
    ) -> None:
        self.name = name
        self.description = description
        self.rounds = max(3, rounds // 3) if QUICK else rounds
        self.number = number
        self.target = target / 5 if QUICK else target
        self.baseline = baseline
        self._cases: list[_Case] = []
        self._comparisons: list[tuple[str, str]] = []
        self.results: dict[str, CaseResult] = {}
        self.notes: list[str] = []

    def add(self, label: str, fn: Fn, *, number: int | None = None) -> None:
        """Add a case: ``fn`` is a zero-argument function or coroutine function doing one call."""
        if any(c.label == label for c in self._cases):
            raise ValueError(f"duplicate case {label!r}")
        is_async = inspect.iscoroutinefunction(fn)
        self._cases.append(_Case(label, fn, is_async, number or self.number))

    def compare(self, ours: str, peer: str) -> None:
        """Report ``ours / peer`` (and the overhead ratio when a baseline is set)."""
        self._comparisons.append((ours, peer))

    def note(self, text: str) -> None:
        """A line printed under the table (sizes, memory peaks, caveats)."""
        self.notes.append(text)

    # ------------------------------------------------------------------ running

    def _time_sync(self, fn: Callable[[], Any], n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return time.perf_counter() - start

    async def _time_async(self, fn: Callable[[], Awaitable[Any]], n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            await fn()
        return time.perf_counter() - start

    def _timer(self, case: _Case, loop: asyncio.AbstractEventLoop) -> Callable[[int], float]:
        if case.is_async:
            fn_a: Callable[[], Awaitable[Any]] = case.fn  # type: ignore[assignment]
            return lambda n: loop.run_until_complete(self._time_async(fn_a, n))
        fn_s: Callable[[], Any] = case.fn
        return lambda n: self._time_sync(fn_s, n)

    def _calibrate(self, timer: Callable[[int], float]) -> int:
        n = 1
        while True:
            elapsed = timer(n)
            if elapsed >= self.target / 4 or n >= 1_000_000:
                return max(1, int(n * self.target / max(elapsed, 1e-9)))
            n *= 4

    def run(self, *, write: bool = True) -> dict[str, CaseResult]:
        """Measure every case, print the Markdown summary and write JSON + Markdown files."""
        labels = {c.label for c in self._cases}
        unknown = sorted({x for pair in self._comparisons for x in pair} - labels)
        if unknown:
            # Found before minutes of measuring, not as a KeyError after them.
            raise ValueError(f"compare() names cases that were never added: {unknown}")
        loop = asyncio.new_event_loop()
        try:
            timers = {c.label: self._timer(c, loop) for c in self._cases}
            numbers = {}
            for case in self._cases:
                timers[case.label](1)  # warm-up: imports, caches, connections
                numbers[case.label] = case.number or self._calibrate(timers[case.label])
            self.results = {c.label: CaseResult(c.label) for c in self._cases}
            for _ in range(self.rounds):
                for case in self._cases:
                    n = numbers[case.label]
                    self.results[case.label].per_call.append(timers[case.label](n) / n)
        finally:
            loop.close()
        text = self.markdown()
        print(text)
        if write:
            self.write(text)
        return self.results

    # ------------------------------------------------------------------ output

    def ratios(self) -> list[dict[str, Any]]:
        """One dict per comparison: ratio of medians, and overhead ratio if a baseline is set."""
        out = []
        base = self.results[self.baseline].median if self.baseline else None
        for ours, peer in self._comparisons:
            a, b = self.results[ours].median, self.results[peer].median
            row: dict[str, Any] = {"ours": ours, "peer": peer, "ratio": a / b}
            if base is not None:
                row["overhead_ratio"] = overhead_ratio(a, b, base)
            out.append(row)
        return out

    def markdown(self) -> str:
        """The results as a Markdown section."""
        lines = [f"### {self.name}", ""]
        if self.description:
            lines += [self.description, ""]
        lines += ["| case | median / call | min – max |", "|---|---:|---:|"]
        for r in self.results.values():
            lines.append(f"| {r.label} | {_fmt(r.median)} | {_fmt(r.low)} – {_fmt(r.high)} |")
        if self._comparisons:
            lines += [
                "",
                "| comparison | ratio (ours / peer) | overhead ratio |",
                "|---|---:|---:|",
            ]
            for row in self.ratios():
                over = f"{row['overhead_ratio']:.2f}" if "overhead_ratio" in row else "—"
                lines.append(f"| {row['ours']} vs {row['peer']} | {row['ratio']:.2f} | {over} |")
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        lines.append("")
        return "\n".join(lines)

    def write(self, text: str | None = None) -> Path:
        """Write ``results/<name>.json`` and ``results/<name>.md``; return the JSON path."""
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        data = {
            "suite": self.name,
            "description": self.description,
            "machine": {"python": platform.python_version(), "platform": platform.platform()},
            "rounds": self.rounds,
            "cases": {
                r.label: {"median": r.median, "min": r.low, "max": r.high, "per_call": r.per_call}
                for r in self.results.values()
            },
            "baseline": self.baseline,
            "comparisons": self.ratios(),
            "notes": self.notes,
        }
        path = RESULTS_DIR / f"{self.name}.json"
        path.write_text(json.dumps(data, indent=2))
        (RESULTS_DIR / f"{self.name}.md").write_text(text or self.markdown())
        return path
