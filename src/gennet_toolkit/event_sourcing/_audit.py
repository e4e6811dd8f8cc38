"""The audit trail: who did what, recorded as events in the hash-chained store.

Two entry points, because auditing through ORM flush hooks misses bulk ``update()``,
``delete()`` and upserts:

- :class:`AuditTrailMiddleware` records each mutating HTTP request (method, route
  template, status, actor, correlation id) after its response has been sent;
- :func:`record` / :func:`arecord` and :class:`AuditBatch` record from service code,
  inside the caller's transaction when given its connection, so the audit row commits
  or rolls back with the change it describes; a batch gives one event per item or
  one per batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from gennet_toolkit._context import correlation_id_var
from gennet_toolkit._env import env_bool, env_list, env_str
from gennet_toolkit._problem import send_problem
from gennet_toolkit._routes import RouteResolver
from gennet_toolkit.event_sourcing._events import (
    ANY,
    MAX_NAME_LENGTH,
    NewEvent,
    RecordedEvent,
)
from gennet_toolkit.event_sourcing._store import AsyncEventStore, EventStore
from gennet_toolkit.exceptions import ServiceUnavailable
from gennet_toolkit.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["AuditBatch", "AuditTrailMiddleware", "arecord", "audit_event", "record"]

logger = logging.getLogger("gennet_toolkit.event_sourcing.audit")

#: Methods that change state, audited by default.
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

ActorGetter = Callable[[Scope], str | None]


def audit_event(
    *,
    action: str,
    target: str | None = None,
    actor: str | None = None,
    data: Mapping[str, Any] | None = None,
    outcome: str = "success",
    reason: str | None = None,
) -> NewEvent:
    """The :class:`NewEvent` for one audited action (``type`` is ``action``).

    ``data`` holds ``target``, ``outcome`` (``success``, ``denied``, ``failed``), the
    optional ``reason`` and the caller's ``data`` (a diff, the created values, …).
    """
    body: dict[str, Any] = {"target": target, "outcome": outcome}
    if reason is not None:
        body["reason"] = reason
    if data is not None:
        body["data"] = dict(data)
    return NewEvent(type=action, data=body, actor=actor)


def record(
    store: EventStore,
    *,
    actor: str | None,
    action: str,
    target: str | None = None,
    data: Mapping[str, Any] | None = None,
    outcome: str = "success",
    reason: str | None = None,
    stream: str = "audit",
    connection: Any = None,
) -> RecordedEvent:
    """Append one audit event to ``stream``; with ``connection``, inside its transaction."""
    event = audit_event(
        action=action, target=target, actor=actor, data=data, outcome=outcome, reason=reason
    )
    return store.append(stream, [event], ANY, connection=connection)[0]


async def arecord(
    store: AsyncEventStore,
    *,
    actor: str | None,
    action: str,
    target: str | None = None,
    data: Mapping[str, Any] | None = None,
    outcome: str = "success",
    reason: str | None = None,
    stream: str = "audit",
    connection: Any = None,
) -> RecordedEvent:
    """The async form of :func:`record`."""
    event = audit_event(
        action=action, target=target, actor=actor, data=data, outcome=outcome, reason=reason
    )
    return (await store.append(stream, [event], ANY, connection=connection))[0]


class AuditBatch:
    """Collects one audit entry per item of a batch write; appends them on success.

    ::

        with engine.begin() as conn, AuditBatch(store, actor="alice", action="gene.create",
                                                connection=conn) as audit:
            for gene in genes:
                conn.execute(insert(genes_table).values(**gene))
                audit.add(gene["symbol"], data=gene)

    ``per_item=True`` appends one event per :meth:`add`; ``per_item=False`` one event
    for the whole batch (``data.targets`` lists the items, ``data.count`` counts them).
    Nothing is recorded when the block raises (with ``connection`` the writes roll
    back too). Use ``async with`` for an :class:`AsyncEventStore`.
    """

    def __init__(
        self,
        store: EventStore | AsyncEventStore,
        *,
        actor: str | None,
        action: str,
        per_item: bool = True,
        stream: str = "audit",
        connection: Any = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.actor = actor
        self.action = action
        self.per_item = per_item
        self.stream = stream
        self.connection = connection
        self.data = dict(data) if data is not None else None
        self._items: list[tuple[str | None, Mapping[str, Any] | None]] = []
        #: The recorded events, once the block has exited cleanly.
        self.recorded: list[RecordedEvent] = []

    def add(self, target: str | None, data: Mapping[str, Any] | None = None) -> None:
        """Note one written item (its id, and what was written)."""
        self._items.append((target, data))

    def events(self) -> list[NewEvent]:
        """The events this batch will append."""
        if not self._items:
            return []
        if self.per_item:
            return [
                audit_event(action=self.action, target=t, actor=self.actor, data=d)
                for t, d in self._items
            ]
        body: dict[str, Any] = {"targets": [t for t, _ in self._items], "count": len(self._items)}
        if self.data is not None:
            body["batch"] = self.data
        return [audit_event(action=self.action, actor=self.actor, data=body)]

    def __enter__(self) -> AuditBatch:
        if not isinstance(self.store, EventStore):
            raise TypeError("use 'async with' for an AsyncEventStore")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and self._items:
            if not isinstance(self.store, EventStore):  # pragma: no cover - see __enter__
                raise TypeError("use 'async with' for an AsyncEventStore")
            self.recorded = self.store.append(
                self.stream, self.events(), ANY, connection=self.connection
            )

    async def __aenter__(self) -> AuditBatch:
        if not isinstance(self.store, AsyncEventStore):
            raise TypeError("use 'with' for a sync EventStore")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and self._items:
            if not isinstance(self.store, AsyncEventStore):  # pragma: no cover - see __aenter__
                raise TypeError("use 'with' for a sync EventStore")
            self.recorded = await self.store.append(
                self.stream, self.events(), ANY, connection=self.connection
            )


# ---------------------------------------------------------------------- middleware


def scope_user_actor(scope: Scope) -> str | None:
    """The authenticated ``scope["user"]``'s identity, display name or username."""
    user = scope.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    for attr in ("identity", "display_name", "username"):
        try:
            value = getattr(user, attr, None)
        except NotImplementedError:  # Starlette's BaseUser.identity
            continue
        if isinstance(value, str) and value:
            return value
    return None


