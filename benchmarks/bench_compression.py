"""compression: CompressionMiddleware vs Starlette GZipMiddleware and brotli-asgi.

Every middleware wraps the same bare ASGI app answering a prebuilt 20 KB JSON body
(a gene regulatory network); requests are driven in-process with a prebuilt scope, no
HTTP client in the loop. Levels are equal: gzip level 6, brotli quality 4 in generic
mode. "raw" cases compress the same bytes with zlib / brotli directly: the floor any
middleware pays. A second part streams a 50 MB body in 64 KiB chunks through each
middleware and reports the tracemalloc peak.
"""

from __future__ import annotations

import asyncio
import json
import time
import tracemalloc
import zlib
from typing import Any

import brotli
from brotli_asgi import BrotliMiddleware
from starlette.middleware.gzip import GZipMiddleware

from benchmarks._asgi import make_scope, request_driver
from benchmarks._harness import Suite
from gennet_toolkit.compression import CompressionMiddleware

Message = dict[str, Any]


def grn_json(target: int = 20 * 1024) -> bytes:
    """A JSON network of about ``target`` bytes."""
    genes = []
    i = 0
    while True:
        genes.append(
            {
                "symbol": f"GENE{i}",
                "ensembl": f"ENSG{i:011d}",
                "regulates": [f"GENE{(i * 7 + k) % 997}" for k in range(3)],
                "weight": round((i * 37 % 100) / 100, 2),
                "sign": "activation" if i % 3 else "repression",
            }
        )
        body = json.dumps({"network": "lac-operon", "genes": genes}).encode()
        if len(body) >= target:
            return body
        i += 1


def body_app(body: bytes) -> Any:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return app


