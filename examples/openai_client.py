"""Any OpenAI client works against a kolosal server.

    bash scripts/serve-demo.sh          # in one terminal
    python examples/openai_client.py    # in another
"""
import sys

from openai import OpenAI

base_url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080/v1"
client = OpenAI(base_url=base_url, api_key="unused")
model = client.models.list().data[0].id

reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say hello"}], max_tokens=32)
print(reply.choices[0].message.content, reply.usage)

stream = client.chat.completions.create(model=model, max_tokens=64, stream=True,
                                        messages=[{"role": "user", "content": "Write a haiku about the sea."}])
for chunk in stream:
    if chunk.choices:
        print(chunk.choices[0].delta.content or "", end="", flush=True)
print()

emb = client.embeddings.create(model=model, input=["hello", "world"])
print(len(emb.data), "embeddings of", len(emb.data[0].embedding), "numbers")
