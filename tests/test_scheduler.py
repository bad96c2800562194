"""Continuous batching: concurrency, slots, prompt-cache reuse, cancellation."""
from __future__ import annotations

import time

import pytest

import kolosal

SUBJECTS = ["cat", "dog", "robot", "ship", "tree", "river", "king", "clock"]


@pytest.fixture(scope="module")
def engine8(model_path):
    with kolosal.Engine(model_path, n_ctx=4096, n_parallel=8, seed=3) as e:
        yield e


def wait_idle(engine, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if engine.stats()["slots_busy"] == 0:
            return True
        time.sleep(0.01)
    return False


def test_eight_concurrent_generations_match_sequential(engine8):
    prompts = [f"Write a short story about a {w}:" for w in SUBJECTS]
    sequential = [engine8.complete(p, max_tokens=40, temperature=0, ignore_eos=True).text for p in prompts]
    calls_before = engine8.stats()["decode_calls"]
    gens = [engine8.generate(p, max_tokens=40, temperature=0, ignore_eos=True) for p in prompts]
    concurrent = [g.wait().text for g in gens]
    assert concurrent == sequential
    # They really shared decode calls: 8 x 40 tokens in far fewer than 320 steps.
    assert engine8.stats()["decode_calls"] - calls_before < 8 * 40 // 2
    assert len({g.timings["slot"] for g in gens}) == 8


def test_more_requests_than_slots_queue_and_all_finish(model_path):
    with kolosal.Engine(model_path, n_ctx=1024, n_parallel=2) as e:
        gens = [e.generate(f"Number {i}:", max_tokens=6, temperature=0, ignore_eos=True) for i in range(5)]
        assert e.stats()["queued"] + e.stats()["slots_busy"] >= 3
        for g in gens:
            g.wait()
            assert g.finish_reason == "length"
            assert g.usage["completion_tokens"] == 6
        assert wait_idle(e)
        assert e.stats()["queued"] == 0
        assert e.stats()["requests_done"] == 5


def test_cancel_mid_stream_frees_the_slot(model_path):
    with kolosal.Engine(model_path, n_ctx=1024, n_parallel=1) as e:
        g = e.generate("Write a very long essay about the sea.", max_tokens=800, ignore_eos=True)
        it = iter(g)
        first = [next(it) for _ in range(3)]
        assert e.stats()["slots_busy"] == 1
        g.cancel()
        rest = list(it)
        assert g.finish_reason == "cancelled"
        assert g.usage["completion_tokens"] < 800
        assert g.text == "".join(first + rest)
        assert wait_idle(e)
        # The only slot serves the next request at once.
        r = e.complete("Hi", max_tokens=3, ignore_eos=True)
        assert r.finish_reason == "length"


def test_cancel_while_queued(model_path):
    with kolosal.Engine(model_path, n_ctx=1024, n_parallel=1) as e:
        busy = e.generate("Write a long essay.", max_tokens=200, ignore_eos=True)
        queued = e.generate("Never runs", max_tokens=50)
        queued.cancel()
        queued.wait()
        assert queued.finish_reason == "cancelled"
        assert queued.usage["completion_tokens"] == 0
        busy.cancel()
        busy.wait()


def test_shared_prefix_is_not_prefilled_again(engine8):
    system = "You are a meticulous assistant. " * 40
    first = engine8.complete(system + "Question one: what is 2+2?", max_tokens=4, temperature=0)
    second = engine8.complete(system + "Question two: name a colour.", max_tokens=4, temperature=0)
    n_system = len(engine8.tokenize(system))
    assert first.usage["prompt_tokens"] > n_system
    assert second.usage["cached_tokens"] >= n_system - 2
    assert second.timings["prefill_tokens"] == second.usage["prompt_tokens"] - second.usage["cached_tokens"]
    assert second.timings["prefill_tokens"] < first.timings["prefill_tokens"] / 4


def test_identical_prompt_reuses_all_but_one_token(engine8):
    prompt = "Explain photosynthesis in one sentence. " * 5
    a = engine8.complete(prompt, max_tokens=4, temperature=0)
    b = engine8.complete(prompt, max_tokens=4, temperature=0)
    assert b.usage["cached_tokens"] == b.usage["prompt_tokens"] - 1
    assert a.text == b.text  # reuse does not change the result


def test_long_prompt_is_prefilled_in_chunks_alongside_decoding(model_path):
    # n_batch 64: a 600-token prompt needs ~10 decode calls, during which a
    # running generation keeps producing tokens.
    with kolosal.Engine(model_path, n_ctx=2048, n_parallel=2, n_batch=64, n_ubatch=64) as e:
        runner = e.generate("Tell me about rivers.", max_tokens=200, ignore_eos=True, temperature=0)
        it = iter(runner)
        next(it)
        before = len(runner.tokens)
        long_prompt = "word " * 600
        g = e.generate(long_prompt, max_tokens=2, ignore_eos=True)
        g.wait()
        while True:  # take what the runner produced meanwhile, without waiting for more
            try:
                if runner.next_chunk(timeout=0) is None:
                    break
            except TimeoutError:
                break
        during = len(runner.tokens) - before
        assert during >= 5, "decoding stalled while the long prompt was prefilled"
        runner.cancel()
        runner.wait()


def test_generate_many_admits_prompts_together(engine8):
    prompts = [f"List three {w}s:" for w in SUBJECTS]
    alone = [engine8.complete(p, max_tokens=12, temperature=0, ignore_eos=True).text for p in prompts]
    engine8.profiler.reset()
    gens = engine8.generate_many(prompts, max_tokens=12, temperature=0, ignore_eos=True)
    assert [g.wait().text for g in gens] == alone
    # All eight prompts were prefilled by one decode call.
    assert engine8.profiler.stats()["prefill"].count == 1


def test_generate_many_rejects_an_empty_list(engine8):
    with pytest.raises(kolosal.errors.InvalidParameterError):
        engine8.generate_many([])
