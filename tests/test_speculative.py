"""Speculative decoding with the demo model: n-gram prompt lookup and a
draft model (the demo model drafting for itself). Greedy output is the same
as without speculation; the timings and stats count proposed and accepted
tokens. Every request in flight speculates: its proposal is checked in the
same batch as the other requests' tokens."""
from __future__ import annotations

import pytest

import kolosal
from kolosal.errors import InvalidModelError, InvalidParameterError, ModelNotFoundError

from tiny_models import write_qwen3_reranker

TEXT = ("The quick brown fox jumps over the lazy dog. Kolosal serves many requests at once with continuous "
        "batching, and a prompt cache keeps the history of a conversation.")
COPY = [{"role": "user", "content": "Repeat this text exactly, word for word:\n\n" + TEXT}]
GREEDY = {"temperature": 0.0, "max_tokens": 40}
ENGINE = {"n_ctx": 1024, "n_parallel": 2, "n_threads": 1, "seed": 5}


@pytest.fixture(scope="module")
def base(model_path):
    with kolosal.Engine(model_path, **ENGINE) as e:
        yield e


@pytest.fixture(scope="module")
def ngram(model_path):
    with kolosal.Engine(model_path, spec_type="ngram", spec_ngram_n=3, n_draft=8, **ENGINE) as e:
        yield e


@pytest.fixture(scope="module")
def drafted(model_path):
    with kolosal.Engine(model_path, draft_model=model_path, n_draft=4, **ENGINE) as e:
        yield e


@pytest.fixture(scope="module")
def want(base):
    return base.chat(COPY, **GREEDY)


def check_same(got, want):
    assert got.tokens == want.tokens and got.text == want.text and got.finish_reason == want.finish_reason
    assert got.usage["completion_tokens"] == want.usage["completion_tokens"]


def test_ngram_lookup_gives_the_same_greedy_output(ngram, want):
    before = ngram.stats()
    got = ngram.chat(COPY, **GREEDY)
    check_same(got, want)
    t = got.timings
    assert t["draft_n"] > 0 and 0 < t["draft_n_accepted"] <= t["draft_n"]
    after = ngram.stats()
    assert after["spec_draft_tokens"] - before["spec_draft_tokens"] == t["draft_n"]
    assert after["spec_accepted_tokens"] - before["spec_accepted_tokens"] == t["draft_n_accepted"]
    # Fewer decode calls than tokens: accepted proposals came several per call.
    assert after["decode_calls"] - before["decode_calls"] < got.usage["completion_tokens"]


def test_draft_model_gives_the_same_greedy_output(drafted, want):
    got = drafted.chat(COPY, **GREEDY)
    check_same(got, want)
    assert got.timings["draft_n_accepted"] > 0


def test_stop_strings_and_max_tokens_inside_a_checked_draft(ngram, base):
    for params in ({"max_tokens": 7}, {"max_tokens": 40, "stop": ["lazy"]}, {"max_tokens": 40, "stop": ["serves"]}):
        check_same(ngram.chat(COPY, temperature=0.0, **params), base.chat(COPY, temperature=0.0, **params))


TEXT2 = ("Rivers carry water from the mountains to the sea. Along the way they shape valleys, feed forests "
         "and give towns a place to grow.")
COPY2 = [{"role": "user", "content": "Repeat this text exactly, word for word:\n\n" + TEXT2}]


def run_together(engine, convs, **params):
    gens = [engine.chat(c, stream=True, **params) for c in convs]
    for g in gens:
        g.wait()
    return gens


OTHER = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def want_together(model_path):
    """The greedy tokens of a fresh plain engine given (COPY, COPY2) together,
    then (COPY, OTHER) together. The engines compared with it are fresh too and
    see the same requests in the same order: a reused prompt prefix can change
    the last bits of the logits."""
    with kolosal.Engine(model_path, **ENGINE) as plain:
        return [[g.tokens for g in run_together(plain, pair, **GREEDY)] for pair in ((COPY, COPY2), (COPY, OTHER))]


def test_requests_in_flight_together_all_speculate(model_path, want_together):
    with kolosal.Engine(model_path, spec_type="ngram", spec_ngram_n=3, n_draft=8, **ENGINE) as spec:
        before = spec.stats()
        first = run_together(spec, (COPY, COPY2), **GREEDY)
        after = spec.stats()
        second = run_together(spec, (COPY, OTHER), **GREEDY)
    assert [g.tokens for g in first] == want_together[0]
    assert [g.tokens for g in second] == want_together[1]
    # Both copying requests had proposals accepted although they ran together,
    # and their tokens took fewer decode calls than the longer one's tokens
    # would without speculation (one call per token).
    for g in first:
        assert g.timings["draft_n"] > 0 and g.timings["draft_n_accepted"] > 0
    longest = max(g.usage["completion_tokens"] for g in first)
    assert after["decode_calls"] - before["decode_calls"] < longest
    assert after["spec_accepted_tokens"] - before["spec_accepted_tokens"] == sum(
        g.timings["draft_n_accepted"] for g in first)


