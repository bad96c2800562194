"""GET /v1/models, /v1/models/{id}, POST /tokenize and /detokenize."""
from __future__ import annotations

import openai
import pytest

from .conftest import MODEL_ID


def test_models_list_in_openai_shape(oai):
    models = oai.models.list()
    assert [m.id for m in models.data] == [MODEL_ID]
    assert models.data[0].object == "model" and models.data[0].owned_by == "kolosal"


def test_model_reports_per_slot_context(oai, http):
    m = oai.models.retrieve(MODEL_ID)
    assert m.id == MODEL_ID
    body = http.get(f"/v1/models/{MODEL_ID}").json()
    assert body["context_length"] == 512 == body["meta"]["n_ctx_slot"]
    assert body["meta"]["n_ctx"] == 2048 and body["meta"]["n_parallel"] == 4
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("missing")


def test_tokenize_roundtrip_and_pieces(http):
    toks = http.post("/tokenize", json={"content": "Hello world"}).json()["tokens"]
    assert toks and all(isinstance(t, int) for t in toks)
    assert http.post("/detokenize", json={"tokens": toks}).json()["content"] == "Hello world"
    pieces = http.post("/tokenize", json={"content": "Hello world", "with_pieces": True}).json()["tokens"]
    assert "".join(p["piece"] for p in pieces) == "Hello world" and [p["id"] for p in pieces] == toks
    assert http.post("/v1/tokenize", json={"content": "x", "model": MODEL_ID}).status_code == 200


def test_tokenize_errors(http):
    assert http.post("/tokenize", json={"text": "x"}).json()["error"]["param"] in ("content", "text")
    r = http.post("/detokenize", json={"tokens": [10 ** 9]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tokens"
    assert http.post("/tokenize", json={"content": "x", "model": "nope"}).status_code == 404
