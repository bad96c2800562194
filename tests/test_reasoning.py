"""Reasoning: a think block the chat template knows goes to
``reasoning_content`` (reasoning_format auto/deepseek) or stays in the
content (none); chat_template_kwargs and reasoning_effort reach the template.

The demo model has no thinking template of its own: it gets Qwen3's (same
ChatML tokens), and a grammar makes it write a think block, then an answer."""
from __future__ import annotations

from pathlib import Path

import pytest

import kolosal
from kolosal.errors import InvalidParameterError

THINKING_TEMPLATE = Path(__file__).resolve().parents[1] / "vendor/llama.cpp/models/templates/Qwen-Qwen3-0.6B.jinja"
# A think block of a few lowercase words, then a capitalised answer.
THINK_GRAMMAR = r'''root ::= "<think>\n" words "\n</think>\n\n" [A-Z] [a-z]+ (" " [a-z]+){1,3}
words ::= [a-z]+ (" " [a-z]+){1,3}'''
HI = [{"role": "user", "content": "Say hello."}]
GREEDY = {"temperature": 0.0, "max_tokens": 40, "grammar": THINK_GRAMMAR}


@pytest.fixture(scope="module")
def thinker(model_path):
    with kolosal.Engine(model_path, n_ctx=1024, n_parallel=2, n_threads=1, seed=1,
                        chat_template=THINKING_TEMPLATE.read_text()) as e:
        yield e


def test_think_block_goes_to_reasoning_content(thinker):
    out = thinker.chat(HI, **GREEDY)
    assert out.text.startswith("<think>\n") and "</think>" in out.text
    msg = out.message
    thought, _, answer = out.text[len("<think>\n"):].partition("</think>")
    assert msg["reasoning_content"].strip() == thought.strip() and thought.strip()
    assert msg["content"] == answer.strip()
    assert "<think>" not in msg["content"] and "</think>" not in msg["content"]


def test_deepseek_is_the_same_as_auto(thinker):
    auto = thinker.chat(HI, reasoning_format="auto", **GREEDY).message
    deepseek = thinker.chat(HI, reasoning_format="deepseek", **GREEDY).message
    assert auto == deepseek and auto["reasoning_content"]


def test_reasoning_format_none_keeps_the_block_in_content(thinker):
    out = thinker.chat(HI, reasoning_format="none", **GREEDY)
    assert "reasoning_content" not in out.message
    assert out.message["content"] == out.text.strip() and out.message["content"].startswith("<think>")


def test_engine_default_reasoning_format(model_path):
    with kolosal.Engine(model_path, n_ctx=512, n_parallel=1, n_threads=1, reasoning_format="none",
                        chat_template=THINKING_TEMPLATE.read_text()) as e:
        assert not e.apply_chat_template(HI).extract_reasoning
        assert e.apply_chat_template(HI, reasoning_format="auto").extract_reasoning


def test_streaming_reads_reasoning_then_content(thinker):
    gen = thinker.chat(HI, stream=True, **GREEDY)
    seen = []
    text = ""
    for piece in gen:
        text += piece
        part = gen.partial_message(text)
        seen.append((part["reasoning_content"], part["content"]))
    final = gen.message
    # Reasoning grows first while the content is empty, then the content grows; never any tag text.
    first_content = next(i for i, (_, c) in enumerate(seen) if c)
    assert all(not c for _, c in seen[:first_content]) and any(r for r, _ in seen[:first_content])
    assert all(r == seen[first_content][0] for r, _ in seen[first_content:])
    assert all("<" not in r + c for r, c in seen)
    assert seen[-1][1] == final["content"]


def test_enable_thinking_reaches_the_template(thinker):
    on = thinker.apply_chat_template(HI).prompt
    off = thinker.apply_chat_template(HI, chat_template_kwargs={"enable_thinking": False}).prompt
    assert "<think>" not in on and off == on + "<think>\n\n</think>\n\n"
    # reasoning_effort "none" turns thinking off as well (llama-server's mapping).
    assert thinker.apply_chat_template(HI, reasoning_effort="none").prompt == off
    # Other efforts reach the template as a variable; this one does not read it.
    assert thinker.apply_chat_template(HI, reasoning_effort="high").prompt == on


def test_template_kwargs_are_template_variables(model_path):
    template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% if greeting is defined %}{{ greeting }}{% endif %}"
                "{% if reasoning_effort is defined %}[{{ reasoning_effort }}]{% endif %}{% endif %}")
    with kolosal.Engine(model_path, n_ctx=512, n_parallel=1, n_threads=1, chat_template=template,
                        chat_template_kwargs={"greeting": "Hi!"}) as e:
        assert e.apply_chat_template(HI).prompt.endswith("assistant\nHi!")
        assert e.apply_chat_template(HI, chat_template_kwargs={"greeting": "Yo"}).prompt.endswith("assistant\nYo")
        assert e.apply_chat_template(HI, reasoning_effort="low").prompt.endswith("assistant\nHi![low]")


@pytest.mark.parametrize("kwargs, param", [
    ({"reasoning_format": "deep"}, "reasoning_format"),
    ({"chat_template_kwargs": ["enable_thinking"]}, "chat_template_kwargs"),
    ({"chat_template_kwargs": {"enable_thinking": "yes"}}, "chat_template_kwargs"),
    ({"reasoning_effort": 3}, "reasoning_effort"),
])
def test_bad_reasoning_options(thinker, kwargs, param):
    with pytest.raises(InvalidParameterError) as exc:
        thinker.apply_chat_template(HI, **kwargs)
    assert exc.value.param == param


def test_bad_engine_reasoning_format(model_path):
    with pytest.raises(InvalidParameterError) as exc:
        kolosal.Engine(model_path, n_ctx=512, n_parallel=1, reasoning_format="think")
    assert exc.value.param == "reasoning_format"
