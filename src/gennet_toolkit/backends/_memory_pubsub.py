"""In-process pub/sub: bounded queues per subscriber, for asyncio tasks and threads alike."""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable

from gennet_toolkit.backends.base import Message, Subscription, SyncSubscription

__all__ = ()


class _Sub(ABC):
    """What the hub needs from a subscriber: a name list and a non-blocking ``deliver``."""

    channels: tuple[str, ...]
    strip: int
    dropped: int

    @abstractmethod
    def deliver(self, msg: Message) -> bool:
        """Queue ``msg`` without blocking; ``False`` if it had to be dropped."""


class Hub:
    """Channel name -> subscribers. Publishing never blocks: a full queue drops its oldest."""

    def __init__(self, *, queue_size: int) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self.queue_size = queue_size
        self._lock = threading.Lock()
        self._subs: dict[str, set[_Sub]] = {}

    def publish(self, channel: str, data: bytes, strip: int) -> int:
        with self._lock:
            targets = list(self._subs.get(channel, ()))
        msg = Message(channel[strip:], data)
        return sum(sub.deliver(msg) for sub in targets)

    def _add(self, sub: _Sub) -> None:
        with self._lock:
            for ch in sub.channels:
                self._subs.setdefault(ch, set()).add(sub)

    def remove(self, sub: _Sub) -> None:
        with self._lock:
            for ch in sub.channels:
                subs = self._subs.get(ch)
                if subs is not None:
                    subs.discard(sub)
                    if not subs:
                        del self._subs[ch]

    def subscribe_sync(self, channels: Iterable[str]) -> SyncSubscription:
        sub = _ThreadSub(self, tuple(channels))
        self._add(sub)
        return sub

    def subscribe_async(self, channels: Iterable[str]) -> Subscription:
        sub = _TaskSub(self, tuple(channels), asyncio.get_running_loop())
        self._add(sub)
        return sub


class _ThreadSub(_Sub, SyncSubscription):
    def __init__(self, hub: Hub, channels: tuple[str, ...]) -> None:
        self._hub = hub
        self.channels = channels
        self.dropped = 0
        self._items: deque[Message | None] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def deliver(self, msg: Message) -> bool:
        with self._cond:
            if self._closed:
                return False
            if len(self._items) >= self._hub.queue_size:
                self._items.popleft()
                self.dropped += 1
            self._items.append(msg)
            self._cond.notify()
        return True

    def get(self, timeout: float | None = None) -> Message | None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                return None
            if self._closed and not self._items:
                return None
            return self._items.popleft()

    def close(self) -> None:
        self._hub.remove(self)
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()


class _TaskSub(_Sub, Subscription):
    def __init__(
        self, hub: Hub, channels: tuple[str, ...], loop: asyncio.AbstractEventLoop
    ) -> None:
        self._hub = hub
        self.channels = channels
        self.dropped = 0
        self._loop = loop
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue()
        self._closed = False

    def _put(self, msg: Message | None) -> None:
        # Runs on the subscriber's loop, so the queue is only touched from there.
        if msg is not None and self._queue.qsize() >= self._hub.queue_size:
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(msg)

    def deliver(self, msg: Message) -> bool:
        if self._closed:
            return False
        try:
            self._loop.call_soon_threadsafe(self._put, msg)
        except RuntimeError:  # the subscriber's loop is closed: it can never read again
            self._closed = True
            self._hub.remove(self)
            return False
        return True

    async def get(self, timeout: float | None = None) -> Message | None:  # noqa: ASYNC109
        if self._closed and self._queue.empty():
            return None
        try:
            async with asyncio.timeout(timeout):
                return await self._queue.get()
        except TimeoutError:
            return None

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._hub.remove(self)
        self._put(None)  # wakes a reader blocked in get()
