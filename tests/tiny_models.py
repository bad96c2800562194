"""Tiny GGUF models written with the ``gguf`` package, for the code paths the
demo model cannot reach. Weights are random: what they say is meaningless,
but llama.cpp loads and runs them like any model of their architecture."""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np

# A Qwen3 reranker: attention heads wider than n_embd / n_head (as in real
# Qwen3 models) and a rank-pooling head with two outputs.
N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 2
HEAD_DIM = 32  # != N_EMBD // N_HEAD
N_LAYER = 2
N_FF = 128
LABELS = ["no", "yes"]
EOS_ID = 257


def _byte_tokens() -> List[str]:
    """The 256 byte-level BPE symbols (GPT-2's byte-to-unicode table), starting at byte 0xC3."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    # Token 0 is the lone UTF-8 lead byte 0xC3: the token a greedy sampler
    # falls back to when every candidate is at -inf.
    return [chars[(0xC3 + i) % 256] for i in range(256)]


def write_qwen3_reranker(path: Path, seed: int = 0) -> Path:
    import gguf

    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    tokens = _byte_tokens() + ["Ġt", "<|endoftext|>"]
    types = [gguf.TokenType.NORMAL] * (len(tokens) - 1) + [gguf.TokenType.CONTROL]
    n_vocab = len(tokens)
    assert n_vocab - 1 == EOS_ID

    wr = gguf.GGUFWriter(str(path), "qwen3")
    wr.add_name("tiny-qwen3-reranker")
    wr.add_context_length(512)
    wr.add_embedding_length(N_EMBD)
    wr.add_block_count(N_LAYER)
    wr.add_feed_forward_length(N_FF)
    wr.add_head_count(N_HEAD)
    wr.add_head_count_kv(N_HEAD_KV)
    wr.add_key_length(HEAD_DIM)
    wr.add_value_length(HEAD_DIM)
    wr.add_rope_dimension_count(HEAD_DIM)
    wr.add_rope_freq_base(10000.0)
    wr.add_layer_norm_rms_eps(1e-6)
    wr.add_pooling_type(gguf.PoolingType.RANK)
    wr.add_classifier_output_labels(LABELS)
    wr.add_tokenizer_model("gpt2")
    wr.add_tokenizer_pre("qwen2")
    wr.add_token_list(tokens)
    wr.add_token_types(types)
    wr.add_token_merges(["Ġ t"])
    wr.add_bos_token_id(n_vocab - 1)
    wr.add_eos_token_id(n_vocab - 1)
    wr.add_add_bos_token(False)

    # numpy shapes are ggml's reversed: (rows=outputs, cols=inputs).
    wr.add_tensor("token_embd.weight", w(n_vocab, N_EMBD))
    wr.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    wr.add_tensor("cls.output.weight", w(len(LABELS), N_EMBD))
    for i in range(N_LAYER):
        p = f"blk.{i}."
        wr.add_tensor(p + "attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        wr.add_tensor(p + "attn_q.weight", w(HEAD_DIM * N_HEAD, N_EMBD))
        wr.add_tensor(p + "attn_k.weight", w(HEAD_DIM * N_HEAD_KV, N_EMBD))
        wr.add_tensor(p + "attn_v.weight", w(HEAD_DIM * N_HEAD_KV, N_EMBD))
        wr.add_tensor(p + "attn_output.weight", w(N_EMBD, HEAD_DIM * N_HEAD))
        wr.add_tensor(p + "attn_q_norm.weight", np.ones(HEAD_DIM, dtype=np.float32))
        wr.add_tensor(p + "attn_k_norm.weight", np.ones(HEAD_DIM, dtype=np.float32))
        wr.add_tensor(p + "ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        wr.add_tensor(p + "ffn_gate.weight", w(N_FF, N_EMBD))
        wr.add_tensor(p + "ffn_up.weight", w(N_FF, N_EMBD))
        wr.add_tensor(p + "ffn_down.weight", w(N_EMBD, N_FF))
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    return path
