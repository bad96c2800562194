"""``server.compression`` through the real Waitress server: JSON answers are
compressed when the client accepts it; streams (SSE) are neither compressed
nor held back."""
from __future__ import annotations

import gzip
import json
import signal
from typing import Iterator

import httpx
import pytest

from .conftest import MODEL_ID, LiveServer, chat_body, server_config, start_server
from .security_support import bare_app


@pytest.fixture(scope="module")
def gz_server(model_path, tmp_path_factory) -> Iterator[LiveServer]:
    server = start_server(server_config(model_path, compression=True, compression_min_bytes=200),
                          tmp_path_factory.mktemp("gzip"))
    yield server
    assert server.stop() == 0, server.log()
    server.stop(signal.SIGKILL)


def test_json_answers_are_gzipped(gz_server):
    with httpx.Client(timeout=60) as c:
        with c.stream("GET", gz_server.base_url + "/openapi.json", headers={"Accept-Encoding": "gzip"}) as r:
            raw = b"".join(r.iter_raw())
        assert r.headers["content-encoding"] == "gzip" and "Accept-Encoding" in r.headers["vary"]
        assert json.loads(gzip.decompress(raw))["openapi"].startswith("3.")
        assert len(raw) < len(gzip.decompress(raw)) / 3
        plain = c.get(gz_server.base_url + "/openapi.json", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers and plain.json()["openapi"].startswith("3.")


def test_openai_sdk_reads_a_compressed_completion(gz_server):
    import openai
    with openai.OpenAI(base_url=gz_server.v1, api_key="unused", max_retries=0, timeout=60) as oai:
        raw = oai.chat.completions.with_raw_response.create(
            model=MODEL_ID, messages=[{"role": "user", "content": "Say hello."}], max_tokens=40,
            extra_body={"ignore_eos": True})
        assert raw.headers["content-encoding"] == "gzip"
        assert raw.parse().usage.completion_tokens == 40


def test_a_stream_is_not_compressed_and_arrives_as_generated(gz_server):
    body = chat_body("Tell a long story.", max_tokens=400, ignore_eos=True, stream=True)
    with httpx.Client(timeout=60, headers={"Accept-Encoding": "gzip"}) as c:
        with c.stream("POST", gz_server.v1 + "/chat/completions", json=body) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            assert "content-encoding" not in r.headers
            lines = r.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            assert json.loads(first[6:])["object"] == "chat.completion.chunk"
            # the first event is here while the generation is still running: nothing buffered the stream
            assert gz_server.slots_busy() == 1
    assert gz_server.wait_slots_busy(0) == 0  # closing the stream cancelled it


def test_off_by_default():
    c = bare_app().test_client()
    r = c.get("/openapi.json", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and "Content-Encoding" not in r.headers
