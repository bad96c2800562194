"""LangChain's ``ChatOpenAI`` pointed at the live server: invoke, stream,
bind_tools with a tool-message loop, and with_structured_output (JSON
schema and function calling). Answers come from the tiny demo model, so
tool calls are forced and the tests check what LangChain receives."""
from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

from .conftest import MODEL_ID
from .langchain_support import Country, get_weather, joined, with_tool_results


def openai_chat(live_server, **options) -> ChatOpenAI:
    return ChatOpenAI(model=MODEL_ID, base_url=live_server.v1, api_key="unused", max_retries=0, timeout=60,
                      temperature=0, max_tokens=64, **options)


@pytest.fixture(scope="module")
def llm(live_server):
    return openai_chat(live_server, stream_usage=True)


def test_invoke(llm):
    msg = llm.invoke([SystemMessage("Be brief."), HumanMessage("Name a color.")])
    assert isinstance(msg, AIMessage) and isinstance(msg.content, str) and msg.content
    assert msg.response_metadata["model_name"] == MODEL_ID
    assert msg.usage_metadata["output_tokens"] > 0
    assert msg.usage_metadata["total_tokens"] == msg.usage_metadata["input_tokens"] + msg.usage_metadata["output_tokens"]


def test_stream(llm):
    chunks = list(llm.bind(max_tokens=12).stream("Count from one to five."))
    assert len(chunks) > 2 and all(isinstance(c, AIMessageChunk) for c in chunks)
    total = joined(chunks)
    assert total.content
    assert total.response_metadata.get("finish_reason") in ("stop", "length")
    assert total.usage_metadata and total.usage_metadata["output_tokens"] > 0  # stream_usage sends include_usage


def test_bind_tools_with_a_tool_message_loop(llm):
    forced = llm.bind_tools([get_weather], tool_choice="get_weather")
    messages = [HumanMessage("What is the weather in Paris?")]
    ai = forced.invoke(messages)
    assert ai.tool_calls and ai.tool_calls[0]["name"] == "get_weather"
    assert isinstance(ai.tool_calls[0]["args"]["city"], str) and ai.tool_calls[0]["id"]
    final = llm.bind_tools([get_weather]).invoke(with_tool_results(messages, ai))
    assert isinstance(final, AIMessage)
    # The model may answer or call again; either way LangChain got a well-formed message.
    assert final.tool_calls or isinstance(final.content, str)
    for call in final.tool_calls:
        assert call["name"] == "get_weather" and isinstance(call["args"], dict)


def test_streamed_tool_call_chunks(llm):
    forced = llm.bind_tools([get_weather], tool_choice="any")
    chunks = list(forced.stream("Weather in Rome?"))
    pieces = [tc for c in chunks for tc in c.tool_call_chunks]
    assert pieces[0]["name"] == "get_weather" and pieces[0]["id"]
    assert len(pieces) >= 3  # the arguments arrive in fragments
    (call,) = joined(chunks).tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_with_structured_output(llm, method):
    structured = llm.with_structured_output(Country, method=method)
    out = structured.invoke("Describe France.")
    assert isinstance(out, Country) and out.name and out.capital


def test_responses_api_mode(live_server):
    """``use_responses_api=True`` sends LangChain's requests to /v1/responses."""
    llm = openai_chat(live_server, use_responses_api=True)
    msg = llm.invoke("Name a color.")
    assert isinstance(msg, AIMessage) and msg.text
    assert msg.response_metadata["id"].startswith("resp")
    chunks = list(llm.stream("Name a fruit."))
    assert len(chunks) > 2
    ai = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("Weather in Paris?")
    assert ai.tool_calls and ai.tool_calls[0]["name"] == "get_weather"
    assert isinstance(llm.invoke(with_tool_results([HumanMessage("Weather in Paris?")], ai)), AIMessage)
