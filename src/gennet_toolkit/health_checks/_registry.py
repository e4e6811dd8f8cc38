"""HealthRegistry: registered checks, the three probes, timeouts, caching and drain state."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Literal, TypeAlias

from gennet_toolkit._env import env_bool, env_float, env_str
from gennet_toolkit.exceptions import ConfigurationError
from gennet_toolkit.health_checks._util import (
    State,
    debug_text,
    failure_category,
    in_daemon_thread,
    is_async_callable,
    iso,
    json_safe,
    now,
    seconds,
)

__all__ = [
    "HEALTH_MEDIA_TYPE",
    "Check",
    "CheckOutcome",
    "CheckResult",
    "HealthRegistry",
    "HealthReport",
    "Probe",
    "Status",
    "failure_category",
]

#: The IETF draft's media type for health responses.
HEALTH_MEDIA_TYPE = "application/health+json"

Status: TypeAlias = Literal["pass", "warn", "fail"]
Probe: TypeAlias = Literal["live", "ready", "startup"]

_STATUSES: frozenset[str] = frozenset({"pass", "warn", "fail"})
# Component and measurement names form the "component:measurement" key: no colons.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]{0,63}")
_CHAIN_LIMIT = 16

logger = logging.getLogger("gennet_toolkit.health_checks")


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What a check may return to say more than pass/fail.

    ``CheckResult(status="warn", observed_value=87, observed_unit="%", output="disk filling")``.
    Without an ``observed_value`` the registry reports the check's response time.
    ``output`` is sent to clients as is: put no secrets or addresses in it.
    """

    status: Status = "pass"
    observed_value: Any = None
    observed_unit: str | None = None
    output: str | None = None

    def __post_init__(self) -> None:
        if self.status not in _STATUSES:
            raise ValueError(f"status must be 'pass', 'warn' or 'fail', got {self.status!r}")


_CheckReturn: TypeAlias = CheckResult | bool | None
#: A health check: a zero-argument sync or async callable. ``None``/``True`` mean pass,
#: ``False`` fail, a :class:`CheckResult` says it in detail; raising means fail.
Check: TypeAlias = Callable[[], _CheckReturn | Awaitable[_CheckReturn]]


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """The result of one check run, as it appears under ``checks`` in the response."""

    name: str
    measurement: str
    status: Status
    critical: bool
    component_type: str
    time: datetime
    duration: float
    observed_value: Any = None
    observed_unit: str | None = None
    output: str | None = None
    component_id: str | None = None

    @property
    def key(self) -> str:
        """The IETF ``checks`` key, ``component:measurement``."""
        return f"{self.name}:{self.measurement}"

    def to_dict(self) -> dict[str, Any]:
        """This outcome as one IETF check object."""
        body: dict[str, Any] = {"componentType": self.component_type}
        if self.component_id is not None:
            body["componentId"] = self.component_id
        if self.observed_value is not None:
            body["observedValue"] = self.observed_value
            if self.observed_unit is not None:
                body["observedUnit"] = self.observed_unit
        body["status"] = self.status
        body["time"] = iso(self.time)
        if self.output is not None and self.status != "pass":
            body["output"] = self.output
        return body


@dataclass(frozen=True)  # no slots: to_json caches its bytes in __dict__
class HealthReport:
    """One probe's answer: overall status, the check outcomes and the service metadata."""

    probe: Probe
    status: Status
    checks: tuple[CheckOutcome, ...] = ()
    output: str | None = None
    meta: Mapping[str, str] = field(default_factory=dict)

    @property
    def http_status(self) -> int:
        """200 for pass and warn, 503 for fail (the draft: fail is 4xx–5xx)."""
        return 503 if self.status == "fail" else 200

    def to_dict(self) -> dict[str, Any]:
        """The ``application/health+json`` body."""
        body: dict[str, Any] = {"status": self.status, **self.meta}
        if self.output is not None and self.status != "pass":
            body["output"] = self.output
        if self.checks:
            checks: dict[str, list[dict[str, Any]]] = {}
            for outcome in self.checks:
                checks.setdefault(outcome.key, []).append(outcome.to_dict())
            body["checks"] = checks
        return body

    def to_json(self) -> bytes:
        """The body, serialised; values JSON cannot carry become strings, never an error."""
        return self._json

    @cached_property
    def _json(self) -> bytes:
        # A cached report answers many probes: serialise it once.
        return json.dumps(
            self.to_dict(), separators=(",", ":"), default=str, allow_nan=False
        ).encode()


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    check: Check
    is_async: bool
    critical: bool
    timeout: float
    ready: bool
    startup: bool
    component_type: str
    component_id: str | None
    measurement: str
    state: State = field(default_factory=State)


