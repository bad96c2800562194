"""Engine lifetime: closing while other threads use it, interrupting work in
progress, handles dropped mid-generation, failed construction, memory figures."""
from __future__ import annotations

import gc
import threading
import time

import numpy as np
import psutil
import pytest

import kolosal
from kolosal._native import MemoryManager
from kolosal.errors import EngineClosedError, InvalidParameterError

from tiny_models import EOS_ID, HEAD_DIM, LABELS, N_HEAD_KV, N_LAYER, write_qwen3_reranker

LONG_TEXT = "The quick brown fox jumps over the lazy dog while the cat watches from the fence. " * 12
WAIT_S = 300  # upper bound of every wait below; a pass never comes near it


def _wait_for(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.005)


def _idle(engine: kolosal.Engine) -> bool:
    s = engine.stats()
    return s["slots_busy"] == 0 and s["queued"] == 0


def test_close_while_threads_call_every_method(model_path):
    """Each method runs in a loop on its own thread; the engine is closed under
    them (from two threads at once). Every call either completes or raises
    EngineClosedError; nothing else, no crash."""
    e = kolosal.Engine(model_path, n_ctx=2048, n_parallel=2, seed=3)
    tokens = e.tokenize(LONG_TEXT)
    messages = [{"role": "user", "content": LONG_TEXT}]
    gens = []
    calls = {
        "tokenize": lambda: e.tokenize(LONG_TEXT),
        "detokenize": lambda: e.detokenize(tokens),
        "token_to_piece": lambda: e._native.token_to_piece(tokens[1]),
        "stats": e.stats,
        "chat_template_caps": e._native.chat_template_caps,
        "apply_chat_template": lambda: e.apply_chat_template(messages),
        "embed": lambda: e.embed([LONG_TEXT, "short"]),
        "generate": lambda: gens.append(e.generate(tokens[:40], max_tokens=32, ignore_eos=True)),
        "generate_many": lambda: e.generate_many([tokens[:10], tokens[:20]], max_tokens=4),
        "chat": lambda: gens.append(e.chat(messages[:1], stream=True, max_tokens=8)),
    }
    started = {name: threading.Event() for name in calls}
    outcome = {}

    def loop(name, call):
        try:
            while True:
                call()
                started[name].set()
        except EngineClosedError:
            outcome[name] = "closed"
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome[name] = repr(exc)
        finally:
            started[name].set()

    threads = [threading.Thread(target=loop, args=item, daemon=True) for item in calls.items()]
    for t in threads:
        t.start()
    for name, ev in started.items():
        assert ev.wait(WAIT_S), f"{name} never completed a call"
    closer = threading.Thread(target=e.close)
    closer.start()
    e.close()
    closer.join(WAIT_S)
    for t in threads:
        t.join(WAIT_S)
    assert outcome == {name: "closed" for name in calls}
    assert e.closed
    for g in gens:
        g.wait()
        assert g.finish_reason in ("cancelled", "length")


