"""The travel concierge agent: acts for the user whose token it is given.

1. Exchanges the user's token for a flight-API token with only `flight:search`, and searches.
2. Gets a token addressed to tessera itself and hands it to the booker agent (a separate
   process, with its own identity), which exchanges it for less.
3. Asks for `booking:create`, which needs a human's yes: prints `pending APPROVAL_ID`, polls,
   and books once approved.

    concierge.py --token-socket PATH --issuer URL --api HOST:PORT --user-token FILE
"""
import argparse
import os
import subprocess
import sys

import httpx

from tessera_token import ExchangeError, exchange

FLIGHTS = "https://api.flights.example"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--token-socket", required=True)
    p.add_argument("--issuer", required=True)
    p.add_argument("--api", required=True)
    p.add_argument("--user-token", required=True)
    a = p.parse_args()
    user_token = open(a.user_token).read().strip()
    api = f"http://{a.api}"

    search = exchange(a.token_socket, user_token, FLIGHTS, "flight:search")
    r = httpx.get(f"{api}/flights", headers={"Authorization": f"Bearer {search['access_token']}"})
    print(f"search {r.status_code} {r.json()}", flush=True)
    # The same token cannot book: the API enforces scope.
    r = httpx.post(f"{api}/bookings", headers={"Authorization": f"Bearer {search['access_token']}"})
    print(f"book-with-search-token {r.status_code}", flush=True)

    handoff = exchange(a.token_socket, user_token, a.issuer, "flight:search flight:reserve")
    booker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "booker.py")
    out = subprocess.run([sys.executable, booker, "--token-socket", a.token_socket, "--api", a.api],
                         input=handoff["access_token"], capture_output=True, text=True, timeout=60)
    sys.stdout.write(out.stdout)
    sys.stderr.write(out.stderr)

    try:
        booking = exchange(a.token_socket, user_token, FLIGHTS, "booking:create",
                           on_pending=lambda i: print(f"pending {i}", flush=True))
    except ExchangeError as e:
        print(f"booking refused: {e}", flush=True)
        return 1
    r = httpx.post(f"{api}/bookings", headers={"Authorization": f"Bearer {booking['access_token']}"})
    print(f"book {r.status_code} {r.json()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
