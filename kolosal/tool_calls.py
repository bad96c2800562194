"""Tool calling for chat templates that know nothing of tools.

When a model's template cannot render tools (``supports_tool_calls`` is false
in its capabilities), the tools are described in a system message and the
answer is constrained by a JSON schema to either ``{"tool_calls": [...]}`` or
``{"content": "..."}``; the JSON is then turned back into OpenAI tool calls.
"""
from __future__ import annotations

import json
import re
import uuid
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = ["render_messages", "history_as_text", "answer_schema", "parse_answer", "AnswerStream"]


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


def _arguments(text: Any) -> Any:
    """An earlier call's arguments: parsed when they are JSON, else the text as sent."""
    try:
        return json.loads(text or "{}")
    except (TypeError, ValueError):
        return text


def _as_text(m: Mapping[str, Any]) -> Dict[str, Any]:
    """An earlier tool call or tool result as ordinary text; other messages as they are."""
    role = m.get("role")
    if role == "assistant" and m.get("tool_calls"):
        calls = [{"name": c["function"]["name"], "arguments": _arguments(c["function"].get("arguments"))}
                 for c in m["tool_calls"]]
        return {"role": "assistant", "content": json.dumps({"tool_calls": calls})}
    if role == "tool":
        name = m.get("name") or m.get("tool_call_id") or "tool"
        return {"role": "user", "content": f"Result of {name}: {m.get('content')}"}
    return dict(m)


