"""POST /v1/completions."""
from __future__ import annotations

from .conftest import MODEL_ID


def test_completion_shape(oai):
    r = oai.completions.create(model=MODEL_ID, prompt="The capital of France is", max_tokens=4,
                               extra_body={"ignore_eos": True})
    assert r.object == "text_completion" and r.choices[0].text
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 4


def test_token_prompt_and_multiple_prompts_with_n(oai, http):
    tokens = http.post("/tokenize", json={"content": "Hello there"}).json()["tokens"]
    r = oai.completions.create(model=MODEL_ID, prompt=tokens, max_tokens=2)
    assert r.usage.prompt_tokens == len(tokens)
    r = oai.completions.create(model=MODEL_ID, prompt=["One", "Two"], n=2, max_tokens=2, seed=1)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]


def test_echo_and_legacy_logprobs(oai):
    r = oai.completions.create(model=MODEL_ID, prompt="Hello", max_tokens=3, echo=True, logprobs=2,
                               extra_body={"ignore_eos": True})
    choice = r.choices[0]
    assert choice.text.startswith("Hello")
    lp = choice.logprobs
    assert len(lp.tokens) == 3 and len(lp.token_logprobs) == 3 and all(len(t) == 2 for t in lp.top_logprobs)
    assert lp.text_offset[0] == len("Hello")


def test_default_max_tokens_is_16(oai):
    r = oai.completions.create(model=MODEL_ID, prompt="Once upon a time", extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 16
