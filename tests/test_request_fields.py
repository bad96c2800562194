"""llama-server's per-request slot and cache fields (cache_prompt, id_slot,
t_max_predict_ms), slot snapshots, and cancelling a prompt while it is
being prefilled."""
from __future__ import annotations

import time

import pytest

import kolosal
from kolosal.errors import InvalidParameterError

PROMPT = "The quick brown fox jumps over the lazy dog. " * 8


@pytest.fixture(scope="module")
def engine(model_path, gpu_layers):
    with kolosal.Engine(model_path, n_gpu_layers=gpu_layers, n_ctx=2048, n_parallel=2, n_threads=1, seed=9, cache_ram_mib=0) as e:
        yield e


def test_cache_prompt_false_reuses_nothing(engine):
    first = engine.complete(PROMPT, max_tokens=2, temperature=0, id_slot=0)
    again = engine.complete(PROMPT, max_tokens=2, temperature=0, id_slot=0)
    assert again.usage["cached_tokens"] == first.usage["prompt_tokens"] - 1
    cold = engine.complete(PROMPT, max_tokens=2, temperature=0, id_slot=0, cache_prompt=False)
    assert cold.usage["cached_tokens"] == 0
    assert cold.text == first.text


def test_id_slot_pins_the_slot(engine):
    for slot in (1, 0, 1):
        assert engine.complete("Hi", max_tokens=1, id_slot=slot).timings["slot"] == slot
    slots = engine.slots()
    assert [s["id"] for s in slots] == [0, 1]
    assert all(not s["busy"] and s["n_cached"] > 0 for s in slots)


@pytest.mark.parametrize("params, param", [({"id_slot": 2}, "id_slot"), ({"id_slot": -3}, "id_slot"),
                                           ({"t_max_predict_ms": -1}, "t_max_predict_ms"),
                                           ({"n_keep": -2}, "n_keep")])
def test_bad_slot_fields_name_the_field(engine, params, param):
    with pytest.raises(InvalidParameterError) as e:
        engine.generate("Hi", max_tokens=1, **params)
    assert e.value.param == param


def test_pinned_request_waits_for_its_slot_and_others_pass(engine):
    hog = engine.generate(PROMPT, max_tokens=40, ignore_eos=True, id_slot=0)
    pinned = engine.generate("Hello", max_tokens=2, id_slot=0)
    free = engine.generate("Hello", max_tokens=2)
    free.wait()
    assert free.timings["slot"] == 1  # went past the request waiting for slot 0
    pinned.wait()
    hog.wait()
    assert pinned.timings["slot"] == 0
    assert hog.usage["completion_tokens"] == 40


def test_t_max_predict_ms_ends_generation_with_length(engine):
    r = engine.complete("Once upon a time", max_tokens=200, ignore_eos=True, t_max_predict_ms=1)
    assert r.finish_reason == "length"
    assert 1 <= r.usage["completion_tokens"] < 200


def test_cancel_interrupts_a_prompt_being_prefilled(model_path, gpu_layers):
    if gpu_layers:
        pytest.skip("on a GPU the prompt is prefilled before the test can cancel it")
    # One decode call holds the whole prompt: only the abort check inside it can stop it early.
    with kolosal.Engine(model_path, n_gpu_layers=gpu_layers, n_ctx=2048, n_parallel=1, n_threads=1, n_batch=2048, n_ubatch=64,
                        cache_ram_mib=0) as e:
        prompt = e.tokenize("Tell me everything about foxes and dogs. " * 150)[:1800]
        gen = e.generate(prompt, max_tokens=4)
        deadline = time.monotonic() + 60
        # busy and not yet generating: the prompt's decode is running (slots are read between decode steps)
        while not any(s["busy"] for s in e.slots()):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not e.slots()[0]["generating"]
        gen.cancel()
        gen.wait()
        assert gen.finish_reason == "cancelled"
        assert gen.usage["completion_tokens"] == 0
        assert e.stats()["decode_aborts"] == 1
        # what the slot holds is what was decoded before the abort, never more than its bookkeeping says
        assert e.slots()[0]["n_cached"] < len(prompt)
        after = e.complete(prompt[:32], max_tokens=2, temperature=0)
        assert after.finish_reason in ("stop", "length")
