"""The ``/metrics`` endpoint and the multiprocess (gunicorn) helpers."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from gennet_toolkit.metrics._registry import MULTIPROC_ENV, multiprocess_dir, prometheus
from gennet_toolkit.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["clear_multiprocess_dir", "gunicorn_child_exit", "metrics_app"]

_ALLOW = b"GET, HEAD"
_MIN_GZIP = 1024  # smaller bodies are not worth a compressor
_MAX_NAMES = 100  # name[] filters per scrape; more is not a scrape, it is abuse


def metrics_app(
    registry: CollectorRegistry | None = None, *, gzip_min_size: int = _MIN_GZIP
) -> ASGIApp:
    """An ASGI app serving the registry in the Prometheus text format or OpenMetrics.

    The format follows the ``Accept`` header (OpenMetrics carries exemplars, such as the
    trace id the middleware attaches); ``?name[]=`` restricts the output to some
    metric names, and bodies of at least ``gzip_min_size`` bytes are gzipped when the
    client accepts it. Without ``registry`` it serves prometheus_client's global
    ``REGISTRY``, or, when ``PROMETHEUS_MULTIPROC_DIR`` is set, a fresh registry that
    aggregates every worker's files (see the gunicorn hooks in the docs).

        app.mount("/metrics", metrics_app())
    """
    prom = prometheus()
    if registry is None:
        if multiprocess_dir() is not None:
            from prometheus_client import multiprocess

            registry = prom.CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        else:
            registry = prom.REGISTRY
    return _MetricsApp(registry, gzip_min_size)


class _MetricsApp:
    """The ASGI callable behind :func:`metrics_app`."""

    def __init__(self, registry: CollectorRegistry, gzip_min_size: int) -> None:
        from prometheus_client import exposition

        self.registry = registry
        self._gzip_min_size = gzip_min_size
        self._choose: Callable[[str], tuple[Callable[[Any], bytes], str]] = (
            exposition.choose_encoder
        )
        self._default = (exposition.generate_latest, exposition.CONTENT_TYPE_LATEST)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one scrape; lifespan is acknowledged so the app can run on its own."""
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
            return
        if kind != "http":
            await send({"type": "websocket.close", "code": 1003})
            return
        method = scope["method"]
        if method not in {"GET", "HEAD"}:
            await _method_not_allowed(send)
            return
        accept = accept_encoding = ""
        for name, value in scope.get("headers", ()):
            if name == b"accept":
                accept = value.decode("latin-1")
            elif name == b"accept-encoding":
                accept_encoding = value.decode("latin-1")
        encoder, content_type = self._encoder(accept)
        body = encoder(self._restricted(scope.get("query_string", b"")))
        headers = [
            (b"content-type", content_type.encode("latin-1")),
            (b"vary", b"Accept, Accept-Encoding"),
        ]
        if len(body) >= self._gzip_min_size and _accepts_gzip(accept_encoding):
            body = gzip.compress(body, compresslevel=5)
            headers.append((b"content-encoding", b"gzip"))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    def _encoder(self, accept: str) -> tuple[Callable[[Any], bytes], str]:
        try:
            return self._choose(accept)
        except (ValueError, IndexError, TypeError):
            # A garbled Accept header still gets a scrape, in the classic text format.
            return self._default

    def _restricted(self, query_string: bytes) -> Any:
        if not query_string:
            return self.registry
        query = parse_qs(query_string.decode("latin-1"), max_num_fields=_MAX_NAMES + 20)
        names = query.get("name[]")
        if not names:
            return self.registry
        return self.registry.restricted_registry(names[:_MAX_NAMES])


def _accepts_gzip(header: str) -> bool:
    """True when ``Accept-Encoding`` allows gzip (``q=0`` refuses, ``*`` allows)."""
    allowed: bool | None = None
    wildcard = False
    for item in header.split(","):
        coding, _, params = item.strip().partition(";")
        coding = coding.strip().lower()
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if coding == "gzip":
            allowed = q > 0
        elif coding == "*":
            wildcard = q > 0
    return allowed if allowed is not None else wildcard


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _method_not_allowed(send: Send) -> None:
    body = json.dumps(
        {
            "type": "about:blank",
            "title": "Method Not Allowed",
            "status": 405,
            "detail": "The metrics endpoint answers GET and HEAD only.",
        }
    ).encode()
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"allow", _ALLOW),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": 405, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def gunicorn_child_exit(server: Any, worker: Any) -> None:
    """gunicorn ``child_exit`` hook: drop a dead worker's live gauges from the aggregate.

    In ``gunicorn.conf.py``: ``from gennet_toolkit.metrics import gunicorn_child_exit as
    child_exit``.
    """
    if multiprocess_dir() is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def clear_multiprocess_dir(path: str | os.PathLike[str] | None = None) -> int:
    """Delete stale ``*.db`` files left by a previous run; returns how many were removed.

    Call it once when the server starts, before any worker (gunicorn ``on_starting``):
    counters from a previous deployment would otherwise be summed into the new one.
    """
    directory = Path(path) if path is not None else None
    if directory is None:
        env = multiprocess_dir()
        if env is None:
            raise ValueError(f"{MULTIPROC_ENV} is not set and no path was given")
        directory = Path(env)
    removed = 0
    for file in directory.glob("*.db"):
        file.unlink(missing_ok=True)
        removed += 1
    return removed
