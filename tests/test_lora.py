"""LoRA adapters on the demo model: an adapter GGUF written here with the
``gguf`` package (random low-rank updates of a few of the model's own
tensors), loaded per model, scaled per request and globally.

Requests with different scales cannot share a decode call (llama.cpp applies
adapters to a whole context): the scheduler decodes them in separate
batches, and a slot's cached prompt is only reused under the same scales."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import pytest

import kolosal
from kolosal.errors import InvalidModelError, InvalidParameterError, ModelNotFoundError

TARGETS = ("attn_q", "attn_v", "ffn_down")
PROMPT = "The capital of France is"
GREEDY = {"temperature": 0.0, "max_tokens": 12}


def write_lora(path: Path, model_path: Path, *, rank: int = 8, layers: Sequence[int] = range(6), seed: int = 0,
               scale_b: float = 0.3, arch: str = "", transpose_error: bool = False) -> Path:
    """A LoRA adapter for ``model_path``: lora_a/lora_b pairs for TARGETS in
    ``layers``, shaped from the model's own tensors (ggml order: A is
    [n_in, rank], B is [rank, n_out]). ``transpose_error`` gives every pair the
    shapes of a model twice as wide (an adapter made for another model)."""
    import gguf

    reader = gguf.GGUFReader(str(model_path))
    shapes: Dict[str, List[int]] = {t.name: [int(x) for x in t.shape] for t in reader.tensors}
    model_arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), arch or model_arch)
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(rank))
    for layer in layers:
        for target in TARGETS:
            name = f"blk.{layer}.{target}.weight"
            n_in, n_out = shapes[name]
            if transpose_error:
                n_in, n_out = n_in * 2, n_out * 2
            # numpy shapes are ggml's reversed
            w.add_tensor(name + ".lora_a", (rng.standard_normal((rank, n_in)) / np.sqrt(n_in)).astype(np.float32))
            w.add_tensor(name + ".lora_b", (rng.standard_normal((n_out, rank)) * scale_b).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def adapter(model_path, tmp_path_factory) -> Path:
    return write_lora(tmp_path_factory.mktemp("lora") / "adapter.gguf", model_path)


ENGINE = {"n_ctx": 2048, "n_parallel": 4, "n_threads": 1, "seed": 3}


@pytest.fixture(scope="module")
def base(model_path):
    with kolosal.Engine(model_path, **ENGINE) as e:
        yield e


@pytest.fixture(scope="module")
def tuned(model_path, adapter):
    """The model with the adapter loaded at global scale 0 (requests ask for theirs)."""
    with kolosal.Engine(model_path, lora=[{"path": str(adapter), "scale": 0.0}], **ENGINE) as e:
        yield e


def run(engine, scale=None, prompt=PROMPT):
    kw = dict(GREEDY)
    if scale is not None:
        kw["lora"] = [{"id": 0, "scale": scale}]
    return engine.complete(prompt, **kw).tokens


def test_adapters_are_listed(tuned, adapter):
    assert tuned.lora_adapters() == [{"id": 0, "path": str(adapter), "scale": 0.0, "task_name": "", "prompt_prefix": ""}]


def test_scale_zero_is_the_base_model_and_a_scale_changes_the_output(base, tuned):
    want = run(base)
    assert run(tuned, 0.0) == want
    assert run(tuned) == want  # the global scale (0)
    changed = run(tuned, 1.0)
    assert changed != want
    # The slot that held the adapted prompt is not reused for the base scales (nor the other way).
    assert run(tuned, 0.0) == want
    assert run(tuned, 1.0) == changed


def test_concurrent_requests_with_different_scales_do_not_bleed(tuned):
    scales = [0.0, 1.0, 0.5, 1.0]
    alone = {s: run(tuned, s) for s in set(scales)}
    assert len(set(map(tuple, alone.values()))) == 3
    for _ in range(2):
        gens = [tuned.generate(PROMPT, lora=[{"id": 0, "scale": s}], **GREEDY) for s in scales]
        got = [g.wait().tokens for g in gens]
        assert got == [alone[s] for s in scales]


def test_unlisted_adapters_get_zero_and_global_scales(model_path, adapter, base):
    want = run(base)
    with kolosal.Engine(model_path, lora=[str(adapter)], **ENGINE) as e:
        assert e.lora_adapters()[0]["scale"] == 1.0
        adapted = run(e)
        assert adapted != want and run(e, 1.0) == adapted
        # A request's list sets every adapter: one not listed is off.
        assert e.complete(PROMPT, lora=[], **GREEDY).tokens == want
        e.set_lora_adapters([{"id": 0, "scale": 0.0}])
        assert e.lora_adapters()[0]["scale"] == 0.0 and run(e) == want
        e.set_lora_adapters([{"id": 0, "scale": 1.0}])
        assert run(e) == adapted
        e.set_lora_adapters([])  # every adapter off
        assert run(e) == want


def test_chat_and_generate_many_take_lora(tuned):
    msgs = [{"role": "user", "content": "Hi"}]
    base_chat = tuned.chat(msgs, lora=[{"id": 0, "scale": 0.0}], **GREEDY).tokens
    assert tuned.chat(msgs, lora=[{"id": 0, "scale": 1.0}], **GREEDY).tokens != base_chat
    many = tuned.generate_many([PROMPT, PROMPT], lora=[{"id": 0, "scale": 1.0}], **GREEDY)
    assert [g.wait().tokens for g in many] == [run(tuned, 1.0)] * 2


@pytest.mark.parametrize("lora", [[{"id": 1, "scale": 1.0}], [{"id": -1, "scale": 1.0}], [{"scale": 1.0}],
                                  [{"id": 0, "scale": "x"}], {"id": 0}, [{"id": 0, "scale": float("nan")}]])
def test_bad_request_lora(tuned, lora):
    with pytest.raises(InvalidParameterError) as exc:
        tuned.generate(PROMPT, lora=lora, **GREEDY)
    assert exc.value.param == "lora"


def test_unknown_id_names_the_adapters(tuned):
    with pytest.raises(InvalidParameterError, match="unknown LoRA adapter id 3.*0..0"):
        tuned.set_lora_adapters([{"id": 3, "scale": 1.0}])


def test_missing_adapter_file(model_path, tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelNotFoundError, match="nope.gguf"):
        kolosal.Engine(model_path, lora=[{"path": str(missing)}], n_ctx=256, n_parallel=1)


def test_adapter_for_another_model(model_path, tmp_path):
    wide = write_lora(tmp_path / "wide.gguf", model_path, layers=[0], transpose_error=True)
    with pytest.raises(InvalidModelError, match="wide.gguf.*incorrect shape"):
        kolosal.Engine(model_path, lora=[{"path": str(wide)}], n_ctx=256, n_parallel=1)
    other_arch = write_lora(tmp_path / "qwen.gguf", model_path, layers=[0], arch="qwen3")
    with pytest.raises(InvalidModelError, match="qwen.gguf.*arch"):
        kolosal.Engine(model_path, lora=[{"path": str(other_arch)}], n_ctx=256, n_parallel=1)
    with pytest.raises(InvalidModelError, match="not.gguf"):
        (tmp_path / "not.gguf").write_bytes(b"not a gguf file at all")
        kolosal.Engine(model_path, lora=[{"path": str(tmp_path / "not.gguf")}], n_ctx=256, n_parallel=1)
