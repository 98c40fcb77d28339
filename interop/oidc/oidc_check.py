"""Verify tessera's JWT-SVIDs with verifiers nobody on the tessera team wrote.

    oidc_check.py ISSUER TOKEN_FOR_AS TOKEN_OTHER_AUD AS_AUDIENCE

- PyJWT's PyJWKClient finds the JWKS through the discovery document and verifies TOKEN_FOR_AS.
- An authlib RFC 7523 jwt-bearer authorization server (token endpoint AS_AUDIENCE) discovers
  tessera's keys, grants a token for TOKEN_FOR_AS, refuses it when replayed (same jti) and
  refuses TOKEN_OTHER_AUD (aud is not its token endpoint).
Prints one PASS/FAIL line per check.
"""

import json
import sys

import jwt
import requests
from authlib.oauth2.rfc6749 import AuthorizationServer, ClientMixin
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload, OAuth2Request
from authlib.oauth2.rfc7523 import JWTBearerGrant
from joserfc.jwk import KeySet

failed = 0


def check(name, ok, detail=""):
    global failed
    print(("PASS " if ok else "FAIL ") + name + (f" ({detail})" if detail else ""))
    if not ok:
        failed += 1


issuer, token, token_other_aud, as_audience = sys.argv[1:5]
discovery = requests.get(issuer.rstrip("/") + "/.well-known/openid-configuration", timeout=10).json()
check("discovery issuer matches jwt_issuer", discovery.get("issuer") == issuer, discovery.get("issuer"))

# --- PyJWT ---------------------------------------------------------------
try:
    signing_key = jwt.PyJWKClient(discovery["jwks_uri"]).get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        signing_key.key,
        algorithms=discovery["id_token_signing_alg_values_supported"],
        audience=as_audience,
        issuer=issuer,
        options={"require": ["exp", "iat", "sub", "aud", "iss", "jti"]},
    )
    check("PyJWKClient verifies a JWT-SVID via discovery", claims["sub"].startswith("spiffe://"), claims["sub"])
    check("single audience is a plain string", claims["aud"] == as_audience, json.dumps(claims["aud"]))
except Exception as e:  # noqa: BLE001 - any failure is a FAIL line
    check("PyJWKClient verifies a JWT-SVID via discovery", False, repr(e))
try:
    jwt.decode(token, signing_key.key, algorithms=["ES256"], audience="https://someone-else.example")
    check("PyJWT refuses the wrong audience", False)
except jwt.InvalidAudienceError:
    check("PyJWT refuses the wrong audience", True)


# --- authlib RFC 7523 authorization server ---------------------------------
class Client(ClientMixin):
    def __init__(self, client_id):
        self.client_id = client_id

    def check_grant_type(self, grant_type):
        return grant_type == JWTBearerGrant.GRANT_TYPE

    def get_allowed_scope(self, scope):
        return scope or ""


class SpiffeJwtBearer(JWTBearerGrant):
    seen_jti = set()
    CLAIMS_OPTIONS = {
        "iss": {"essential": True, "value": issuer},
        "aud": {"essential": True},
        "exp": {"essential": True},
        "jti": {"essential": True},
    }

    def resolve_issuer_client(self, iss):
        return Client("tessera") if iss == issuer else None

    def resolve_client_public_key(self, client):
        # The keys come from tessera's discovery document, fetched now (what an AS does).
        return KeySet.import_key_set(requests.get(discovery["jwks_uri"], timeout=10).json())

    def get_audiences(self):
        return [as_audience]

    def authenticate_user(self, subject):
        return subject if subject.startswith("spiffe://") else None

    def has_granted_permission(self, client, user):
        return True

    def verify_claims(self, claims):
        super().verify_claims(claims)
        # RFC 7523 §3 item 7: the AS may refuse a replayed jti.
        from authlib.oauth2.rfc6749 import InvalidGrantError

        if claims["jti"] in self.seen_jti:
            raise InvalidGrantError(description="jti already used")
        self.seen_jti.add(claims["jti"])


class TokenRequest(OAuth2Request):
    def __init__(self, form):
        super().__init__("POST", as_audience)
        self._form = form
        self.payload = BasicOAuth2Payload(form)

    @property
    def form(self):
        return self._form


class Server(AuthorizationServer):
    def query_client(self, client_id):
        return None

    def save_token(self, token, request):
        pass

    def create_oauth2_request(self, request):
        return request

    def handle_response(self, status, body, headers):
        return status, body

    def send_signal(self, name, *args, **kwargs):
        pass


server = Server()
server.register_token_generator("default", lambda **kw: {"access_token": "at-" + kw["user"], "token_type": "Bearer"})
server.register_grant(SpiffeJwtBearer)


def grant(assertion):
    return server.create_token_response(TokenRequest({"grant_type": JWTBearerGrant.GRANT_TYPE, "assertion": assertion}))


status, body = grant(token)
check("authlib jwt-bearer AS grants a token for the JWT-SVID", status == 200, f"{status} {body}")
status, body = grant(token)
check("authlib AS refuses a replayed jti", status == 400 and "jti" in json.dumps(body), f"{status} {body}")
status, body = grant(token_other_aud)
check("authlib AS refuses a JWT-SVID for another audience", status == 400, f"{status} {body}")
sys.exit(1 if failed else 0)
