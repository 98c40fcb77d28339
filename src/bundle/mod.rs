//! Trust bundles, typed: an X.509 bundle (certificates) and a JWT bundle (JWKs) per trust
//! domain, parsed once when they are made or loaded, and turned into the Workload API's bytes
//! (concatenated DER, JWK Set JSON) only at the endpoint.
//!
//! [`jwks`] encodes and decodes JWKs; [`federation`] reads federated bundles from files;
//! [`verifier`] authenticates a server by its SVID against a bundle (partner endpoints, SPIRE).

pub(crate) mod endpoint;
pub(crate) mod federation;
pub(crate) mod fetch;
pub(crate) mod jwks;
pub(crate) mod verifier;

use crate::ca::Authorities;
use serde_json::json;

/// X.509 trust anchors of one trust domain, one DER certificate each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct X509Bundle {
    certs: Vec<Vec<u8>>,
}

impl X509Bundle {
    pub(crate) fn new(certs: Vec<Vec<u8>>) -> Self {
        Self { certs }
    }
    /// The local bundle: the CA's roots.
    pub(crate) fn local(auth: &Authorities) -> Self {
        Self::new(auth.bundle_certs().to_vec())
    }
    pub(crate) fn certs(&self) -> &[Vec<u8>] {
        &self.certs
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }
    /// The Workload API encoding: concatenated DER.
    pub(crate) fn to_der(&self) -> Vec<u8> {
        self.certs.concat()
    }
}

/// JWT verification keys of one trust domain (JWKs with a `kid`, `use` jwt-svid or unset).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JwtBundle {
    keys: Vec<jwks::Jwk>,
}

impl JwtBundle {
    pub fn new(keys: Vec<jwks::Jwk>) -> Self {
        Self { keys }
    }
    /// The local bundle: the CA's JWT keys.
    pub fn local(auth: &Authorities) -> Self {
        Self::new(auth.jwt.iter().map(|k| jwks::jwk(k)).collect())
    }
    pub fn len(&self) -> usize {
        self.keys.len()
    }
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
    pub fn keys(&self) -> &[jwks::Jwk] {
        &self.keys
    }
    /// The verification key with `kid`, if the bundle has a usable one.
    pub fn find(&self, kid: &str) -> Option<jwks::VerifyKey> {
        jwks::find_key(&self.keys, kid)
    }
    /// The Workload API encoding: a JWK Set document.
    pub fn to_jwks(&self) -> Vec<u8> {
        serde_json::to_vec(&json!({ "keys": self.keys })).unwrap_or_default()
    }
}

/// A federated trust domain's bundle.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FederatedBundle {
    pub x509: X509Bundle,
    pub jwt: JwtBundle,
    /// The partner's delegation keys (tessera nodes publish them with `use: tessera-delegation`,
    /// which SPIFFE validators skip): they verify its delegated tokens at a later hop.
    pub delegation: JwtBundle,
}
