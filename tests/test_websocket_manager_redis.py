"""websocket_manager across instances: two real uvicorn servers sharing Redis, real
websocket clients (the ``websockets`` library), Redis stopped and restarted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from gennet_toolkit.backends import from_url
from gennet_toolkit.websocket_manager import ConnectionManager
from tests._websocket_manager_helpers import FakeSocket, fastapi_app, starlette_app, until
from tests.services import RedisServer, closed_port_url, free_port

uvicorn = pytest.importorskip("uvicorn")
ws_client = pytest.importorskip("websockets.asyncio.client")

pytestmark = [pytest.mark.anyio]


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Run ``app`` on a real uvicorn server on a free loopback port; yield its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", ws="websockets-sansio"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started)
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def recv_json(ws: Any) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), 10))


async def nothing_more(ws: Any) -> bool:
    """True when nothing else arrives for a moment (exactly-once checks)."""
    try:
        await asyncio.wait_for(ws.recv(), 0.3)
    except TimeoutError:
        return True
    return False


def tiny_socket(host: str) -> socket.socket:
    """A client socket with a small receive buffer: a client that stops reading stalls fast."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # also disables autotuning
    addr, port = host.split(":")
    sock.connect((addr, int(port)))
    sock.setblocking(False)
    return sock


def subscribed(manager: ConnectionManager) -> bool:
    return manager._relay is not None and manager._relay.subscribed.is_set()


def manager_for(url: str, prefix: str, **kw: Any) -> ConnectionManager:
    return ConnectionManager(url, heartbeat_interval=None, channel_prefix=prefix, **kw)


@pytest.mark.redis
@pytest.mark.parametrize(
    ("make_a", "make_b"),
    [
        pytest.param(starlette_app, starlette_app, id="starlette+starlette"),
        pytest.param(starlette_app, fastapi_app, id="starlette+fastapi"),
    ],
)
async def test_broadcast_on_one_server_reaches_clients_on_both_exactly_once(
    redis_url: str, redis_prefix: str, make_a: Callable[..., Any], make_b: Callable[..., Any]
) -> None:
    one, two = manager_for(redis_url, redis_prefix), manager_for(redis_url, redis_prefix)
    async with serve(make_a(one)) as host_a, serve(make_b(two)) as host_b:
        async with (
            ws_client.connect(f"ws://{host_a}/ws?id=a1") as a1,
            ws_client.connect(f"ws://{host_a}/ws?id=a2") as a2,
            ws_client.connect(f"ws://{host_b}/ws?id=b1") as b1,
        ):
            await a1.send(json.dumps({"whoami": 1}))
            await b1.send(json.dumps({"whoami": 1}))
            assert await recv_json(a1) == {"id": "a1"}
            assert await recv_json(b1) == {"id": "b1"}
            async with httpx.AsyncClient(base_url=f"http://{host_b}") as http:
                r = await http.post("/broadcast", json={"room": "lobby", "message": {"n": 1}})
            assert r.json()["queued"] == 1  # b1, locally; a1 and a2 through Redis
            for ws in (a1, a2, b1):
                assert await recv_json(ws) == {"n": 1}
            for ws in (a1, a2, b1):
                assert await nothing_more(ws)
            # send_to and join across instances, driven from a client on the other server
            await b1.send(json.dumps({"to": "a2", "text": "hi"}))
            assert await recv_json(a2) == {"dm": "hi", "from": "b1"}
            assert await two.join("a1", "lac") is False  # a1 lives on server A
            await until(lambda: "lac" in one.rooms("a1"))
            await b1.send(json.dumps({"say": "lac", "text": "only a1"}))
            assert await asyncio.wait_for(a1.recv(), 10) == "only a1"
            assert await nothing_more(a2)
            assert await nothing_more(b1)
        assert one.stats["remote_received"] >= 2


@pytest.mark.redis
async def test_one_subscription_per_instance_whatever_the_number_of_clients(
    redis_url: str, redis_prefix: str
) -> None:
    import redis.asyncio as aioredis

    async with manager_for(redis_url, redis_prefix) as manager:
        for _ in range(20):
            await manager.connect(FakeSocket(), rooms=["r"])
        client = aioredis.Redis.from_url(redis_url)
        try:
            counts = dict(await client.pubsub_numsub(manager.channel))
            assert counts[manager.channel.encode()] == 1
        finally:
            await client.aclose()


