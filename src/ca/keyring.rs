//! The key ring: a consistent, immutable snapshot of every signing key the CA holds, of every kind,
//! with what signs now and what the bundles contain. Private keys are reachable only through the
//! signing methods here.

use super::rotation::{KeyKind, KeyLife, signer_at};
use rcgen::{Issuer, KeyPair};
use std::sync::Arc;
use std::time::SystemTime;

/// One X.509 signing authority (self-signed root, or an intermediate under an upstream root).
pub struct X509Authority {
    pub cert_der: Vec<u8>,
    /// Certificates that follow the leaf in an SVID chain (the intermediate under an upstream root).
    pub chain_tail_der: Vec<u8>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub(super) issuer: Issuer<'static, KeyPair>,
}

impl X509Authority {
    /// The signer for certificates this authority issues (the key stays inside).
    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    fn life(&self) -> KeyLife {
        KeyLife { active_from: self.not_before, not_after: self.not_after }
    }
}

/// One ES256 JWT signing key.
pub struct JwtKey {
    pub kid: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub(super) encoding: jsonwebtoken::EncodingKey,
    /// Uncompressed P-256 point (0x04 || X || Y).
    pub public_point: Vec<u8>,
}

impl JwtKey {
    /// Sign a JWS with this key (the header names the algorithm and kid).
    pub fn sign(
        &self,
        header: &jsonwebtoken::Header,
        claims: &impl serde::Serialize,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(header, claims, &self.encoding)
    }

    fn life(&self) -> KeyLife {
        KeyLife { active_from: self.not_before, not_after: self.not_after }
    }
}

#[cfg(test)]
impl JwtKey {
    /// A fresh P-256 key for unit tests elsewhere in the crate.
    pub(crate) fn for_test(kid: &str, not_before: SystemTime, not_after: SystemTime) -> Self {
        let kp = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        Self {
            kid: kid.into(),
            not_before,
            not_after,
            encoding: jsonwebtoken::EncodingKey::from_ec_der(&kp.serialize_der()),
            public_point: kp.public_key_raw().to_vec(),
        }
    }
}

/// A consistent snapshot of the CA: what signs now and what the bundles contain.
pub struct Authorities {
    /// Oldest first; the newest active one signs.
    pub x509: Vec<Arc<X509Authority>>,
    pub jwt: Vec<Arc<JwtKey>>,
    /// ES256 keys that sign delegated access tokens (`at+jwt`). A kind of their own, never in the
    /// JWT-SVID bundle: a SPIFFE validator must not mistake a user's token for a workload's SVID.
    pub delegation: Vec<Arc<JwtKey>>,
    /// WIT-SVID signing keys (ES256), rotated like the others; never in the JWT bundle.
    pub wit: Vec<Arc<JwtKey>>,
    /// The X.509 trust bundle (DER certificates): our self-signed roots, or the upstream roots.
    pub roots: Vec<Vec<u8>>,
}

impl Authorities {
    /// The ES256 keys of `kind`, oldest first (none for [`KeyKind::X509`]: see `x509`).
    pub fn es256_keys(&self, kind: KeyKind) -> &[Arc<JwtKey>] {
        match kind {
            KeyKind::X509 => &[],
            KeyKind::Jwt => &self.jwt,
            KeyKind::Wit => &self.wit,
            KeyKind::Delegation => &self.delegation,
        }
    }

    /// The lives of the keys of `kind`, oldest first (what [`super::rotation::plan`] reads).
    pub fn lives(&self, kind: KeyKind) -> Vec<KeyLife> {
        match kind {
            KeyKind::X509 => self.x509.iter().map(|a| a.life()).collect(),
            _ => self.es256_keys(kind).iter().map(|k| k.life()).collect(),
        }
    }

    /// The X.509 authority that signs at `now`: the newest whose activation time has come.
    pub fn x509_signer(&self, now: SystemTime) -> Option<&Arc<X509Authority>> {
        signer_at(&self.lives(KeyKind::X509), now).and_then(|i| self.x509.get(i))
    }

    /// The ES256 key of `kind` that signs at `now` (`None` for [`KeyKind::X509`]).
    pub fn signer(&self, kind: KeyKind, now: SystemTime) -> Option<&Arc<JwtKey>> {
        signer_at(&self.lives(kind), now).and_then(|i| self.es256_keys(kind).get(i))
    }

    /// The local X.509 bundle as the Workload API carries it: concatenated DER.
    pub fn x509_bundle_der(&self) -> Vec<u8> {
        self.roots.concat()
    }
    /// The bundle's certificates, one DER each.
    pub fn bundle_certs(&self) -> &[Vec<u8>] {
        &self.roots
    }
}
