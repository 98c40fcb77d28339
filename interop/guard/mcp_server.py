"""A real MCP server (the Python SDK's MCPServer, streamable HTTP) with two tools, behind the
guard. It logs every HTTP request's headers and every tool that ran, one JSON line each.

    mcp_server.py --port-file FILE --log FILE
"""

import argparse
import json
import socket

import uvicorn
from mcp.server.mcpserver import MCPServer

ap = argparse.ArgumentParser()
ap.add_argument("--port-file", required=True)
ap.add_argument("--log", required=True)
args = ap.parse_args()


def record(entry):
    with open(args.log, "a") as f:
        f.write(json.dumps(entry) + "\n")


server = MCPServer("flights")


@server.tool()
def search_flights(origin: str, destination: str) -> str:
    """Search flights between two airports."""
    record({"tool": "search_flights", "origin": origin, "destination": destination})
    return f"3 flights from {origin} to {destination}: AF006, DL264, UA57"


@server.tool()
def purchase_flight(flight: str, amount: int) -> str:
    """Buy a ticket (charges the card on file)."""
    record({"tool": "purchase_flight", "flight": flight, "amount": amount})
    return f"purchased {flight} for {amount}"


app = server.streamable_http_app()


async def logged(scope, receive, send):
    if scope["type"] == "http":
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        record({"method": scope["method"], "path": scope["path"], "headers": headers})
    await app(scope, receive, send)


sock = socket.socket()
sock.bind(("127.0.0.1", 0))
port = sock.getsockname()[1]
with open(args.port_file + ".tmp", "w") as f:
    f.write(str(port))
import os  # noqa: E402

os.replace(args.port_file + ".tmp", args.port_file)
config = uvicorn.Config(logged, log_level="warning", lifespan="on")
uvicorn.Server(config).run(sockets=[sock])
