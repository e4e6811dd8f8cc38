"""Tasks for tests/test_task_queue.py, importable by RQ and Celery worker processes.

``build(url, **options)`` registers the same functions on a queue; a worker process
gets its queue from ``GENNET_TASK_QUEUE_URL`` (and ``_NAME``, ``_KEY_PREFIX``,
``_RESULT_BACKEND``) when it imports this module, and ``celery -A`` finds
``celery_app`` here.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from gennet_toolkit._context import correlation_id_var
from gennet_toolkit.task_queue import TaskQueue

# Attempts per key, to make a task fail a given number of times (same process:
# retries run in the worker that received the task).
_attempts: dict[str, int] = {}


def add(a: int, b: int) -> int:
    return a + b


async def async_mul(a: float, b: float) -> float:
    await asyncio.sleep(0)
    return a * b


def whoami() -> str | None:
    return correlation_id_var.get()


async def async_whoami() -> str | None:
    await asyncio.sleep(0)
    return correlation_id_var.get()


def boom(secret: str) -> None:
    raise ValueError(f"the secret is {secret}")


def flaky(key: str, failures: int) -> int:
    _attempts[key] = _attempts.get(key, 0) + 1
    if _attempts[key] <= failures:
        raise ConnectionError("transient")
    return _attempts[key]


async def async_flaky(key: str, failures: int) -> int:
    _attempts[key] = _attempts.get(key, 0) + 1
    if _attempts[key] <= failures:
        raise ConnectionError("transient")
    return _attempts[key]


def sleepy(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


async def async_sleepy(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "woke"


def echo(value: Any) -> Any:
    return value


def bad_result() -> Any:
    return {1, 2}


def build(url: str, **options: Any) -> TaskQueue:
    """A queue with every test task registered under a stable name (``tq.<function>``)."""
    queue = TaskQueue.from_url(url, **options)
    for fn in (add, async_mul, whoami, async_whoami, boom, echo, bad_result):
        queue.task(name=f"tq.{fn.__name__}")(fn)
    for fn in (flaky, async_flaky):
        queue.task(name=f"tq.{fn.__name__}", retries=2, retry_backoff=0.01)(fn)
    queue.task(name="tq.flaky_once", retries=0)(flaky)
    queue.task(name="tq.flaky_slow", retries=1, retry_backoff=0.6)(flaky)
    for fn in (sleepy, async_sleepy):
        queue.task(name=f"tq.{fn.__name__}", timeout=0.3)(fn)
    return queue


queue: TaskQueue | None = None
celery_app: Any = None
if os.environ.get("GENNET_TASK_QUEUE_URL"):
    queue = build(
        os.environ["GENNET_TASK_QUEUE_URL"],
        queue=os.environ.get("GENNET_TASK_QUEUE_NAME", "gennet"),
        key_prefix=os.environ.get("GENNET_TASK_QUEUE_KEY_PREFIX") or None,
        result_backend=os.environ.get("GENNET_TASK_QUEUE_RESULT_BACKEND") or None,
    )
    if queue.backend_name == "celery":
        celery_app = queue.celery_app
