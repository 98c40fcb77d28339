"""A throwaway CA and one TLS server certificate for the gateway interop's upstream and AS.

    python pki.py DIR      # writes DIR/ca.pem, DIR/server.pem, DIR/server.key (once)

The leaf names api.openai.test, api.anthropic.test, localhost, 127.0.0.1 and ::1, so the gateway can
verify the upstream under whichever of those a route names. upstream.py and oauth_as.py call
ensure(DIR) themselves: whichever starts first makes the files, the other reuses them.
"""

import datetime
import ipaddress
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DNS_NAMES = ["api.openai.test", "api.anthropic.test", "localhost"]
IPS = ["127.0.0.1", "::1"]


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tessera interop"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path, data, mode=0o644):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def ensure(directory):
    """Make the CA and the server certificate under `directory` unless they are there already.
    Returns (ca.pem, server.pem, server.key) paths."""
    os.makedirs(directory, exist_ok=True)
    ca_pem, cert_pem, key_pem = (os.path.join(directory, n) for n in ("ca.pem", "server.pem", "server.key"))
    if all(os.path.exists(p) for p in (ca_pem, cert_pem, key_pem)):
        return ca_pem, cert_pem, key_pem
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("tessera gateway interop CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName(n) for n in DNS_NAMES] + [x509.IPAddress(ipaddress.ip_address(i)) for i in IPS]
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    # The key first, then the certificate and the CA: a reader that sees ca.pem sees all three.
    _write(
        key_pem,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        0o600,
    )
    _write(cert_pem, leaf.public_bytes(serialization.Encoding.PEM))
    _write(ca_pem, ca.public_bytes(serialization.Encoding.PEM))
    return ca_pem, cert_pem, key_pem


def server_context(directory):
    """An ssl server context with the directory's certificate (HTTP/1.1 by ALPN)."""
    import ssl

    _, cert_pem, key_pem = ensure(directory)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_pem, key_pem)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


if __name__ == "__main__":
    print("\n".join(ensure(sys.argv[1])))
