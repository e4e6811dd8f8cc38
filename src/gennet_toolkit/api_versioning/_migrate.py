"""JSON body migrations on the ASGI message stream (request upgrade, response downgrade)."""

from __future__ import annotations

import json
import logging

from gennet_toolkit.api_versioning._changes import ChangeContext, VersionChange, format_version
from gennet_toolkit.exceptions import BadRequest, GenNetError, PayloadTooLarge
from gennet_toolkit.types import Message, Receive, Scope, Send

__all__ = ["downgrading_send", "is_json", "merge_vary", "upgrading_receive"]

logger = logging.getLogger("gennet_toolkit.api_versioning")


async def upgrading_receive(
    child: Scope,
    receive: Receive,
    upgrades: list[VersionChange],
    ctx: ChangeContext,
    max_body_size: int,
) -> Receive:
    """Read the whole JSON request body, upgrade it along ``upgrades`` and return a
    ``receive`` replaying it (``child``'s Content-Length is rewritten to match)."""
    # The body must be complete before the app starts so Content-Length is right.
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            # A disconnect: let the app see it as it would have.
            return _replay([message], receive)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_body_size:
            raise PayloadTooLarge(
                f"The request body exceeds the limit of {max_body_size} bytes.",
                headers={"Connection": "close"},
            )
        chunks.append(chunk)
        more = message.get("more_body", False)
    raw = b"".join(chunks)
    try:
        body = json.loads(raw)
    except ValueError:
        # Malformed JSON goes through untouched: the app's validation answers it.
        body = _UNPARSED
    if body is not _UNPARSED:
        try:
            for change in upgrades:
                body = change.upgrade_request(body, ctx)
        except GenNetError:
            raise
        except Exception:
            # Usually an old client's body of a shape the migration did not expect (a
            # list for an object): bad input, so a 400, never a 500. A bug in the
            # migration shows up here too, hence the traceback in the log.
            logger.exception(
                "request migration %s failed for %s %s", type(change).__name__, ctx.method, ctx.path
            )
            raise BadRequest(
                "The request body cannot be migrated from API version "
                f"{format_version(ctx.version)} to the current one.",
                code="request_migration_failed",
            ) from None
        raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    # The replayed body is one message of known length, no longer chunked.
    drop = (b"content-length", b"transfer-encoding")
    child["headers"] = [(k, v) for k, v in child["headers"] if k not in drop] + [
        (b"content-length", str(len(raw)).encode())
    ]
    return _replay([{"type": "http.request", "body": raw, "more_body": False}], receive)


_UNPARSED = object()


def is_json(content_type: bytes | None) -> bool:
    if content_type is None:
        return False
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def merge_vary(headers: list[tuple[bytes, bytes]], tokens: list[str]) -> None:
    present: set[str] = set()
    for key, value in headers:
        if key.lower() == b"vary":
            present.update(t.strip().lower() for t in value.decode("latin-1").split(","))
    if "*" in present:
        return
    missing = [t for t in tokens if t.lower() not in present]
    if missing:
        headers.append((b"vary", ", ".join(missing).encode("latin-1")))


def downgrading_send(send: Send, changes: list[VersionChange], ctx: ChangeContext) -> Send:
    start: Message | None = None
    chunks: list[bytes] = []

    async def downgrading(message: Message) -> None:
        nonlocal start
        kind = message["type"]
        if kind == "http.response.start":
            headers = message.get("headers", [])
            ctype = next((v for k, v in headers if k.lower() == b"content-type"), None)
            media = (ctype or b"").split(b";", 1)[0].strip().lower()
            # Only plain JSON documents are migrated; problem+json, streams and files pass.
            if media == b"application/json":
                start = message
                return
            await send(message)
            return
        if kind != "http.response.body" or start is None:
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        raw = b"".join(chunks)
        status = start["status"]
        headers = list(start.get("headers", []))
        try:
            body = json.loads(raw)
        except ValueError:
            body = _UNPARSED
        if body is not _UNPARSED:
            status_ctx = ChangeContext(ctx.path, ctx.method, ctx.version, status)
            for change in changes:
                body = change.downgrade_response(body, status_ctx)
            raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
            # The bytes changed: a strong validator computed on the new shape would lie.
            headers = [
                (k, v) for k, v in headers if k.lower() not in (b"content-length", b"etag")
            ] + [(b"content-length", str(len(raw)).encode())]
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": raw, "more_body": False})

    return downgrading
