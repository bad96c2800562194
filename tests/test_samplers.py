"""llama.cpp's other samplers (DRY, XTC, Mirostat, top-n-sigma), the sampler
order, engine-wide sampling defaults, and how bad values are refused."""
from __future__ import annotations

import pytest

import kolosal
from kolosal import _native
from kolosal.errors import InvalidParameterError

@pytest.fixture(scope="module")
def engine(model_path, gpu_layers):
    """One slot, one compute thread: the samplers' effects, not throughput."""
    with kolosal.Engine(model_path, n_gpu_layers=gpu_layers, n_ctx=1024, n_parallel=1, n_threads=1, seed=42) as e:
        yield e


REPEAT = "red green blue red green blue red green blue red green blue red green blue"


def greedy(engine, prompt, **kw):
    return engine.complete(prompt, max_tokens=10, temperature=0, **kw).text


def test_default_chain_is_llama_servers_order():
    assert _native.default_samplers() == ["penalties", "dry", "top_n_sigma", "top_k", "typ_p", "top_p", "min_p",
                                          "xtc", "temperature"]


def test_chain_of_only_top_k_1_is_greedy_at_any_temperature(engine):
    want = greedy(engine, "The capital of France is")
    for seed in range(3):
        got = engine.complete("The capital of France is", max_tokens=10, temperature=1.5, top_k=1, seed=seed,
                              samplers=["top_k"]).text
        assert got == want


def test_chain_order_is_taken_as_given(engine):
    # temperature alone, very hot: the seed decides; with top_k=1 first the answer is fixed
    hot = {engine.complete("Once upon a time", max_tokens=12, temperature=5.0, top_k=1, seed=s,
                           samplers=["temperature"]).text for s in range(4)}
    assert len(hot) > 1, "top_k is not in the chain, so it must not restrict the choice"


def test_sampler_letters_are_accepted(engine):
    want = greedy(engine, "The capital of France is")
    assert engine.complete("The capital of France is", max_tokens=10, temperature=2.0, top_k=1, seed=3,
                           samplers="k").text == want


def test_a_tiny_top_n_sigma_keeps_only_the_top_token(engine):
    want = greedy(engine, "The capital of France is")
    for seed in range(3):
        assert engine.complete("The capital of France is", max_tokens=10, temperature=1.5, top_n_sigma=0.001,
                               top_k=0, top_p=1.0, min_p=0.0, seed=seed).text == want


def test_dry_breaks_a_repetition_greedy_decoding_follows(engine):
    plain = greedy(engine, REPEAT)
    assert len(set(plain.split())) <= 3, plain  # greedy decoding loops over a few words
    dry = greedy(engine, REPEAT, dry_multiplier=3.0, dry_base=2.0, dry_allowed_length=1, dry_penalty_last_n=-1)
    assert len(set(dry.split())) > len(set(plain.split())), (plain, dry)


def test_xtc_removes_the_most_likely_choices(engine):
    plain = greedy(engine, "The capital of France is")
    xtc = greedy(engine, "The capital of France is", xtc_probability=1.0, xtc_threshold=0.05, seed=1)
    assert xtc != plain


@pytest.mark.parametrize("version", [1, 2])
def test_mirostat_samples_reproducibly(engine, version):
    kw = dict(max_tokens=10, temperature=0.8, mirostat=version, mirostat_tau=3.0, mirostat_eta=0.2, seed=11)
    a = engine.complete("Once upon a time", **kw)
    b = engine.complete("Once upon a time", **kw)
    assert a.text and a.text == b.text
    assert a.usage["completion_tokens"] > 0


@pytest.mark.parametrize("params, param", [
    ({"samplers": ["top_k", "nucleus-ish"]}, "samplers"),
    ({"samplers": "kq"}, "samplers"),
    ({"samplers": [1, 2]}, "samplers"),
    ({"dry_multiplier": -0.5}, "dry_multiplier"),
    ({"dry_base": 0.5}, "dry_base"),
    ({"dry_allowed_length": -1}, "dry_allowed_length"),
    ({"dry_penalty_last_n": -2}, "dry_penalty_last_n"),
    ({"dry_sequence_breakers": []}, "dry_sequence_breakers"),
    ({"dry_sequence_breakers": "\n"}, "dry_sequence_breakers"),
    ({"xtc_probability": 1.5}, "xtc_probability"),
    ({"xtc_threshold": -0.1}, "xtc_threshold"),
    ({"mirostat": 3}, "mirostat"),
    ({"mirostat_tau": -1.0}, "mirostat_tau"),
    ({"mirostat_eta": 0.0}, "mirostat_eta"),
    ({"top_n_sigma": -0.5}, "top_n_sigma"),
    ({"min_keep": -1}, "min_keep"),
])
def test_invalid_sampler_values_name_the_field(engine, params, param):
    with pytest.raises(InvalidParameterError) as e:
        engine.generate("Hello", max_tokens=2, **params)
    assert e.value.param == param


def test_engine_defaults_apply_and_requests_override(model_path, gpu_layers, engine):
    want = greedy(engine, "The capital of France is")
    with kolosal.Engine(model_path, n_gpu_layers=gpu_layers, n_ctx=512, n_parallel=1, n_threads=1, seed=3,
                        sampling={"samplers": ["top_k"], "top_k": 1}) as e:
        assert e.sampling_defaults == {"samplers": ["top_k"], "top_k": 1}
        for seed in range(2):
            assert e.complete("The capital of France is", max_tokens=10, temperature=1.5, seed=seed).text == want
        # the request's own chain wins over the default
        hot = {e.complete("Once upon a time", max_tokens=12, temperature=5.0, seed=s, samplers=["temperature"]).text
               for s in range(4)}
        assert len(hot) > 1


@pytest.mark.parametrize("sampling, param", [
    ({"mirostat": 7}, "sampling.mirostat"),
    ({"samplers": ["bogus"]}, "sampling.samplers"),
    ({"max_tokens": 5}, "sampling.max_tokens"),
    (["top_k"], "sampling"),
])
def test_invalid_engine_defaults_fail_before_loading(model_path, gpu_layers, sampling, param):
    with pytest.raises(InvalidParameterError) as e:
        kolosal.Engine(model_path, n_gpu_layers=gpu_layers, n_ctx=256, n_parallel=1, sampling=sampling)
    assert e.value.param == param
