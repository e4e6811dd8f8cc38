"""The benchmark harness (benchmarks/_harness.py) that bench_backends and the others use.

Timings are replaced by fixed numbers where the arithmetic is checked, so these tests
assert what the harness computes and writes, never how fast anything is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from benchmarks import _harness
from benchmarks._harness import Suite


def test_rounds_interleave_the_cases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_harness, "QUICK", False)
    calls: list[str] = []
    suite = Suite("order", rounds=3, number=2)
    suite.add("a", lambda: calls.append("a"))

    async def b() -> None:
        calls.append("b")

    suite.add("b", b)  # a coroutine function is awaited, on one loop for the whole run
    suite.run(write=False)
    warm_up, rounds = calls[:2], calls[2:]
    assert warm_up == ["a", "b"]
    assert rounds == ["a", "a", "b", "b"] * 3
    assert [len(r.per_call) for r in suite.results.values()] == [3, 3]


def fixed_timings(suite: Suite, elapsed: dict[str, list[float]]) -> None:
    """Make each round of case ``label`` take the next of ``elapsed[label]`` seconds."""
    queues = {label: list(values) for label, values in elapsed.items()}
    by_fn: dict[Any, str] = {case.fn: case.label for case in suite._cases}

    def timed(fn: Any, n: int) -> float:
        values = queues[by_fn[fn]]
        return values.pop(0) if len(values) > 1 else values[0]

    suite._time_sync = timed  # type: ignore[method-assign]


def test_summary_gives_median_min_max_and_ratio_to_the_named_peer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_harness, "QUICK", False)
    monkeypatch.setattr(_harness, "RESULTS_DIR", tmp_path)
    suite = Suite("demo", description="one call", rounds=3, number=10, baseline="bare")
    suite.add("bare", lambda: None)
    suite.add("ours", lambda: 1)
    suite.add("peer", lambda: 2)
    suite.compare("ours", "peer")
    suite.note("a caveat")
    # The first value of each list is the warm-up; then one per round (per call: / 10).
    fixed_timings(
        suite,
        {
            "bare": [0.0, 0.010, 0.010, 0.010],
            "ours": [0.0, 0.030, 0.020, 0.090],
            "peer": [0.0, 0.050, 0.040, 0.060],
        },
    )
    results = suite.run()

    ours, peer = results["ours"], results["peer"]
    assert ours.median == pytest.approx(0.003)
    assert (ours.low, ours.high) == (pytest.approx(0.002), pytest.approx(0.009))
    assert peer.median == pytest.approx(0.005)
    [row] = suite.ratios()
    assert row["ratio"] == pytest.approx(0.6)
    assert row["overhead_ratio"] == pytest.approx((0.003 - 0.001) / (0.005 - 0.001))

    printed = capsys.readouterr().out
    markdown = (tmp_path / "demo.md").read_text()
    assert printed.strip() == markdown.strip()
    assert "| ours | 3.00 ms | 2.00 ms – 9.00 ms |" in markdown
    assert "| ours vs peer | 0.60 | 0.50 |" in markdown
    assert "- a caveat" in markdown

    data = json.loads((tmp_path / "demo.json").read_text())
    assert data["suite"] == "demo"
    assert data["rounds"] == 3
    assert data["cases"]["peer"]["median"] == pytest.approx(0.005)
    assert data["cases"]["ours"]["per_call"] == pytest.approx([0.003, 0.002, 0.009])
    assert data["comparisons"] == [
        {"ours": "ours", "peer": "peer", "ratio": pytest.approx(0.6), "overhead_ratio": 0.5}
    ]


def test_comparing_a_case_never_added_fails_before_measuring() -> None:
    calls: list[int] = []
    suite = Suite("typo", rounds=3, number=1)
    suite.add("ours", lambda: calls.append(1))
    suite.compare("ours", "peeer")
    with pytest.raises(ValueError, match="peeer"):
        suite.run(write=False)
    assert calls == []


def test_duplicate_case_labels_are_refused() -> None:
    suite = Suite("dup")
    suite.add("x", lambda: None)
    with pytest.raises(ValueError, match="duplicate"):
        suite.add("x", lambda: None)