def _outcome(status: int) -> str:
    if status < 400:
        return "success"
    return "denied" if status in (401, 403) else "failed"


class _Incident:
    """Logs the first failure of an incident and the recovery, nothing in between."""

    __slots__ = ("active",)

    def __init__(self) -> None:
        self.active = False

    def failed(self, exc: BaseException, fail_closed: bool) -> None:
        if not self.active:
            self.active = True
            consequence = (
                "mutating requests get 503" if fail_closed else "requests continue unaudited"
            )
            logger.error("audit trail store unavailable (%s): %s", type(exc).__name__, consequence)

    def recovered(self) -> None:
        if self.active:
            self.active = False
            logger.warning("audit trail store recovered")


class AuditTrailMiddleware:
    """Appends an audit event for every mutating HTTP request, after its response.

    ``AuditTrailMiddleware(app, store=store)`` where ``store`` is an
    :class:`AsyncEventStore` (or a sync :class:`EventStore`, run in a thread). Each
    POST/PUT/PATCH/DELETE becomes an event of type ``event_type`` on ``stream`` with
    ``actor`` (``actor(scope)``; default: the authenticated ``scope["user"]``) and data
    ``method``, ``route`` (the template, never the raw path), ``path_params``,
    ``status`` and ``outcome``; the correlation id goes into its metadata.

    The response streams through untouched. If the store is down the request still
    succeeds and the failure is logged once per incident; with ``fail_closed=True``
    the store is pinged first and the request answered 503 without running the app.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: EventStore | AsyncEventStore,
        actor: ActorGetter | None = None,
        stream: str = "audit",
        event_type: str = "http.request",
        methods: Iterable[str] = MUTATING_METHODS,
        exclude_paths: Iterable[str] = (),
        fail_closed: bool = False,
    ) -> None:
        if not isinstance(store, (EventStore, AsyncEventStore)):
            raise TypeError("store must be an EventStore or an AsyncEventStore")
        self.app = app
        self.store = store
        self.actor = actor or scope_user_actor
        self.stream = stream
        self.event_type = event_type
        self.methods = frozenset(m.upper() for m in methods)
        self.exclude_paths = frozenset(exclude_paths)
        self.fail_closed = fail_closed
        self._incident = _Incident()
        self._routes = RouteResolver(app)

    @classmethod
    def from_env(
        cls,
        app: ASGIApp,
        *,
        store: EventStore | AsyncEventStore,
        prefix: str = "GENNET_",
        **overrides: Any,
    ) -> AuditTrailMiddleware:
        """Build from ``{prefix}AUDIT_STREAM``, ``_EVENT_TYPE``, ``_FAIL_CLOSED`` and
        ``_EXCLUDE_PATHS`` (comma-separated); keyword arguments win."""
        p = prefix + "AUDIT_"
        kw: dict[str, Any] = {}
        if (stream := env_str(p + "STREAM")) is not None:
            kw["stream"] = stream
        if (event_type := env_str(p + "EVENT_TYPE")) is not None:
            kw["event_type"] = event_type
        if (closed := env_bool(p + "FAIL_CLOSED")) is not None:
            kw["fail_closed"] = closed
        if (paths := env_list(p + "EXCLUDE_PATHS")) is not None:
            kw["exclude_paths"] = paths
        kw.update(overrides)
        return cls(app, store=store, **kw)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in self.methods
            or scope["path"] in self.exclude_paths
        ):
            await self.app(scope, receive, send)
            return
        if self.fail_closed:
            try:
                await self._call_store("ping")
            except Exception as exc:
                self._incident.failed(exc, fail_closed=True)
                await self._unavailable(scope, send)
                return
        status: int | None = None
        header_cid: str | None = None
        entry = (scope["path"], scope.get("root_path", ""))  # what the route is relative to

        async def send_wrapper(message: Message) -> None:
            nonlocal status, header_cid
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"x-request-id":
                        header_cid = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            # Failed requests are audit events too; record, then let the error propagate.
            await self._record(scope, entry, status if status is not None else 500, header_cid)
            raise
        await self._record(scope, entry, status if status is not None else 500, header_cid)

    async def _call_store(self, method: str, *args: Any, **kwargs: Any) -> Any:
        fn = getattr(self.store, method)
        if isinstance(self.store, AsyncEventStore):
            return await fn(*args, **kwargs)
        # to_thread copies the context: the store still sees the correlation id.
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def _record(
        self, scope: Scope, entry: tuple[str, str], status: int, header_cid: str | None
    ) -> None:
        try:
            actor = self.actor(scope)
            params = scope.get("path_params") or {}
            data = {
                "method": scope["method"],
                # The template with mount prefixes, never the raw path; None if unmatched.
                "route": self._routes.resolve(scope, *entry),
                "path_params": {
                    str(k)[:MAX_NAME_LENGTH]: str(v)[:MAX_NAME_LENGTH] for k, v in params.items()
                },
                "status": status,
                "outcome": _outcome(status),
            }
            metadata: dict[str, Any] = {}
            if correlation_id_var.get() is None and header_cid:
                metadata["correlation_id"] = header_cid[:MAX_NAME_LENGTH]
            event = NewEvent(
                type=self.event_type,
                data=data,
                actor=actor[:MAX_NAME_LENGTH] if isinstance(actor, str) and actor else None,
                metadata=metadata,
            )
            await self._call_store("append", self.stream, [event], ANY)
        except Exception as exc:  # never fail a finished request over its audit row
            self._incident.failed(exc, fail_closed=self.fail_closed)
            return
        self._incident.recovered()

    async def _unavailable(self, scope: Scope, send: Send) -> None:
        exc = ServiceUnavailable(
            "The audit trail is unavailable; the request was not processed.", retry_after=5
        )
        await send_problem(exc, scope, send)
