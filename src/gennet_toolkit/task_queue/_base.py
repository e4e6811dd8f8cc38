"""TaskQueue, Task and TaskResult: one API over the in-process executor, RQ and Celery."""

from __future__ import annotations

import asyncio
import functools
import importlib
import importlib.util
import inspect
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from enum import StrEnum
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, overload
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from gennet_toolkit._env import env_bool, env_float, env_int, env_str
from gennet_toolkit.exceptions import ConfigurationError
from gennet_toolkit.task_queue._errors import TaskError, TaskFailed, TaskNotFound, TaskTimeout
from gennet_toolkit.task_queue._exec import (
    ENVELOPE_VERSION,
    Outcome,
    RetryHook,
    RetryPolicy,
    build_envelope,
    dumps,
    run_attempts_sync,
    task_context,
)

__all__ = ["Task", "TaskQueue", "TaskResult", "TaskStatus"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

#: Schemes ``TaskQueue.from_url`` understands, mapped to a backend name.
_SCHEMES = {
    "memory": "inprocess",
    "inprocess": "inprocess",
    "rq+redis": "rq",
    "rq+rediss": "rq",
    "rq+unix": "rq",
    "celery+redis": "celery",
    "celery+rediss": "celery",
    "celery+amqp": "celery",
    "celery+amqps": "celery",
    "celery+pyamqp": "celery",
}
_BACKENDS = ("inprocess", "rq", "celery")

# Tasks by name, for workers that receive a name (RQ): filled when a function is
# decorated, never at import of this module.
_REGISTRY: dict[str, Task[Any, Any, Any]] = {}
_REGISTRY_LOCK = threading.Lock()


class TaskStatus(StrEnum):
    """Where a task is: ``queued``, ``started``, ``retrying``, ``succeeded`` or ``failed``.

    ``retrying`` means an attempt failed and another one is waiting or running.
    """

    QUEUED = "queued"
    STARTED = "started"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def done(self) -> bool:
        """True for the final states (succeeded, failed)."""
        return self in (TaskStatus.SUCCEEDED, TaskStatus.FAILED)


class Handle(Protocol):
    """A backend's view of one submitted task."""

    def status(self) -> TaskStatus: ...

    def wait(self, timeout: float | None) -> Outcome | None:
        """The outcome, or None when ``timeout`` passed first."""
        ...

    async def await_(self, limit: float | None) -> Outcome | None: ...


class Backend(Protocol):
    """What a backend implements; see _inprocess.py, _rq.py and _celery.py."""

    name: str

    def register(self, task: Task[Any, Any, Any]) -> None: ...

    def submit(
        self, task: Task[Any, Any, Any], envelope: dict[str, Any], task_id: str
    ) -> Handle: ...

    async def asubmit(
        self, task: Task[Any, Any, Any], envelope: dict[str, Any], task_id: str
    ) -> Handle: ...

    def handle(self, task_id: str) -> Handle: ...

    def worker(self, *, burst: bool, concurrency: int, loglevel: str) -> None: ...

    def close(self) -> None: ...


class TaskResult(Generic[T]):
    """The uniform handle on an enqueued task: ``id``, ``status``, ``get()``, ``aget()``."""

    __slots__ = ("_debug", "_handle", "id", "task_name")

    def __init__(self, task_id: str, task_name: str, handle: Handle, *, debug: bool) -> None:
        self.id = task_id
        self.task_name = task_name
        self._handle = handle
        self._debug = debug

    def __repr__(self) -> str:
        return f"<TaskResult {self.task_name!r} id={self.id}>"

    @property
    def status(self) -> TaskStatus:
        """The current :class:`TaskStatus` (asks the backend each time)."""
        return self._handle.status()

    def ready(self) -> bool:
        """Whether the task has finished (succeeded or failed)."""
        return self.status.done

    def _unwrap(self, outcome: Outcome | None, timeout: float | None) -> T:
        if outcome is None:
            raise TaskTimeout(task_id=self.id, task_name=self.task_name, timeout=timeout or 0.0)
        if outcome.ok:
            value: T = outcome.value
            return value
        raise TaskFailed(
            task_id=self.id,
            task_name=self.task_name,
            exc_type=outcome.exc_type,
            message=outcome.message if self._debug else None,
            traceback=outcome.traceback if self._debug else None,
        )

    def get(self, timeout: float | None = None) -> T:
        """Block until the task finishes and return its value.

        Raises :class:`TaskFailed` (with the remote exception's type name) when the task
        failed, :class:`TaskTimeout` when ``timeout`` seconds passed first.
        """
        return self._unwrap(self._handle.wait(timeout), timeout)

    async def aget(self, timeout: float | None = None) -> T:  # noqa: ASYNC109 (mirrors get)
        """Await the task's value without blocking the event loop; same errors as :meth:`get`."""
        return self._unwrap(await self._handle.await_(timeout), timeout)


class Task(Generic[P, R, T]):
    """A function registered on a :class:`TaskQueue`.

    Calling it runs the function here and now, unchanged; :meth:`enqueue` and
    :meth:`aenqueue` send it to the queue. ``R`` is what a direct call returns,
    ``T`` the value a :class:`TaskResult` yields (the awaited value for async tasks).
    """

    def __init__(
        self, fn: Callable[P, R], *, queue: TaskQueue, name: str, policy: RetryPolicy
    ) -> None:
        self.fn = fn
        self.queue = queue
        self.name = name
        self.module: str = getattr(fn, "__module__", "") or ""
        self.policy = policy
        self.is_async = inspect.iscoroutinefunction(fn)
        functools.update_wrapper(self, fn)
        mark = getattr(inspect, "markcoroutinefunction", None)  # Python 3.12+
        if self.is_async and mark is not None:
            # So frameworks that check iscoroutinefunction(task) await a direct call.
            mark(self)

    def __repr__(self) -> str:
        return f"<Task {self.name!r} on {self.queue.backend_name}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> TaskResult[T]:
        """Send one run of this task to the queue; arguments must be JSON values."""
        return self.queue._submit(self, args, kwargs)

    async def aenqueue(self, *args: P.args, **kwargs: P.kwargs) -> TaskResult[T]:
        """:meth:`enqueue` for async code: never blocks the event loop on the broker."""
        return await self.queue._asubmit(self, args, kwargs)

    def run_envelope(self, envelope: Mapping[str, Any], on_retry: RetryHook | None = None) -> Any:
        """Run this task from a received envelope, in a worker (sync; async tasks get a loop)."""
        if (
            envelope.get("v") != ENVELOPE_VERSION
            or not isinstance(envelope.get("args"), list)
            or not isinstance(envelope.get("kwargs"), dict)
        ):
            raise TaskError(f"task {self.name!r} received a message it cannot read")
        with task_context(envelope):
            value = run_attempts_sync(
                self.fn, envelope.get("args", ()), envelope.get("kwargs", {}), self.policy, on_retry
            )
        return check_result(self.name, value)


def _origin(fn: Callable[..., Any]) -> tuple[str, str]:
    return getattr(fn, "__module__", ""), getattr(fn, "__qualname__", repr(fn))


def check_result(name: str, value: Any) -> Any:
    """``value`` after the JSON round trip every backend applies to results."""
    try:
        return json.loads(dumps(value, what="result"))
    except TaskError:
        raise TypeError(f"task {name!r} returned a value that is not JSON-serialisable") from None


def resolve_task(name: str, module: str | None) -> Task[Any, Any, Any]:
    """The task registered as ``name``, importing ``module`` first if needed (worker side)."""
    task = _REGISTRY.get(name)
    if task is None and module and module != "__main__":
        importlib.import_module(module)
        task = _REGISTRY.get(name)
    if task is None:
        raise TaskNotFound(
            f"no task registered as {name!r}; import the module that defines it in the worker"
        )
    return task


def _split_url(url: str) -> tuple[str, str, dict[str, str]]:
    """(backend name, URL for the backend, options taken from the query string)."""
    scheme, sep, _ = url.partition("://")
    backend = _SCHEMES.get(scheme.lower()) if sep else None
    if backend is None:
        known = ", ".join(f"{s}://" for s in _SCHEMES)
        raise ConfigurationError(f"unknown task queue URL scheme; use one of {known}")
    if backend == "inprocess":
        return backend, "", {}
    parts = urlsplit(url.split("+", 1)[1])
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in ("queue", "result_backend")}
    rest = [(k, v) for k, v in query if k not in ours]
    return backend, urlunsplit(parts._replace(query=urlencode(rest))), ours


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def detect_url(env: Mapping[str, str] | None = None) -> str:
    """The URL ``TaskQueue(backend="auto")`` uses when none is given (see the docs' order)."""
    env = os.environ if env is None else env
    explicit = (env.get("GENNET_TASK_QUEUE_URL") or "").strip()
    if explicit:
        return explicit
    celery_url = (env.get("CELERY_BROKER_URL") or "").strip()
    rq_url = (env.get("RQ_REDIS_URL") or "").strip()
    if celery_url and rq_url:
        raise ConfigurationError(
            "both CELERY_BROKER_URL and RQ_REDIS_URL are set; set GENNET_TASK_QUEUE_URL to choose"
        )
    if celery_url:
        return "celery+" + celery_url
    if rq_url:
        return "rq+" + rq_url
    redis_url = (env.get("REDIS_URL") or "").strip()
    if redis_url:
        has_rq = importlib.util.find_spec("rq") is not None
        has_celery = importlib.util.find_spec("celery") is not None
        if has_rq != has_celery:
            return ("rq+" if has_rq else "celery+") + redis_url
    return "inprocess://"


