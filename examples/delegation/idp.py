"""A stand-in identity provider: an ES256 key, its JWKS, and a token for Alice (PyJWT).

    idp.py keygen DIR              writes DIR/idp-key.pem and DIR/idp-jwks.json
    idp.py token DIR USER SCOPE    prints a 10-minute token for USER, audience "tessera"
"""
import json
import sys
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

ISSUER = "https://idp.example.com"
KID = "idp-2026-11"


def keygen(d):
    key = ec.generate_private_key(ec.SECP256R1())
    with open(f"{d}/idp-key.pem", "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": KID, "use": "sig", "alg": "ES256"})
    with open(f"{d}/idp-jwks.json", "w") as f:
        json.dump({"keys": [jwk]}, f)


def token(d, user, scope):
    with open(f"{d}/idp-key.pem", "rb") as f:
        key = f.read()
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": user, "aud": "tessera", "iat": now, "exp": now + 600, "scope": scope}
    print(jwt.encode(claims, key, algorithm="ES256", headers={"kid": KID}))


if __name__ == "__main__":
    if sys.argv[1] == "keygen":
        keygen(sys.argv[2])
    else:
        token(sys.argv[2], sys.argv[3], sys.argv[4])
