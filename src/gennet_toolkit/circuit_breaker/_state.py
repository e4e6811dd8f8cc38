"""The breaker's state record and its transitions, as pure functions.

Every transition is a function ``(record, now) -> (new record or None, result)``: the
stores apply it under a lock (in process) or in a compare-and-set loop on one key
(shared backends), so the same code decides for both and no read-then-write race can
split a transition in two.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

__all__ = [
    "CLOSED_RECORD",
    "Admission",
    "Policy",
    "Record",
    "State",
    "admit",
    "decode",
    "encode",
    "on_failure",
    "on_neutral",
    "on_success",
    "force",
]


class State(StrEnum):
    """A breaker's state. ``code`` is the number to export as a gauge (0, 1, 2)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    @property
    def code(self) -> int:
        """0 closed, 1 open, 2 half-open: the value of a ``circuit_breaker_state`` gauge."""
        return _CODES[self]


_CODES = {State.CLOSED: 0, State.OPEN: 1, State.HALF_OPEN: 2}
_BY_CODE = {0: State.CLOSED, 1: State.OPEN, 2: State.HALF_OPEN}


@dataclass(frozen=True, slots=True)
class Policy:
    """The thresholds a breaker decides with (validated by ``CircuitBreaker``)."""

    fail_max: int
    reset_timeout: float
    half_open_max_calls: int
    success_threshold: int
    failure_window: float | None


@dataclass(frozen=True, slots=True)
class Record:
    """The whole state of one breaker: what the shared key holds.

    ``until`` depends on the state: open, when trial calls may start; half-open, when
    unreturned trial permits lapse (a stalled trial cannot wedge the breaker); closed
    with a failure window, when the window ends. ``gen`` changes on every state change,
    so an outcome from an earlier period is recognised as stale and ignored.
    """

    state: State = State.CLOSED
    failures: int = 0
    successes: int = 0
    until: float = 0.0
    probes: int = 0
    gen: int = 0


CLOSED_RECORD = Record()


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to "may this call run?": a trial permit, a plain pass, or a refusal."""

    allowed: bool
    gen: int = 0
    trial: bool = False
    retry_after: float = 0.0


def encode(rec: Record) -> bytes:
    """``rec`` in the compact text form stored under the breaker's key."""
    return (
        f"{_CODES[rec.state]}|{rec.failures}|{rec.successes}|{rec.until!r}|{rec.probes}|{rec.gen}"
    ).encode()


def decode(raw: bytes | None) -> Record:
    """The record ``raw`` holds; a missing key is a fresh closed breaker.

    Raises ``ValueError`` for bytes this module did not write.
    """
    if raw is None:
        return CLOSED_RECORD
    code, failures, successes, until, probes, gen = raw.split(b"|")
    return Record(
        _BY_CODE[int(code)], int(failures), int(successes), float(until), int(probes), int(gen)
    )


def _opened(rec: Record, now: float, policy: Policy) -> Record:
    return Record(State.OPEN, until=now + policy.reset_timeout, gen=rec.gen + 1)


def admit(rec: Record, now: float, policy: Policy) -> tuple[Record | None, Admission]:
    """Decide whether a call may start; open turns half-open once ``reset_timeout`` ran out."""
    if rec.state is State.CLOSED:
        return None, Admission(True, rec.gen)
    if rec.state is State.OPEN:
        if now < rec.until:
            return None, Admission(False, retry_after=rec.until - now)
        gen = rec.gen + 1
        half = Record(State.HALF_OPEN, until=now + policy.reset_timeout, probes=1, gen=gen)
        return half, Admission(True, gen, trial=True)
    if rec.probes < policy.half_open_max_calls:
        return replace(rec, probes=rec.probes + 1), Admission(True, rec.gen, trial=True)
    if now >= rec.until:
        # Every permit is out and none came back in time: the trials stalled (or their
        # process died). Start a new half-open period so the breaker cannot wedge.
        gen = rec.gen + 1
        half = Record(State.HALF_OPEN, until=now + policy.reset_timeout, probes=1, gen=gen)
        return half, Admission(True, gen, trial=True)
    return None, Admission(False, retry_after=rec.until - now)


def on_success(
    rec: Record, now: float, policy: Policy, gen: int, trial: bool
) -> tuple[Record | None, None]:
    """Count a success; enough trial successes close the breaker."""
    if rec.gen != gen:
        return None, None
    if rec.state is State.CLOSED:
        if policy.failure_window is None and rec.failures:
            return replace(rec, failures=0), None
        return None, None
    if rec.state is State.HALF_OPEN and trial:
        successes = rec.successes + 1
        if successes >= policy.success_threshold:
            return Record(State.CLOSED, gen=rec.gen + 1), None
        return replace(rec, successes=successes, probes=max(0, rec.probes - 1)), None
    return None, None


def on_failure(
    rec: Record, now: float, policy: Policy, gen: int, trial: bool
) -> tuple[Record | None, None]:
    """Count a failure; ``fail_max`` of them (or any trial failure) open the breaker."""
    if rec.gen != gen:
        return None, None
    if rec.state is State.CLOSED:
        window = policy.failure_window
        if window is None:
            failures = rec.failures + 1
            until = 0.0
        elif rec.failures == 0 or now >= rec.until:
            failures, until = 1, now + window
        else:
            failures, until = rec.failures + 1, rec.until
        if failures >= policy.fail_max:
            return _opened(rec, now, policy), None
        return replace(rec, failures=failures, until=until), None
    if rec.state is State.HALF_OPEN and trial:
        return _opened(rec, now, policy), None
    return None, None


def on_neutral(
    rec: Record, now: float, policy: Policy, gen: int, trial: bool
) -> tuple[Record | None, None]:
    """A call that proved nothing (cancelled): give its trial permit back."""
    if rec.gen == gen and rec.state is State.HALF_OPEN and trial and rec.probes:
        return replace(rec, probes=rec.probes - 1), None
    return None, None


def force(rec: Record, now: float, policy: Policy, state: State) -> tuple[Record | None, None]:
    """Put the breaker in ``state`` by hand (a new period: outcomes in flight go stale)."""
    gen = rec.gen + 1
    if state is State.OPEN:
        return _opened(rec, now, policy), None
    if state is State.HALF_OPEN:
        return Record(State.HALF_OPEN, until=now + policy.reset_timeout, gen=gen), None
    return Record(State.CLOSED, gen=gen), None
