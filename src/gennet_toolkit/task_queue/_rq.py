"""RQ backend: one generic job function runs any registered task from its JSON envelope.

Jobs are enqueued by the dotted path of :func:`run_job` with RQ's JSONSerializer, so
no pickle crosses Redis; the worker imports the task's module by the name carried in
the envelope. Workers must use the same serializer (``rq worker -S json``).
"""

from __future__ import annotations

import json
from typing import Any

from gennet_toolkit._optional import require
from gennet_toolkit.exceptions import ServiceUnavailable
from gennet_toolkit.task_queue._base import (
    Task,
    TaskStatus,
    poll_until,
    resolve_task,
    to_thread,
)
from gennet_toolkit.task_queue._errors import TaskNotFound
from gennet_toolkit.task_queue._exec import Outcome

__all__ = ["RQBackend", "run_job"]

_FEATURE = "gennet_toolkit.task_queue (RQ)"
JOB_FUNCTION = "gennet_toolkit.task_queue._rq.run_job"
_DOWN = "The task broker (Redis, for RQ) is unreachable."

_STATUS = {
    "queued": TaskStatus.QUEUED,
    "created": TaskStatus.QUEUED,
    "deferred": TaskStatus.QUEUED,
    "scheduled": TaskStatus.QUEUED,
    "rate_limited": TaskStatus.QUEUED,
    "ready_to_enqueue": TaskStatus.QUEUED,
    "started": TaskStatus.STARTED,
    "finished": TaskStatus.SUCCEEDED,
    "failed": TaskStatus.FAILED,
    "stopped": TaskStatus.FAILED,
    "canceled": TaskStatus.FAILED,
}


def run_job(envelope: dict[str, Any]) -> Any:
    """The function every RQ job calls (in the worker): run the named task."""
    rq = require("rq", extra="rq", feature=_FEATURE)
    job = rq.get_current_job()
    task = resolve_task(str(envelope.get("task")), envelope.get("module"))

    def on_retry(attempt: int, exc: BaseException, delay: float) -> None:
        if job is not None:
            job.meta["gennet_status"] = "retrying"
            job.meta["gennet_attempt"] = attempt + 1
            job.save_meta()

    try:
        return task.run_envelope(envelope, on_retry)
    except Exception as exc:
        if job is not None:
            job.meta["gennet_error"] = {"type": type(exc).__name__, "message": str(exc)}
            job.save_meta()
        raise


class _RQHandle:
    __slots__ = ("backend", "task_id")

    def __init__(self, backend: RQBackend, task_id: str) -> None:
        self.backend = backend
        self.task_id = task_id

    def _fields(self) -> tuple[str | None, dict[str, Any]]:
        redis = self.backend.redis
        try:
            status, meta = self.backend.conn.hmget(f"rq:job:{self.task_id}", "status", "meta")
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise ServiceUnavailable(_DOWN) from exc
        decoded: dict[str, Any] = json.loads(meta) if meta else {}
        return (status.decode() if status else None), decoded

    def status(self) -> TaskStatus:
        raw, meta = self._fields()
        if raw is None:
            raise TaskNotFound("no RQ job with that id (never enqueued, or its result expired)")
        mapped = _STATUS.get(raw, TaskStatus.QUEUED)
        if mapped is TaskStatus.STARTED and meta.get("gennet_status") == "retrying":
            return TaskStatus.RETRYING
        return mapped

    def _probe(self) -> Outcome | None:
        raw, meta = self._fields()
        if raw is None:
            raise TaskNotFound("no RQ job with that id (never enqueued, or its result expired)")
        state = _STATUS.get(raw, TaskStatus.QUEUED)
        if state is TaskStatus.SUCCEEDED:
            latest = self._job().latest_result()
            return Outcome(ok=True, value=None if latest is None else latest.return_value)
        if state is not TaskStatus.FAILED:
            return None
        latest = self._job().latest_result()
        info = (None if latest is None else latest.exc_string) or ""
        error = meta.get("gennet_error")
        if isinstance(error, dict):
            return Outcome(
                ok=False,
                exc_type=str(error.get("type")),
                message=error.get("message"),
                traceback=info or None,
            )
        # Killed by RQ itself (job timeout, stop, cancel): take the type from its text.
        last = info.strip().splitlines()[-1] if info.strip() else raw
        return Outcome(
            ok=False, exc_type=last.split(":", 1)[0].rsplit(".", 1)[-1] or raw, traceback=info
        )

    def _job(self) -> Any:
        try:
            return self.backend.rq.job.Job.fetch(
                self.task_id, connection=self.backend.conn, serializer=self.backend.serializer
            )
        except (self.backend.redis.ConnectionError, self.backend.redis.TimeoutError) as exc:
            raise ServiceUnavailable(_DOWN) from exc

    def wait(self, timeout: float | None) -> Outcome | None:
        return poll_until(self._probe, timeout)

    async def await_(self, limit: float | None) -> Outcome | None:
        return await to_thread(self.wait, limit)


