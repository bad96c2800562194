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


# -- defects found in review, each pinned by a test ------------------------------------------

REPEATING = "The cat sat on the mat. The cat sat on the mat. The cat sat on the mat. The cat sat on the"


def test_repeat_last_n_minus_one_covers_the_whole_context(engine):
    plain = engine.complete(REPEATING, max_tokens=8, temperature=0, repeat_penalty=1.5, repeat_last_n=0)
    whole = engine.complete(REPEATING, max_tokens=8, temperature=0, repeat_penalty=1.5, repeat_last_n=-1)
    explicit = engine.complete(REPEATING, max_tokens=8, temperature=0, repeat_penalty=1.5,
                               repeat_last_n=engine.n_ctx_slot)
    assert whole.tokens == explicit.tokens
    assert whole.tokens != plain.tokens


@pytest.mark.parametrize("penalty", [{"repeat_penalty": 1.5}, {"frequency_penalty": 2.0}])
def test_penalties_see_the_prompt(engine, penalty):
    prompt = engine.tokenize(REPEATING)
    free = engine.complete(prompt, max_tokens=1, temperature=0)
    assert free.tokens[0] in prompt  # the model would repeat " mat"
    # The very first token is already penalised for occurring in the prompt.
    penalised = engine.complete(prompt, max_tokens=1, temperature=0, **penalty)
    assert penalised.tokens[0] != free.tokens[0]


def test_preserved_control_tokens_keep_their_text(engine):
    im_start = engine.tokenize("<|im_start|>", add_special=False)
    assert len(im_start) == 1
    forced = {im_start[0]: 100.0}
    hidden = engine.complete("Hello", max_tokens=1, temperature=0, logit_bias=forced)
    assert hidden.tokens == im_start and hidden.text == ""
    shown = engine.complete("Hello", max_tokens=1, temperature=0, logit_bias=forced,
                            preserved_tokens=["<|im_start|>"])
    assert shown.tokens == im_start and shown.text == "<|im_start|>"


@pytest.mark.parametrize("stop_from", [" seven", " seven, eig"])
def test_stop_string_trims_its_tokens_and_logprobs(engine, stop_from):
    prompt = "Count: one, two, three, four,"
    full = engine.complete(prompt, max_tokens=12, temperature=0, logprobs=True)
    assert full.text.startswith(" five, six, seven, eight")
    cut_at = full.text.index(" seven")
    g = engine.generate(prompt, max_tokens=12, temperature=0, logprobs=True, stop=stop_from).wait()
    assert g.finish_reason == "stop" and g.text == full.text[:cut_at]
    # Only the tokens whose text was returned: " five", ",", " six", ",".
    n = 0
    while len(engine.detokenize(full.tokens[:n])) < cut_at:
        n += 1
    assert engine.detokenize(full.tokens[:n]) == g.text
    assert g.tokens == full.tokens[:n]
    assert [lp.token for lp in g.logprobs] == g.tokens


def test_cancelled_request_leaves_the_queue_at_once(model_path):
    with kolosal.Engine(model_path, n_ctx=1024, n_parallel=1) as e:
        busy = e.generate("Write a long essay.", max_tokens=500, ignore_eos=True)
        first = e.generate("Waits its turn", max_tokens=5)
        last = e.generate("Never runs", max_tokens=5)
        next(iter(busy))
        last.cancel()
        last.wait()
        # It did not wait for the request before it in the queue (nor for the busy slot).
        assert last.finish_reason == "cancelled"
        assert not busy.done and not first.done
        assert e.stats()["queued"] == 1
        busy.cancel()
        first.wait()
        assert first.finish_reason in ("stop", "length")


def test_logprob_bytes_of_a_partial_utf8_token(engine):
    # A byte-level token holding one byte of a multi-byte character.
    tok = next(t for t in range(engine.metadata["n_vocab"])
               if engine._native.token_to_piece(t) == b"\xa1")
    g = engine.generate("Hi", max_tokens=1, temperature=0, logit_bias={tok: 100.0}, top_logprobs=3).wait()
    assert g.tokens == [tok]
    lp = g.logprobs[0]
    assert lp.bytes == b"\xa1"
    assert all(t.bytes == engine._native.token_to_piece(t.token) for t in lp.top)
