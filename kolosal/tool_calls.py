"""Tool calling for chat templates that know nothing of tools.

When a model's template cannot render tools (``supports_tool_calls`` is false
in its capabilities), the tools are described in a system message and the
answer is constrained by a JSON schema to either ``{"tool_calls": [...]}`` or
``{"content": "..."}``; the JSON is then turned back into OpenAI tool calls.
"""
from __future__ import annotations

import json
import uuid
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = ["render_messages", "answer_schema", "parse_answer"]


def _functions(tools: Sequence[Mapping[str, Any]]) -> List[Mapping[str, Any]]:
    return [t.get("function") or {} for t in tools]


def _system_text(tools: Sequence[Mapping[str, Any]], required: bool) -> str:
    lines = ["You can call these tools:"]
    for fn in _functions(tools):
        params = json.dumps(fn.get("parameters") or {"type": "object", "properties": {}})
        lines.append(f"- {fn.get('name')}: {fn.get('description', '')} Parameters (JSON schema): {params}")
    lines.append('To call tools, answer with JSON: {"tool_calls": [{"name": "<tool name>", "arguments": {...}}]}.')
    if not required:
        lines.append('To answer directly, reply with JSON: {"content": "<your answer>"}.')
    return "\n".join(lines)


def render_messages(messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]],
                    required: bool) -> List[Dict[str, Any]]:
    """Messages the plain template can render: the tool list joins the system
    message, earlier tool calls and tool results become ordinary text."""
    out: List[Dict[str, Any]] = []
    system = _system_text(tools, required)
    for m in messages:
        role = m.get("role")
        if role in ("system", "developer") and not out:
            out.append({"role": "system", "content": f"{m.get('content') or ''}\n\n{system}".strip()})
            continue
        if role == "assistant" and m.get("tool_calls"):
            calls = [{"name": c["function"]["name"], "arguments": json.loads(c["function"].get("arguments") or "{}")}
                     for c in m["tool_calls"]]
            out.append({"role": "assistant", "content": json.dumps({"tool_calls": calls})})
            continue
        if role == "tool":
            name = m.get("name") or m.get("tool_call_id") or "tool"
            out.append({"role": "user", "content": f"Result of {name}: {m.get('content')}"})
            continue
        out.append(dict(m))
    if not out or out[0]["role"] != "system":
        out.insert(0, {"role": "system", "content": system})
    return out


def answer_schema(tools: Sequence[Mapping[str, Any]], required: bool, parallel: bool) -> Dict[str, Any]:
    calls = [
        {
            "type": "object",
            "properties": {
                "name": {"const": fn.get("name")},
                "arguments": fn.get("parameters") or {"type": "object", "properties": {}},
            },
            "required": ["name", "arguments"],
        }
        for fn in _functions(tools)
    ]
    call_list: Dict[str, Any] = {"type": "array", "items": {"anyOf": calls} if len(calls) > 1 else calls[0], "minItems": 1}
    if not parallel:
        call_list["maxItems"] = 1
    with_calls = {"type": "object", "properties": {"tool_calls": call_list}, "required": ["tool_calls"]}
    if required:
        return with_calls
    answer = {"type": "object", "properties": {"content": {"type": "string"}}, "required": ["content"]}
    return {"anyOf": [with_calls, answer]}


def parse_answer(text: str) -> Tuple[Optional[str], List[Dict[str, Any]]]:
    """(content, tool_calls) from the constrained JSON answer; text that is not
    such JSON is returned as content."""
    try:
        data = json.loads(text)
    except ValueError:
        return text, []
    if not isinstance(data, dict):
        return text, []
    calls = []
    for c in data.get("tool_calls") or []:
        if isinstance(c, dict) and isinstance(c.get("name"), str):
            calls.append({
                "id": "call_" + uuid.uuid4().hex[:24],
                "type": "function",
                "function": {"name": c["name"], "arguments": json.dumps(c.get("arguments") or {})},
            })
    if calls:
        return None, calls
    content = data.get("content")
    return (content if isinstance(content, str) else text), []
