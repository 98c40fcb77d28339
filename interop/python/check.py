"""tessera's py-spiffe interop check.

Talks to a running tessera through py-spiffe's public API, unmodified (no
channel options, no :authority override), and prints one
"PASS python <check> <detail>" or "FAIL python <check>: <reason>" line per
check. Exit status 1 if any check failed.

usage: check.py --socket PATH --id SPIFFE_ID [--audience AUD]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from typing import Callable, List, Optional

import grpc
import jwt as pyjwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification
from cryptography.x509.oid import ExtensionOID

from spiffe import (
    JwtBundleSet,
    JwtSvid,
    SpiffeId,
    WorkloadApiClient,
    X509BundleSet,
)

failures = 0


def run(check: str, f: Callable[[], str]) -> None:
    global failures
    try:
        detail = f()
    except Exception as e:  # noqa: BLE001 - every error is a FAIL line
        failures += 1
        cause = f" (cause: {e.__cause__!r})" if e.__cause__ is not None else ""
        print(f"FAIL python {check}: {type(e).__name__}: {e}{cause}", flush=True)
        return
    print(f"PASS python {check} {detail}", flush=True)


def require(cond: bool, msg: str) -> None:
    if not cond:
        raise AssertionError(msg)


def spki(key) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def verify_chain(chain: List[x509.Certificate], authorities, what: str) -> None:
    """Verify an SVID chain against bundle authorities, twice: link by link
    (each signature, up to a bundle CA), then with cryptography's RFC 5280
    path validator as a TLS client certificate would be."""
    require(len(authorities) > 0, f"{what}: no authorities")
    now = datetime.datetime.now(datetime.timezone.utc)
    for cert in chain:
        require(
            cert.not_valid_before_utc <= now + datetime.timedelta(minutes=1)
            and now <= cert.not_valid_after_utc,
            f"{what}: certificate {cert.subject.rfc4514_string()!r} not currently valid",
        )
    for child, parent in zip(chain, chain[1:]):
        child.verify_directly_issued_by(parent)
    top = chain[-1]
    anchored = False
    errors = []
    for ca in authorities:
        try:
            top.verify_directly_issued_by(ca)
            anchored = True
            break
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
    require(anchored, f"{what}: chain does not end at a bundle authority: {errors}")

    store = verification.Store(list(authorities))
    verifier = verification.PolicyBuilder().store(store).build_client_verifier()
    try:
        verified = verifier.verify(chain[0], chain[1:])
    except verification.VerificationError as e:
        raise AssertionError(f"{what}: RFC 5280 path validation (cryptography) failed: {e}")
    require(len(verified.chain) >= 2, f"{what}: verified chain too short")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--id", required=True, help="SPIFFE ID the caller should receive")
    ap.add_argument("--audience", default="interop-python")
    ap.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args()

    want_id = SpiffeId(args.id)
    td = want_id.trust_domain
    aud = args.audience

    try:
        client = WorkloadApiClient(socket_path=f"unix:{args.socket}", default_timeout=args.timeout)
    except Exception as e:  # noqa: BLE001
        print(f"FAIL python connect: {type(e).__name__}: {e}", flush=True)
        return 1

    state: dict = {}

    def x509_bundles() -> str:
        bundles: X509BundleSet = client.fetch_x509_bundles()
        b = bundles.get_bundle_for_trust_domain(td)
        require(b is not None, f"no X.509 bundle for trust domain {td}")
        cas = b.x509_authorities
        require(len(cas) > 0, f"X.509 bundle for {td} has no authorities")
        for ca in cas:
            bc = ca.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value
            require(bc.ca, f"bundle authority {ca.subject.rfc4514_string()!r} is not a CA")
        state["x509_authorities"] = list(cas)
        return f"{td} ({len(cas)} CA)"

    def jwt_bundles() -> str:
        bundles: JwtBundleSet = client.fetch_jwt_bundles()
        b = bundles.get_bundle_for_trust_domain(td)
        require(b is not None, f"no JWT bundle for trust domain {td}")
        require(len(b.jwt_authorities) > 0, f"JWT bundle for {td} has no keys")
        state["jwt_bundle"] = b
        return f"{td} (kid {','.join(sorted(b.jwt_authorities))})"

    def x509_svid() -> str:
        svid = client.fetch_x509_svid()
        require(svid.spiffe_id == want_id, f"SPIFFE ID {svid.spiffe_id}, want {want_id}")
        require(svid.private_key is not None, "no private key")
        leaf = svid.leaf
        require(
            spki(svid.private_key.public_key()) == spki(leaf.public_key()),
            "private key does not match the leaf certificate",
        )
        san = leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        require(uris == [str(want_id)], f"leaf URI SANs {uris}, want exactly [{want_id}]")
        return f"{svid.spiffe_id} (expires {leaf.not_valid_after_utc.isoformat()})"

    def x509_chain() -> str:
        # fetch_x509_context reads the SVID and its bundle from one
        # FetchX509SVID message; verify against that bundle and the one
        # FetchX509Bundles returned.
        ctx = client.fetch_x509_context()
        svid = ctx.default_svid
        require(svid.spiffe_id == want_id, f"SPIFFE ID {svid.spiffe_id}, want {want_id}")
        ctx_bundle = ctx.x509_bundle_set.get_bundle_for_trust_domain(td)
        require(ctx_bundle is not None, f"FetchX509SVID carried no bundle for {td}")
        verify_chain(svid.cert_chain, list(ctx_bundle.x509_authorities), "FetchX509SVID bundle")
        if "x509_authorities" in state:
            verify_chain(svid.cert_chain, state["x509_authorities"], "FetchX509Bundles bundle")
        else:
            raise AssertionError("no FetchX509Bundles bundle to verify against")
        return f"{svid.spiffe_id} verifies against the {td} bundle"

    def jwt_svid() -> str:
        svid = client.fetch_jwt_svid(audience={aud})
        require(svid.spiffe_id == want_id, f"sub {svid.spiffe_id}, want {want_id}")
        require(aud in svid.audience, f"aud {svid.audience} does not contain {aud}")
        require(svid.expiry > time.time(), f"already expired (exp {svid.expiry})")
        header = pyjwt.get_unverified_header(svid.token)
        require(bool(header.get("kid")), f"JWT header has no kid: {header}")
        state["token"] = svid.token
        return f"{svid.spiffe_id} aud={','.join(sorted(svid.audience))}"

    def jwt_verify() -> str:
        require("token" in state and "jwt_bundle" in state, "skipped: no JWT-SVID or no JWT bundle")
        svid = JwtSvid.parse_and_validate(state["token"], state["jwt_bundle"], {aud})
        require(svid.spiffe_id == want_id, f"sub {svid.spiffe_id}, want {want_id}")
        return f"{svid.spiffe_id} signature verifies against the {td} JWT bundle"

    def jwt_validate() -> str:
        require("token" in state, "skipped: no JWT-SVID")
        svid = client.validate_jwt_svid(state["token"], aud)
        require(svid.spiffe_id == want_id, f"validated sub {svid.spiffe_id}, want {want_id}")
        return f"{svid.spiffe_id} accepted by ValidateJWTSVID"

    def jwt_validate_rejects() -> str:
        require("token" in state, "skipped: no JWT-SVID")
        token = state["token"]
        head, body, sig = token.split(".")
        tampered = f"{head}.{body}.{('B' if sig[0] == 'A' else 'A')}{sig[1:]}"
        for what, tok, a in (
            ("wrong audience", token, aud + "-other"),
            ("bad signature", tampered, aud),
        ):
            try:
                client.validate_jwt_svid(tok, a)
            except Exception as e:  # noqa: BLE001
                cause: Optional[BaseException] = e.__cause__
                code = cause.code() if isinstance(cause, grpc.Call) else None
                require(
                    code == grpc.StatusCode.INVALID_ARGUMENT,
                    f"{what}: want INVALID_ARGUMENT, got {code} ({e})",
                )
                continue
            raise AssertionError(f"{what}: ValidateJWTSVID accepted it")
        return "wrong audience and bad signature refused with INVALID_ARGUMENT"

    with client:
        run("x509-bundles", x509_bundles)
        run("jwt-bundles", jwt_bundles)
        run("x509-svid", x509_svid)
        run("x509-chain", x509_chain)
        run("jwt-svid", jwt_svid)
        run("jwt-verify", jwt_verify)
        run("jwt-validate", jwt_validate)
        run("jwt-validate-rejects", jwt_validate_rejects)

    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
