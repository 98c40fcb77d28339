"""A local attacker's trick, for tests: connect to the admin socket, leave the request to a forked
child, and exit, so that another process may take the connecting process's pid.

usage: admin_after_exit.py ADMIN_SOCKET

The parent connects, forks, prints "connected PID" (its own pid, the socket's peer) and exits.
The child waits for a line on stdin, then sends GET /revocations on the inherited connection and
prints "status N". Bounded: the child gives up after 60 s.
"""

import os
import select
import socket
import sys


def main():
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(sys.argv[1])
    if os.fork() != 0:
        print(f"connected {os.getpid()}", flush=True)
        os._exit(0)
    ready, _, _ = select.select([sys.stdin], [], [], 60)
    if not ready:
        os._exit(1)
    sys.stdin.readline()
    conn.sendall(b"GET /revocations HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    conn.settimeout(20)
    head = conn.recv(4096).decode(errors="replace")
    status = head.split(" ", 2)[1] if head.startswith("HTTP/1.1 ") else "none"
    print(f"status {status}", flush=True)
    os._exit(0)


main()
