//! A throwaway CA for unit tests that need real certificates (the SPIFFE server verifier, the
//! SPIRE agent's state): a self-signed root of `spiffe://example.org`, made with rcgen.

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};

pub(crate) struct TestCa {
    pub(crate) der: Vec<u8>,
    pub(crate) issuer: Issuer<'static, KeyPair>,
}

/// A fresh root CA for `spiffe://example.org`.
#[allow(clippy::unwrap_used, reason = "test values")]
pub(crate) fn ca() -> TestCa {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.subject_alt_names = vec![SanType::URI("spiffe://example.org".try_into().unwrap())];
    let der = p.self_signed(&key).unwrap().der().to_vec();
    TestCa { der, issuer: Issuer::new(p, key) }
}
