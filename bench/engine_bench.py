#!/usr/bin/env python3
"""Engine throughput against llama.cpp's own tools, in one run.

Measures kolosal's prompt processing and single-stream decode speed
against `llama-bench` pp512 and tg128, and its 8-stream aggregate decode
speed against `llama-batched-bench` (npl 8), both built from the same vendored llama.cpp tree
(bench/build_llama_tools.sh), same model, same thread count.

    python bench/engine_bench.py [--model PATH] [--repeat 3] [--markdown]

On a GPU build, ``--n-gpu-layers -1`` puts every layer on the GPU for both
sides and ``--tools build/llama-tools-cuda`` takes llama.cpp's CUDA tools
(``LLAMA_TOOLS_CUDA=1 bash bench/build_llama_tools.sh``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import kolosal
from kolosal import demo_model

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "build" / "llama-tools" / "bin"
NGL = 0  # layers on the GPU, for llama.cpp's tools and kolosal alike (--n-gpu-layers)


def run_tool(args: list[str]) -> str:
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{args[0]} failed:\n{proc.stderr[-2000:]}")
    return proc.stdout


def llama_bench_tg(model: str, threads: int, n_gen: int, repeat: int) -> float:
    out = run_tool([str(TOOLS / "llama-bench"), "-m", model, "-p", "0", "-n", str(n_gen), "-t", str(threads),
                    "-r", str(repeat), "-ngl", str(NGL), "-o", "json"])
    return float(json.loads(out)[0]["avg_ts"])


def llama_bench_pp(model: str, threads: int, n_prompt: int, repeat: int) -> float:
    out = run_tool([str(TOOLS / "llama-bench"), "-m", model, "-p", str(n_prompt), "-n", "0", "-t", str(threads),
                    "-r", str(repeat), "-ngl", str(NGL), "-o", "json"])
    return float(json.loads(out)[0]["avg_ts"])


def kolosal_prompt(engine: "kolosal.Engine", n_prompt: int, rep: int) -> float:
    # Token ids unlike any earlier round's, so that nothing comes from the slot's cache.
    prompt = [(rep * 104729 + j * 7919) % 40000 + 100 for j in range(n_prompt)]
    r = engine.complete(prompt, max_tokens=1, temperature=0)
    assert r.usage["cached_tokens"] == 0, r.usage
    return r.timings["prefill_tokens_per_s"]


def llama_batched_bench_tg(model: str, threads: int, npl: int, n_prompt: int, n_gen: int) -> float:
    ctx = npl * (n_prompt + n_gen) + 256
    out = run_tool([str(TOOLS / "llama-batched-bench"), "-m", model, "-c", str(ctx), "-b", "2048", "-ub", "512",
                    "-npp", str(n_prompt), "-ntg", str(n_gen), "-npl", str(npl), "-t", str(threads),
                    "-ngl", str(NGL), "--output-format", "jsonl"])
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return float(rows[-1]["speed_tg"])


def kolosal_single(engine: "kolosal.Engine", n_gen: int) -> float:
    r = engine.complete("Run:", max_tokens=n_gen + 1, ignore_eos=True, temperature=0)
    # decode tok/s covers the n_gen tokens after the first (which comes out of the prefill)
    return r.timings["decode_tokens_per_s"]


def kolosal_batched(engine: "kolosal.Engine", npl: int, n_prompt: int, n_gen: int, rep: int) -> float:
    prompts = [[(rep * 7919 + i * 104729 + j * 31) % 40000 + 100 for j in range(n_prompt)] for i in range(npl)]
    # All prompts are admitted together and prefilled in one decode call, as
    # llama-batched-bench does; its S_TG counts only the generation phase.
    t_sub = time.perf_counter()
    gens = engine.generate_many(prompts, max_tokens=n_gen + 1, ignore_eos=True, temperature=0)
    for g in gens:
        g.wait()
    first = [t_sub + g.timings["ttft_ms"] / 1000 for g in gens]
    end = [f + g.timings["decode_ms"] / 1000 for f, g in zip(first, gens)]
    tokens = sum(g.usage["completion_tokens"] - 1 for g in gens)
    return tokens / (max(end) - min(first))


def main() -> None:
    global TOOLS, NGL
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="GGUF file (default: the demo model)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    ap.add_argument("--n-gpu-layers", type=int, default=0, help="layers on the GPU (-1: all), both sides")
    ap.add_argument("--tools", type=Path, default=TOOLS.parent,
                    help="llama.cpp's tools build dir (default build/llama-tools)")
    args = ap.parse_args()
    TOOLS, NGL = args.tools / "bin", args.n_gpu_layers
    model = args.model or str(demo_model.ensure(quiet=True))
    if not (TOOLS / "llama-bench").exists():
        sys.exit("build llama.cpp's tools first: bash bench/build_llama_tools.sh")
    kolosal.set_log_level("error")

    # Rounds alternate between llama.cpp's tool and kolosal so that both see
    # the same machine state; medians are reported.
    npl, n_prompt, n_gen, n_pp = 8, 128, 128, 512
    refp, oursp, ref1, ours1, ref8, ours8 = [], [], [], [], [], []
    with kolosal.Engine(model, n_ctx=1024, n_parallel=1, n_threads=args.threads, n_gpu_layers=NGL) as single, \
            kolosal.Engine(model, n_ctx=npl * (n_prompt + n_gen + 256), n_parallel=npl, n_threads=args.threads,
                           n_gpu_layers=NGL, n_batch=2048) as multi:  # all prompts in one step, as llama-batched-bench
        single.complete("warm up", max_tokens=8, ignore_eos=True)
        multi.complete("warm up", max_tokens=8, ignore_eos=True)
        for rep in range(args.repeat):
            refp.append(llama_bench_pp(model, args.threads, n_pp, 1))
            oursp.append(kolosal_prompt(single, n_pp, rep))
            ref1.append(llama_bench_tg(model, args.threads, n_gen, 1))
            ours1.append(kolosal_single(single, n_gen))
            ref8.append(llama_batched_bench_tg(model, args.threads, npl, n_prompt, n_gen))
            ours8.append(kolosal_batched(multi, npl, n_prompt, n_gen, rep))
    med = statistics.median
    rows = [
        ("prompt processing (pp512)", "llama-bench pp512", med(refp), med(oursp)),
        ("single stream decode (tg128)", "llama-bench tg128", med(ref1), med(ours1)),
        ("8 streams aggregate decode (pp128 + tg128 each)", "llama-batched-bench npl 8 S_TG", med(ref8), med(ours8)),
    ]
    if args.markdown:
        print("| measure | reference | reference tok/s | kolosal tok/s | ratio |")
        print("| --- | --- | ---: | ---: | ---: |")
        for name, tool, ref, ours in rows:
            print(f"| {name} | {tool} | {ref:.1f} | {ours:.1f} | {ours / ref:.2f}x |")
    else:
        for name, tool, ref, ours in rows:
            print(f"{name:50s} {tool:32s} ref {ref:7.1f} tok/s  kolosal {ours:7.1f} tok/s  ratio {ours / ref:.2f}")


if __name__ == "__main__":
    main()
