"""Celery backend: each registered task becomes a Celery task of the same name.

The app is configured for JSON only (``accept_content=["json"]``), tracks the
``started`` state, and bounds every broker and result-store connection attempt so a
down broker fails the enqueue quickly instead of hanging.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from gennet_toolkit._optional import require
from gennet_toolkit.exceptions import ServiceUnavailable
from gennet_toolkit.task_queue._base import Task, TaskStatus, poll_until, to_thread
from gennet_toolkit.task_queue._exec import Outcome

__all__ = ["CeleryBackend"]

_FEATURE = "gennet_toolkit.task_queue (Celery)"
_DOWN = "The task broker (Celery) is unreachable."

_STATUS = {
    "PENDING": TaskStatus.QUEUED,
    "RECEIVED": TaskStatus.QUEUED,
    "STARTED": TaskStatus.STARTED,
    "RETRY": TaskStatus.RETRYING,
    # Our own state while retrying inline: RETRY would make Celery read meta as an error.
    "RETRYING": TaskStatus.RETRYING,
    "SUCCESS": TaskStatus.SUCCEEDED,
    "FAILURE": TaskStatus.FAILED,
    "REVOKED": TaskStatus.FAILED,
    "REJECTED": TaskStatus.FAILED,
}


def _down_errors() -> tuple[type[BaseException], ...]:
    kombu_exc = require("kombu.exceptions", extra="celery", feature=_FEATURE)
    errors: list[type[BaseException]] = [OSError, kombu_exc.OperationalError, TimeoutError]
    try:
        redis_exc = require("redis.exceptions", extra="celery", feature=_FEATURE)
    except ImportError:
        pass
    else:
        errors += [redis_exc.ConnectionError, redis_exc.TimeoutError]
    return tuple(errors)


class _CeleryHandle:
    __slots__ = ("backend", "task_id")

    def __init__(self, backend: CeleryBackend, task_id: str) -> None:
        self.backend = backend
        self.task_id = task_id

    def _meta(self) -> dict[str, Any]:
        try:
            meta: dict[str, Any] = self.backend.app.backend.get_task_meta(self.task_id)
        except self.backend.down_errors as exc:
            raise ServiceUnavailable("The Celery result backend is unreachable.") from exc
        return meta

    def status(self) -> TaskStatus:
        return _STATUS.get(str(self._meta().get("status")), TaskStatus.QUEUED)

    def _probe(self) -> Outcome | None:
        meta = self._meta()
        state = _STATUS.get(str(meta.get("status")), TaskStatus.QUEUED)
        if not state.done:
            return None
        if state is TaskStatus.SUCCEEDED:
            return Outcome(ok=True, value=meta.get("result"))
        result = meta.get("result")
        exc_type, message = "TaskRevoked", None
        if isinstance(result, BaseException):
            exc_type, message = type(result).__name__, str(result) or None
        elif isinstance(result, dict):
            exc_type = str(result.get("exc_type", exc_type))
            raw = result.get("exc_message")
            message = " ".join(map(str, raw)) if isinstance(raw, list | tuple) else raw
        return Outcome(
            ok=False, exc_type=exc_type, message=message, traceback=meta.get("traceback")
        )

    def wait(self, timeout: float | None) -> Outcome | None:
        return poll_until(self._probe, timeout)

    async def await_(self, limit: float | None) -> Outcome | None:
        return await to_thread(self.wait, limit)


@functools.cache
def _polling_backend() -> type[Any]:
    redis_backend = require("celery.backends.redis", extra="celery", feature=_FEATURE)

    class PollingRedisBackend(redis_backend.RedisBackend):  # type: ignore[misc,name-defined]
        """Redis results without the per-task pub/sub subscription at send time.

        TaskResult polls the result key, so subscribing (which fails hard with a
        RuntimeError when Redis is down) buys nothing.
        """

        def on_task_call(self, producer: Any, task_id: str) -> None:
            return None

    return PollingRedisBackend


def __getattr__(name: str) -> Any:
    # Celery resolves the class from the result backend URL; it is built on first use
    # so that importing this module does not import celery.
    if name == "PollingRedisBackend":
        return _polling_backend()
    raise AttributeError(name)


class CeleryBackend:
    """A private ``celery.Celery`` app bound to one queue, JSON only."""

    name = "celery"

    def __init__(
        self,
        url: str,
        *,
        queue_name: str,
        result_backend: str | None,
        connect_timeout: float,
        result_ttl: int,
        key_prefix: str | None,
    ) -> None:
        celery = require("celery", extra="celery", feature=_FEATURE)
        self.down_errors = _down_errors()
        is_redis = url.split("://", 1)[0].lower() in ("redis", "rediss")
        backend_url = result_backend or (url if is_redis else "rpc://")
        if backend_url.split("://", 1)[0].lower() in ("redis", "rediss"):
            backend_url = f"{__name__}:PollingRedisBackend+{backend_url}"
        self.queue_name = queue_name
        self.app = celery.Celery(
            "gennet_toolkit", broker=url, backend=backend_url, set_as_current=False
        )
        quick = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
        # kombu's defaults retry a refused connection for seconds before giving up.
        transport: dict[str, Any] = {
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.2,
        }
        result_transport: dict[str, Any] = {"retry_policy": quick}
        if is_redis:
            transport.update(
                socket_connect_timeout=connect_timeout,
                socket_timeout=max(connect_timeout, 5.0),
            )
        if key_prefix:
            transport["global_keyprefix"] = key_prefix
            result_transport["global_keyprefix"] = key_prefix
        self.app.conf.update(
            task_serializer="json",
            result_serializer="json",
            accept_content=["json"],
            result_accept_content=["json"],
            task_default_queue=queue_name,
            task_track_started=True,
            result_expires=result_ttl,
            broker_connection_timeout=connect_timeout,
            broker_connection_retry_on_startup=True,
            broker_transport_options=transport,
            result_backend_transport_options=result_transport,
            redis_socket_connect_timeout=connect_timeout,
            redis_socket_timeout=max(connect_timeout, 5.0),
            redis_retry_on_timeout=False,
            task_publish_retry_policy=quick,
            worker_hijack_root_logger=False,
        )

    def register(self, task: Task[Any, Any, Any]) -> None:
        """Declare a Celery task named like ours that runs it from the envelope."""

        def run(celery_task: Any, envelope: dict[str, Any]) -> Any:
            def on_retry(attempt: int, exc: BaseException, delay: float) -> None:
                celery_task.update_state(state="RETRYING", meta={"attempt": attempt + 1})

            return task.run_envelope(envelope, on_retry)

        run.__name__ = task.name.rsplit(".", 1)[-1]
        run.__qualname__ = run.__name__
        run.__module__ = task.module or __name__
        budget = task.policy.budget()
        self.app.task(
            name=task.name,
            bind=True,
            serializer="json",
            # Enforced by the prefork pool only; the policy's per-attempt timeout
            # applies on every pool.
            time_limit=None if budget is None else budget + 5,
        )(run)

    def submit(
        self, task: Task[Any, Any, Any], envelope: dict[str, Any], task_id: str
    ) -> _CeleryHandle:
        """Publish one message; ServiceUnavailable (chained) when the broker is down."""
        try:
            self.app.send_task(task.name, args=(envelope,), task_id=task_id, queue=self.queue_name)
        except self.down_errors as exc:
            raise ServiceUnavailable(_DOWN) from exc
        return _CeleryHandle(self, task_id)

    async def asubmit(
        self, task: Task[Any, Any, Any], envelope: dict[str, Any], task_id: str
    ) -> _CeleryHandle:
        """:meth:`submit` on a worker thread (Celery has no asyncio client)."""
        return await asyncio.to_thread(self.submit, task, envelope, task_id)

    def handle(self, task_id: str) -> _CeleryHandle:
        """A handle for any task id in this app's result backend."""
        return _CeleryHandle(self, task_id)

    def worker(self, *, burst: bool, concurrency: int, loglevel: str) -> None:
        """Run a Celery worker for this queue (solo pool for 1, threads above)."""
        pool = "solo" if concurrency == 1 else "threads"
        self.app.worker_main(
            [
                "worker",
                f"--pool={pool}",
                f"--concurrency={concurrency}",
                f"--queues={self.queue_name}",
                f"--loglevel={loglevel}",
                "--without-gossip",
                "--without-mingle",
            ]
        )

    def close(self) -> None:
        """Close broker connections and the result backend's pool."""
        self.app.close()
