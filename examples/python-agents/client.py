"""A Python agent calling an mTLS server with its own SVID, admitting only the expected server ID.

    python client.py --socket /run/tessera/api.sock --connect 127.0.0.1:9444 \
        --server-id spiffe://example.org/agents/server [--message hi]

Prints the server's answer and exits 0; exits 1 if the handshake or authorization fails.
"""

from __future__ import annotations

import argparse
import socket
import ssl
import sys

from spiffe_tls import PeerRefused, SpiffeTls


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--connect", required=True)
    ap.add_argument("--server-id", action="append", required=True, help="server SPIFFE ID (repeatable)")
    ap.add_argument("--message", default="ping")
    args = ap.parse_args()

    tls = SpiffeTls(args.socket, args.server_id, server=False)
    host, port = args.connect.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            # server_hostname only fills SNI: the server is authenticated by its SPIFFE ID.
            with tls.context().wrap_socket(raw, server_hostname="spiffe-peer") as s:
                peer = tls.verify_peer(s)
                s.sendall(f"{args.message}\n".encode())
                answer = s.makefile("rb").readline().decode()
                if not answer:
                    raise PeerRefused("server closed the connection (it refused our SVID?)")
                print(answer, end="", flush=True)
                print(f"(server {peer})", file=sys.stderr)
                return 0
    except (ssl.SSLError, PeerRefused, OSError) as e:
        print(f"client: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        tls.close()


if __name__ == "__main__":
    sys.exit(main())
