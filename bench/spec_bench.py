#!/usr/bin/env python3
"""Speculative decoding on an input-copying workload: kolosal's server
against llama-server, each with and without speculation.

Each request asks the model to rewrite a given text (about 150 words) with
one small edit, so most of the answer copies its input: the case n-gram
prompt lookup is made for, and one where a draft model agrees with the
model often. With --clients N, N clients send their requests at the same
time (each its own edit of the text) to a server with N slots, so the
proposals of several requests are checked in shared batches; by default one
client sends its requests one after another. Temperature 0, the same
max_tokens for every setting.

Settings, the same on both servers:
  off    no speculation
  ngram  n-gram lookup (kolosal spec_type ngram; llama-server --spec-type ngram-simple),
         n-gram length --ngram-n, at most --n-draft tokens proposed
  draft  a draft model (default: the model itself, which shows the mechanism
         but cannot be faster; pass a smaller model of the same family with --draft)

Reported per server and setting: generated tokens per second over the
requests (completion tokens / wall time of the requests), the server's own
decode rate, the server process's CPU time per generated token (less
sensitive than wall time to other load on the machine; "vs off" is the
saving), and the accepted share of the proposed tokens.

    python bench/spec_bench.py                        # all settings, both servers
    python bench/spec_bench.py --modes off ngram --requests 5 --out docs/run.md
    python bench/spec_bench.py --clients 4           # four streams at once on four slots
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List

import servers
from kolosal import demo_model

TEXT = (
    "The old lighthouse stood at the edge of the island for more than a hundred years. Every evening the keeper "
    "climbed the narrow stairs, cleaned the great lens and lit the lamp, so that the fishing boats could find their "
    "way home through the fog. In winter the storms were so strong that the windows shook and the waves reached the "
    "door, but the light never went out. The children of the village liked to visit him on Sunday afternoons. He "
    "told them stories about ships that had been lost, about whales that swam past the rocks in spring, and about "
    "the night when the whole sky turned green. When the keeper grew old, the village decided to keep the "
    "lighthouse as a museum, and today visitors still climb the narrow stairs to look at the sea."
)
NEW_WORDS = ["guardian", "warden", "watchman", "caretaker", "captain", "sailor", "painter", "teacher"]


def prompt(client: int) -> str:
    # Each client its own edit, so that no two requests share an answer.
    word = NEW_WORDS[client % len(NEW_WORDS)]
    return (f"Rewrite the following text exactly as it is, changing only the word 'keeper' to '{word}'. "
            "Answer with the rewritten text only.\n\n" + TEXT)


def kolosal_params(mode: str, args: argparse.Namespace) -> Dict[str, Any]:
    if mode == "ngram":
        return {"spec_type": "ngram", "spec_ngram_n": args.ngram_n, "n_draft": args.n_draft}
    if mode == "draft":
        return {"draft_model": args.draft, "n_draft": args.n_draft, "p_min": args.p_min}
    return {}


def llama_args(mode: str, args: argparse.Namespace) -> List[str]:
    if mode == "ngram":
        return ["--spec-type", "ngram-simple", "--spec-ngram-simple-size-n", str(args.ngram_n),
                "--spec-ngram-simple-size-m", str(args.n_draft)]
    if mode == "draft":
        return ["--spec-type", "draft-simple", "-md", args.draft, "--spec-draft-n-max", str(args.n_draft),
                "--spec-draft-n-min", "0", "--spec-draft-p-min", str(args.p_min), "-td", str(args.threads)]
    return []


def run(kind: str, mode: str, args: argparse.Namespace, workdir: Path) -> Dict[str, Any]:
    common = dict(threads=args.threads, slots=args.clients, ctx=args.ctx * args.clients, workdir=workdir)
    extra = {"extra": llama_args(mode, args)} if kind == "llama-server" else {"load_params": kolosal_params(mode, args)}
    with servers.running(kind, args.model, **common, **extra) as srv, servers.client() as http:
        def body(client: int) -> Dict[str, Any]:
            return {"model": srv.model, "messages": [{"role": "user", "content": prompt(client)}], "temperature": 0,
                    "max_tokens": args.max_tokens}

        http.post(srv.url + "/v1/chat/completions", json={**body(0), "max_tokens": 4}).raise_for_status()  # warm-up

        def client(i: int) -> List[Dict[str, Any]]:
            with servers.client() as c:
                out = []
                for _ in range(args.requests):
                    r = c.post(srv.url + "/v1/chat/completions", json=body(i))
                    r.raise_for_status()
                    out.append(r.json())
                return out

        cpu0 = srv.cpu_s()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            results = [data for per_client in pool.map(client, range(args.clients)) for data in per_client]
        wall = time.perf_counter() - t0
        cpu = srv.cpu_s() - cpu0
    tokens, decode_rates, drafted, accepted = 0, [], 0, 0
    for data in results:
        tokens += data["usage"]["completion_tokens"]
        t = data.get("timings") or {}
        if t.get("predicted_ms"):
            decode_rates.append(t["predicted_n"] * 1000.0 / t["predicted_ms"])
        drafted += int(t.get("draft_n") or 0)
        accepted += int(t.get("draft_n_accepted") or 0)
    return {"cpu_ms_per_token": cpu * 1000.0 / tokens if tokens else None, "kind": kind, "mode": mode,
            "tok_s": tokens / wall, "tokens": tokens,
            "decode_tok_s": statistics.median(decode_rates) if decode_rates else None,
            "accepted": accepted / drafted if drafted else None, "drafted": drafted,
            "text": results[-1]["choices"][0]["message"]["content"]}


def table(rows: List[Dict[str, Any]]) -> str:
    base = {r["kind"]: r["tok_s"] for r in rows if r["mode"] == "off"}
    cpu_base = {r["kind"]: r["cpu_ms_per_token"] for r in rows if r["mode"] == "off"}
    out = ["| server | speculation | tokens/s (wall) | vs off | decode tokens/s (server) | server CPU ms / token | "
           "vs off | accepted / proposed |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        speedup = f"{r['tok_s'] / base[r['kind']]:.2f}x" if r["kind"] in base else ""
        dec = f"{r['decode_tok_s']:.1f}" if r["decode_tok_s"] else "n/a"
        acc = f"{r['accepted']:.0%} of {r['drafted']}" if r["accepted"] is not None else ""
        cpu = r["cpu_ms_per_token"]
        cpu_vs = f"{cpu_base[r['kind']] / cpu:.2f}x" if cpu and cpu_base.get(r["kind"]) else ""
        out.append(f"| {r['kind']} | {r['mode']} | {r['tok_s']:.1f} | {speedup} | {dec} | "
                   f"{cpu:.1f} | {cpu_vs} | {acc} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="GGUF file (default: the demo model)")
    ap.add_argument("--draft", default=None, help="draft model GGUF (default: the model itself)")
    ap.add_argument("--modes", nargs="+", choices=("off", "ngram", "draft"), default=["off", "ngram", "draft"])
    ap.add_argument("--servers", nargs="+", choices=servers.KINDS, default=list(servers.KINDS))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--requests", type=int, default=3, help="requests per client")
    ap.add_argument("--clients", type=int, default=1, help="clients sending at once (the servers get as many slots)")
    ap.add_argument("--max-tokens", type=int, default=192)
    ap.add_argument("--n-draft", type=int, default=16, help="most tokens proposed per step")
    ap.add_argument("--ngram-n", type=int, default=4, help="n-gram length of the lookup")
    ap.add_argument("--p-min", type=float, default=0.0, help="draft model: least top-token probability")
    ap.add_argument("--ctx", type=int, default=2048, help="context per slot")
    ap.add_argument("--out", type=Path, help="append the markdown table to this file")
    args = ap.parse_args()
    args.model = args.model or str(demo_model.ensure(quiet=True))
    args.draft = args.draft or args.model
    if "llama-server" in args.servers:
        servers.require_llama_server()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.servers:
            for mode in args.modes:
                row = run(kind, mode, args, Path(tmp))
                rows.append(row)
                print(f"{kind:12} {mode:6} {row['tok_s']:7.1f} tok/s  accepted {row['accepted']}", file=sys.stderr)
    load = os.getloadavg()
    md = (f"{table(rows)}\n\n{args.clients} client(s) at once on as many slots, {args.requests} requests each "
          f"of up to {args.max_tokens} tokens, one after another per client, "
          f"{args.threads} threads, n_draft {args.n_draft}, n-gram {args.ngram_n}, p_min {args.p_min}; "
          f"draft model: {'the model itself' if args.draft == args.model else Path(args.draft).name}; "
          f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; measured: {servers.git_head()}.")
    print(md)
    if args.out:
        with args.out.open("a") as f:
            f.write(md + "\n")


if __name__ == "__main__":
    main()
