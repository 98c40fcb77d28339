"""A WIT-SVID client generated from the Workload API proto (grpcio-tools), checked with JOSE
libraries nobody on the tessera team wrote.

    wit_check.py SOCKET PROTO_DIR OUT_DIR

- FetchWITSVID and FetchWITBundles over the Unix socket;
- the WIT verifies with joserfc against the WIT bundle (typ wit+jwt, kid in the bundle, no aud);
- a WIMSE Workload Proof Token (draft-ietf-wimse-wpt: typ wpt+jwt, aud, exp, jti, wth) signed
  with the returned private JWK verifies with PyJWT against the WIT's cnf.jwk.
Prints one PASS/FAIL line per check.
"""

import base64
import hashlib
import json
import os
import sys
import time
import uuid

import grpc_tools
from grpc_tools import protoc

sock, proto_dir, out = sys.argv[1:4]
os.makedirs(out, exist_ok=True)
# google/protobuf/struct.proto ships with grpcio-tools.
well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
rc = protoc.main(["protoc", f"-I{proto_dir}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}", "workload.proto"])
if rc != 0:
    print("FAIL generating the client from workload.proto")
    sys.exit(1)
sys.path.insert(0, out)

import grpc  # noqa: E402
import jwt as pyjwt  # noqa: E402
import workload_pb2  # noqa: E402
import workload_pb2_grpc  # noqa: E402
from joserfc import jws  # noqa: E402
from joserfc import jwt as jose_jwt  # noqa: E402
from joserfc.jwk import ECKey, KeySet  # noqa: E402

failed = 0


def check(name, ok, detail=""):
    global failed
    print(("PASS " if ok else "FAIL ") + name + (f" ({detail})" if detail else ""))
    if not ok:
        failed += 1


md = [("workload.spiffe.io", "true")]
stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(grpc.insecure_channel("unix:" + sock))
resp = next(stub.FetchWITSVID(workload_pb2.WITSVIDRequest(), metadata=md, timeout=10))
svid = resp.svids[0]
bundles = next(stub.FetchWITBundles(workload_pb2.WITBundlesRequest(), metadata=md, timeout=10)).bundles
td = "spiffe://" + svid.spiffe_id.split("/")[2]
check("FetchWITSVID and FetchWITBundles answer (generated client)", bool(svid.wit_svid) and td in bundles, svid.spiffe_id)

# --- the WIT against the bundle, with joserfc ----------------------------
# joserfc accepts only the registered "use" values (sig, enc); the SPIFFE bundle's "wit-svid" is
# checked here and dropped before import.
bundle_keys = json.loads(bundles[td])["keys"]
check("WIT bundle keys are use=wit-svid", all(k.get("use") == "wit-svid" for k in bundle_keys))
keyset = KeySet.import_key_set({"keys": [{k: v for k, v in key.items() if k != "use"} for key in bundle_keys]})
try:
    token = jose_jwt.decode(svid.wit_svid, keyset, algorithms=["ES256"])
    header, claims = token.header, token.claims
    ok = (
        header.get("typ") == "wit+jwt"
        and header.get("kid") in [k.kid for k in keyset.keys]
        and claims["sub"] == svid.spiffe_id
        and "aud" not in claims
        and claims["exp"] > time.time()
        and "jwk" in claims.get("cnf", {})
    )
    check("joserfc verifies the WIT-SVID against the WIT bundle (typ wit+jwt, kid, sub, exp, cnf, no aud)", ok, json.dumps(header))
except Exception as e:  # noqa: BLE001
    check("joserfc verifies the WIT-SVID against the WIT bundle", False, repr(e))
    sys.exit(1)

# --- proof of possession: a WPT signed with the returned key ---------------
private = json.loads(svid.wit_svid_key)
check("the private key is an RFC 7517 EC JWK matching cnf.jwk",
      private.get("kty") == "EC" and "d" in private and private["x"] == claims["cnf"]["jwk"]["x"])
aud = "https://service.example/api"
wth = base64.urlsafe_b64encode(hashlib.sha256(svid.wit_svid.encode("ascii")).digest()).rstrip(b"=").decode()
wpt_claims = {"aud": aud, "exp": int(time.time()) + 60, "jti": uuid.uuid4().hex, "wth": wth}
alg = claims["cnf"]["jwk"]["alg"]
wpt = jws.serialize_compact({"alg": alg, "typ": "wpt+jwt"}, json.dumps(wpt_claims), ECKey.import_key(private), algorithms=[alg])
# The service: validates the WIT (above), then the WPT with the WIT's cnf key, with PyJWT.
cnf_key = pyjwt.PyJWK(claims["cnf"]["jwk"]).key
try:
    got = pyjwt.decode(wpt, cnf_key, algorithms=[alg], audience=aud, options={"require": ["exp", "jti", "aud"]})
    hdr = pyjwt.get_unverified_header(wpt)
    check("a WIMSE Workload Proof Token signed with the returned key verifies against cnf.jwk (PyJWT)",
          got["wth"] == wth and hdr["typ"] == "wpt+jwt")
except Exception as e:  # noqa: BLE001
    check("a WIMSE Workload Proof Token signed with the returned key verifies against cnf.jwk (PyJWT)", False, repr(e))
# A WPT signed by another key is refused.
other = ECKey.generate_key("P-256")
forged = jws.serialize_compact({"alg": alg, "typ": "wpt+jwt"}, json.dumps(wpt_claims), other, algorithms=[alg])
try:
    pyjwt.decode(forged, cnf_key, algorithms=[alg], audience=aud)
    check("a WPT signed with another key is refused", False)
except pyjwt.InvalidSignatureError:
    check("a WPT signed with another key is refused", True)
sys.exit(1 if failed else 0)
