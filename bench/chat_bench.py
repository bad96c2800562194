#!/usr/bin/env python3
"""Multi-turn chat: kolosal's server against llama-server, in one run.

N conversations talk at once, each with its own system prompt (about 300
tokens); each runs its turns one after the other, sending the whole history
(system prompt, earlier user messages and the answers it got) plus a new user
message. Answers stream, at temperature 0, with a fixed length (max_tokens
with ignore_eos), so both servers do the same work. With more conversations
than slots, a server keeps up only if it does not lose (or can restore) a
conversation's cached prompt while other conversations use the slots.

For every point of the grid (conversations x slots) each server is started
fresh with the same model, slot count, context and threads, used, and
stopped; the servers never run together. Reported per server: total time
until the last conversation finished, time to first content token (TTFT)
p50/p90 over all requests, the share of prompt tokens the server said came
from its cache (usage.prompt_tokens_details.cached_tokens), and the CPU time
the server process used (less sensitive than wall time to other load on the
machine).

    python bench/chat_bench.py                       # 8 and 32 conversations on 4 and 8 slots
    python bench/chat_bench.py --quick               # 8 conversations on 4 slots
    python bench/chat_bench.py --conversations 16 --slots 4 --turns 6 --out docs/run.md
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import httpx

import servers
from kolosal import demo_model

# Plain words, almost all one token with their leading space, so that the
# system prompts have a predictable length and share no text past their
# first few words.
WORDS = """time year people way day man thing woman life child world school state family student group
country problem hand part place case week company system program question work government number night
point home water room mother area money story fact month lot right study book eye job word business issue
side kind head house service friend father power hour game line end member law car city community name
president team minute idea kid body information back parent face others level office door health person
art war history party result change morning reason research girl guy moment air teacher force education
river mountain garden window kitchen music paper letter table chair bread market street village island
forest ocean summer winter autumn spring bird horse train bridge castle ship engine doctor lawyer farmer
painter singer writer soldier king queen prince garden flower tree stone metal glass silver gold copper
green blue red yellow black white brown small large quiet loud bright dark warm cold early late simple
strong gentle careful honest clever patient polite friendly calm brave proud kind""".split()

TOPICS = ["the weather", "a good book", "cooking dinner", "learning music", "a trip to the sea",
          "planting a garden", "old castles", "the night sky", "training a dog", "building a bridge"]


def system_prompt(conv: int, run_id: str, n_words: int) -> str:
    rng = random.Random(f"{run_id}/{conv}/system")
    sentences = []
    words = 0
    while words < n_words:
        sentence = [rng.choice(WORDS) for _ in range(11)]
        sentences.append(" ".join(sentence).capitalize() + ".")
        words += len(sentence)
    return (f"You are assistant {conv} of run {run_id}. Keep these notes in mind when you answer: "
            + " ".join(sentences))


def user_message(conv: int, turn: int, run_id: str) -> str:
    rng = random.Random(f"{run_id}/{conv}/{turn}/user")
    return (f"Question {turn + 1}: tell me something about {rng.choice(TOPICS)} and "
            f"the {rng.choice(WORDS)} near the {rng.choice(WORDS)}.")


@dataclass
class Outcome:
    total_s: float = 0.0
    ttft: List[float] = field(default_factory=list)
    ttft_by_turn: Dict[int, List[float]] = field(default_factory=dict)
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: List[int] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    cpu_s: float = 0.0       # CPU time the server process used during the workload
    rounds: List[float] = field(default_factory=list)   # total time of each round
    cpu_rounds: List[float] = field(default_factory=list)
    load: List[float] = field(default_factory=list)   # 1-minute load average before and after each round

    def merge(self, other: "Outcome") -> None:
        """Pool another round: TTFTs and tokens add up, the total is the median round."""
        self.rounds.append(other.total_s)
        self.total_s = statistics.median(self.rounds)
        self.cpu_rounds.append(other.cpu_s)
        self.cpu_s = statistics.median(self.cpu_rounds)
        self.ttft += other.ttft
        for turn, ts in other.ttft_by_turn.items():
            self.ttft_by_turn.setdefault(turn, []).extend(ts)
        self.prompt_tokens += other.prompt_tokens
        self.cached_tokens += other.cached_tokens
        self.completion_tokens += other.completion_tokens
        self.errors += other.errors
        self.load += other.load


def stream_chat(client: httpx.Client, server: servers.Server, messages: list, max_tokens: int):
    """One streamed chat completion: (ttft seconds, text, usage)."""
    body = {"model": server.model, "messages": messages, "max_tokens": max_tokens, "temperature": 0,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    ttft: Optional[float] = None
    parts: List[str] = []
    usage: dict = {}
    with client.stream("POST", server.url + "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            r.read()
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:300]}")
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            if data.get("error"):
                raise RuntimeError(f"stream error: {data['error']}")
            for choice in data.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    if ttft is None:
                        ttft = time.perf_counter() - t0
                    parts.append(piece)
            if data.get("usage"):
                usage = data["usage"]
    if ttft is None:
        ttft = time.perf_counter() - t0
    return ttft, "".join(parts), usage


def run_workload(server: servers.Server, n_conv: int, turns: int, max_tokens: int, system_words: int,
                 run_id: str) -> Outcome:
    out = Outcome()
    lock = threading.Lock()
    start = threading.Barrier(n_conv + 1)

    def conversation(conv: int) -> None:
        messages = [{"role": "system", "content": system_prompt(conv, run_id, system_words)}]
        with servers.client() as client:
            start.wait()
            for turn in range(turns):
                messages.append({"role": "user", "content": user_message(conv, turn, run_id)})
                try:
                    ttft, text, usage = stream_chat(client, server, messages, max_tokens)
                except (httpx.HTTPError, RuntimeError, ValueError) as e:
                    with lock:
                        out.errors.append(f"conversation {conv} turn {turn}: {e}")
                    return
                messages.append({"role": "assistant", "content": text})
                with lock:
                    out.ttft.append(ttft)
                    out.ttft_by_turn.setdefault(turn, []).append(ttft)
                    out.prompt_tokens += usage.get("prompt_tokens", 0)
                    out.cached_tokens += (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
                    out.completion_tokens.append(usage.get("completion_tokens", -1))

    threads = [threading.Thread(target=conversation, args=(i,)) for i in range(n_conv)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    out.total_s = time.perf_counter() - t0
    return out


def quantile(values: List[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def measure(kind: str, model: str, n_conv: int, slots: int, args, workdir: Path, run_id: str) -> Outcome:
    http_threads = n_conv + 8
    extra = {"extra": args.llama_arg} if kind == "llama-server" else {"load_params": args.kolosal_param}
    with servers.running(kind, model, threads=args.threads, slots=slots, ctx=args.ctx, workdir=workdir,
                         http_threads=http_threads, **extra) as server:
        with servers.client() as client:
            stream_chat(client, server, [{"role": "user", "content": "Say hello."}], 4)
        cpu0 = server.cpu_s()
        load0 = os.getloadavg()[0]
        outcome = run_workload(server, n_conv, args.turns, args.max_tokens, args.system_words, run_id)
        outcome.cpu_s = server.cpu_s() - cpu0
        outcome.load = [load0, os.getloadavg()[0]]
        if outcome.errors:
            print(f"{kind}: {len(outcome.errors)} conversation(s) failed, first: {outcome.errors[0]}\n"
                  f"server log tail:\n{server.log_tail()}", file=sys.stderr)
    return outcome


def describe(kind: str, n_conv: int, slots: int, o: Outcome, args) -> str:
    wrong_len = [n for n in o.completion_tokens if n != args.max_tokens]
    first = o.ttft_by_turn.get(0, [])
    later = [t for turn, ts in o.ttft_by_turn.items() if turn > 0 for t in ts]
    line = (f"  {kind:12s} {n_conv:3d} conversations / {slots} slots: total {o.total_s:6.1f} s, "
            f"TTFT p50 {quantile(o.ttft, .5) * 1000:6.0f} ms p90 {quantile(o.ttft, .9) * 1000:6.0f} ms "
            f"(turn 1 p50 {quantile(first, .5) * 1000:.0f} ms, later turns p50 {quantile(later, .5) * 1000:.0f} ms), "
            f"cached {cached_share(o):.0%} of {o.prompt_tokens} prompt tokens, server CPU {o.cpu_s:.1f} s, "
            f"load average {' -> '.join(f'{x:.1f}' for x in o.load)}")
    if wrong_len:
        line += f"; {len(wrong_len)} answers not {args.max_tokens} tokens: {sorted(set(wrong_len))}"
    if o.errors:
        line += f"; {len(o.errors)} FAILED conversations"
    return line


def cached_share(o: Outcome) -> float:
    return o.cached_tokens / o.prompt_tokens if o.prompt_tokens else 0.0


def table(results: Dict[tuple, Dict[str, Outcome]], kinds: List[str], args) -> str:
    both = len(kinds) == 2
    head = ["conversations", "slots"]
    for k in kinds:
        head.append(f"{k} total s")
    if both:
        head.append("speed (llama-server s / kolosal s)")
    names = " / ".join(kinds)
    head += [f"TTFT p50 ms ({names})", f"TTFT p90 ms ({names})", f"cached prompt tokens ({names})",
             f"server CPU s ({names})", "load average"]
    if both:
        head.append("goal met")
    rows = ["| " + " | ".join(head) + " |", "| " + " | ".join(["---:"] * len(head)) + " |"]
    for (n_conv, slots), res in results.items():
        cells = [str(n_conv), str(slots)]
        for k in kinds:
            cells.append(f"{res[k].total_s:.1f}" + (" (failed)" if res[k].errors else ""))
        if both:
            ref, ours = res["llama-server"], res["kolosal"]
            cells.append(f"{ref.total_s / ours.total_s:.2f}x")
        cells.append(" / ".join(f"{quantile(res[k].ttft, .5) * 1000:.0f}" for k in kinds))
        cells.append(" / ".join(f"{quantile(res[k].ttft, .9) * 1000:.0f}" for k in kinds))
        cells.append(" / ".join(f"{cached_share(res[k]):.0%}" for k in kinds))
        cells.append(" / ".join(f"{res[k].cpu_s:.1f}" for k in kinds))
        loads = [x for k in kinds for x in res[k].load]
        cells.append(f"{min(loads):.1f}-{max(loads):.1f}" if loads else "")
        if both:
            ok = (ref.total_s / ours.total_s >= 1.0 and quantile(ours.ttft, .9) <= quantile(ref.ttft, .9)
                  and not ours.errors)
            cells.append("yes" if ok else "no")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def parse_params(items: List[str]) -> dict:
    params = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="GGUF file (default: the demo model)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--conversations", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--slots", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=32, help="answer length (ignore_eos)")
    ap.add_argument("--system-words", type=int, default=250, help="system prompt length in words (~300 tokens)")
    ap.add_argument("--ctx", type=int, default=8192, help="context of each server, shared by its slots")
    ap.add_argument("--points", nargs="+", metavar="CONVxSLOTS",
                    help="measure only these points (e.g. 8x4 32x8) instead of conversations x slots")
    ap.add_argument("--quick", action="store_true", help="only 8 conversations on 4 slots")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds per point, alternating which server goes first; the median total is reported")
    ap.add_argument("--servers", nargs="+", choices=servers.KINDS, default=list(servers.KINDS))
    ap.add_argument("--kolosal-param", action="append", default=[], metavar="KEY=VALUE",
                    help="extra load_params for kolosal's model (JSON values), repeatable")
    ap.add_argument("--llama-arg", action="append", default=[], metavar="ARG",
                    help="extra llama-server argument, repeatable (e.g. --llama-arg=--cache-ram --llama-arg=0)")
    ap.add_argument("--out", type=Path, help="append the markdown table to this file")
    ap.add_argument("--label", help="what is measured, printed instead of the git commit")
    args = ap.parse_args()
    args.kolosal_param = parse_params(args.kolosal_param)
    points = [(c, s) for s in args.slots for c in args.conversations]
    if args.points:
        try:
            points = [tuple(int(x) for x in p.lower().split("x")) for p in args.points]
        except ValueError:
            ap.error("--points takes CONVxSLOTS, e.g. 8x4")
    if args.quick:
        points = [(8, 4)]
    if "llama-server" in args.servers:
        servers.require_llama_server()
    model = args.model or str(demo_model.ensure(quiet=True))
    kinds = [k for k in servers.KINDS if k in args.servers]

    measured = args.label or servers.git_head()
    print(f"kolosal: {measured}; {args.turns} turns, {args.max_tokens}-token answers, ~{args.system_words}-word "
          f"system prompts, ctx {args.ctx}, {args.threads} threads", file=sys.stderr)
    results: Dict[tuple, Dict[str, Outcome]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n_conv, slots in points:
            run_id = f"{n_conv}x{slots}"
            res = {kind: Outcome() for kind in kinds}
            for rnd in range(args.repeat):
                # Rounds alternate which server goes first.
                for kind in (kinds if rnd % 2 == 0 else kinds[::-1]):
                    one = measure(kind, model, n_conv, slots, args, Path(tmp), run_id)
                    print(describe(kind, n_conv, slots, one, args), file=sys.stderr)
                    res[kind].merge(one)
            results[(n_conv, slots)] = res
    md = table(results, kinds, args)
    if args.repeat > 1:
        md = (f"Totals are the median of {args.repeat} rounds; TTFT and cache shares pool all rounds; "
              f"totals of each round: " + "; ".join(
                  f"{n}x{sl} " + ", ".join(f"{k} " + "/".join(f"{t:.1f}" for t in res[k].rounds) for k in kinds)
                  for (n, sl), res in results.items()) + "\n\n" + md)
    print(md)
    if args.out:
        with args.out.open("a") as f:
            f.write(f"\nkolosal {measured}: `{' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}`\n\n{md}\n")
    if any(o.errors for res in results.values() for o in res.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
