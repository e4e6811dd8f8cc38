"""Tests for gennet_toolkit.compression: negotiation, response encoding, request inflation."""

from __future__ import annotations

import gzip
import importlib
import json
import os
import subprocess
import sys
import threading
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread
import brotli
import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from gennet_toolkit.compression import (
    NO_COMPRESSION_HEADER,
    CompressionMiddleware,
    negotiate_encoding,
    skip_compression,
)
from gennet_toolkit.exceptions import ConfigurationError

pytestmark = pytest.mark.anyio


def _zstd() -> Any:
    for name in ("compression.zstd", "backports.zstd"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


# compression.zstd (3.14+) or backports-zstd; zstd tests skip without either.
zstd = _zstd()
HAS_ZSTD = zstd is not None
needs_zstd = pytest.mark.skipif(not HAS_ZSTD, reason="no compression.zstd / backports-zstd")
PROBLEM = "application/problem+json"
DATA = {"genes": [{"symbol": f"GENE{i}", "weight": i / 100} for i in range(200)]}
BODY = json.dumps(DATA, separators=(",", ":")).encode()  # ~6 KB, as JSONResponse writes it

Message = dict[str, Any]


# --------------------------------------------------------------------------- helpers


def starlette_app(**options: Any) -> Any:
    async def data(request: Request) -> Response:
        return JSONResponse(DATA)

    async def small(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def echo(request: Request) -> Response:
        body = await request.body()
        seen = {k: v for k, v in request.headers.items() if k.startswith("content-")}
        return JSONResponse({"length": len(body), "sha": zlib.crc32(body), "headers": seen})

    async def secret(request: Request) -> Response:
        skip_compression(request)
        return JSONResponse(DATA)

    routes = [
        Route("/data", data),
        Route("/small", small),
        Route("/echo", echo, methods=["POST"]),
        Route("/secret", secret),
    ]
    return CompressionMiddleware(Starlette(routes=routes), **options)


class Item(BaseModel):
    genes: list[dict[str, Any]]


def fastapi_app(**options: Any) -> Any:
    app = FastAPI()

    @app.get("/data")
    async def data() -> dict[str, Any]:
        return DATA

    @app.post("/items")
    async def items(item: Item) -> dict[str, int]:
        return {"genes": len(item.genes)}

    return CompressionMiddleware(app, **options)


def bare_app(
    headers: list[tuple[bytes, bytes]],
    chunks: list[bytes],
    status: int = 200,
    **start_extra: Any,
) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": status, "headers": headers, **start_extra}
        )
        for i, chunk in enumerate(chunks):
            more = i < len(chunks) - 1
            await send({"type": "http.response.body", "body": chunk, "more_body": more})

    return app


async def raw_get(
    app: Any, path: str = "/data", method: str = "GET", **kwargs: Any
) -> tuple[httpx.Response, bytes]:
    """The response and its body exactly as sent on the wire (not decoded)."""
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        client.stream(method, path, **kwargs) as response,
    ):
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    return response, raw


def scope_for(
    path: str = "/", headers: list[tuple[bytes, bytes]] | None = None, **extra: Any
) -> Any:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": extra.pop("method", "GET"),
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers or [],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        **extra,
    }


async def drive(
    app: Any,
    headers: list[tuple[bytes, bytes]],
    body_messages: list[Message] | None = None,
    on_send: Callable[[Message], Awaitable[None]] | None = None,
    **scope_extra: Any,
) -> list[Message]:
    """Call ``app`` directly and return every message it sent."""
    sent: list[Message] = []
    incoming = list(body_messages or [{"type": "http.request", "body": b"", "more_body": False}])

    async def receive() -> Message:
        if incoming:
            return incoming.pop(0)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)
        if on_send is not None:
            await on_send(message)

    await app(scope_for("/", headers, **scope_extra), receive, send)
    return sent


def header(message: Message, name: bytes) -> bytes | None:
    values = [v for k, v in message["headers"] if k.lower() == name]
    assert len(values) <= 1, f"duplicate {name!r} header"
    return values[0] if values else None


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


# --------------------------------------------------------------------------- negotiation

OFFERED = ("br", "gzip")


@pytest.mark.parametrize(
    ("header_value", "expected"),
    [
        ("gzip", "gzip"),
        ("GZIP", "gzip"),
        ("Gzip, BR", "br"),
        ("x-gzip", "gzip"),
        ("gzip;q=0", None),
        ("gzip; q=0.000, br;q=0", None),
        ("br;q=0.5, gzip;q=0.8", "gzip"),
        ("gzip;q=0.8, br;q=0.8", "br"),  # tie: server preference
        ("*", "br"),
        ("*;q=0", None),
        ("gzip, *;q=0", "gzip"),
        ("br;q=0, *", "gzip"),
        ("identity", None),
        ("identity;q=1, gzip;q=0.5", None),
        ("identity;q=0.5, gzip;q=0.5", "gzip"),
        ("identity;q=0", None),
        ("deflate, compress", None),
        ("gzip;level=1", "gzip"),
        ("br;q=1.5", "br"),
        # malformed parts are ignored, never raised
        ("gzip;q=abc", None),
        ("gzip;q=, br", "br"),
        ("gzip;q=nan", None),
        ("gzip;q=-1, br;q=0.1", "br"),
        (";;;,,,==", None),
        ("", None),
        ("\x00\xff, gzip", "gzip"),
    ],
)
def test_accept_encoding_negotiation(header_value: str, expected: str | None) -> None:
    assert negotiate_encoding(header_value, OFFERED) == expected


