#!/usr/bin/env python3
"""Greedy parity: the same requests at temperature 0 give the same text on
kolosal's server and on llama-server.

Both servers load the same model with the same slots, context and threads
and run one after the other. Every case is sent to each; the answer text
(chat content and tool calls, or completion text), finish reason and token
counts are compared, and a diff is printed for any case whose text differs.

    python bench/parity.py [--slots 4] [--markdown] [--case NAME ...] [--shared-server]

Exit status is 1 when a case's text differs, other than the differences
listed in EXPECTED (intended behaviour, with the reason).
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import httpx

import servers
from kolosal import demo_model

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city"]}}}
TIME_TOOL = {"type": "function", "function": {
    "name": "get_time", "description": "Current local time of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
PERSON_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                                  "hobbies": {"type": "array", "items": {"type": "string"},
                                                              "maxItems": 3}},
                 "required": ["name", "age", "hobbies"], "additionalProperties": False}

# SmolLM2's own template has no tool support: llama-server then answers in
# plain text and ignores the tools, while kolosal offers them in its generic
# JSON tool-call format (by design). Tool cases therefore run with a template
# that has native tool calls, given to both servers.
TOOLS_TEMPLATE = servers.ROOT / "vendor" / "llama.cpp" / "models" / "templates" / "Qwen-Qwen2.5-7B-Instruct.jinja"


def user(text: str, **body: Any) -> Dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **body}


PERSON_FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON_SCHEMA}}
BOTH_TOOLS = [WEATHER_TOOL, TIME_TOOL]
HISTORY = [
    {"role": "system", "content": "You are a concise assistant who answers in one sentence."},
    {"role": "user", "content": "I am planning a trip to Japan."},
    {"role": "assistant", "content": "That sounds wonderful; spring is a lovely time to visit."},
    {"role": "user", "content": "Which city should I see first?"},
    {"role": "assistant", "content": "Start with Tokyo for its mix of old temples and modern streets."},
    {"role": "user", "content": "And what should I eat there?"},
]
TOOL_HISTORY = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
        "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": 18, \"sky\": \"cloudy\"}"},
]

# (name, endpoint, chat template file or None for the model's own, body
# without "model"); temperature 0 is added to every body.
CASES: List[tuple] = [
    ("chat plain", "chat", None, user("What is the capital of France?", max_tokens=64)),
    ("chat long answer", "chat", None, user("Write a short story about a lighthouse keeper.", max_tokens=200)),
    ("chat streamed", "chat", None, user("Name three colors of the rainbow.", max_tokens=64, stream=True)),
    ("chat system + multi-turn history", "chat", None, {"messages": HISTORY, "max_tokens": 80}),
    ("chat non-ASCII", "chat", None, user("Écris une phrase sur la mer, s'il te plaît.", max_tokens=64)),
    ("chat stop strings", "chat", None, user("Tell me about the moon.", max_tokens=128, stop=[". ", "\n"])),
    ("chat stop string streamed", "chat", None,
     user("Tell me about the moon.", max_tokens=128, stop=["Earth"], stream=True)),
    ("chat json_object", "chat", None, user("Describe a cat as JSON with a name and an age.", max_tokens=96,
                                            response_format={"type": "json_object"})),
    ("chat json_schema", "chat", None, user("Invent a person.", max_tokens=128, response_format=PERSON_FORMAT)),
    ("chat json_schema streamed", "chat", None,
     user("Invent a person.", max_tokens=128, response_format=PERSON_FORMAT, stream=True)),
    ("chat tools auto", "chat", TOOLS_TEMPLATE,
     user("What is the weather in Paris?", max_tokens=128, tools=BOTH_TOOLS, tool_choice="auto")),
    ("chat tools required", "chat", TOOLS_TEMPLATE,
     user("What time is it in Tokyo?", max_tokens=128, tools=BOTH_TOOLS, tool_choice="required")),
    ("chat tools named", "chat", TOOLS_TEMPLATE,
     user("Is it raining in Berlin?", max_tokens=128, tools=BOTH_TOOLS,
          tool_choice={"type": "function", "function": {"name": "get_weather"}})),
    ("chat tools required, one tool", "chat", TOOLS_TEMPLATE,
     user("What is the weather in Paris?", max_tokens=128, tools=[WEATHER_TOOL], tool_choice="required")),
    ("chat tools streamed", "chat", TOOLS_TEMPLATE,
     user("What is the weather in Paris?", max_tokens=128, tools=[WEATHER_TOOL], tool_choice="required",
          stream=True)),
    ("chat tool result in history", "chat", TOOLS_TEMPLATE,
     {"messages": TOOL_HISTORY, "max_tokens": 64, "tools": [WEATHER_TOOL]}),
    ("chat plain, tool template", "chat", TOOLS_TEMPLATE, user("What is the capital of France?", max_tokens=64)),
    ("completion", "completion", None, {"prompt": "Once upon a time, in a small village by the sea,",
                                        "max_tokens": 64}),
    ("completion streamed", "completion", None, {"prompt": "The three primary colors are", "max_tokens": 48,
                                                 "stream": True}),
    ("completion stop strings", "completion", None, {"prompt": "A list of fruits:\n1. Apple\n2.", "max_tokens": 64,
                                                     "stop": ["\n4.", "Banana"]}),
    ("completion grammar", "completion", None, {"prompt": "Is the sky blue? Answer:", "max_tokens": 8,
                                                "grammar": "root ::= \" yes\" | \" no\""}),
    ("completion ignore_eos", "completion", None, {"prompt": "The end.", "max_tokens": 40, "ignore_eos": True}),
]


# Differences that are intended, with the reason; they do not fail the run.
EXPECTED = {
    "chat tools named": "llama-server reads a tool_choice object as \"auto\" and offers every tool; kolosal offers "
                        "only the named function, with tool_choice \"required\"",
}


def request(client: httpx.Client, server: servers.Server, endpoint: str, body: Dict[str, Any]) -> Dict[str, Any]:
    """The answer of one case: text, tool calls, finish reason, usage (or the error)."""
    path = "/v1/chat/completions" if endpoint == "chat" else "/v1/completions"
    body = {"model": server.model, "temperature": 0, **body}
    if body.get("stream"):
        body["stream_options"] = {"include_usage": True}
        return _streamed(client, server.url + path, body, endpoint)
    r = client.post(server.url + path, json=body)
    if r.status_code != 200:
        return {"error": f"HTTP {r.status_code}: {r.text[:400]}"}
    data = r.json()
    choice = data["choices"][0]
    if endpoint == "chat":
        msg = choice["message"]
        text = msg.get("content") or ""
        calls = [(c["function"]["name"], c["function"]["arguments"]) for c in msg.get("tool_calls") or []]
    else:
        text, calls = choice["text"], []
    return {"text": text, "tool_calls": calls, "finish_reason": choice.get("finish_reason"),
            "usage": _usage(data.get("usage"))}


def _streamed(client: httpx.Client, url: str, body: Dict[str, Any], endpoint: str) -> Dict[str, Any]:
    parts: List[str] = []
    calls: Dict[int, List[str]] = {}
    finish: Optional[str] = None
    usage = None
    with client.stream("POST", url, json=body) as r:
        if r.status_code != 200:
            r.read()
            return {"error": f"HTTP {r.status_code}: {r.text[:400]}"}
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            if data.get("error"):
                return {"error": f"stream error: {data['error']}"}
            for choice in data.get("choices") or []:
                if endpoint == "chat":
                    delta = choice.get("delta") or {}
                    parts.append(delta.get("content") or "")
                    for tc in delta.get("tool_calls") or []:
                        call = calls.setdefault(tc.get("index", 0), ["", ""])
                        fn = tc.get("function") or {}
                        call[0] += fn.get("name") or ""
                        call[1] += fn.get("arguments") or ""
                else:
                    parts.append(choice.get("text") or "")
                finish = choice.get("finish_reason") or finish
            if data.get("usage"):
                usage = data["usage"]
    return {"text": "".join(parts), "tool_calls": [tuple(calls[k]) for k in sorted(calls)],
            "finish_reason": finish, "usage": _usage(usage)}


def _usage(usage: Optional[Dict[str, Any]]) -> Optional[tuple]:
    return (usage["prompt_tokens"], usage["completion_tokens"]) if usage else None


def rendered(answer: Dict[str, Any]) -> str:
    """The answer as the text that is compared: content, then one line per tool call."""
    if "error" in answer:
        return f"<error> {answer['error']}"
    lines = [answer["text"]]
    lines += [f"<tool call> {name} {args}" for name, args in answer["tool_calls"]]
    return "\n".join(lines)


def collect(kind: str, model: str, cases: List[tuple], args, workdir: Path) -> Dict[str, Dict[str, Any]]:
    """The answers of ``kind`` to every case. By default every case gets a
    freshly started server: a prompt prefix cached by an earlier request is
    reused with a different batch split, which can flip a near tie in greedy
    decoding (seen with llama-server as well as kolosal)."""
    answers: Dict[str, Dict[str, Any]] = {}
    groups = [[c] for c in cases] if not args.shared_server else \
        [[c for c in cases if c[2] == t] for t in dict.fromkeys(c[2] for c in cases)]
    for group in groups:
        template = group[0][2]
        if kind == "llama-server":
            extra = {"extra": ["--jinja", *(["--chat-template-file", str(template)] if template else [])]}
        else:
            extra = {"load_params": {"chat_template": template.read_text()} if template else {}}
        with servers.running(kind, model, threads=args.threads, slots=args.slots, ctx=args.ctx, workdir=workdir,
                             **extra) as server:
            with servers.client() as client:
                for name, endpoint, _, body in group:
                    answers[name] = request(client, server, endpoint, body)
    return answers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="GGUF file (default: the demo model)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=8192)
    ap.add_argument("--shared-server", action="store_true",
                    help="send all cases of a chat template to one server instead of a fresh server per case")
    ap.add_argument("--case", action="append", help="run only the cases with these names")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    ap.add_argument("--save", type=Path, help="write both servers' answers to this JSON file")
    ap.add_argument("--label", help="what is measured, printed instead of the git commit")
    args = ap.parse_args()
    servers.require_llama_server()
    cases = [c for c in CASES if not args.case or c[0] in args.case]
    if not cases:
        sys.exit(f"no such case; cases: {', '.join(c[0] for c in CASES)}")
    model = args.model or str(demo_model.ensure(quiet=True))
    print(f"kolosal: {args.label or servers.git_head()}; {args.slots} slots, ctx {args.ctx}, {args.threads} threads\n")
    with tempfile.TemporaryDirectory() as tmp:
        ref = collect("llama-server", model, cases, args, Path(tmp))
        ours = collect("kolosal", model, cases, args, Path(tmp))

    if args.save:
        args.save.write_text(json.dumps({"llama-server": ref, "kolosal": ours}, indent=1, ensure_ascii=False))
    rows, diffs, unexpected = [], [], 0
    for name, endpoint, template, body in cases:
        a, b = ref[name], ours[name]
        same_text = rendered(a) == rendered(b) and "error" not in a and "error" not in b
        same_finish = a.get("finish_reason") == b.get("finish_reason")
        same_usage = a.get("usage") == b.get("usage")
        rows.append((name, same_text, same_finish, same_usage, a, b))
        if not same_text:
            diff = difflib.unified_diff(rendered(a).splitlines(), rendered(b).splitlines(), "llama-server",
                                        "kolosal", lineterm="")
            req = json.dumps({"endpoint": endpoint, **({"chat_template": template.name} if template else {}), **body})
            why = f"expected: {EXPECTED[name]}\n\n" if name in EXPECTED else ""
            unexpected += name not in EXPECTED
            diffs.append(f"### {name}\n\n{why}request: `{req}`\n\n```diff\n" + "\n".join(diff) + "\n```")

    def yn(flag: bool, name: str) -> str:
        return "yes" if flag else "no (expected)" if name in EXPECTED else "**no**"

    if args.markdown:
        print("| case | identical text | finish reason (llama-server / kolosal) | prompt, completion tokens "
              "(llama-server / kolosal) |")
        print("| --- | :---: | --- | --- |")
        for name, same_text, same_finish, same_usage, a, b in rows:
            print(f"| {name} | {yn(same_text, name)} | {a.get('finish_reason')} / {b.get('finish_reason')}"
                  f"{'' if same_finish else ' (differs)'} | {a.get('usage')} / {b.get('usage')}"
                  f"{'' if same_usage else ' (differs)'} |")
    else:
        for name, same_text, same_finish, same_usage, a, b in rows:
            text = "same" if same_text else "DIFFERS (expected)" if name in EXPECTED else "DIFFERS"
            print(f"{name:36s} text {text:18s} finish {a.get('finish_reason')} / {b.get('finish_reason')}  "
                  f"tokens {a.get('usage')} / {b.get('usage')}")
    n_same = sum(r[1] for r in rows)
    print(f"\n{n_same} of {len(rows)} cases give identical text; {unexpected} differ unexpectedly.")
    if diffs:
        print("\n" + "\n\n".join(diffs))
    if unexpected:
        sys.exit(1)


if __name__ == "__main__":
    main()
