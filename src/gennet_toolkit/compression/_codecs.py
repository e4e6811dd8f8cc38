"""Encoders (responses) and decoders (requests) for gzip, deflate, br and zstd.

Optional libraries arrive as module objects from the middleware, which imports them
lazily; nothing here imports brotli or ``compression.zstd`` at module import.
"""

from __future__ import annotations

import secrets
import struct
import zlib
from types import ModuleType
from typing import Any, Protocol

__all__ = [
    "Codec",
    "Decoder",
    "DecodeError",
    "Encoder",
    "brotli_codec",
    "gzip_codec",
    "make_decoder",
    "zstd_codec",
]


class DecodeError(Exception):
    """The compressed request body is corrupt or truncated."""


class Encoder(Protocol):
    """One response's compression stream."""

    def chunk(self, data: bytes) -> bytes:
        """Compress ``data`` and flush, so the client can decode everything sent so far."""

    def finish(self, data: bytes) -> bytes:
        """Compress the last ``data`` and close the stream."""


class Codec:
    """A content coding: a one-shot compressor for whole bodies and a stream factory."""

    __slots__ = ("name", "oneshot", "stream")

    def __init__(self, name: str, oneshot: Any, stream: Any) -> None:
        self.name = name
        self.oneshot = oneshot
        self.stream = stream


# ---------------------------------------------------------------------------- gzip


class _GzipStream:
    __slots__ = ("_c",)

    def __init__(self, level: int) -> None:
        self._c = zlib.compressobj(level, zlib.DEFLATED, 31)

    def chunk(self, data: bytes) -> bytes:
        return self._c.compress(data) + self._c.flush(zlib.Z_SYNC_FLUSH)

    def finish(self, data: bytes) -> bytes:
        return self._c.compress(data) + self._c.flush()


def _padded_header(max_random: int) -> bytes:
    # "Heal the BREACH": a random-length FNAME field makes the response length a noisy
    # oracle. The name is ASCII without NUL, as the gzip format requires.
    name = b"a" * (1 + secrets.randbelow(max_random))
    return b"\x1f\x8b\x08\x08\x00\x00\x00\x00\x00\xff" + name + b"\x00"


class _PaddedGzipStream:
    __slots__ = ("_c", "_crc", "_header", "_size")

    def __init__(self, level: int, max_random: int) -> None:
        self._c = zlib.compressobj(level, zlib.DEFLATED, -15)
        self._crc = 0
        self._size = 0
        self._header = _padded_header(max_random)

    def _feed(self, data: bytes) -> bytes:
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        out = self._c.compress(data)
        if self._header:
            out, self._header = self._header + out, b""
        return out

    def chunk(self, data: bytes) -> bytes:
        return self._feed(data) + self._c.flush(zlib.Z_SYNC_FLUSH)

    def finish(self, data: bytes) -> bytes:
        out = self._feed(data) + self._c.flush()
        return out + struct.pack("<II", self._crc, self._size & 0xFFFFFFFF)


def gzip_codec(level: int, padding: int = 0) -> Codec:
    """gzip at ``level``; with ``padding`` > 0, a random 1..padding byte FNAME per response."""
    if padding:

        def padded(data: bytes) -> bytes:
            body = zlib.compress(data, level, wbits=-15)
            trailer = struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)
            return _padded_header(padding) + body + trailer

        return Codec("gzip", padded, lambda: _PaddedGzipStream(level, padding))

    def oneshot(data: bytes) -> bytes:
        return zlib.compress(data, level, wbits=31)

    return Codec("gzip", oneshot, lambda: _GzipStream(level))


# ---------------------------------------------------------------------------- brotli


class _BrotliStream:
    __slots__ = ("_c",)

    def __init__(self, brotli: ModuleType, quality: int) -> None:
        self._c = brotli.Compressor(quality=quality)

    def chunk(self, data: bytes) -> bytes:
        out: bytes = self._c.process(data) + self._c.flush()
        return out

    def finish(self, data: bytes) -> bytes:
        out: bytes = self._c.process(data) + self._c.finish()
        return out


def brotli_codec(brotli: ModuleType, quality: int) -> Codec:
    """br at ``quality`` using the ``brotli`` module given."""

    def oneshot(data: bytes) -> bytes:
        out: bytes = brotli.compress(data, quality=quality)
        return out

    return Codec("br", oneshot, lambda: _BrotliStream(brotli, quality))


# ---------------------------------------------------------------------------- zstd


class _ZstdStream:
    __slots__ = ("_block", "_c", "_frame")

    def __init__(self, zstd: ModuleType, level: int) -> None:
        self._c = zstd.ZstdCompressor(level=level)
        self._block = zstd.ZstdCompressor.FLUSH_BLOCK
        self._frame = zstd.ZstdCompressor.FLUSH_FRAME

    def chunk(self, data: bytes) -> bytes:
        # mode is positional-only in CPython's _zstd.
        out: bytes = self._c.compress(data, self._block)
        return out

    def finish(self, data: bytes) -> bytes:
        out: bytes = self._c.compress(data, self._frame)
        return out


