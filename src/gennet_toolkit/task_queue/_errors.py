"""The errors the task queue raises on purpose, all in the GenNetError family."""

from __future__ import annotations

from gennet_toolkit.exceptions import GenNetError

__all__ = ["TaskArgumentsError", "TaskError", "TaskFailed", "TaskNotFound", "TaskTimeout"]


class TaskError(GenNetError):
    """Base of the task queue's own errors (500)."""

    code = "task_error"
    default_detail = "A background task could not be run."


class TaskArgumentsError(TaskError, TypeError):
    """Task arguments are not JSON-serialisable; raised at enqueue, nothing was sent."""

    code = "task_arguments_not_json"
    default_detail = "Task arguments must be JSON-serialisable."


class TaskNotFound(TaskError, LookupError):
    """No task is registered under the name that was enqueued or received."""

    code = "task_not_found"
    default_detail = "No task is registered under that name."


class TaskFailed(TaskError):
    """The task raised (after its retries); carries the remote exception's type name.

    ``exc_type`` is the remote exception's class name (``"ValueError"``); its message
    and traceback are kept only when the queue runs with ``debug=True``, since they
    may hold data the caller should not see.
    """

    code = "task_failed"
    default_detail = "A background task failed."

    def __init__(
        self,
        *,
        task_id: str,
        task_name: str,
        exc_type: str,
        message: str | None = None,
        traceback: str | None = None,
    ) -> None:
        detail = f"Task {task_name!r} ({task_id}) failed with {exc_type}"
        detail += f": {message}" if message else "."
        super().__init__(detail)
        self.task_id = task_id
        self.task_name = task_name
        self.exc_type = exc_type
        self.remote_message = message
        self.remote_traceback = traceback


class TaskTimeout(TaskError, TimeoutError):
    """``TaskResult.get(timeout)`` gave up waiting (504); the task itself may still run."""

    status_code = 504
    code = "task_timeout"
    default_detail = "A background task did not finish in time."

    def __init__(self, *, task_id: str, task_name: str, timeout: float) -> None:
        super().__init__(f"Task {task_name!r} ({task_id}) did not finish within {timeout:g} s.")
        self.task_id = task_id
        self.task_name = task_name
        self.timeout = timeout
