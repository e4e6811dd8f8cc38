"""Group commit: concurrent appends of one store share a transaction.

The first caller to find no transaction in flight becomes the leader: it takes every
queued request, runs them as one transaction (one lock, one INSERT, one flush) and then
publishes each request's result or error under the lock, so no caller sees events of a
transaction that did not commit. Callers that arrived meanwhile wait; one of them leads
the next batch.
"""

from __future__ import annotations

import asyncio
import copy
import threading

from gennet_toolkit.event_sourcing._core import AppendRequest
from gennet_toolkit.exceptions import ServiceUnavailable

__all__ = ["AsyncGroup", "SyncGroup", "fail_batch"]


def _clone(exc: BaseException) -> BaseException:
    # Each waiting caller raises its own copy: one exception object raised in several
    # threads at once would have its traceback rewritten under their feet.
    try:
        clone = copy.copy(exc)
    except Exception:
        return exc
    clone.__cause__ = exc.__cause__
    return clone


def fail_batch(batch: list[AppendRequest], leader: AppendRequest, exc: BaseException) -> None:
    """The shared transaction raised ``exc``: fail every request in it (stale ones stay stale)."""
    for request in batch:
        if request is leader:
            request.fail(exc)
        elif isinstance(exc, Exception):
            request.fail(_clone(exc))
        else:  # the leader was cancelled or interrupted mid-commit
            request.fail(ServiceUnavailable("The append was interrupted; retry it."))


class SyncGroup:
    """Concurrent appends of one store waiting to share a transaction (group commit)."""

    __slots__ = ("busy", "cond", "pending")

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.pending: list[AppendRequest] = []
        self.busy = False


class AsyncGroup:
    """The asyncio form of :class:`SyncGroup`, bound to the loop that first used it."""

    __slots__ = ("busy", "cond", "loop", "pending")

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop
        self.cond = asyncio.Condition()
        self.pending: list[AppendRequest] = []
        self.busy = False
