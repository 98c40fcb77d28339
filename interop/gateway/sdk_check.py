"""The agent side of the gateway interop check: official SDKs and HTTP clients, unmodified.

    sdk_check.py [--openai-base URL] [--anthropic-base URL] [--proxy URL --proxy-url URL]
                 [--uds SOCK --uds-base URL] [--api-key tessera-placeholder] [--ca FILE]

  --openai-base     openai 3.x (over httpx2) with base_url URL, e.g. http://127.0.0.1:4180/openai/v1:
                    models.list, chat.completions (plain and stream=True), responses.create
  --anthropic-base  anthropic 2.x with base_url URL, e.g. http://127.0.0.1:4180/anthropic:
                    messages.create, messages.stream
  --proxy/--proxy-url  requests (proxies=) and httpx2 (proxy=) GET the absolute http:// URL
                    --proxy-url through the HTTP proxy --proxy (the gateway's proxy mode)
  --uds/--uds-base  httpx2.HTTPTransport(uds=SOCK): openai's models.list with base_url
                    --uds-base (e.g. http://localhost:PORT/v1) and a plain httpx2 GET of models
  --ca              verify HTTPS base URLs with this CA (to run against upstream.py directly)

Every request carries `X-Interop-Call: <check name>` so the upstream's log can be matched to the
check; every client gets --api-key as its key (the placeholder the gateway must drop). A stream
passes when its text is whole, came in more than one piece and the pieces arrived spread over at
least --stream-spread seconds (a proxy that buffers the response delivers them all at once).
Prints one PASS/FAIL line per check.
"""

import argparse
import json
import ssl
import sys
import time
import traceback

import anthropic
import httpx2
import openai
import requests

TEXT = "Hello from the tessera interop upstream, streamed in pieces."
failed = 0


def check(name, ok, detail=""):
    global failed
    print(("PASS " if ok else "FAIL ") + name + (f" ({detail})" if detail else ""), flush=True)
    if not ok:
        failed += 1


def run(name, fn):
    try:
        ok, detail = fn()
    except Exception as e:  # noqa: BLE001 - any failure is a FAIL line
        traceback.print_exc(file=sys.stderr)
        ok, detail = False, f"{type(e).__name__}: {e}"[:400]
    check(name, ok, detail)


def tag(name):
    return {"X-Interop-Call": name}


