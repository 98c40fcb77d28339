"""mTLS with SPIFFE identities for Python agents: py-spiffe + the standard `ssl` module.

The agent's SVID, key and trust bundle come from the Workload API (tessera or any SPIFFE
implementation). A stream keeps them current: every new connection uses the newest SVID and
bundle; open connections are left alone.

Peer verification:
  * the chain must verify against the bundle of the *allowed* IDs' trust domain(s) only (OpenSSL
    does this with `verify_mode = CERT_REQUIRED`; the bundle is the only trust anchor loaded);
  * hostname verification is off (`check_hostname = False`) and replaced by SPIFFE-ID
    authorization: exactly one URI SAN, a `spiffe://` ID, an X509-SVID leaf (not a CA, key usage
    digitalSignature, no keyCertSign/cRLSign), whose ID is in the allow list.
    With allowed IDs in a single trust domain (the usual case), that domain's bundle is the only
    anchor, so the peer chained to the bundle of its own trust domain. With several trust domains,
    OpenSSL accepts a chain to any of their bundles; use one SpiffeTls per trust domain if their
    CAs must not vouch for each other's IDs.
"""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile
import threading
from typing import Iterable, Optional

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from spiffe import SpiffeId, WorkloadApiClient


class PeerRefused(Exception):
    """The peer's certificate verified, but it is not an allowed X509-SVID."""


class SpiffeTls:
    def __init__(self, socket_path: str, allowed_ids: Iterable[str], server: bool, timeout: float = 10.0):
        self.allowed = [str(SpiffeId(i)) for i in allowed_ids]
        if not self.allowed:
            raise ValueError("give at least one allowed SPIFFE ID")
        self.trust_domains = {SpiffeId(i).trust_domain for i in self.allowed}
        self.server = server
        self._lock = threading.Lock()
        self._ctx: Optional[ssl.SSLContext] = None
        self._ready = threading.Event()
        self._error: Optional[Exception] = None
        self.client = WorkloadApiClient(socket_path=f"unix:{socket_path}", default_timeout=timeout)
        self._stream = self.client.stream_x509_contexts(self._on_update, self._on_error)
        if not self._ready.wait(timeout):
            self.close()
            raise TimeoutError(f"no X.509-SVID from the Workload API within {timeout}s: {self._error!r}")

    # --- SVID and bundle updates -------------------------------------------------------
    def _on_update(self, context) -> None:
        try:
            ctx = self._build(context)
        except Exception as e:  # noqa: BLE001 - keep the previous context on a bad update
            self._error = e
            return
        with self._lock:
            self._ctx = ctx
        self._ready.set()

    def _on_error(self, e: Exception) -> None:
        self._error = e

    def _build(self, context) -> ssl.SSLContext:
        svid = context.default_svid
        self.spiffe_id = str(svid.spiffe_id)
        pem = lambda c: c.public_bytes(serialization.Encoding.PEM)  # noqa: E731
        roots = []
        for td in self.trust_domains:
            bundle = context.x509_bundle_set.get_bundle_for_trust_domain(td)
            if bundle is not None:
                roots.extend(bundle.x509_authorities)
        if not roots:
            raise ValueError(f"no bundle for {sorted(str(t) for t in self.trust_domains)}")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if self.server else ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = False  # replaced by SPIFFE-ID authorization in verify_peer()
        ctx.verify_mode = ssl.CERT_REQUIRED
        # ssl loads keys from files only: a private 0700 directory, a 0600 key file, removed at once.
        d = tempfile.mkdtemp(prefix="spiffe-tls-")
        try:
            chain_path, key_path = os.path.join(d, "svid.pem"), os.path.join(d, "svid.key")
            with open(os.open(chain_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                f.write(b"".join(pem(c) for c in svid.cert_chain))
            key = svid.private_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            with open(os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                f.write(key)
            ctx.load_cert_chain(chain_path, key_path)
        finally:
            shutil.rmtree(d, ignore_errors=True)
        ctx.load_verify_locations(cadata="".join(pem(c).decode() for c in roots))
        return ctx

    def context(self) -> ssl.SSLContext:
        with self._lock:
            assert self._ctx is not None
            return self._ctx

    # --- the replacement for hostname verification -------------------------------------
    def verify_peer(self, sock: ssl.SSLSocket) -> str:
        """Return the peer's SPIFFE ID, or raise PeerRefused."""
        info = sock.getpeercert()
        der = sock.getpeercert(binary_form=True)
        if not info or not der:
            raise PeerRefused("peer presented no certificate")
        uris = [v for (k, v) in info.get("subjectAltName", ()) if k == "URI"]
        if len(uris) != 1:
            raise PeerRefused(f"an X509-SVID has exactly one URI SAN, this one has {len(uris)}")
        try:
            peer = SpiffeId(uris[0])
        except Exception as e:  # noqa: BLE001
            raise PeerRefused(f"URI SAN {uris[0]!r} is not a SPIFFE ID: {e}") from e
        leaf = x509.load_der_x509_certificate(der)
        try:
            bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
            if bc.ca:
                raise PeerRefused("leaf is a CA certificate")
        except x509.ExtensionNotFound:
            pass
        try:
            ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound as e:
            raise PeerRefused("leaf has no key usage") from e
        if not ku.digital_signature or ku.key_cert_sign or ku.crl_sign:
            raise PeerRefused("leaf key usage is not that of an X509-SVID")
        # Only the allowed IDs' bundles are trust anchors (see the module docstring).
        if str(peer) not in self.allowed:
            raise PeerRefused(f"SPIFFE ID {peer} is not allowed")
        return str(peer)

    def close(self) -> None:
        try:
            self._stream.cancel()
        finally:
            self.client.close()