def history_as_text(messages: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Messages a template without tool support can render when no tools are
    offered (``tool_choice: "none"``): earlier calls and their results stay in
    the conversation as text instead of vanishing."""
    return [_as_text(m) for m in messages]


def render_messages(messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]],
                    required: bool) -> List[Dict[str, Any]]:
    """Messages the plain template can render: the tool list joins the system
    message, earlier tool calls and tool results become ordinary text."""
    out: List[Dict[str, Any]] = []
    system = _system_text(tools, required)
    for m in messages:
        if m.get("role") in ("system", "developer") and not out:
            out.append({"role": "system", "content": f"{m.get('content') or ''}\n\n{system}".strip()})
            continue
        out.append(_as_text(m))
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
    raw = data.get("tool_calls")
    scan = None
    for k, c in enumerate(raw if isinstance(raw, list) else []):
        if isinstance(c, dict) and isinstance(c.get("name"), str):
            if scan is None:
                scan = _Scanner()
                scan.feed(text)
            path = ("tool_calls", k, "arguments")
            # The arguments as the model wrote them, as the stream sends them (AnswerStream).
            args = text[scan.starts[path]:scan.ended[path]] if path in scan.ended \
                else json.dumps(c.get("arguments") or {})
            calls.append({
                "id": "call_" + uuid.uuid4().hex[:24],
                "type": "function",
                "function": {"name": c["name"], "arguments": args},
            })
    if calls:
        return None, calls
    content = data.get("content")
    return (content if isinstance(content, str) else text), []


class _Scanner:
    """Incremental JSON scanner: reports where each value starts and ends,
    with its path (keys and array indices), as text arrives."""

    def __init__(self) -> None:
        self.text = ""
        self._pos = 0
        # frames: [kind, key_or_index, state]; kind "o" (object) or "a" (array)
        self._stack: List[List[Any]] = []
        self._string: Optional[List[Any]] = None  # [start, is_key, escaped]
        self._scalar: Optional[int] = None  # start of a number/literal
        self.starts: Dict[Tuple[Any, ...], int] = {}
        self.ended: Dict[Tuple[Any, ...], int] = {}
        self.done = False
        self.broken = False

    def path(self) -> Tuple[Any, ...]:
        return tuple(f[1] for f in self._stack)

    def _begin_value(self, pos: int) -> None:
        if self._stack:
            top = self._stack[-1]
            if top[0] == "a" and top[2] == "value0":
                top[1] = 0
            top[2] = "after"
        self.starts[self.path()] = pos

    def _end_value(self, end: int) -> None:
        self.ended[self.path()] = end
        if not self._stack:
            self.done = True

    def feed(self, piece: str) -> None:
        self.text += piece
        text = self.text
        while self._pos < len(text) and not self.broken:
            c = text[self._pos]
            i = self._pos
            self._pos += 1
            if self._string is not None:
                if self._string[2]:
                    self._string[2] = False
                elif c == "\\":
                    self._string[2] = True
                elif c == '"':
                    start, is_key, _ = self._string
                    self._string = None
                    if is_key:
                        try:
                            self._stack[-1][1] = json.loads(text[start:i + 1])
                        except ValueError:
                            self.broken = True
                        self._stack[-1][2] = "colon"
                    else:
                        self._end_value(i + 1)
                continue
            if self._scalar is not None:
                if c.isalnum() or c in "+-.":
                    continue
                self._scalar = None
                self._end_value(i)
            if c in " \t\r\n":
                continue
            top = self._stack[-1] if self._stack else None
            if top is not None and top[0] == "o" and top[2] in ("key", "key0"):
                if c == '"':
                    self._string = [i, True, False]
                elif c == "}" and top[2] == "key0":
                    self._close(i)
                else:
                    self.broken = True
                continue
            if top is not None and top[0] == "o" and top[2] == "colon":
                if c == ":":
                    top[2] = "value"
                else:
                    self.broken = True
                continue
            if top is not None and top[2] == "after":
                if c == ",":
                    if top[0] == "o":
                        top[2] = "key"
                    else:
                        top[1] += 1
                        top[2] = "value"
                elif c == ("}" if top[0] == "o" else "]"):
                    self._close(i)
                else:
                    self.broken = True
                continue
            if top is not None and top[0] == "a" and top[2] == "value0" and c == "]":
                self._close(i)
                continue
            if self.done:  # text after the answer (a closing code fence) is not part of it
                self._pos = len(text)
                break
            if not self._stack and c != "{":  # the answer is an object
                self.broken = True
                continue
            # a value starts here
            self._begin_value(i)
            if c == "{":
                self._stack.append(["o", None, "key0"])
            elif c == "[":
                self._stack.append(["a", None, "value0"])
            elif c == '"':
                self._string = [i, False, False]
            else:
                self._scalar = i

    def _close(self, i: int) -> None:
        self._stack.pop()
        self._end_value(i + 1)

    def open_string(self) -> Optional[Tuple[Tuple[Any, ...], int]]:
        """(path, start) of the string value being generated, if any."""
        if self._string is not None and not self._string[1]:
            return self.path(), self._string[0]
        return None


_FENCE = re.compile(r"```[A-Za-z]*(?=[^A-Za-z`])")
_FENCE_START = re.compile(r"`{1,3}[A-Za-z]*")


def _decode_prefix(raw: str) -> str:
    """The text of a JSON string whose closing quote has not arrived yet,
    without an escape sequence cut in half."""
    body = raw[1:]
    cut = len(body)
    k = body.rfind("\\")
    if k >= 0:
        run = len(body[:k + 1]) - len(body[:k + 1].rstrip("\\"))
        if run % 2 == 1 and (k == len(body) - 1 or (body[k + 1] == "u" and len(body) - k < 6)):
            cut = k
    try:
        out = json.loads('"' + body[:cut] + '"')
    except ValueError:
        return ""
    if out and "\ud800" <= out[-1] <= "\udbff":
        out = out[:-1]
    return out


class AnswerStream:
    """Turns the constrained JSON answer (see ``answer_schema``) into
    OpenAI's streaming deltas while it is generated: ``content`` text as it
    arrives; for each tool call a first delta with index, id, type and name
    (arguments ""), then the arguments' JSON text fragment by fragment."""

    def __init__(self) -> None:
        self._scan = _Scanner()
        self._head: Optional[str] = ""  # text before the JSON (None once it has started)
        self.content = ""  # content text sent so far
        self.calls: List[Dict[str, Any]] = []  # calls announced so far (OpenAI shape, arguments as sent)
        self._args_sent: Dict[int, int] = {}  # call index -> end of the argument text sent

    @property
    def broken(self) -> bool:
        """The text stopped following the JSON answer's form."""
        return self._scan.broken

    def feed(self, piece: str) -> List[Dict[str, Any]]:
        """Deltas (``{"content": ...}`` or ``{"tool_calls": [...]}``) for ``piece``."""
        scan = self._scan
        if self._head is not None:  # the answer may open with a Markdown code fence: ```json
            head = (self._head + piece).lstrip()
            fence = _FENCE.match(head)
            if not head or (head.startswith("`") and fence is None and _FENCE_START.fullmatch(head)):
                self._head = head
                return []
            self._head = None
            piece = head[fence.end():] if fence else head
        scan.feed(piece)
        out: List[Dict[str, Any]] = []
        if scan.broken:
            return out
        # content
        s = scan.open_string()
        if s is not None and s[0] == ("content",):
            text = _decode_prefix(scan.text[s[1]:])
        elif ("content",) in scan.ended:
            try:
                text = json.loads(scan.text[scan.starts[("content",)]:scan.ended[("content",)]])
            except ValueError:
                text = self.content
            text = text if isinstance(text, str) else self.content
        else:
            text = self.content
        if len(text) > len(self.content) and text.startswith(self.content):
            out.append({"content": text[len(self.content):]})
            self.content = text
        # tool calls, in order
        while True:
            k = len(self.calls)
            name_path = ("tool_calls", k, "name")
            if name_path not in scan.ended:
                break
            try:
                name = json.loads(scan.text[scan.starts[name_path]:scan.ended[name_path]])
            except ValueError:
                break
            call = {"id": "call_" + uuid.uuid4().hex[:24], "type": "function",
                    "function": {"name": str(name), "arguments": ""}}
            self.calls.append(call)
            out.append({"tool_calls": [{"index": k, "id": call["id"], "type": "function",
                                        "function": {"name": call["function"]["name"], "arguments": ""}}]})
        for k, call in enumerate(self.calls):
            path = ("tool_calls", k, "arguments")
            if path not in scan.starts:
                continue
            start = scan.starts[path]
            end = scan.ended.get(path, len(scan.text))
            sent = self._args_sent.get(k, start)
            if end > sent:
                fragment = scan.text[sent:end]
                self._args_sent[k] = end
                call["function"]["arguments"] += fragment
                out.append({"tool_calls": [{"index": k, "function": {"arguments": fragment}}]})
        return out