# What one check run produced: (result, exception, seconds it took).
_Raw: TypeAlias = tuple[Any, BaseException | None, float]


def _raw(task: asyncio.Task[_Raw]) -> _Raw:
    if task.cancelled():  # the check cancelled itself
        return None, asyncio.CancelledError(), 0.0
    return task.result()


class HealthRegistry:
    """The checks of one service and the answers of its ``/live``, ``/ready``, ``/startup``.

    ::

        health = HealthRegistry(version="1.4.0")
        health.add("redis", redis_check("redis://127.0.0.1:6379/0"))
        health.add("db", sqlalchemy_check(engine), startup=True)
        health.add("search", http_check("http://127.0.0.1:9200/"), critical=False)
        app.mount("/health", health_app(health))

    ``cache_ttl`` (seconds) caches each probe's report; concurrent requests for the same
    probe share one run. ``debug=True`` puts exception text in ``output`` (never in
    production: it leaks hosts and addresses). ``service_id``, ``version``,
    ``release_id`` and ``description`` go into every body.
    """

    def __init__(
        self,
        *,
        cache_ttl: float = 1.0,
        debug: bool = False,
        service_id: str | None = None,
        version: str | None = None,
        release_id: str | None = None,
        description: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache_ttl = seconds(cache_ttl, "cache_ttl", allow_zero=True)
        self.debug = debug
        self._clock = clock
        meta = {
            "version": version,
            "releaseId": release_id,
            "serviceId": service_id,
            "description": description,
        }
        self._meta: dict[str, str] = {k: v for k, v in meta.items() if v is not None}
        self._checks: dict[str, _Entry] = {}
        self._cache: dict[Probe, tuple[float, HealthReport]] = {}
        self._inflight: dict[
            Probe, tuple[asyncio.AbstractEventLoop, asyncio.Task[HealthReport]]
        ] = {}
        # Timed-out check tasks, kept referenced until they really end.
        self._orphans: set[asyncio.Task[Any]] = set()
        self._born = clock()
        self._app_starting = False
        self._started = False
        self._shutting_down = False

    @classmethod
    def from_env(cls, prefix: str = "GENNET_", **overrides: Any) -> HealthRegistry:
        """Build from ``{prefix}HEALTH_CACHE_TTL``, ``_DEBUG``, ``_SERVICE_ID``, ``_VERSION``,
        ``_RELEASE_ID`` and ``_DESCRIPTION``; keyword arguments win over the environment."""
        p = prefix + "HEALTH_"
        kw: dict[str, Any] = {}
        if (ttl := env_float(p + "CACHE_TTL")) is not None:
            kw["cache_ttl"] = ttl
        if (debug := env_bool(p + "DEBUG")) is not None:
            kw["debug"] = debug
        for key in ("service_id", "version", "release_id", "description"):
            if (value := env_str(p + key.upper())) is not None:
                kw[key] = value
        kw.update(overrides)
        return cls(**kw)

    # ------------------------------------------------------------------ registration

    def add(
        self,
        name: str,
        check: Check,
        *,
        critical: bool = True,
        timeout: float = 2.0,
        ready: bool = True,
        startup: bool = False,
        component_type: str | None = None,
        component_id: str | None = None,
        measurement: str = "responseTime",
    ) -> None:
        """Register ``check`` under ``name`` (the component part of its ``checks`` key).

        A failing ``critical`` check fails ``/ready`` (503); a non-critical one turns it
        into ``warn`` (200). ``timeout`` bounds each run; a check that overruns is
        ``fail`` with output ``"timeout"``. ``ready``/``startup`` choose the probes that
        run it. ``component_type`` defaults to the check's own (``datastore`` for the
        Redis and SQL checks) or ``"component"``.
        """
        if not _NAME_RE.fullmatch(name):
            raise ConfigurationError(
                "check name must be 1-64 characters of letters, digits and _ . - / "
                "(no colon: it forms the 'component:measurement' key)"
            )
        if not _NAME_RE.fullmatch(measurement):
            raise ConfigurationError("measurement must be a name without colons")
        if name in self._checks:
            raise ConfigurationError(f"a health check named {name!r} is already registered")
        if not callable(check):  # a typo'd registration must fail at setup, not in a probe
            raise ConfigurationError(f"health check {name!r} is not callable")
        timeout = seconds(timeout, "timeout")
        if not (ready or startup):
            raise ConfigurationError(f"health check {name!r} runs in no probe (ready or startup)")
        ctype = component_type or getattr(check, "component_type", None) or "component"
        self._checks[name] = _Entry(
            name=name,
            check=check,
            is_async=is_async_callable(check),
            critical=critical,
            timeout=float(timeout),
            ready=ready,
            startup=startup,
            component_type=str(ctype),
            component_id=component_id,
            measurement=measurement,
        )
        self._cache.clear()

    def remove(self, name: str) -> None:
        """Unregister a check; unknown names raise :class:`KeyError`."""
        del self._checks[name]
        self._cache.clear()

    @property
    def names(self) -> tuple[str, ...]:
        """Registered check names, in registration order."""
        return tuple(self._checks)

    # ------------------------------------------------------------------ lifecycle

    @property
    def started(self) -> bool:
        """Whether the startup probe has passed (it then passes for good)."""
        return self._started

    @property
    def shutting_down(self) -> bool:
        """Whether shutdown has begun (``/ready`` answers 503 from then on)."""
        return self._shutting_down

    def begin_shutdown(self) -> None:
        """Fail readiness from now on so load balancers drain this instance.

        The lifespan helpers call it on ``lifespan.shutdown``; call it yourself from a
        SIGTERM handler when your server only sends that after closing its listeners.
        """
        if not self._shutting_down:
            logger.info("health: shutdown started, readiness now fails")
        self._shutting_down = True
        self._cache.clear()

    def _lifespan_startup(self) -> None:
        # A new lifespan cycle (also a second TestClient run): start from scratch.
        self._app_starting = True
        self._started = False
        self._shutting_down = False
        self._cache.clear()

    def _lifespan_started(self) -> None:
        self._app_starting = False

    def _lifespan_abandoned(self) -> None:
        # The app ended its lifespan without completing startup (lifespan unsupported):
        # stop gating the probes on it.
        self._app_starting = False

    def lifespan(
        self, inner: Callable[[Any], AbstractAsyncContextManager[Any]] | None = None
    ) -> Callable[[Any], AbstractAsyncContextManager[Any]]:
        """A Starlette/FastAPI ``lifespan=`` that tracks startup and shutdown.

        ``Starlette(lifespan=health.lifespan(my_lifespan))``: the probes report
        ``starting`` until ``my_lifespan`` has entered and readiness fails as soon as
        shutdown begins, before ``my_lifespan`` cleans up.
        """

        @asynccontextmanager
        async def _lifespan(app: Any) -> Any:
            self._lifespan_startup()
            try:
                if inner is None:
                    self._lifespan_started()
                    try:
                        yield None
                    finally:
                        self.begin_shutdown()
                else:
                    async with inner(app) as state:
                        self._lifespan_started()
                        try:
                            yield state
                        finally:
                            self.begin_shutdown()
            finally:
                self._lifespan_abandoned()

        return _lifespan

    # ------------------------------------------------------------------ probes

    def live(self) -> HealthReport:
        """Liveness: the process answers. Touches no dependency and ignores shutdown."""
        outcome = CheckOutcome(
            name="process",
            measurement="uptime",
            status="pass",
            critical=True,
            component_type="system",
            time=now(),
            duration=0.0,
            observed_value=round(self._clock() - self._born, 3),
            observed_unit="s",
        )
        return HealthReport("live", "pass", (outcome,), meta=self._meta)

    async def ready(self) -> HealthReport:
        """Readiness: ``fail`` while starting or shutting down, else the readiness checks."""
        if self._shutting_down:
            return HealthReport("ready", "fail", output="shutting down", meta=self._meta)
        if self._app_starting:
            return HealthReport("ready", "fail", output="starting", meta=self._meta)
        return await self._shared("ready")

    async def startup(self) -> HealthReport:
        """Startup: ``fail`` until the startup checks first pass, then ``pass`` for good."""
        if self._started:
            return HealthReport("startup", "pass", meta=self._meta)
        if self._app_starting:
            return HealthReport("startup", "fail", output="starting", meta=self._meta)
        report = await self._shared("startup")
        if report.status != "fail":
            self._started = True
        return report

    async def report(self, probe: Probe) -> HealthReport:
        """The report of ``probe`` (``"live"``, ``"ready"`` or ``"startup"``)."""
        if probe == "live":
            return self.live()
        if probe == "ready":
            return await self.ready()
        if probe == "startup":
            return await self.startup()
        raise ValueError(f"unknown probe {probe!r}")

    def _error_report(self, probe: Probe) -> HealthReport:
        return HealthReport(probe, "fail", output="internal error", meta=self._meta)

    # ------------------------------------------------------------------ running

    async def _shared(self, probe: Probe) -> HealthReport:
        cached = self._cache.get(probe)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        loop = asyncio.get_running_loop()
        current = self._inflight.get(probe)
        if current is None or current[0] is not loop or current[1].done():
            task = loop.create_task(self._run(probe))
            self._inflight[probe] = (loop, task)
            task.add_done_callback(lambda t: self._forget(probe, t))
        else:
            task = current[1]
        # shield: a client that disconnects must not cancel the run the others wait on.
        return await asyncio.shield(task)

    def _forget(self, probe: Probe, task: asyncio.Task[HealthReport]) -> None:
        current = self._inflight.get(probe)
        if current is not None and current[1] is task:
            del self._inflight[probe]
        if not task.cancelled():
            # Retrieve it even when every waiter went away (shield keeps the task alive).
            task.exception()

    async def _run(self, probe: Probe) -> HealthReport:
        entries = [e for e in self._checks.values() if (e.ready if probe == "ready" else e.startup)]
        at = now()
        outcomes: dict[str, CheckOutcome] = {}
        tasks: dict[asyncio.Task[_Raw], _Entry] = {}
        loop = asyncio.get_running_loop()
        for entry in entries:
            if not entry.is_async and entry.state.thread_busy:
                # The previous run still hangs in its thread: don't pile up another one.
                busy = TimeoutError("previous run still in progress")
                outcomes[entry.name] = self._outcome(entry, at, (None, busy, 0.0))
            else:
                tasks[loop.create_task(self._invoke(entry))] = entry
        if tasks:
            await self._collect(tasks, at, outcomes)
        checks = tuple(outcomes[e.name] for e in entries)
        failing = [o.name for o in checks if o.status == "fail" and o.critical]
        degraded = [o.name for o in checks if o.status != "pass" and o.name not in failing]
        status: Status
        if failing:
            status, output = "fail", "failing: " + ", ".join(failing)
        elif degraded:
            status, output = "warn", "degraded: " + ", ".join(degraded)
        else:
            status, output = "pass", None
        report = HealthReport(probe, status, checks, output, self._meta)
        if self.cache_ttl > 0:
            self._cache[probe] = (self._clock() + self.cache_ttl, report)
        return report

    async def _collect(
        self,
        tasks: dict[asyncio.Task[_Raw], _Entry],
        at: datetime,
        outcomes: dict[str, CheckOutcome],
    ) -> None:
        # One wait() for all checks, woken at the earliest deadline still pending, rather
        # than wait_for() per check: a check that swallows cancellation cannot hold the
        # probe past its timeout, and the common all-fast case costs a single wait.
        loop = asyncio.get_running_loop()
        start = loop.time()
        pending = set(tasks)
        try:
            while pending:
                current = loop.time()
                for task in [t for t in pending if t.done()]:
                    pending.discard(task)
                    outcomes[tasks[task].name] = self._outcome(tasks[task], at, _raw(task))
                for task in [t for t in pending if current >= start + tasks[t].timeout]:
                    pending.discard(task)
                    entry = tasks[task]
                    late = TimeoutError(f"no answer within {entry.timeout:g} s")
                    outcomes[entry.name] = self._outcome(entry, at, (None, late, entry.timeout))
                    self._abandon(task)
                if pending:
                    wake = min(start + tasks[t].timeout for t in pending)
                    await asyncio.wait(pending, timeout=max(wake - current, 0.0))
        finally:
            for task in pending:
                self._abandon(task)

    def _abandon(self, task: asyncio.Task[Any]) -> None:
        if not task.done():
            task.cancel()
            # Keep a reference until it really ends; a check may ignore cancellation.
            self._orphans.add(task)
            task.add_done_callback(self._orphan_done)

    async def _invoke(self, entry: _Entry) -> _Raw:
        t0 = time.perf_counter()
        try:
            if entry.is_async:
                result: Any = entry.check()
            else:
                result = await in_daemon_thread(entry.check, entry.state, entry.name)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            return None, exc, time.perf_counter() - t0
        return result, None, time.perf_counter() - t0

    def _orphan_done(self, task: asyncio.Task[Any]) -> None:
        self._orphans.discard(task)
        if not task.cancelled():
            task.exception()  # retrieve it: no "exception was never retrieved" noise

    def _outcome(self, entry: _Entry, at: datetime, raw: _Raw) -> CheckOutcome:
        result, error, duration = raw
        status: Status = "pass"
        output: str | None = None
        value: Any = None
        unit: str | None = None
        if error is not None:
            status = "fail"
            output = debug_text(error) if self.debug else failure_category(error)
        elif result is None or result is True:
            pass
        elif result is False:
            status, output = "fail", "check failed"
        elif isinstance(result, CheckResult):
            status, output = result.status, result.output
            value, unit = json_safe(result.observed_value), result.observed_unit
        else:
            status, output = "fail", "invalid check result"
            error = TypeError(
                f"check returned {type(result).__name__}, not a CheckResult/bool/None"
            )
        if value is None and entry.measurement == "responseTime":
            value, unit = round(duration * 1000, 3), "ms"
        self._log_transition(entry, status, output, error)
        return CheckOutcome(
            name=entry.name,
            measurement=entry.measurement,
            status=status,
            critical=entry.critical,
            component_type=entry.component_type,
            component_id=entry.component_id,
            time=at,
            duration=duration,
            observed_value=value,
            observed_unit=unit,
            output=output,
        )

    def _log_transition(
        self, entry: _Entry, status: Status, output: str | None, error: BaseException | None
    ) -> None:
        # Once per incident: the first failure (with the full exception, server side
        # only) and the recovery; repeated failures stay quiet.
        state = entry.state
        if status == "fail" and not state.failing:
            state.failing = True
            exc_info = (type(error), error, error.__traceback__) if error is not None else None
            logger.warning(
                "health check %r failing: %s", entry.name, output or "fail", exc_info=exc_info
            )
        elif status != "fail" and state.failing:
            state.failing = False
            logger.info("health check %r recovered", entry.name)
