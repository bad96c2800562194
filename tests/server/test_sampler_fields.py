"""llama.cpp's samplers and slot fields as extra fields of the OpenAI
endpoints (openai SDK, live server), and the model settings for KV cache
types, context shift and sampling defaults."""
from __future__ import annotations

import openai
import pytest

from kolosal._native import MemoryManager
from kolosal.server import create_app
from kolosal.server.config import ConfigError

from .conftest import MODEL_ID, server_config

PROMPT = "The capital of France is"


def test_sampler_chain_from_extra_body(oai):
    greedy = oai.completions.create(model=MODEL_ID, prompt=PROMPT, max_tokens=6, temperature=0).choices[0].text
    for seed in (1, 2):
        hot = oai.completions.create(model=MODEL_ID, prompt=PROMPT, max_tokens=6, temperature=1.5, seed=seed,
                                     extra_body={"samplers": ["top_k"], "top_k": 1})
        assert hot.choices[0].text == greedy


def test_every_sampler_field_is_taken_by_chat(oai):
    r = oai.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Say hello."}], max_tokens=6, seed=3,
        extra_body={"dry_multiplier": 0.8, "dry_base": 1.75, "dry_allowed_length": 2, "dry_penalty_last_n": -1,
                    "dry_sequence_breakers": ["\n", ":"], "xtc_probability": 0.5, "xtc_threshold": 0.1,
                    "top_n_sigma": 1.5, "min_keep": 1, "mirostat": 2, "mirostat_tau": 4.0, "mirostat_eta": 0.2,
                    "samplers": "edskypmxt", "t_max_predict_ms": 60000, "n_keep": -1})
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens > 0


@pytest.mark.parametrize("extra, param", [
    ({"samplers": ["top_k", "bogus"]}, "samplers[1]"),
    ({"samplers": "kz"}, "samplers"),
    ({"dry_multiplier": -1}, "dry_multiplier"),
    ({"dry_base": 0.5}, "dry_base"),
    ({"dry_sequence_breakers": []}, "dry_sequence_breakers"),
    ({"mirostat": 3}, "mirostat"),
    ({"mirostat_eta": 0}, "mirostat_eta"),
    ({"xtc_probability": 2}, "xtc_probability"),
    ({"top_n_sigma": -0.5}, "top_n_sigma"),
    ({"id_slot": 4}, "id_slot"),
    ({"t_max_predict_ms": -5}, "t_max_predict_ms"),
])
def test_bad_values_are_400_naming_the_field(oai, extra, param):
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=2,
                                    extra_body=extra)
    assert e.value.status_code == 400
    assert e.value.param == param, e.value.body


def test_cache_prompt_and_id_slot(oai):
    prompt = "Tell me about the sea. " * 6
    kw = dict(model=MODEL_ID, prompt=prompt, max_tokens=2, temperature=0)
    oai.completions.create(**kw, extra_body={"id_slot": 3})
    warm = oai.completions.create(**kw, extra_body={"id_slot": 3})
    assert warm.usage.prompt_tokens_details.cached_tokens > 0
    cold = oai.completions.create(**kw, extra_body={"id_slot": 3, "cache_prompt": False})
    assert cold.usage.prompt_tokens_details.cached_tokens == 0
    assert cold.choices[0].text == warm.choices[0].text


def test_model_settings_for_cache_types_context_shift_and_defaults(model_path):
    config = server_config(model_path)
    config["models"][0]["load_params"].update(
        {"n_ctx": 256, "n_parallel": 1, "cache_type_k": "q8_0", "cache_type_v": "q8_0", "context_shift": True,
         "sampling": {"samplers": ["top_k"], "top_k": 1}})
    app = create_app(config)
    try:
        client = app.test_client()
        info = client.get(f"/engines/{MODEL_ID}/status").get_json()
        assert info["metadata"]["cache_type_k"] == "q8_0" and info["metadata"]["context_shift"] is True
        assert info["memory"]["estimated_bytes"] == MemoryManager.estimate(str(model_path), 256, 0, "q8_0",
                                                                           "q8_0")["total_bytes"]
        greedy = client.post("/v1/completions", json={"model": MODEL_ID, "prompt": PROMPT, "max_tokens": 6,
                                                      "temperature": 0}).get_json()["choices"][0]["text"]
        hot = client.post("/v1/completions", json={"model": MODEL_ID, "prompt": PROMPT, "max_tokens": 6,
                                                   "temperature": 1.8, "seed": 5}).get_json()
        assert hot["choices"][0]["text"] == greedy  # the model's default chain is top_k=1 alone
        # past the slot's 256 tokens: the context shifts instead of ending the answer
        long = client.post("/v1/completions", json={"model": MODEL_ID, "prompt": PROMPT, "max_tokens": 300,
                                                    "ignore_eos": True}).get_json()
        assert long["usage"]["completion_tokens"] == 300 and long["choices"][0]["finish_reason"] == "length"
    finally:
        app.extensions["kolosal"].registry.close_all()


@pytest.mark.parametrize("load_params, field", [({"cache_type_k": "q9_0"}, "cache_type_k"),
                                                ({"context_shift": "sometimes"}, "context_shift")])
def test_bad_model_settings_are_config_errors(model_path, load_params, field):
    config = server_config(model_path)
    config["models"][0]["load_params"].update(load_params)
    with pytest.raises(ConfigError) as e:
        create_app(config, load_models="none")
    assert field in str(e.value)