def test_server_preference_order_breaks_ties() -> None:
    assert negotiate_encoding("br, gzip", ("gzip", "br")) == "gzip"
    assert negotiate_encoding("br, gzip", ("br", "gzip")) == "br"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_accept_encoding_value_negotiates_without_raising(value: str) -> None:
    assert negotiate_encoding(value, OFFERED) in {None, "br", "gzip"}


def test_huge_accept_encoding_header_is_cut_not_rejected() -> None:
    assert negotiate_encoding("gzip," + "x" * 100_000, OFFERED) == "gzip"


# --------------------------------------------------------------------------- responses


async def test_gzip_response_under_starlette_has_encoding_length_and_vary() -> None:
    response, raw = await raw_get(starlette_app(), headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["vary"] == "Accept-Encoding"
    assert int(response.headers["content-length"]) == len(raw) < len(BODY)
    assert gzip.decompress(raw) == BODY


async def test_brotli_response_under_fastapi() -> None:
    response, raw = await raw_get(fastapi_app(), headers={"Accept-Encoding": "gzip, br"})
    assert response.headers["content-encoding"] == "br"
    assert json.loads(brotli.decompress(raw)) == DATA
    assert int(response.headers["content-length"]) == len(raw)


async def test_upper_case_coding_token_is_honoured() -> None:
    response, raw = await raw_get(starlette_app(), headers={"Accept-Encoding": "GZIP"})
    assert response.headers["content-encoding"] == "gzip"
    assert gzip.decompress(raw) == BODY


async def test_q_zero_refuses_the_coding() -> None:
    response, raw = await raw_get(starlette_app(), headers={"Accept-Encoding": "gzip;q=0, br;q=0"})
    assert "content-encoding" not in response.headers
    assert raw == BODY
    assert response.headers["vary"] == "Accept-Encoding"


async def test_without_accept_encoding_body_is_identity_but_vary_is_sent() -> None:
    app = starlette_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        request = client.build_request("GET", "/data")
        del request.headers["accept-encoding"]
        response = await client.send(request)
    assert "content-encoding" not in response.headers
    assert response.content == BODY
    assert response.headers["vary"] == "Accept-Encoding"


async def test_small_response_is_not_compressed_but_carries_vary() -> None:
    response, raw = await raw_get(starlette_app(), "/small", headers={"Accept-Encoding": "gzip"})
    assert raw == b"ok"
    assert "content-encoding" not in response.headers
    assert response.headers["vary"] == "Accept-Encoding"


async def test_minimum_size_applies_to_unsized_single_chunk_bodies() -> None:
    app = CompressionMiddleware(bare_app([(b"content-type", b"text/plain")], [b"x" * 499]))
    sent = await drive(app, [(b"accept-encoding", b"gzip")])
    assert header(sent[0], b"content-encoding") is None
    assert sent[1]["body"] == b"x" * 499
    app = CompressionMiddleware(bare_app([(b"content-type", b"text/plain")], [b"x" * 500]))
    sent = await drive(app, [(b"accept-encoding", b"gzip")])
    assert header(sent[0], b"content-encoding") == b"gzip"
    assert gzip.decompress(sent[1]["body"]) == b"x" * 500


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        ([(b"vary", b"Origin")], [b"Origin, Accept-Encoding"]),
        ([(b"Vary", b"origin, accept-encoding")], [b"origin, accept-encoding"]),
        ([(b"vary", b"*")], [b"*"]),
        ([(b"vary", b"Origin"), (b"vary", b"Accept-Encoding")], [b"Origin", b"Accept-Encoding"]),
    ],
)
async def test_vary_is_merged_without_duplicates(
    existing: list[tuple[bytes, bytes]], expected: list[bytes]
) -> None:
    app = CompressionMiddleware(bare_app([(b"content-type", b"text/plain"), *existing], [BODY]))
    sent = await drive(app, [(b"accept-encoding", b"gzip")])
    assert [v for k, v in sent[0]["headers"] if k.lower() == b"vary"] == expected
    assert header(sent[0], b"content-encoding") == b"gzip"


@pytest.mark.parametrize(
    "content_type",
    [b"image/png", b"application/grpc+proto", b"text/event-stream; charset=utf-8", b"video/mp4"],
)
async def test_excluded_content_types_pass_untouched(content_type: bytes) -> None:
    app = CompressionMiddleware(bare_app([(b"content-type", content_type)], [BODY]))
    sent = await drive(app, [(b"accept-encoding", b"gzip, br")])
    assert header(sent[0], b"content-encoding") is None
    assert sent[1]["body"] == BODY


