//! X.509-SVIDs that pass every MUST of `standards/X509-SVID.md`: one URI SAN, critical key usage
//! with digitalSignature, cA=false, serverAuth+clientAuth, random serial, SKI/AKI, fresh key.

use crate::ca::X509Authority;
use crate::ca::serial::{hex, random_serial};
use crate::registry::Entry;
use crate::secret::PrivateKey;
use crate::spiffe_id::SpiffeId;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType,
};
use std::time::{Duration, SystemTime};

/// A freshly minted X.509-SVID. The key never leaves this struct except into a response.
pub struct X509Svid {
    pub spiffe_id: SpiffeId,
    /// DER certificates, leaf first, concatenated (the Workload API's `x509_svid`).
    pub chain_der: Vec<u8>,
    /// PKCS#8 DER private key (the Workload API's `x509_svid_key`).
    key: PrivateKey,
    pub serial_hex: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub hint: Option<String>,
}

impl std::fmt::Debug for X509Svid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("X509Svid")
            .field("spiffe_id", &self.spiffe_id)
            .field("serial", &self.serial_hex)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl X509Svid {
    /// The PKCS#8 DER private key, for the one place it goes: the Workload API response.
    pub fn key_pkcs8(&self) -> &[u8] {
        self.key.expose()
    }

    /// An SVID signed elsewhere (a SPIRE Server) for a key generated here.
    pub fn from_parts(
        spiffe_id: SpiffeId,
        chain_der: Vec<u8>,
        key: PrivateKey,
        serial_hex: String,
        validity: (SystemTime, SystemTime),
        hint: Option<String>,
    ) -> Self {
        Self { spiffe_id, chain_der, key, serial_hex, not_before: validity.0, not_after: validity.1, hint }
    }
}

/// Generates (and drops) one key, so that the first SVID after start does not pay the key
/// generator's one-time setup.
pub fn prewarm() {
    let _ = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256);
}

/// Mint an SVID for `entry`, signed by `authority`, with `intermediates` appended to the chain.
pub fn mint(entry: &Entry, authority: &X509Authority, now: SystemTime) -> Result<X509Svid, rcgen::Error> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "tessera");
    // As SPIRE does: the first DNS name, if any, is also the CN for clients that still read it.
    if let Some(dns) = entry.dns_names.first() {
        dn.push(DnType::CommonName, dns.as_str());
    }
    params.distinguished_name = dn;
    let mut sans = vec![SanType::URI(entry.spiffe_id.to_string().try_into()?)];
    for dns in &entry.dns_names {
        sans.push(SanType::DnsName(dns.as_str().try_into()?));
    }
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages =
        vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment, KeyUsagePurpose::KeyAgreement];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let serial = random_serial();
    let serial_hex = hex(&serial.to_bytes());
    params.serial_number = Some(serial);
    // Backdate a little for clock skew between processes, as SPIRE does; never outlive the CA.
    let not_before = now - Duration::from_secs(10);
    let not_after = crate::clock::add(now, entry.x509_svid_ttl).min(authority.not_after);
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    let cert = params.signed_by(&key, authority.issuer())?;
    let mut chain_der = cert.der().to_vec();
    chain_der.extend_from_slice(&authority.chain_tail_der);
    Ok(X509Svid {
        spiffe_id: entry.spiffe_id.clone(),
        chain_der,
        key: PrivateKey::new(key.serialize_der()),
        serial_hex,
        not_before,
        not_after,
        hint: entry.hint.clone(),
    })
}
