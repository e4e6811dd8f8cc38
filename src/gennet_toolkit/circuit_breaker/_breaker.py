"""``CircuitBreaker``: the decorator, the context managers and the fallback policy."""

from __future__ import annotations

import functools
import inspect
import logging
import math
import re
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from contextvars import ContextVar
from datetime import timedelta
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from gennet_toolkit._env import env_bool, env_float, env_int, env_str
from gennet_toolkit.backends import Backend, from_url
from gennet_toolkit.circuit_breaker._listener import CircuitBreakerListener
from gennet_toolkit.circuit_breaker._options import (
    Exclude,
    backend_is_memory,
    check,
    is_count,
    is_text,
    parse_exclude,
)
from gennet_toolkit.circuit_breaker._state import (
    Admission,
    Policy,
    Record,
    State,
    admit,
    force,
    on_failure,
    on_neutral,
    on_success,
)
from gennet_toolkit.circuit_breaker._stores import LocalStore, SharedStore
from gennet_toolkit.exceptions import CircuitOpenError, ServiceUnavailable

__all__ = ["CircuitBreaker"]

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger("gennet_toolkit.circuit_breaker")

_CLOSED = State.CLOSED  # a module global: cheaper than the enum lookup on the hot path

# How a finished call counts.
_SUCCESS, _FAILURE, _NEUTRAL = 0, 1, 2

# (store, generation, trial permit, failures seen at admission)
_Token = tuple[LocalStore | SharedStore, int, bool, int]


class _Guard:
    """One protected block: ``with breaker.calling():`` / ``async with breaker.calling():``."""

    __slots__ = ("_breaker", "_token")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        self._token: _Token | None = None

    def __enter__(self) -> None:
        self._token = self._breaker._admit()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        token, self._token = self._token, None
        if token is not None:
            self._breaker._finish(token, e)

    async def __aenter__(self) -> None:
        self._token = await self._breaker._aadmit()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        token, self._token = self._token, None
        if token is not None:
            await self._breaker._afinish(token, e)


