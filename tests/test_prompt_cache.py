"""Cache-aware slots, the host-memory prompt cache and a unified KV cache under pressure."""
from __future__ import annotations

import math

import pytest

import kolosal
from kolosal.errors import InvalidParameterError


def system_prompt(i: int) -> str:
    rules = " ".join(f"Rule {k}: be helpful about topic {i * 7 + k}." for k in range(12))
    return f"You are assistant number {i}. {rules}"


def common_prefix(a, b) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


class Conversations:
    """Several chats, each coming back turn after turn with its whole history."""

    def __init__(self, engine: kolosal.Engine, n: int) -> None:
        self.engine = engine
        self.msgs = {i: [{"role": "system", "content": system_prompt(i)},
                         {"role": "user", "content": f"Tell me about {i}."}] for i in range(n)}
        self.kv = {}  # tokens whose KV the conversation's last turn left behind

    def turn(self, i: int):
        tokens = self.engine.render_chat(self.msgs[i]).tokens
        r = self.engine.chat(self.msgs[i], max_tokens=8, temperature=0, ignore_eos=True)
        assert r.usage["prompt_tokens"] == len(tokens)
        # The last sampled token is never decoded: it is not in the KV cache.
        self.kv[i] = tokens + r.tokens[:-1]
        self.msgs[i] += [{"role": "assistant", "content": r.text}, {"role": "user", "content": "And more?"}]
        return tokens, r


def test_returning_conversation_is_restored_from_host_memory(model_path):
    # Four conversations on two slots: every conversation loses its slot between its turns.
    with kolosal.Engine(model_path, n_ctx=2048, n_parallel=2, seed=1) as e:
        convs = Conversations(e, 4)
        for i in range(4):
            convs.turn(i)
        assert e.stats()["prompt_cache_entries"] >= 1
        for i in range(4):
            before = list(convs.kv[i])
            tokens, r = convs.turn(i)
            # Exactly the reusable prefix of what the previous turn left in the KV cache.
            expected = min(common_prefix(before, tokens), len(tokens) - 1)
            assert expected > 150
            assert r.usage["cached_tokens"] == expected
        st = e.stats()
        assert st["prompt_cache_restores"] >= 2
        assert 0 < st["prompt_cache_bytes"] <= st["prompt_cache_limit_bytes"] == 2048 << 20


def test_cache_ram_zero_keeps_no_host_cache(model_path):
    with kolosal.Engine(model_path, n_ctx=2048, n_parallel=2, seed=1, cache_ram_mib=0) as e:
        convs = Conversations(e, 4)
        for i in range(4):
            convs.turn(i)
        tokens, r = convs.turn(0)
        # Only the chat template's opening is shared with whatever the slot holds.
        assert r.usage["cached_tokens"] < 20
        st = e.stats()
        assert st["prompt_cache_limit_bytes"] == 0
        assert st["prompt_cache_bytes"] == 0 and st["prompt_cache_entries"] == 0
        assert st["prompt_cache_saves"] == 0 and st["prompt_cache_restores"] == 0


def test_host_cache_stays_within_its_bound(model_path):
    with kolosal.Engine(model_path, n_ctx=2048, n_parallel=1, seed=1, cache_ram_mib=6) as e:
        per_token = e.metadata["kv_bytes"] // e.n_ctx
        convs = Conversations(e, 5)
        for i in range(5):
            convs.turn(i)
        st = e.stats()
        # Each saved conversation holds ~200 tokens of KV (~4.5 MiB): only one fits in 6 MiB.
        assert st["prompt_cache_saves"] == 4
        assert st["prompt_cache_entries"] == 1
        assert len(convs.kv[3]) * per_token <= st["prompt_cache_bytes"] <= 6 << 20
        # The newest saved conversation comes back; the older ones were pushed out.
        _, r = convs.turn(3)
        assert r.usage["cached_tokens"] > 150
        _, r = convs.turn(0)
        assert r.usage["cached_tokens"] < 20


