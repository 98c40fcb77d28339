"""A real OAuth 2.0 authorization server (authlib) for the gateway's token sources, over HTTPS.

    oauth_as.py --dir DIR --jwks URL|FILE [--port 0] [--audience https://localhost:{port}/token]
                [--issuer ISS] [--client ID:SECRET_FILE ...] [--log DIR/as.jsonl]
                [--port-file DIR/as.port]

POST /token grants, each by authlib's AuthorizationServer:
  client_credentials                              authlib's ClientCredentialsGrant; the client
      authenticates with client_secret_basic or client_secret_post (--client ID:SECRET_FILE)
  urn:ietf:params:oauth:grant-type:jwt-bearer     RFC 7523, authlib's JWTBearerGrant; the
      assertion is a JWT-SVID
  urn:ietf:params:oauth:grant-type:token-exchange RFC 8693 (a grant class of our own: authlib has
      none); subject_token_type urn:ietf:params:oauth:token-type:jwt, the subject token a JWT-SVID
A JWT-SVID is verified with PyJWT against the JWKS at --jwks (tessera's [oidc] /keys, read at
each request, or a file): signature, exp, aud == --audience, sub a spiffe:// ID, iss == --issuer
when given. GET /health answers 200; GET /.well-known/oauth-authorization-server the metadata.

Access tokens are opaque: `at-<cc|jb|tx>-<sha256(sub or client_id)[:12]>-<random>`, expires_in 60.
Every token request is one JSON line in --log: grant, outcome, client_id, sub, jti, aud, scope and,
when one was issued, access_token, so a check can match what the upstream saw to the agent it was
issued for.
"""

import argparse
from requests.structures import CaseInsensitiveDict
import hashlib
import json
import os
import secrets
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

import jwt
from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    BaseGrant,
    ClientMixin,
    InvalidGrantError,
    InvalidRequestError,
    OAuth2Error,
    TokenEndpointMixin,
)
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload, OAuth2Request
from authlib.oauth2.rfc7523 import JWTBearerGrant

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pki  # noqa: E402

JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
SHORT = {"client_credentials": "cc", JWTBearerGrant.GRANT_TYPE: "jb", TOKEN_EXCHANGE: "tx"}
ALGORITHMS = ["ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"]

CONFIG = {}  # filled by main(): audience, issuer, jwks, clients, log
_log_lock = threading.Lock()
_local = threading.local()  # what the current request's grant learnt, for the log line


def log_line(**fields):
    with _log_lock, open(CONFIG["log"], "a") as f:
        f.write(json.dumps({"ts": time.time(), **fields}) + "\n")


def load_jwks():
    src = CONFIG["jwks"]
    if src.startswith(("http://", "https://")):
        with urllib.request.urlopen(src, timeout=10) as r:
            return json.load(r)
    with open(src) as f:
        return json.load(f)


def verify_svid(token):
    """A JWT-SVID checked with PyJWT: the key by kid from the JWKS, exp, aud, sub (and iss)."""
    try:
        header = jwt.get_unverified_header(token)
        keys = [k for k in jwt.PyJWKSet.from_dict(load_jwks()).keys if k.key_id == header.get("kid")]
        if not keys:
            raise InvalidGrantError(description=f"no key {header.get('kid')!r} in the JWKS")
        opts = {"require": ["exp", "sub", "aud"]}
        claims = jwt.decode(token, keys[0].key, algorithms=ALGORITHMS, audience=CONFIG["audience"],
                            issuer=CONFIG["issuer"], options=opts, leeway=30)
    except jwt.PyJWTError as e:
        raise InvalidGrantError(description=f"JWT-SVID refused: {e}") from None
    if not str(claims["sub"]).startswith("spiffe://"):
        raise InvalidGrantError(description="sub is not a SPIFFE ID")
    _local.info.update(sub=claims["sub"], jti=claims.get("jti"), aud=claims["aud"], iss=claims.get("iss"))
    return claims


class Client(ClientMixin):
    def __init__(self, client_id, secret=None, grants=()):
        self.client_id, self.secret, self.grants = client_id, secret, set(grants)

    def get_client_id(self):
        return self.client_id

    def check_client_secret(self, client_secret):
        return self.secret is not None and secrets.compare_digest(client_secret, self.secret)

    def check_endpoint_auth_method(self, method, endpoint):
        return method in ("client_secret_basic", "client_secret_post")

    def check_grant_type(self, grant_type):
        return grant_type in self.grants

    def get_allowed_scope(self, scope):
        return scope or ""


