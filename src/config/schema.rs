//! The config file's shape: the serde `Raw*` types the TOML text is read into, with source
//! positions (`Spanned`) on every value an error may need to point at. Unknown keys are refused
//! (`deny_unknown_fields`); the validator turns serde's message into a located error naming the
//! nearest valid key. Sections with their own module (`[oidc]`, `[spire]`, …) keep their raw
//! types there.

use super::validator::syntax_issue;
use super::{ConfigIssue, agents, approvals, delegation, gateway, guard, policy, publish, spire, telemetry};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub trust_domain: Spanned<String>,
    pub socket_path: Option<PathBuf>,
    pub socket_mode: Option<Spanned<String>>,
    pub admin_socket_path: Option<PathBuf>,
    pub admin_socket_group: Option<Spanned<toml::Value>>,
    pub token_socket_path: Option<PathBuf>,
    pub delegation: Option<Spanned<delegation::RawDelegation>>,
    pub approvals: Option<Spanned<approvals::RawApprovals>>,
    pub data_dir: Option<PathBuf>,
    pub audit_log: Option<PathBuf>,
    pub audit_max_size: Option<Spanned<u64>>,
    pub audit_max_files: Option<Spanned<u32>>,
    pub audit_refusals_per_minute: Option<Spanned<u32>>,
    pub audit_refusals_per_minute_total: Option<Spanned<u32>>,
    pub jwt_issuer: Option<String>,
    pub default_x509_svid_ttl: Option<Spanned<String>>,
    pub default_jwt_svid_ttl: Option<Spanned<String>>,
    pub reattest_interval: Option<Spanned<String>>,
    #[serde(default)]
    pub ca: RawCa,
    #[serde(default)]
    pub federation: Vec<Spanned<RawFederation>>,
    #[serde(default)]
    pub oidc: publish::RawOidc,
    #[serde(default)]
    pub bundle_endpoint: publish::RawBundleEndpoint,
    #[serde(default)]
    pub attestors: RawAttestors,
    #[serde(default)]
    pub entries: Vec<Spanned<RawEntry>>,
    #[serde(default)]
    pub telemetry: telemetry::RawTelemetry,
    /// Entries without `owner` are errors (else warnings).
    #[serde(default)]
    pub require_owner: bool,
    #[serde(default)]
    pub deny: Vec<Spanned<agents::RawDeny>>,
    pub spire: Option<Spanned<spire::RawSpire>>,
    pub gateway: Option<Spanned<gateway::RawGateway>>,
    pub policy: Option<Spanned<policy::RawPolicy>>,
    #[serde(default)]
    pub guard: Vec<Spanned<guard::RawGuard>>,
    /// `[discovery]`: signatures and the daemon's periodic scan (`tessera discover` reads it too).
    #[serde(default)]
    pub discovery: crate::discovery::Settings,
}

impl RawConfig {
    /// Read config text; a syntax error, a wrong type or an unknown key is one located issue.
    pub(super) fn from_toml(text: &str) -> Result<Self, ConfigIssue> {
        toml::from_str(text).map_err(|e| syntax_issue(text, &e))
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCa {
    pub ttl: Option<Spanned<String>>,
    pub upstream_cert: Option<Spanned<PathBuf>>,
    pub upstream_key: Option<Spanned<PathBuf>>,
    pub upstream_bundle: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFederation {
    pub trust_domain: Spanned<String>,
    pub bundle_path: Option<Spanned<PathBuf>>,
    pub bundle_endpoint_url: Option<Spanned<String>>,
    pub profile: Option<Spanned<String>>,
    pub endpoint_spiffe_id: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAttestors {
    /// Largest executable hashed, bytes.
    pub max_hash_size: Option<u64>,
    /// Largest script or config file hashed, bytes.
    pub max_script_hash_size: Option<u64>,
    /// Bytes one uid may have hashed per minute.
    pub hash_budget_per_uid: Option<u64>,
    #[serde(default)]
    pub env_allowlist: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEntry {
    pub spiffe_id: Spanned<String>,
    pub selectors: Spanned<Vec<Spanned<String>>>,
    pub x509_svid_ttl: Option<Spanned<String>>,
    pub jwt_svid_ttl: Option<Spanned<String>>,
    #[serde(default)]
    pub dns_names: Vec<Spanned<String>>,
    pub hint: Option<Spanned<String>>,
    #[serde(default)]
    pub federates_with: Vec<Spanned<String>>,
    pub owner: Option<Spanned<String>>,
    pub metadata: Option<Spanned<BTreeMap<String, Spanned<toml::Value>>>>,
    pub retired: Option<bool>,
    pub delegation: Option<Spanned<delegation::RawEntryDelegation>>,
}
