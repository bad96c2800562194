"""Engine: loading, metadata, generation handles, lifetime."""
from __future__ import annotations

import threading
import time

import pytest

import kolosal
from kolosal.errors import EngineClosedError, InvalidParameterError

PROMPT = "The capital of France is"


def test_metadata_describes_the_model(engine, model_path):
    md = engine.metadata
    assert md["architecture"] == "llama"
    assert 100_000_000 < md["n_params"] < 200_000_000
    assert 50_000_000 < md["size_bytes"] <= model_path.stat().st_size
    assert md["n_ctx_train"] == 8192
    assert md["n_vocab"] == 49152
    assert "im_start" in md["chat_template"]
    assert md["n_parallel"] == 4
    assert md["n_ctx_slot"] == md["n_ctx"] // 4 == engine.n_ctx_slot == 1024


def test_greedy_generation_is_deterministic(engine):
    a = engine.complete(PROMPT, max_tokens=24, temperature=0)
    b = engine.complete(PROMPT, max_tokens=24, temperature=0)
    assert a.text == b.text
    assert a.tokens == b.tokens
    assert "Paris" in a.text


def test_complete_reports_usage_and_timings(engine):
    r = engine.complete(PROMPT, max_tokens=8, temperature=0, ignore_eos=True)
    n_prompt = len(engine.tokenize(PROMPT))
    assert r.usage["prompt_tokens"] == n_prompt
    assert r.usage["completion_tokens"] == 8 == len(r.tokens)
    assert r.usage["total_tokens"] == n_prompt + 8
    t = r.timings
    assert 0 < t["ttft_ms"] and 0 < t["prompt_ms"] <= t["ttft_ms"]
    assert t["decode_ms"] > 0 and t["decode_tokens_per_s"] > 0
    assert t["prefill_tokens"] == n_prompt - r.usage["cached_tokens"]


def test_max_tokens_ends_with_length(engine):
    r = engine.complete("Count: 1, 2, 3,", max_tokens=5, temperature=0, ignore_eos=True)
    assert r.finish_reason == "length"
    assert r.usage["completion_tokens"] == 5


@pytest.mark.parametrize("value", [0, -2])
def test_max_tokens_must_allow_a_token(engine, value):
    with pytest.raises(InvalidParameterError) as e:
        engine.complete(PROMPT, max_tokens=value)
    assert e.value.param == "max_tokens"


def test_eos_ends_with_stop(engine):
    r = engine.chat([{"role": "user", "content": "Reply with one word: yes"}], max_tokens=64, temperature=0)
    assert r.finish_reason == "stop"
    assert r.usage["completion_tokens"] < 64


def test_stop_string_is_not_returned(engine):
    full = engine.complete("Count: 1, 2, 3,", max_tokens=16, temperature=0, ignore_eos=True).text
    assert " 5," in full
    cut = engine.complete("Count: 1, 2, 3,", max_tokens=16, temperature=0, stop=[" 5,"])
    assert cut.finish_reason == "stop"
    assert cut.text == full[: full.index(" 5,")]
    assert " 5" not in cut.text


def test_stop_string_split_across_tokens_is_held_back(engine):
    full = engine.complete("Count: 1, 2, 3,", max_tokens=16, temperature=0, ignore_eos=True).text
    stop = full[full.index("5") : full.index("5") + 4]  # spans several tokens
    g = engine.generate("Count: 1, 2, 3,", max_tokens=16, temperature=0, stop=stop)
    pieces = list(g)
    assert g.finish_reason == "stop" and g.stop_word == stop
    assert stop not in "".join(pieces)
    assert "".join(pieces) == full[: full.index(stop)]


def test_iteration_yields_pieces_that_join_to_text(engine):
    g = engine.generate("Once upon a time", max_tokens=20, temperature=0)
    pieces = list(g)
    assert len(pieces) > 3
    assert "".join(pieces) == g.text
    assert g.finish_reason in ("stop", "length")