def test_new_conversation_takes_the_least_recently_used_slot(model_path):
    # No host cache: only the choice of slot keeps A's KV alive while B runs.
    with kolosal.Engine(model_path, n_ctx=4096, n_parallel=4, seed=1, cache_ram_mib=0) as e:
        convs = Conversations(e, 2)
        _, a = convs.turn(0)
        _, b = convs.turn(1)
        assert a.timings["slot"] != b.timings["slot"]
        tokens, a2 = convs.turn(0)
        assert a2.timings["slot"] == a.timings["slot"]
        assert a2.usage["cached_tokens"] > 150


@pytest.mark.parametrize("threshold", [0.1, 0.9])
def test_similarity_threshold_is_configurable(model_path, threshold):
    # A prompt that shares about a third with what a slot holds: reused at
    # 0.1, while at 0.9 the least recently used slot is taken instead.
    with kolosal.Engine(model_path, n_ctx=2048, n_parallel=2, seed=1, cache_ram_mib=0,
                        slot_prompt_similarity=threshold) as e:
        base = e.tokenize("The quick brown fox jumps over the lazy dog. " * 4)
        more = e.tokenize(" Then it ran away into the forest and was never seen again." * 6, add_special=False)
        older = e.complete(e.tokenize("Completely different words here."), max_tokens=2, temperature=0)
        newer = e.complete(base, max_tokens=2, temperature=0)
        assert older.timings["slot"] != newer.timings["slot"]
        assert 0.1 < len(base) / len(base + more) < 0.9
        r = e.complete(base + more, max_tokens=2, temperature=0)
        if threshold < 0.5:
            assert r.timings["slot"] == newer.timings["slot"]
            assert r.usage["cached_tokens"] >= len(base)
        else:
            assert r.timings["slot"] == older.timings["slot"]
            assert r.usage["cached_tokens"] <= 1


@pytest.mark.parametrize("bad", [{"cache_ram_mib": -2}, {"cache_ram_mib": 1.5}, {"slot_prompt_similarity": 1.5},
                                 {"slot_prompt_similarity": -0.1}])
def test_bad_cache_options_are_rejected(model_path, bad):
    with pytest.raises(InvalidParameterError) as ei:
        kolosal.Engine(model_path, n_ctx=512, n_parallel=1, **bad)
    assert ei.value.param == next(iter(bad))


def long_prompt(e: kolosal.Engine, word: str, n_tokens: int):
    toks = e.tokenize(f"Here is a list about {word}:")
    filler = e.tokenize(f" {word} number one, {word} number two,", add_special=False)
    while len(toks) < n_tokens:
        toks += filler
    return toks[:n_tokens]


def test_unified_kv_purges_idle_slots_before_failing(model_path):
    with kolosal.Engine(model_path, n_ctx=1024, n_parallel=2, seed=1, kv_unified=True) as e:
        assert e.n_ctx_slot == 1024
        a = e.complete(long_prompt(e, "apples", 600), max_tokens=4, temperature=0, ignore_eos=True)
        assert a.finish_reason == "length"
        # 600 cells stay with the idle slot; the next prompt needs 600 of the 1024.
        b = e.complete(long_prompt(e, "boats", 600), max_tokens=4, temperature=0, ignore_eos=True)
        assert b.finish_reason == "length"
        assert b.timings["slot"] != a.timings["slot"]
        st = e.stats()
        assert st["kv_purges"] == 1
        # The purged state went to the host cache and comes back for its conversation.
        assert st["prompt_cache_saves"] >= 1
        a2 = e.complete(long_prompt(e, "apples", 600) + e.tokenize(" and pears", add_special=False),
                        max_tokens=4, temperature=0, ignore_eos=True)
        assert a2.usage["cached_tokens"] >= 600


