"""websocket_manager in one process: rooms, send_to, heartbeats, slow clients, inbound
limits, shutdown, configuration; under Starlette and FastAPI (TestClient) and with fakes."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from gennet_toolkit import websocket_manager
from gennet_toolkit.backends import MemoryBackend
from gennet_toolkit.exceptions import BadRequest, ConfigurationError, Conflict
from gennet_toolkit.websocket_manager import ConnectionManager
from tests._websocket_manager_helpers import FakeSocket, fastapi_app, starlette_app, until

DOCS = Path(__file__).resolve().parents[1] / "docs" / "websocket_manager.md"
APPS = [pytest.param(starlette_app, id="starlette"), pytest.param(fastapi_app, id="fastapi")]
AppFactory = Callable[[ConnectionManager], Any]


def test_public_names_are_exactly_all() -> None:
    public = {n for n in dir(websocket_manager) if not n.startswith("_")}
    assert set(websocket_manager.__all__) <= public
    assert sorted(websocket_manager.__all__) == websocket_manager.__all__
    assert "ConnectionManager" in websocket_manager.__all__


# --------------------------------------------------------------------------- through HTTP apps


@pytest.mark.parametrize("make_app", APPS)
def test_broadcast_reaches_room_members_only(make_app: AppFactory) -> None:
    manager = ConnectionManager(heartbeat_interval=None)
    with (
        TestClient(make_app(manager)) as http,
        http.websocket_connect("/ws?id=a") as a,
        http.websocket_connect("/ws?id=b") as b,
    ):
        a.send_json({"join": "lac"})
        assert a.receive_json() == {"joined": "lac"}
        b.send_json({"say": "lac", "text": "repressed"})
        assert a.receive_text() == "repressed"
        # b is not in "lac"; the next thing b sees is its own lobby message.
        b.send_json({"say": "lobby", "text": "hello"})
        assert b.receive_text() == "hello"
        assert a.receive_text() == "hello"
        assert manager.presence() == {"lobby": 2, "lac": 1}
        assert manager.rooms("a") == {"lobby", "lac"}
        assert manager.members("lobby") == {"a", "b"}


@pytest.mark.parametrize("make_app", APPS)
def test_leave_stops_delivery_and_exclude_skips_the_sender(make_app: AppFactory) -> None:
    manager = ConnectionManager(heartbeat_interval=None)
    with (
        TestClient(make_app(manager)) as http,
        http.websocket_connect("/ws?id=a") as a,
        http.websocket_connect("/ws?id=b") as b,
    ):
        a.send_json({"say": "lobby", "text": "first", "quiet": True})
        assert b.receive_text() == "first"
        b.send_json({"leave": "lobby"})
        assert b.receive_json() == {"left": "lobby"}
        a.send_json({"say": "lobby", "text": "second"})
        assert a.receive_text() == "second"  # a gets its own; b left
        a.send_json({"to": "b", "text": "still there?"})
        assert b.receive_json() == {"dm": "still there?", "from": "a"}
        assert manager.count("lobby") == 1


@pytest.mark.parametrize("make_app", APPS)
def test_http_route_broadcasts_json_and_bytes(make_app: AppFactory) -> None:
    manager = ConnectionManager(heartbeat_interval=None)
    with TestClient(make_app(manager)) as http, http.websocket_connect("/ws?id=a") as a:
        r = http.post("/broadcast", json={"room": "lobby", "message": {"gene": "lacZ"}})
        assert r.json() == {"queued": 1, "presence": {"lobby": 1}}
        assert a.receive_json() == {"gene": "lacZ"}
        r = http.post("/broadcast", json={"message": [1, 2]})  # room None: everyone
        assert a.receive_json() == [1, 2]
        a.send_json({"bytes": "lobby", "text": "raw"})
        assert a.receive_bytes() == b"raw"


@pytest.mark.parametrize("make_app", APPS)
def test_idle_clients_get_heartbeat_pings(make_app: AppFactory) -> None:
    manager = ConnectionManager(heartbeat_interval=0.05)
    with TestClient(make_app(manager)) as http, http.websocket_connect("/ws") as ws:
        assert ws.receive_json() == {"type": "ping"}
        assert ws.receive_json() == {"type": "ping"}


def test_custom_heartbeat_message_is_sent_as_given() -> None:
    manager = ConnectionManager(heartbeat_interval=0.05, heartbeat_message="hb")
    with TestClient(starlette_app(manager)) as http, http.websocket_connect("/ws") as ws:
        assert ws.receive_text() == "hb"


@pytest.mark.parametrize("make_app", APPS)
def test_oversized_inbound_message_closes_with_1009(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    manager = ConnectionManager(heartbeat_interval=None, max_message_size=100)
    with TestClient(make_app(manager)) as http:
        with http.websocket_connect("/ws?id=big") as ws:
            ws.send_text('{"say": "lobby", "text": "' + "x" * 200 + '"}')
            with pytest.raises(WebSocketDisconnect) as info:
                ws.receive_text()
            assert info.value.code == 1009
        assert "big" not in manager
    assert "x" * 50 not in caplog.text  # the payload is never logged


def test_multibyte_text_is_measured_in_utf8_bytes() -> None:
    manager = ConnectionManager(heartbeat_interval=None, max_message_size=100)
    with TestClient(starlette_app(manager)) as http, http.websocket_connect("/ws") as ws:
        ws.send_text('{"whoami": "' + "é" * 40 + '"}')  # 56 chars, 96 bytes: allowed
        assert "id" in ws.receive_json()
        ws.send_text('{"whoami": "' + "é" * 50 + '"}')  # 66 chars, 116 bytes
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_text()
        assert info.value.code == 1009


@pytest.mark.parametrize("payload", ["not json", '{"unterminated": '])
def test_invalid_json_closes_with_1007(payload: str) -> None:
    manager = ConnectionManager(heartbeat_interval=None)
    with TestClient(starlette_app(manager)) as http, http.websocket_connect("/ws") as ws:
        ws.send_text(payload)
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_text()
        assert info.value.code == 1007


def test_invalid_utf8_bytes_close_with_1007() -> None:
    manager = ConnectionManager(heartbeat_interval=None)
    with TestClient(starlette_app(manager)) as http, http.websocket_connect("/ws") as ws:
        ws.send_bytes(b"\xff\xfe{")
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_text()
        assert info.value.code == 1007


@pytest.mark.parametrize("make_app", APPS)
def test_shutdown_closes_every_client_with_1001(make_app: AppFactory) -> None:
    manager = ConnectionManager(heartbeat_interval=None)
    with (
        TestClient(make_app(manager)) as http,
        http.websocket_connect("/ws?id=a") as a,
        http.websocket_connect("/ws?id=b") as b,
    ):
        a.send_json({"whoami": 1})
        a.receive_json()
        b.send_json({"whoami": 1})
        b.receive_json()
        http.post("/shutdown")
        for ws in (a, b):
            with pytest.raises(WebSocketDisconnect) as info:
                ws.receive_text()
            assert info.value.code == 1001
    assert len(manager) == 0


def test_duplicate_client_id_is_refused_while_the_first_is_connected() -> None:
    manager = ConnectionManager(heartbeat_interval=None)
    with TestClient(starlette_app(manager)) as http, http.websocket_connect("/ws?id=same") as first:
        with (
            pytest.raises((WebSocketDisconnect, Conflict)),
            http.websocket_connect("/ws?id=same"),
        ):
            pass
        first.send_json({"whoami": 1})
        assert first.receive_json() == {"id": "same"}


def test_manager_serves_a_second_testclient_after_the_first_ended() -> None:
    manager = ConnectionManager(heartbeat_interval=None)
    app = starlette_app(manager)
    for _ in range(2):
        with TestClient(app) as http, http.websocket_connect("/ws?id=a") as ws:
            ws.send_json({"whoami": 1})
            assert ws.receive_json() == {"id": "a"}


def test_without_lifespan_the_first_connect_starts_the_manager() -> None:
    manager = ConnectionManager(heartbeat_interval=None)
    app = starlette_app(manager)
    app = Starlette(routes=app.routes)  # no lifespan
    with TestClient(app) as http, http.websocket_connect("/ws?id=a") as ws:
        ws.send_json({"whoami": 1})
        assert ws.receive_json() == {"id": "a"}


# --------------------------------------------------------------------------- fake sockets


@pytest.mark.anyio
async def test_client_that_never_reads_is_dropped_with_1013_and_others_still_receive(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with ConnectionManager(heartbeat_interval=None, send_queue_size=4) as manager:
        stuck, fine = FakeSocket(stall=True), FakeSocket()
        await manager.connect(stuck, "stuck", rooms=["r"])
        await manager.connect(fine, "fine", rooms=["r"])
        with caplog.at_level(logging.WARNING, "gennet_toolkit.websocket_manager"):
            for i in range(20):
                await manager.broadcast("r", str(i))
            await until(lambda: len(fine.sent) == 20 and stuck.closed is not None)
        assert fine.sent == [str(i) for i in range(20)]
        assert stuck.closed == 1013
        assert "stuck" not in manager
        assert manager.stats["dropped"] == 1
        drops = [r for r in caplog.records if "dropped" in r.getMessage()]
        assert len(drops) == 1
        assert "send queue full" in drops[0].getMessage()


@pytest.mark.anyio
async def test_send_that_exceeds_send_timeout_drops_the_client_with_1008() -> None:
    async with ConnectionManager(heartbeat_interval=None, send_timeout=0.05) as manager:
        stuck, fine = FakeSocket(stall=True), FakeSocket()
        await manager.connect(stuck, "stuck")
        await manager.connect(fine, "fine")
        await manager.broadcast(None, "x")
        await until(lambda: stuck.closed is not None)
        assert stuck.closed == 1008
        assert manager.clients == {"fine"}
        await manager.broadcast(None, "y")
        await until(lambda: fine.sent == ["x", "y"])


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("overflow", "kept"), [("drop_oldest", ["3", "4"]), ("drop_new", ["0", "1"])]
)
async def test_overflow_policies_discard_messages_but_keep_the_client(
    overflow: Any, kept: list[str]
) -> None:
    async with ConnectionManager(
        heartbeat_interval=None, send_queue_size=2, overflow=overflow
    ) as manager:
        sock = FakeSocket(stall=True)
        await manager.connect(sock, "c")
        await asyncio.sleep(0)
        await manager.broadcast(None, "first")  # taken by the sender, which then stalls
        await until(lambda: not manager._clients["c"].buf)
        for i in range(5):
            await manager.broadcast(None, str(i))
        assert list(manager._clients["c"].buf) == kept
        assert manager.stats["overflowed"] == 3
        assert "c" in manager


@pytest.mark.anyio
async def test_disconnect_flushes_queued_messages_then_closes() -> None:
    async with ConnectionManager(heartbeat_interval=None) as manager:
        sock = FakeSocket()
        await manager.connect(sock, "c")
        await manager.send_to("c", {"n": 1})
        await manager.send_to("c", b"\x00")
        assert await manager.disconnect("c", code=4000, reason="bye")
        assert sock.sent == ['{"n":1}', b"\x00"]
        assert sock.closed == 4000
        assert not await manager.disconnect("c")


@pytest.mark.anyio
async def test_a_client_whose_send_fails_is_forgotten() -> None:
    class Gone(FakeSocket):
        async def send_text(self, data: str) -> None:
            raise ConnectionResetError

    async with ConnectionManager(heartbeat_interval=None) as manager:
        await manager.connect(Gone(), "gone", rooms=["r"])
        await manager.broadcast("r", "x")
        await until(lambda: "gone" not in manager)
        assert manager.presence() == {}


@pytest.mark.anyio
async def test_aclose_closes_with_1001_and_cancels_every_task() -> None:
    manager = ConnectionManager(heartbeat_interval=0.01)
    socks = [FakeSocket() for _ in range(3)] + [FakeSocket(stall=True)]
    for s in socks:
        await manager.connect(s)
    tasks = [c.task for c in manager._clients.values()]
    await manager.aclose()
    assert [s.closed for s in socks] == [1001] * 4
    assert all(t is not None and t.done() for t in tasks)
    assert len(manager) == 0


@pytest.mark.anyio
async def test_send_to_unknown_client_is_a_no_op() -> None:
    async with ConnectionManager() as manager:
        assert await manager.send_to("nobody", "x") is False
        assert await manager.join("nobody", "r") is False
        assert manager.rooms("nobody") == frozenset()


@pytest.mark.anyio
async def test_messages_that_are_not_json_serialisable_raise_type_error() -> None:
    async with ConnectionManager() as manager:
        with pytest.raises(TypeError):
            await manager.broadcast(None, {"x": object()})  # type: ignore[dict-item]
        with pytest.raises(ValueError, match="JSON"):
            await manager.broadcast(None, {"x": float("nan")})


@pytest.mark.anyio
async def test_two_managers_sharing_one_backend_deliver_each_broadcast_exactly_once() -> None:
    backend = MemoryBackend()
    one = ConnectionManager(backend, heartbeat_interval=None)
    two = ConnectionManager(backend, heartbeat_interval=None)
    async with one, two:
        a, b = FakeSocket(), FakeSocket()
        await one.connect(a, "a", rooms=["r"])
        await two.connect(b, "b", rooms=["r"])
        assert await one.broadcast("r", "hi") == 1
        await until(lambda: b.sent == ["hi"])
        assert await two.send_to("a", "dm") is False  # forwarded to the other instance
        assert await two.join("a", "extra") is False
        await until(lambda: a.sent == ["hi", "dm"] and "extra" in one.rooms("a"))
        await two.broadcast("extra", "x", exclude="nobody")
        await until(lambda: a.sent[-1] == "x")
        assert not await two.disconnect("a", code=4001)
        await until(lambda: a.closed == 4001)
        await asyncio.sleep(0.05)
        assert a.sent == ["hi", "dm", "x"]
        assert b.sent == ["hi"]
    await backend.aclose()


# --------------------------------------------------------------------------- bad input, config


@pytest.mark.anyio
@pytest.mark.parametrize("bad", ["", "x" * 257, 5])
async def test_bad_room_or_client_id_is_a_400_without_echo(bad: Any) -> None:
    async with ConnectionManager() as manager:
        with pytest.raises(BadRequest) as info:
            await manager.connect(FakeSocket(), bad)
        assert info.value.status_code == 400
        assert "x" * 20 not in str(info.value)
        cid = await manager.connect(FakeSocket())
        with pytest.raises(BadRequest):
            await manager.join(cid, bad)
        with pytest.raises(BadRequest):
            await manager.broadcast(bad, "x")


@pytest.mark.anyio
async def test_connecting_the_same_id_twice_raises_conflict() -> None:
    async with ConnectionManager() as manager:
        await manager.connect(FakeSocket(), "a")
        second = FakeSocket()
        with pytest.raises(Conflict):
            await manager.connect(second, "a")
        assert second.closed == 1008
        assert manager.count() == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"heartbeat_interval": 0},
        {"send_queue_size": 0},
        {"send_timeout": -1},
        {"overflow": "block"},
        {"max_message_size": 0},
        {"backend": "ftp://x"},
    ],
)
def test_bad_configuration_raises_configuration_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        ConnectionManager(**kwargs)


def test_from_env_reads_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_BACKEND_URL", "memory://")
    monkeypatch.setenv("APP_WEBSOCKET_HEARTBEAT_INTERVAL", "0")
    monkeypatch.setenv("APP_WEBSOCKET_SEND_QUEUE_SIZE", "7")
    monkeypatch.setenv("APP_WEBSOCKET_OVERFLOW", "drop_new")
    monkeypatch.setenv("APP_WEBSOCKET_CHANNEL_PREFIX", "grn:")
    manager = ConnectionManager.from_env("APP_", send_timeout=1.5)
    assert manager.heartbeat_interval is None
    assert manager.send_queue_size == 7
    assert manager.overflow == "drop_new"
    assert manager.channel == "grn:events"
    assert manager.send_timeout == 1.5
    assert not manager.distributed


def test_from_env_rejects_unparsable_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENNET_WEBSOCKET_SEND_TIMEOUT", "soon")
    with pytest.raises(ConfigurationError, match="GENNET_WEBSOCKET_SEND_TIMEOUT"):
        ConnectionManager.from_env()


def test_importing_the_module_starts_nothing() -> None:
    manager = ConnectionManager()
    assert manager.stats["clients"] == 0
    assert "distributed=False" in repr(manager)


def test_docs_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    block = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)[0]
    exec(compile(block, "websocket_manager.md", "exec", dont_inherit=True), {"__name__": "doc"})
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "{'added': {'regulator': 'lacI', 'target': 'lacZ'}}",
        "{'network:lac': 1}",
    ]


@pytest.mark.anyio
async def test_a_broadcast_during_the_handshake_is_delivered_after_it() -> None:
    class SlowAccept(FakeSocket):
        def __init__(self) -> None:
            super().__init__()
            self.accepted = asyncio.Event()
            self.release = asyncio.Event()

        async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
            self.accepted.set()
            await self.release.wait()

    async with ConnectionManager(heartbeat_interval=None) as manager:
        sock = SlowAccept()
        connecting = asyncio.create_task(manager.connect(sock, "c", rooms=["r"]))
        await sock.accepted.wait()
        assert await manager.broadcast("r", "early") == 1
        assert sock.sent == []  # nothing is sent before the handshake completes
        sock.release.set()
        await connecting
        await until(lambda: sock.sent == ["early"])


@pytest.mark.anyio
async def test_resync_message_goes_to_local_clients_after_a_resubscription() -> None:
    class Flaky(MemoryBackend):
        fail = 0

        async def subscribe(self, *channels: str) -> Any:
            if self.fail:
                self.fail -= 1
                raise ConnectionError("down")
            return await super().subscribe(*channels)

    backend = Flaky()
    async with ConnectionManager(
        backend, heartbeat_interval=None, resync_message={"type": "resync"}
    ) as manager:
        sock = FakeSocket()
        await manager.connect(sock, "c")
        # Kill the live subscription: the listener notices and resubscribes after one failure.
        backend.fail = 1
        await backend.publish(manager.channel, b"not an envelope")  # ignored
        for sub in list(backend._store.hub._subs.get(manager.channel, ())):
            await sub.aclose()  # type: ignore[attr-defined]
        await until(lambda: manager.stats["resubscribed"] == 1, 30)
        await until(lambda: sock.sent == ['{"type":"resync"}'])
    await backend.aclose()


def test_a_socket_the_endpoint_accepted_itself_is_not_accepted_twice() -> None:
    manager = ConnectionManager(heartbeat_interval=None)

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol="grn.v1")
        async with manager.session(websocket, "a"):
            async for _ in manager.iter_messages(websocket):
                await manager.send_to("a", "pong")

    app = Starlette(routes=[WebSocketRoute("/ws", ws)], lifespan=manager.lifespan)
    with TestClient(app) as http, http.websocket_connect("/ws", subprotocols=["grn.v1"]) as c:
        assert c.accepted_subprotocol == "grn.v1"
        c.send_bytes(b"ping")
        assert c.receive_text() == "pong"


def test_connect_passes_the_subprotocol_to_the_handshake() -> None:
    manager = ConnectionManager(heartbeat_interval=None)

    async def ws(websocket: WebSocket) -> None:
        async with manager.session(websocket, subprotocol="grn.v1"):
            async for _ in manager.iter_messages(websocket):
                pass

    app = Starlette(routes=[WebSocketRoute("/ws", ws)], lifespan=manager.lifespan)
    with TestClient(app) as http, http.websocket_connect("/ws", subprotocols=["grn.v1"]) as c:
        assert c.accepted_subprotocol == "grn.v1"


def test_from_env_with_a_redis_url_is_distributed_and_connects_lazily(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GENNET_WEBSOCKET_BACKEND", "redis://127.0.0.1:1/0")  # nothing listens
    manager = ConnectionManager.from_env()
    assert manager.distributed
    assert "127.0.0.1" not in repr(manager)


@pytest.mark.anyio
async def test_iter_messages_yields_text_and_bytes_until_disconnect() -> None:
    class Receiver:
        def __init__(self, messages: list[dict[str, Any]]) -> None:
            self.messages = messages
            self.closed: int | None = None

        async def receive(self) -> dict[str, Any]:
            return self.messages.pop(0)

        async def close(self, code: int = 1000, reason: str | None = None) -> None:
            self.closed = code

    sock = Receiver(
        [
            {"type": "websocket.receive", "text": "a"},
            {"type": "websocket.receive", "bytes": b"b"},
            {"type": "websocket.disconnect", "code": 1000},
        ]
    )
    got = [m async for m in websocket_manager.iter_messages(sock, max_size=10)]
    assert got == ["a", b"b"]
    assert sock.closed is None
    big = Receiver([{"type": "websocket.receive", "bytes": b"x" * 11}])
    assert [m async for m in websocket_manager.iter_messages(big, max_size=10)] == []
    assert big.closed == 1009
    with pytest.raises(ValueError, match="max_size"):
        [m async for m in websocket_manager.iter_messages(big, max_size=0)]


@pytest.mark.anyio
async def test_ending_a_dropped_session_leaves_a_new_connection_with_the_same_id_alone() -> None:
    backend = MemoryBackend()  # shared: a stray "close" would be forwarded too
    async with ConnectionManager(backend, heartbeat_interval=None, send_queue_size=1) as manager:
        old = FakeSocket(stall=True)
        session = manager.session(old, "a")
        await session.__aenter__()
        for text in ("taken by the stalled sender", "buffered", "overflows"):
            await manager.send_to("a", text)
        assert old.closed == 1013 or "a" not in manager
        new = FakeSocket()
        await manager.connect(new, "a")
        await session.__aexit__(None, None, None)
        assert "a" in manager
        await manager.send_to("a", "hi")
        await until(lambda: new.sent == ["hi"])
        assert new.closed is None
        await until(lambda: old.closed == 1013)
    await backend.aclose()


@pytest.mark.anyio
async def test_broadcast_to_several_rooms_reaches_each_client_once_on_every_instance() -> None:
    backend = MemoryBackend()
    one = ConnectionManager(backend, heartbeat_interval=None)
    two = ConnectionManager(backend, heartbeat_interval=None)
    async with one, two:
        both, only_x, none = FakeSocket(), FakeSocket(), FakeSocket()
        remote_both = FakeSocket()
        await one.connect(both, "both", rooms=["x", "y"])
        await one.connect(only_x, "only_x", rooms=["x"])
        await one.connect(none, "none", rooms=["z"])
        await two.connect(remote_both, "remote_both", rooms=["x", "y"])
        assert await one.broadcast(["x", "y", "x"], "hi") == 2
        assert await one.broadcast([], "nobody") == 0
        await until(lambda: remote_both.sent == ["hi"])
        await asyncio.sleep(0.05)
        assert both.sent == ["hi"]
        assert only_x.sent == ["hi"]
        assert none.sent == []
        assert remote_both.sent == ["hi"]
    await backend.aclose()


@pytest.mark.anyio
async def test_close_room_empties_it_on_every_instance() -> None:
    backend = MemoryBackend()
    one = ConnectionManager(backend, heartbeat_interval=None)
    two = ConnectionManager(backend, heartbeat_interval=None)
    async with one, two:
        await one.connect(FakeSocket(), "a", rooms=["x", "keep"])
        await two.connect(FakeSocket(), "b", rooms=["x"])
        assert await one.close_room("x") == 1
        await until(lambda: two.count("x") == 0)
        assert one.presence() == {"keep": 1}
        assert one.rooms("a") == {"keep"}
        assert "b" in two
    await backend.aclose()


@pytest.mark.anyio
async def test_a_background_task_that_dies_is_logged_loudly(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = ConnectionManager()

    async def broken() -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(manager, "_watch", broken)
    with caplog.at_level(logging.ERROR, "gennet_toolkit.websocket_manager"):
        async with manager:
            await until(lambda: any("died" in r.getMessage() for r in caplog.records))
    assert "ws-manager-watchdog" in caplog.text
