"""A real MCP client (the Python SDK: Client over streamable_http_client and httpx2) run as the
agent: it exchanges the user's token for a delegated token on tessera's token socket (RFC 8693,
stdlib HTTP over the Unix socket), then calls the MCP server through the guard with it. Prints
one JSON object: the tools listed, what search_flights returned, how purchase_flight failed.

    mcp_client.py TOKEN_SOCKET USER_TOKEN AUDIENCE URL
"""

import asyncio
import http.client
import json
import socket
import sys
import urllib.parse

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

token_sock, user_token, audience, url = sys.argv[1:5]


class Unix(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=20)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.unix_path)


def exchange():
    form = urllib.parse.urlencode({
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": user_token,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "audience": audience,
        "scope": "flight:search",
    })
    c = Unix(token_sock)
    c.request("POST", "/token", body=form, headers={"Content-Type": "application/x-www-form-urlencoded"})
    r = c.getresponse()
    body = json.loads(r.read().decode())
    if r.status != 200:
        raise SystemExit(f"token exchange: {r.status} {body}")
    return body["access_token"]


def leaves(e):
    """The innermost exceptions of an exception (group)."""
    inner = getattr(e, "exceptions", None)
    return [x for sub in inner for x in leaves(sub)] if inner else [e]


def text(result):
    return " ".join(getattr(c, "text", "") for c in result.content)


async def main():
    token = exchange()
    out = {"token_chars": len(token)}
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            listed = await client.list_tools()
            out["tools"] = [t.name for t in listed.tools]
            r = await client.call_tool("search_flights", {"origin": "SFO", "destination": "JFK"})
            out["search"] = {"is_error": bool(r.is_error), "text": text(r)}
            try:
                r = await client.call_tool("purchase_flight", {"flight": "AF006", "amount": 900})
                out["purchase"] = {"is_error": bool(r.is_error), "text": text(r)}
            except Exception as e:  # the guard's JSON-RPC error surfaces as an exception
                out["purchase_error"] = f"{type(e).__name__}: {e}"
    # Without a token, the guard answers 401 before the server sees anything.
    try:
        async with Client(streamable_http_client(url)) as client:
            await client.list_tools()
            out["no_token"] = "served"
    except BaseException as e:  # noqa: BLE001 (an ExceptionGroup from the task group)
        out["no_token"] = "; ".join(f"{type(x).__name__}: {x}" for x in leaves(e))[:300]
    print(json.dumps(out))


asyncio.run(main())
