"""kolosal's own CPU kernels (csrc/cpu_kernels.h): the Q4_1 x Q8_1 kernel that
takes two weight rows and two activation columns a call, and the prompt chunks
cut so that llama.cpp's ubatches have even token counts for it.

The kernel must give exactly llama.cpp's results: checked on random blocks and
through the engine, against a process that keeps llama.cpp's kernel
(``KOLOSAL_CPU_KERNELS=llama.cpp``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import kolosal
from kolosal import _native

Q4_1 = _native.cpu_kernels()[0]
INSTALLED = Q4_1["source"].startswith("kolosal")
needs_kernel = pytest.mark.skipif(
    not INSTALLED, reason=f"kolosal's Q4_1 kernel is not used on this machine: {Q4_1['reason']}")


def in_process(model_path, script: str, **env: str) -> dict:
    """Runs ``script`` (``model`` is the demo model's path, ``emit(x)`` prints
    the result) in a fresh interpreter with ``env`` added; its result."""
    code = ("import json, os, sys\nimport kolosal\nfrom kolosal import _native\n"
            f"model = {str(model_path)!r}\n"
            "def emit(x):\n    print('RESULT ' + json.dumps(x))\n" + textwrap.dedent(script))
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def test_the_report_names_one_source_per_kernel():
    (entry,) = _native.cpu_kernels()
    assert entry["op"] == "mul_mat q4_1 x q8_1"
    if INSTALLED:
        assert entry["source"] in ("kolosal (avx2)", "kolosal (avx512vnni)") and entry["reason"] == ""
    else:
        assert entry["source"] == "llama.cpp" and entry["reason"]


@needs_kernel
@pytest.mark.parametrize("n,rows,cols", [(32, 2, 2), (576, 64, 16), (1536, 32, 8), (4096, 8, 6), (11008, 4, 4)])
def test_results_are_bit_for_bit_llama_cpps(n, rows, cols):
    for seed in range(3):
        assert _native.cpu_kernel_mismatches(n, rows, cols, seed) == 0


def test_sizes_the_kernel_cannot_take_are_refused():
    assert _native.cpu_kernel_mismatches(33, 4, 4) is None
    assert _native.cpu_kernel_mismatches(-32, 4, 4) is None
    assert _native.cpu_kernel_mismatches(64, 1, 4) is None
    assert _native.cpu_kernel_mismatches(64, 4, 5000) is None


def test_the_environment_keeps_llama_cpps_kernel(model_path):
    got = in_process(model_path, """
        e = kolosal.Engine(model, n_ctx=1024, n_parallel=1, n_threads=2)
        emit({"kernels": kolosal.build_info()["cpu_kernels"], "pair": e.metadata["pair_ubatches"]})
        e.close()
    """, KOLOSAL_CPU_KERNELS="llama.cpp")
    assert got["kernels"] == [{"op": "mul_mat q4_1 x q8_1", "source": "llama.cpp",
                               "reason": "KOLOSAL_CPU_KERNELS=llama.cpp"}]
    assert got["pair"] is False


GENERATE = """
    e = kolosal.Engine(model, n_ctx=4096, n_parallel=4, n_threads=2, pair_ubatches=PAIR)
    words = "river mountain garden window kitchen music paper letter table chair bread market".split()
    prompts = [" ".join(words[(i * 5 + j) % len(words)] for j in range(n)) for i, n in enumerate((7, 40, 151, 300))]
    out = []
    for g in e.generate_many(prompts, max_tokens=24, temperature=0, ignore_eos=True, logprobs=True, top_logprobs=3):
        text = "".join(g)
        out.append({"text": text, "tokens": g.tokens, "prompt": len(e.tokenize(prompts[len(out)])),
                    "logprobs": [[lp.logprob] + [t.logprob for t in lp.top] for lp in g.logprobs]})
    emit({"out": out, "kernels": _native.cpu_kernels()[0]["source"], "pair": e.metadata["pair_ubatches"]})
    e.close()
