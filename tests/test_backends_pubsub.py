"""Pub/sub delivery and delete-by-prefix on every backend, in both forms."""

from __future__ import annotations

import asyncio
import threading

import pytest

from gennet_toolkit.backends import Backend, MemoryBackend, Message
from tests import test_backends as shared
from tests.test_backends import Api, FakeClock, make_backend

# The shared fixtures, bound here so pytest finds them in this module too.
api, backend, clock, form, kind = shared.api, shared.backend, shared.clock, shared.form, shared.kind


# --------------------------------------------------------------------------- pub/sub


@pytest.mark.anyio
async def test_published_messages_reach_every_subscriber(backend: Backend) -> None:
    first = await backend.subscribe("room:1")
    second = await backend.subscribe("room:1", "room:2")
    try:
        assert await backend.publish("room:1", "hello") == 2
        assert backend.sync.publish("room:2", b"\x00bin") == 1
        assert await first.get(timeout=5) == Message("room:1", b"hello")
        got = [await second.get(timeout=5), await second.get(timeout=5)]
        assert got == [Message("room:1", b"hello"), Message("room:2", b"\x00bin")]
        assert await first.get(timeout=0.05) is None
    finally:
        await first.aclose()
        await second.aclose()


@pytest.mark.anyio
async def test_publish_without_subscribers_reaches_nobody(backend: Backend) -> None:
    assert await backend.publish("empty", "x") == 0
    assert backend.sync.publish("empty", "x") == 0


@pytest.mark.anyio
async def test_closed_subscription_stops_iterating_and_receiving(backend: Backend) -> None:
    sub = await backend.subscribe("ch")
    await backend.publish("ch", "one")
    received = []
    async for msg in sub:
        received.append(msg.data)
        await sub.aclose()
    assert received == [b"one"]
    assert await backend.publish("ch", "two") == 0
    assert await sub.get(timeout=0.05) is None


@pytest.mark.anyio
async def test_sync_subscription_receives_from_the_async_form(backend: Backend) -> None:
    with backend.sync.subscribe("ch") as sub:
        assert await backend.publish("ch", "hi") == 1
        assert sub.get(timeout=5) == Message("ch", b"hi")
        assert sub.get(timeout=0.05) is None
    assert backend.sync.publish("ch", "late") == 0


@pytest.mark.anyio
async def test_async_subscriber_receives_from_another_thread(backend: Backend) -> None:
    async with await backend.subscribe("ch") as sub:
        thread = threading.Thread(target=lambda: backend.sync.publish("ch", "from thread"))
        thread.start()
        msg = await sub.get(timeout=5)
        thread.join()
        assert msg == Message("ch", b"from thread")


@pytest.mark.anyio
async def test_subscriptions_are_isolated_by_prefix(
    kind: str, request: pytest.FixtureRequest
) -> None:
    one = make_backend(kind, request, FakeClock(), prefix="one:")
    two = make_backend(kind, request, FakeClock(), prefix="two:")
    sub = await one.subscribe("ch")
    try:
        assert await two.publish("ch", "not for one") == 0
        assert await one.publish("ch", "mine") == 1
        assert await sub.get(timeout=5) == Message("ch", b"mine")
    finally:
        await sub.aclose()
        await one.aclose()
        await two.aclose()


@pytest.mark.anyio
async def test_memory_subscriber_that_lags_loses_oldest_messages_not_memory() -> None:
    backend = MemoryBackend(queue_size=3)
    sub = await backend.subscribe("ch")
    for i in range(10):
        await backend.publish("ch", str(i))
    await asyncio.sleep(0)  # deliveries land on the loop
    got = [await sub.get(timeout=1) for _ in range(3)]
    assert [m.data for m in got if m] == [b"7", b"8", b"9"]
    assert await sub.get(timeout=0.01) is None
    await sub.aclose()


def test_memory_sync_subscriber_is_bounded_too() -> None:
    backend = MemoryBackend(queue_size=2)
    with backend.sync.subscribe("ch") as sub:
        for i in range(5):
            backend.sync.publish("ch", str(i))
        assert [sub.get(timeout=1), sub.get(timeout=1)] == [
            Message("ch", b"3"),
            Message("ch", b"4"),
        ]


# --------------------------------------------------------------------------- delete by prefix


@pytest.mark.anyio
async def test_delete_prefix_removes_thousands_of_keys_and_nothing_else(api: Api) -> None:
    await api.set_many({f"cache:user:{i}": str(i) for i in range(1500)})
    await api.set_many({"cache:other:1": "x", "cachet": "y", "keep": "z"})
    assert await api.delete_prefix("cache:user:") == 1500
    assert await api.get_many(["cache:user:0", "cache:user:1499"]) == [None, None]
    assert await api.get_many(["cache:other:1", "cachet", "keep"]) == [b"x", b"y", b"z"]
    assert await api.delete_prefix("cache:user:") == 0


@pytest.mark.anyio
async def test_delete_prefix_treats_glob_characters_literally(api: Api) -> None:
    await api.set_many({"a*:1": "1", "ab:1": "2", "a?:1": "3", "a[x]:1": "4", "ax]:1": "5"})
    assert await api.delete_prefix("a*") == 1
    assert await api.delete_prefix("a?") == 1
    assert await api.delete_prefix("a[x]") == 1
    assert await api.get_many(["ab:1", "ax]:1"]) == [b"2", b"5"]


@pytest.mark.anyio
async def test_delete_prefix_stays_inside_the_backend_prefix(
    kind: str, request: pytest.FixtureRequest
) -> None:
    one = make_backend(kind, request, FakeClock(), prefix="one:")
    two = make_backend(kind, request, FakeClock(), prefix="two:")
    try:
        await one.set("k", "1")
        await two.set("k", "2")
        assert await one.delete_prefix("") == 1
        assert await two.get("k") == b"2"
    finally:
        await one.aclose()
        await two.aclose()


@pytest.mark.anyio
async def test_closing_from_another_task_ends_a_waiting_iteration(backend: Backend) -> None:
    sub = await backend.subscribe("ch")
    received: list[bytes] = []

    async def consume() -> None:
        async for msg in sub:
            received.append(msg.data)

    task = asyncio.create_task(consume())
    await backend.publish("ch", "one")
    for _ in range(200):
        if received:
            break
        await asyncio.sleep(0.01)
    await sub.aclose()
    await asyncio.wait_for(task, 5)
    assert received == [b"one"]
