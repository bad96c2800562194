"""Context shift (opt-in, llama-server's semantics): a generation that fills
its slot keeps n_keep tokens, drops half of the rest and goes on; without
it the generation ends with finish_reason "length"."""
from __future__ import annotations

import pytest

import kolosal

# about 200 tokens: the smallest slot llama.cpp makes (256 tokens) fills after a few dozen generated ones
PROMPT = ("Write a very long story about a dragon who lives in a castle by the sea. " * 13).strip()


@pytest.fixture(scope="module")
def shifting(model_path, gpu_layers):
    with kolosal.Engine(model_path, n_gpu_layers=gpu_layers, n_ctx=256, n_parallel=1, n_threads=1, seed=1, context_shift=True) as e:
        yield e


@pytest.fixture(scope="module")
def plain(model_path, gpu_layers):
    with kolosal.Engine(model_path, n_gpu_layers=gpu_layers, n_ctx=256, n_parallel=1, n_threads=1, seed=1) as e:
        yield e


def test_generation_continues_past_the_slot(shifting):
    assert shifting.metadata["context_shift"] is True
    slot = shifting.n_ctx_slot
    n_prompt = len(shifting.tokenize(PROMPT))
    want = slot - n_prompt + 30
    r = shifting.complete(PROMPT, max_tokens=want, ignore_eos=True, temperature=0.7)
    assert r.usage["completion_tokens"] == want
    assert r.finish_reason == "length"  # max_tokens, not the context
    assert r.timings["context_shifts"] >= 1
    assert shifting.stats()["context_shifts"] >= 1


def test_n_keep_whole_prompt(shifting):
    slot = shifting.n_ctx_slot
    want = slot - len(shifting.tokenize(PROMPT)) + 30
    r = shifting.complete(PROMPT, max_tokens=want, ignore_eos=True, temperature=0.7, n_keep=-1)
    assert r.usage["completion_tokens"] == want
    assert r.timings["context_shifts"] >= 1


def test_without_context_shift_the_slot_ends_it(plain):
    assert plain.metadata["context_shift"] is False
    slot = plain.n_ctx_slot
    r = plain.complete(PROMPT, max_tokens=slot - len(plain.tokenize(PROMPT)) + 30, ignore_eos=True, temperature=0.7)
    assert r.finish_reason == "length"
    # the last token sampled needs no cell of its own
    assert r.usage["prompt_tokens"] + r.usage["completion_tokens"] == slot
    assert r.timings["context_shifts"] == 0