def test_stop_strings_max_tokens_and_logprobs_beside_other_speculating_requests(model_path):
    # Each request of a pair ends inside a checked proposal (a stop string or
    # max_tokens) while the other goes on; a request asking for
    # log-probabilities gets them token by token beside a speculating one.
    cases = [({"max_tokens": 7}, {"max_tokens": 40}), ({"max_tokens": 40, "stop": ["lazy"]}, {"max_tokens": 40}),
             ({"max_tokens": 40}, {"max_tokens": 40, "stop": ["forests"]}),
             ({"max_tokens": 30, "logprobs": True, "top_logprobs": 2}, {"max_tokens": 30})]

    def run_cases(engine):
        out = []
        for pa, pb in cases:
            a = engine.chat(COPY, stream=True, temperature=0.0, **pa)
            b = engine.chat(COPY2, stream=True, temperature=0.0, **pb)
            a.wait(), b.wait()
            out.append((a, b))
        return out

    with kolosal.Engine(model_path, **ENGINE) as plain:
        want = run_cases(plain)
    with kolosal.Engine(model_path, spec_type="ngram", spec_ngram_n=3, n_draft=8, **ENGINE) as spec:
        got = run_cases(spec)
    for (ga, gb), (wa, wb) in zip(got, want):
        for g, w in ((ga, wa), (gb, wb)):
            assert (g.tokens, g.text, g.finish_reason) == (w.tokens, w.text, w.finish_reason)
    # The stop strings cut the text; the longer request of each pair speculated.
    assert "lazy" not in got[1][0].text and got[1][0].finish_reason == "stop"
    assert "forests" not in got[2][1].text and got[2][1].finish_reason == "stop"
    assert all(b.timings["draft_n_accepted"] > 0 for _, b in got)
    lp, other = got[3]
    assert len(lp.logprobs) == len(lp.tokens) == 30 and lp.timings["draft_n"] == 0
    # One entry per token, each with its two most likely tokens (the chosen one
    # first at temperature 0; a near-tie for second place may round either way).
    assert [x.token for x in lp.logprobs] == lp.tokens
    assert all(len(x.top) == 2 and x.top[0].token == x.token for x in lp.logprobs)


def test_draft_model_drafts_for_every_slot(model_path, want_together):
    with kolosal.Engine(model_path, draft_model=model_path, n_draft=4, **ENGINE) as spec:
        got = run_together(spec, (COPY, COPY2), **GREEDY)
    assert [g.tokens for g in got] == want_together[0]
    for g in got:
        assert g.timings["draft_n_accepted"] > 0


def test_draft_model_catches_up_with_a_long_prompt_over_several_steps(model_path):
    # The draft model sees a prompt longer than one of its batches (512
    # tokens) a batch per step before it drafts; the output stays the same.
    long_copy = [{"role": "user", "content": "Repeat the last sentence of this text exactly:\n\n" + " ".join(
        [TEXT, TEXT2] * 10)}]
    params = {"n_ctx": 2048, "n_parallel": 1, "n_threads": 1, "seed": 5}
    with kolosal.Engine(model_path, **params) as plain:
        want = plain.chat(long_copy, **GREEDY)
    assert want.usage["prompt_tokens"] > 512
    with kolosal.Engine(model_path, draft_model=model_path, n_draft=4, **params) as spec:
        got = spec.chat(long_copy, **GREEDY)
    check_same(got, want)
    assert got.timings["draft_n_accepted"] > 0


def test_logprobs_and_sampling_still_work(ngram, base):
    lp = ngram.chat(COPY, logprobs=True, top_logprobs=2, **GREEDY)
    ref = base.chat(COPY, logprobs=True, top_logprobs=2, **GREEDY)
    assert lp.tokens == ref.tokens and len(lp.logprobs) == len(ref.logprobs)
    sampled = ngram.chat(COPY, temperature=0.8, seed=11, max_tokens=30)
    assert sampled.usage["completion_tokens"] == 30 or sampled.finish_reason == "stop"


def test_draft_model_with_another_vocabulary(model_path, tmp_path):
    other = write_qwen3_reranker(tmp_path / "qwen3.gguf")
    with pytest.raises(InvalidModelError, match="cannot draft for this model"):
        kolosal.Engine(model_path, draft_model=other, n_ctx=256, n_parallel=1)


@pytest.mark.parametrize("kwargs, param", [
    ({"spec_type": "lookahead"}, "spec_type"),
    ({"spec_type": "draft"}, "draft_model"),
    ({"spec_type": "ngram", "n_draft": 0}, "n_draft"),
    ({"spec_type": "ngram", "p_min": 2.0}, "p_min"),
    ({"spec_type": "ngram", "draft_min": 300}, "draft_min"),
])
def test_bad_speculative_settings(model_path, kwargs, param):
    with pytest.raises(InvalidParameterError) as exc:
        kolosal.Engine(model_path, n_ctx=256, n_parallel=1, **kwargs)
    assert exc.value.param == param


def test_missing_draft_model(model_path, tmp_path):
    with pytest.raises(ModelNotFoundError, match="draft model not found"):
        kolosal.Engine(model_path, draft_model=tmp_path / "draft.gguf", n_ctx=256, n_parallel=1)