def pieces_ok(pieces, times, spread_min):
    text = "".join(pieces)
    spread = (times[-1] - times[0]) if times else 0.0
    ok = text == TEXT and len(pieces) > 1 and spread >= spread_min
    return ok, f"{len(pieces)} pieces over {spread:.2f}s, text {'whole' if text == TEXT else repr(text)}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--openai-base")
    ap.add_argument("--anthropic-base")
    ap.add_argument("--proxy")
    ap.add_argument("--proxy-url")
    ap.add_argument("--uds")
    ap.add_argument("--uds-base")
    ap.add_argument("--api-key", default="tessera-placeholder")
    ap.add_argument("--ca")
    ap.add_argument("--stream-spread", type=float, default=0.3)
    ap.add_argument("--prefix", default="", help="prepended to each check's name")
    args = ap.parse_args()
    key, P = args.api_key, args.prefix
    verify = ssl.create_default_context(cafile=args.ca) if args.ca else True

    def http_client(**kw):
        return httpx2.Client(verify=verify, timeout=30, **kw)

    # --- openai ----------------------------------------------------------------
    if args.openai_base:
        def oa(name):
            return openai.OpenAI(api_key=key, base_url=args.openai_base, default_headers=tag(name),
                                 http_client=http_client(), max_retries=0)

        def models():
            ids = [m.id for m in oa("openai-models").models.list()]
            return "gpt-interop" in ids, f"models {ids}"

        def chat():
            r = oa("openai-chat").chat.completions.create(model="gpt-interop", messages=[{"role": "user", "content": "hi"}])
            return r.choices[0].message.content == TEXT, f"id {r.id}, {r.choices[0].message.content!r}"

        def chat_stream():
            pieces, times = [], []
            stream = oa("openai-chat-stream").chat.completions.create(
                model="gpt-interop", messages=[{"role": "user", "content": "hi"}], stream=True)
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    pieces.append(chunk.choices[0].delta.content)
                    times.append(time.monotonic())
            return pieces_ok(pieces, times, args.stream_spread)

        def responses():
            r = oa("openai-responses").responses.create(model="gpt-interop", input="hi")
            return r.output_text == TEXT, f"id {r.id}, {r.output_text!r}"

        run(f"{P}openai {openai.__version__} models.list via {args.openai_base}", models)
        run(f"{P}openai chat.completions.create", chat)
        run(f"{P}openai chat.completions.create stream=True arrives in pieces", chat_stream)
        run(f"{P}openai responses.create", responses)

    # --- anthropic -------------------------------------------------------------
    if args.anthropic_base:
        def an(name):
            return anthropic.Anthropic(api_key=key, base_url=args.anthropic_base, default_headers=tag(name),
                                       http_client=http_client(), max_retries=0)

        def messages():
            m = an("anthropic-messages").messages.create(model="claude-interop", max_tokens=64,
                                                         messages=[{"role": "user", "content": "hi"}])
            return m.content[0].text == TEXT and m.stop_reason == "end_turn", f"id {m.id}, {m.content[0].text!r}"

        def messages_stream():
            pieces, times = [], []
            with an("anthropic-stream").messages.stream(model="claude-interop", max_tokens=64,
                                                        messages=[{"role": "user", "content": "hi"}]) as stream:
                for text in stream.text_stream:
                    pieces.append(text)
                    times.append(time.monotonic())
                final = stream.get_final_message()
            ok, detail = pieces_ok(pieces, times, args.stream_spread)
            ok = ok and final.stop_reason == "end_turn" and final.content[0].text == TEXT
            return ok, f"{detail}, final stop_reason {final.stop_reason}"

        run(f"{P}anthropic {anthropic.__version__} messages.create via {args.anthropic_base}", messages)
        run(f"{P}anthropic messages.stream arrives in pieces", messages_stream)

    # --- proxy mode: absolute-form http:// requests --------------------------------
    if args.proxy and args.proxy_url:
        def via_requests():
            r = requests.get(args.proxy_url, proxies={"http": args.proxy, "https": args.proxy},
                             headers={**tag("requests-proxy"), "Authorization": f"Bearer {key}"}, timeout=30)
            return r.status_code == 200 and "gpt-interop" in r.text, f"{r.status_code} {r.text[:200]}"

        def via_httpx2():
            with httpx2.Client(proxy=args.proxy, timeout=30) as c:
                r = c.get(args.proxy_url, headers={**tag("httpx2-proxy"), "Authorization": f"Bearer {key}"})
            return r.status_code == 200 and "gpt-interop" in r.text, f"{r.status_code} {r.text[:200]}"

        run(f"{P}requests {requests.__version__} GET {args.proxy_url} through proxy {args.proxy}", via_requests)
        run(f"{P}httpx2 {httpx2.__version__} GET {args.proxy_url} through proxy {args.proxy}", via_httpx2)

    # --- Unix socket: origin-form + Host ------------------------------------------
    if args.uds and args.uds_base:
        def uds_openai():
            client = openai.OpenAI(api_key=key, base_url=args.uds_base, default_headers=tag("openai-uds"), max_retries=0,
                                   http_client=httpx2.Client(transport=httpx2.HTTPTransport(uds=args.uds), timeout=30))
            ids = [m.id for m in client.models.list()]
            return "gpt-interop" in ids, f"models {ids}"

        def uds_httpx2():
            with httpx2.Client(transport=httpx2.HTTPTransport(uds=args.uds), base_url=args.uds_base, timeout=30) as c:
                r = c.get("/models", headers={**tag("httpx2-uds"), "Authorization": f"Bearer {key}"})
            return r.status_code == 200 and "gpt-interop" in r.text, f"{r.status_code} {r.text[:200]}"

        run(f"{P}openai models.list over the Unix socket {args.uds} (base_url {args.uds_base})", uds_openai)
        run(f"{P}httpx2 GET {args.uds_base}/models over the Unix socket", uds_httpx2)

    print(json.dumps({"versions": {"openai": openai.__version__, "anthropic": anthropic.__version__,
                                    "httpx2": httpx2.__version__, "requests": requests.__version__}}), file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
