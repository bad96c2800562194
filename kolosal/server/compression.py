"""``server.compression``: answers compressed with flask-compress when the
client accepts it (``Accept-Encoding``): JSON and the Prometheus text, of at
least ``server.compression_min_bytes``, at ``server.compression_level``.
Streamed answers (SSE) are never compressed nor buffered: each event leaves
as it is generated."""
from __future__ import annotations

from flask import Flask

from .config_schema import ServerSection

MIMETYPES = ["application/json", "text/plain"]
ALGORITHMS = ["gzip", "deflate"]


def install_compression(app: Flask, server: ServerSection) -> None:
    if not server.compression:
        return
    from flask_compress import Compress

    app.config.update(COMPRESS_MIMETYPES=MIMETYPES, COMPRESS_ALGORITHM=ALGORITHMS,
                      COMPRESS_LEVEL=server.compression_level, COMPRESS_DEFLATE_LEVEL=server.compression_level,
                      COMPRESS_MIN_SIZE=server.compression_min_bytes,
                      COMPRESS_STREAMS=False,  # a streamed answer (SSE) is passed through untouched
                      COMPRESS_REGISTER=True)
    Compress(app)
