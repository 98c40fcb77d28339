//! The TOML configuration: parsed with source positions so every error names the file, the line,
//! the key and what to write instead. `tessera check` and `tessera run` share [`Config::load`].

mod agents;
pub mod delegation;
pub mod dev;
pub mod publish;
pub mod spire;
pub mod telemetry;

use crate::duration;
use crate::registry::{Entry, Registry};
use crate::spiffe_id::{SpiffeId, TrustDomain};
use serde::Deserialize;
use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tessera_attestors::{AttestConfig, Selector};
use toml::Spanned;

pub const DEFAULT_SOCKET: &str = "/run/tessera/api.sock";
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/tessera/admin.sock";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/tessera";
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

/// One problem in a config file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub line: usize,
    /// Dotted key, e.g. `entries[2].spiffe_id`.
    pub key: String,
    pub message: String,
    /// What to write instead.
    pub fix: String,
}

/// Every problem found in a config file (all of them, not just the first).
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub issues: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.issues.len();
        write!(f, "{} has {n} error{}:", self.file.display(), if n == 1 { "" } else { "s" })?;
        for i in &self.issues {
            write!(f, "\n  {}:{}: {}: {}", self.file.display(), i.line, i.key, i.message)?;
            if !i.fix.is_empty() {
                write!(f, "\n      fix: {}", i.fix)?;
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    trust_domain: Spanned<String>,
    socket_path: Option<PathBuf>,
    socket_mode: Option<Spanned<String>>,
    admin_socket_path: Option<PathBuf>,
    admin_socket_group: Option<Spanned<toml::Value>>,
    token_socket_path: Option<PathBuf>,
    delegation: Option<Spanned<delegation::RawDelegation>>,
    data_dir: Option<PathBuf>,
    audit_log: Option<PathBuf>,
    audit_max_size: Option<Spanned<u64>>,
    audit_max_files: Option<Spanned<u32>>,
    audit_refusals_per_minute: Option<Spanned<u32>>,
    audit_refusals_per_minute_total: Option<Spanned<u32>>,
    jwt_issuer: Option<String>,
    default_x509_svid_ttl: Option<Spanned<String>>,
    default_jwt_svid_ttl: Option<Spanned<String>>,
    reattest_interval: Option<Spanned<String>>,
    #[serde(default)]
    ca: RawCa,
    #[serde(default)]
    federation: Vec<Spanned<RawFederation>>,
    #[serde(default)]
    oidc: publish::RawOidc,
    #[serde(default)]
    bundle_endpoint: publish::RawBundleEndpoint,
    #[serde(default)]
    attestors: RawAttestors,
    #[serde(default)]
    entries: Vec<Spanned<RawEntry>>,
    #[serde(default)]
    telemetry: telemetry::RawTelemetry,
    /// Entries without `owner` are errors (else warnings).
    #[serde(default)]
    require_owner: bool,
    #[serde(default)]
    deny: Vec<Spanned<agents::RawDeny>>,
    spire: Option<Spanned<spire::RawSpire>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCa {
    ttl: Option<Spanned<String>>,
    upstream_cert: Option<Spanned<PathBuf>>,
    upstream_key: Option<Spanned<PathBuf>>,
    upstream_bundle: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFederation {
    trust_domain: Spanned<String>,
    bundle_path: Option<Spanned<PathBuf>>,
    bundle_endpoint_url: Option<Spanned<String>>,
    profile: Option<Spanned<String>>,
    endpoint_spiffe_id: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAttestors {
    /// Largest executable hashed, bytes.
    max_hash_size: Option<u64>,
    /// Largest script or config file hashed, bytes.
    max_script_hash_size: Option<u64>,
    /// Bytes one uid may have hashed per minute.
    hash_budget_per_uid: Option<u64>,
    #[serde(default)]
    env_allowlist: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    spiffe_id: Spanned<String>,
    selectors: Spanned<Vec<Spanned<String>>>,
    x509_svid_ttl: Option<Spanned<String>>,
    jwt_svid_ttl: Option<Spanned<String>>,
    #[serde(default)]
    dns_names: Vec<Spanned<String>>,
    hint: Option<Spanned<String>>,
    #[serde(default)]
    federates_with: Vec<Spanned<String>>,
    owner: Option<Spanned<String>>,
    metadata: Option<Spanned<std::collections::BTreeMap<String, Spanned<toml::Value>>>>,
    retired: Option<bool>,
    delegation: Option<Spanned<delegation::RawEntryDelegation>>,
}

/// An operator's root CA on disk, used to sign the node's intermediate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Roots to publish as the trust bundle (default: the upstream cert itself).
    pub bundle: Option<PathBuf>,
}

/// A foreign trust domain whose bundle is read from a file (SPIFFE bundle JSON or PEM) and/or
/// fetched from its bundle endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Federation {
    pub trust_domain: TrustDomain,
    /// With an endpoint: the initial bundle, used until the first fetch succeeds.
    pub bundle_path: Option<PathBuf>,
    pub endpoint: Option<publish::FederationEndpoint>,
}

/// The validated configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
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
    pub delegation: Option<crate::delegation::policy::DelegationConfig>,
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
}

impl Config {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            issues: vec![ConfigIssue {
                line: 0,
                key: "(file)".into(),
                message: format!("cannot read: {e}"),
                fix: "check the path given to --config".into(),
            }],
        })?;
        Self::parse(&text, path)
    }

    /// Validate config text; `path` is used for messages and to resolve nothing else.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let fail = |issues| ConfigError { file: path.to_owned(), issues };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            fail(vec![ConfigIssue {
                line,
                key: "(syntax)".into(),
                message: e.message().trim().to_owned(),
                fix: "see the README's configuration reference or systemd/tessera.toml".into(),
            }])
        })?;
        let mut v = Validator { text, newlines: Default::default(), issues: Vec::new(), warnings: Vec::new() };
        let cfg = v.config(raw, path);
        match cfg {
            Some(mut cfg) if v.issues.is_empty() => {
                cfg.warnings = v.warnings;
                Ok(cfg)
            }
            _ => Err(fail(v.issues)),
        }
    }
}

