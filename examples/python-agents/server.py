"""A Python agent serving mTLS with its own SVID, admitting only allowed client SPIFFE IDs.

    python server.py --socket /run/tessera/api.sock --listen 127.0.0.1:9444 \
        --allow spiffe://example.org/agents/client [--once]

Prints `ready <host:port> as <own id>` once it accepts connections. For each admitted client,
reads one line and answers `hello <client SPIFFE ID>: <line>`.
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
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--allow", action="append", required=True, help="client SPIFFE ID (repeatable)")
    ap.add_argument("--once", action="store_true", help="exit after one client")
    args = ap.parse_args()

    tls = SpiffeTls(args.socket, args.allow, server=True)
    host, port = args.listen.rsplit(":", 1)
    with socket.create_server((host, int(port))) as listener:
        h, p = listener.getsockname()[:2]
        print(f"ready {h}:{p} as {tls.spiffe_id}", flush=True)
        while True:
            conn, remote = listener.accept()
            conn.settimeout(10)
            ok = False
            try:
                # A fresh context per connection: the newest SVID and bundle.
                with tls.context().wrap_socket(conn, server_side=True) as s:
                    peer = tls.verify_peer(s)
                    line = s.makefile("rb").readline().decode().rstrip("\n")
                    s.sendall(f"hello {peer}: {line}\n".encode())
                    print(f"served {peer}", flush=True)
                    ok = True
            except (ssl.SSLError, PeerRefused, OSError) as e:
                print(f"refused {remote[0]}:{remote[1]}: {e}", file=sys.stderr, flush=True)
            if args.once:
                tls.close()
                return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
