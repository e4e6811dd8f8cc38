"""Background tasks behind one API: in-process executor, RQ or Celery.

    queue = TaskQueue.from_url("rq+redis://127.0.0.1:6379/0")   # or TaskQueue()

    @queue.task(retries=3, retry_backoff=0.5, timeout=30)
    def score_network(network_id: int) -> dict[str, float]: ...

    result = score_network.enqueue(42)        # JSON arguments only
    result.status                             # queued / started / retrying / succeeded / failed
    result.get(timeout=10)                    # value, TaskFailed or TaskTimeout

The correlation id of the enqueuing request is set inside the task while it runs.
Workers: ``python -m gennet_toolkit.task_queue worker myapp.tasks:queue`` (or the
``rq`` / ``celery`` commands in docs/task_queue.md).
"""

from __future__ import annotations

from gennet_toolkit.task_queue._base import Task, TaskQueue, TaskResult, TaskStatus, detect_url
from gennet_toolkit.task_queue._errors import (
    TaskArgumentsError,
    TaskError,
    TaskFailed,
    TaskNotFound,
    TaskTimeout,
)

__all__ = [
    "Task",
    "TaskArgumentsError",
    "TaskError",
    "TaskFailed",
    "TaskNotFound",
    "TaskQueue",
    "TaskResult",
    "TaskStatus",
    "TaskTimeout",
    "detect_url",
]
