#!/usr/bin/env python3
"""HTTP streaming throughput: kolosal's server against llama.cpp's llama-server.

Both servers serve the same model with 8 slots; closed-loop clients (1, 4
and 8 at once) stream /v1/completions with the same prompts and a fixed
output length (ignore_eos). Servers run one after the other, never together.
Reports aggregate completion tok/s, time to first token p50/p95 and the
server's resident memory.

    python bench/http_bench.py [--seconds 20] [--max-tokens 128] [--markdown]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

import servers
from kolosal import demo_model

N_SLOTS = 8
CTX_PER_SLOT = 1024


def one_request(client: httpx.Client, url: str, model: str, prompt: str, max_tokens: int):
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "stream": True, "ignore_eos": True,
            "temperature": 0, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    ttft = None
    tokens = None
    with client.stream("POST", url + "/v1/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            if data.get("choices") and data["choices"][0].get("text") and ttft is None:
                ttft = time.perf_counter() - t0
            if data.get("usage"):
                tokens = data["usage"]["completion_tokens"]
    return ttft, tokens if tokens is not None else max_tokens


def load(url: str, model: str, clients: int, seconds: float, max_tokens: int):
    stop_at = time.monotonic() + seconds
    ttfts, tokens, errors = [], [], []
    lock = threading.Lock()

    def worker(i: int) -> None:
        with httpx.Client(timeout=120) as client:
            n = 0
            while time.monotonic() < stop_at:
                prompt = f"Client {i} request {n}: write a long story about the sea and the wind."
                try:
                    ttft, toks = one_request(client, url, model, prompt, max_tokens)
                except httpx.TransportError:
                    # A kept-alive connection the server had already closed: count it, go on.
                    with lock:
                        errors.append(n)
                    continue
                with lock:
                    ttfts.append(ttft)
                    tokens.append(toks)
                n += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    q = statistics.quantiles(ttfts, n=20) if len(ttfts) >= 2 else [ttfts[0]] * 19
    return {"tok_s": sum(tokens) / wall, "ttft_p50_ms": statistics.median(ttfts) * 1000,
            "ttft_p95_ms": q[18] * 1000, "requests": len(ttfts), "transport_errors": len(errors)}


def bench_server(kind, model, args, tmp):
    with servers.running(kind, model, threads=args.threads, slots=N_SLOTS, ctx=N_SLOTS * CTX_PER_SLOT,
                         workdir=tmp) as server:
        url = server.url
        one_request(httpx.Client(timeout=60), url, server.model, "warm up", 8)
        results = {}
        for c in args.clients:
            results[c] = load(url, server.model, c, args.seconds, args.max_tokens)
        results["rss_mb"] = server.rss_mib()
        return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    servers.require_llama_server()
    model = args.model or str(demo_model.ensure(quiet=True))
    with tempfile.TemporaryDirectory() as tmp:
        ref = bench_server("llama-server", model, args, Path(tmp))
        ours = bench_server("kolosal", model, args, Path(tmp))
    if args.markdown:
        print("| clients | llama-server tok/s | kolosal tok/s | ratio | TTFT p50 ms (llama-server / kolosal) | TTFT p95 ms (llama-server / kolosal) |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for c in args.clients:
        r, o = ref[c], ours[c]
        if args.markdown:
            print(f"| {c} | {r['tok_s']:.1f} | {o['tok_s']:.1f} | {o['tok_s'] / r['tok_s']:.2f}x | "
                  f"{r['ttft_p50_ms']:.0f} / {o['ttft_p50_ms']:.0f} | {r['ttft_p95_ms']:.0f} / {o['ttft_p95_ms']:.0f} |")
        else:
            print(f"{c} clients: llama-server {r['tok_s']:.1f} tok/s, kolosal {o['tok_s']:.1f} tok/s "
                  f"(ratio {o['tok_s'] / r['tok_s']:.2f}); TTFT p50 {r['ttft_p50_ms']:.0f} / {o['ttft_p50_ms']:.0f} ms, "
                  f"p95 {r['ttft_p95_ms']:.0f} / {o['ttft_p95_ms']:.0f} ms")
    for name, res in (("llama-server", ref), ("kolosal", ours)):
        errs = {c: res[c]["transport_errors"] for c in args.clients if res[c]["transport_errors"]}
        if errs:
            print(f"\n{name}: requests retried after a dropped keep-alive connection: {errs}")
    print(f"\nserver RSS after the run: llama-server {ref['rss_mb']:.0f} MiB, kolosal {ours['rss_mb']:.0f} MiB")


if __name__ == "__main__":
    main()