def zstd_codec(zstd: ModuleType, level: int) -> Codec:
    """zstd at ``level`` using Python 3.14's ``compression.zstd``."""

    def oneshot(data: bytes) -> bytes:
        out: bytes = zstd.compress(data, level=level)
        return out

    return Codec("zstd", oneshot, lambda: _ZstdStream(zstd, level))


# ---------------------------------------------------------------------------- decoders


class Decoder(Protocol):
    """Inflates one request body with bounded output per call."""

    def feed(self, data: bytes, limit: int) -> bytes:
        """Take ``data`` (may be empty) and return about ``limit`` bytes at most."""

    def pending(self) -> bool:
        """True when more output may come without new input."""

    def finished(self) -> bool:
        """True when the compressed stream ended cleanly with nothing left over."""


class _ZlibDecoder:
    """gzip (any number of concatenated members) or deflate (zlib or raw) bodies."""

    __slots__ = ("_d", "_gzip", "_more", "_tail")

    def __init__(self, gzip: bool) -> None:
        self._gzip = gzip
        self._d: Any = zlib.decompressobj(31) if gzip else None
        self._tail = b""
        self._more = False

    def feed(self, data: bytes, limit: int) -> bytes:
        data = self._tail + data if self._tail else data
        self._tail = b""
        if self._d is None:
            # "deflate" should be zlib-wrapped (RFC 9110), but some clients send raw
            # deflate; the first two bytes tell them apart.
            if len(data) < 2:
                self._tail = data
                return b""
            wrapped = data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._d = zlib.decompressobj(15 if wrapped else -15)
        try:
            out: bytes = self._d.decompress(data, limit)
        except zlib.error:
            raise DecodeError from None
        self._tail = self._d.unconsumed_tail
        # A full buffer may hide output still held inside zlib (a long match).
        self._more = len(out) >= limit
        if self._d.eof and self._d.unused_data:
            if not self._gzip:
                raise DecodeError
            # Concatenated gzip members decode as one body (RFC 1952 section 2.2).
            self._tail = self._d.unused_data + self._tail
            self._d = zlib.decompressobj(31)
        return out

    def pending(self) -> bool:
        # Before the deflate flavour is known, a 1-byte tail needs more input, not a retry.
        return (bool(self._tail) and self._d is not None) or self._more

    def finished(self) -> bool:
        return self._d is not None and self._d.eof and not self._tail


class _BrotliDecoder:
    __slots__ = ("_d", "_tail")

    def __init__(self, brotli: ModuleType) -> None:
        self._d = brotli.Decompressor()
        self._tail = b""

    def feed(self, data: bytes, limit: int) -> bytes:
        if data:
            self._tail += data
        try:
            # brotli's limit is approximate (it may return up to about twice as much);
            # the caller counts bytes itself.
            if not self._d.can_accept_more_data():
                out: bytes = self._d.process(b"", output_buffer_limit=limit)
            elif self._tail:
                if self._d.is_finished():
                    raise DecodeError
                data, self._tail = self._tail, b""
                out = self._d.process(data, output_buffer_limit=limit)
            else:
                out = b""
        except DecodeError:
            raise
        except Exception:  # brotli.error, but the module is only known at run time
            raise DecodeError from None
        return out

    def pending(self) -> bool:
        return bool(self._tail) or not self._d.can_accept_more_data()

    def finished(self) -> bool:
        return bool(self._d.is_finished()) and not self._tail


class _ZstdDecoder:
    __slots__ = ("_d", "_tail", "_zstd")

    def __init__(self, zstd: ModuleType) -> None:
        self._zstd = zstd
        self._d = zstd.ZstdDecompressor()
        self._tail = b""

    def feed(self, data: bytes, limit: int) -> bytes:
        data = self._tail + data if self._tail else data
        self._tail = b""
        if self._d.eof:
            if not data:
                return b""  # a finished frame raises EOFError on any further call
            self._d = self._zstd.ZstdDecompressor()
        try:
            out: bytes = self._d.decompress(data, limit)
        except (self._zstd.ZstdError, EOFError):
            raise DecodeError from None
        if self._d.eof:
            rest = self._d.unused_data
            if rest:
                # Several frames in a row decode as one body, like gzip members.
                self._d = self._zstd.ZstdDecompressor()
                self._tail = rest
        return out

    def pending(self) -> bool:
        return bool(self._tail) or not (self._d.eof or self._d.needs_input)

    def finished(self) -> bool:
        return bool(self._d.eof) and not self._tail


def make_decoder(coding: str, modules: dict[str, ModuleType]) -> Decoder | None:
    """A decoder for request ``coding``, or ``None`` when it is not supported."""
    if coding in ("gzip", "x-gzip"):
        return _ZlibDecoder(gzip=True)
    if coding == "deflate":
        return _ZlibDecoder(gzip=False)
    if coding == "br" and "br" in modules:
        return _BrotliDecoder(modules["br"])
    if coding == "zstd" and "zstd" in modules:
        return _ZstdDecoder(modules["zstd"])
    return None
