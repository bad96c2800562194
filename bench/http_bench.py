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
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

import kolosal
from kolosal import demo_model

ROOT = Path(__file__).resolve().parent.parent
LLAMA_SERVER = ROOT / "build" / "llama-tools" / "bin" / "llama-server"
N_SLOTS = 8
CTX_PER_SLOT = 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited early with status {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    sys.exit(f"server at {url} did not become ready")


def start_llama_server(model: str, threads: int):
    port = free_port()
    cmd = [str(LLAMA_SERVER), "-m", model, "-np", str(N_SLOTS), "-c", str(N_SLOTS * CTX_PER_SLOT), "-t", str(threads),
           "--host", "127.0.0.1", "--port", str(port), "--no-webui"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), port, "model"


def start_kolosal(model: str, threads: int, tmp: Path):
    port = free_port()
    cfg = {
        "server": {"host": "127.0.0.1", "port": port, "worker_threads": 32},
        "logging": {"level": "WARNING"},
        "models": [{"id": "bench", "path": model, "load_at_startup": True,
                    "load_params": {"n_ctx": N_SLOTS * CTX_PER_SLOT, "n_parallel": N_SLOTS, "n_threads": threads}}],
    }
    path = tmp / "bench.json"
    path.write_text(json.dumps(cfg))
    cmd = [sys.executable, "-m", "kolosal.server", "--config", str(path)]
    # Serve the same kolosal this script imported.
    env = dict(os.environ, PYTHONPATH=str(Path(kolosal.__file__).resolve().parent.parent))
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp, env=env), port, "bench"


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


def bench_server(name, start, model, args, tmp):
    proc, port, model_name = start(model, args.threads, tmp) if name == "kolosal" else start(model, args.threads)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        one_request(httpx.Client(timeout=60), url, model_name, "warm up", 8)
        results = {}
        for c in args.clients:
            results[c] = load(url, model_name, c, args.seconds, args.max_tokens)
        results["rss_mb"] = psutil.Process(proc.pid).memory_info().rss / 2**20
        return results
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    if not LLAMA_SERVER.exists():
        sys.exit("build llama.cpp's tools first: bash bench/build_llama_tools.sh")
    model = args.model or str(demo_model.ensure(quiet=True))
    with tempfile.TemporaryDirectory() as tmp:
        ref = bench_server("llama-server", start_llama_server, model, args, Path(tmp))
        ours = bench_server("kolosal", start_kolosal, model, args, Path(tmp))
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