def test_close_interrupts_a_running_embedding(model_path):
    e = kolosal.Engine(model_path, n_ctx=2048, n_parallel=1, embeddings=True)
    texts = [f"{i}: {LONG_TEXT}" for i in range(200)]
    result = {}

    def run():
        try:
            result["value"] = e.embed(texts)
        except BaseException as exc:  # noqa: BLE001
            result["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    _wait_for(lambda: e.profiler.stats().get("embed") is not None, "the first embedding")
    e.close()
    t.join(WAIT_S)
    # Close does not wait for the other ~199 texts: the call in flight is stopped.
    assert isinstance(result.get("error"), EngineClosedError), result


def test_close_interrupts_a_running_decode(model_path):
    """A long prompt is prefilled in one llama_decode call. close() aborts that
    call, so no token is ever sampled; without the abort the prefill would run
    to its end and sample the first token before the scheduler saw the close."""
    e = kolosal.Engine(model_path, n_ctx=8192, n_parallel=1, n_batch=8192, n_ubatch=512)
    prompt = e.tokenize(LONG_TEXT * 40)[:7000]
    assert len(prompt) == 7000
    g = e.generate(prompt, max_tokens=4, ignore_eos=True)
    _wait_for(lambda: e.stats()["slots_busy"] == 1, "the prompt to be admitted")
    e.close()
    g.wait()
    assert g.finish_reason == "cancelled"
    assert g.usage["completion_tokens"] == 0
    assert g.tokens == []


def test_dropped_generation_is_cancelled(fresh_engine):
    e = fresh_engine
    before = e.stats()["generated_tokens"]
    g = e.generate("Write a very long story about the sea.", max_tokens=900, ignore_eos=True)
    assert next(iter(g))  # it is generating
    del g
    gc.collect()
    _wait_for(lambda: _idle(e), "the slot to be freed")
    assert e.stats()["generated_tokens"] - before < 900


def test_abandoned_iteration_is_cancelled(fresh_engine):
    e = fresh_engine
    before = e.stats()["generated_tokens"]
    for piece in e.chat([{"role": "user", "content": "Tell me a long story."}], stream=True, max_tokens=900,
                        ignore_eos=True):
        assert piece
        break
    gc.collect()
    _wait_for(lambda: _idle(e), "the slot to be freed")
    assert e.stats()["generated_tokens"] - before < 900


def test_kept_generation_runs_to_its_end(fresh_engine):
    """The other side of cancel-on-drop: a handle still referenced is not cancelled
    even when nobody reads it until the end."""
    g = fresh_engine.generate("Count: 1, 2, 3,", max_tokens=24, ignore_eos=True)
    gc.collect()
    _wait_for(lambda: _idle(fresh_engine), "the generation to end")
    g.wait()
    assert g.finish_reason == "length"
    assert g.usage["completion_tokens"] == 24


def test_submit_after_close_raises(model_path):
    e = kolosal.Engine(model_path, n_ctx=512, n_parallel=1)
    e.close()
    for call in (lambda: e.generate("hi"), lambda: e.tokenize("hi"), lambda: e.detokenize([1]), e.stats,
                 lambda: e.embed("hi"), lambda: e.apply_chat_template([{"role": "user", "content": "hi"}]),
                 e._native.chat_template_caps, lambda: e._native.token_to_piece(1)):
        with pytest.raises(EngineClosedError):
            call()


def test_garbage_collected_engine_cancels_its_generations(model_path):
    """Dropping the last reference closes the engine: its generations end as cancelled."""
    e = kolosal.Engine(model_path, n_ctx=1024, n_parallel=2)
    native = e._native.submit(e.tokenize("Write a long essay."), {"max_tokens": 500, "ignore_eos": True})
    assert native.next_chunk() is not None
    del e
    gc.collect()
    while native.next_chunk() is not None:
        pass
    assert native.finish_reason == "cancelled"
    assert native.usage["completion_tokens"] < 500


def test_bad_chat_template_fails_without_leaking(model_path):
    """The constructor throws after the model, context and thread pools exist:
    all of them are freed, and the engine is not left in the memory registry."""
    proc = psutil.Process()
    models_before = len(MemoryManager().models())
    rss = []
    for _ in range(8):
        with pytest.raises(InvalidParameterError) as exc:
            kolosal.Engine(model_path, n_ctx=1024, n_parallel=1, use_mmap=False, chat_template="{% if %}")
        assert exc.value.param == "chat_template"
        gc.collect()
        rss.append(proc.memory_info().rss)
    assert len(MemoryManager().models()) == models_before
    # Without mmap each load reads the whole model (~100 MB) into the heap: a leak would add that
    # each time. (The first loads may grow the heap for good, e.g. a sanitizer's quarantine.)
    assert rss[-1] - rss[3] < model_path.stat().st_size


def test_kv_estimate_matches_the_gguf_head_sizes(engine, model_path):
    md = engine.metadata
    est = MemoryManager.estimate(str(model_path), md["n_ctx"])
    assert md["kv_bytes"] == est["kv_bytes"] > 0


@pytest.fixture(scope="module")
def reranker(tmp_path_factory):
    path = write_qwen3_reranker(tmp_path_factory.mktemp("models") / "tiny-qwen3-reranker.gguf")
    with kolosal.Engine(path, n_ctx=512, n_parallel=1) as e:
        yield e


def test_kv_estimate_uses_key_and_value_head_sizes(reranker):
    """Heads of 32 with n_embd 64 and 4 heads: n_embd / n_head (16) would halve the estimate."""
    n_ctx = reranker.metadata["n_ctx"]
    assert reranker.metadata["kv_bytes"] == N_LAYER * N_HEAD_KV * (HEAD_DIM + HEAD_DIM) * 2 * n_ctx


def test_rank_pooling_model_embeds_to_its_classifier_outputs(reranker):
    """A reranker's pooled output is one score per classifier label (softmax for
    Qwen3), not an n_embd vector; the scores are not normalised as directions."""
    scores = reranker.embed(["query: cats? document: a cat sat", "t t t", "hello"])
    assert scores.shape == (3, len(LABELS))
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    assert ((scores > 0) & (scores < 1)).all()
    np.testing.assert_allclose(reranker.embed("hello", normalize=False), scores[2], rtol=1e-5)


def test_grammar_error_quoting_raw_bytes_is_readable(reranker):
    """A complete grammar leaves only end-of-generation, which the caller banned:
    the sampler falls back to a byte token outside the grammar and llama.cpp's
    error quotes that lone byte. Reading it must not raise UnicodeDecodeError."""
    g = reranker.generate("t", grammar='root ::= "a"', logit_bias={EOS_ID: float("-inf")}, max_tokens=4,
                          temperature=0)
    g.wait()
    assert g.finish_reason == "error"
    assert g.text == "a"
    assert g.error.startswith("sampling failed:")
    assert "\ufffd" in g.error  # the raw byte, replaced
