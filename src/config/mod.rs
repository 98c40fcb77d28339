//! The TOML configuration: parsed with source positions so every error names the file, the line,
//! the key and what to write instead. `tessera check` and `tessera run` share [`Config::load`].
//!
//! `schema` is the file's shape (the serde `Raw*` types), `validator` the located-error machinery
//! and shared value checks, `sections` and `entries` the top-level checks by concern; the
//! sections with their own keys have their own modules. Dev mode (`dev`) is a built-in config
//! that goes through the same validator.

mod agents;
pub(crate) mod approvals;
pub(crate) mod delegation;
mod details;
pub(crate) mod dev;
mod entries;
pub(crate) mod gateway;
pub(crate) mod guard;
pub(crate) mod policy;
pub(crate) mod publish;
mod schema;
mod sections;
pub(crate) mod spire;
pub(crate) mod telemetry;
#[cfg(test)]
mod tests;
mod validator;

use crate::registry::Registry;
use crate::spiffe_id::TrustDomain;
use schema::{RawConfig, RawEntry};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tessera_attestors::AttestConfig;
use validator::Validator;
pub(crate) use validator::{ConfigError, ConfigIssue};

pub(crate) const DEFAULT_SOCKET: &str = "/run/tessera/api.sock";
pub(crate) const DEFAULT_ADMIN_SOCKET: &str = "/run/tessera/admin.sock";
pub(crate) const DEFAULT_DATA_DIR: &str = "/var/lib/tessera";
const DEFAULT_X509_TTL: Duration = Duration::from_secs(600);
const DEFAULT_JWT_TTL: Duration = Duration::from_secs(300);
const DEFAULT_CA_TTL: Duration = Duration::from_secs(7 * 86400);
const DEFAULT_REATTEST: Duration = Duration::from_secs(30);
const DEFAULT_MAX_HASH: u64 = 1 << 30;
/// Upper bounds, so every duration `check` accepts can be added to a timestamp at run time.
const MAX_SVID_TTL: Duration = Duration::from_secs(365 * 86400);
const MAX_CA_TTL: Duration = Duration::from_secs(10 * 365 * 86400);
const MAX_REATTEST: Duration = Duration::from_secs(86400);
/// Smallest audit file size before rotation (a line is at most 16 KiB).
const MIN_AUDIT_SIZE: u64 = 64 * 1024;

/// An operator's root CA on disk, used to sign the node's intermediate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Upstream {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Roots to publish as the trust bundle (default: the upstream cert itself).
    pub bundle: Option<PathBuf>,
}

/// A foreign trust domain whose bundle is read from a file (SPIFFE bundle JSON or PEM) and/or
/// fetched from its bundle endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Federation {
    pub trust_domain: TrustDomain,
    /// With an endpoint: the initial bundle, used until the first fetch succeeds.
    pub bundle_path: Option<PathBuf>,
    pub endpoint: Option<publish::FederationEndpoint>,
}

/// The validated configuration the daemon runs with.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Where it came from (None for the built-in dev default).
    pub source: Option<PathBuf>,
    pub trust_domain: TrustDomain,
    pub socket_path: PathBuf,
    pub socket_mode: u32,
    /// The privileged admin socket (inventory, revocation, approvals, metrics).
    pub admin_socket_path: PathBuf,
    /// Its group (mode 0660), as a gid; None: 0600, the daemon's user only.
    pub admin_socket_group: Option<u32>,
    pub data_dir: PathBuf,
    pub audit_log: PathBuf,
    /// Audit rotation and refusal aggregation.
    pub audit: crate::events::audit::AuditOptions,
    pub jwt_issuer: Option<String>,
    /// The token socket and trusted issuers, when delegation is configured.
    pub delegation: Option<crate::registry::delegation::DelegationConfig>,
    /// `[approvals]`: the webhook and the users' decision listener.
    pub approvals: Option<approvals::ApprovalsConfig>,
    pub ca_ttl: Duration,
    /// The node CA as an intermediate under an operator's root (None: self-signed root).
    pub upstream: Option<Upstream>,
    /// Streams are re-attested at least this often (drift detection).
    pub reattest_interval: Duration,
    pub federation: Vec<Federation>,
    /// OIDC discovery and JWKS (`[oidc]`).
    pub oidc: Option<publish::Oidc>,
    /// The SPIFFE bundle endpoint (`[bundle_endpoint]`).
    pub bundle_endpoint: Option<publish::BundleEndpoint>,
    pub attest: AttestConfig,
    pub registry: Registry,
    /// `[[deny]]` rules (runtime revocations are added by the daemon).
    pub deny: Vec<std::sync::Arc<crate::registry::DenyRule>>,
    /// Problems that do not stop the config from loading (`tessera check` prints them).
    pub warnings: Vec<ConfigIssue>,
    /// The built-in default for newcomers: loud warnings, per-user paths.
    pub dev_mode: bool,
    /// Metrics and health over TCP (`[telemetry]`).
    pub telemetry: telemetry::Telemetry,
    /// SPIRE mode: entries, SVIDs and bundles from a SPIRE Server (None: standalone).
    pub spire: Option<spire::SpireConfig>,
    /// The node gateway (`[gateway]`): routes, credentials, listeners.
    pub gateway: Option<gateway::Gateway>,
    /// `[policy]`: the Cedar policies, loaded (None: the fixed rules alone).
    pub policy: Option<policy::PolicyConfig>,
    /// `[[guard]]`: guards in front of protected services.
    pub guards: Vec<std::sync::Arc<guard::Guard>>,
    /// `[discovery] interval`: the daemon's periodic scan for unmanaged agents (None: off).
    pub discovery: Option<crate::discovery::Periodic>,
}

impl Config {
    /// Read and validate a config file.
    pub(crate) fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            issues: vec![ConfigIssue {
                file: None,
                line: 0,
                key: "(file)".into(),
                message: format!("cannot read: {e}"),
                fix: "check the path given to --config".into(),
            }],
        })?;
        Self::parse(&text, path)
    }

    /// Validate config text; `path` is used for messages and to resolve nothing else.
    pub(crate) fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw =
            RawConfig::from_toml(text).map_err(|issue| ConfigError { file: path.to_owned(), issues: vec![issue] })?;
        Self::validate(text, raw, path)
    }

    /// Run the validator over `raw`, read from `text` (for line numbers); `path` names the file in
    /// messages and becomes `source`.
    fn validate(text: &str, raw: RawConfig, path: &Path) -> Result<Self, ConfigError> {
        let mut v = Validator::new(text);
        match v.config(raw, path) {
            Some(mut cfg) if v.issues.is_empty() => {
                cfg.warnings = v.warnings;
                cfg.load_policies(v.policy_files.take())?;
                Ok(cfg)
            }
            _ => Err(ConfigError { file: path.to_owned(), issues: v.issues }),
        }
    }
}

/// `name` in the directory of `socket` (the other sockets live beside the Workload API's).
pub(crate) fn beside(socket: &Path, name: &str) -> PathBuf {
    socket.parent().map(|d| d.join(name)).unwrap_or_else(|| PathBuf::from(name))
}
