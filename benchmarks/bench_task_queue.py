"""task_queue: enqueue cost per task vs raw RQ and raw Celery, and the in-process executor.

Suites:

- ``task_queue-enqueue-rq``: one enqueue of ``add(1, 2)`` on local Redis, no worker
  running. Ours (``Task.enqueue``: JSON check, envelope with the correlation id) vs raw
  ``rq.Queue.enqueue`` with RQ's JSONSerializer (same payload) and with RQ's default
  pickle serializer.
- ``task_queue-enqueue-celery-redis`` / ``-amqp``: one enqueue on Celery with a Redis
  broker (and on RabbitMQ when it answers), results in Redis. Ours vs raw
  ``task.apply_async`` on a plain Celery app with the same broker and result backend
  (library defaults: the raw app subscribes to each task's result channel at send time,
  ours polls the result key instead).
- ``task_queue-inprocess-sync``: enqueue a no-op sync function and wait for its result:
  ours vs ``concurrent.futures.ThreadPoolExecutor.submit(...).result()``.
- ``task_queue-inprocess-async``: the same for a no-op coroutine: ours
  (``aenqueue`` + ``aget``) vs ``asyncio.create_task`` + ``await``.

Redis is ``REDIS_URL`` (default ``redis://127.0.0.1:6379/15``), RabbitMQ ``AMQP_URL``;
queues and keys are unique to the run and deleted at the end.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import socket
import uuid
from typing import Any
from urllib.parse import urlsplit

from benchmarks._harness import Suite
from gennet_toolkit.task_queue import TaskQueue

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
RUN = uuid.uuid4().hex[:8]
PREFIX = f"gnbench:{RUN}:"


def reachable(url: str, default_port: int) -> bool:
    """Whether something accepts TCP connections at ``url``'s host and port."""
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def add(a: int, b: int) -> int:
    return a + b


async def anoop() -> None:
    return None


def noop() -> None:
    return None


def _delete_prefix(url: str, pattern: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=pattern, count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
    finally:
        client.close()


def rq_suite() -> None:
    """Ours vs raw rq.Queue.enqueue (JSON and pickle), no worker."""
    import redis
    import rq
    from rq.serializers import JSONSerializer

    name = f"gnbench-rq-{RUN}"
    ours = TaskQueue.from_url("rq+" + REDIS_URL, queue=name)
    task = ours.task(name="bench.add")(add)
    conn = redis.Redis.from_url(REDIS_URL)
    raw_json = rq.Queue(name + "-json", connection=conn, serializer=JSONSerializer)
    raw_pickle = rq.Queue(name + "-pickle", connection=conn)
    suite = Suite("task_queue-enqueue-rq", description="one enqueue of add(1, 2), no worker")
    suite.add("ours", lambda: task.enqueue(1, 2))
    suite.add("rq-json", lambda: raw_json.enqueue("benchmarks.bench_task_queue.add", 1, 2))
    suite.add("rq-pickle", lambda: raw_pickle.enqueue("benchmarks.bench_task_queue.add", 1, 2))
    suite.compare("ours", "rq-json")
    suite.compare("ours", "rq-pickle")
    try:
        suite.run()
    finally:
        for queue in (ours.rq_queue, raw_json, raw_pickle):
            queue.empty()
            queue.delete(delete_jobs=True)
        ours.close()
        conn.close()
        _delete_prefix(REDIS_URL, f"*{name}*")


def celery_suite(kind: str, broker: str) -> None:
    """Ours vs raw apply_async on the same broker and Redis result backend."""
    from celery import Celery

    name = f"gnbench-celery-{kind}-{RUN}"
    options: dict[str, Any] = {"queue": name, "key_prefix": PREFIX, "result_backend": REDIS_URL}
    ours = TaskQueue.from_url("celery+" + broker, **options)
    task = ours.task(name="bench.add")(add)
    raw = Celery("raw", broker=broker, backend=REDIS_URL, set_as_current=False)
    raw.conf.update(
        task_default_queue=name + "-raw",
        broker_transport_options={"global_keyprefix": PREFIX},
        result_backend_transport_options={"global_keyprefix": PREFIX},
    )
    raw_add = raw.task(name="bench.add")(add)
    suite = Suite(f"task_queue-enqueue-celery-{kind}", description="one enqueue of add(1, 2)")
    suite.add("ours", lambda: task.enqueue(1, 2))
    suite.add("celery-apply_async", lambda: raw_add.apply_async((1, 2)))
    suite.compare("ours", "celery-apply_async")
    try:
        suite.run()
    finally:
        for app, queue in ((ours.celery_app, name), (raw, name + "-raw")):
            with contextlib.suppress(Exception), app.connection() as conn:
                conn.default_channel.queue_delete(queue)
        ours.close()
        raw.close()
        _delete_prefix(REDIS_URL, PREFIX + "*")


def inprocess_suites() -> None:
    """Ours vs ThreadPoolExecutor (sync) and vs asyncio.create_task (async)."""
    ours = TaskQueue("inprocess", max_workers=4)
    sync_task = ours.task(name="bench.noop")(noop)
    async_task = ours.task(name="bench.anoop")(anoop)
    pool = concurrent.futures.ThreadPoolExecutor(4)

    suite = Suite("task_queue-inprocess-sync", description="enqueue a no-op and wait for it")
    suite.add("ours", lambda: sync_task.enqueue().get())
    suite.add("ThreadPoolExecutor", lambda: pool.submit(noop).result())
    suite.compare("ours", "ThreadPoolExecutor")
    suite.run()

    async def ours_async() -> None:
        await (await async_task.aenqueue()).aget()

    async def raw_async() -> None:
        await asyncio.create_task(anoop())

    suite = Suite("task_queue-inprocess-async", description="enqueue a no-op coroutine, await it")
    suite.add("ours", ours_async)
    suite.add("asyncio.create_task", raw_async)
    suite.compare("ours", "asyncio.create_task")
    suite.run()
    pool.shutdown()
    ours.close()


def main() -> None:
    """Run the suites and write benchmarks/results/task_queue*.{json,md}."""
    inprocess_suites()
    if reachable(REDIS_URL, 6379):
        rq_suite()
        celery_suite("redis", REDIS_URL)
        if reachable(AMQP_URL, 5672):
            celery_suite("amqp", AMQP_URL)
    else:
        print("task_queue: Redis not reachable, broker suites skipped")
    asyncio.set_event_loop(None)


if __name__ == "__main__":
    main()
