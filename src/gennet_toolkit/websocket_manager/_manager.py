"""ConnectionManager: local clients, rooms, per-client send queues, cross-instance fan-out."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterable
from typing import Any, Literal, Self

from gennet_toolkit._env import env_float, env_int, env_str
from gennet_toolkit.backends import Backend, from_url
from gennet_toolkit.backends.memory import MemoryBackend
from gennet_toolkit.exceptions import BadRequest, ConfigurationError, Conflict
from gennet_toolkit.websocket_manager._client import Client, Close
from gennet_toolkit.websocket_manager._relay import Relay, report_death
from gennet_toolkit.websocket_manager._wire import (
    GOING_AWAY,
    MAX_NAME,
    NORMAL,
    POLICY_VIOLATION,
    TRY_AGAIN_LATER,
    Envelope,
    Payload,
    ReceivingWebSocket,
    WebSocketLike,
    encode,
    iter_json,
    iter_messages,
    logger,
)

__all__ = ["ConnectionManager"]

Overflow = Literal["disconnect", "drop_oldest", "drop_new"]
_OVERFLOWS = ("disconnect", "drop_oldest", "drop_new")


def _check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME:
        # Never echo the value: it may come from the client.
        raise BadRequest(f"{what} must be a non-empty string of at most {MAX_NAME} characters")
    return value


def _check_names(value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        return (_check_name(value, "room"),)  # a non-name raises here
    return tuple(dict.fromkeys(_check_name(r, "room") for r in value))


def _state_is(websocket: object, attr: str, name: str) -> bool:
    # Starlette's WebSocketState enum, read by name so Starlette need not be imported.
    state = getattr(websocket, attr, None)
    return getattr(state, "name", None) == name


class ConnectionManager:
    """WebSocket clients, rooms and broadcasts, in one process or across many.

    ::

        manager = ConnectionManager("redis://127.0.0.1:6379/0")

        @app.websocket_route("/ws")
        async def ws(websocket):
            async with manager.session(websocket, rooms=["lobby"]) as client_id:
                async for text in manager.iter_messages(websocket):
                    await manager.broadcast("lobby", {"from": client_id, "text": text})

    Each client gets a bounded send queue drained by its own task, so a broadcast only
    enqueues and never waits on a socket. A client whose queue overflows
    (``overflow="disconnect"``) is closed with 1013, one whose send takes longer than
    ``send_timeout`` with 1008; the others never notice. An idle client gets
    ``heartbeat_message`` every ``heartbeat_interval`` seconds, which keeps proxies
    from cutting the connection and finds dead peers.

    With a shared backend (``redis://…``, or one :class:`~gennet_toolkit.backends.Backend`
    object given to several managers), every instance subscribes once to
    ``{channel_prefix}events``; broadcasts, ``send_to``, ``join``, ``leave`` and
    ``disconnect`` reach clients on every instance, exactly once. With ``memory://``
    (a URL) the manager is alone and publishes nothing.
    """

    def __init__(
        self,
        backend: str | Backend = "memory://",
        *,
        heartbeat_interval: float | None = 20.0,
        heartbeat_message: Payload = {"type": "ping"},  # noqa: B006 - never mutated
        send_queue_size: int = 256,
        send_timeout: float = 5.0,
        overflow: Overflow = "disconnect",
        close_timeout: float = 2.0,
        max_message_size: int = 65536,
        channel_prefix: str = "gennet:ws:",
        instance_id: str | None = None,
        resync_message: Payload | None = None,
    ) -> None:
        if heartbeat_interval is not None and not heartbeat_interval > 0:
            raise ConfigurationError("heartbeat_interval must be > 0 (or None for no heartbeat)")
        if send_queue_size < 1:
            raise ConfigurationError("send_queue_size must be >= 1")
        if not send_timeout > 0 or not close_timeout > 0:
            raise ConfigurationError("send_timeout and close_timeout must be > 0")
        if overflow not in _OVERFLOWS:
            raise ConfigurationError(f"overflow must be one of {', '.join(_OVERFLOWS)}")
        if max_message_size < 1:
            raise ConfigurationError("max_message_size must be >= 1")
        if isinstance(backend, str):
            self._backend = from_url(backend)
            self._owns_backend = True
            # A private in-process backend has no other subscriber: skip pub/sub.
            self.distributed = not isinstance(self._backend, MemoryBackend)
        else:
            self._backend = backend
            self._owns_backend = False
            self.distributed = True
        self.heartbeat_interval = heartbeat_interval
        self.send_queue_size = send_queue_size
        self.send_timeout = send_timeout
        self.overflow: Overflow = overflow
        self.close_timeout = close_timeout
        self.max_message_size = max_message_size
        self.channel = channel_prefix + "events"
        #: Carried by every message this instance publishes, so it skips its own.
        self.instance_id = instance_id or uuid.uuid4().hex
        self._heartbeat = encode(heartbeat_message)
        self._resync = None if resync_message is None else encode(resync_message)
        self._clients: dict[str, Client] = {}
        self._rooms: dict[str, dict[str, Client]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stats = dict.fromkeys(
            ("dropped", "overflowed", "publish_failed", "resubscribed", "gaps", "remote_received"),
            0,
        )
        self._relay = (
            Relay(
                self._backend,
                channel=self.channel,
                instance_id=self.instance_id,
                stats=self._stats,
                on_envelope=self._apply,
                on_gap=self._gap,
            )
            if self.distributed
            else None
        )

    @classmethod
    def from_env(cls, prefix: str = "GENNET_", **overrides: Any) -> ConnectionManager:
        """Configure from ``{prefix}WEBSOCKET_*``: ``BACKEND`` (else ``{prefix}BACKEND_URL``,
        else ``memory://``), ``HEARTBEAT_INTERVAL`` (``0``: none), ``SEND_QUEUE_SIZE``,
        ``SEND_TIMEOUT``, ``OVERFLOW``, ``CLOSE_TIMEOUT``, ``MAX_MESSAGE_SIZE`` and
        ``CHANNEL_PREFIX``. Keywords override the environment."""
        own = prefix + "WEBSOCKET_"
        kwargs: dict[str, Any] = {}
        backend = env_str(own + "BACKEND") or env_str(prefix + "BACKEND_URL")
        if backend is not None:
            kwargs["backend"] = backend
        heartbeat = env_float(own + "HEARTBEAT_INTERVAL")
        if heartbeat is not None:
            kwargs["heartbeat_interval"] = heartbeat or None
        for key, reader in (
            ("send_queue_size", env_int),
            ("max_message_size", env_int),
            ("send_timeout", env_float),
            ("close_timeout", env_float),
            ("overflow", env_str),
            ("channel_prefix", env_str),
        ):
            value = reader(own + key.upper())
            if value is not None:
                kwargs[key] = value
        kwargs.update(overrides)
        return cls(**kwargs)

    def __repr__(self) -> str:
        return (
            f"ConnectionManager(clients={len(self._clients)}, rooms={len(self._rooms)},"
            f" distributed={self.distributed})"
        )

    # ------------------------------------------------------------------ lifecycle

    def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        if self._loop is not None and not self._loop.is_closed() and self._clients:
            raise RuntimeError("a ConnectionManager serves one event loop at a time")
        # A new loop (a new TestClient, a restarted server): old tasks are gone with the old one.
        self._loop = loop
        self._clients.clear()
        self._rooms.clear()
        self._tasks = set()
        self._watchdog = None
        if self._relay is not None:
            self._relay.reset()

    async def start(self) -> None:
        """Subscribe to the shared channel (done by the first ``connect`` otherwise).

        Returns once subscribed, or after the first failed attempt (the listener keeps
        retrying in the background). Idempotent.
        """
        self._bind()
        if self._watchdog is None:
            self._watchdog = asyncio.create_task(self._watch(), name="ws-manager-watchdog")
            self._watchdog.add_done_callback(report_death)
        if self._relay is not None:
            await self._relay.start()

    async def aclose(self, code: int = GOING_AWAY, reason: str = "server shutting down") -> None:
        """Close every client with ``code`` (1001), stop every task, release the backend."""
        if self._loop is not asyncio.get_running_loop():
            return
        clients = list(self._clients.values())
        for client in clients:
            self._forget(client)
            if client.task is not None:
                client.task.cancel()
        await asyncio.gather(*(self._close_socket(c, code, reason) for c in clients))
        if self._relay is not None:
            await self._relay.stop()
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
            self._watchdog = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._loop = None
        if self._owns_backend:
            await self._backend.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object) -> AsyncIterator[None]:
        """A Starlette/FastAPI ``lifespan``: start on startup, :meth:`aclose` on shutdown."""
        await self.start()
        try:
            yield
        finally:
            await self.aclose()

    # ------------------------------------------------------------------ connections

    async def connect(
        self,
        websocket: WebSocketLike,
        client_id: str | None = None,
        *,
        rooms: Iterable[str] = (),
        subprotocol: str | None = None,
        headers: Iterable[tuple[bytes, bytes]] | None = None,
    ) -> str:
        """Accept ``websocket`` (unless already accepted), register it and start its sender.

        Returns the client id (``client_id`` or a random one). An id already connected
        to this instance refuses the handshake (or closes with 1008 when the socket was
        accepted already) and raises :class:`~gennet_toolkit.exceptions.Conflict`.
        ``rooms`` are joined at once.
        """
        client = await self._connect(websocket, client_id, rooms, subprotocol, headers)
        return client.id

    async def _connect(
        self,
        websocket: WebSocketLike,
        client_id: str | None,
        rooms: Iterable[str],
        subprotocol: str | None,
        headers: Iterable[tuple[bytes, bytes]] | None,
    ) -> Client:
        client_id = uuid.uuid4().hex if client_id is None else _check_name(client_id, "client_id")
        room_names = [_check_name(r, "room") for r in rooms]
        await self.start()
        if client_id in self._clients:
            # Refuse the handshake (403) or, once accepted, close with 1008.
            await websocket.close(code=POLICY_VIOLATION, reason="client id in use")
            raise Conflict("a client with this id is already connected")
        # Registered before the handshake completes, so a broadcast racing with the
        # client's first request is queued, and sent once the sender starts.
        client = Client(client_id, websocket, asyncio.get_running_loop().time())
        self._clients[client_id] = client
        for room in room_names:
            self._join_local(client, room)
        accept = getattr(websocket, "accept", None)
        if accept is not None and (
            _state_is(websocket, "application_state", "CONNECTING")
            or not hasattr(websocket, "application_state")
        ):
            try:
                await accept(subprotocol=subprotocol, headers=headers)
            except BaseException:
                self._forget(client)
                raise
        if not client.closed:  # not disconnected or dropped during the handshake
            client.task = asyncio.create_task(self._sender(client), name=f"ws-send-{client_id}")
        return client

    @contextlib.asynccontextmanager
    async def session(
        self,
        websocket: WebSocketLike,
        client_id: str | None = None,
        *,
        rooms: Iterable[str] = (),
        subprotocol: str | None = None,
    ) -> AsyncIterator[str]:
        """``connect`` on entry, ``disconnect`` on exit (also on errors and cancellation)."""
        client = await self._connect(websocket, client_id, rooms, subprotocol, None)
        try:
            yield client.id
        finally:
            # This connection only: never a client that reused the id since, here or on
            # another instance.
            await self._disconnect(client, NORMAL, "")

    async def disconnect(self, client_id: str, code: int = NORMAL, reason: str = "") -> bool:
        """Send what is queued for ``client_id``, then close it with ``code``.

        Waits at most ``close_timeout`` for the queue to drain. A client on another
        instance is closed there (returns ``False``); ``True`` when it was local.
        """
        client = self._clients.get(client_id)
        if client is None:
            await self._publish(Envelope("close", self.instance_id, target=client_id, code=code))
            return False
        await self._disconnect(client, code, reason)
        return True

    async def _disconnect(self, client: Client, code: int, reason: str) -> None:
        if client.closed:  # dropped or closed already; its socket was closed then
            return
        self._forget(client)
        task = client.task
        if task is None or task.done():
            await self._close_socket(client, code, reason)
            return
        client.push(Close(code, reason))
        done, _ = await asyncio.wait([task], timeout=self.close_timeout)
        if not done:
            task.cancel()
            await self._close_socket(client, code, reason)

    def iter_messages(self, websocket: ReceivingWebSocket) -> AsyncIterator[str | bytes]:
        """:func:`~gennet_toolkit.websocket_manager.iter_messages` with ``max_message_size``."""
        return iter_messages(websocket, max_size=self.max_message_size)

    def iter_json(self, websocket: ReceivingWebSocket) -> AsyncIterator[Any]:
        """:func:`~gennet_toolkit.websocket_manager.iter_json` with ``max_message_size``."""
        return iter_json(websocket, max_size=self.max_message_size)

    # ------------------------------------------------------------------ rooms

    async def join(self, client_id: str, room: str) -> bool:
        """Add the client to ``room``; forwarded to its instance when not local.

        ``True`` when the client is connected here.
        """
        _check_name(room, "room")
        client = self._clients.get(client_id)
        if client is None:
            await self._publish(Envelope("join", self.instance_id, room=room, target=client_id))
            return False
        self._join_local(client, room)
        return True

    async def leave(self, client_id: str, room: str) -> bool:
        """Remove the client from ``room`` (see :meth:`join`)."""
        _check_name(room, "room")
        client = self._clients.get(client_id)
        if client is None:
            await self._publish(Envelope("leave", self.instance_id, room=room, target=client_id))
            return False
        self._leave_local(client, room)
        return True

    async def close_room(self, room: str) -> int:
        """Remove every member from ``room``, on every instance; the local count removed."""
        _check_name(room, "room")
        removed = self._close_room_local(room)
        await self._publish(Envelope("close_room", self.instance_id, room=room))
        return removed

    def _close_room_local(self, room: str) -> int:
        members = list(self._rooms.get(room, {}).values())
        for client in members:
            self._leave_local(client, room)
        return len(members)

    def _join_local(self, client: Client, room: str) -> None:
        if client.closed:
            return
        client.rooms.add(room)
        self._rooms.setdefault(room, {})[client.id] = client

    def _leave_local(self, client: Client, room: str) -> None:
        client.rooms.discard(room)
        members = self._rooms.get(room)
        if members is not None:
            members.pop(client.id, None)
            if not members:
                del self._rooms[room]

    def rooms(self, client_id: str | None = None) -> frozenset[str]:
        """Rooms with a member on this instance, or the rooms of one local client."""
        if client_id is None:
            return frozenset(self._rooms)
        client = self._clients.get(client_id)
        return frozenset() if client is None else frozenset(client.rooms)

    def members(self, room: str) -> frozenset[str]:
        """Ids of this instance's clients in ``room``."""
        return frozenset(self._rooms.get(room, ()))

    def presence(self) -> dict[str, int]:
        """``{room: number of clients}`` on this instance."""
        return {room: len(members) for room, members in self._rooms.items()}

    def count(self, room: str | None = None) -> int:
        """Clients connected to this instance, or in one of its rooms."""
        if room is None:
            return len(self._clients)
        return len(self._rooms.get(room, ()))

    @property
    def clients(self) -> frozenset[str]:
        """Ids of the clients connected to this instance."""
        return frozenset(self._clients)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._clients

    def __len__(self) -> int:
        return len(self._clients)

    @property
    def stats(self) -> dict[str, int]:
        """Counters: ``clients``, ``rooms``, ``dropped`` (slow clients closed),
        ``overflowed`` (messages discarded by ``drop_oldest``/``drop_new``),
        ``publish_failed``, ``resubscribed``, ``gaps`` (outages after which messages may
        be missing: ``resync_message`` went out), ``remote_received``."""
        return {"clients": len(self._clients), "rooms": len(self._rooms), **self._stats}

    # ------------------------------------------------------------------ sending

    async def broadcast(
        self,
        room: str | Iterable[str] | None,
        message: Payload,
        *,
        exclude: str | Iterable[str] = (),
    ) -> int:
        """Send ``message`` to every client in ``room`` (``None``: every client), on every
        instance, except the ids in ``exclude``.

        ``room`` may be several rooms: a client in more than one of them gets the
        message once. Dicts and lists go as JSON text, ``str`` as text, bytes as
        binary. Returns how many local clients it was queued for; it never waits on a
        socket. When the backend is down, local clients still get it and the failure
        is logged once.
        """
        if isinstance(room, str):
            _check_name(room, "room")
        elif room is not None:
            room = _check_names(room)
            if not room:
                return 0
        data = encode(message)
        skip = (exclude,) if isinstance(exclude, str) else tuple(exclude)
        queued = self._deliver(room, data, skip)
        # Let the senders run: a tight loop of broadcasts that never yields would
        # fill every queue and drop healthy clients along with slow ones.
        await asyncio.sleep(0)
        if self._relay is not None:
            await self._relay.publish(
                Envelope("msg", self.instance_id, room=room, exclude=skip, data=data)
            )
        return queued

    async def send_to(self, client_id: str, message: Payload) -> bool:
        """Send ``message`` to one client, wherever it is connected.

        ``True`` when it was queued for a local client; ``False`` when it was handed to
        the other instances (or nobody has that client).
        """
        data = encode(message)
        client = self._clients.get(client_id)
        if client is not None:
            queued = self._enqueue(client, data)
            await asyncio.sleep(0)  # as in broadcast: let the sender run
            return queued
        await self._publish(Envelope("msg", self.instance_id, target=client_id, data=data))
        return False

    def _deliver(
        self, room: str | tuple[str, ...] | None, data: str | bytes, skip: tuple[str, ...]
    ) -> int:
        if room is None:
            targets = list(self._clients.values())
        elif isinstance(room, str):
            members = self._rooms.get(room)
            if not members:
                return 0
            targets = list(members.values())
        else:
            union: dict[str, Client] = {}
            for name in room:
                union.update(self._rooms.get(name, {}))
            targets = list(union.values())
        enqueue = self._enqueue
        if skip:
            return sum(enqueue(c, data) for c in targets if c.id not in skip)
        return sum(enqueue(c, data) for c in targets)

    def _enqueue(self, client: Client, data: str | bytes) -> bool:
        if len(client.buf) < self.send_queue_size:
            client.push(data)
            return True
        if client.closed:
            return False
        if self.overflow == "disconnect":
            self._drop(client, TRY_AGAIN_LATER, "send queue full")
            return False
        self._stats["overflowed"] += 1
        if self.overflow == "drop_new":
            return False
        client.buf.popleft()
        client.push(data)
        return True

    async def _sender(self, client: Client) -> None:
        ws, buf = client.websocket, client.buf
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not buf:
                    waiter = client.waiter = loop.create_future()
                    await waiter
                    continue
                item = buf.popleft()
                # The watchdog reads sending_since: no timer per send, which would
                # cost more than the send itself when fanning out to thousands.
                client.sending_since = start = loop.time()
                if isinstance(item, str):
                    await ws.send_text(item)
                elif isinstance(item, bytes):
                    await ws.send_bytes(item)
                else:
                    client.sending_since = 0.0
                    await self._close_socket(client, item.code, item.reason)
                    return
                client.sending_since = 0.0
                client.last_sent = start
        except Exception as exc:  # a send to a gone client fails in many ways
            # The peer went away: nothing to close, just stop tracking it.
            logger.debug("websocket client %s gone (%s)", client.id, type(exc).__name__)
            self._forget(client)

    async def _watch(self) -> None:
        """Drop clients whose send is stuck; queue heartbeats for idle ones."""
        loop = asyncio.get_running_loop()
        limit, interval, beat = self.send_timeout, self.heartbeat_interval, self._heartbeat
        tick = max(0.005, min(limit, interval or limit) / 4)
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            for client in list(self._clients.values()):
                since = client.sending_since
                if since:
                    if now - since > limit:
                        self._drop(client, POLICY_VIOLATION, "send timed out")
                elif interval is not None and not client.buf and now - client.last_sent >= interval:
                    client.last_sent = now
                    client.push(beat)

    def _drop(self, client: Client, code: int, reason: str) -> None:
        if client.closed:
            return
        self._forget(client)
        self._stats["dropped"] += 1
        logger.warning("websocket client %s dropped: %s (closing with %d)", client.id, reason, code)
        task = client.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self._spawn(self._close_socket(client, code, reason))

    def _forget(self, client: Client) -> None:
        if client.closed:
            return
        client.closed = True
        if self._clients.get(client.id) is client:
            del self._clients[client.id]
        for room in list(client.rooms):
            self._leave_local(client, room)

    async def _close_socket(self, client: Client, code: int, reason: str) -> None:
        task = client.task
        if task is not None and task is not asyncio.current_task() and not task.done():
            # Let a cancelled sender unwind before a close frame follows it.
            await asyncio.wait([task], timeout=self.close_timeout)
        ws = client.websocket
        if _state_is(ws, "application_state", "DISCONNECTED") or _state_is(
            ws, "client_state", "DISCONNECTED"
        ):
            return
        try:
            async with asyncio.timeout(self.close_timeout):
                await ws.close(code=code, reason=reason)
        except Exception as exc:  # the peer may be gone already; closing is best effort
            logger.debug("closing websocket client %s failed (%s)", client.id, type(exc).__name__)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ other instances

    async def _publish(self, envelope: Envelope) -> None:
        if self._relay is not None:
            await self._relay.publish(envelope)

    def _gap(self) -> None:
        self._stats["gaps"] += 1
        if self._resync is not None:
            self._deliver(None, self._resync, ())

    def _apply(self, envelope: Envelope) -> None:
        op, target = envelope.op, envelope.target
        if op == "msg":
            if target is None:
                self._deliver(envelope.room, envelope.data, envelope.exclude)
            elif (client := self._clients.get(target)) is not None:
                self._enqueue(client, envelope.data)
            return
        if op == "gap":
            self._gap()
            return
        room = envelope.room if isinstance(envelope.room, str) else None
        if op == "close_room" and room:
            self._close_room_local(room)
            return
        client = None if target is None else self._clients.get(target)
        if client is None:
            return
        if op == "join" and room:
            self._join_local(client, room)
        elif op == "leave" and room:
            self._leave_local(client, room)
        elif op == "close":
            self._forget(client)
            if client.task is not None:
                client.task.cancel()
            self._spawn(self._close_socket(client, envelope.code, ""))
