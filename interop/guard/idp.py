"""A throwaway identity provider: an ES256 key, its JWKS file, and Alice's token for tessera.

    idp.py DIR ISSUER   (writes DIR/jwks.json, prints the token)
"""

import json
import sys
import time

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

out_dir, issuer = sys.argv[1:3]
key = ec.generate_private_key(ec.SECP256R1())
jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
jwk.update({"kid": "idp-1", "use": "sig", "alg": "ES256"})
with open(f"{out_dir}/jwks.json", "w") as f:
    json.dump({"keys": [jwk]}, f)
now = int(time.time())
claims = {"iss": issuer, "sub": "alice", "aud": "tessera", "iat": now, "exp": now + 600, "scope": "flight:search"}
print(jwt.encode(claims, key, algorithm="ES256", headers={"kid": "idp-1"}))