def wire_size(app: Any, accept: str) -> tuple[int, str]:
    """Compressed size and coding of one response."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(make_scope("/", headers=[("accept-encoding", accept)]), receive, send))
    coding = dict(sent[0]["headers"]).get(b"content-encoding", b"identity").decode()
    return sum(len(m.get("body", b"")) for m in sent[1:]), coding


def ndjson_chunks(count: int, size: int = 64 * 1024) -> list[bytes]:
    """``count`` distinct chunks of interaction records, ``size`` bytes each."""
    chunks = []
    n = 0
    for _ in range(count):
        lines = []
        length = 0
        while length < size:
            line = b'{"regulator":"GENE%d","target":"GENE%d","weight":0.%03d}\n' % (
                n,
                n * 7919 % 100_003,
                n * 31 % 1000,
            )
            lines.append(line)
            length += len(line)
            n += 1
        chunks.append(b"".join(lines)[:size])
    return chunks


def stream_app(total: int, chunks: list[bytes]) -> Any:
    count = total // len(chunks[0])

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/x-ndjson")],
            }
        )
        for i in range(count):
            body = chunks[i % len(chunks)]
            await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def stream_peak(app: Any, accept: str) -> tuple[float, int, float]:
    """(peak MiB, compressed bytes, seconds) for one streamed response."""
    out = 0

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal out
        out += len(message.get("body", b""))

    scope = make_scope("/", headers=[("accept-encoding", accept)])
    tracemalloc.start()
    start = time.perf_counter()
    asyncio.run(app(scope, receive, send))
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20, out, elapsed


def main() -> None:
    """Run the suites and write benchmarks/results/compression-*.{json,md}."""
    body = grn_json()
    inner = body_app(body)
    gz_scope = make_scope("/", headers=[("accept-encoding", "gzip")])
    br_scope = make_scope("/", headers=[("accept-encoding", "br")])

    ours_gzip = CompressionMiddleware(inner, gzip_level=6, encodings=["gzip"])
    starlette_gzip = GZipMiddleware(inner, compresslevel=6)
    gzip_suite = Suite(
        "compression-gzip",
        description=f"one GET answering {len(body)} bytes of JSON, gzip level 6",
        rounds=31,  # the machine is shared: more rounds steady the median
    )
    gzip_suite.add("gennet gzip", request_driver(ours_gzip, gz_scope))
    gzip_suite.add("starlette GZipMiddleware", request_driver(starlette_gzip, gz_scope))
    gzip_suite.add("raw zlib.compress", lambda: zlib.compress(body, 6, wbits=31))
    gzip_suite.compare("gennet gzip", "starlette GZipMiddleware")
    gzip_suite.compare("gennet gzip", "raw zlib.compress")
    for label, app in (("gennet", ours_gzip), ("starlette", starlette_gzip)):
        size, coding = wire_size(app, "gzip")
        gzip_suite.note(
            f"{label}: {size} bytes on the wire ({coding}), ratio {size / len(body):.3f}"
        )
    gzip_suite.run()

    ours_br = CompressionMiddleware(inner, brotli_quality=4)
    brotli_asgi = BrotliMiddleware(inner, quality=4, mode="generic")
    br_suite = Suite(
        "compression-br",
        description=f"one GET answering {len(body)} bytes of JSON, brotli quality 4 (generic)",
        rounds=31,
    )
    br_suite.add("gennet br", request_driver(ours_br, br_scope))
    br_suite.add("brotli-asgi", request_driver(brotli_asgi, br_scope))
    br_suite.add("raw brotli.compress", lambda: brotli.compress(body, quality=4))
    br_suite.compare("gennet br", "brotli-asgi")
    br_suite.compare("gennet br", "raw brotli.compress")
    for label, app in (("gennet", ours_br), ("brotli-asgi", brotli_asgi)):
        size, coding = wire_size(app, "br")
        br_suite.note(f"{label}: {size} bytes on the wire ({coding}), ratio {size / len(body):.3f}")
    br_suite.run()

    # Not compressed: the cost of the middleware on a response it leaves alone.
    small = body_app(b'{"ok":true}')
    id_scope = make_scope("/", headers=[("accept-encoding", "gzip, br")])
    pass_suite = Suite(
        "compression-passthrough",
        description="one GET answering 11 bytes (below minimum_size), client accepts gzip and br",
        baseline="bare app",
    )
    pass_suite.add("bare app", request_driver(small, id_scope))
    pass_suite.add("gennet", request_driver(CompressionMiddleware(small), id_scope))
    pass_suite.add("starlette GZipMiddleware", request_driver(GZipMiddleware(small), id_scope))
    pass_suite.add("brotli-asgi", request_driver(BrotliMiddleware(small), id_scope))
    pass_suite.compare("gennet", "starlette GZipMiddleware")
    pass_suite.compare("gennet", "brotli-asgi")
    pass_suite.run()

    # 80 distinct chunks (5 MiB) cycle: more than brotli's 4 MiB window, so repeats
    # do not make the stream artificially cheap.
    chunks = ndjson_chunks(80)
    stream_scope = {
        "gzip": make_scope("/", headers=[("accept-encoding", "gzip")]),
        "br": make_scope("/", headers=[("accept-encoding", "br")]),
    }
    short = stream_app(4 * 1024 * 1024, chunks)
    stream_suite = Suite(
        "compression-stream",
        description="one GET streaming 4 MiB of NDJSON in 64 KiB chunks, gzip 6 / brotli 4",
        rounds=7,
    )
    stream_suite.add(
        "gennet gzip",
        request_driver(
            CompressionMiddleware(short, gzip_level=6, encodings=["gzip"]), stream_scope["gzip"]
        ),
    )
    stream_suite.add(
        "starlette GZipMiddleware",
        request_driver(GZipMiddleware(short, compresslevel=6), stream_scope["gzip"]),
    )
    stream_suite.add(
        "gennet br",
        request_driver(CompressionMiddleware(short, brotli_quality=4), stream_scope["br"]),
    )
    stream_suite.add(
        "brotli-asgi",
        request_driver(BrotliMiddleware(short, quality=4, mode="generic"), stream_scope["br"]),
    )
    stream_suite.compare("gennet gzip", "starlette GZipMiddleware")
    stream_suite.compare("gennet br", "brotli-asgi")
    stream_suite.run()

    # Peak memory while streaming 50 MB (one run each: tracemalloc is slow).
    total = 50 * 1024 * 1024
    src = stream_app(total, chunks)
    memory = Suite(
        "compression-stream-memory",
        description="tracemalloc peak streaming 50 MB in 64 KiB chunks (one run each)",
        rounds=3,
        number=1,
    )
    cases = [
        ("gennet gzip", CompressionMiddleware(src, gzip_level=6, encodings=["gzip"]), "gzip"),
        ("starlette GZipMiddleware", GZipMiddleware(src, compresslevel=6), "gzip"),
        ("gennet br", CompressionMiddleware(src, brotli_quality=4), "br"),
        ("brotli-asgi", BrotliMiddleware(src, quality=4, mode="generic"), "br"),
    ]
    rows = ["| case | peak MiB | compressed MB | seconds |", "|---|---:|---:|---:|"]
    for label, app, accept in cases:
        peak, out, elapsed = stream_peak(app, accept)
        rows.append(f"| {label} | {peak:.2f} | {out / 1e6:.2f} | {elapsed:.2f} |")
        memory.note(f"{label}: peak {peak:.2f} MiB, {out / 1e6:.2f} MB out, {elapsed:.2f} s")
    text = "\n".join([f"### {memory.name}", "", memory.description, "", *rows, ""])
    print(text)
    memory.results = {}
    memory.write(text)


if __name__ == "__main__":
    main()
