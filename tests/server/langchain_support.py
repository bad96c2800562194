"""What the LangChain tests share: a tool, a structured-output schema, and
the steps every dialect's test repeats (joining streamed chunks, answering
the model's tool calls)."""
from __future__ import annotations

import json
from typing import Any, List

from langchain_core.messages import AIMessage, AIMessageChunk, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field


@tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    return json.dumps({"city": city, "sky": "sunny", "celsius": 21})


class Country(BaseModel):
    """A country and its capital."""

    name: str = Field(description="the country")
    capital: str = Field(description="its capital city")


def joined(chunks: List[AIMessageChunk]) -> AIMessageChunk:
    """The streamed chunks added up, as LangChain merges them."""
    total = chunks[0]
    for c in chunks[1:]:
        total += c
    return total


def with_tool_results(messages: List[Any], ai: AIMessage) -> List[Any]:
    """``messages`` followed by the model's turn and a ToolMessage answering each of its calls."""
    return [*messages, ai, *(ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])
                             for call in ai.tool_calls)]
