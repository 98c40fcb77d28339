"""Wait until a Unix socket accepts connections (bounded), failing fast if the daemon exits.

Usage: wait_socket.py SOCKET DAEMON_PID TIMEOUT_SECONDS   (shared by interop/ and examples/ scripts)
"""
import os
import socket
import sys
import time

path, pid, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + limit
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("daemon exited before accepting connections")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
    finally:
        s.close()
sys.exit(f"socket {path} did not accept connections within {limit:g}s")
