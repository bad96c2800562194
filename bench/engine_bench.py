#!/usr/bin/env python3
"""Engine throughput against llama.cpp's own tools, in one run.

Measures kolosal's single-stream decode speed against `llama-bench` tg128
and its 8-stream aggregate decode speed against `llama-batched-bench`
(npl 8), both built from the same vendored llama.cpp tree
(bench/build_llama_tools.sh), same model, same thread count.

    python bench/engine_bench.py [--model PATH] [--repeat 3] [--markdown]
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


def run_tool(args: list[str]) -> str:
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{args[0]} failed:\n{proc.stderr[-2000:]}")
    return proc.stdout


def llama_bench_tg(model: str, threads: int, n_gen: int, repeat: int) -> float:
    out = run_tool([str(TOOLS / "llama-bench"), "-m", model, "-p", "0", "-n", str(n_gen), "-t", str(threads),
                    "-r", str(repeat), "-o", "json"])
    return float(json.loads(out)[0]["avg_ts"])


def llama_batched_bench_tg(model: str, threads: int, npl: int, n_prompt: int, n_gen: int) -> float:
    ctx = npl * (n_prompt + n_gen) + 256
    out = run_tool([str(TOOLS / "llama-batched-bench"), "-m", model, "-c", str(ctx), "-b", "2048", "-ub", "512",
                    "-npp", str(n_prompt), "-ntg", str(n_gen), "-npl", str(npl), "-t", str(threads),
                    "--output-format", "jsonl"])
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return float(rows[-1]["speed_tg"])


def kolosal_single(model: str, threads: int, n_gen: int, repeat: int) -> float:
    speeds = []
    with kolosal.Engine(model, n_ctx=1024, n_parallel=1, n_threads=threads) as e:
        e.complete("warm up", max_tokens=8, ignore_eos=True)
        for i in range(repeat):
            r = e.complete(f"Run {i}:", max_tokens=n_gen + 1, ignore_eos=True, temperature=0)
            # decode tok/s covers the n_gen tokens after the first (which comes from the prefill)
            speeds.append(r.timings["decode_tokens_per_s"])
    return statistics.mean(speeds)


def kolosal_batched(model: str, threads: int, npl: int, n_prompt: int, n_gen: int, repeat: int) -> float:
    speeds = []
    with kolosal.Engine(model, n_ctx=npl * (n_prompt + n_gen + 256), n_parallel=npl, n_threads=threads) as e:
        e.complete("warm up", max_tokens=8, ignore_eos=True)
        for rep in range(repeat):
            prompts = [[(rep * 7919 + i * 104729 + j * 31) % 40000 + 100 for j in range(n_prompt)] for i in range(npl)]
            t_sub = []
            gens = []
            for p in prompts:
                t_sub.append(time.perf_counter())
                gens.append(e.generate(p, max_tokens=n_gen + 1, ignore_eos=True, temperature=0))
            for g in gens:
                g.wait()
            first = [t + g.timings["ttft_ms"] / 1000 for t, g in zip(t_sub, gens)]
            end = [f + g.timings["decode_ms"] / 1000 for f, g in zip(first, gens)]
            tokens = sum(g.usage["completion_tokens"] - 1 for g in gens)
            speeds.append(tokens / (max(end) - min(first)))
    return statistics.mean(speeds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="GGUF file (default: the demo model)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = ap.parse_args()
    model = args.model or str(demo_model.ensure(quiet=True))
    if not (TOOLS / "llama-bench").exists():
        sys.exit("build llama.cpp's tools first: bash bench/build_llama_tools.sh")
    kolosal.set_log_level("error")

    rows = []
    ref = llama_bench_tg(model, args.threads, 128, args.repeat)
    ours = kolosal_single(model, args.threads, 128, args.repeat)
    rows.append(("single stream decode (tg128)", "llama-bench tg128", ref, ours))
    ref = llama_batched_bench_tg(model, args.threads, 8, 128, 128)
    ours = kolosal_batched(model, args.threads, 8, 128, 128, args.repeat)
    rows.append(("8 streams aggregate decode (pp128 + tg128 each)", "llama-batched-bench npl 8 S_TG", ref, ours))

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