class TaskQueue:
    """Background tasks on the in-process executor, RQ or Celery, behind one API.

    ``TaskQueue()`` (``backend="auto"``) picks the backend from ``url`` or the
    environment (see :func:`detect_url`); ``TaskQueue.from_url("rq+redis://…")`` names
    it. Options: ``queue`` (queue name on the broker), ``result_backend`` (Celery),
    ``max_workers`` (threads of the in-process executor), ``connect_timeout`` (seconds
    before a down broker raises ServiceUnavailable), ``result_ttl`` (seconds results
    are kept), ``key_prefix`` (Celery on Redis: prefix of every key), ``debug`` (keep
    remote messages and tracebacks in :class:`TaskFailed`).
    """

    def __init__(
        self,
        backend: str = "auto",
        url: str | None = None,
        *,
        queue: str = "gennet",
        result_backend: str | None = None,
        max_workers: int | None = None,
        connect_timeout: float = 2.0,
        result_ttl: int = 86_400,
        key_prefix: str | None = None,
        debug: bool = False,
    ) -> None:
        if backend not in ("auto", "memory", *_BACKENDS):
            raise ConfigurationError(
                "backend must be 'auto', 'inprocess' (or 'memory'), 'rq' or 'celery'"
            )
        if connect_timeout <= 0 or result_ttl <= 0:
            raise ConfigurationError("connect_timeout and result_ttl must be positive")
        if not queue or not queue.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ConfigurationError("queue must be letters, digits, '-', '_' or '.'")
        if backend == "auto":
            url = url or detect_url()
            name, target, opts = _split_url(url)
        elif backend in ("inprocess", "memory"):
            name, target, opts = "inprocess", "", {}
        else:
            name = backend
            default = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
            target = url or default
            if "://" in target and target.split("://")[0].lower() in _SCHEMES:
                _, target, opts = _split_url(target)
            else:
                opts = {}
        self.backend_name: str = name
        self.queue_name: str = opts.get("queue", queue)
        self.debug = debug
        self._url = target
        self._tasks: dict[str, Task[Any, Any, Any]] = {}
        self._backend: Backend = self._make_backend(
            name,
            target,
            result_backend=opts.get("result_backend", result_backend),
            max_workers=max_workers,
            connect_timeout=connect_timeout,
            result_ttl=result_ttl,
            key_prefix=key_prefix,
        )

    def _make_backend(self, name: str, url: str, **opts: Any) -> Backend:
        if name == "inprocess":
            from gennet_toolkit.task_queue._inprocess import InProcessBackend

            return InProcessBackend(max_workers=opts["max_workers"])
        if name == "rq":
            from gennet_toolkit.task_queue._rq import RQBackend

            return RQBackend(
                url,
                queue_name=self.queue_name,
                connect_timeout=opts["connect_timeout"],
                result_ttl=opts["result_ttl"],
            )
        from gennet_toolkit.task_queue._celery import CeleryBackend

        return CeleryBackend(
            url,
            queue_name=self.queue_name,
            result_backend=opts["result_backend"],
            connect_timeout=opts["connect_timeout"],
            result_ttl=opts["result_ttl"],
            key_prefix=opts["key_prefix"],
        )

    @classmethod
    def from_url(cls, url: str, **options: Any) -> TaskQueue:
        """A queue for ``memory://``, ``inprocess://``, ``rq+redis://…`` or ``celery+…`` URLs.

        The query string may carry ``queue=`` and ``result_backend=`` (Celery).
        """
        return cls("auto", url, **options)

    @classmethod
    def from_env(cls, prefix: str = "GENNET_", **overrides: Any) -> TaskQueue:
        """Build from ``{prefix}TASK_QUEUE_URL``, ``_NAME``, ``_RESULT_BACKEND``,
        ``_MAX_WORKERS``, ``_CONNECT_TIMEOUT``, ``_RESULT_TTL``, ``_KEY_PREFIX``, ``_DEBUG``."""
        p = f"{prefix}TASK_QUEUE_"
        options: dict[str, Any] = {
            "queue": env_str(p + "NAME", "gennet"),
            "result_backend": env_str(p + "RESULT_BACKEND"),
            "max_workers": env_int(p + "MAX_WORKERS"),
            "connect_timeout": env_float(p + "CONNECT_TIMEOUT", 2.0),
            "result_ttl": env_int(p + "RESULT_TTL", 86_400),
            "key_prefix": env_str(p + "KEY_PREFIX"),
            "debug": env_bool(p + "DEBUG", False),
        }
        options.update(overrides)
        url = env_str(p + "URL") or (detect_url() if prefix == "GENNET_" else "inprocess://")
        return cls("auto", url, **options)

    def __repr__(self) -> str:
        where = f" {_redact(self._url)}" if self._url else ""
        return f"<TaskQueue {self.backend_name}{where} queue={self.queue_name!r}>"

    # ------------------------------------------------------------------ registration

    @overload
    def task(
        self, fn: Callable[P, Coroutine[Any, Any, T]], /
    ) -> Task[P, Coroutine[Any, Any, T], T]: ...
    @overload
    def task(self, fn: Callable[P, T], /) -> Task[P, T, T]: ...
    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        retries: int = 0,
        retry_backoff: float | Sequence[float] = 1.0,
        retry_backoff_max: float = 60.0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
        timeout: float | None = None,
    ) -> _TaskDecorator: ...
    def task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        retries: int = 0,
        retry_backoff: float | Sequence[float] = 1.0,
        retry_backoff_max: float = 60.0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
        timeout: float | None = None,
    ) -> Any:
        """Register a sync or async function as a task (``@queue.task`` or ``@queue.task(...)``).

        ``name`` defaults to ``"<module>.<qualname>"``; workers find tasks by that name,
        so define tasks at module level in a module the worker can import. ``retries``
        extra attempts follow a failure matching ``retry_on``, after ``retry_backoff``
        seconds (doubled each time, capped at ``retry_backoff_max``; or a list of
        delays). ``timeout`` bounds each attempt, in seconds.
        """
        if retries < 0:
            raise ConfigurationError("retries must be >= 0")
        if timeout is not None and timeout <= 0:
            raise ConfigurationError("timeout must be positive")
        backoff: float | tuple[float, ...]
        if isinstance(retry_backoff, int | float):
            backoff = float(retry_backoff)
            bad = backoff < 0
        else:
            backoff = tuple(float(d) for d in retry_backoff)
            bad = any(d < 0 for d in backoff)
        if bad:
            raise ConfigurationError("retry_backoff must not be negative")
        policy = RetryPolicy(
            retries=retries,
            backoff=backoff,
            backoff_max=retry_backoff_max,
            retry_on=retry_on if isinstance(retry_on, tuple) else (retry_on,),
            timeout=timeout,
        )

        def register(func: Callable[..., Any]) -> Task[Any, Any, Any]:
            if isinstance(func, Task):
                raise ConfigurationError(f"{func.name!r} is already a task")
            task_name = name or f"{func.__module__}.{func.__qualname__}"
            if "<locals>" in task_name and self.backend_name != "inprocess":
                raise ConfigurationError(
                    f"task {task_name!r} is defined inside a function; workers cannot import "
                    "it: define it at module level"
                )
            task: Task[Any, Any, Any] = Task(func, queue=self, name=task_name, policy=policy)
            with _REGISTRY_LOCK:
                known = _REGISTRY.get(task_name)
                if known is not None and _origin(known.fn) != _origin(func):
                    # A worker would run whichever came last: refuse the ambiguity.
                    raise ConfigurationError(
                        f"task name {task_name!r} is already used by another function"
                    )
                _REGISTRY[task_name] = task
            self._tasks[task_name] = task
            self._backend.register(task)
            return task

        return register if fn is None else register(fn)

    @property
    def tasks(self) -> Mapping[str, Task[Any, Any, Any]]:
        """The tasks registered on this queue, by name."""
        return dict(self._tasks)

    # ------------------------------------------------------------------ enqueueing

    def _lookup(
        self, fn_or_name: Task[Any, Any, Any] | Callable[..., Any] | str
    ) -> Task[Any, Any, Any]:
        if isinstance(fn_or_name, Task):
            return fn_or_name
        if isinstance(fn_or_name, str):
            task = self._tasks.get(fn_or_name)
            if task is None:
                raise TaskNotFound(f"no task named {fn_or_name!r} is registered on this queue")
            return task
        for task in self._tasks.values():
            if task.fn is fn_or_name:
                return task
        raise TaskNotFound("that function is not registered on this queue; decorate it first")

    def _prepare(
        self, task: Task[Any, Any, Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        return uuid.uuid4().hex, build_envelope(task.name, task.module, args, kwargs)

    def _submit(
        self, task: Task[Any, Any, Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> TaskResult[Any]:
        task_id, envelope = self._prepare(task, args, kwargs)
        handle = self._backend.submit(task, envelope, task_id)
        return TaskResult(task_id, task.name, handle, debug=self.debug)

    async def _asubmit(
        self, task: Task[Any, Any, Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> TaskResult[Any]:
        task_id, envelope = self._prepare(task, args, kwargs)
        handle = await self._backend.asubmit(task, envelope, task_id)
        return TaskResult(task_id, task.name, handle, debug=self.debug)

    def enqueue(
        self,
        fn_or_name: Task[Any, Any, Any] | Callable[..., Any] | str,
        /,
        *args: Any,
        **kwargs: Any,
    ) -> TaskResult[Any]:
        """Enqueue a registered task (the task, its function or its name) with JSON arguments.

        Raises :class:`TaskArgumentsError` for non-JSON arguments (nothing is sent) and
        :class:`~gennet_toolkit.exceptions.ServiceUnavailable` when the broker is down.
        """
        return self._submit(self._lookup(fn_or_name), args, kwargs)

    async def aenqueue(
        self,
        fn_or_name: Task[Any, Any, Any] | Callable[..., Any] | str,
        /,
        *args: Any,
        **kwargs: Any,
    ) -> TaskResult[Any]:
        """:meth:`enqueue` for async code (broker I/O runs off the event loop)."""
        return await self._asubmit(self._lookup(fn_or_name), args, kwargs)

    def result(self, task_id: str, task_name: str = "") -> TaskResult[Any]:
        """A :class:`TaskResult` for a task enqueued earlier (possibly by another process)."""
        return TaskResult(task_id, task_name, self._backend.handle(task_id), debug=self.debug)

    # ------------------------------------------------------------------ workers

    def worker(self, *, burst: bool = False, concurrency: int = 1, loglevel: str = "INFO") -> None:
        """Run a worker for this queue in this process (RQ or Celery); blocks.

        ``burst=True`` (RQ) stops when the queue is empty. The in-process executor
        needs no worker and raises :class:`ConfigurationError`.
        """
        self._backend.worker(burst=burst, concurrency=concurrency, loglevel=loglevel)

    @property
    def celery_app(self) -> Any:
        """The underlying ``celery.Celery`` app (Celery backend only), for ``celery -A``."""
        app = getattr(self._backend, "app", None)
        if app is None:
            raise ConfigurationError("celery_app exists only on a Celery task queue")
        return app

    @property
    def rq_queue(self) -> Any:
        """The underlying ``rq.Queue`` (RQ backend only)."""
        queue = getattr(self._backend, "queue", None)
        if queue is None:
            raise ConfigurationError("rq_queue exists only on an RQ task queue")
        return queue

    def close(self) -> None:
        """Release connections and threads (the in-process executor waits for running tasks)."""
        self._backend.close()


class _TaskDecorator(Protocol):
    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, T]], /
    ) -> Task[P, Coroutine[Any, Any, T], T]: ...
    @overload
    def __call__(self, fn: Callable[P, T], /) -> Task[P, T, T]: ...


def poll_until(
    probe: Callable[[], Outcome | None], timeout: float | None, *, cap: float = 0.1
) -> Outcome | None:
    """Call ``probe`` with growing pauses until it returns an outcome or ``timeout`` passes."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = 0.002
    while True:
        outcome = probe()
        if outcome is not None:
            return outcome
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(pause, left))
        else:
            time.sleep(pause)
        pause = min(pause * 2, cap)


async def to_thread(fn: Callable[..., T], *args: Any) -> T:
    """``asyncio.to_thread`` (kept here so backends share one import)."""
    return await asyncio.to_thread(fn, *args)