# A JWT-SVID grant needs no client authentication (RFC 7523 §3.1, RFC 8693 §2.1: optional).
PUBLIC = Client("jwt-svid", grants=(JWTBearerGrant.GRANT_TYPE, TOKEN_EXCHANGE))


class CCGrant(ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def validate_token_request(self):
        super().validate_token_request()
        _local.info.update(client_id=self.request.client.client_id, auth_method=self.request.auth_method)


class SvidJwtBearer(JWTBearerGrant):
    """RFC 7523 with the assertion verified by PyJWT against tessera's JWKS."""

    def process_assertion_claims(self, assertion):
        claims = verify_svid(assertion)
        claims.setdefault("iss", "")
        return claims

    def resolve_issuer_client(self, iss):
        return PUBLIC

    def resolve_client_public_key(self, client):  # not used: process_assertion_claims verifies
        raise NotImplementedError

    def get_audiences(self):
        return [CONFIG["audience"]]

    def authenticate_user(self, subject):
        return subject

    def has_granted_permission(self, client, user):
        return True


class TokenExchangeGrant(BaseGrant, TokenEndpointMixin):
    """RFC 8693 token exchange: a JWT-SVID as subject_token (and optionally actor_token) for an
    access token."""

    GRANT_TYPE = TOKEN_EXCHANGE

    def validate_token_request(self):
        form = self.request.form
        subject_token = form.get("subject_token")
        if not subject_token:
            raise InvalidRequestError("Missing 'subject_token'")
        if form.get("subject_token_type") != JWT_TOKEN_TYPE:
            raise InvalidRequestError(f"'subject_token_type' must be {JWT_TOKEN_TYPE}")
        if form.get("requested_token_type") not in (None, ACCESS_TOKEN_TYPE):
            raise InvalidRequestError(f"only {ACCESS_TOKEN_TYPE} can be requested")
        claims = verify_svid(subject_token)
        sub, jti = claims["sub"], claims.get("jti")
        if form.get("actor_token"):
            if form.get("actor_token_type") != JWT_TOKEN_TYPE:
                raise InvalidRequestError(f"'actor_token_type' must be {JWT_TOKEN_TYPE}")
            actor = verify_svid(form["actor_token"])
            _local.info.update(act=actor["sub"], sub=sub, jti=jti)
        _local.info.update(audience=form.get("audience"), resource=form.get("resource"))
        self.request.client = PUBLIC
        self.request.user = sub
        self.validate_requested_scope()

    def create_token_response(self):
        token = self.generate_token(scope=self.request.payload.scope, user=self.request.user, include_refresh_token=False)
        token["issued_token_type"] = ACCESS_TOKEN_TYPE
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER


class TokenRequest(OAuth2Request):
    def __init__(self, uri, form, headers):
        super().__init__("POST", uri, headers=headers)
        self._form = form
        self.payload = BasicOAuth2Payload(form)

    @property
    def form(self):
        return self._form


class Server(AuthorizationServer):
    def query_client(self, client_id):
        secret = CONFIG["clients"].get(client_id)
        return Client(client_id, secret, grants=("client_credentials",)) if secret is not None else None

    def save_token(self, token, request):
        pass

    def create_oauth2_request(self, request):
        return request

    def handle_response(self, status, body, headers):
        return status, body, headers

    def send_signal(self, name, *args, **kwargs):
        pass


def generate_token(grant_type, client, user=None, scope=None, expires_in=None, include_refresh_token=False):
    who = user or client.client_id
    token = "at-%s-%s-%s" % (SHORT[grant_type], hashlib.sha256(who.encode()).hexdigest()[:12], secrets.token_urlsafe(16))
    out = {"access_token": token, "token_type": "Bearer", "expires_in": 60}
    if scope:
        out["scope"] = scope
    return out


AS = Server()
AS.register_token_generator("default", generate_token)
AS.register_grant(CCGrant)
AS.register_grant(SvidJwtBearer)
AS.register_grant(TokenExchangeGrant)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "interop-as/1"
    timeout = 60

    def log_message(self, fmt, *args):
        sys.stderr.write("as: %s %s\n" % (self.address_string(), fmt % args))

    def send_json(self, status, obj, headers=()):
        data = json.dumps(obj).encode()
        self.send_response(status)
        sent = set()
        for k, v in headers:
            sent.add(k.lower())
            self.send_header(k, v)
        if "content-type" not in sent:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            return self.send_json(200, {"ok": True})
        if self.path == "/.well-known/oauth-authorization-server":
            base = CONFIG["base"]
            return self.send_json(200, {
                "issuer": base, "token_endpoint": base + "/token",
                "grant_types_supported": ["client_credentials", JWTBearerGrant.GRANT_TYPE, TOKEN_EXCHANGE],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            })
        self.send_json(404, {"error": "not_found"})

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode() if n else ""
        if self.path.split("?")[0] != "/token":
            return self.send_json(404, {"error": "not_found"})
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        form = dict(parse_qsl(body, keep_blank_values=True))
        grant_type = form.get("grant_type")
        _local.info = {}
        if ctype != "application/x-www-form-urlencoded":
            status, out, headers = 400, {"error": "invalid_request", "error_description": "the body must be application/x-www-form-urlencoded"}, []
        else:
            # Header names are case-insensitive (RFC 9110 §5.1): HTTP/2-era clients send them
            # lowercase, and authlib looks them up as `Authorization`.
            headers_in = CaseInsensitiveDict(self.headers.items())
            request = TokenRequest(CONFIG["base"] + "/token", form, headers_in)
            try:
                status, out, headers = AS.create_token_response(request)
            except OAuth2Error as e:  # raised outside the grant (e.g. building the request)
                status, out, headers = e.status_code, dict(e.get_body()), e.get_headers()
        issued = status == 200 and isinstance(out, dict) and "access_token" in out
        log_line(grant=SHORT.get(grant_type, grant_type), grant_type=grant_type, status=status,
                 outcome="issued" if issued else (out.get("error") if isinstance(out, dict) else str(out)),
                 error_description=None if issued else (out.get("error_description") if isinstance(out, dict) else None),
                 client_auth="basic" if (self.headers.get("Authorization") or "").lower().startswith("basic ")
                 else ("post" if "client_secret" in form else "none"),
                 scope=form.get("scope"),
                 access_token=out.get("access_token") if issued else None,
                 expires_in=out.get("expires_in") if issued else None,
                 **_local.info)
        self.send_json(status, out, headers)


class TLSServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        print(f"as: {client_address}: {sys.exc_info()[1]!r}", file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True, help="where ca.pem/server.pem/server.key are (made if absent)")
    ap.add_argument("--jwks", required=True, help="JWKS URL (tessera's [oidc] listener /keys) or file")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--audience", default="https://localhost:{port}/token",
                    help="the aud a JWT-SVID must carry ({port} is replaced)")
    ap.add_argument("--issuer", help="the iss a JWT-SVID must carry (tessera's jwt_issuer)")
    ap.add_argument("--client", action="append", default=[], metavar="ID:SECRET_FILE")
    ap.add_argument("--log", help="JSON-lines token log (default DIR/as.jsonl)")
    ap.add_argument("--port-file", help="written with the port once listening (default DIR/as.port)")
    args = ap.parse_args()

    ctx = pki.server_context(args.dir)
    httpd = TLSServer(("127.0.0.1", args.port), Handler)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
    port = httpd.server_address[1]
    clients = {}
    for c in args.client:
        cid, _, path = c.partition(":")
        with open(path) as f:
            clients[cid] = f.read().strip()
    CONFIG.update(
        base=f"https://localhost:{port}",
        audience=args.audience.replace("{port}", str(port)),
        issuer=args.issuer,
        jwks=args.jwks,
        clients=clients,
        log=args.log or os.path.join(args.dir, "as.jsonl"),
    )
    open(CONFIG["log"], "a").close()
    port_file = args.port_file or os.path.join(args.dir, "as.port")
    with open(port_file + ".tmp", "w") as f:
        f.write(f"{port}\n")
    os.replace(port_file + ".tmp", port_file)
    print(f"as: {CONFIG['base']}/token (aud {CONFIG['audience']}, JWKS {args.jwks}, clients {sorted(clients)}, log {CONFIG['log']})",
          file=sys.stderr, flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
