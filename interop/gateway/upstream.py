"""A local HTTPS stand-in for the OpenAI and Anthropic APIs, for the gateway interop check.

    upstream.py --dir DIR [--servers openai,anthropic,api] [--log DIR/upstream.jsonl]
                [--port-file DIR/upstream.ports] [--chunk-delay 0.1]

One listener per name in --servers, each on its own free port of 127.0.0.1 (and the same port of
::1 when it can), so that gateway routes naming `localhost:PORT` tell the services apart;
--port-file gets a "NAME PORT" line each once all listen. Each serves HTTP/1.1 with keep-alive over
TLS (certificate from pki.py, CA in DIR/ca.pem), whatever its name:
  GET  /v1/models               OpenAI model list
  POST /v1/chat/completions     OpenAI chat completion; "stream": true answers SSE chunks
                                (`data: {...}`) ending with `data: [DONE]`
  POST /v1/responses            OpenAI Responses API (non-streaming)
  POST /v1/messages             Anthropic Messages; "stream": true answers the Anthropic event
                                sequence (message_start ... message_stop)
  *    /echo[/...]              the request's method, path and headers as JSON (no key needed)
  GET  /health                  readiness (not recorded)
Streams are sent with chunked transfer encoding, one chunk per event, --chunk-delay seconds apart,
so a client behind a buffering proxy sees them arrive together.

Every request (but /health) is appended to the JSON-lines log: the listener's name, method, path, its headers (names
lower-cased, every value), the body's size and framing, and the connection it came on. The API
endpoints answer 401 like the real services unless the request carries a key that looks real:
`Authorization: Bearer sk-real-...`/`at-...` or `x-api-key: sk-real-...`/`at-...`.
"""

import argparse
import itertools
import json
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pki  # noqa: E402

TEXT = "Hello from the tessera interop upstream, streamed in pieces."
PIECES = [w + " " for w in TEXT.split(" ")[:-1]] + [TEXT.split(" ")[-1]]
MODELS = ["gpt-interop", "gpt-interop-mini"]
REAL_PREFIXES = ("sk-real-", "at-")

_conn_ids = itertools.count(1)
_log_lock = threading.Lock()


