"""Show the HTTP/2 request headers py-spiffe (through grpcio) sends over a Unix socket.

A diagnostic, not part of run.sh: it documents the `:authority` trap (grpcio
sends the percent-encoded socket path, which the h2 crate rejects by default).
It listens on a Unix socket as a bare HTTP/2 peer, lets an unmodified
py-spiffe WorkloadApiClient call FetchX509SVID on it, decodes the first
HEADERS frame with hpack and prints every header.

usage: <venv>/bin/pip install hpack
       <venv>/bin/python interop/python/capture_authority.py [SOCKET_PATH]
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import tempfile
import threading

from hpack import Decoder

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADERS, SETTINGS = 0x1, 0x4


def frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def capture(listener: socket.socket, out: list) -> None:
    conn, _ = listener.accept()
    conn.sendall(frame(SETTINGS, 0, 0))
    buf = b""

    def need(n: int) -> None:
        nonlocal buf
        while len(buf) < n:
            data = conn.recv(65536)
            if not data:
                raise EOFError("client closed the connection")
            buf += data

    need(len(PREFACE))
    assert buf.startswith(PREFACE), buf[: len(PREFACE)]
    buf = buf[len(PREFACE):]
    decoder = Decoder()
    while True:
        need(9)
        length, ftype, flags = int.from_bytes(buf[:3], "big"), buf[3], buf[4]
        need(9 + length)
        payload, buf = buf[9 : 9 + length], buf[9 + length :]
        if ftype == SETTINGS and not flags & 0x1:
            conn.sendall(frame(SETTINGS, 0x1, 0))  # ACK
        elif ftype == HEADERS:
            if flags & 0x8:  # PADDED
                payload = payload[1 : len(payload) - payload[0]]
            if flags & 0x20:  # PRIORITY
                payload = payload[5:]
            out.extend((k.decode(), v.decode()) for k, v in decoder.decode(payload, raw=True))
            conn.close()
            return


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(tempfile.mkdtemp(), "api.sock")
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    headers: list = []
    t = threading.Thread(target=capture, args=(listener, headers), daemon=True)
    t.start()

    import grpc
    from spiffe import WorkloadApiClient

    client = WorkloadApiClient(socket_path=f"unix:{path}", default_timeout=3)
    try:
        client.fetch_x509_svid()
    except Exception:  # noqa: BLE001 - the bare peer never answers
        pass
    t.join(5)
    os.unlink(path)
    print(f"# grpcio {grpc.__version__}, socket {path}")
    for k, v in headers:
        print(f"{k}: {v}")
    return 0 if headers else 1


if __name__ == "__main__":
    sys.exit(main())
