"""Measures what an idle-connection flood does to probes of a TCP HTTP listener (bounded in
count and time; for tessera's own listeners on this machine only).

usage: tcp_flood_probe.py HOST PORT [--flood-from ADDR] [--probe-from ADDR] [--idle N]
                          [--seconds S] [--probes P] [--path PATH] [--timeout T]

The flood holds N connections from --flood-from that send nothing, and re-opens each one as
soon as the server closes it, for S seconds. Meanwhile P probes (GET PATH, Connection: close,
each from --probe-from with a T-second timeout, like an orchestrator's probe) are spread evenly
over the flood. Prints one JSON line: probe outcomes (status codes, "closed" for a close without
an answer, "timeout") and the flood's counters.
"""

import argparse
import json
import selectors
import socket
import threading
import time


def probe(host, port, source, path, timeout):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if source:
            s.bind((source, 0))
        s.connect((host, port))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        deadline = time.time() + timeout
        while time.time() < deadline:
            s.settimeout(max(deadline - time.time(), 0.001))
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        else:
            return "timeout"
        if not data.startswith(b"HTTP/1."):
            return "closed"
        return data.split(b" ", 2)[1].decode()
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return f"error:{e.errno}"
    finally:
        s.close()


class Flood:
    """Idle connections, re-opened as the server closes them. At most 64 connects are in flight at
    once, so the flood does not overflow the listen backlog (dropped SYNs would only slow it)."""

    IN_FLIGHT = 64

    def __init__(self, host, port, source, count):
        self.host, self.port, self.source, self.count = host, port, source, count
        self.sel = selectors.DefaultSelector()
        self.connecting = 0
        self.opened = 0
        self.closed_by_server = 0
        self.answered_503 = 0
        self.stop = threading.Event()

    def open_one(self):
        s = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        if self.source:
            s.bind((self.source, 0))
        try:
            s.connect((self.host, self.port))
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            return
        self.sel.register(s, selectors.EVENT_WRITE)
        self.connecting += 1

    def run(self, seconds):
        end = time.time() + seconds
        while time.time() < end and not self.stop.is_set():
            while len(self.sel.get_map()) < self.count and self.connecting < self.IN_FLIGHT:
                self.open_one()
            for key, events in self.sel.select(timeout=0.05):
                s = key.fileobj
                if key.events == selectors.EVENT_WRITE:
                    self.connecting -= 1
                    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                        self.opened += 1
                        self.sel.modify(s, selectors.EVENT_READ)
                    else:
                        self.sel.unregister(s)
                        s.close()
                    continue
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if data.startswith(b"HTTP/1.1 503"):
                    self.answered_503 += 1
                if data:
                    # An answer: the server closes next; wait for that close.
                    continue
                self.closed_by_server += 1
                self.sel.unregister(s)
                s.close()
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--flood-from", default="127.0.0.1")
    p.add_argument("--probe-from", default="127.0.0.1")
    p.add_argument("--idle", type=int, default=200)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--probes", type=int, default=64)
    p.add_argument("--path", default="/live")
    p.add_argument("--timeout", type=float, default=1.0)
    a = p.parse_args()
    a.idle = min(a.idle, 4000)
    a.seconds = min(a.seconds, 120.0)
    flood = Flood(a.host, a.port, a.flood_from, a.idle)
    t = threading.Thread(target=flood.run, args=(a.seconds,))
    t.start()
    time.sleep(min(1.0, a.seconds / 10))  # let the flood take its place first
    outcomes = {}
    span = a.seconds - min(1.0, a.seconds / 10) - a.timeout
    for i in range(a.probes):
        start = time.time()
        r = probe(a.host, a.port, a.probe_from, a.path, a.timeout)
        outcomes[r] = outcomes.get(r, 0) + 1
        time.sleep(max(0.0, span / a.probes - (time.time() - start)))
    flood.stop.set()
    t.join()
    print(
        json.dumps(
            {
                "probes": a.probes,
                "ok": outcomes.get("200", 0),
                "outcomes": outcomes,
                "flood_opened": flood.opened,
                "flood_closed_by_server": flood.closed_by_server,
                "flood_answered_503": flood.answered_503,
            }
        ),
        flush=True,
    )


main()
