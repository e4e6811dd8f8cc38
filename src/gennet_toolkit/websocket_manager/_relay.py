"""The link between instances: one subscription per manager, and publishing that
survives a backend outage (logged once, retried with backoff, gaps announced)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable

from gennet_toolkit.backends import Backend, Subscription
from gennet_toolkit.websocket_manager._wire import Envelope, logger

__all__ = ()

# How long the listener waits for a message before probing its own subscription.
PROBE_INTERVAL = 5.0


def backoff(attempt: int) -> float:
    """A jittered, growing pause: 0.05-0.1 s at first, 2.5-5 s at most."""
    return min(5.0, 0.1 * 2.0 ** min(attempt, 6)) * (0.5 + random.random() / 2)


def report_death(task: asyncio.Task[None]) -> None:
    """Log loudly when a manager's background task ends other than by cancellation."""
    if not task.cancelled() and task.exception() is not None:
        logger.error(
            "websocket manager task %s died; restart the manager",
            task.get_name(),
            exc_info=task.exception(),
        )


class Relay:
    """Publishes this instance's envelopes and feeds the others' to ``on_envelope``."""

    def __init__(
        self,
        backend: Backend,
        *,
        channel: str,
        instance_id: str,
        stats: dict[str, int],
        on_envelope: Callable[[Envelope], None],
        on_gap: Callable[[], None],
    ) -> None:
        self.backend = backend
        self.channel = channel
        self.instance_id = instance_id
        self._stats = stats
        self._on_envelope = on_envelope
        self._on_gap = on_gap
        self._down = False
        self._failures = 0
        self._retry_at = 0.0
        self.reset()

    def reset(self) -> None:
        """Forget tasks of an event loop that has ended."""
        self.task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    async def start(self) -> None:
        """Start the listener; return once subscribed or after the first failed attempt."""
        if self.task is not None:
            return
        attempted = asyncio.Event()
        self.task = asyncio.create_task(self._listen(attempted), name="ws-manager-listener")
        self.task.add_done_callback(report_death)
        await attempted.wait()

    async def stop(self) -> None:
        """Cancel the listener (its subscription is closed on the way out)."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    async def publish(self, envelope: Envelope) -> None:
        """Publish, never raising: a failure is logged once per incident and counted."""
        now = time.monotonic()
        if now < self._retry_at:
            self._stats["publish_failed"] += 1
            return
        try:
            await self.backend.publish(self.channel, envelope.pack())
        except Exception as exc:  # local delivery must go on whatever broke
            self._stats["publish_failed"] += 1
            self._failures += 1
            # Skip publishing for a growing moment: each attempt could wait a full timeout.
            self._retry_at = now + backoff(self._failures)
            if not self._down:
                self._down = True
                logger.warning(
                    "websocket broadcast to other instances failed (%s); local clients still"
                    " receive, messages for other instances are lost until the backend is back",
                    type(exc).__name__,
                )
            return
        if self._down:
            self._down = False
            self._failures = 0
            logger.warning("websocket broadcasts reach other instances again")
            # Other instances missed what failed to publish, without any error of
            # their own: tell them, so their clients get resync_message too.
            self._on_gap()
            with contextlib.suppress(Exception):
                await self.backend.publish(self.channel, Envelope("gap", self.instance_id).pack())

    async def _listen(self, attempted: asyncio.Event) -> None:
        attempt, outage, ever = 0, False, False
        while True:
            try:
                sub = await self.backend.subscribe(self.channel)
            except Exception as exc:  # retried until the backend is back
                if not outage:
                    outage = True
                    logger.warning(
                        "websocket manager cannot subscribe to the backend (%s); retrying",
                        type(exc).__name__,
                    )
                attempted.set()
                await asyncio.sleep(backoff(attempt))
                attempt += 1
                continue
            if ever:
                self._stats["resubscribed"] += 1
                logger.warning(
                    "websocket manager resubscribed; messages published meanwhile are lost"
                )
                self._on_gap()
            ever, outage, attempt = True, False, 0
            self.subscribed.set()
            attempted.set()
            try:
                await self._read(sub)
            except Exception as exc:  # connection lost: resubscribe
                outage = True
                logger.warning(
                    "websocket manager lost its subscription (%s); resubscribing",
                    type(exc).__name__,
                )
            finally:
                self.subscribed.clear()
                with contextlib.suppress(Exception):
                    await sub.aclose()

    async def _read(self, sub: Subscription) -> None:
        probe = Envelope("probe", self.instance_id).pack()
        while True:
            msg = await sub.get(timeout=PROBE_INTERVAL)
            if msg is None:
                # Idle (or closed under us): a publish nobody hears means we are not
                # subscribed any more, even if no error said so.
                if await self.backend.publish(self.channel, probe) == 0:
                    logger.warning("websocket manager subscription went silent; resubscribing")
                    return
                continue
            envelope = Envelope.unpack(msg.data)
            if envelope is None or envelope.origin == self.instance_id:
                continue
            self._stats["remote_received"] += 1
            self._on_envelope(envelope)
