//! The one verifier of a SPIFFE server's TLS certificate, for every connection tessera makes to
//! a server that authenticates with an X.509-SVID: a federation partner's bundle endpoint
//! (`https_spiffe`) and the SPIRE Server (`spiffe://<td>/spire/server`).
//!
//! The rule (X509-SVID.md, leaf): the chain verifies up to the given trust bundle for TLS server
//! use; the leaf carries exactly one URI SAN (other SAN types are allowed), it is a valid SPIFFE
//! ID with a path, and it equals the expected ID; a leaf that may sign certificates or CRLs is
//! refused. Host names play no part (an SVID need not carry DNS names). Handshake signatures are
//! checked with the aws-lc-rs provider's algorithms.

use crate::spiffe_id::SpiffeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, RootCertStore, SignatureScheme};
use std::sync::Arc;

/// Verifies a server's certificate by the SPIFFE rule above.
#[derive(Debug)]
pub(crate) struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: SpiffeId,
    /// What the roots are, for messages ("the partner's bundle").
    bundle: &'static str,
    provider: Arc<CryptoProvider>,
}

impl SpiffeServerVerifier {
    /// Trust the usable ones of `roots` (DER; at least one must be) and only `expected`. A root
    /// the TLS stack cannot use is skipped, as before one verifier served both uses: one odd
    /// certificate in a partner's bundle must not freeze every later refresh of that bundle.
    pub(crate) fn new(roots: &[Vec<u8>], expected: SpiffeId, bundle: &'static str) -> Result<Self, String> {
        let mut store = RootCertStore::empty();
        let (_, skipped) =
            store.add_parsable_certificates(roots.iter().map(|r| CertificateDer::from(r.as_slice()).into_owned()));
        if store.is_empty() {
            return Err(format!("no usable root ({skipped} unusable)"));
        }
        if skipped > 0 {
            tracing::warn!(skipped, bundle, "roots the TLS stack cannot use are skipped");
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        Ok(Self { roots: Arc::new(store), expected, bundle, provider })
    }
}

/// A refusal with its reason: shown as "invalid peer certificate: Other(OtherError(<reason>))".
struct Refused(String);

impl std::fmt::Debug for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

pub(crate) fn refuse(reason: String) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refused(reason)))))
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let parsed = ParsedCertificate::try_from(end_entity)
            .map_err(|e| refuse(format!("server certificate does not parse: {e}")))?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )
        .map_err(|e| {
            let why = match e {
                Error::InvalidCertificate(c) => format!("{c}"),
                other => other.to_string(),
            };
            refuse(format!("server certificate does not chain to {}: {why}", self.bundle))
        })?;
        check_leaf(end_entity, &self.expected).map_err(refuse)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The leaf rule: exactly one URI SAN, a SPIFFE ID with a path, equal to `expected`; not a
/// certificate that may sign certificates or CRLs.
pub(crate) fn check_leaf(der: &[u8], expected: &SpiffeId) -> Result<(), String> {
    let uris = uri_sans(der)?;
    let [one] = uris.as_slice() else {
        return Err(format!("server presented URI SANs {uris:?}, expected SPIFFE ID {expected} as the only one"));
    };
    let id = SpiffeId::parse_workload(one).map_err(|e| {
        format!("server presented {one:?}, not a SPIFFE ID of a leaf ({e}); expected SPIFFE ID {expected}")
    })?;
    if id != *expected {
        return Err(format!("server presented {id}, expected SPIFFE ID {expected}"));
    }
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("server certificate: {e}"))?;
    if let Some(ku) = cert.key_usage().map_err(|e| format!("server certificate key usage: {e}"))?
        && (ku.value.key_cert_sign() || ku.value.crl_sign())
    {
        return Err(format!("server certificate of {id} may sign certificates or CRLs: not a leaf SVID"));
    }
    Ok(())
}