@pytest.mark.redis
async def test_slow_real_client_is_dropped_and_others_keep_receiving(
    redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    manager = manager_for(redis_url, redis_prefix, send_queue_size=8, send_timeout=0.5)
    big = "x" * 64 * 1024
    async with (
        serve(starlette_app(manager)) as host,
        ws_client.connect(
            f"ws://{host}/ws?id=slow",
            max_size=None,
            max_queue=1,
            compression=None,  # or the repetitive payload would shrink to nothing
            sock=tiny_socket(host),
        ) as slow,
        ws_client.connect(f"ws://{host}/ws?id=fast", max_size=None) as fast,
    ):
        await fast.send(json.dumps({"whoami": 1}))
        await slow.send(json.dumps({"whoami": 1}))
        assert await recv_json(fast) == {"id": "fast"}
        assert await recv_json(slow) == {"id": "slow"}
        # slow never reads again: TCP buffers fill, then its sends time out or its
        # queue fills; fast reads everything.
        received = 0
        with caplog.at_level(logging.WARNING, "gennet_toolkit.websocket_manager"):
            for _ in range(120):
                await manager.broadcast("lobby", big)
                assert await asyncio.wait_for(fast.recv(), 10) == big
                received += 1
                if "slow" not in manager:
                    break
            await until(lambda: "slow" not in manager)
        assert "fast" in manager
        await manager.broadcast("lobby", "after")
        assert await asyncio.wait_for(fast.recv(), 10) == "after"
        assert any("slow dropped" in r.getMessage() for r in caplog.records)
        # The slow client sees a policy close once it finally reads.
        with contextlib.suppress(Exception):
            while True:
                await asyncio.wait_for(slow.recv(), 10)
        assert slow.close_code in {1008, 1013}


async def test_redis_down_at_start_local_delivery_continues_and_failure_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = ConnectionManager(closed_port_url(), heartbeat_interval=None)
    with caplog.at_level(logging.WARNING, "gennet_toolkit.websocket_manager"):
        async with manager:
            sock = FakeSocket()
            await manager.connect(sock, "a", rooms=["r"])
            for i in range(5):
                assert await manager.broadcast("r", str(i)) == 1
            await until(lambda: len(sock.sent) == 5)
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1
    assert manager.stats["publish_failed"] == 5
    assert "127.0.0.1" not in caplog.text or "redis://" not in caplog.text


@pytest.mark.redis
@pytest.mark.slow
async def test_redis_restart_local_delivery_continues_then_instances_reconnect(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    backend_a, backend_b = from_url(redis_server.url), from_url(redis_server.url)
    one = ConnectionManager(backend_a, heartbeat_interval=None, resync_message="resync")
    two = ConnectionManager(backend_b, heartbeat_interval=None, resync_message="resync")
    a, b = FakeSocket(), FakeSocket()
    with caplog.at_level(logging.WARNING, "gennet_toolkit.websocket_manager"):
        async with one, two:
            await one.connect(a, "a", rooms=["r"])
            await two.connect(b, "b", rooms=["r"])
            await one.broadcast("r", "before")
            await until(lambda: b.sent == ["before"])

            redis_server.stop()
            await one.broadcast("r", "during-1")
            await one.broadcast("r", "during-2")
            await until(lambda: a.sent == ["before", "during-1", "during-2"])
            assert "during-1" not in b.sent  # lost: published while Redis was down

            redis_server.start()
            await until(lambda: subscribed(one) and subscribed(two), 30)

            async def delivered() -> bool:
                await one.broadcast("r", "after")
                await asyncio.sleep(0.2)
                return "after" in b.sent

            async with asyncio.timeout(30):
                while not await delivered():
                    pass
            # b missed two messages without any error of its own: the publisher's
            # recovery tells every instance, and clients get resync_message.
            assert "resync" in b.sent
            assert two.stats["gaps"] >= 1
    await backend_a.aclose()
    await backend_b.aclose()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("broadcast to other instances failed" in m for m in messages) == 1
    assert any("reach other instances again" in m for m in messages)
