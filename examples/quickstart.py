"""Kolosal from Python: completion, streaming, chat with a tool, embeddings.

    python examples/quickstart.py [MODEL.gguf]

Without an argument it uses the demo model (SmolLM2-135M-Instruct), fetched
into ~/.cache/kolosal on first use.
"""
import sys

import kolosal
from kolosal import demo_model

model = sys.argv[1] if len(sys.argv) > 1 else demo_model.ensure(quiet=True)

with kolosal.Engine(model, n_ctx=4096, n_parallel=4) as engine:
    print("model:", engine.metadata["description"], "| context per request:", engine.n_ctx_slot)

    done = engine.complete("The capital of France is", max_tokens=12, temperature=0)
    print("complete:", repr(done.text), done.finish_reason, done.usage)

    print("stream: ", end="")
    for piece in engine.generate("Once upon a time", max_tokens=32, temperature=0.7, seed=1):
        print(piece, end="", flush=True)
    print()

    # Several requests at once share every decode step.
    gens = [engine.generate(f"Fact {i} about the sea:", max_tokens=16) for i in range(4)]
    for g in gens:
        print("batched:", repr(g.wait().text))

    weather = {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    reply = engine.chat([{"role": "user", "content": "What is the weather in Paris?"}],
                        tools=[weather], tool_choice="required", max_tokens=64, temperature=0)
    print("tool call:", reply.tool_calls[0]["function"])

    vectors = engine.embed(["a cat on a mat", "a kitten on a rug", "stock prices fell"])
    print("embeddings:", vectors.shape, "cat~kitten %.3f, cat~stocks %.3f" % (vectors[0] @ vectors[1], vectors[0] @ vectors[2]))