def test_unified_kv_purges_idle_slots_before_dropping_proposals(model_path):
    # With kv_unified an idle slot's cached prompt gives its cells up before a
    # speculating request's proposals are dropped for want of room.
    text = ("The quick brown fox jumps over the lazy dog. A prompt cache keeps the history of a "
            "conversation, and continuous batching serves many requests at once. ")
    spec = {"spec_type": "ngram", "spec_ngram_n": 3, "n_draft": 8}
    with kolosal.Engine(model_path, n_ctx=1024, n_parallel=2, seed=1, kv_unified=True, **spec) as e:
        copy = e.tokenize(text * 3 + "The quick brown fox")
        # The idle slot keeps all cells but one once the copying prompt is read.
        held = e.n_ctx - len(copy) - 1
        a = e.complete(long_prompt(e, "apples", held - 3), max_tokens=4, temperature=0, ignore_eos=True)
        assert a.finish_reason == "length"
        assert sorted(s["n_cached"] for s in e.slots()) == [0, held]
        before = e.stats()
        got = e.complete(copy, max_tokens=8, temperature=0, ignore_eos=True)
        st = e.stats()
        assert st["kv_purges"] - before["kv_purges"] == 1
        # The step after the prompt checked its whole proposal (the rest of the
        # answer): the proposal was not dropped for want of room.
        assert got.timings["draft_n_accepted"] == got.usage["completion_tokens"] - 2
        assert st["decode_calls"] - before["decode_calls"] == 2
    with kolosal.Engine(model_path, n_ctx=1024, n_parallel=1, seed=1) as plain:
        want = plain.complete(copy, max_tokens=8, temperature=0, ignore_eos=True)
    assert got.tokens == want.tokens


def test_unified_kv_overflow_fails_one_request_alone(model_path):
    with kolosal.Engine(model_path, n_ctx=1024, n_parallel=2, seed=1, kv_unified=True, cache_ram_mib=0) as e:
        gens = e.generate_many([long_prompt(e, "apples", 600), long_prompt(e, "boats", 600)],
                               max_tokens=8, temperature=0, ignore_eos=True)
        for g in gens:
            g.wait()
        reasons = sorted(g.finish_reason for g in gens)
        assert reasons == ["error", "length"]
        failed = next(g for g in gens if g.finish_reason == "error")
        ok = next(g for g in gens if g.finish_reason == "length")
        assert "KV cache is full" in failed.error
        assert ok.usage["completion_tokens"] == 8
        # The engine goes on serving.
        assert e.complete("Hello", max_tokens=3, ignore_eos=True).finish_reason == "length"


def test_prompts_arriving_together_are_read_one_ubatch_per_step(model_path):
    # A step reads at most n_batch prompt tokens, by default 512 (one n_ubatch): of
    # conversations that arrive together the first is answered, and goes on generating,
    # while the others are still read, instead of all waiting for one long step.
    # (pair_ubatches off: with kolosal's Q4_1 kernel a step may leave one more
    # token for the next, tests/test_cpu_kernels.py.)
    prompts = [system_prompt(i) * 3 for i in range(2)]

    def read(**load):
        with kolosal.Engine(model_path, n_ctx=2048, n_parallel=2, seed=1, pair_ubatches=False, **load) as e:
            n = sum(len(e.tokenize(p)) for p in prompts)
            before = e.stats()["decode_calls"]
            # max_tokens 1: the answer is sampled from the prompt's last step, no further decode.
            answers = [g.wait().tokens for g in e.generate_many(prompts, max_tokens=1, temperature=0)]
            return n, e.stats()["decode_calls"] - before, answers

    n, steps, chunked = read()
    assert n > 512
    assert steps == math.ceil(n / 512)
    n_whole, steps_whole, whole = read(n_batch=2048)
    assert (n_whole, steps_whole) == (n, 1)
    # Reading in chunks gives the same answers.
    assert chunked == whole
