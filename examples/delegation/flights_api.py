"""The resource server: a flight API that accepts only tessera-issued delegated tokens.

It verifies each Bearer token with PyJWT against the JWKS tessera publishes on its token socket
(typ at+jwt, ES256, iss, exp, and aud = this API), then enforces the scope each route needs.
It prints `ready HOST:PORT`, then one line per request: who acted for whom, or why refused.

    flights_api.py --token-socket PATH --issuer URL [--audience URL]

`--issuer` is the delegated tokens' issuer: tessera's `jwt_issuer` + `/delegation`.
"""
import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt

from tessera_token import jwks

ROUTES = {("GET", "/flights"): "flight:search", ("POST", "/reservations"): "flight:reserve",
          ("POST", "/bookings"): "booking:create"}


def chain(claims):
    out, act = [], claims.get("act")
    while act:
        out.append(act["sub"])
        act = act.get("act")
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--token-socket", required=True)
    p.add_argument("--issuer", required=True)
    p.add_argument("--audience", default="https://api.flights.example")
    a = p.parse_args()

    def verify(token):
        header = jwt.get_unverified_header(token)
        if header.get("typ") != "at+jwt":
            raise jwt.InvalidTokenError(f"typ {header.get('typ')!r} is not at+jwt")
        # Keys are fetched per request: tessera rotates them, and this is an example.
        keys = {k["kid"]: jwt.PyJWK(k) for k in jwks(a.token_socket)["keys"]}
        if header.get("kid") not in keys:
            raise jwt.InvalidTokenError("unknown kid")
        return jwt.decode(token, keys[header["kid"]], algorithms=["ES256"], audience=a.audience, issuer=a.issuer,
                          options={"require": ["exp", "iat", "sub", "aud", "iss", "jti"]})

    class Handler(BaseHTTPRequestHandler):
        def answer(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def handle_route(self):
            need = ROUTES.get((self.command, self.path))
            if need is None:
                return self.answer(404, {"error": "not_found"})
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Bearer "):
                return self.answer(401, {"error": "invalid_token"})
            try:
                claims = verify(auth[len("Bearer "):])
            except jwt.InvalidTokenError as e:
                print(f"refused {self.command} {self.path}: invalid_token: {e}", flush=True)
                return self.answer(401, {"error": "invalid_token", "error_description": str(e)})
            if need not in claims.get("scope", "").split():
                print(f"refused {self.command} {self.path}: insufficient_scope (has {claims.get('scope')!r})",
                      flush=True)
                return self.answer(403, {"error": "insufficient_scope", "scope": need})
            who = {"user": claims["sub"], "agent": claims["client_id"], "chain": chain(claims), "jti": claims["jti"]}
            print(f"served {self.command} {self.path} for {claims['sub']} by {' <- '.join(chain(claims))}",
                  flush=True)
            return self.answer(200, {"ok": True, **who})

        do_GET = do_POST = handle_route

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"ready 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