"""


def with_pair(model_path, script: str, pair: bool, **env: str) -> dict:
    """``script`` run by ``in_process`` with ``PAIR`` (its engine's pair_ubatches) set to ``pair``."""
    return in_process(model_path, f"PAIR = {pair!r}\n" + textwrap.dedent(script), **env)


def generate(model_path, pair: bool, **env: str) -> dict:
    return with_pair(model_path, GENERATE, pair, **env)


@needs_kernel
def test_generations_match_llama_cpps_kernel_exactly(model_path):
    """Four prompts of different lengths (odd and even token counts) on four
    slots, cut into the same ubatches: the same tokens and the same
    log-probabilities, to the last bit, whether ggml multiplies with kolosal's
    kernel or with llama.cpp's."""
    ours = generate(model_path, False)
    theirs = generate(model_path, False, KOLOSAL_CPU_KERNELS="llama.cpp")
    assert ours["kernels"].startswith("kolosal") and theirs["kernels"] == "llama.cpp"
    assert {p["prompt"] % 2 for p in ours["out"]} == {0, 1}
    assert ours["out"] == theirs["out"]
    assert all(len(p["tokens"]) == 24 for p in ours["out"])


@needs_kernel
def test_paired_ubatches_give_the_same_answers(model_path):
    """With prompt chunks cut for the kernel (the default) the greedy answers
    are the ones llama.cpp's kernel and chunking give; the logits may differ by
    llama.cpp's usual rounding between batch shapes, as with another n_ubatch."""
    ours = generate(model_path, True)
    theirs = generate(model_path, True, KOLOSAL_CPU_KERNELS="llama.cpp")
    assert ours["pair"] is True and theirs["pair"] is False
    assert [p["tokens"] for p in ours["out"]] == [p["tokens"] for p in theirs["out"]]
    assert [p["text"] for p in ours["out"]] == [p["text"] for p in theirs["out"]]


@needs_kernel
def test_a_prompt_alone_is_read_as_llama_cpp_reads_it(model_path):
    """A request alone keeps llama.cpp's ubatches, odd or even (one step for
    the prompt), and so its answer, to the last bit of each log-probability."""
    script = """
        e = kolosal.Engine(model, n_ctx=2048, n_parallel=2, n_threads=2)
        out = {}
        for n in (120, 121):
            prompt = " ".join(["garden"] * n)
            length = len(e.tokenize(prompt))
            before = e.stats()
            c = e.complete(prompt, max_tokens=3, temperature=0, logprobs=True)
            after = e.stats()
            out[length % 2] = {"steps": after["decode_calls"] - before["decode_calls"], "tokens": c.tokens,
                               "logprobs": [lp.logprob for lp in c.logprobs],
                               "paired": after["paired_ubatch_tokens"] - before["paired_ubatch_tokens"]}
        emit(out)
        e.close()
    """
    ours = in_process(model_path, script)
    theirs = in_process(model_path, script, KOLOSAL_CPU_KERNELS="llama.cpp")
    assert set(ours) == {"0", "1"}
    # The prompt in one step, then two decode steps for the second and third tokens.
    assert all(r["steps"] == 3 and r["paired"] == 0 for r in ours.values())
    assert ours == theirs


CONCURRENT = """
    e = kolosal.Engine(model, n_ctx=2048, n_parallel=2, n_threads=2, pair_ubatches=PAIR)
    long = e.generate("Tell me a long story about a river.", max_tokens=96, temperature=0, ignore_eos=True)
    next(iter(long))  # generating: the next prompt shares its steps
    prompt = next(p for p in (" ".join(["garden"] * n) for n in (120, 121)) if len(e.tokenize(p)) % 2 == 0)
    c = e.complete(prompt, max_tokens=4, temperature=0)
    long.wait()
    emit({"paired": e.stats()["paired_ubatch_tokens"], "prompt_tokens": c.usage["prompt_tokens"],
          "length": len(e.tokenize(prompt)),
          "tokens": len(c.tokens), "long": len(long.tokens)})
    e.close()
"""


@needs_kernel
def test_a_prompt_read_beside_a_generation_is_cut_to_even_ubatches(model_path):
    """Beside a generating slot an even prompt of n tokens makes ubatches of 2
    (one token of each) and n - 1: one token is left for the next step, where
    it joins the other slot's, and the request is answered in full."""
    paired = with_pair(model_path, CONCURRENT, True)
    plain = with_pair(model_path, CONCURRENT, False)
    assert paired["paired"] >= 1 and plain["paired"] == 0
    for r in (paired, plain):
        assert r["tokens"] == 4 and r["long"] == 96 and r["prompt_tokens"] == r["length"]


@needs_kernel
def test_the_engine_reports_paired_ubatches_only_for_a_q4_1_model_on_the_cpu(engine, model_path):
    assert engine.metadata["pair_ubatches"] is (engine.metadata["n_gpu_layers"] == 0)
    e = kolosal.Engine(model_path, n_ctx=1024, n_parallel=1, n_threads=2, pair_ubatches=False)
    try:
        assert e.metadata["pair_ubatches"] is False
    finally:
        e.close()


def test_pair_ubatches_must_be_a_bool(model_path):
    with pytest.raises(kolosal.errors.InvalidParameterError) as err:
        kolosal.Engine(model_path, pair_ubatches="yes")
    assert err.value.param == "pair_ubatches"