async def test_custom_excluded_content_types_replace_the_defaults() -> None:
    app = CompressionMiddleware(
        bare_app([(b"content-type", b"image/png")], [BODY]),
        excluded_content_types=["application/json"],
    )
    sent = await drive(app, [(b"accept-encoding", b"gzip")])
    assert header(sent[0], b"content-encoding") == b"gzip"
    _response, raw = await raw_get(
        starlette_app(excluded_content_types=["application/*"]), headers={"Accept-Encoding": "gzip"}
    )
    assert raw == BODY


async def test_already_encoded_body_is_not_encoded_twice() -> None:
    encoded = gzip_bytes(BODY)
    headers = [(b"content-type", b"application/json"), (b"content-encoding", b"gzip")]
    app = CompressionMiddleware(bare_app(headers, [encoded]))
    sent = await drive(app, [(b"accept-encoding", b"br, gzip")])
    assert sent[0]["headers"] == headers
    assert sent[1]["body"] == encoded


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (206, [(b"content-type", b"text/plain"), (b"content-range", b"bytes 0-999/5000")]),
        # Several ranges: the parts carry Content-Range, the response itself does not.
        (206, [(b"content-type", b"multipart/byteranges; boundary=b")]),
        # A range that cannot be served still describes the representation's length.
        (416, [(b"content-type", b"text/plain"), (b"content-range", b"bytes */5000")]),
    ],
)
async def test_partial_content_passes_untouched(
    status: int, headers: list[tuple[bytes, bytes]]
) -> None:
    app = CompressionMiddleware(bare_app(headers, [b"x" * 1000], status=status))
    sent = await drive(app, [(b"accept-encoding", b"gzip")])
    assert sent[0]["headers"] == headers
    assert sent[1]["body"] == b"x" * 1000


@pytest.mark.parametrize(
    "kind", ["http.response.pathsend", "http.response.zerocopysend", "x.unknown"]
)
async def test_pathsend_and_unknown_messages_pass_untouched(kind: str) -> None:
    special = {"type": kind, "path": "/srv/file.txt"}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send(special)

    sent = await drive(CompressionMiddleware(app), [(b"accept-encoding", b"gzip")])
    assert header(sent[0], b"content-encoding") is None
    assert sent[1] is special


async def test_early_hints_before_the_response_pass_through() -> None:
    hint = {"type": "http.response.early_hint", "links": ["</style.css>; rel=preload"]}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(hint)
        await bare_app([(b"content-type", b"text/plain")], [BODY])(scope, receive, send)

    sent = await drive(CompressionMiddleware(app), [(b"accept-encoding", b"gzip")])
    assert sent[0] is hint
    assert header(sent[1], b"content-encoding") == b"gzip"


async def test_strong_etag_is_weakened_when_reencoding() -> None:
    for etag, expected in [(b'"v1"', b'W/"v1"'), (b'W/"v2"', b'W/"v2"')]:
        app = CompressionMiddleware(
            bare_app([(b"content-type", b"text/plain"), (b"etag", etag)], [BODY])
        )
        sent = await drive(app, [(b"accept-encoding", b"gzip")])
        assert header(sent[0], b"etag") == expected
    app = CompressionMiddleware(
        bare_app([(b"content-type", b"text/plain"), (b"etag", b'"v1"')], [BODY])
    )
    sent = await drive(app, [])
    assert header(sent[0], b"etag") == b'"v1"'


async def test_head_request_is_not_compressed() -> None:
    response, _raw = await raw_get(
        starlette_app(), method="HEAD", headers={"Accept-Encoding": "gzip"}
    )
    assert "content-encoding" not in response.headers
    assert response.headers["content-length"] == str(len(BODY))
    assert response.headers["vary"] == "Accept-Encoding"


async def test_not_modified_carries_vary_and_no_encoding() -> None:
    app = CompressionMiddleware(bare_app([(b"etag", b'"v1"')], [b""], status=304))
    sent = await drive(app, [(b"accept-encoding", b"gzip")])
    assert header(sent[0], b"vary") == b"Accept-Encoding"
    assert header(sent[0], b"content-encoding") is None


async def test_incompressible_body_is_sent_as_is() -> None:
    noise = os.urandom(4000)
    app = CompressionMiddleware(bare_app([(b"content-type", b"application/octet-stream")], [noise]))
    sent = await drive(app, [(b"accept-encoding", b"gzip")])
    assert header(sent[0], b"content-encoding") is None
    assert sent[1]["body"] == noise
    assert header(sent[0], b"vary") == b"Accept-Encoding"


async def test_response_marker_header_opts_out_and_is_stripped() -> None:
    headers = [(b"content-type", b"application/json"), (NO_COMPRESSION_HEADER.encode(), b"1")]
    app = CompressionMiddleware(bare_app(headers, [BODY]))
    sent = await drive(app, [(b"accept-encoding", b"gzip")])
    assert sent[0]["headers"] == [(b"content-type", b"application/json")]
    assert sent[1]["body"] == BODY


