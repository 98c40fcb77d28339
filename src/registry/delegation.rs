//! Delegation policy as the registry holds it: the trusted subject-token issuers (with their keys,
//! loaded with each config), the token socket, and each entry's `[entries.delegation]` policy
//! (parsed and checked in `config::delegation`; enforced by the delegation service).

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
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
    /// The declared RFC 9396 `authorization_details` types (`[[delegation.authorization_details]]`).
    pub detail_types: Arc<DetailTypes>,
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
    /// The RFC 9396 `authorization_details` types this agent may request (each declared in
    /// `[[delegation.authorization_details]]`).
    pub authorization_details: Vec<String>,
}

/// The type of one field of a declared `authorization_details` type, named as in Cedar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldType {
    /// A JSON string.
    String,
    /// A JSON integer within i64 (Cedar's `Long`).
    Long,
    /// A JSON boolean.
    Bool,
    /// A JSON array of distinct strings.
    SetOfString,
}

impl FieldType {
    /// Every field type, by its name in the config (and in Cedar).
    pub(crate) const ALL: [FieldType; 4] =
        [FieldType::String, FieldType::Long, FieldType::Bool, FieldType::SetOfString];

    /// The name in the config, which is also the Cedar schema type.
    pub(crate) fn name(self) -> &'static str {
        match self {
            FieldType::String => "String",
            FieldType::Long => "Long",
            FieldType::Bool => "Bool",
            FieldType::SetOfString => "Set<String>",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether a JSON value is of this type (a set: an array of strings, none repeated).
    pub(crate) fn admits(self, v: &Value) -> bool {
        match (self, v) {
            (FieldType::String, Value::String(_)) | (FieldType::Bool, Value::Bool(_)) => true,
            (FieldType::Long, Value::Number(n)) => n.as_i64().is_some(),
            (FieldType::SetOfString, Value::Array(a)) => {
                let mut seen = std::collections::BTreeSet::new();
                a.iter().all(|x| x.as_str().is_some_and(|s| seen.insert(s)))
            }
            _ => false,
        }
    }
}

/// The fields of one declared type: name → type (every one required in a request).
pub(crate) type DetailFields = BTreeMap<String, FieldType>;

/// The declared `authorization_details` types, by type name. The Cedar schema builder reads
/// them (`context.details.<type>.<field>`); the token exchange checks requests against them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DetailTypes {
    types: BTreeMap<String, DetailFields>,
}

impl DetailTypes {
    pub(crate) fn new(types: BTreeMap<String, DetailFields>) -> Self {
        Self { types }
    }

    /// The fields of type `name`, if it is declared.
    pub(crate) fn get(&self, name: &str) -> Option<&DetailFields> {
        self.types.get(name)
    }

    /// Every declared type with its fields, by name (the Cedar schema's `context.details`).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &DetailFields)> {
        self.types.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// A name usable as a type or field name: a Cedar identifier (`context.details.flight_booking.amount`
/// reads it), at most 64 bytes, not a Cedar reserved word, and not `type`.
pub(crate) fn valid_detail_name(s: &str) -> bool {
    const RESERVED: [&str; 11] = ["true", "false", "if", "then", "else", "in", "is", "like", "has", "type", "__cedar"];
    let mut b = s.bytes();
    s.len() <= 64
        && b.next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && !RESERVED.contains(&s)
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
