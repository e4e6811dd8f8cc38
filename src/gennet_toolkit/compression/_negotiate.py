"""Header logic: Accept-Encoding negotiation, Vary merging, content-type exclusion, ETags."""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import lru_cache

__all__ = [
    "DEFAULT_EXCLUDED_CONTENT_TYPES",
    "ContentTypeFilter",
    "vary_covers",
    "negotiate_encoding",
    "weaken_etag",
]

#: Media types never compressed by default: already compressed (images, audio, video,
#: fonts, archives), framed by their own protocol (gRPC), or latency-sensitive streams
#: (server-sent events). ``type/*`` matches a whole top-level type; ``application/grpc``
#: also matches its ``+proto`` / ``+json`` variants.
DEFAULT_EXCLUDED_CONTENT_TYPES: tuple[str, ...] = (
    "application/grpc",
    "application/grpc-web",
    "application/gzip",
    "application/x-gzip",
    "application/zip",
    "application/zstd",
    "application/x-bzip2",
    "application/x-xz",
    "application/x-7z-compressed",
    "application/x-rar-compressed",
    "application/vnd.rar",
    "application/x-brotli",
    "audio/*",
    "video/*",
    "font/woff",
    "font/woff2",
    "image/avif",
    "image/gif",
    "image/heic",
    "image/jpeg",
    "image/jxl",
    "image/png",
    "image/webp",
    "text/event-stream",
)

# Longer headers are legal but never sent by real clients; parsing only a prefix keeps
# a hostile header from costing more than a normal one.
_MAX_HEADER = 1024

_ALIASES = {"x-gzip": "gzip"}


def _parse_q(raw: str) -> float | None:
    """An RFC 9110 qvalue, leniently: any float in [0, 1]; ``None`` when unusable."""
    try:
        q = float(raw)
    except ValueError:
        return None
    if math.isnan(q) or q < 0:
        return None
    return min(q, 1.0)


@lru_cache(maxsize=512)
def negotiate_encoding(header: str, offered: tuple[str, ...]) -> str | None:
    """Choose a content coding from ``offered`` (server preference order) for ``header``.

    Follows RFC 9110 section 12.5.3: tokens are case-insensitive, ``q=0`` refuses a
    coding, ``*`` stands for every coding not named, ``identity`` is acceptable unless
    refused. The highest q wins; ties go to the first coding in ``offered``; an explicit
    ``identity`` with a strictly higher q than every coding wins over compression.
    Returns ``None`` for "send the body unencoded". Malformed parts are ignored, never
    raised.
    """
    prefs: dict[str, float] = {}
    for part in header[:_MAX_HEADER].split(","):
        token, _, params = part.partition(";")
        token = token.strip().lower()
        if not token:
            continue
        q: float | None = 1.0
        for param in params.split(";"):
            name, eq, value = param.partition("=")
            if eq and name.strip().lower() == "q":
                q = _parse_q(value.strip())
        if q is None:
            continue
        token = _ALIASES.get(token, token)
        # A repeated token keeps its first value, as most servers do.
        prefs.setdefault(token, q)

    star = prefs.get("*")
    best: str | None = None
    best_q = 0.0
    for coding in offered:
        q = prefs.get(coding, star if star is not None else 0.0)
        if q > best_q:
            best, best_q = coding, q
    if best is None:
        return None
    identity_q = prefs.get("identity")
    if identity_q is not None and identity_q > best_q:
        return None
    return best


def vary_covers(value: bytes) -> bool:
    """True when a Vary header value already names Accept-Encoding or is ``*``."""
    return any(t.strip().lower() in (b"*", b"accept-encoding") for t in value.split(b","))


def weaken_etag(etag: bytes) -> bytes:
    """A strong ETag becomes weak (``W/"x"``): the encoded bytes differ from the original."""
    return etag if etag[:2] in (b"W/", b"w/") else b"W/" + etag


class ContentTypeFilter:
    """Tells whether a Content-Type header value is excluded from compression."""

    __slots__ = ("_cache", "_exact", "_top")

    def __init__(self, patterns: Iterable[str]) -> None:
        exact: set[str] = set()
        top: set[str] = set()
        for pattern in patterns:
            p = pattern.partition(";")[0].strip().lower()
            if p.endswith("/*"):
                top.add(p[:-2])
            elif p:
                exact.add(p)
        self._exact = frozenset(exact)
        self._top = frozenset(top)
        self._cache: dict[bytes, bool] = {}

    def excluded(self, content_type: bytes) -> bool:
        """True when the media type (parameters ignored) matches an excluded pattern."""
        try:
            return self._cache[content_type]
        except KeyError:
            pass
        result = self._match(content_type)
        if len(self._cache) >= 256:
            self._cache.clear()  # an app with endless content types re-parses, no more
        self._cache[content_type] = result
        return result

    def _match(self, content_type: bytes) -> bool:
        media = content_type.partition(b";")[0].strip().lower().decode("latin-1")
        if media in self._exact:
            return True
        top, _, sub = media.partition("/")
        if top in self._top:
            return True
        # Structured-syntax variants: application/grpc+proto is still gRPC.
        base, plus, _ = sub.partition("+")
        return bool(plus) and f"{top}/{base}" in self._exact
