"""CompressionMiddleware: response compression and request decompression, pure ASGI."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from types import ModuleType
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread

from gennet_toolkit._context import correlation_id_var
from gennet_toolkit._optional import require
from gennet_toolkit.exceptions import (
    BadRequest,
    ConfigurationError,
    GenNetError,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from gennet_toolkit.types import ASGIApp, Message, Receive, Scope, Send

from ._codecs import Codec, DecodeError, Decoder, brotli_codec, gzip_codec, make_decoder, zstd_codec
from ._negotiate import (
    DEFAULT_EXCLUDED_CONTENT_TYPES,
    ContentTypeFilter,
    merge_vary,
    negotiate_encoding,
    weaken_etag,
)

__all__ = ["NO_COMPRESSION_HEADER", "SKIP_STATE_KEY", "CompressionMiddleware", "skip_compression"]

logger = logging.getLogger("gennet_toolkit.compression")

#: A response header the app may set to keep one response uncompressed (for example a
#: page that reflects user input next to a secret: the BREACH case). The middleware
#: removes it before the response leaves.
NO_COMPRESSION_HEADER = "x-gennet-no-compression"
_NO_COMPRESSION = NO_COMPRESSION_HEADER.encode()

#: Key in ``scope["state"]`` (``request.state.gennet_skip_compression`` in Starlette)
#: that keeps the current response uncompressed; see :func:`skip_compression`.
SKIP_STATE_KEY = "gennet_skip_compression"

_MIB = 1024 * 1024
# Output per receive() while inflating: small enough that no single message is large,
# big enough that per-message overhead does not matter.
_PIECE = 64 * 1024
_NO_BODY_STATUS = frozenset({204, 304})

_limiter_var: anyio.lowlevel.RunVar[anyio.CapacityLimiter] = anyio.lowlevel.RunVar(
    "gennet_compression_limiter"
)


def _limiter() -> anyio.CapacityLimiter:
    # A limiter of our own, so compression never starves the threads that run sync
    # endpoints (anyio's default limiter).
    try:
        return _limiter_var.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(8)
        _limiter_var.set(limiter)
        return limiter


def skip_compression(target: Any) -> None:
    """Keep the current response uncompressed: pass the ASGI scope or a Starlette request.

    Use it on routes whose responses reflect user input alongside secrets (BREACH).
    Equivalent to setting the :data:`NO_COMPRESSION_HEADER` response header.
    """
    scope = getattr(target, "scope", target)
    scope.setdefault("state", {})[SKIP_STATE_KEY] = True


class _Aborted(Exception):
    """Raised into the app from ``receive`` after the middleware answered the request."""


class _Exchange:
    """Per-request flags shared by the send and receive wrappers."""

    __slots__ = ("aborted", "responded", "sent")

    def __init__(self) -> None:
        self.sent = False  # http.response.start has gone to the server
        self.aborted = False  # the middleware answered; the app's messages are dropped
        self.responded = False


def _problem(exc: GenNetError, scope: Scope) -> tuple[Message, Message]:
    body = exc.to_problem(instance=scope.get("path"), correlation_id=correlation_id_var.get())
    payload = json.dumps(body, separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items()]
    start = {"type": "http.response.start", "status": exc.status_code, "headers": headers}
    return start, {"type": "http.response.body", "body": payload, "more_body": False}


def _env_int(env: MutableMapping[str, str], key: str) -> int | None:
    raw = env.get(key)
    if raw is None or not raw.strip():
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"{key} must be an integer") from None


def _env_bool(env: MutableMapping[str, str], key: str) -> bool | None:
    raw = env.get(key)
    if raw is None or not raw.strip():
        return None
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(f"{key} must be a boolean (true/false)")


def _env_list(env: MutableMapping[str, str], key: str) -> list[str] | None:
    raw = env.get(key)
    if raw is None:
        return None
    return [p.strip() for p in raw.split(",") if p.strip()]


class CompressionMiddleware:
    """Compress responses with br, zstd or gzip and inflate compressed request bodies.

    Responses: the coding comes from ``Accept-Encoding`` (q-values, ``*``, ``identity``,
    ``q=0`` refusals; ties go to the order of ``encodings``). Whole bodies of at least
    ``minimum_size`` bytes are compressed at once; streamed bodies chunk by chunk, each
    chunk flushed so the client sees it immediately. ``Vary: Accept-Encoding`` is added
    to every response whose encoding depends on that header. Responses that are already
    encoded, partial (206 / Content-Range), of an excluded content type, marked with
    :data:`NO_COMPRESSION_HEADER` or :func:`skip_compression`, and ``pathsend``
    responses pass through untouched.

    Requests: bodies with ``Content-Encoding`` gzip, deflate, br (and zstd when
    available) are inflated while the app reads them, at most ``max_decompressed_size``
    bytes (413 past it, ``Connection: close``); unknown codings get 415 and corrupt data
    400, both as problem+json.

    ``breach_padding`` > 0 turns on "Heal the BREACH" length hiding: every gzip response
    carries 1..``breach_padding`` random bytes in its header; only gzip is offered then.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        minimum_size: int = 500,
        gzip_level: int = 6,
        brotli_quality: int = 4,
        zstd_level: int = 3,
        encodings: Sequence[str] | None = None,
        excluded_content_types: Iterable[str] = DEFAULT_EXCLUDED_CONTENT_TYPES,
        decompress_requests: bool = True,
        max_decompressed_size: int = 10 * _MIB,
        thread_minimum_size: int = 256 * 1024,
        breach_padding: int = 0,
    ) -> None:
        if minimum_size < 0:
            raise ConfigurationError("minimum_size must be >= 0")
        if not 0 <= gzip_level <= 9:
            raise ConfigurationError("gzip_level must be between 0 and 9")
        if not 0 <= brotli_quality <= 11:
            raise ConfigurationError("brotli_quality must be between 0 and 11")
        if not 1 <= zstd_level <= 22:
            raise ConfigurationError("zstd_level must be between 1 and 22")
        if max_decompressed_size < 1:
            raise ConfigurationError("max_decompressed_size must be >= 1")
        if thread_minimum_size < 1:
            raise ConfigurationError("thread_minimum_size must be >= 1")
        if breach_padding < 0:
            raise ConfigurationError("breach_padding must be >= 0")

        self.app = app
        self.minimum_size = minimum_size
        self.decompress_requests = decompress_requests
        self.max_decompressed_size = max_decompressed_size
        self.thread_minimum_size = thread_minimum_size
        self.breach_padding = breach_padding
        self._filter = ContentTypeFilter(excluded_content_types)

        # Optional libraries are imported here, once, never at module import.
        self._modules: dict[str, ModuleType] = {}
        feature = "gennet_toolkit.compression"
        if encodings is None:
            wanted: list[str] = []
            if importlib.util.find_spec("brotli") is not None:
                wanted.append("br")
            if _has_stdlib_zstd():
                wanted.append("zstd")
            wanted.append("gzip")
        else:
            wanted = [e.strip().lower() for e in encodings]
            unknown = set(wanted) - {"br", "zstd", "gzip"}
            if unknown or not wanted:
                raise ConfigurationError(
                    "encodings must name some of 'br', 'zstd', 'gzip'"
                    + (f"; unknown: {sorted(unknown)}" if unknown else "")
                )
        if "br" in wanted:
            self._modules["br"] = require("brotli", extra="brotli", feature=feature)
        elif importlib.util.find_spec("brotli") is not None:
            # Requests may still arrive brotli-encoded even when responses do not use it.
            self._modules["br"] = require("brotli", extra="brotli", feature=feature)
        if "zstd" in wanted or _has_stdlib_zstd():
            if not _has_stdlib_zstd():
                raise ConfigurationError("zstd needs Python 3.14+ (compression.zstd)")
            self._modules["zstd"] = importlib.import_module("compression.zstd")

        codecs: dict[str, Codec] = {}
        for name in wanted:
            if breach_padding and name != "gzip":
                continue  # only the gzip header can carry the random padding
            if name == "gzip":
                codecs[name] = gzip_codec(gzip_level, breach_padding)
            elif name == "br":
                codecs[name] = brotli_codec(self._modules["br"], brotli_quality)
            else:
                codecs[name] = zstd_codec(self._modules["zstd"], zstd_level)
        if not codecs:
            raise ConfigurationError("breach_padding needs 'gzip' among the encodings")
        self._codecs = codecs
        self.encodings: tuple[str, ...] = tuple(codecs)
        request_codings = ["gzip", "deflate", *(c for c in ("br", "zstd") if c in self._modules)]
        self._request_codings = ", ".join(request_codings)

    @classmethod
    def from_env(
        cls, app: ASGIApp, *, prefix: str = "GENNET_", **overrides: Any
    ) -> CompressionMiddleware:
        """Configure from ``{prefix}COMPRESSION_*`` variables; keyword overrides win.

        ``MINIMUM_SIZE``, ``GZIP_LEVEL``, ``BROTLI_QUALITY``, ``ZSTD_LEVEL``,
        ``MAX_DECOMPRESSED_SIZE``, ``THREAD_MINIMUM_SIZE``, ``BREACH_PADDING`` (integers),
        ``DECOMPRESS_REQUESTS`` (boolean), ``ENCODINGS`` and ``EXCLUDED_CONTENT_TYPES``
        (comma-separated; the latter replaces the default list).
        """
        env = os.environ
        p = f"{prefix}COMPRESSION_"
        kwargs: dict[str, Any] = {}
        for key in (
            "minimum_size",
            "gzip_level",
            "brotli_quality",
            "zstd_level",
            "max_decompressed_size",
            "thread_minimum_size",
            "breach_padding",
        ):
            value = _env_int(env, p + key.upper())
            if value is not None:
                kwargs[key] = value
        decompress = _env_bool(env, p + "DECOMPRESS_REQUESTS")
        if decompress is not None:
            kwargs["decompress_requests"] = decompress
        encodings = _env_list(env, p + "ENCODINGS")
        if encodings:
            kwargs["encodings"] = encodings
        excluded = _env_list(env, p + "EXCLUDED_CONTENT_TYPES")
        if excluded is not None:
            kwargs["excluded_content_types"] = excluded
        kwargs.update(overrides)
        return cls(app, **kwargs)

    # ------------------------------------------------------------------ per request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        accept: bytes | None = None
        request_coding: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"accept-encoding":
                accept = value if accept is None else accept + b"," + value
            elif name == b"content-encoding":
                request_coding = value if request_coding is None else request_coding + b"," + value

        ex = _Exchange()
        if request_coding is not None and self.decompress_requests:
            codings = [
                c
                for c in (p.strip().lower() for p in request_coding.decode("latin-1").split(","))
                if c and c != "identity"
            ]
            if codings:
                decoder = make_decoder(codings[0], self._modules) if len(codings) == 1 else None
                if decoder is None:
                    await self._reject(
                        UnsupportedMediaType(
                            "The request's Content-Encoding is not supported.",
                            code="unsupported_content_encoding",
                            headers={"Accept-Encoding": self._request_codings},
                        ),
                        scope,
                        send,
                    )
                    return
                # The app sees a plain body: the encoding and the compressed length are
                # gone. The scope is edited in place so outer middleware still sees what
                # inner layers write into it (route, state).
                scope["headers"] = [
                    (n, v)
                    for n, v in scope["headers"]
                    if n not in (b"content-encoding", b"content-length")
                ]
                receive = self._inflating_receive(scope, receive, send, decoder, ex)

        coding = negotiate_encoding(accept.decode("latin-1"), self.encodings) if accept else None
        if scope.get("method") == "HEAD":
            coding = None
        wrapped = self._compressing_send(scope, send, coding, ex)
        try:
            await self.app(scope, receive, wrapped)
        except Exception:
            if ex.aborted and ex.responded:
                # The app failed because we cut its body short; the client already
                # has its 4xx.
                logger.debug("app raised after the request body was refused", exc_info=True)
                return
            raise

    async def _reject(self, exc: GenNetError, scope: Scope, send: Send) -> None:
        start, body = _problem(exc, scope)
        await send(start)
        await send(body)

    def _inflating_receive(
        self, scope: Scope, receive: Receive, send: Send, decoder: Decoder, ex: _Exchange
    ) -> Receive:
        cap = self.max_decompressed_size
        produced = 0
        consumed = 0
        upstream_done = False
        finished = False

        async def abort(exc: GenNetError) -> _Aborted:
            ex.aborted = True
            if not ex.sent:
                ex.sent = ex.responded = True
                start, body = _problem(exc, scope)
                await send(start)
                await send(body)
            return _Aborted(exc.code)

        async def inflating_receive() -> Message:
            nonlocal produced, consumed, upstream_done, finished
            if finished:
                return await receive()
            stalled = 0
            while True:
                if decoder.pending():
                    data = b""
                elif upstream_done:
                    if consumed and not decoder.finished():
                        raise await abort(
                            BadRequest(
                                "The compressed request body is truncated.",
                                code="corrupt_request_encoding",
                            )
                        )
                    finished = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                else:
                    message = await receive()
                    if message["type"] != "http.request":
                        return message  # http.disconnect and anything else, untouched
                    data = message.get("body", b"")
                    consumed += len(data)
                    upstream_done = not message.get("more_body", False)
                try:
                    out = decoder.feed(data, min(_PIECE, cap - produced + 1))
                except DecodeError:
                    raise await abort(
                        BadRequest(
                            "The compressed request body is corrupt.",
                            code="corrupt_request_encoding",
                        )
                    ) from None
                produced += len(out)
                if produced > cap:
                    raise await abort(
                        PayloadTooLarge(
                            f"The decompressed request body exceeds {cap} bytes.",
                            code="decompressed_body_too_large",
                            headers={"Connection": "close"},
                        )
                    )
                if out:
                    more = not upstream_done or decoder.pending()
                    if not more:
                        if not decoder.finished():
                            raise await abort(
                                BadRequest(
                                    "The compressed request body is truncated.",
                                    code="corrupt_request_encoding",
                                )
                            )
                        finished = True
                    return {"type": "http.request", "body": out, "more_body": more}
                if not data:
                    # Guards against a decoder that claims pending output but yields none.
                    stalled += 1
                    if stalled > 3:
                        raise await abort(
                            BadRequest(
                                "The compressed request body is corrupt.",
                                code="corrupt_request_encoding",
                            )
                        )

        return inflating_receive

    def _compressing_send(
        self, scope: Scope, send: Send, coding: str | None, ex: _Exchange
    ) -> Send:
        codec = self._codecs[coding] if coding is not None else None
        minimum = self.minimum_size
        threshold = self.thread_minimum_size
        excluded = self._filter.excluded
        held: Message | None = None
        encoder: Any = None
        # 0: before start, 1: pass through, 2: start held until the first body, 3: streaming
        mode = 0

        async def run(fn: Callable[[bytes], bytes], data: bytes) -> bytes:
            if len(data) >= threshold:
                # Large chunks would block the event loop for milliseconds.
                return await anyio.to_thread.run_sync(fn, data, limiter=_limiter())
            return fn(data)

        async def forward_start(message: Message) -> None:
            ex.sent = True
            await send(message)

        async def compressing_send(message: Message) -> None:
            nonlocal held, encoder, mode
            if ex.aborted:
                return
            if mode == 1:
                await send(message)
                return
            kind = message["type"]
            if mode == 3:
                if kind == "http.response.body":
                    body = message.get("body", b"")
                    more = message.get("more_body", False)
                    if more:
                        out = await run(encoder.chunk, body) if body else b""
                    else:
                        out = await run(encoder.finish, body)
                    await send({"type": "http.response.body", "body": out, "more_body": more})
                else:
                    await send(message)
                return
            if mode == 0:
                if kind != "http.response.start":
                    await send(message)  # early hints, debug info: before the response
                    return
                decision, start = self._inspect(message, scope, codec, excluded, minimum)
                if decision == 2:
                    held, mode = start, 2
                else:
                    mode = 1
                    await forward_start(start)
                return
            # mode == 2: start held, waiting for the first body message
            assert held is not None
            assert codec is not None
            start, held = held, None
            if kind != "http.response.body":
                # pathsend, zerocopysend or unknown: send as is, never compress.
                mode = 1
                await forward_start(start)
                await send(message)
                return
            body = message.get("body", b"")
            more = message.get("more_body", False)
            headers: list[tuple[bytes, bytes]] = start["headers"]
            if not more:
                mode = 1
                if len(body) >= minimum:
                    compressed = await run(codec.oneshot, body)
                    if len(compressed) < len(body):
                        _set_encoded(headers, codec.name, len(compressed), start)
                        await forward_start(start)
                        await send(
                            {"type": "http.response.body", "body": compressed, "more_body": False}
                        )
                        return
                await forward_start(start)
                await send(message)
                return
            mode = 3
            encoder = codec.stream()
            out = await run(encoder.chunk, body) if body else b""
            _set_encoded(headers, codec.name, None, start)
            await forward_start(start)
            await send({"type": "http.response.body", "body": out, "more_body": True})

        return compressing_send

    def _inspect(
        self,
        message: Message,
        scope: Scope,
        codec: Codec | None,
        excluded: Callable[[bytes], bool],
        minimum: int,
    ) -> tuple[int, Message]:
        """Decide what to do with a response from its start message.

        Returns (1, start) to pass through (Vary added when the response could have been
        compressed) or (2, start) to hold the start until the first body chunk.
        """
        status = message["status"]
        headers = list(message.get("headers", ()))
        content_type = b""
        length: bytes | None = None
        marker = False
        for name, value in headers:
            n = name.lower()
            if n == b"content-encoding":
                if value.strip().lower() != b"identity":
                    return 1, message
            elif n == b"content-type":
                content_type = value
            elif n == b"content-range":
                return 1, message
            elif n == b"content-length":
                length = value
            elif n == _NO_COMPRESSION:
                marker = True
        if marker:
            headers = [(n, v) for n, v in headers if n.lower() != _NO_COMPRESSION]
            return 1, {**message, "headers": headers}
        state = scope.get("state")
        if status == 206 or (content_type and excluded(content_type)):
            return 1, message
        if state and state.get(SKIP_STATE_KEY):
            return 1, message
        merge_vary(headers)
        start = {**message, "headers": headers}
        if codec is None or status < 200 or status in _NO_BODY_STATUS:
            return 1, start
        if length is not None:
            try:
                if int(length) < minimum:
                    return 1, start
            except ValueError:
                pass
        return 2, start


def _set_encoded(
    headers: list[tuple[bytes, bytes]], coding: str, length: int | None, start: Message
) -> None:
    """Rewrite the held start's headers for an encoded body (in place)."""
    keep_length = length is not None and not start.get("trailers", False)
    out: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        n = name.lower()
        if n in (b"content-length", b"content-encoding"):
            continue
        out.append((name, weaken_etag(value) if n == b"etag" else value))
    out.append((b"content-encoding", coding.encode()))
    if keep_length:
        out.append((b"content-length", str(length).encode()))
    headers[:] = out


def _has_stdlib_zstd() -> bool:
    try:
        return importlib.util.find_spec("compression.zstd") is not None
    except ModuleNotFoundError:
        return False
