"""gennet_toolkit.task_queue: one contract over the in-process executor, RQ and Celery.

RQ and Celery run as real worker processes (``rq worker`` and ``celery -A … worker
--pool=solo``) started once per module; each uses its own queue name and key prefix,
and every key it wrote is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gennet_toolkit._context import correlation_id_var
from gennet_toolkit.exceptions import ConfigurationError, GenNetError, ServiceUnavailable
from gennet_toolkit.task_queue import (
    TaskArgumentsError,
    TaskError,
    TaskFailed,
    TaskNotFound,
    TaskQueue,
    TaskStatus,
    TaskTimeout,
    detect_url,
)
from tests import _task_queue_tasks as tasks
from tests.services import closed_port_url

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WAIT = 30.0  # generous upper bound for a result from a real worker on a busy machine


# --------------------------------------------------------------------------- workers


@dataclass
class Remote:
    """A client queue plus the worker process serving it."""

    name: str
    url: str
    options: dict[str, Any]
    process: subprocess.Popen[bytes]

    def client(self, **extra: Any) -> TaskQueue:
        return tasks.build(self.url, **{**self.options, **extra})


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    with log.open("wb") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)


def _wait_ready(remote: Remote, log: Path) -> None:
    queue = remote.client()
    try:
        result = queue.enqueue("tq.add", 1, 1)
        try:
            assert result.get(timeout=WAIT) == 2
        except TaskTimeout:
            pytest.fail(f"{remote.name} worker did not start:\n{log.read_text()[-3000:]}")
    finally:
        queue.close()


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 15) -> None:
    process.send_signal(sig)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def _delete_keys(redis_url: str, pattern: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _delete_rq_jobs(redis_url: str, queue_name: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(match="rq:job:*", count=1000):
            if client.type(key) == b"hash" and client.hget(key, "origin") == queue_name.encode():
                job_id = key.decode().rsplit(":", 1)[-1]
                client.delete(key, f"rq:results:{job_id}")
        # Worker records outlive a worker by their TTL; ours go now.
        for key in client.scan_iter(match="rq:worker:*", count=1000):
            if client.type(key) == b"hash" and client.hget(key, "queues") == queue_name.encode():
                client.delete(key)
                client.srem("rq:workers", key)
        client.srem("rq:queues", f"rq:queue:{queue_name}")
    finally:
        client.close()
    _delete_keys(redis_url, f"*{queue_name}*")


@pytest.fixture(scope="module")
def rq_remote(redis_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    name = f"gntest-rq-{uuid.uuid4().hex[:8]}"
    url = "rq+" + redis_server_url
    log = tmp_path_factory.mktemp("rq") / "worker.log"
    process = _start(
        [str(BIN / "rq"), "worker", "-u", redis_server_url, "-S", "json", "-q", name],
        {"GENNET_TASK_QUEUE_URL": url, "GENNET_TASK_QUEUE_NAME": name},
        log,
    )
    remote = Remote("rq", url, {"queue": name}, process)
    try:
        _wait_ready(remote, log)
        yield remote
    finally:
        _stop(process)
        _delete_rq_jobs(redis_server_url, name)


def _celery_remote(
    kind: str, broker: str, redis_url: str, tmp: pytest.TempPathFactory
) -> Iterator[Remote]:
    name = f"gntest-celery-{uuid.uuid4().hex[:8]}"
    prefix = f"gntest:{name}:"
    url = "celery+" + broker
    log = tmp.mktemp("celery") / "worker.log"
    env = {
        "GENNET_TASK_QUEUE_URL": url,
        "GENNET_TASK_QUEUE_NAME": name,
        "GENNET_TASK_QUEUE_KEY_PREFIX": prefix,
        "GENNET_TASK_QUEUE_RESULT_BACKEND": redis_url,
    }
    cmd = [
        str(BIN / "celery"),
        "-A",
        "tests._task_queue_tasks",
        "worker",
        "--pool=solo",
        "-c",
        "1",
        # A unique node name: its pidbox queue is exclusive on RabbitMQ, and a worker of
        # another test run (or one still closing) would otherwise hold celery@<host>.
        "-n",
        f"{name}@%h",
        "-Q",
        name,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-l",
        "WARNING",
    ]
    process = _start(cmd, env, log)
    options = {"queue": name, "key_prefix": prefix, "result_backend": redis_url}
    remote = Remote(kind, url, options, process)
    try:
        _wait_ready(remote, log)
        yield remote
    finally:
        # Idle by now, so a cold shutdown (SIGQUIT) loses nothing.
        # A Celery worker on RabbitMQ still takes ~10 s to close its connection.
        _stop(process, signal.SIGQUIT, grace=2)
        _delete_keys(redis_url, prefix + "*")
        if kind == "celery-amqp":
            queue = remote.client()
            with contextlib.suppress(Exception), queue.celery_app.connection() as conn:
                conn.default_channel.queue_delete(name)
            queue.close()


@pytest.fixture(scope="module")
def celery_redis_remote(
    redis_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Remote]:
    yield from _celery_remote("celery-redis", redis_server_url, redis_server_url, tmp_path_factory)


@pytest.fixture(scope="module")
def celery_amqp_remote(
    amqp_url: str, redis_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Remote]:
    yield from _celery_remote("celery-amqp", amqp_url, redis_server_url, tmp_path_factory)


BACKENDS = [
    pytest.param("inprocess", id="inprocess"),
    pytest.param("rq", id="rq", marks=pytest.mark.redis),
    pytest.param("celery-redis", id="celery-redis", marks=pytest.mark.redis),
    pytest.param("celery-amqp", id="celery-amqp", marks=[pytest.mark.rabbitmq, pytest.mark.redis]),
]
_REMOTE_FIXTURE = {
    "rq": "rq_remote",
    "celery-redis": "celery_redis_remote",
    "celery-amqp": "celery_amqp_remote",
}


@pytest.fixture(params=BACKENDS)
def queue(request: pytest.FixtureRequest) -> Iterator[TaskQueue]:
    """The same tasks on every backend; remote ones served by a real worker process."""
    if request.param == "inprocess":
        q = tasks.build("memory://", max_workers=4)
    else:
        q = request.getfixturevalue(_REMOTE_FIXTURE[request.param]).client()
    yield q
    q.close()


@pytest.fixture
def cid() -> Iterator[str]:
    value = f"req-{uuid.uuid4().hex[:12]}"
    token = correlation_id_var.set(value)
    yield value
    correlation_id_var.reset(token)


# --------------------------------------------------------------------------- the contract


def test_sync_task_result_and_status(queue: TaskQueue) -> None:
    result = queue.enqueue("tq.add", 2, 3)
    assert result.get(timeout=WAIT) == 5
    assert result.status is TaskStatus.SUCCEEDED
    assert result.ready()
    assert len(result.id) == 32


def test_async_task_runs_and_returns_its_awaited_value(queue: TaskQueue) -> None:
    assert queue.enqueue("tq.async_mul", 6, 7).get(timeout=WAIT) == 42


def test_correlation_id_is_set_inside_sync_and_async_tasks(queue: TaskQueue, cid: str) -> None:
    assert queue.enqueue("tq.whoami").get(timeout=WAIT) == cid
    assert queue.enqueue("tq.async_whoami").get(timeout=WAIT) == cid


def test_no_correlation_id_outside_a_request_is_none_inside(queue: TaskQueue) -> None:
    assert correlation_id_var.get() is None
    assert queue.enqueue("tq.whoami").get(timeout=WAIT) is None


def test_failure_names_the_remote_type_but_hides_message_and_traceback(queue: TaskQueue) -> None:
    result = queue.enqueue("tq.boom", "hunter2")
    with pytest.raises(TaskFailed) as info:
        result.get(timeout=WAIT)
    err = info.value
    assert err.exc_type == "ValueError"
    assert err.task_name == "tq.boom"
    assert err.task_id == result.id
    assert "hunter2" not in str(err)
    assert err.remote_message is None
    assert err.remote_traceback is None
    assert isinstance(err, GenNetError)
    assert result.status is TaskStatus.FAILED


def test_debug_queue_keeps_remote_message_and_traceback(queue: TaskQueue) -> None:
    # Only the client decides what it keeps: the same worker serves both.
    queue.debug = True
    with pytest.raises(TaskFailed) as info:
        queue.enqueue("tq.boom", "hunter2").get(timeout=WAIT)
    assert info.value.remote_message == "the secret is hunter2"
    assert "hunter2" in str(info.value)
    assert "Traceback" in (info.value.remote_traceback or "")
    assert "ValueError" in (info.value.remote_traceback or "")


def test_status_reports_started_then_retrying_while_the_task_runs(queue: TaskQueue) -> None:
    # Fails once, then waits 0.6 s before its second (successful) attempt.
    result = queue.enqueue("tq.flaky_slow", uuid.uuid4().hex, 1)
    seen: list[TaskStatus] = []
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        status = result.status
        if not seen or seen[-1] is not status:
            seen.append(status)
        if status.done:
            break
        time.sleep(0.01)
    assert TaskStatus.RETRYING in seen
    assert seen[-1] is TaskStatus.SUCCEEDED
    order = [TaskStatus.QUEUED, TaskStatus.STARTED, TaskStatus.RETRYING, TaskStatus.SUCCEEDED]
    assert [s for s in order if s in seen] == [s for s in seen if s in order]
    assert result.get(timeout=WAIT) == 2


def test_one_name_cannot_mean_two_functions() -> None:
    q = TaskQueue("inprocess")
    with pytest.raises(ConfigurationError):
        q.task(name="tq.add")(tasks.echo)
    q.task(name="tq.add")(tasks.add)  # the same function again is fine
    q.close()


def test_retries_until_success_in_one_worker(queue: TaskQueue) -> None:
    key = uuid.uuid4().hex
    # Fails twice, succeeds on the third attempt (retries=2).
    assert queue.enqueue("tq.flaky", key, 2).get(timeout=WAIT) == 3
    assert queue.enqueue("tq.async_flaky", key + "a", 2).get(timeout=WAIT) == 3


def test_retries_exhausted_reports_the_last_error(queue: TaskQueue) -> None:
    key = uuid.uuid4().hex
    with pytest.raises(TaskFailed) as info:
        queue.enqueue("tq.flaky", key, 5).get(timeout=WAIT)
    assert info.value.exc_type == "ConnectionError"
    with pytest.raises(TaskFailed):
        queue.enqueue("tq.flaky_once", key + "b", 1).get(timeout=WAIT)


def test_attempt_timeout_fails_the_task_with_timeout_error(queue: TaskQueue) -> None:
    for name in ("tq.sleepy", "tq.async_sleepy"):
        with pytest.raises(TaskFailed) as info:
            queue.enqueue(name, 1.5).get(timeout=WAIT)
        assert info.value.exc_type == "TimeoutError"


def test_get_timeout_raises_task_timeout_and_the_task_still_finishes(queue: TaskQueue) -> None:
    result = queue.enqueue("tq.sleepy", 0.25)
    with pytest.raises(TaskTimeout) as info:
        result.get(timeout=0.01)
    assert isinstance(info.value, TimeoutError)
    assert info.value.status_code == 504
    assert result.get(timeout=WAIT) == "woke"


def test_arguments_and_results_go_through_json(queue: TaskQueue) -> None:
    assert queue.enqueue("tq.echo", (1, 2)).get(timeout=WAIT) == [1, 2]
    payload = {"genes": ["lacZ", "lacY"], "weight": 0.5, "n": None}
    assert queue.enqueue("tq.echo", value=payload).get(timeout=WAIT) == payload


@pytest.mark.parametrize(
    ("args", "where"),
    [
        (({1, 2},), "[0]"),
        (({"a": object()},), "['a']"),
        (({3: "x"},), "key"),
        ((float("nan"),), "non-finite"),
        ((b"bytes",), "bytes"),
    ],
)
def test_non_json_arguments_are_refused_at_enqueue(
    args: tuple[Any, ...], where: str, request: pytest.FixtureRequest
) -> None:
    q = tasks.build("memory://")
    with pytest.raises(TaskArgumentsError) as info:
        q.enqueue("tq.echo", *args)
    assert where in str(info.value)
    assert "not JSON-serialisable" in str(info.value)
    q.close()


def test_non_json_arguments_never_reach_the_broker(queue: TaskQueue) -> None:
    with pytest.raises(TaskArgumentsError) as info:
        queue.enqueue("tq.echo", {"password": {"hunter2"}})
    assert "hunter2" not in str(info.value)
    assert isinstance(info.value, TypeError)


def test_non_json_result_fails_the_task(queue: TaskQueue) -> None:
    with pytest.raises(TaskFailed) as info:
        queue.enqueue("tq.bad_result").get(timeout=WAIT)
    assert info.value.exc_type == "TypeError"


@pytest.mark.anyio
async def test_aenqueue_and_aget(queue: TaskQueue, cid: str) -> None:
    result = await queue.aenqueue("tq.async_whoami")
    assert await result.aget(timeout=WAIT) == cid
    sync_result = await queue.tasks["tq.add"].aenqueue(4, 5)
    assert await sync_result.aget(timeout=WAIT) == 9
    with pytest.raises(TaskFailed):
        await (await queue.aenqueue("tq.boom", "x")).aget(timeout=WAIT)


def test_result_can_be_looked_up_by_id(queue: TaskQueue) -> None:
    first = queue.enqueue("tq.add", 20, 22)
    assert queue.result(first.id, "tq.add").get(timeout=WAIT) == 42


def test_enqueue_by_task_function_or_name(queue: TaskQueue) -> None:
    task = queue.tasks["tq.add"]
    assert task.enqueue(1, 2).get(timeout=WAIT) == 3
    assert queue.enqueue(task, 1, 3).get(timeout=WAIT) == 4
    assert queue.enqueue(tasks.add, 1, 4).get(timeout=WAIT) == 5
    with pytest.raises(TaskNotFound):
        queue.enqueue("tq.nope")
    with pytest.raises(TaskNotFound):
        queue.enqueue(test_enqueue_by_task_function_or_name)


# --------------------------------------------------------------------------- in-process specifics


def test_calling_a_task_runs_it_locally_and_keeps_the_signature() -> None:
    q = TaskQueue("inprocess")

    @q.task(retries=1)
    def scale(value: float, *, factor: float = 2.0) -> float:
        """Scale a value."""
        return value * factor

    @q.task
    async def ascale(value: float) -> float:
        return value * 3

    assert scale(2.0) == 4.0
    assert asyncio.run(ascale(2.0)) == 6.0
    assert inspect.signature(scale) == inspect.signature(scale.fn)
    assert "factor: 'float' = 2.0" in str(inspect.signature(scale))
    assert scale.__doc__ == "Scale a value."
    assert scale.name.endswith("<locals>.scale")
    assert scale.enqueue(3.0, factor=3.0).get(timeout=WAIT) == 9.0
    q.close()


def test_status_moves_through_started_and_retrying_to_succeeded() -> None:
    q = TaskQueue("inprocess")
    gate = {"calls": 0}

    @q.task(retries=1, retry_backoff=0.2)
    def once_broken() -> str:
        gate["calls"] += 1
        if gate["calls"] == 1:
            raise ConnectionError("first call fails")
        return "ok"

    result = once_broken.enqueue()
    seen = set()
    deadline = time.monotonic() + WAIT
    while not result.ready() and time.monotonic() < deadline:
        seen.add(result.status)
        time.sleep(0.005)
    assert TaskStatus.RETRYING in seen
    assert result.get(timeout=WAIT) == "ok"
    assert result.status == "succeeded"
    q.close()


def test_explicit_backoff_list_is_used_per_attempt() -> None:
    q = TaskQueue("inprocess")
    calls: list[float] = []

    @q.task(retries=2, retry_backoff=[0.0, 0.05], retry_on=ConnectionError)
    def flaky() -> int:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ConnectionError
        return len(calls)

    assert flaky.enqueue().get(timeout=WAIT) == 3
    q.close()


def test_retry_on_limits_which_errors_are_retried() -> None:
    q = TaskQueue("inprocess")
    calls = []

    @q.task(retries=3, retry_backoff=0, retry_on=ConnectionError)
    def wrong() -> None:
        calls.append(1)
        raise KeyError("not transient")

    with pytest.raises(TaskFailed) as info:
        wrong.enqueue().get(timeout=WAIT)
    assert info.value.exc_type == "KeyError"
    assert len(calls) == 1
    q.close()


@pytest.mark.anyio
async def test_async_task_enqueued_in_a_loop_runs_on_that_loop() -> None:
    q = TaskQueue("inprocess")
    loop = asyncio.get_running_loop()

    @q.task
    async def which_loop() -> bool:
        return asyncio.get_running_loop() is loop

    result = which_loop.enqueue()
    with pytest.raises(TaskError) as info:
        result.get(timeout=1)  # would block the loop the task needs
    assert "aget" in str(info.value)
    assert await result.aget(timeout=WAIT) is True
    q.close()


def test_async_task_enqueued_from_a_thread_runs_on_a_private_loop() -> None:
    q = tasks.build("inprocess://")
    assert q.enqueue("tq.async_mul", 2, 2).get(timeout=WAIT) == 4
    q.close()


def test_sync_tasks_run_on_a_bounded_pool() -> None:
    import threading

    q = TaskQueue("inprocess", max_workers=2)
    names: set[str] = set()
    barrier = threading.Barrier(2, timeout=WAIT)

    @q.task
    def where() -> None:
        names.add(threading.current_thread().name)
        barrier.wait()

    results = [where.enqueue() for _ in range(4)]
    for r in results:
        r.get(timeout=WAIT)
    assert len(names) == 2
    assert all(n.startswith("gennet-task") for n in names)
    q.close()


def test_trace_context_travels_with_the_task() -> None:
    trace = pytest.importorskip("opentelemetry.trace")
    pytest.importorskip("opentelemetry.propagate")
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    tracer = sdk.TracerProvider().get_tracer("test")
    q = TaskQueue("inprocess")

    @q.task
    def trace_id() -> str:
        return format(trace.get_current_span().get_span_context().trace_id, "032x")

    with tracer.start_as_current_span("request") as span:
        expected = format(span.get_span_context().trace_id, "032x")
        result = trace_id.enqueue()
    assert result.get(timeout=WAIT) == expected
    q.close()


def test_result_of_unknown_id_is_not_found() -> None:
    q = TaskQueue("inprocess")
    with pytest.raises(TaskNotFound):
        q.result("0" * 32)
    q.close()


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "inprocess://"),
        ({"GENNET_TASK_QUEUE_URL": "rq+redis://h:1/0"}, "rq+redis://h:1/0"),
        ({"CELERY_BROKER_URL": "amqp://h//"}, "celery+amqp://h//"),
        ({"RQ_REDIS_URL": "redis://h/2"}, "rq+redis://h/2"),
        (
            {"GENNET_TASK_QUEUE_URL": "memory://", "CELERY_BROKER_URL": "amqp://h//"},
            "memory://",
        ),
    ],
)
def test_detection_order(env: dict[str, str], expected: str) -> None:
    assert detect_url(env) == expected


def test_detection_refuses_two_broker_settings() -> None:
    with pytest.raises(ConfigurationError):
        detect_url({"CELERY_BROKER_URL": "amqp://h//", "RQ_REDIS_URL": "redis://h"})


def test_detection_with_redis_url_needs_exactly_one_library_installed() -> None:
    # Both rq and celery are installed here: REDIS_URL alone is ambiguous.
    assert detect_url({"REDIS_URL": "redis://h/0"}) == "inprocess://"


def test_auto_backend_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENNET_TASK_QUEUE_URL", "memory://")
    assert TaskQueue().backend_name == "inprocess"
    monkeypatch.setenv("GENNET_TASK_QUEUE_URL", "celery+redis://127.0.0.1:1/0?queue=jobs")
    q = TaskQueue()
    assert (q.backend_name, q.queue_name) == ("celery", "jobs")
    q.close()


def test_from_env_reads_prefixed_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_TASK_QUEUE_URL", "rq+redis://127.0.0.1:1/0")
    monkeypatch.setenv("APP_TASK_QUEUE_NAME", "grn")
    monkeypatch.setenv("APP_TASK_QUEUE_DEBUG", "yes")
    q = TaskQueue.from_env(prefix="APP_")
    assert (q.backend_name, q.queue_name, q.debug) == ("rq", "grn", True)
    q.close()
    monkeypatch.setenv("APP_TASK_QUEUE_CONNECT_TIMEOUT", "soon")
    with pytest.raises(ConfigurationError) as info:
        TaskQueue.from_env(prefix="APP_")
    assert "soon" not in str(info.value)


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1/0", "amqp://h//", "kafka://h", "nonsense", "rq+amqp://h//"]
)
def test_unknown_or_ambiguous_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError):
        TaskQueue.from_url(url)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"backend": "kafka"},
        {"connect_timeout": 0},
        {"queue": "bad name!"},
        {"backend": "inprocess", "max_workers": 0},
    ],
)
def test_bad_options_are_configuration_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        TaskQueue(**kwargs)


def test_bad_task_options_are_configuration_errors() -> None:
    q = TaskQueue("inprocess")
    for opts in (
        {"retries": -1},
        {"timeout": 0},
        {"retry_backoff": -1},
        {"retry_backoff": [1, -1]},
    ):
        with pytest.raises(ConfigurationError):
            q.task(**opts)(tasks.add)  # type: ignore[call-overload]
    q.close()


def test_repr_hides_the_broker_password() -> None:
    q = TaskQueue.from_url("celery+amqp://guest:s3cret@127.0.0.1:1//")
    assert "s3cret" not in repr(q)
    assert "***" in repr(q)
    q.close()


def test_remote_task_must_be_importable_by_workers() -> None:
    q = TaskQueue.from_url("celery+redis://127.0.0.1:1/0")

    with pytest.raises(ConfigurationError) as info:

        @q.task
        def local_task() -> None:
            return None

    assert "module level" in str(info.value)
    q.close()


def test_in_process_executor_has_no_worker() -> None:
    with pytest.raises(ConfigurationError):
        TaskQueue("inprocess").worker()


def test_remote_only_properties_refuse_other_backends() -> None:
    q = TaskQueue("inprocess")
    with pytest.raises(ConfigurationError):
        _ = q.celery_app
    with pytest.raises(ConfigurationError):
        _ = q.rq_queue


# --------------------------------------------------------------------------- broker down


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "url",
    [
        pytest.param("rq+" + closed_port_url("redis"), id="rq"),
        pytest.param("celery+" + closed_port_url("redis"), id="celery-redis"),
        pytest.param("celery+" + closed_port_url("amqp") + "?result_backend=rpc://", id="amqp"),
    ],
)
def test_broker_down_raises_service_unavailable_chained(url: str) -> None:
    q = tasks.build(url)
    with pytest.raises(ServiceUnavailable) as info:
        q.enqueue("tq.add", 1, 2)
    assert info.value.status_code == 503
    assert info.value.__cause__ is not None
    with pytest.raises(ServiceUnavailable):
        asyncio.run(q.aenqueue("tq.add", 1, 2))
    q.close()


@pytest.mark.timeout(30)
def test_result_store_down_raises_service_unavailable_on_status() -> None:
    q = tasks.build("rq+" + closed_port_url("redis"))
    with pytest.raises(ServiceUnavailable):
        _ = q.result("0" * 32).status
    q.close()


# --------------------------------------------------------------------------- worker helpers


@pytest.mark.redis
@pytest.mark.slow
def test_cli_worker_in_burst_mode_runs_queued_rq_tasks(
    redis_server_url: str, tmp_path: Path, cid: str
) -> None:
    name = f"gntest-cli-{uuid.uuid4().hex[:8]}"
    url = "rq+" + redis_server_url
    q = tasks.build(url, queue=name)
    try:
        results = [q.enqueue("tq.add", i, i) for i in range(3)] + [q.enqueue("tq.whoami")]
        assert results[0].status is TaskStatus.QUEUED
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "GENNET_TASK_QUEUE_URL": url,
            "GENNET_TASK_QUEUE_NAME": name,
        }
        cmd = [sys.executable, "-m", "gennet_toolkit.task_queue", "worker"]
        cmd += ["tests._task_queue_tasks:queue", "--burst", "--loglevel", "WARNING"]
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        assert [r.get(timeout=1) for r in results] == [0, 2, 4, cid]
    finally:
        q.close()
        _delete_rq_jobs(redis_server_url, name)


# --------------------------------------------------------------------------- in an ASGI app


def _starlette_app(queue: TaskQueue) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from gennet_toolkit.error_handler import install_error_handlers
    from gennet_toolkit.logging_middleware import CorrelationIdMiddleware

    async def start(request: Request) -> JSONResponse:
        result = await queue.aenqueue("tq.async_whoami")
        return JSONResponse({"task": result.id}, status_code=202)

    async def status(request: Request) -> JSONResponse:
        result = queue.result(request.path_params["task"], "tq.async_whoami")
        return JSONResponse({"value": await result.aget(timeout=WAIT)})

    app = Starlette(routes=[Route("/jobs", start, methods=["POST"]), Route("/jobs/{task}", status)])
    install_error_handlers(app)
    return CorrelationIdMiddleware(app)


def _fastapi_app(queue: TaskQueue) -> Any:
    from fastapi import FastAPI

    from gennet_toolkit.error_handler import install_error_handlers
    from gennet_toolkit.logging_middleware import CorrelationIdMiddleware

    app = FastAPI()

    @app.post("/jobs", status_code=202)
    def start() -> dict[str, str]:  # sync endpoint: runs in FastAPI's thread pool
        return {"task": queue.enqueue("tq.whoami").id}

    @app.get("/jobs/{task}")
    def status(task: str) -> dict[str, Any]:
        return {"value": queue.result(task, "tq.whoami").get(timeout=WAIT)}

    install_error_handlers(app)
    return CorrelationIdMiddleware(app)


@pytest.mark.anyio
@pytest.mark.parametrize("make_app", [_starlette_app, _fastapi_app], ids=["starlette", "fastapi"])
async def test_request_correlation_id_reaches_the_task(make_app: Any, queue: TaskQueue) -> None:
    import httpx

    transport = httpx.ASGITransport(app=make_app(queue))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        started = await client.post("/jobs", headers={"X-Request-ID": "req-from-client-1"})
        assert started.status_code == 202
        done = await client.get(f"/jobs/{started.json()['task']}")
    assert done.json() == {"value": "req-from-client-1"}


@pytest.mark.anyio
@pytest.mark.timeout(30)
@pytest.mark.parametrize("make_app", [_starlette_app, _fastapi_app], ids=["starlette", "fastapi"])
async def test_broker_down_answers_503_problem_json(make_app: Any) -> None:
    import httpx

    queue = tasks.build("rq+" + closed_port_url("redis"))
    transport = httpx.ASGITransport(app=make_app(queue))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/jobs")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "service_unavailable"
    assert "Traceback" not in response.text
    assert "127.0.0.1" not in response.text
    queue.close()


@pytest.mark.parametrize(
    "envelope",
    [
        {"v": 99, "task": "tq.add", "args": [1, 2], "kwargs": {}},
        {"v": 1, "task": "tq.add", "args": "1,2", "kwargs": {}},
        {"v": 1, "task": "tq.add", "args": [1, 2], "kwargs": []},
        {"task": "tq.add", "args": [1, 2]},
    ],
)
def test_worker_refuses_messages_it_cannot_read(envelope: dict[str, Any]) -> None:
    q = tasks.build("memory://")
    with pytest.raises(TaskError) as info:
        q.tasks["tq.add"].run_envelope(envelope)
    assert "cannot read" in str(info.value)
    q.close()


def test_worker_reports_an_unknown_task_name() -> None:
    from gennet_toolkit.task_queue._base import resolve_task

    with pytest.raises(TaskNotFound):
        resolve_task("tq.never-registered", "tests._task_queue_tasks")