/// A client's X.509-SVID leaf by the same rule, without an expected ID: exactly one URI SAN, a
/// SPIFFE ID with a path (its trust domain chooses the bundle the chain must verify against);
/// not a certificate that may sign certificates or CRLs.
pub(crate) fn client_leaf_id(der: &[u8]) -> Result<SpiffeId, String> {
    let uris = uri_sans(der)?;
    let [one] = uris.as_slice() else {
        let n = uris.len();
        return Err(format!("the client certificate has {n} URI SANs: an X.509-SVID has exactly one"));
    };
    let id = SpiffeId::parse_workload(one)
        .map_err(|e| format!("the client certificate's URI SAN is not a SPIFFE ID ({e})"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("client certificate: {e}"))?;
    if let Some(ku) = cert.key_usage().map_err(|e| format!("client certificate key usage: {e}"))?
        && (ku.value.key_cert_sign() || ku.value.crl_sign())
    {
        return Err(format!("the client certificate of {id} may sign certificates or CRLs: not a leaf SVID"));
    }
    Ok(id)
}

/// The URI SANs of a DER certificate, in order.
pub fn uri_sans(der: &[u8]) -> Result<Vec<String>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("certificate: {e}"))?;
    let san = cert.subject_alternative_name().map_err(|e| format!("certificate SAN: {e}"))?;
    Ok(san
        .map(|s| {
            s.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::ca::test_pki::{TestCa as Ca, ca};
    use rcgen::{CertificateParams, IsCa, KeyPair, KeyUsagePurpose, SanType};

    const ID: &str = "spiffe://example.org/spire/server";

    /// A server certificate signed by `ca` with these SANs (and `extra` key usages).
    fn leaf(ca: &Ca, sans: Vec<SanType>, extra: &[KeyUsagePurpose]) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = sans;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = [&[KeyUsagePurpose::DigitalSignature], extra].concat();
        p.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        p.signed_by(&key, &ca.issuer).unwrap().der().to_vec()
    }

    fn uri(s: &str) -> SanType {
        SanType::URI(s.try_into().unwrap())
    }

    fn verify(roots: &[&Vec<u8>], leaf: &[u8]) -> Result<(), String> {
        let roots: Vec<Vec<u8>> = roots.iter().map(|r| (*r).clone()).collect();
        let v = SpiffeServerVerifier::new(&roots, SpiffeId::parse_workload(ID).unwrap(), "the test bundle").unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        v.verify_server_cert(&CertificateDer::from(leaf), &[], &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn one_uri_san_naming_the_expected_id_is_accepted() {
        let ca = ca();
        verify(&[&ca.der], &leaf(&ca, vec![uri(ID)], &[])).unwrap();
        // Other SAN types beside the one URI SAN are allowed; the host name plays no part.
        verify(&[&ca.der], &leaf(&ca, vec![SanType::DnsName("localhost".try_into().unwrap()), uri(ID)], &[])).unwrap();
    }

    #[test]
    fn two_uri_sans_are_refused_even_if_one_is_expected() {
        let ca = ca();
        let e = verify(&[&ca.der], &leaf(&ca, vec![uri(ID), uri("spiffe://example.org/other")], &[])).unwrap_err();
        assert!(e.contains("invalid peer certificate") && e.contains("as the only one"), "{e}");
        let e = verify(&[&ca.der], &leaf(&ca, vec![uri(ID), uri(ID)], &[])).unwrap_err();
        assert!(e.contains("as the only one"), "{e}");
    }

    #[test]
    fn no_uri_san_is_refused() {
        let ca = ca();
        let e =
            verify(&[&ca.der], &leaf(&ca, vec![SanType::DnsName("localhost".try_into().unwrap())], &[])).unwrap_err();
        assert!(e.contains("URI SANs []"), "{e}");
    }

    #[test]
    fn another_spiffe_id_is_refused() {
        let ca = ca();
        for other in ["spiffe://example.org/spire/agent", "spiffe://other.org/spire/server", "spiffe://example.org"] {
            let e = verify(&[&ca.der], &leaf(&ca, vec![uri(other)], &[])).unwrap_err();
            assert!(e.contains(&format!("expected SPIFFE ID {ID}")), "{other}: {e}");
        }
    }

    #[test]
    fn a_uri_that_is_not_a_spiffe_id_is_refused() {
        let ca = ca();
        for other in [
            "https://example.org/spire/server",
            "SPIFFE://example.org/spire/server",
            "spiffe://example.org/spire/server/",
        ] {
            let e = verify(&[&ca.der], &leaf(&ca, vec![uri(other)], &[])).unwrap_err();
            assert!(e.contains("not a SPIFFE ID"), "{other}: {e}");
        }
    }

    #[test]
    fn a_chain_to_another_ca_is_refused() {
        let (ca, impostor) = (ca(), ca());
        let e = verify(&[&ca.der], &leaf(&impostor, vec![uri(ID)], &[])).unwrap_err();
        assert!(e.contains("invalid peer certificate") && e.contains("does not chain to the test bundle"), "{e}");
        // Either root of a bundle may be the one.
        verify(&[&ca.der, &impostor.der], &leaf(&impostor, vec![uri(ID)], &[])).unwrap();
    }

    #[test]
    fn a_signing_certificate_is_not_a_leaf() {
        let ca = ca();
        let e = verify(&[&ca.der], &leaf(&ca, vec![uri(ID)], &[KeyUsagePurpose::KeyCertSign])).unwrap_err();
        assert!(e.contains("may sign"), "{e}");
        let e = verify(&[&ca.der], &leaf(&ca, vec![uri(ID)], &[KeyUsagePurpose::CrlSign])).unwrap_err();
        assert!(e.contains("may sign"), "{e}");
    }

    #[test]
    fn roots_must_be_usable() {
        let id = SpiffeId::parse_workload(ID).unwrap();
        assert!(SpiffeServerVerifier::new(&[], id.clone(), "b").is_err());
        assert!(SpiffeServerVerifier::new(&[b"not a certificate".to_vec()], id.clone(), "b").is_err());
        // One unusable root beside a usable one is skipped, not fatal.
        let ca = ca();
        assert!(SpiffeServerVerifier::new(&[b"not a certificate".to_vec(), ca.der.clone()], id, "b").is_ok());
    }

    #[test]
    fn a_client_leaf_names_one_spiffe_id() {
        let ca = ca();
        assert_eq!(client_leaf_id(&leaf(&ca, vec![uri(ID)], &[])).unwrap().to_string(), ID);
        let e = client_leaf_id(&leaf(&ca, vec![uri(ID), uri("spiffe://example.org/b")], &[])).unwrap_err();
        assert!(e.contains("2 URI SANs"), "{e}");
        assert!(client_leaf_id(&leaf(&ca, vec![], &[])).unwrap_err().contains("0 URI SANs"));
        assert!(
            client_leaf_id(&leaf(&ca, vec![uri("https://example.org/a")], &[]))
                .unwrap_err()
                .contains("not a SPIFFE ID")
        );
        assert!(
            client_leaf_id(&leaf(&ca, vec![uri(ID)], &[KeyUsagePurpose::KeyCertSign]))
                .unwrap_err()
                .contains("may sign")
        );
        assert!(client_leaf_id(b"garbage").is_err());
    }

    #[test]
    fn uri_sans_in_order() {
        let ca = ca();
        let der =
            leaf(&ca, vec![uri(ID), SanType::DnsName("a.test".try_into().unwrap()), uri("spiffe://x.test/y")], &[]);
        assert_eq!(uri_sans(&der).unwrap(), vec![ID.to_owned(), "spiffe://x.test/y".to_owned()]);
        assert!(uri_sans(b"garbage").is_err());
    }
}
