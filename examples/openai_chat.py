"""Ask the escalating router a question with the OpenAI client, whole and streamed.

`/v1/chat/completions` speaks OpenAI's wire format: any OpenAI client works. `model="auto"` is the
tenant's ladder (cheapest tier first, escalating when unsure); the reply's `supportgraph` object says
which tier answered, every attempt, the cost, and whether the answer was verified against the help center.

    .venv/bin/supportgraph ingest serve_app/samples/helpcenter --tenant acme
    .venv/bin/supportgraph serve &
    .venv/bin/python examples/openai_chat.py --api-key "$KEY"     # a key of tenant acme
"""

from __future__ import annotations

import argparse
import os

from openai import OpenAI


def ask(base_url: str, tenant: str, question: str, api_key: str | None = None) -> dict:
    """One whole answer and one streamed; returns the whole answer's `supportgraph` object."""
    client = OpenAI(
        base_url=f"{base_url}/v1",
        api_key=api_key or "unused",  # sent as Authorization: Bearer <key>
        default_headers={"X-Tenant-Id": tenant},
        timeout=120,
    )
    messages = [{"role": "user", "content": question}]
    reply = client.chat.completions.create(model="auto", messages=messages)
    routing = reply.model_extra["supportgraph"]
    print(reply.choices[0].message.content)
    tiers = [a["tier"] for a in routing["attempts"]]
    print(f"-- answered by {routing['tier']}; attempts {tiers}; cost ${routing['cost_usd']}")

    streamed = []
    for chunk in client.chat.completions.create(model="auto", messages=messages, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            streamed.append(chunk.choices[0].delta.content)
    print(f"-- streamed {len(streamed)} pieces, {sum(map(len, streamed))} characters")
    return routing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--tenant", default="acme")
    parser.add_argument("--api-key", default=os.environ.get("SUPPORTGRAPH_API_KEY"))
    parser.add_argument("question", nargs="?", default="How do I reset a forgotten password?")
    args = parser.parse_args()
    ask(args.base_url, args.tenant, args.question, args.api_key)


if __name__ == "__main__":
    main()