async def test_skip_compression_in_a_starlette_endpoint_opts_out() -> None:
    response, raw = await raw_get(starlette_app(), "/secret", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in response.headers
    assert raw == BODY


async def test_trailers_pass_and_content_length_is_dropped() -> None:
    trailers = {
        "type": "http.response.trailers",
        "headers": [(b"x-checksum", b"1")],
        "more_trailers": False,
    }

    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())]
        await send(
            {"type": "http.response.start", "status": 200, "headers": headers, "trailers": True}
        )
        await send({"type": "http.response.body", "body": BODY, "more_body": False})
        await send(trailers)

    sent = await drive(CompressionMiddleware(app), [(b"accept-encoding", b"gzip")])
    assert header(sent[0], b"content-encoding") == b"gzip"
    assert header(sent[0], b"content-length") is None
    assert gzip.decompress(sent[1]["body"]) == BODY
    assert sent[2] is trailers


@needs_zstd
async def test_zstd_response_when_available() -> None:
    response, raw = await raw_get(starlette_app(), headers={"Accept-Encoding": "zstd"})
    assert response.headers["content-encoding"] == "zstd"
    assert zstd.decompress(raw) == BODY
    assert int(response.headers["content-length"]) == len(raw)


@needs_zstd
async def test_zstd_request_bodies_inflate_including_several_frames_and_bombs() -> None:
    payload = BODY * 3
    for content in (
        zstd.compress(payload),
        zstd.compress(payload[:500]) + zstd.compress(payload[500:]),
    ):
        response, raw = await raw_get(
            starlette_app(),
            "/echo",
            method="POST",
            content=content,
            headers={"Content-Encoding": "zstd"},
        )
        assert response.status_code == 200, raw
        assert json.loads(raw)["sha"] == zlib.crc32(payload)
    response, raw = await raw_get(
        starlette_app(max_decompressed_size=1024 * 1024),
        "/echo",
        method="POST",
        content=zstd.compress(b"\0" * 50 * 1024 * 1024),
        headers={"Content-Encoding": "zstd"},
    )
    assert response.status_code == 413
    for bad in (b"not zstd at all", zstd.compress(payload)[:-10]):
        response, raw = await raw_get(
            starlette_app(),
            "/echo",
            method="POST",
            content=bad,
            headers={"Content-Encoding": "zstd"},
        )
        assert response.status_code == 400
        assert json.loads(raw)["code"] == "corrupt_request_encoding"


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("coding", ["gzip", "br", pytest.param("zstd", marks=needs_zstd)])
async def test_first_compressed_chunk_arrives_before_the_app_sends_the_last(coding: str) -> None:
    first_seen = anyio.Event()
    chunks = [b'{"chunk": %d, "pad": "%s"}\n' % (i, b"a" * 200) for i in range(3)]

    async def stream() -> AsyncIterator[bytes]:
        yield chunks[0]
        # Without per-chunk flushing this would wait forever (fail_after below).
        await first_seen.wait()
        yield chunks[1]
        yield chunks[2]

    async def endpoint(request: Request) -> Response:
        return StreamingResponse(stream(), media_type="application/x-ndjson")

    app = CompressionMiddleware(Starlette(routes=[Route("/", endpoint)]))
    decoder: Any = {
        "gzip": lambda: zlib.decompressobj(31),
        "br": brotli.Decompressor,
        "zstd": getattr(zstd, "ZstdDecompressor", None),
    }[coding]()
    decoded: list[bytes] = []

    async def on_send(message: Message) -> None:
        if message["type"] == "http.response.body" and message["body"]:
            if coding == "br":
                decoded.append(decoder.process(message["body"]))
            else:
                decoded.append(decoder.decompress(message["body"]))
            if len(decoded) == 1:
                assert decoded[0] == chunks[0]
                first_seen.set()

    with anyio.fail_after(5):
        sent = await drive(app, [(b"accept-encoding", coding.encode())], on_send=on_send)
    assert header(sent[0], b"content-encoding") == coding.encode()
    assert header(sent[0], b"content-length") is None
    assert header(sent[0], b"vary") == b"Accept-Encoding"
    assert b"".join(decoded) == b"".join(chunks)
    assert sent[-1]["more_body"] is False


async def test_early_headers_send_the_start_before_the_first_chunk_exists() -> None:
    started = anyio.Event()

    async def stream() -> AsyncIterator[bytes]:
        await started.wait()  # held headers would never let this return (fail_after)
        yield b"tiny"

    async def endpoint(request: Request) -> Response:
        return StreamingResponse(stream(), media_type="text/plain")

    async def on_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            started.set()

    app = CompressionMiddleware(Starlette(routes=[Route("/", endpoint)]), early_headers=True)
    with anyio.fail_after(5):
        sent = await drive(app, [(b"accept-encoding", b"gzip")], on_send=on_send)
    assert header(sent[0], b"content-encoding") == b"gzip"
    assert gzip.decompress(b"".join(m["body"] for m in sent[1:])) == b"tiny"
    # A sized response still waits and honours minimum_size.
    sized = CompressionMiddleware(
        bare_app([(b"content-type", b"text/plain"), (b"content-length", b"4")], [b"tiny"]),
        early_headers=True,
    )
    sent = await drive(sized, [(b"accept-encoding", b"gzip")])
    assert header(sent[0], b"content-encoding") is None