class CircuitBreaker:
    """Stops calling a failing dependency, then lets trial calls test whether it is back.

    ``CircuitBreaker("payments", fail_max=5, reset_timeout=30)`` protects sync and async
    callables (``@breaker``), blocks (``with breaker:`` / ``async with breaker:``) and
    single calls (``breaker.call(fn, ...)`` / ``await breaker.acall(fn, ...)``).

    - **closed**: calls run; ``fail_max`` failures in a row (or within
      ``failure_window`` seconds) open the breaker.
    - **open**: calls fail fast with ``CircuitOpenError`` (503, ``Retry-After`` = the
      time left) for ``reset_timeout`` seconds.
    - **half-open**: at most ``half_open_max_calls`` trial calls run at a time, in all
      processes together; everyone else is refused. ``success_threshold`` trial
      successes close it, one trial failure opens it again. Permits not returned
      within ``reset_timeout`` lapse, so a stalled trial cannot wedge the breaker.

    Failures are ``Exception``\\ s not matched by ``exclude`` (types or predicates);
    excluded errors count as successes (the dependency answered), and cancellation
    (``CancelledError``, ``KeyboardInterrupt``) counts as nothing. An outcome that
    arrives after the state changed since its call started is ignored.

    ``backend`` is ``"memory://"`` (state in this process) or a URL or
    :class:`~gennet_toolkit.backends.Backend` shared by processes. If the backend
    fails, ``fail_open=True`` goes on with state kept in this process, and
    ``fail_open=False`` refuses calls; either way one warning is logged per
    incident, and the backend is tried again every ``recheck_interval`` seconds.
    ``cache_ttl`` (default 0: read the shared state on every call) lets a closed
    breaker skip that read for a while: fewer round trips, but an opening by another
    process is seen up to ``cache_ttl`` seconds late.
    ``clock`` (default ``time.time``: wall time, comparable between hosts) is
    injectable for tests.
    """

    def __init__(
        self,
        name: str,
        *,
        fail_max: int = 5,
        reset_timeout: float | timedelta = 30.0,
        exclude: Exclude | Iterable[Exclude] = (),
        backend: str | Backend = "memory://",
        half_open_max_calls: int = 1,
        success_threshold: int = 1,
        failure_window: float | None = None,
        listeners: Iterable[CircuitBreakerListener] = (),
        fail_open: bool = True,
        recheck_interval: float = 5.0,
        cache_ttl: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check(is_text(name), "name must be a non-empty string")
        check(is_count(fail_max), "fail_max must be an integer >= 1")
        if isinstance(reset_timeout, timedelta):
            reset_timeout = reset_timeout.total_seconds()
        check(0 < reset_timeout < math.inf, "reset_timeout must be > 0 seconds and finite")
        check(is_count(half_open_max_calls), "half_open_max_calls must be an integer >= 1")
        check(is_count(success_threshold), "success_threshold must be an integer >= 1")
        check(
            failure_window is None or 0 < failure_window < math.inf,
            "failure_window must be None or > 0 seconds and finite",
        )
        check(recheck_interval >= 0, "recheck_interval must be >= 0 seconds")
        check(0 <= cache_ttl < math.inf, "cache_ttl must be >= 0 seconds and finite")
        types, predicates = parse_exclude(exclude)
        self.name = name
        self.fail_open = fail_open
        self.recheck_interval = recheck_interval
        self._cache_ttl = cache_ttl
        self._fresh_until = 0.0
        self.policy = Policy(
            fail_max, float(reset_timeout), half_open_max_calls, success_threshold, failure_window
        )
        self._exclude_types = types
        self._exclude_predicates = predicates
        self._listeners: tuple[CircuitBreakerListener, ...] = tuple(listeners)
        self._clock = clock
        self._local = LocalStore(clock)
        self._url: str | None
        if isinstance(backend, str):
            self._url = backend
            backend = from_url(backend)
        else:
            self._url = None
        self.backend = backend
        # memory:// named by URL is private to this breaker: keep the record in a
        # plain attribute instead of paying for a backend round through bytes.
        self._shared: SharedStore | None = None
        if self._url is None or not backend_is_memory(self._url):
            ttl = max(86400.0, 10 * (reset_timeout + (failure_window or 0)))
            self._shared = SharedStore(backend, "cb:" + name, clock, ttl)
        self._incident = False
        self._incident_lock = threading.Lock()
        self._recheck_at = 0.0
        self._tokens: ContextVar[tuple[_Token, ...]] = ContextVar("gennet_cb_" + name, default=())
        policy = self.policy
        self._admit_fn: Callable[[Record, float], tuple[Record | None, Admission]] = (
            lambda rec, now: admit(rec, now, policy)
        )

    @classmethod
    def from_env(cls, name: str, prefix: str = "GENNET_", **overrides: Any) -> CircuitBreaker:
        """Configure from ``{prefix}CIRCUIT_BREAKER_*``: ``FAIL_MAX``, ``RESET_TIMEOUT``,
        ``HALF_OPEN_MAX_CALLS``, ``SUCCESS_THRESHOLD``, ``FAILURE_WINDOW``, ``FAIL_OPEN``,
        ``RECHECK_INTERVAL``, ``CACHE_TTL`` and ``BACKEND`` (else ``{prefix}BACKEND_URL``, else
        ``memory://``). ``{prefix}CIRCUIT_BREAKER_<NAME>_<OPTION>`` (the name upper-cased,
        other characters than letters and digits as ``_``) wins for one breaker.
        Keywords override the environment."""
        general = prefix + "CIRCUIT_BREAKER_"
        own = general + re.sub(r"[^A-Z0-9]", "_", name.upper()) + "_"
        kwargs: dict[str, Any] = {}
        for key, reader in (
            ("backend", env_str),
            ("fail_max", env_int),
            ("half_open_max_calls", env_int),
            ("success_threshold", env_int),
            ("reset_timeout", env_float),
            ("failure_window", env_float),
            ("recheck_interval", env_float),
            ("cache_ttl", env_float),
            ("fail_open", env_bool),
        ):
            value = reader(own + key.upper())
            if value is None:
                value = reader(general + key.upper())
            if value is not None:
                kwargs[key] = value
        kwargs.setdefault("backend", env_str(prefix + "BACKEND_URL") or "memory://")
        kwargs.update(overrides)
        return cls(name, **kwargs)

    def __repr__(self) -> str:
        # The scheme only: the rest of a URL may hold a password.
        where = (
            self._url.split(":", 1)[0] + "://"
            if self._url is not None
            else type(self.backend).__name__
        )
        return (
            f"CircuitBreaker({self.name!r}, fail_max={self.policy.fail_max}, "
            f"reset_timeout={self.policy.reset_timeout}, backend={where!r})"
        )

    # ------------------------------------------------------------------ listeners

    @property
    def listeners(self) -> tuple[CircuitBreakerListener, ...]:
        """The registered listeners."""
        return self._listeners

    def add_listener(self, listener: CircuitBreakerListener) -> None:
        """Register ``listener`` (a new tuple: calls in flight keep the old one)."""
        self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: CircuitBreakerListener) -> None:
        """Unregister ``listener``."""
        self._listeners = tuple(item for item in self._listeners if item is not listener)

    def _notify(self, hook: str, *args: Any) -> None:
        for listener in self._listeners:
            try:
                getattr(listener, hook)(self, *args)
            except Exception:
                # A broken metrics hook must not turn a good call into an error.
                logger.warning(
                    "circuit breaker %r: listener %r raised in %s; ignored",
                    self.name,
                    listener,
                    hook,
                    exc_info=True,
                )

    def _changed(self, old: Record, new: Record | None) -> None:
        if new is not None and new.state is not old.state:
            if new.state is State.OPEN:
                logger.warning("circuit breaker %r opened", self.name)
            if self._listeners:
                self._notify("state_change", old.state, new.state)

    # ------------------------------------------------------------------ backend health

    def _store_unavailable(self, exc: ServiceUnavailable) -> None:
        self._recheck_at = self._clock() + self.recheck_interval
        self._fresh_until = 0.0
        with self._incident_lock:  # once per incident, even with many threads failing
            if self._incident:
                return
            self._incident = True
        logger.warning(
            "circuit breaker %r: backend unavailable (%s); %s until it answers again",
            self.name,
            exc.detail,
            "using in-process state" if self.fail_open else "refusing calls",
        )

    def _store_recovered(self) -> None:
        with self._incident_lock:
            if not self._incident:
                return
            self._incident = False
        logger.warning("circuit breaker %r: backend available again", self.name)

    def _seen(self, old: Record, new: Record | None) -> None:
        # The in-process fallback starts from the last shared state seen, so an outage
        # neither closes an open breaker nor forgets counted failures.
        self._local.record = old if new is None else new
        if self._cache_ttl:
            self._fresh_until = self._clock() + self._cache_ttl
        if self._incident:
            self._store_recovered()

    def _skip_shared(self) -> bool:
        """True while a backend incident lasts and the next recheck is not due."""
        if not self._incident:
            return False
        now = self._clock()
        if now < self._recheck_at:
            return True
        # This caller probes the backend; the others keep the fallback meanwhile.
        self._recheck_at = now + self.recheck_interval
        return False

    def _fallback(self) -> LocalStore:
        if self.fail_open:
            return self._local
        retry = max(1.0, self._recheck_at - self._clock())
        self._notify("rejected", retry)
        raise CircuitOpenError(
            "The circuit breaker's state is unavailable; the call was refused.",
            retry_after=retry,
        )

    # ------------------------------------------------------------------ admission

    def _admitted(
        self, store: LocalStore | SharedStore, old: Record, new: Record | None, adm: Admission
    ) -> _Token:
        self._changed(old, new)
        if not adm.allowed:
            if self._listeners:
                self._notify("rejected", adm.retry_after)
            raise CircuitOpenError(retry_after=adm.retry_after)
        return store, adm.gen, adm.trial, old.failures

    def _admit_local(self, store: LocalStore) -> _Token:
        rec = store.record
        if rec.state is _CLOSED:
            return store, rec.gen, False, rec.failures
        return self._admitted(store, *store.apply(self._admit_fn))

    def _admit(self) -> _Token:
        shared = self._shared
        if shared is None or self._skip_shared():
            store = self._local if shared is None else self._fallback()
            rec = store.record
            if rec.state is _CLOSED:
                return store, rec.gen, False, rec.failures
            return self._admitted(store, *store.apply(self._admit_fn))
        if self._cache_ttl:
            rec = self._local.record
            if rec.state is _CLOSED and self._clock() < self._fresh_until:
                return shared, rec.gen, False, rec.failures
        try:
            result = shared.apply(self._admit_fn)
        except ServiceUnavailable as exc:
            self._store_unavailable(exc)
            return self._admit_local(self._fallback())
        self._seen(result[0], result[1])
        return self._admitted(shared, *result)

    async def _aadmit(self) -> _Token:
        shared = self._shared
        if shared is None or self._skip_shared():
            return self._admit_local(self._local if shared is None else self._fallback())
        if self._cache_ttl:
            rec = self._local.record
            if rec.state is _CLOSED and self._clock() < self._fresh_until:
                return shared, rec.gen, False, rec.failures
        try:
            result = await shared.aapply(self._admit_fn)
        except ServiceUnavailable as exc:
            self._store_unavailable(exc)
            return self._admit_local(self._fallback())
        self._seen(result[0], result[1])
        return self._admitted(shared, *result)

    # ------------------------------------------------------------------ outcomes

    def _classify(self, exc: BaseException | None) -> int:
        if exc is None:
            return _SUCCESS
        if not isinstance(exc, Exception):
            # CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit: the call
            # was stopped from outside; it says nothing about the dependency.
            return _NEUTRAL
        if isinstance(exc, self._exclude_types):
            return _SUCCESS
        for predicate in self._exclude_predicates:
            try:
                if predicate(exc):
                    return _SUCCESS
            except Exception:
                logger.warning(
                    "circuit breaker %r: exclude predicate raised; counting a failure",
                    self.name,
                    exc_info=True,
                )
        return _FAILURE

    def _needs_write(self, token: _Token, kind: int) -> bool:
        store, gen, trial, failures = token
        if trial or kind == _FAILURE:
            return True
        if kind == _NEUTRAL:
            return False
        # A success in the closed state changes nothing unless consecutive failures
        # were counted: the common path costs no write (and on Redis no round trip).
        if store is self._local:
            rec = self._local.record
            return rec.gen == gen and rec.failures > 0 and self.policy.failure_window is None
        return failures > 0 and self.policy.failure_window is None

    def _transition(
        self, kind: int, token: _Token
    ) -> Callable[[Record, float], tuple[Record | None, None]]:
        _, gen, trial, _ = token
        policy = self.policy
        step = on_success if kind == _SUCCESS else on_failure if kind == _FAILURE else on_neutral
        return lambda rec, now: step(rec, now, policy, gen, trial)

    def _report(self, kind: int, exc: BaseException | None) -> None:
        if not self._listeners:
            return
        if kind == _SUCCESS:
            self._notify("success")
        elif kind == _FAILURE:
            assert exc is not None
            self._notify("failure", exc)

    def _finish(self, token: _Token, exc: BaseException | None) -> None:
        kind = self._classify(exc)
        if self._needs_write(token, kind):
            store = token[0]
            try:
                old, new, _ = store.apply(self._transition(kind, token))
            except ServiceUnavailable as err:
                # The outcome is lost with the backend; the caller's result is not.
                self._store_unavailable(err)
            else:
                if store is not self._local:
                    self._seen(old, new)
                self._changed(old, new)
        self._report(kind, exc)

    async def _afinish(self, token: _Token, exc: BaseException | None) -> None:
        kind = self._classify(exc)
        if self._needs_write(token, kind):
            store = token[0]
            try:
                old, new, _ = await store.aapply(self._transition(kind, token))
            except ServiceUnavailable as err:
                self._store_unavailable(err)
            else:
                if store is not self._local:
                    self._seen(old, new)
                self._changed(old, new)
        self._report(kind, exc)

    # ------------------------------------------------------------------ public API

    @overload
    def __call__(
        self, func: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...
    @overload
    def __call__(self, func: Callable[P, R]) -> Callable[P, R]: ...
    def __call__(self, func: Callable[P, Any]) -> Callable[P, Any]:
        """Protect ``func`` (sync or async); the wrapper keeps its signature.

        Generator functions are refused: the breaker would only see the generator being
        created. Use ``with breaker:`` / ``async with breaker:`` inside them instead.
        """
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise TypeError(
                "a circuit breaker cannot decorate a generator function; "
                "use `with breaker:` or `async with breaker:` inside it"
            )
        if inspect.iscoroutinefunction(func):
            acall = self.acall

            @functools.wraps(func)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await acall(func, *args, **kwargs)

            return async_wrapper

        call = self.call

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            return call(func, *args, **kwargs)

        return wrapper

    def call(self, func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``func(*args, **kwargs)`` through the breaker."""
        token = self._admit()
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            self._finish(token, exc)
            raise
        # Inlined success check: a closed-state success that saw no counted failures,
        # by a call that was no trial, with no listener to tell, changes nothing.
        if token[2] or token[3] or self._listeners:
            self._finish(token, None)
        return result

    async def acall(self, func: Callable[P, Awaitable[R]], *args: P.args, **kwargs: P.kwargs) -> R:
        """Await ``func(*args, **kwargs)`` through the breaker."""
        token = await self._aadmit()
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            await self._afinish(token, exc)
            raise
        if token[2] or token[3] or self._listeners:
            await self._afinish(token, None)
        return result

    def calling(self) -> _Guard:
        """A context manager for one protected block, sync or async."""
        return _Guard(self)

    # The tokens of open blocks live in a context variable, not on the breaker: threads
    # and tasks using one breaker at once each see only their own (nested) blocks.

    def __enter__(self) -> CircuitBreaker:
        token = self._admit()
        self._tokens.set((*self._tokens.get(), token))
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        tokens = self._tokens.get()
        self._tokens.set(tokens[:-1])
        token = tokens[-1]
        if e is not None or token[2] or token[3] or self._listeners:
            self._finish(token, e)

    async def __aenter__(self) -> CircuitBreaker:
        token = await self._aadmit()
        self._tokens.set((*self._tokens.get(), token))
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        tokens = self._tokens.get()
        self._tokens.set(tokens[:-1])
        token = tokens[-1]
        if e is not None or token[2] or token[3] or self._listeners:
            await self._afinish(token, e)

    # ------------------------------------------------------------------ state

    def _effective(self, rec: Record) -> State:
        if rec.state is State.OPEN and self._clock() >= rec.until:
            return State.HALF_OPEN
        return rec.state

    def _read_record(self) -> Record:
        if self._shared is None or self._skip_shared():
            return self._local.record
        try:
            rec = self._shared.read()
        except ServiceUnavailable as exc:
            self._store_unavailable(exc)
            return self._local.record
        self._seen(rec, None)
        return rec

    @property
    def state(self) -> State:
        """The state a call would meet now (open turns half-open once its time is up).

        On a shared backend this is one blocking read; use :meth:`astate` in async code.
        """
        return self._effective(self._read_record())

    async def astate(self) -> State:
        """:attr:`state`, read without blocking the event loop."""
        if self._shared is None or self._skip_shared():
            return self._effective(self._local.record)
        try:
            rec = await self._shared.aread()
        except ServiceUnavailable as exc:
            self._store_unavailable(exc)
            rec = self._local.record
        else:
            self._seen(rec, None)
        return self._effective(rec)

    @property
    def failure_count(self) -> int:
        """Failures counted in the closed state (consecutive, or in the current window)."""
        rec = self._read_record()
        return rec.failures if rec.state is State.CLOSED else 0

    def set_state(self, state: State | str) -> None:
        """Force ``state`` (``"open"``, ``"closed"``, ``"half_open"``) in every process."""
        target = State(state)
        store: LocalStore | SharedStore = self._shared or self._local
        policy = self.policy
        old, new, _ = store.apply(lambda rec, now: force(rec, now, policy, target))
        self._changed(old, new)

    async def aset_state(self, state: State | str) -> None:
        """:meth:`set_state` without blocking the event loop."""
        target = State(state)
        store: LocalStore | SharedStore = self._shared or self._local
        policy = self.policy
        old, new, _ = await store.aapply(lambda rec, now: force(rec, now, policy, target))
        self._changed(old, new)

    def open(self) -> None:
        """Open the breaker now (for ``reset_timeout`` seconds)."""
        self.set_state(State.OPEN)

    def close(self) -> None:
        """Close the breaker now and forget counted failures."""
        self.set_state(State.CLOSED)

    def half_open(self) -> None:
        """Put the breaker in half-open now: the next calls are trials."""
        self.set_state(State.HALF_OPEN)
