"""POST /v1/embeddings."""
from __future__ import annotations

import base64

import numpy as np
import openai
import pytest

from .conftest import MODEL_ID


def test_string_and_list_inputs(oai):
    one = oai.embeddings.create(model=MODEL_ID, input="hello world", encoding_format="float")
    assert len(one.data) == 1 and len(one.data[0].embedding) == 576
    assert one.usage.prompt_tokens > 0 and one.usage.total_tokens == one.usage.prompt_tokens
    many = oai.embeddings.create(model=MODEL_ID, input=["cat", "dog", "car"], encoding_format="float")
    assert [d.index for d in many.data] == [0, 1, 2]
    v = np.array([d.embedding for d in many.data])
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-3)


def test_base64_matches_float(http):
    f = http.post("/v1/embeddings", json={"model": MODEL_ID, "input": "hi", "encoding_format": "float"}).json()
    b = http.post("/v1/embeddings", json={"model": MODEL_ID, "input": "hi", "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(b["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, f["data"][0]["embedding"], atol=1e-6)


def test_sdk_default_base64(oai):
    r = oai.embeddings.create(model=MODEL_ID, input="hi")  # the SDK asks for base64 and decodes it
    assert len(r.data[0].embedding) == 576


def test_wrong_dimensions_and_empty_input(oai):
    with pytest.raises(openai.BadRequestError) as ei:
        oai.embeddings.create(model=MODEL_ID, input="hi", dimensions=8)
    assert ei.value.body["param"] == "dimensions"
    with pytest.raises(openai.BadRequestError) as ei:
        oai.embeddings.create(model=MODEL_ID, input=[])
    assert ei.value.body["param"] == "input"
