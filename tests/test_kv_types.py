"""KV cache element types: a quantized cache loads, generates, costs what
its element size says; bad types and a quantized V cache without flash
attention are refused naming the field."""
from __future__ import annotations

import pytest

import kolosal
from kolosal._native import MemoryManager
from kolosal.errors import InvalidParameterError


@pytest.fixture(scope="module")
def q8_engine(model_path, gpu_layers):
    with kolosal.Engine(model_path, n_gpu_layers=gpu_layers, n_ctx=512, n_parallel=1, n_threads=1, seed=5, cache_type_k="q8_0", cache_type_v="q8_0") as e:
        yield e


def test_q8_0_cache_loads_and_generates(q8_engine):
    assert q8_engine.metadata["cache_type_k"] == "q8_0"
    assert q8_engine.metadata["cache_type_v"] == "q8_0"
    r = q8_engine.complete("The capital of France is", max_tokens=8, temperature=0)
    assert r.usage["completion_tokens"] > 0 and r.text.strip()


def test_footprint_uses_the_element_size(model_path, q8_engine):
    n_ctx = q8_engine.n_ctx
    f16 = MemoryManager.estimate(str(model_path), n_ctx)["kv_bytes"]
    q8 = MemoryManager.estimate(str(model_path), n_ctx, 0, "q8_0", "q8_0")["kv_bytes"]
    q4 = MemoryManager.estimate(str(model_path), n_ctx, 0, "q4_0", "q4_0")["kv_bytes"]
    f32 = MemoryManager.estimate(str(model_path), n_ctx, 0, "f32", "f32")["kv_bytes"]
    # q8_0: 34 bytes per 32 values, q4_0: 18 per 32, f16: 2 per value, f32: 4
    assert q8 * 64 == f16 * 34
    assert q4 * 64 == f16 * 18
    assert f32 == 2 * f16
    # the loaded engine reports (and registers with the memory manager) the same figure
    assert q8_engine.metadata["kv_bytes"] == q8
    mine = [m for m in MemoryManager().models() if m.path == str(model_path) and m.kv_bytes == q8]
    assert mine


def test_mixed_types_with_flash_attention_off(model_path, gpu_layers):
    # a quantized K cache works without flash attention; only V needs it
    with kolosal.Engine(model_path, n_gpu_layers=gpu_layers, n_ctx=256, n_parallel=1, n_threads=1, cache_type_k="q8_0", flash_attn="off") as e:
        assert e.complete("Hello", max_tokens=4, temperature=0).usage["completion_tokens"] > 0


@pytest.mark.parametrize("kwargs, param", [
    ({"cache_type_k": "q9_0"}, "cache_type_k"),
    ({"cache_type_v": "int8"}, "cache_type_v"),
    ({"cache_type_k": 8}, "cache_type_k"),
    ({"cache_type_v": "q4_0", "flash_attn": "off"}, "cache_type_v"),
])
def test_bad_cache_types_name_the_field(model_path, gpu_layers, kwargs, param):
    with pytest.raises(InvalidParameterError) as e:
        kolosal.Engine(model_path, n_gpu_layers=gpu_layers, n_ctx=256, n_parallel=1, **kwargs)
    assert e.value.param == param
    assert param in str(e.value)


def test_estimate_refuses_an_unknown_type(model_path):
    with pytest.raises(InvalidParameterError) as e:
        MemoryManager.estimate(str(model_path), 512, 0, "f16", "q3_k")
    assert e.value.param == "cache_type_v"