/// `name` in the directory of `socket` (the other sockets live beside the Workload API's).
pub fn beside(socket: &Path, name: &str) -> PathBuf {
    socket.parent().map(|d| d.join(name)).unwrap_or_else(|| PathBuf::from(name))
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

fn newline_offsets(text: &str) -> Vec<usize> {
    text.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| i).collect()
}

struct Validator<'a> {
    text: &'a str,
    /// Byte offsets of the text's newlines, computed at the first issue: a config of thousands of
    /// entries may warn about each one, and counting from the start every time was quadratic
    /// (100 ms of a 1,000-entry daemon's start).
    newlines: std::sync::OnceLock<Vec<usize>>,
    issues: Vec<ConfigIssue>,
    warnings: Vec<ConfigIssue>,
}

impl Validator<'_> {
    /// The 1-based line of a byte offset.
    fn line(&self, offset: usize) -> usize {
        let newlines = self.newlines.get_or_init(|| newline_offsets(self.text));
        newlines.partition_point(|&n| n < offset.min(self.text.len())) + 1
    }

    fn issue<T>(&mut self, at: &Spanned<T>, key: &str, message: String, fix: &str) {
        self.issues.push(ConfigIssue {
            line: self.line(at.span().start),
            key: key.to_owned(),
            message,
            fix: fix.to_owned(),
        });
    }

    fn duration(&mut self, v: &Option<Spanned<String>>, key: &str, default: Duration, max: Duration) -> Duration {
        let Some(s) = v else { return default };
        match duration::parse(s.get_ref()) {
            Ok(d) if d >= Duration::from_secs(1) && d <= max => d,
            Ok(d) if d > max => {
                let max = duration::format(max);
                self.issue(
                    s,
                    key,
                    format!("{:?} is longer than the maximum of {max}", s.get_ref()),
                    &format!("use at most \"{max}\""),
                );
                default
            }
            Ok(_) => {
                self.issue(s, key, format!("{:?} is shorter than one second", s.get_ref()), "use at least \"1s\"");
                default
            }
            Err(e) => {
                self.issue(s, key, e, "write a duration such as \"90s\", \"10m\" or \"1h30m\"");
                default
            }
        }
    }

    /// A group given by name or numeric gid.
    fn group(&mut self, v: &Spanned<toml::Value>, key: &str) -> Option<u32> {
        let fix = "write a group name (admin_socket_group = \"tessera-admins\") or a numeric gid";
        match v.get_ref() {
            toml::Value::Integer(n) => match u32::try_from(*n) {
                Ok(gid) => Some(gid),
                Err(_) => {
                    self.issue(v, key, format!("{n} is not a gid"), fix);
                    None
                }
            },
            toml::Value::String(name) => match nix::unistd::Group::from_name(name) {
                Ok(Some(g)) => Some(g.gid.as_raw()),
                _ => match name.parse::<u32>() {
                    Ok(gid) => Some(gid),
                    Err(_) => {
                        self.issue(v, key, format!("no group named {name:?} on this machine"), fix);
                        None
                    }
                },
            },
            other => {
                self.issue(v, key, format!("expected a group name or gid, found {}", other.type_str()), fix);
                None
            }
        }
    }

    fn config(&mut self, raw: RawConfig, path: &Path) -> Option<Config> {
        let trust_domain = match raw.trust_domain.get_ref().parse::<TrustDomain>() {
            Ok(td) => Some(td),
            Err(e) => {
                self.issue(
                    &raw.trust_domain,
                    "trust_domain",
                    format!("invalid trust domain {:?}: {e}", raw.trust_domain.get_ref()),
                    "write a lowercase DNS-like name, e.g. trust_domain = \"example.org\"",
                );
                None
            }
        };
        let socket_mode = match &raw.socket_mode {
            None => 0o777,
            Some(m) => match u32::from_str_radix(m.get_ref().trim_start_matches("0o"), 8) {
                Ok(mode) if mode <= 0o777 => mode,
                _ => {
                    self.issue(
                        m,
                        "socket_mode",
                        format!("{:?} is not an octal file mode", m.get_ref()),
                        "write e.g. socket_mode = \"0770\"",
                    );
                    0o777
                }
            },
        };
        let admin_socket_group = raw.admin_socket_group.as_ref().and_then(|g| self.group(g, "admin_socket_group"));
        let x509_default =
            self.duration(&raw.default_x509_svid_ttl, "default_x509_svid_ttl", DEFAULT_X509_TTL, MAX_SVID_TTL);
        let jwt_default =
            self.duration(&raw.default_jwt_svid_ttl, "default_jwt_svid_ttl", DEFAULT_JWT_TTL, MAX_SVID_TTL);
        let ca_ttl = self.duration(&raw.ca.ttl, "ca.ttl", DEFAULT_CA_TTL, MAX_CA_TTL);
        let reattest_interval =
            self.duration(&raw.reattest_interval, "reattest_interval", DEFAULT_REATTEST, MAX_REATTEST);
        let mut audit = crate::events::audit::AuditOptions::default();
        if let Some(size) = &raw.audit_max_size {
            if *size.get_ref() < MIN_AUDIT_SIZE {
                self.issue(
                    size,
                    "audit_max_size",
                    format!("{} bytes is below the minimum of {MIN_AUDIT_SIZE}", size.get_ref()),
                    "give a size in bytes of at least 65536, e.g. audit_max_size = 67108864 (64 MiB)",
                );
            } else {
                audit.max_size = *size.get_ref();
            }
        }
        if let Some(files) = &raw.audit_max_files {
            if !(1..=1000).contains(files.get_ref()) {
                self.issue(
                    files,
                    "audit_max_files",
                    format!("{} is outside 1..=1000", files.get_ref()),
                    "keep between 1 and 1000 rotated files, e.g. audit_max_files = 8",
                );
            } else {
                audit.max_files = *files.get_ref();
            }
        }
        for (value, key, slot) in [
            (&raw.audit_refusals_per_minute, "audit_refusals_per_minute", &mut audit.refusals_per_window),
            (
                &raw.audit_refusals_per_minute_total,
                "audit_refusals_per_minute_total",
                &mut audit.refusals_per_window_total,
            ),
        ] {
            match value {
                Some(n) if !(1..=1_000_000).contains(n.get_ref()) => self.issue(
                    n,
                    key,
                    format!("{} is outside 1..=1000000", n.get_ref()),
                    &format!(
                        "give the refusal lines to record per minute before they are only counted, e.g. {key} = 100"
                    ),
                ),
                Some(n) => *slot = *n.get_ref(),
                None => {}
            }
        }
        // One uid's budget is never more than everyone's: the total follows a larger per-uid
        // budget unless given, and a given total below it is an error.
        match &raw.audit_refusals_per_minute_total {
            None => audit.refusals_per_window_total = audit.refusals_per_window_total.max(audit.refusals_per_window),
            Some(total) if *total.get_ref() < audit.refusals_per_window => self.issue(
                total,
                "audit_refusals_per_minute_total",
                format!("{} is below audit_refusals_per_minute ({})", total.get_ref(), audit.refusals_per_window),
                "make the total at least the per-uid budget, or remove it (it then follows the per-uid budget)",
            ),
            Some(_) => {}
        }
        let upstream = match (&raw.ca.upstream_cert, &raw.ca.upstream_key) {
            (None, None) => {
                if let Some(b) = &raw.ca.upstream_bundle {
                    self.issue(
                        b,
                        "ca.upstream_bundle",
                        "upstream_bundle without upstream_cert and upstream_key".into(),
                        "set ca.upstream_cert and ca.upstream_key too, or remove it",
                    );
                }
                None
            }
            (Some(cert), Some(key)) => {
                for (p, k) in [(cert, "ca.upstream_cert"), (key, "ca.upstream_key")]
                    .into_iter()
                    .chain(raw.ca.upstream_bundle.as_ref().map(|b| (b, "ca.upstream_bundle")))
                {
                    if !p.get_ref().is_file() {
                        self.issue(
                            p,
                            k,
                            format!("{} is not a readable file", p.get_ref().display()),
                            "give the path of a PEM file",
                        );
                    }
                }
                Some(Upstream {
                    cert: cert.get_ref().clone(),
                    key: key.get_ref().clone(),
                    bundle: raw.ca.upstream_bundle.as_ref().map(|b| b.get_ref().clone()),
                })
            }
            (Some(c), None) => {
                self.issue(
                    c,
                    "ca.upstream_cert",
                    "upstream_cert without upstream_key".into(),
                    "set ca.upstream_key to the root's private key (PEM)",
                );
                None
            }
            (None, Some(k)) => {
                self.issue(
                    k,
                    "ca.upstream_key",
                    "upstream_key without upstream_cert".into(),
                    "set ca.upstream_cert to the root certificate (PEM)",
                );
                None
            }
        };
        let mut federation = Vec::new();
        for (i, f) in raw.federation.iter().enumerate() {
            let fr = f.get_ref();
            match fr.trust_domain.get_ref().parse::<TrustDomain>() {
                Ok(td) if Some(&td) == trust_domain.as_ref() => self.issue(
                    &fr.trust_domain,
                    &format!("federation[{i}].trust_domain"),
                    "federating with our own trust domain".into(),
                    "name a foreign trust domain",
                ),
                Ok(td) => {
                    if federation.iter().any(|x: &Federation| x.trust_domain == td) {
                        self.issue(
                            f,
                            &format!("federation[{i}]"),
                            format!("{td} is listed twice"),
                            "keep one [[federation]] block per trust domain",
                        );
                    }
                    let raw_endpoint = publish::RawFederationEndpoint {
                        bundle_endpoint_url: fr.bundle_endpoint_url.clone(),
                        profile: fr.profile.clone(),
                        endpoint_spiffe_id: fr.endpoint_spiffe_id.clone(),
                    };
                    let endpoint =
                        self.federation_endpoint(i, &raw_endpoint, fr.bundle_path.is_some(), &fr.trust_domain);
                    let bundle_path = fr.bundle_path.as_ref().map(|p| p.get_ref().clone());
                    federation.push(Federation { trust_domain: td, bundle_path, endpoint })
                }
                Err(e) => self.issue(
                    &fr.trust_domain,
                    &format!("federation[{i}].trust_domain"),
                    format!("invalid trust domain {:?}: {e}", fr.trust_domain.get_ref()),
                    "write a trust domain name such as \"partner.org\"",
                ),
            }
        }

        let mut entries = Vec::new();
        let mut seen: HashSet<(String, BTreeSet<Selector>)> = HashSet::new();
        for (i, raw_entry) in raw.entries.iter().enumerate() {
            let e = raw_entry.get_ref();
            let agent = self.agent_keys(i, e, raw_entry, raw.require_owner);
            if let Some(mut entry) = self.entry(i, e, trust_domain.as_ref(), x509_default, jwt_default) {
                (entry.owner, entry.metadata, entry.retired) = (agent.owner, agent.metadata, agent.retired);
                if !seen.insert((entry.spiffe_id.to_string(), entry.selectors.clone())) {
                    self.issue(
                        raw_entry,
                        &format!("entries[{i}]"),
                        format!("duplicate entry: {} with the same selectors is already registered", entry.spiffe_id),
                        "remove this entry or change its selectors",
                    );
                }
                entries.push(entry);
            }
        }

        for (i, raw_entry) in raw.entries.iter().enumerate() {
            for (j, f) in raw_entry.get_ref().federates_with.iter().enumerate() {
                if let Ok(td) = f.get_ref().parse::<TrustDomain>()
                    && !federation.iter().any(|x| x.trust_domain == td)
                {
                    self.issue(
                        f,
                        &format!("entries[{i}].federates_with[{j}]"),
                        format!("no [[federation]] block for {td}"),
                        &format!("add [[federation]] trust_domain = \"{td}\" bundle_path = \"...\""),
                    );
                }
            }
        }
        let deny = self.deny_rules(&raw.deny);
        let spire = self.spire(raw.spire.as_ref(), &raw.entries);
        let data_dir = raw.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into());
        // Config files named by entries are hashed by the config attestor; nothing else is.
        let config_paths: BTreeSet<PathBuf> =
            entries.iter().flat_map(|e| e.selectors.iter()).filter_map(tessera_attestors::config_path_of).collect();
        // Likewise executables and scripts are hashed only when some entry asks for the digest.
        let wants = |kind: tessera_attestors::Kind| {
            entries
                .iter()
                .flat_map(|e| e.selectors.iter())
                .any(|s| s.kind() == kind && s.value().starts_with("sha256:"))
        };
        let socket_path = raw.socket_path.unwrap_or_else(|| DEFAULT_SOCKET.into());
        let telemetry = self.telemetry(&raw.telemetry);
        let delegation = self.delegation(
            raw.delegation.as_ref(),
            raw.token_socket_path.as_ref(),
            raw.jwt_issuer.as_deref(),
            &raw.entries,
            &socket_path,
        );
        let oidc = self.oidc(&raw.oidc);
        let bundle_endpoint = self.bundle_endpoint(&raw.bundle_endpoint, trust_domain.as_ref());
        Some(Config {
            source: Some(path.to_owned()),
            trust_domain: trust_domain?,
            admin_socket_path: raw.admin_socket_path.unwrap_or_else(|| beside(&socket_path, "admin.sock")),
            admin_socket_group,
            socket_path,
            socket_mode,
            audit_log: raw.audit_log.unwrap_or_else(|| data_dir.join("audit.log")),
            audit,
            data_dir,
            jwt_issuer: raw.jwt_issuer,
            delegation,
            ca_ttl,
            upstream,
            reattest_interval,
            federation,
            oidc,
            bundle_endpoint,
            attest: AttestConfig {
                // A default bound: argv names the script to hash, so without one any local user
                // could make the daemon read a huge (or sparse) file on every cache miss.
                max_hash_size: Some(raw.attestors.max_hash_size.unwrap_or(DEFAULT_MAX_HASH)),
                max_script_hash_size: Some(
                    raw.attestors.max_script_hash_size.unwrap_or(tessera_attestors::DEFAULT_MAX_SCRIPT_HASH_SIZE),
                ),
                want_exe_digest: wants(tessera_attestors::Kind::Unix),
                want_script_digest: wants(tessera_attestors::Kind::Script),
                hash_budget_per_uid: Some(match raw.attestors.hash_budget_per_uid {
                    Some(bytes) => tessera_attestors::HashBudget { bytes, window: Duration::from_secs(60) },
                    None => tessera_attestors::HashBudget::default(),
                }),
                env_allowlist: raw.attestors.env_allowlist,
                config_paths: config_paths.into_iter().collect(),
            },
            registry: Registry::new(entries),
            deny,
            warnings: Vec::new(),
            dev_mode: false,
            telemetry,
            spire,
        })
    }

    fn entry(
        &mut self,
        i: usize,
        e: &RawEntry,
        td: Option<&TrustDomain>,
        x509_default: Duration,
        jwt_default: Duration,
    ) -> Option<Entry> {
        let key = |k: &str| format!("entries[{i}].{k}");
        let id = match SpiffeId::parse_workload(e.spiffe_id.get_ref()) {
            Ok(id) => Some(id),
            Err(err) => {
                self.issue(
                    &e.spiffe_id,
                    &key("spiffe_id"),
                    format!("invalid SPIFFE ID {:?}: {err}", e.spiffe_id.get_ref()),
                    "write spiffe://<trust domain>/<path>, e.g. spiffe://example.org/agents/support",
                );
                None
            }
        };
        if let (Some(id), Some(td)) = (&id, td)
            && id.trust_domain() != td
        {
            self.issue(
                &e.spiffe_id,
                &key("spiffe_id"),
                format!("{id} is outside the trust domain {td}"),
                &format!("write spiffe://{td}{}", id.path()),
            );
        }
        let mut selectors = BTreeSet::new();
        if e.selectors.get_ref().is_empty() {
            self.issue(
                &e.selectors,
                &key("selectors"),
                "an entry needs at least one selector".into(),
                "add e.g. \"unix:uid:1000\"; see `tessera attest PID`",
            );
        }
        for (j, s) in e.selectors.get_ref().iter().enumerate() {
            match s.get_ref().parse::<Selector>() {
                Ok(sel) => {
                    selectors.insert(sel);
                }
                Err(err) => self.issue(
                    s,
                    &format!("entries[{i}].selectors[{j}]"),
                    err.to_string(),
                    "run `tessera attest PID` to see the selectors of a running process",
                ),
            }
        }
        let x509_svid_ttl = self.duration(&e.x509_svid_ttl, &key("x509_svid_ttl"), x509_default, MAX_SVID_TTL);
        let jwt_svid_ttl = self.duration(&e.jwt_svid_ttl, &key("jwt_svid_ttl"), jwt_default, MAX_SVID_TTL);
        for (j, d) in e.dns_names.iter().enumerate() {
            if !valid_dns_name(d.get_ref()) {
                self.issue(
                    d,
                    &format!("entries[{i}].dns_names[{j}]"),
                    format!("{:?} is not a DNS name", d.get_ref()),
                    "write a name such as \"billing.internal\"",
                );
            }
        }
        if let Some(h) = &e.hint
            && h.get_ref().len() > 1024
        {
            self.issue(h, &key("hint"), "hint is longer than 1024 bytes".into(), "shorten the hint");
        }
        let mut federates_with = Vec::new();
        for (j, f) in e.federates_with.iter().enumerate() {
            match f.get_ref().parse::<TrustDomain>() {
                Ok(t) => federates_with.push(t),
                Err(err) => self.issue(
                    f,
                    &format!("entries[{i}].federates_with[{j}]"),
                    format!("invalid trust domain {:?}: {err}", f.get_ref()),
                    "write a trust domain name such as \"partner.org\"",
                ),
            }
        }
        let delegation = self.entry_delegation(i, e.delegation.as_ref());
        Some(Entry {
            spiffe_id: id?,
            selectors,
            x509_svid_ttl,
            jwt_svid_ttl,
            dns_names: e.dns_names.iter().map(|d| d.get_ref().clone()).collect(),
            hint: e.hint.as_ref().map(|h| h.get_ref().clone()),
            federates_with,
            owner: None,
            metadata: Default::default(),
            retired: false,
            delegation,
        })
    }
}

