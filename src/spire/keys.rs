//! Fresh P-256 keys and the CSRs that carry them to the server (it reads only the public key and
//! sets every certificate attribute itself).

use crate::secret::PrivateKey;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use std::time::SystemTime;

pub(crate) struct KeyAndCsr {
    pub key: PrivateKey,
    pub csr: Vec<u8>,
}

pub(crate) fn new_key_and_csr() -> Result<KeyAndCsr, rcgen::Error> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "tessera");
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?.der().to_vec();
    Ok(KeyAndCsr { key: PrivateKey::new(key.serialize_der()), csr })
}

/// The leaf's validity and serial (hex), from DER.
pub(crate) fn leaf_facts(der: &[u8]) -> Result<(SystemTime, SystemTime, String), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("certificate does not parse: {e}"))?;
    let secs = |t: x509_parser::time::ASN1Time| {
        u64::try_from(t.timestamp()).map(|s| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s))
    };
    let nb = secs(cert.validity().not_before).map_err(|_| "notBefore before 1970".to_owned())?;
    let na = secs(cert.validity().not_after).map_err(|_| "notAfter before 1970".to_owned())?;
    let serial = cert.raw_serial().iter().map(|b| format!("{b:02x}")).collect();
    Ok((nb, na, serial))
}

/// Unix seconds of a time (0 before 1970).
pub(crate) fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)).unwrap_or(0)
}

pub(crate) fn from_unix(s: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(s).unwrap_or(0))
}
