"""A small support agent that calls a model API through tessera's node gateway, with no key.

    OPENAI_BASE_URL=http://127.0.0.1:4180/openai/v1 python agent.py [--model gpt-4o-mini]

It uses the official openai SDK exactly as it would against api.openai.com, except that the base
URL is the gateway's route and the API key is a placeholder ("tessera"): the gateway attests this
process (uid, and this script's path or digest), drops the placeholder, injects the real key from
a file only tessera can read, and forwards over TLS. So before doing anything, the agent checks
that nothing in its environment looks like an API key and refuses to run if something does: a key
the agent can read is a key a prompt injection can exfiltrate.

Prints the answer of one chat completion, then the streamed answer of a second one and how many
pieces it arrived in. Exits non-zero on any failure (a key in the environment: 3).
"""

import argparse
import os
import sys

from openai import OpenAI

PLACEHOLDER = "tessera"
KEYISH = ("KEY", "TOKEN", "SECRET", "PASSWORD")


def keys_in_environment():
    """The names of the variables that look like a credential (their values are never printed)."""
    found = []
    for name, value in os.environ.items():
        if value.startswith("sk-"):
            found.append(name)
        elif any(k in name.upper() for k in KEYISH) and value not in ("", PLACEHOLDER):
            found.append(name)
    return sorted(found)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.environ.get("OPENAI_MODEL", "gpt-4o-mini"))
    ap.add_argument("--question", default="A customer cannot log in after resetting their password. What should they try first?")
    args = ap.parse_args()

    leaked = keys_in_environment()
    if leaked:
        print(f"refusing to run: the environment holds what looks like a credential: {', '.join(leaked)}", file=sys.stderr)
        print("the gateway injects the key; the agent must not have one", file=sys.stderr)
        return 3

    client = OpenAI(base_url=os.environ["OPENAI_BASE_URL"], api_key=PLACEHOLDER, max_retries=0, timeout=30)
    messages = [
        {"role": "system", "content": "You are a concise support agent."},
        {"role": "user", "content": args.question},
    ]

    reply = client.chat.completions.create(model=args.model, messages=messages)
    print(f"answer: {reply.choices[0].message.content}")

    pieces = []
    stream = client.chat.completions.create(model=args.model, messages=messages, stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    print(f"streamed: {''.join(pieces)}")
    print(f"streamed pieces: {len(pieces)}")
    return 0 if reply.choices[0].message.content and pieces else 1


if __name__ == "__main__":
    sys.exit(main())
