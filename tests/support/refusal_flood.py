"""A local attacker's refusal flood, for tests (bounded in count and time; Unix sockets only).

usage: refusal_flood.py TOKEN_SOCKET ADMIN_SOCKET SECONDS

On one keep-alive connection each: POST a bad token exchange to TOKEN_SOCKET/token for SECONDS,
then GET /revocations on ADMIN_SOCKET (which serves only root, the daemon's user and its group)
for SECONDS/4. Prints {"token": {STATUS: COUNT}, "admin": {STATUS: COUNT}} as JSON.
"""

import http.client
import json
import socket
import sys
import time

MAX_REQUESTS = 200_000


class Unix(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=20)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.unix_path)


def flood(path, method, url, body, seconds):
    c = Unix(path)
    statuses = {}
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline and n < MAX_REQUESTS:
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
        c.request(method, url, body=body, headers=headers)
        r = c.getresponse()
        r.read()
        statuses[r.status] = statuses.get(r.status, 0) + 1
        n += 1
    c.close()
    return statuses


def main():
    token, admin, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    form = b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=x&audience=y"
    out = {
        "token": flood(token, "POST", "/token", form, seconds),
        "admin": flood(admin, "GET", "/revocations", None, seconds / 4),
    }
    print(json.dumps(out), flush=True)


main()