class RQBackend:
    """Enqueues on one ``rq.Queue`` with JSON serialisation and bounded connect timeouts."""

    name = "rq"

    def __init__(
        self, url: str, *, queue_name: str, connect_timeout: float, result_ttl: int
    ) -> None:
        self.rq = require("rq", extra="rq", feature=_FEATURE)
        require("rq.job", extra="rq", feature=_FEATURE)
        serializers = require("rq.serializers", extra="rq", feature=_FEATURE)
        self.redis = require("redis", extra="rq", feature=_FEATURE)
        retry_mod = require("redis.retry", extra="rq", feature=_FEATURE)
        backoff = require("redis.backoff", extra="rq", feature=_FEATURE)
        self.serializer = serializers.JSONSerializer
        # One quick retry, then ServiceUnavailable: redis-py's default retries with
        # backoff would turn a down broker into a multi-second stall per enqueue.
        self.conn = self.redis.Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=max(connect_timeout, 5.0),
            retry=retry_mod.Retry(backoff.NoBackoff(), 1),
        )
        self.queue = self.rq.Queue(queue_name, connection=self.conn, serializer=self.serializer)
        self.result_ttl = result_ttl

    def register(self, task: Task[Any, Any, Any]) -> None:
        """Nothing to do: the worker resolves tasks by name from the envelope."""

    def submit(
        self, task: Task[Any, Any, Any], envelope: dict[str, Any], task_id: str
    ) -> _RQHandle:
        """Enqueue one job; ServiceUnavailable (chained) when Redis does not answer."""
        budget = task.policy.budget()
        try:
            self.queue.enqueue_call(
                JOB_FUNCTION,
                args=(envelope,),
                # RQ's own hard limit, a little past the policy's worst case.
                timeout=None if budget is None else int(budget) + 5,
                result_ttl=self.result_ttl,
                failure_ttl=self.result_ttl,
                job_id=task_id,
                description=task.name,
            )
        except (self.redis.ConnectionError, self.redis.TimeoutError) as exc:
            raise ServiceUnavailable(_DOWN) from exc
        return _RQHandle(self, task_id)

    async def asubmit(
        self, task: Task[Any, Any, Any], envelope: dict[str, Any], task_id: str
    ) -> _RQHandle:
        """:meth:`submit` on a worker thread (RQ has no asyncio client)."""
        return await to_thread(self.submit, task, envelope, task_id)

    def handle(self, task_id: str) -> _RQHandle:
        """A handle for any job id on this Redis."""
        return _RQHandle(self, task_id)

    def worker(self, *, burst: bool, concurrency: int, loglevel: str) -> None:
        """Run an RQ worker (forking, one job at a time) on this queue."""
        worker = self.rq.Worker([self.queue], connection=self.conn, serializer=self.serializer)
        worker.work(burst=burst, logging_level=loglevel)

    def close(self) -> None:
        """Close the Redis connection pool."""
        self.conn.close()
