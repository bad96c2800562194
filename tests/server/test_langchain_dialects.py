"""LangChain's ``ChatAnthropic`` and ``ChatOllama`` pointed at the live
server, as apps write them: invoke, stream, bind_tools with a tool-message
loop, with_structured_output, and the token usage LangChain derives from
each dialect (a repeated prompt, found in the prefix cache, counts the same
as a fresh one). Answers come from the tiny demo model, so tool calls are
forced and the tests check what LangChain receives."""
from __future__ import annotations

from typing import Any, List

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langchain_ollama import ChatOllama

from .conftest import MODEL_ID
from .langchain_support import Country, get_weather, joined, with_tool_results


@pytest.fixture(scope="module")
def claude(live_server):
    return ChatAnthropic(model=MODEL_ID, base_url=live_server.base_url, api_key="unused", max_retries=0,
                         timeout=60, temperature=0, max_tokens=96)


@pytest.fixture(scope="module")
def llama(live_server):
    return ChatOllama(model=MODEL_ID, base_url=live_server.base_url, temperature=0, num_predict=96)


@pytest.fixture(params=["anthropic", "ollama"])
def chat(request, claude, llama):
    return claude if request.param == "anthropic" else llama


def test_invoke_and_stream(chat):
    prompt = [SystemMessage("Be brief."), HumanMessage("Count from one to five.")]
    msg = chat.invoke(prompt)
    assert isinstance(msg, AIMessage) and msg.text
    chunks = list(chat.stream(prompt))
    assert len(chunks) > 2 and all(isinstance(c, AIMessageChunk) for c in chunks)
    total = joined(chunks)
    assert total.text == msg.text  # greedy: the same answer
    for k in ("input_tokens", "output_tokens", "total_tokens"):
        assert total.usage_metadata[k] == msg.usage_metadata[k], (total.usage_metadata, msg.usage_metadata)
    assert msg.usage_metadata["output_tokens"] > 0


def test_usage_counts_the_prompt_once(claude):
    """Anthropic's ``input_tokens`` leaves out the tokens read from the cache
    (LangChain adds ``cache_read_input_tokens`` back): a repeated prompt, whole
    or streamed, counts what ``count_tokens`` counts, never more."""
    prompt = [SystemMessage("You are terse."), HumanMessage("Name a colour.")]
    counted = claude.get_num_tokens_from_messages(prompt)  # POST /v1/messages/count_tokens
    for _ in range(2):  # the second finds the prompt in the prefix cache
        usage = claude.invoke(prompt).usage_metadata
        assert usage["input_tokens"] == counted, usage
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    streamed = joined(list(claude.stream(prompt))).usage_metadata
    assert streamed["input_tokens"] == counted and streamed["input_token_details"]["cache_read"] > 0, streamed


def test_bind_tools_with_a_tool_message_loop(chat):
    forced = chat.bind_tools([get_weather], tool_choice="get_weather")
    messages: List[Any] = [HumanMessage("What is the weather in Paris?")]
    ai = forced.invoke(messages)
    assert ai.tool_calls and ai.tool_calls[0]["name"] == "get_weather"
    assert isinstance(ai.tool_calls[0]["args"].get("city"), str)
    streamed = joined(list(forced.stream(messages)))
    assert streamed.tool_calls == [{**ai.tool_calls[0], "id": streamed.tool_calls[0]["id"]}]
    answer = chat.bind_tools([get_weather]).invoke(with_tool_results(messages, ai))
    assert isinstance(answer, AIMessage) and (answer.text or answer.tool_calls)


@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
def test_structured_output(chat, method):
    structured = chat.with_structured_output(Country, method=method, include_raw=True)
    out = structured.invoke("France: the country and its capital.")
    assert out["parsing_error"] is None, out["raw"]
    assert isinstance(out["parsed"], Country) and out["parsed"].name and out["parsed"].capital