def test_pieces_never_split_a_multibyte_character(engine):
    # Emoji and CJK are several tokens each in this vocabulary: pieces must
    # still be whole characters.
    prompt = "Repeat exactly: 🦊🐙🌍 東京 café. Repeat exactly: 🦊🐙🌍 東京 café. Repeat exactly:"
    g = engine.generate(prompt, max_tokens=40, temperature=0, ignore_eos=True)
    pieces = list(g)
    assert any(ord(ch) > 0x7FF for ch in g.text), g.text
    for p in pieces:
        assert "\ufffd" not in p
        p.encode("utf-8")  # valid text
    multi = [t for t in g.tokens if not engine.detokenize([t]).isascii()]
    assert multi


def test_seeded_sampling_is_reproducible(engine):
    a = engine.complete("A list of fruits:", max_tokens=24, temperature=1.0, seed=1234)
    b = engine.complete("A list of fruits:", max_tokens=24, temperature=1.0, seed=1234)
    assert a.text == b.text


def test_tokenize_detokenize_round_trip(engine):
    text = "Hello, world! Grüße 🌍"
    toks = engine.tokenize(text, add_special=False)
    assert all(isinstance(t, int) for t in toks)
    assert engine.detokenize(toks) == text


def test_prompt_as_token_ids(engine):
    toks = engine.tokenize(PROMPT)
    a = engine.complete(toks, max_tokens=8, temperature=0)
    b = engine.complete(PROMPT, max_tokens=8, temperature=0)
    assert a.text == b.text


def test_waiting_releases_the_gil(engine):
    ticks = 0
    stop = threading.Event()

    def spin():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    t = threading.Thread(target=spin)
    t.start()
    try:
        before = ticks
        g = engine.generate("Tell me a story.", max_tokens=48, temperature=0, ignore_eos=True)
        g.wait()  # blocks in native code
        during = ticks - before
    finally:
        stop.set()
        t.join()
    # A thread that needs the GIL kept running while the caller waited.
    assert during > 10


def test_context_manager_closes(model_path):
    with kolosal.Engine(model_path, n_ctx=512, n_parallel=1) as e:
        assert not e.closed
    assert e.closed
    with pytest.raises(EngineClosedError):
        e.complete("hi", max_tokens=1)
    e.close()  # idempotent


def test_close_cancels_generations_in_flight(model_path):
    e = kolosal.Engine(model_path, n_ctx=1024, n_parallel=2)
    running = [e.generate("Write a long essay.", max_tokens=500, ignore_eos=True) for _ in range(3)]
    next(iter(running[0]))  # at least one is generating
    e.close()
    for g in running:
        g.wait()
        assert g.finish_reason == "cancelled"
        assert g.done


def test_unknown_parameter_is_rejected(engine):
    with pytest.raises(InvalidParameterError) as e:
        engine.generate(PROMPT, temprature=0.5)
    assert e.value.param == "temprature"


@pytest.mark.parametrize(
    "param,value",
    [("temperature", -1.0), ("top_p", 0.0), ("top_p", 1.5), ("min_p", 2.0), ("top_k", -3),
     ("repeat_penalty", 0.0), ("presence_penalty", 3.0), ("top_logprobs", 50), ("stop", [""])],
)
def test_invalid_sampling_values_name_the_parameter(engine, param, value):
    with pytest.raises(InvalidParameterError) as e:
        engine.generate(PROMPT, **{param: value})
    assert e.value.param == param


def test_wrong_type_names_the_parameter(engine):
    with pytest.raises(InvalidParameterError) as e:
        engine.generate(PROMPT, max_tokens="many")
    assert e.value.param == "max_tokens"


def test_invalid_engine_options(model_path):
    for kwargs, param in (({"n_parallel": 0}, "n_parallel"), ({"n_ubatch": 4096, "n_batch": 512}, "n_ubatch"),
                          ({"flash_attn": "maybe"}, "flash_attn"),
                          ({"n_parallel": 8, "n_batch": 4, "n_ubatch": 4}, "n_batch")):
        with pytest.raises(InvalidParameterError) as e:
            kolosal.Engine(model_path, **kwargs)
        assert e.value.param == param
