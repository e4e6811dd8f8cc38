"""The embedded executor: asyncio tasks for async functions, a bounded thread pool for sync.

Async tasks enqueued from a running event loop run on that loop (so they can use the
application's loop-bound clients); enqueued from plain threads, they run on one
private loop thread started on first use. Nothing survives the process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections import OrderedDict
from typing import Any

from gennet_toolkit.exceptions import ConfigurationError
from gennet_toolkit.task_queue._base import Task, TaskStatus, check_result
from gennet_toolkit.task_queue._errors import TaskError, TaskNotFound
from gennet_toolkit.task_queue._exec import (
    Outcome,
    describe_exception,
    run_attempts_async,
    run_attempts_sync,
    task_context,
)

__all__ = ["InProcessBackend"]

# Finished records kept for ``TaskQueue.result(id)`` lookups; older ones are dropped.
_KEEP = 10_000


class _Record:
    __slots__ = ("future", "job", "loop_thread", "status")

    def __init__(self) -> None:
        self.status = TaskStatus.QUEUED
        self.future: concurrent.futures.Future[Outcome] = concurrent.futures.Future()
        self.loop_thread: int | None = None
        self.job: asyncio.Task[None] | None = None

    def retrying(self, attempt: int, exc: BaseException, delay: float) -> None:
        self.status = TaskStatus.RETRYING

    def finish(self, outcome: Outcome) -> None:
        self.status = TaskStatus.SUCCEEDED if outcome.ok else TaskStatus.FAILED
        self.future.set_result(outcome)

    # ---------------------------------------------------------------- Handle

    def wait(self, timeout: float | None) -> Outcome | None:
        if self.loop_thread == threading.get_ident() and not self.future.done():
            raise TaskError(
                "result.get() inside the event loop running the task would deadlock; "
                "use await result.aget()"
            )
        try:
            return self.future.result(timeout)
        except concurrent.futures.TimeoutError:
            return None

    async def await_(self, limit: float | None) -> Outcome | None:
        if self.future.done():
            return self.future.result()
        job = self.job
        # Same loop: await the task itself (shielded: a cancelled waiter must not
        # cancel the task); otherwise bridge the thread-safe future.
        waitable: asyncio.Future[Any] = (
            job
            if job is not None and job.get_loop() is asyncio.get_running_loop()
            else asyncio.wrap_future(self.future)
        )
        try:
            if limit is None:
                await asyncio.shield(waitable)
            else:
                await asyncio.wait_for(asyncio.shield(waitable), limit)
        except TimeoutError:
            return None
        return self.future.result()


class _RecordHandle:
    __slots__ = ("record",)

    def __init__(self, record: _Record) -> None:
        self.record = record

    def status(self) -> TaskStatus:
        return self.record.status

    def wait(self, timeout: float | None) -> Outcome | None:
        return self.record.wait(timeout)

    async def await_(self, limit: float | None) -> Outcome | None:
        return await self.record.await_(limit)


class InProcessBackend:
    """Runs tasks in this process; ``max_workers`` bounds the sync thread pool."""

    name = "inprocess"

    def __init__(self, *, max_workers: int | None = None) -> None:
        if max_workers is not None and max_workers < 1:
            raise ConfigurationError("max_workers must be >= 1")
        self.max_workers = max_workers or min(32, (os.cpu_count() or 1) + 4)
        self._lock = threading.Lock()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._records: OrderedDict[str, _Record] = OrderedDict()
        # Strong references: the event loop keeps only weak ones to its tasks.
        self._running: set[asyncio.Task[None]] = set()

    def register(self, task: Task[Any, Any, Any]) -> None:
        """Nothing to do: tasks run from the queue's own registry."""

    def _get_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    self.max_workers, thread_name_prefix="gennet-task"
                )
            return self._pool

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="gennet-task-loop", daemon=True
                )
                thread.start()
                self._loop, self._loop_thread = loop, thread
            return self._loop

    def _remember(self, task_id: str, record: _Record) -> None:
        with self._lock:
            self._records[task_id] = record
            while len(self._records) > _KEEP:
                self._records.popitem(last=False)

    @staticmethod
    def _run_sync(task: Task[Any, Any, Any], envelope: dict[str, Any], record: _Record) -> None:
        record.status = TaskStatus.STARTED
        try:
            with task_context(envelope):
                value = run_attempts_sync(
                    task.fn, envelope["args"], envelope["kwargs"], task.policy, record.retrying
                )
            record.finish(Outcome(ok=True, value=check_result(task.name, value)))
        except Exception as exc:
            record.finish(describe_exception(exc))

    @staticmethod
    async def _run_async(
        task: Task[Any, Any, Any], envelope: dict[str, Any], record: _Record
    ) -> None:
        record.status = TaskStatus.STARTED
        try:
            with task_context(envelope):
                value = await run_attempts_async(
                    task.fn, envelope["args"], envelope["kwargs"], task.policy, record.retrying
                )
            record.finish(Outcome(ok=True, value=check_result(task.name, value)))
        except Exception as exc:
            record.finish(describe_exception(exc))
        except asyncio.CancelledError as exc:
            record.finish(describe_exception(exc))
            raise

    def submit(
        self, task: Task[Any, Any, Any], envelope: dict[str, Any], task_id: str
    ) -> _RecordHandle:
        """Start the task now: on the caller's loop, the private loop, or the pool."""
        record = _Record()
        self._remember(task_id, record)
        if not task.is_async:
            self._get_pool().submit(self._run_sync, task, envelope, record)
            return _RecordHandle(record)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run_coroutine_threadsafe(
                self._run_async(task, envelope, record), self._get_loop()
            )
        else:
            record.loop_thread = threading.get_ident()
            job = loop.create_task(self._run_async(task, envelope, record))
            record.job = job
            self._running.add(job)
            job.add_done_callback(self._running.discard)
        return _RecordHandle(record)

    async def asubmit(
        self, task: Task[Any, Any, Any], envelope: dict[str, Any], task_id: str
    ) -> _RecordHandle:
        """Same as :meth:`submit`: starting a task never blocks."""
        return self.submit(task, envelope, task_id)

    def handle(self, task_id: str) -> _RecordHandle:
        """The handle of a task this process enqueued (the last 10,000 are kept)."""
        with self._lock:
            record = self._records.get(task_id)
        if record is None:
            raise TaskNotFound("no task with that id ran in this process (or it was forgotten)")
        return _RecordHandle(record)

    def worker(self, *, burst: bool, concurrency: int, loglevel: str) -> None:
        """The in-process executor has no separate worker."""
        raise ConfigurationError("the in-process executor runs tasks itself; it has no worker")

    def close(self) -> None:
        """Wait for running sync tasks, then stop the private loop thread."""
        with self._lock:
            pool, self._pool = self._pool, None
            loop, self._loop = self._loop, None
            thread, self._loop_thread = self._loop_thread, None
        if pool is not None:
            pool.shutdown(wait=True)
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            if not thread.is_alive():
                loop.close()
