"""CompressionMiddleware: response compression and request decompression, pure ASGI."""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Any

from gennet_toolkit._env import env_bool, env_int, env_list
from gennet_toolkit._optional import require
from gennet_toolkit._problem import send_problem
from gennet_toolkit.exceptions import ConfigurationError, UnsupportedMediaType
from gennet_toolkit.types import ASGIApp, Receive, Scope, Send

from ._codecs import Codec, brotli_codec, gzip_codec, make_decoder, zstd_codec
from ._negotiate import DEFAULT_EXCLUDED_CONTENT_TYPES, ContentTypeFilter, negotiate_encoding
from ._request import Exchange, inflating_receive
from ._response import compressing_send

__all__ = ["CompressionMiddleware"]

logger = logging.getLogger("gennet_toolkit.compression")

_MIB = 1024 * 1024
# Distinct Accept-Encoding values remembered per middleware; real traffic has a handful.
_ACCEPT_CACHE = 256


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
    ``early_headers=True`` sends the start of a response without Content-Length at once
    (compressed even if it turns out small) instead of holding it until the first chunk,
    for streams whose first chunk is slow to come.
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
        early_headers: bool = False,
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
        self.early_headers = early_headers
        self._filter = ContentTypeFilter(excluded_content_types)

        # Optional libraries are imported here, once, never at module import.
        self._modules: dict[str, ModuleType] = {}
        feature = "gennet_toolkit.compression"
        zstd_module = _zstd_module_name()
        if encodings is None:
            wanted: list[str] = []
            if importlib.util.find_spec("brotli") is not None:
                wanted.append("br")
            if zstd_module is not None:
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
        if zstd_module is not None:
            self._modules["zstd"] = importlib.import_module(zstd_module)
        elif "zstd" in wanted:
            raise ConfigurationError(
                "zstd needs Python 3.14+ (compression.zstd) or the backports-zstd package"
            )

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
        self._accept_cache: dict[bytes, str | None] = {}

    @classmethod
    def from_env(
        cls, app: ASGIApp, *, prefix: str = "GENNET_", **overrides: Any
    ) -> CompressionMiddleware:
        """Configure from ``{prefix}COMPRESSION_*`` variables; keyword overrides win.

        ``MINIMUM_SIZE``, ``GZIP_LEVEL``, ``BROTLI_QUALITY``, ``ZSTD_LEVEL``,
        ``MAX_DECOMPRESSED_SIZE``, ``THREAD_MINIMUM_SIZE``, ``BREACH_PADDING`` (integers),
        ``DECOMPRESS_REQUESTS``, ``EARLY_HEADERS`` (booleans), ``ENCODINGS`` and
        ``EXCLUDED_CONTENT_TYPES`` (comma-separated; the latter replaces the default list).
        """
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
            value = env_int(p + key.upper())
            if value is not None:
                kwargs[key] = value
        for key in ("decompress_requests", "early_headers"):
            flag = env_bool(p + key.upper())
            if flag is not None:
                kwargs[key] = flag
        encodings = env_list(p + "ENCODINGS")
        if encodings:
            kwargs["encodings"] = encodings
        excluded = env_list(p + "EXCLUDED_CONTENT_TYPES")
        if excluded is not None:
            kwargs["excluded_content_types"] = excluded
        kwargs.update(overrides)
        return cls(app, **kwargs)

    # ------------------------------------------------------------------ per request

    def _negotiate(self, accept: bytes) -> str | None:
        cache = self._accept_cache
        try:
            return cache[accept]
        except KeyError:
            pass
        coding = negotiate_encoding(accept.decode("latin-1"), self.encodings)
        if len(cache) >= _ACCEPT_CACHE:
            cache.clear()  # hostile variety costs a re-parse, never memory
        cache[accept] = coding
        return coding

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

        ex = Exchange()
        if request_coding is not None and self.decompress_requests:
            codings = [
                c
                for c in (p.strip().lower() for p in request_coding.decode("latin-1").split(","))
                if c and c != "identity"
            ]
            if codings:
                decoder = make_decoder(codings[0], self._modules) if len(codings) == 1 else None
                if decoder is None:
                    exc = UnsupportedMediaType(
                        "The request's Content-Encoding is not supported.",
                        code="unsupported_content_encoding",
                        headers={"Accept-Encoding": self._request_codings},
                    )
                    await send_problem(exc, scope, send)
                    return
                # The app sees a plain body: the encoding and the compressed length are
                # gone. The scope is edited in place so outer middleware still sees what
                # inner layers write into it (route, state).
                scope["headers"] = [
                    (n, v)
                    for n, v in scope["headers"]
                    if n not in (b"content-encoding", b"content-length")
                ]
                receive = inflating_receive(
                    scope, receive, send, decoder, ex, cap=self.max_decompressed_size
                )

        coding = self._negotiate(accept) if accept and scope.get("method") != "HEAD" else None
        wrapped = compressing_send(
            scope,
            send,
            self._codecs[coding] if coding is not None else None,
            ex,
            excluded=self._filter.excluded,
            minimum=self.minimum_size,
            threshold=self.thread_minimum_size,
            early_headers=self.early_headers,
        )
        try:
            await self.app(scope, receive, wrapped)
        except Exception:
            if ex.aborted and ex.responded:
                # The app failed because we cut its body short; the client already
                # has its 4xx.
                logger.debug("app raised after the request body was refused", exc_info=True)
                return
            raise


def _zstd_module_name() -> str | None:
    """``compression.zstd`` (Python 3.14+), else its backport, else ``None``."""
    for name in ("compression.zstd", "backports.zstd"):
        try:
            if importlib.util.find_spec(name) is not None:
                return name
        except ImportError:
            continue
    return None