fn valid_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').enumerate().all(|(i, label)| {
            // A leading "*" label allows wildcard DNS SANs.
            (i == 0 && label == "*")
                || (!label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        })
}

#[cfg(test)]
mod tests {

    #[test]
    fn indexed_line_numbers_match_counting() {
        let text = "a = 1\n\nb = 2\nc = \"x\"\n";
        let v = Validator { text, newlines: Default::default(), issues: Vec::new(), warnings: Vec::new() };
        for offset in 0..=text.len() + 3 {
            assert_eq!(v.line(offset), line_of(text, offset), "offset {offset}");
        }
    }
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/tessera/tessera.toml"))
    }

    #[test]
    fn minimal_config() {
        let cfg = parse(
            r#"trust_domain = "example.org"
[[entries]]
spiffe_id = "spiffe://example.org/agents/support"
selectors = ["unix:uid:1000"]
x509_svid_ttl = "2m"
"#,
        )
        .unwrap();
        assert_eq!(cfg.registry.entries().len(), 1);
        assert_eq!(cfg.registry.entries()[0].x509_svid_ttl, Duration::from_secs(120));
        assert_eq!(cfg.registry.entries()[0].jwt_svid_ttl, DEFAULT_JWT_TTL);
        assert_eq!(cfg.socket_path, Path::new(DEFAULT_SOCKET));
    }

    #[test]
    fn digests_are_wanted_only_when_an_entry_uses_them() {
        let hex = "a".repeat(64);
        let cfg = parse(
            r#"trust_domain = "example.org"
[attestors]
max_script_hash_size = 1000
hash_budget_per_uid = 5000
[[entries]]
spiffe_id = "spiffe://example.org/a"
selectors = ["unix:uid:1000", "script:path:/a.py"]
"#,
        )
        .unwrap();
        assert!(!cfg.attest.want_exe_digest && !cfg.attest.want_script_digest);
        assert_eq!(cfg.attest.max_script_hash_size, Some(1000));
        assert_eq!(cfg.attest.hash_budget_per_uid.map(|b| b.bytes), Some(5000));
        let cfg = parse(&format!(
            "trust_domain = \"example.org\"\n[[entries]]\nspiffe_id = \"spiffe://example.org/a\"\n\
             selectors = [\"unix:sha256:{hex}\", \"script:sha256:{hex}\"]\n"
        ))
        .unwrap();
        assert!(cfg.attest.want_exe_digest && cfg.attest.want_script_digest);
        assert_eq!(cfg.attest.max_script_hash_size, Some(tessera_attestors::DEFAULT_MAX_SCRIPT_HASH_SIZE));
        assert_eq!(cfg.attest.hash_budget_per_uid, Some(tessera_attestors::HashBudget::default()));
    }

    #[test]
    fn every_error_is_located_and_has_a_fix() {
        let err = parse(
            r#"trust_domain = "example.org"

[[entries]]
spiffe_id = "spiffe://example.org/a//b"
selectors = ["unix:uid:1000"]

[[entries]]
spiffe_id = "spiffe://other.org/x"
selectors = ["bogus:thing", "nocolon"]
x509_svid_ttl = "ten minutes"

[[entries]]
spiffe_id = "spiffe://example.org/dup"
selectors = ["unix:uid:1"]
[[entries]]
spiffe_id = "spiffe://example.org/dup"
selectors = ["unix:uid:1"]
"#,
        )
        .unwrap_err();
        let found: Vec<(usize, &str)> = err.issues.iter().map(|i| (i.line, i.key.as_str())).collect();
        assert_eq!(
            found,
            [
                (4, "entries[0].spiffe_id"),
                (8, "entries[1].spiffe_id"),
                (9, "entries[1].selectors[0]"),
                (9, "entries[1].selectors[1]"),
                (10, "entries[1].x509_svid_ttl"),
                (15, "entries[3]"),
            ]
        );
        assert!(err.issues.iter().all(|i| !i.fix.is_empty()));
        let text = err.to_string();
        assert!(text.contains("/etc/tessera/tessera.toml:8: entries[1].spiffe_id"), "{text}");
        assert!(text.contains("write spiffe://example.org/x"), "{text}");
    }

    #[test]
    fn durations_past_their_bounds_are_located_errors() {
        let err = parse(
            r#"trust_domain = "example.org"
reattest_interval = "2d"
default_jwt_svid_ttl = "99999999999999999999s"
[ca]
ttl = "3650000d"
[[entries]]
spiffe_id = "spiffe://example.org/a"
selectors = ["unix:uid:1"]
x509_svid_ttl = "213503982334601d"
jwt_svid_ttl = "366d"
"#,
        )
        .unwrap_err();
        let found: Vec<(usize, &str)> = err.issues.iter().map(|i| (i.line, i.key.as_str())).collect();
        assert_eq!(
            found,
            [
                (3, "default_jwt_svid_ttl"),
                (5, "ca.ttl"),
                (2, "reattest_interval"),
                (9, "entries[0].x509_svid_ttl"),
                (10, "entries[0].jwt_svid_ttl"),
            ]
        );
        assert!(err.issues.iter().all(|i| !i.fix.is_empty()));
        let text = err.to_string();
        assert!(text.contains("longer than the maximum of 3650d"), "{text}");
        assert!(text.contains("use at most \"365d\""), "{text}");
        // The bounds themselves are accepted.
        parse("trust_domain = \"example.org\"\nreattest_interval = \"24h\"\n[ca]\nttl = \"3650d\"\n").unwrap();
    }

    #[test]
    fn audit_rotation_keys() {
        let cfg = parse(
            "trust_domain = \"example.org\"\naudit_max_size = 1048576\naudit_max_files = 3\naudit_refusals_per_minute = 5\n",
        )
        .unwrap();
        assert_eq!((cfg.audit.refusals_per_window, cfg.audit.refusals_per_window_total), (5, 400));
        let large = parse("trust_domain = \"example.org\"\naudit_refusals_per_minute = 1000\n").unwrap();
        assert_eq!(large.audit.refusals_per_window_total, 1000, "the total follows a larger per-uid budget");
        let below = parse(
            "trust_domain = \"example.org\"\naudit_refusals_per_minute = 50\naudit_refusals_per_minute_total = 10\n",
        )
        .unwrap_err();
        assert_eq!(below.issues[0].key, "audit_refusals_per_minute_total");
        assert_eq!((cfg.audit.max_size, cfg.audit.max_files), (1 << 20, 3));
        let err = parse("trust_domain = \"example.org\"\naudit_max_size = 100\naudit_max_files = 0\n").unwrap_err();
        let found: Vec<(usize, &str)> = err.issues.iter().map(|i| (i.line, i.key.as_str())).collect();
        assert_eq!(found, [(2, "audit_max_size"), (3, "audit_max_files")]);
    }

    #[test]
    fn syntax_and_unknown_keys_are_located() {
        let err = parse("trust_domain = \"example.org\"\nsocket_pth = \"/x\"\n").unwrap_err();
        assert_eq!(err.issues[0].line, 2);
        assert!(err.issues[0].message.contains("socket_pth"), "{}", err.issues[0].message);
    }
}
