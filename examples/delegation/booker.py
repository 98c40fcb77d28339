"""The booker agent: the concierge hands it a token (on stdin); it exchanges it for a flight-API
token with `flight:reserve` only, reserves, and shows it cannot get more than it was given.

    booker.py --token-socket PATH --api HOST:PORT < handed-token
"""
import argparse
import sys

import httpx

from tessera_token import ExchangeError, exchange

FLIGHTS = "https://api.flights.example"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--token-socket", required=True)
    p.add_argument("--api", required=True)
    a = p.parse_args()
    handed = sys.stdin.read().strip()
    reserve = exchange(a.token_socket, handed, FLIGHTS, "flight:reserve")
    r = httpx.post(f"http://{a.api}/reservations", headers={"Authorization": f"Bearer {reserve['access_token']}"})
    print(f"reserve {r.status_code} {r.json()}", flush=True)
    try:
        exchange(a.token_socket, handed, FLIGHTS, "booking:create")
        print("booker-widen granted (wrong!)", flush=True)
    except ExchangeError as e:
        print(f"booker-widen {e.answer['error']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