async def test_malformed_accept_encoding_over_http_is_never_an_error() -> None:
    for value in ["gzip;q=1;q=2;;, , br;q=x", ";q=0.5", "*;q=;", "gzip;q=0.5.5", "q=1"]:
        response, raw = await raw_get(starlette_app(), headers={"Accept-Encoding": value})
        assert response.status_code == 200
        encoding = response.headers.get("content-encoding")
        decoded = {None: lambda b: b, "gzip": gzip.decompress, "br": brotli.decompress}[encoding](
            raw
        )
        assert decoded == BODY


async def test_streamed_body_is_one_valid_gzip_stream_and_drops_content_length() -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"3000"), (b"etag", b'"s"')]
    parts = [b"a" * 1000, b"", b"b" * 1000, b"c" * 1000]
    sent = await drive(
        CompressionMiddleware(bare_app(headers, parts)), [(b"accept-encoding", b"gzip")]
    )
    assert header(sent[0], b"content-length") is None
    assert header(sent[0], b"etag") == b'W/"s"'
    assert gzip.decompress(b"".join(m["body"] for m in sent[1:])) == b"".join(parts)


DECODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.decompress,
    "br": brotli.decompress,
    "identity": lambda b: b,
    **({"zstd": zstd.decompress} if HAS_ZSTD else {}),
}


@settings(max_examples=60, deadline=None)
@given(
    chunks=st.lists(st.binary(max_size=2000) | st.text(max_size=2000).map(str.encode), max_size=6),
    accept=st.sampled_from(["gzip", "br", "zstd", "identity", "br;q=0.1, gzip;q=0.9", "*"]),
    padding=st.sampled_from([0, 7]),
)
def test_any_response_round_trips_through_the_negotiated_coding(
    chunks: list[bytes], accept: str, padding: int
) -> None:
    chunks = chunks or [b""]
    app = CompressionMiddleware(
        bare_app([(b"content-type", b"text/plain")], chunks),
        minimum_size=100,
        breach_padding=padding,
    )
    sent = anyio.run(lambda: drive(app, [(b"accept-encoding", accept.encode())]))
    coding = (header(sent[0], b"content-encoding") or b"identity").decode()
    assert sent[-1]["more_body"] is False
    assert DECODERS[coding](b"".join(m["body"] for m in sent[1:])) == b"".join(chunks)


