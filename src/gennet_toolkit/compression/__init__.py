"""Response compression (br, zstd, gzip) and request decompression as pure ASGI middleware.

::

    from gennet_toolkit.compression import CompressionMiddleware

    app = CompressionMiddleware(app, minimum_size=500, gzip_level=6, brotli_quality=4)

brotli comes from the ``brotli`` extra (``pip install "gennet-toolkit[brotli]"``) and
is imported only when a middleware is built; gzip needs nothing. zstd is used when the
Python build has ``compression.zstd`` (3.14+) or the ``backports-zstd`` package is
installed (the same API for older Pythons).
"""

from __future__ import annotations

from ._middleware import CompressionMiddleware
from ._negotiate import DEFAULT_EXCLUDED_CONTENT_TYPES, negotiate_encoding
from ._response import NO_COMPRESSION_HEADER, SKIP_STATE_KEY, skip_compression

__all__ = [
    "DEFAULT_EXCLUDED_CONTENT_TYPES",
    "NO_COMPRESSION_HEADER",
    "SKIP_STATE_KEY",
    "CompressionMiddleware",
    "negotiate_encoding",
    "skip_compression",
]
