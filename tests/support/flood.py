"""A local attacker's flood, for tests (bounded in count and time; Unix socket only).

usage: flood.py SOCKET MODE COUNT
  idle       open COUNT connections and send nothing
  slowloris  open COUNT connections, each sending the HTTP/2 preface one byte at a time
  streams    one connection: preface, SETTINGS, then COUNT HEADERS-only FetchX509SVID streams

Prints "ready N" (connections that were accepted and are still open when the flood is in
place), then holds everything until stdin closes or 60 s pass, then prints "closed K" (how
many of its connections the server had closed by then) and exits.
"""

import resource
import select
import socket
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(ty, flags, stream_id, payload):
    return len(payload).to_bytes(3, "big") + bytes([ty, flags]) + stream_id.to_bytes(4, "big") + payload


def literal(name, value):
    # Literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2); short strings.
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def request_block():
    return b"".join(
        literal(n, v)
        for n, v in [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/SpiffeWorkloadAPI/FetchX509SVID"),
            (b":authority", b"localhost"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            (b"workload.spiffe.io", b"true"),
        ]
    )


def is_closed(s):
    """Drains what the server sent (its SETTINGS, GOAWAY); True once it closed the connection."""
    try:
        while True:
            if s.recv(65536, socket.MSG_DONTWAIT) == b"":
                return True
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def main():
    path, mode, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    conns = []
    if mode in ("idle", "slowloris"):
        for _ in range(count):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
            except OSError:
                s.close()
                continue
            conns.append(s)
    else:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        s.sendall(PREFACE + frame(0x4, 0, 0, b""))
        block = request_block()
        sent = 0
        for i in range(count):
            try:
                s.sendall(frame(0x1, 0x4, 2 * i + 1, block))  # END_HEADERS, no END_STREAM: half-open
                sent += 1
            except OSError:
                break
            if i % 256 == 0:  # drain what the server says (RST_STREAM, SETTINGS) so it never blocks
                if is_closed(s):
                    break
        conns.append(s)
    # The daemon closes what it refuses as it works through its accept backlog: report once the
    # count of live connections has held still for a second (at most 15 s), not after a fixed wait.
    alive, still_since, give_up = None, time.time(), time.time() + 15
    while time.time() < give_up:
        now_alive = sum(1 for s in conns if not is_closed(s))
        if now_alive != alive:
            alive, still_since = now_alive, time.time()
        elif time.time() - still_since >= 1.0:
            break
        time.sleep(0.1)
    print(f"ready {alive}", flush=True)
    deadline = time.time() + 60
    step = 0
    while time.time() < deadline:
        r, _, _ = select.select([sys.stdin], [], [], 0.2)
        if r and not sys.stdin.readline():
            break
        if mode == "slowloris" and step < len(PREFACE):
            for s in conns:
                try:
                    s.send(PREFACE[step : step + 1])
                except OSError:
                    pass
            step += 1
    closed = sum(1 for s in conns if is_closed(s))
    print(f"closed {closed}", flush=True)


main()
