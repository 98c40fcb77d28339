"""Verify a JWT-SVID (argv[1]) for audience argv[2] against a SPIFFE bundle JSON (argv[3], the
output of `spire-server bundle show -format spiffe`); print its sub."""
import json
import sys

import jwt

token, audience, bundle_path = sys.argv[1:4]
keys = [k for k in json.load(open(bundle_path))["keys"] if k.get("use") == "jwt-svid"]
kid = jwt.get_unverified_header(token)["kid"]
key = next(k for k in keys if k["kid"] == kid)
claims = jwt.decode(token, jwt.PyJWK(key).key, algorithms=["ES256", "ES384", "RS256", "PS256"], audience=audience)
print(claims["sub"])