def credential_values(headers):
    """The key material a request carries (Authorization's credentials, x-api-key)."""
    out = []
    for v in headers.get_all("Authorization") or []:
        scheme, _, rest = v.partition(" ")
        out.append(rest.strip() if scheme.lower() == "bearer" else v)
    out += headers.get_all("x-api-key") or []
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "interop-upstream/1"
    timeout = 60  # an idle keep-alive connection is closed after this

    def setup(self):
        super().setup()
        self.conn_id = next(_conn_ids)
        self.requests_on_conn = 0

    def log_message(self, fmt, *args):
        sys.stderr.write("upstream: %s %s\n" % (self.address_string(), fmt % args))

    # --- request side -----------------------------------------------------
    def read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return body, "chunked"
                body += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return (self.rfile.read(n) if n else b""), ("content-length" if "Content-Length" in self.headers else "none")

    def record(self, body, framing):
        self.requests_on_conn += 1
        headers = {}
        for k, v in self.headers.items():
            headers.setdefault(k.lower(), []).append(v)
        line = {
            "ts": time.time(),
            "server": self.server.name,
            "conn": self.conn_id,
            "request_on_conn": self.requests_on_conn,
            "peer": "%s:%s" % self.client_address[:2],
            "http_version": self.request_version,
            "method": self.command,
            "path": self.path,
            "headers": headers,
            "body_bytes": len(body),
            "body_framing": framing,
        }
        with _log_lock, open(self.server.log_path, "a") as f:
            f.write(json.dumps(line) + "\n")

    # --- response side ----------------------------------------------------
    def send_json(self, status, obj, extra=()):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", "req_%d_%d" % (self.conn_id, self.requests_on_conn))
        self.send_header("request-id", "req_%d_%d" % (self.conn_id, self.requests_on_conn))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def start_stream(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", "req_%d_%d" % (self.conn_id, self.requests_on_conn))
        self.send_header("request-id", "req_%d_%d" % (self.conn_id, self.requests_on_conn))
        self.end_headers()
        self.wfile.flush()

    def chunk(self, text, delay=True):
        data = text.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()
        if delay and self.server.chunk_delay:
            time.sleep(self.server.chunk_delay)

    def end_stream(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # --- dispatch -----------------------------------------------------------
    def handle_any(self):
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self.read_body()
            return self.send_json(200, {"ok": True})
        body, framing = self.read_body()
        self.record(body, framing)
        if path == "/echo" or path.startswith("/echo/"):
            headers = {}
            for k, v in self.headers.items():
                headers.setdefault(k.lower(), []).append(v)
            return self.send_json(200, {"method": self.command, "path": self.path, "headers": headers, "body_bytes": len(body)})
        routes = {
            ("GET", "/v1/models"): self.models,
            ("POST", "/v1/chat/completions"): self.chat,
            ("POST", "/v1/responses"): self.openai_responses,
            ("POST", "/v1/messages"): self.messages,
        }
        handler = routes.get((self.command, path))
        if handler is None:
            return self.send_json(404, {"error": {"type": "not_found", "message": f"no {self.command} {path}"}})
        if not any(c.startswith(REAL_PREFIXES) for c in credential_values(self.headers)):
            if path == "/v1/messages":
                err = {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}
            else:
                err = {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}}
            return self.send_json(401, err)
        try:
            req = json.loads(body) if body else {}
        except ValueError:
            return self.send_json(400, {"error": {"type": "invalid_request_error", "message": "body is not JSON"}})
        handler(req)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any

    # --- OpenAI ---------------------------------------------------------------
    def models(self, _req):
        self.send_json(200, {"object": "list", "data": [{"id": m, "object": "model", "created": 1700000000, "owned_by": "tessera-interop"} for m in MODELS]})

    def chat(self, req):
        model = req.get("model", MODELS[0])
        created = int(time.time())
        cid = "chatcmpl-interop-%d-%d" % (self.conn_id, self.requests_on_conn)
        if not req.get("stream"):
            return self.send_json(200, {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": TEXT, "refusal": None},
                             "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": 5, "completion_tokens": len(PIECES), "total_tokens": 5 + len(PIECES)},
            })
        self.start_stream()
        base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
        for i, piece in enumerate(PIECES):
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            self.chunk("data: %s\n\n" % json.dumps({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}]}))
        self.chunk("data: %s\n\n" % json.dumps({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}]}), delay=False)
        self.chunk("data: [DONE]\n\n", delay=False)
        self.end_stream()

    def openai_responses(self, req):
        model = req.get("model", MODELS[0])
        rid = "resp_interop_%d_%d" % (self.conn_id, self.requests_on_conn)
        self.send_json(200, {
            "id": rid, "object": "response", "created_at": int(time.time()), "status": "completed", "model": model,
            "output": [{"type": "message", "id": "msg_" + rid, "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": TEXT, "annotations": []}]}],
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "error": None,
            "incomplete_details": None, "instructions": None, "metadata": {}, "temperature": 1.0, "top_p": 1.0,
            "usage": {"input_tokens": 5, "output_tokens": len(PIECES), "total_tokens": 5 + len(PIECES),
                      "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}},
        })

    # --- Anthropic ------------------------------------------------------------
    def messages(self, req):
        model = req.get("model", "claude-interop")
        mid = "msg_interop_%d_%d" % (self.conn_id, self.requests_on_conn)
        usage = {"input_tokens": 5, "output_tokens": len(PIECES)}
        if not req.get("stream"):
            return self.send_json(200, {
                "id": mid, "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": TEXT}],
                "stop_reason": "end_turn", "stop_sequence": None, "usage": usage,
            })

        def event(name, data, delay=True):
            self.chunk("event: %s\ndata: %s\n\n" % (name, json.dumps({"type": name, **data})), delay)

        self.start_stream()
        event("message_start", {"message": {"id": mid, "type": "message", "role": "assistant", "model": model, "content": [],
                                             "stop_reason": None, "stop_sequence": None,
                                             "usage": {"input_tokens": 5, "output_tokens": 1}}}, delay=False)
        event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}, delay=False)
        event("ping", {}, delay=False)
        for piece in PIECES:
            event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}})
        event("content_block_stop", {"index": 0}, delay=False)
        event("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                "usage": {"output_tokens": len(PIECES)}}, delay=False)
        event("message_stop", {}, delay=False)
        self.end_stream()


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # One line, not a traceback: a client that drops the connection or fails the TLS handshake.
        print(f"upstream {self.name}: {client_address}: {sys.exc_info()[1]!r}", file=sys.stderr, flush=True)


class Server6(Server):
    address_family = socket.AF_INET6


def serve(name, host, port, ctx, args, log_path):
    cls = Server6 if ":" in host else Server
    httpd = cls((host, port), Handler)
    # The handshake runs in the connection's thread (on its first read), not in accept().
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
    httpd.name, httpd.log_path, httpd.chunk_delay = name, log_path, args.chunk_delay
    threading.Thread(target=httpd.serve_forever, name=f"{name}@{host}", daemon=True).start()
    return httpd.server_address[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True, help="where ca.pem/server.pem/server.key are (made if absent)")
    ap.add_argument("--servers", default="api", help="comma-separated names: one listener (own port) each")
    ap.add_argument("--log", help="JSON-lines request log (default DIR/upstream.jsonl)")
    ap.add_argument("--port-file", help="'NAME PORT' lines, written once all listen (default DIR/upstream.ports)")
    ap.add_argument("--chunk-delay", type=float, default=0.1, help="seconds between streamed chunks")
    args = ap.parse_args()

    ctx = pki.server_context(args.dir)
    log_path = args.log or os.path.join(args.dir, "upstream.jsonl")
    open(log_path, "a").close()
    lines = []
    for name in args.servers.split(","):
        port = serve(name, "127.0.0.1", 0, ctx, args, log_path)
        try:  # the same port on ::1 too, for a client that resolves localhost to it first
            serve(name, "::1", port, ctx, args, log_path)
        except OSError:
            pass
        lines.append(f"{name} {port}\n")
        print(f"upstream {name}: https://localhost:{port} (CA {os.path.join(args.dir, 'ca.pem')}, log {log_path})", file=sys.stderr, flush=True)
    port_file = args.port_file or os.path.join(args.dir, "upstream.ports")
    with open(port_file + ".tmp", "w") as f:
        f.writelines(lines)
    os.replace(port_file + ".tmp", port_file)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
