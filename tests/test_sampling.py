"""Sampling parameters: grammar, JSON schema, logit bias, log-probabilities."""
from __future__ import annotations

import json
import math

import jsonschema
import pytest

from kolosal.errors import InvalidParameterError


def test_gbnf_grammar_constrains_output(engine):
    for seed in range(3):
        r = engine.complete("Is the sky blue? Answer:", grammar='root ::= " yes" | " no"', max_tokens=8,
                            temperature=1.0, seed=seed)
        assert r.text in (" yes", " no")
        assert r.finish_reason == "stop"


def test_json_schema_constrains_completion(engine):
    schema = {"type": "object", "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]},
                                               "count": {"type": "integer"}}, "required": ["colour", "count"]}
    r = engine.complete("A JSON object describing some apples:", json_schema=schema, max_tokens=60, temperature=0.7,
                        seed=5)
    jsonschema.validate(json.loads(r.text), schema)


def test_invalid_grammar_is_an_invalid_parameter(engine):
    with pytest.raises(InvalidParameterError) as e:
        engine.generate("x", grammar="root ::= (")
    assert e.value.param == "grammar"


def test_invalid_json_schema_is_an_invalid_parameter(engine):
    with pytest.raises(InvalidParameterError) as e:
        engine.generate("x", json_schema="{not json")
    assert e.value.param == "json_schema"


def test_logit_bias_bans_and_forces_tokens(engine):
    base = engine.complete("The capital of France is", max_tokens=1, temperature=0)
    banned = base.tokens[0]
    r = engine.complete("The capital of France is", max_tokens=1, temperature=0, logit_bias={banned: -100})
    assert r.tokens[0] != banned
    forced = engine.tokenize(" banana", add_special=False)[0]
    r = engine.complete("The capital of France is", max_tokens=3, temperature=0, logit_bias={str(forced): 100})
    assert r.tokens == [forced] * 3


def test_logit_bias_token_out_of_range(engine):
    with pytest.raises(InvalidParameterError) as e:
        engine.generate("x", logit_bias={10**7: 1.0})
    assert e.value.param == "logit_bias"


def test_logprobs_are_normalised_and_greedy_picks_the_top(engine):
    r = engine.complete("Colours: red, green,", max_tokens=4, temperature=0, top_logprobs=5)
    assert len(r.logprobs) == 4
    for lp in r.logprobs:
        assert lp.logprob <= 0
        assert len(lp.top) == 5
        assert lp.top[0].token == lp.token  # greedy: the chosen token is the most likely
        assert lp.top[0].logprob == pytest.approx(lp.logprob)
        assert [t.logprob for t in lp.top] == sorted((t.logprob for t in lp.top), reverse=True)
        assert sum(math.exp(t.logprob) for t in lp.top) <= 1.0 + 1e-4
        assert lp.text == engine.detokenize([lp.token])


def test_repeat_penalty_changes_repetitive_output(engine):
    prompt = "Repeat: 1 1 1 1 1 1 1 1 1 1"
    plain = engine.complete(prompt, max_tokens=12, temperature=0, ignore_eos=True)
    penalised = engine.complete(prompt, max_tokens=12, temperature=0, ignore_eos=True, repeat_penalty=1.8)
    assert len(set(plain.tokens)) <= 3  # the model just keeps repeating
    assert len(set(penalised.tokens)) > 2 * len(set(plain.tokens))


def test_ignore_eos_runs_to_max_tokens(engine):
    r = engine.chat([{"role": "user", "content": "Say OK."}], max_tokens=40, temperature=0, ignore_eos=True)
    assert r.finish_reason == "length"
    assert r.usage["completion_tokens"] == 40


def test_completed_grammar_ends_generation_even_with_ignore_eos(engine):
    r = engine.complete("Say a:", grammar='root ::= " a"', ignore_eos=True, max_tokens=8)
    assert r.text == " a"
    assert r.finish_reason == "stop"
    # The engine is unaffected.
    assert engine.complete("hi", max_tokens=2, ignore_eos=True).finish_reason == "length"
