"""websocket_manager: broadcast fan-out to 1,000 in-process fake sockets.

Suites:

- ``websocket_manager-fanout``: one broadcast of a small JSON dict to a room of 1,000
  fake sockets (objects with ``async send_text``), timed until every socket has sent
  it. Rows: a naive ``for ws in clients: await ws.send_text(...)`` loop (the FastAPI
  docs' pattern), ours (``ConnectionManager("memory://")``: a bounded queue and a
  sender task per client), and encode/broadcaster's ``memory://`` backend with one
  subscriber task per socket (the way broadcaster is used for websockets).
- ``websocket_manager-redis``: the same broadcast reaching 1,000 sockets split over
  two managers that share Redis (500 local, 500 through pub/sub), against ours in
  memory. broadcaster has no row: with redis-py 8 its subscribers receive nothing.

The fake sockets never stall, so the naive loop shows its best case. A note records
what changes with one stalled socket: the naive loop never finishes; ours drops it.

Peers come from the ``bench`` extra: broadcaster. Redis is ``REDIS_URL`` (default
``redis://127.0.0.1:6379/15``); without it only the first suite runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from benchmarks._harness import Suite
from gennet_toolkit.backends import from_url
from gennet_toolkit.websocket_manager import ConnectionManager

N = 1000
MESSAGE = {"network": "lac-operon", "gene": "lacZ", "regulator": "lacI", "weight": 0.5}
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
PREFIX = f"gnbench:{uuid.uuid4().hex[:8]}:"


def redis_available() -> bool:
    """Whether the benchmark Redis accepts connections."""
    parts = urlsplit(REDIS_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 1):
            return True
    except OSError:
        return False


class Counter:
    """Counts frames sent by every fake socket; ``done`` is set when all ``n`` arrived."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.left = n
        self.done = asyncio.Event()

    def arm(self) -> None:
        self.left = self.n
        self.done.clear()

    def hit(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.done.set()


class FakeSocket:
    """An in-process socket whose send completes at once and is counted."""

    __slots__ = ("counter",)

    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    async def send_text(self, data: str) -> None:
        self.counter.hit()

    async def send_bytes(self, data: bytes) -> None:
        self.counter.hit()

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        pass


class Runner:
    """Our own event loop, so every case can be torn down cleanly after the run.

    Cases are sync functions driving one ``run_until_complete`` each; the ``no-op``
    baseline measures that round trip, and the harness subtracts it for the overhead
    ratios.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.cleanups: list[Callable[[], Awaitable[None]]] = []

    def case(self, setup: Callable[[Runner], Awaitable[Callable[[], Awaitable[Any]]]]) -> Any:
        op = self.loop.run_until_complete(setup(self))
        run = self.loop.run_until_complete
        return lambda: run(op())

    def close(self) -> None:
        for cleanup in reversed(self.cleanups):
            self.loop.run_until_complete(cleanup())
        self.loop.close()


async def noop() -> None:
    pass


async def noop_setup(runner: Runner) -> Callable[[], Awaitable[None]]:
    return noop


async def naive_setup(runner: Runner) -> Callable[[], Awaitable[None]]:
    counter = Counter(N)
    clients = [FakeSocket(counter) for _ in range(N)]

    async def op() -> None:
        text = json.dumps(MESSAGE)
        for ws in clients:
            await ws.send_text(text)

    return op


async def ours_setup(runner: Runner) -> Callable[[], Awaitable[None]]:
    counter = Counter(N)
    manager = ConnectionManager("memory://", heartbeat_interval=None)
    for _ in range(N):
        await manager.connect(FakeSocket(counter), rooms=["lac"])
    runner.cleanups.append(manager.aclose)

    async def op() -> None:
        counter.arm()
        await manager.broadcast("lac", MESSAGE)
        await counter.done.wait()

    return op


async def broadcaster_setup(runner: Runner) -> Callable[[], Awaitable[None]]:
    from broadcaster import Broadcast

    counter = Counter(N)
    bc = Broadcast("memory://")
    await bc.connect()
    ready = asyncio.Semaphore(0)

    async def pump(ws: FakeSocket) -> None:
        async with bc.subscribe("lac") as sub:
            ready.release()
            async for event in sub:  # type: ignore[union-attr]
                await ws.send_text(event.message)

    tasks = [asyncio.create_task(pump(FakeSocket(counter))) for _ in range(N)]
    for _ in range(N):
        await ready.acquire()

    async def cleanup() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bc.disconnect()

    runner.cleanups.append(cleanup)

    async def op() -> None:
        counter.arm()
        await bc.publish("lac", json.dumps(MESSAGE))
        await counter.done.wait()

    return op


async def redis_setup(runner: Runner) -> Callable[[], Awaitable[None]]:
    counter = Counter(N)
    backend = from_url(REDIS_URL, prefix=PREFIX)
    one = ConnectionManager(backend, heartbeat_interval=None)
    two = ConnectionManager(backend, heartbeat_interval=None)
    for manager in (one, two):
        await manager.start()
        for _ in range(N // 2):
            await manager.connect(FakeSocket(counter), rooms=["lac"])
        runner.cleanups.append(manager.aclose)
    runner.cleanups.insert(0, backend.aclose)

    async def op() -> None:
        counter.arm()
        await one.broadcast("lac", MESSAGE)
        await counter.done.wait()

    return op


async def stalled_note() -> str:
    """What one stalled socket among 1,000 does to each approach (behaviour, not speed)."""
    counter = Counter(N - 1)

    class Stalled(FakeSocket):
        async def send_text(self, data: str) -> None:
            await asyncio.Event().wait()

    clients = [FakeSocket(counter) for _ in range(N - 1)]
    clients.insert(N // 2, Stalled(counter))
    text = json.dumps(MESSAGE)

    async def naive() -> None:
        for ws in clients:
            await ws.send_text(text)

    try:
        await asyncio.wait_for(naive(), 1.0)
        naive_result = "finished"
    except TimeoutError:
        naive_result = f"stuck after {N - 1 - counter.left} of {N - 1} (gave up after 1 s)"
    counter.arm()
    manager = ConnectionManager("memory://", heartbeat_interval=None, send_timeout=0.5)
    for ws in clients:
        await manager.connect(ws, rooms=["lac"])
    await manager.broadcast("lac", MESSAGE)
    await asyncio.wait_for(counter.done.wait(), 5)
    await asyncio.sleep(0.6)
    dropped = "yes" if len(manager) == N - 1 else "no"
    ours = f"{N - 1} of {N - 1} delivered at once; the stalled socket dropped: {dropped}"
    await manager.aclose()
    return f"One stalled socket among {N}: naive loop {naive_result}; ours {ours}."


def main() -> None:
    """Run the suites (Redis only when reachable)."""
    logging.getLogger("gennet_toolkit.websocket_manager").setLevel(logging.ERROR)
    note = asyncio.run(stalled_note())
    runner = Runner()
    try:
        suite = Suite(
            "websocket_manager-fanout",
            description=f"one broadcast of a small JSON dict to {N} in-process fake sockets,"
            " until every socket has sent it",
            baseline="no-op",
        )
        suite.add("no-op", runner.case(noop_setup))
        suite.add("naive loop", runner.case(naive_setup))
        suite.add("ours", runner.case(ours_setup))
        if importlib.util.find_spec("broadcaster") is not None:
            suite.add("broadcaster memory://", runner.case(broadcaster_setup))
            suite.compare("ours", "broadcaster memory://")
        else:
            suite.note("broadcaster is not installed (bench extra): no row.")
        suite.compare("ours", "naive loop")
        suite.note(note)
        suite.run()
    finally:
        runner.close()

    if not redis_available():
        print(f"Redis not reachable at {REDIS_URL}: skipping the Redis suite.")
        return
    runner = Runner()
    try:
        redis_suite = Suite(
            "websocket_manager-redis",
            description=f"one broadcast to {N} fake sockets on two managers sharing Redis"
            f" ({N // 2} local, {N // 2} through pub/sub)",
            baseline="no-op",
        )
        redis_suite.add("no-op", runner.case(noop_setup))
        redis_suite.add("ours memory:// (one instance)", runner.case(ours_setup))
        redis_suite.add("ours redis:// (two instances)", runner.case(redis_setup))
        redis_suite.compare("ours redis:// (two instances)", "ours memory:// (one instance)")
        redis_suite.note("broadcaster: no row; with redis-py 8 its subscribers receive nothing.")
        redis_suite.run()
    finally:
        runner.close()
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    with contextlib.suppress(redis.RedisError):
        for key in client.scan_iter(match=PREFIX + "*"):
            client.delete(key)
    client.close()


if __name__ == "__main__":
    main()
