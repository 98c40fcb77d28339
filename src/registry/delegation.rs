//! Delegation policy as the registry holds it: the trusted subject-token issuers (with their keys,
//! loaded with each config), the token socket, and each entry's `[entries.delegation]` policy
//! (parsed and checked in `config::delegation`; enforced by the delegation service).

use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// An identity provider whose user tokens agents may exchange (`[[delegation.issuers]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TrustedIssuer {
    /// The exact `iss` of its tokens.
    pub issuer: String,
    /// Its JWK Set, read from this file (reloaded when it changes).
    pub jwks_path: PathBuf,
    /// The audience its tokens must name for tessera to accept them.
    pub audience: String,
}

/// Delegation is configured: the token socket and the trusted issuers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DelegationConfig {
    /// The RFC 8693 token endpoint (HTTP/1.1 on a Unix socket, mode 0777: attestation decides).
    pub token_socket_path: PathBuf,
    pub issuers: Vec<TrustedIssuer>,
}

/// One entry's delegation policy (`[entries.delegation]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryDelegation {
    /// Allowed immediate delegators: an issuer (first hop) or an agent's SPIFFE ID (later hop).
    pub from: Vec<String>,
    /// Scopes this agent may ever hold on a user's behalf.
    pub scopes: Vec<String>,
    /// Audiences it may ask tokens for.
    pub audiences: Vec<String>,
    pub max_ttl: Duration,
    /// Actors in the new token's chain, this agent included (1: directly for a user).
    pub max_depth: u32,
    /// Scopes that need a human's yes.
    pub approval: Vec<String>,
}

pub(crate) const DEFAULT_MAX_TTL: Duration = Duration::from_secs(300);
pub(crate) const MAX_MAX_TTL: Duration = Duration::from_secs(86400);
pub(crate) const DEFAULT_MAX_DEPTH: u32 = 1;
pub(crate) const MAX_DEPTH_LIMIT: u32 = 16;

/// RFC 6749 §3.3 scope-token: 1*( %x21 / %x23-5B / %x5D-7E ), here at most 128 bytes.
pub(crate) fn valid_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes().all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// The configured identity providers with their keys, loaded with each config (reload included).
#[derive(Debug, Default)]
pub(crate) struct Issuers {
    issuers: Vec<(TrustedIssuer, crate::bundle::JwtBundle)>,
}

impl Issuers {
    /// Read every issuer's JWKS file. A file that cannot be read or holds no usable key refuses
    /// the config (start or reload), as a federated bundle does.
    pub(crate) fn load(issuers: &[TrustedIssuer]) -> Result<Self, crate::bundle::federation::BundleError> {
        let mut out = Vec::new();
        for i in issuers {
            let path = i.jwks_path.display().to_string();
            let bytes = std::fs::read(&i.jwks_path)
                .map_err(|source| crate::bundle::federation::BundleError::Read { path: path.clone(), source })?;
            let doc: Value = serde_json::from_slice(&bytes).map_err(|e| {
                crate::bundle::federation::BundleError::Format { path: path.clone(), reason: e.to_string() }
            })?;
            let keys = doc.get("keys").and_then(Value::as_array).ok_or_else(|| {
                crate::bundle::federation::BundleError::Format {
                    path: path.clone(),
                    reason: "no \"keys\" array".into(),
                }
            })?;
            let usable: Vec<crate::bundle::jwks::Jwk> = keys
                .iter()
                .filter_map(crate::bundle::jwks::Jwk::parse)
                .filter_map(|k| crate::bundle::jwks::signing_jwk(&k))
                .collect();
            if usable.is_empty() {
                return Err(crate::bundle::federation::BundleError::Empty { path });
            }
            out.push((i.clone(), crate::bundle::JwtBundle::new(usable)));
        }
        Ok(Self { issuers: out })
    }

    pub(crate) fn find(&self, iss: &str) -> Option<&(TrustedIssuer, crate::bundle::JwtBundle)> {
        self.issuers.iter().find(|(i, _)| i.issuer == iss)
    }
}
