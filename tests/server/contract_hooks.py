"""schemathesis hooks for the contract test, also usable with the CLI:

    SCHEMATHESIS_HOOKS=tests.server.contract_hooks PYTHONPATH=. \\
        schemathesis run http://127.0.0.1:8080/openapi.json --checks all -H "Authorization: Bearer KEY"

They tell the generator what JSON Schema cannot say: which strings are GBNF
grammars (``"format": "gbnf"``), and two references between fields that
the server checks (with a 400, as OpenAI does)."""
from __future__ import annotations

from typing import Any, Dict

import schemathesis
from hypothesis import strategies as st

# "format": "gbnf" strings are grammars; the document cannot say what makes one valid, the generator is told.
schemathesis.openapi.format("gbnf", st.sampled_from(['root ::= "ok"', "root ::= [a-z]+", 'root ::= ("yes" | "no")']))


@schemathesis.hook
def map_case(ctx: Any, case: Any) -> Any:
    """References between fields, which JSON Schema cannot state (the server
    answers 400 for them, as OpenAI does): a named ``tool_choice`` names one
    of ``tools``; a Responses ``function_call_output`` answers a
    ``function_call`` earlier in ``input``. Schema-valid bodies are made to keep them."""
    meta = case.meta
    if isinstance(case.body, dict) and meta is not None and meta.generation.mode.is_positive:
        case.body = _answer_known_calls(_name_a_tool(case.body)) if case.path.endswith("/responses") \
            else _name_a_tool(case.body)
    return case


def _answer_known_calls(body: Dict[str, Any]) -> Dict[str, Any]:
    if not isinstance(body.get("input"), list):
        return body
    items, seen = [], set()
    for item in body["input"]:
        if isinstance(item, dict) and item.get("type") == "function_call" and isinstance(item.get("call_id"), str):
            seen.add(item["call_id"])
        elif isinstance(item, dict) and item.get("type") == "function_call_output" and \
                isinstance(item.get("call_id"), str) and item["call_id"] and item["call_id"] not in seen:
            items.append({"type": "function_call", "call_id": item["call_id"], "name": "lookup", "arguments": "{}"})
            seen.add(item["call_id"])
        items.append(item)
    return {**body, "input": items}


def _name_a_tool(body: Dict[str, Any]) -> Dict[str, Any]:
    choice, tools = body.get("tool_choice"), body.get("tools")
    if not (isinstance(choice, dict) and isinstance(tools, list) and tools and isinstance(tools[0], dict)):
        return body
    first = tools[0].get("function", tools[0])
    name = first.get("name") if isinstance(first, dict) else None
    if not isinstance(name, str):
        return body
    if isinstance(choice.get("function"), dict):  # chat: {"type": "function", "function": {"name": ...}}
        return {**body, "tool_choice": {**choice, "function": {**choice["function"], "name": name}}}
    return {**body, "tool_choice": {**choice, "name": name}}  # responses: {"type": "function", "name": ...}
