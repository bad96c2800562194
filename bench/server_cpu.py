#!/usr/bin/env python3
"""CPU time of kolosal's server per streamed token.

Starts ``python -m kolosal.server`` with one model (the demo model unless
--model is given), then drives a fixed workload through the openai SDK:
streaming chat completions at temperature 0 with a fixed length
(max_tokens with ignore_eos), a few at a time, plus multi-turn
conversations that send their growing history back. Reports the server
process's CPU time (user + system) per generated token and per request,
split into the engine's decode thread and the rest (the HTTP path:
Waitress, Flask, request parsing, streaming; the main thread is Waitress'
I/O loop); CPU time, unlike wall time,
stays meaningful on a machine busy with other work.

    python bench/server_cpu.py                 # 16 single-turn + 4x4 multi-turn, 4 slots
    python bench/server_cpu.py --repeat 3      # the same, 3 fresh servers, medians
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Tuple

import openai
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from servers import running  # noqa: E402


def thread_cpu(pid: int) -> Dict[int, Tuple[float, float]]:
    """(user, system) CPU seconds of each thread."""
    return {t.id: (t.user_time, t.system_time) for t in psutil.Process(pid).threads()}


def stream_chat(client: openai.OpenAI, messages: List[Dict[str, str]], max_tokens: int) -> Tuple[str, int]:
    text, tokens = [], 0
    stream = client.chat.completions.create(model="bench", messages=messages, max_tokens=max_tokens, temperature=0,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return "".join(text), tokens


def workload(url: str, requests: int, conversations: int, turns: int, max_tokens: int, parallel: int) -> Tuple[int, int]:
    """Returns (completion tokens, requests) the workload asked for."""
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
    topics = ["rivers", "bread", "clocks", "bridges", "owls", "glass", "tides", "maps"]

    def single(i: int) -> int:
        return stream_chat(client, [{"role": "user", "content": f"Tell me about {topics[i % len(topics)]} ({i})."}],
                           max_tokens)[1]

    def conversation(i: int) -> List[int]:
        """The completion tokens of each turn."""
        history = [{"role": "system", "content": f"You are a patient guide to {topics[i % len(topics)]}."}]
        counts = []
        for t in range(turns):
            history.append({"role": "user", "content": f"Question {t + 1}: tell me one more thing."})
            text, n = stream_chat(client, history, max_tokens)
            history.append({"role": "assistant", "content": text})
            counts.append(n)
        return counts

    with ThreadPoolExecutor(parallel) as pool:
        counts = list(pool.map(single, range(requests)))  # completion tokens per request
        counts += [n for ns in pool.map(conversation, range(conversations)) for n in ns]
    return sum(counts), len(counts)


def one_run(args: argparse.Namespace) -> Dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, \
            running("kolosal", args.model, threads=args.threads, slots=args.slots, ctx=args.ctx,
                    workdir=Path(tmp), http_threads=args.http_threads) as server:
        pid = server.proc.pid
        # One warm-up request, outside the measurement.
        workload(server.url, 1, 0, 0, 8, 1)
        before = thread_cpu(pid)
        tokens, requests = workload(server.url, args.requests, args.conversations, args.turns, args.max_tokens,
                                    args.slots)
        after = thread_cpu(pid)
    zero = (0.0, 0.0)
    used = {tid: sum(after[tid]) - sum(before.get(tid, zero)) for tid in after}
    system = {tid: after[tid][1] - before.get(tid, zero)[1] for tid in after}
    total = sum(used.values())
    # The engine decodes on its own thread(s); with n_threads 1 that is the one
    # busiest thread. Everything else is the HTTP path.
    decode_tid = max(used, key=used.__getitem__)
    decode = used[decode_tid]
    http = total - decode
    http_system = sum(v for tid, v in system.items() if tid != decode_tid)
    main = used.get(pid, 0.0)  # Waitress' I/O loop
    return {"tokens": tokens, "requests": requests, "cpu_s": total, "decode_s": decode, "http_s": http,
            "main_s": main, "http_system_s": http_system,
            "cpu_ms_per_token": 1000 * total / tokens, "http_ms_per_token": 1000 * http / tokens,
            "http_ms_per_request": 1000 * http / requests}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="GGUF model (default: the demo model)")
    p.add_argument("--slots", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="engine compute threads")
    p.add_argument("--http-threads", type=int, default=8)
    p.add_argument("--ctx", type=int, default=4096)
    p.add_argument("--requests", type=int, default=16, help="single-turn streaming requests")
    p.add_argument("--conversations", type=int, default=4)
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--repeat", type=int, default=1, help="fresh servers; medians are reported")
    args = p.parse_args()
    if args.model is None:
        from kolosal.demo_model import ensure
        args.model = str(ensure(quiet=True))
    runs = []
    for r in range(args.repeat):
        res = one_run(args)
        runs.append(res)
        print(f"run {r + 1}: {res['tokens']} tokens, {res['requests']} requests, server CPU {res['cpu_s']:.2f} s "
              f"(decode thread {res['decode_s']:.2f} s, rest {res['http_s']:.2f} s of which system {res['http_system_s']:.2f} s, "
              f"main thread {res['main_s']:.2f} s): "
              f"{res['cpu_ms_per_token']:.2f} ms/token, HTTP path {res['http_ms_per_token']:.2f} ms/token, "
              f"{res['http_ms_per_request']:.1f} ms/request", flush=True)
    if args.repeat > 1:
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"median of {args.repeat}: {med['cpu_ms_per_token']:.2f} ms/token "
              f"(HTTP path {med['http_ms_per_token']:.2f} ms/token, {med['http_ms_per_request']:.1f} ms/request)")


if __name__ == "__main__":
    main()