async def test_event_stream_is_never_buffered_or_encoded() -> None:
    async def events() -> AsyncIterator[bytes]:
        for i in range(3):
            yield b"data: %d\n\n" % i

    async def endpoint(request: Request) -> Response:
        return StreamingResponse(events(), media_type="text/event-stream")

    app = CompressionMiddleware(Starlette(routes=[Route("/", endpoint)]), minimum_size=0)
    response, raw = await raw_get(app, "/", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in response.headers
    assert raw == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"


async def test_large_chunks_are_compressed_in_a_worker_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[str] = []
    real = anyio.to_thread.run_sync

    async def spy(fn: Any, *args: Any, **kwargs: Any) -> Any:
        def recorded(*a: Any) -> Any:
            threads.append(threading.current_thread().name)
            return fn(*a)

        return await real(recorded, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", spy)
    big = b"0123456789abcdef" * (300 * 1024 // 16)
    app = CompressionMiddleware(bare_app([(b"content-type", b"text/plain")], [big, big]))
    sent = await drive(app, [(b"accept-encoding", b"br")])
    assert brotli.decompress(b"".join(m["body"] for m in sent[1:])) == big + big
    assert len(threads) == 2
    assert threading.main_thread().name not in threads
    # Small chunks stay on the loop.
    threads.clear()
    await drive(CompressionMiddleware(bare_app([], [BODY])), [(b"accept-encoding", b"gzip")])
    assert threads == []


async def test_compressors_are_created_only_for_compressed_streams(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created: list[int] = []
    real = zlib.compressobj

    def spy(*args: Any, **kwargs: Any) -> Any:
        created.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(zlib, "compressobj", spy)
    app = CompressionMiddleware(bare_app([(b"content-type", b"text/plain")], [b"a" * 1000, b"b"]))
    await drive(app, [(b"accept-encoding", b"identity")])
    await drive(app, [(b"accept-encoding", b"gzip")], method="HEAD")
    assert created == []
    await drive(app, [(b"accept-encoding", b"gzip")])
    assert created == [1]


# --------------------------------------------------------------------------- BREACH


async def test_breach_padding_randomises_length_and_stays_valid_gzip() -> None:
    app = starlette_app(breach_padding=64)
    lengths = set()
    for _ in range(12):
        response, raw = await raw_get(app, headers={"Accept-Encoding": "br, gzip"})
        assert response.headers["content-encoding"] == "gzip"  # br cannot carry padding
        assert gzip.decompress(raw) == BODY
        lengths.add(len(raw))
    assert len(lengths) > 1


async def test_breach_padding_on_streamed_responses() -> None:
    app = CompressionMiddleware(
        bare_app([(b"content-type", b"text/plain")], [b"a" * 700, b"b" * 700]), breach_padding=16
    )
    sent = await drive(app, [(b"accept-encoding", b"gzip")])
    assert gzip.decompress(b"".join(m["body"] for m in sent[1:])) == b"a" * 700 + b"b" * 700


async def test_breach_padding_is_off_by_default() -> None:
    lengths = {
        len((await raw_get(starlette_app(), headers={"Accept-Encoding": "gzip"}))[1])
        for _ in range(5)
    }
    assert len(lengths) == 1


# --------------------------------------------------------------------------- requests


def gzip_members(*parts: bytes) -> bytes:
    return b"".join(gzip_bytes(p) for p in parts)


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip_bytes),
        ("x-gzip", gzip_bytes),
        ("GZip", lambda d: gzip_members(d[:1000], d[1000:])),  # concatenated members
        ("deflate", zlib.compress),
        ("deflate", lambda d: zlib.compress(d, wbits=-15)),  # raw deflate, as some clients send
        ("br", brotli.compress),
    ],
)
async def test_compressed_request_body_is_inflated_for_the_app(coding: str, encode: Any) -> None:
    payload = BODY * 3
    response, raw = await raw_get(
        starlette_app(),
        "/echo",
        method="POST",
        content=encode(payload),
        headers={"Content-Encoding": coding},
    )
    assert response.status_code == 200, raw
    result = json.loads(raw)
    assert result["length"] == len(payload)
    assert result["sha"] == zlib.crc32(payload)
    assert "content-encoding" not in result["headers"]
    assert "content-length" not in result["headers"]


async def test_identity_request_coding_is_left_alone() -> None:
    _response, raw = await raw_get(
        starlette_app(),
        "/echo",
        method="POST",
        content=BODY,
        headers={"Content-Encoding": "identity"},
    )
    result = json.loads(raw)
    assert result["length"] == len(BODY)
    assert result["headers"]["content-encoding"] == "identity"


async def test_compressed_json_body_validates_under_fastapi() -> None:
    response, raw = await raw_get(
        fastapi_app(),
        "/items",
        method="POST",
        content=gzip_bytes(BODY),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert response.status_code == 200
    assert json.loads(raw) == {"genes": 200}


async def test_body_streamed_in_tiny_messages_is_inflated_in_bounded_pieces() -> None:
    payload = b"".join(b"line %d\n" % i for i in range(200_000))  # ~1.5 MB
    compressed = gzip_bytes(payload)
    step = 977
    messages = [
        {
            "type": "http.request",
            "body": compressed[i : i + step],
            "more_body": i + step < len(compressed),
        }
        for i in range(0, len(compressed), step)
    ]
    pieces: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert dict(scope["headers"]).get(b"content-encoding") is None
        while True:
            message = await receive()
            pieces.append(message["body"])
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sent = await drive(
        CompressionMiddleware(app), [(b"content-encoding", b"gzip")], body_messages=messages
    )
    assert sent[0]["status"] == 204
    assert b"".join(pieces) == payload
    assert max(len(p) for p in pieces) <= 64 * 1024


ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip_bytes,
    "deflate": zlib.compress,
    "br": brotli.compress,
    **({"zstd": zstd.compress} if HAS_ZSTD else {}),
}


@settings(max_examples=60, deadline=None)
@given(
    payload=st.binary(max_size=3000) | st.text(max_size=3000).map(str.encode),
    coding=st.sampled_from(sorted(ENCODERS)),
    step=st.integers(min_value=1, max_value=700),
    empty_last=st.booleans(),
)
def test_any_body_split_anywhere_inflates_to_the_original(
    payload: bytes, coding: str, step: int, empty_last: bool
) -> None:
    compressed = ENCODERS[coding](payload)
    messages = [
        {"type": "http.request", "body": compressed[i : i + step], "more_body": True}
        for i in range(0, len(compressed), step)
    ]
    if empty_last:  # as httpx and some servers do: the body, then an empty last message
        messages.append({"type": "http.request", "body": b"", "more_body": False})
    else:
        messages[-1]["more_body"] = False
    received: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            received.append(message["body"])
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    mw = CompressionMiddleware(app, max_decompressed_size=len(payload) or 1)
    sent = anyio.run(
        lambda: drive(mw, [(b"content-encoding", coding.encode())], body_messages=messages)
    )
    assert sent[0]["status"] == 204
    assert b"".join(received) == payload


@pytest.mark.parametrize("value", ["compress", "gzip, br", "snappy", "gzip;q=1"])
async def test_unknown_or_stacked_request_coding_is_415(value: str) -> None:
    response, raw = await raw_get(
        starlette_app(), "/echo", method="POST", content=b"abc", headers={"Content-Encoding": value}
    )
    assert response.status_code == 415
    assert response.headers["content-type"] == PROBLEM
    assert "gzip" in response.headers["accept-encoding"]
    problem = json.loads(raw)
    assert problem["status"] == 415
    assert value not in problem["detail"]


@pytest.mark.parametrize(
    ("coding", "content"),
    [
        ("gzip", b"definitely not gzip"),
        ("gzip", gzip_bytes(BODY)[:-20]),  # truncated
        ("gzip", gzip_bytes(BODY) + b"trailing garbage"),
        ("deflate", b"\x78\x9c garbage"),
        ("br", b"\xff\xff not brotli"),
        ("br", brotli.compress(BODY)[:-5]),
    ],
)
@pytest.mark.parametrize("factory", [starlette_app, fastapi_app])
async def test_corrupt_compressed_body_is_400_not_500(
    coding: str, content: bytes, factory: Any
) -> None:
    path = "/echo" if factory is starlette_app else "/items"
    response, raw = await raw_get(
        factory(),
        path,
        method="POST",
        content=content,
        headers={"Content-Encoding": coding, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM
    problem = json.loads(raw)
    assert problem["code"] == "corrupt_request_encoding"
    assert "garbage" not in raw.decode()


def zero_bomb(coding: str, size: int = 50 * 1024 * 1024) -> bytes:
    if coding == "br":
        return brotli.compress(b"\0" * size)
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\0" * (1024 * 1024)
    return b"".join(c.compress(chunk) for _ in range(size // len(chunk))) + c.flush()


@pytest.mark.parametrize("coding", ["gzip", "br"])
@pytest.mark.parametrize("factory", [starlette_app, fastapi_app])
async def test_decompression_bomb_is_413_without_inflating_the_rest(
    coding: str, factory: Any
) -> None:
    bomb = zero_bomb(coding)
    assert len(bomb) < 100_000
    cap = 1024 * 1024
    path = "/echo" if factory is starlette_app else "/items"
    app = factory(max_decompressed_size=cap)
    tracemalloc.start()
    try:
        response, raw = await raw_get(
            app,
            path,
            method="POST",
            content=bomb,
            headers={"Content-Encoding": coding, "Content-Type": "application/json"},
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 413
    assert response.headers["connection"] == "close"
    assert response.headers["content-type"] == PROBLEM
    assert json.loads(raw)["code"] == "decompressed_body_too_large"
    # 50 MiB would be inflated by a naive decoder; ours stops just past the cap (the
    # app may hold up to the cap itself, as it reads the body).
    assert peak < 4 * cap


async def test_bomb_app_never_sees_more_than_the_cap() -> None:
    cap = 256 * 1024
    seen = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal seen
        while True:
            message = await receive()
            seen += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"read it all"})

    bomb = zero_bomb("gzip", 8 * 1024 * 1024)
    sent = await drive(
        CompressionMiddleware(app, max_decompressed_size=cap),
        [(b"content-encoding", b"gzip")],
        body_messages=[{"type": "http.request", "body": bomb, "more_body": False}],
    )
    assert seen <= cap
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 413
    assert (b"connection", b"close") in sent[0]["headers"]


async def test_app_that_swallows_the_refusal_reads_a_disconnect_and_its_reply_is_dropped() -> None:
    after: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            while (await receive()).get("more_body"):
                pass
        except Exception:
            after.append((await receive())["type"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"pretending all is well"})

    sent = await drive(
        CompressionMiddleware(app, max_decompressed_size=1000),
        [(b"content-encoding", b"gzip")],
        body_messages=[{"type": "http.request", "body": gzip_bytes(b"x" * 5000)}],
    )
    assert after == ["http.disconnect"]
    assert [m.get("status") for m in sent] == [413, None]
    assert b"pretending" not in sent[1]["body"]


async def test_body_exactly_at_the_cap_is_accepted() -> None:
    payload = b"x" * 10_000
    response, raw = await raw_get(
        starlette_app(max_decompressed_size=10_000),
        "/echo",
        method="POST",
        content=gzip_bytes(payload),
        headers={"Content-Encoding": "gzip"},
    )
    assert response.status_code == 200
    assert json.loads(raw)["length"] == 10_000


async def test_empty_body_with_content_encoding_is_an_empty_body() -> None:
    response, raw = await raw_get(
        starlette_app(), "/echo", method="POST", content=b"", headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 200
    assert json.loads(raw)["length"] == 0


async def test_request_decompression_can_be_turned_off() -> None:
    compressed = gzip_bytes(BODY)
    _response, raw = await raw_get(
        starlette_app(decompress_requests=False),
        "/echo",
        method="POST",
        content=compressed,
        headers={"Content-Encoding": "gzip"},
    )
    result = json.loads(raw)
    assert result["length"] == len(compressed)
    assert result["headers"]["content-encoding"] == "gzip"


async def test_disconnect_while_inflating_is_passed_to_the_app() -> None:
    got: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            got.append(message["type"])
            if message["type"] == "http.disconnect":
                return

    compressed = gzip_bytes(BODY)
    await drive(
        CompressionMiddleware(app),
        [(b"content-encoding", b"gzip")],
        body_messages=[
            {"type": "http.request", "body": compressed[:100], "more_body": True},
            {"type": "http.disconnect"},
        ],
    )
    assert got[-1] == "http.disconnect"


# --------------------------------------------------------------------------- scopes, config


@pytest.mark.parametrize("kind", ["lifespan", "websocket"])
async def test_non_http_scopes_pass_straight_through(kind: str) -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))

    async def receive() -> Message:
        return {}

    async def send(message: Message) -> None:
        return None

    scope = {
        "type": kind,
        "headers": [(b"accept-encoding", b"gzip"), (b"content-encoding", b"gzip")],
    }
    await CompressionMiddleware(app)(scope, receive, send)
    assert seen == [(scope, receive, send)]


def test_options_are_validated() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    for bad in (
        {"gzip_level": 10},
        {"brotli_quality": 12},
        {"minimum_size": -1},
        {"max_decompressed_size": 0},
        {"encodings": ["lzma"]},
        {"encodings": []},
        {"breach_padding": 10, "encodings": ["br"]},
        *([] if HAS_ZSTD else [{"encodings": ["zstd", "gzip"]}]),
    ):
        with pytest.raises(ConfigurationError):
            CompressionMiddleware(app, **bad)


def test_from_env_reads_prefixed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    monkeypatch.setenv("APP_COMPRESSION_MINIMUM_SIZE", "1000")
    monkeypatch.setenv("APP_COMPRESSION_ENCODINGS", "gzip")
    monkeypatch.setenv("APP_COMPRESSION_DECOMPRESS_REQUESTS", "false")
    monkeypatch.setenv("APP_COMPRESSION_MAX_DECOMPRESSED_SIZE", "2048")
    mw = CompressionMiddleware.from_env(app, prefix="APP_")
    assert mw.minimum_size == 1000
    assert mw.encodings == ("gzip",)
    assert mw.decompress_requests is False
    assert mw.max_decompressed_size == 2048
    assert CompressionMiddleware.from_env(app, prefix="APP_", minimum_size=5).minimum_size == 5
    monkeypatch.setenv("APP_COMPRESSION_GZIP_LEVEL", "high")
    with pytest.raises(ConfigurationError):
        CompressionMiddleware.from_env(app, prefix="APP_")


def test_default_encodings_prefer_brotli() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    expected = ("br", "zstd", "gzip") if HAS_ZSTD else ("br", "gzip")
    assert CompressionMiddleware(app).encodings == expected


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_import_does_not_load_brotli_and_gzip_works_without_it() -> None:
    code = """
import sys
import gennet_toolkit.compression as c
assert "brotli" not in sys.modules, "imported brotli at import time"
sys.modules["brotli"] = None  # as if the extra were not installed
sys.modules["backports.zstd"] = None  # and no zstd backport (this is 3.11-3.13)
async def app(scope, receive, send): pass
mw = c.CompressionMiddleware(app)
assert mw.encodings == ("gzip",), mw.encodings
try:
    c.CompressionMiddleware(app, encodings=["br"])
except ImportError as exc:
    assert 'gennet-toolkit[brotli]' in str(exc), exc
else:
    raise AssertionError("no ImportError")
print("ok")
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# --------------------------------------------------------------------------- real server


@pytest.fixture
def served() -> Any:
    """Run an ASGI app under uvicorn on a loopback socket; yields a start(app) -> base_url."""
    import socket
    import time

    import uvicorn

    servers: list[tuple[Any, threading.Thread]] = []

    def start(app: Any) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="error"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        servers.append((server, thread))
        for _ in range(500):
            if server.started:
                break
            time.sleep(0.01)
        assert server.started
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


def test_under_uvicorn_the_client_decodes_the_first_chunk_while_the_stream_is_open(
    served: Any,
) -> None:
    client_saw_first = threading.Event()
    gave_up_waiting: list[bool] = []

    async def stream() -> AsyncIterator[bytes]:
        yield b'{"n": 0, "pad": "%s"}\n' % (b"x" * 300)
        for _ in range(500):  # at most 5 s, so a buffering bug fails instead of hanging
            if client_saw_first.is_set():
                break
            await anyio.sleep(0.01)
        else:
            gave_up_waiting.append(True)
        yield b'{"n": 1}\n'

    async def endpoint(request: Request) -> Response:
        return StreamingResponse(stream(), media_type="application/x-ndjson")

    base = served(CompressionMiddleware(Starlette(routes=[Route("/", endpoint)])))
    decoder = zlib.decompressobj(31)
    text = b""
    with (
        httpx.Client(base_url=base, timeout=10) as client,
        client.stream("GET", "/", headers={"Accept-Encoding": "gzip"}) as response,
    ):
        assert response.headers["content-encoding"] == "gzip"
        for raw in response.iter_raw():
            text += decoder.decompress(raw)
            if b'"n": 0' in text:
                client_saw_first.set()
    assert gave_up_waiting == []
    assert text.endswith(b'{"n": 1}\n')


def test_under_uvicorn_a_gzip_bomb_gets_413_and_the_connection_closes(served: Any) -> None:
    base = served(starlette_app(max_decompressed_size=1024 * 1024))
    with httpx.Client(base_url=base, timeout=10) as client:
        response = client.post(
            "/echo", content=zero_bomb("gzip"), headers={"Content-Encoding": "gzip"}
        )
    assert response.status_code == 413
    assert response.headers["connection"] == "close"
    assert response.json()["code"] == "decompressed_body_too_large"
