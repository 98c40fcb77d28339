//! The top-level checks, one per concern: [`Validator::config`] runs them in the order their
//! issues are reported and assembles the [`Config`]. Entries are in `entries.rs`; the sections
//! with their own keys (`[oidc]`, `[spire]`, `[telemetry]`, delegation, `[[deny]]`) in theirs.

use super::schema::{RawAttestors, RawCa, RawConfig, RawFederation};
use super::validator::Validator;
use super::{
    Config, DEFAULT_CA_TTL, DEFAULT_DATA_DIR, DEFAULT_JWT_TTL, DEFAULT_MAX_HASH, DEFAULT_REATTEST, DEFAULT_SOCKET,
    DEFAULT_X509_TTL, Federation, MAX_CA_TTL, MAX_REATTEST, MAX_SVID_TTL, MIN_AUDIT_SIZE, Upstream, beside, publish,
};
use crate::events::audit::AuditOptions;
use crate::registry::{Entry, Registry};
use crate::spiffe_id::TrustDomain;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tessera_attestors::{AttestConfig, HashBudget};
use toml::Spanned;

/// The durations set at the top level (and `[ca] ttl`).
pub(super) struct Durations {
    /// Defaults for entries without their own TTLs.
    pub x509_svid_ttl: Duration,
    pub jwt_svid_ttl: Duration,
    pub ca_ttl: Duration,
    pub reattest_interval: Duration,
}

/// Where the sockets and files are, defaults filled in.
struct Paths {
    socket_path: PathBuf,
    admin_socket_path: PathBuf,
    data_dir: PathBuf,
    audit_log: PathBuf,
}

impl Validator<'_> {
    pub(super) fn config(&mut self, raw: RawConfig, path: &Path) -> Option<Config> {
        let trust_domain = self.trust_domain(&raw.trust_domain);
        let socket_mode = self.socket_mode(raw.socket_mode.as_ref());
        let admin_socket_group = raw.admin_socket_group.as_ref().and_then(|g| self.group(g, "admin_socket_group"));
        let durations = self.durations(&raw);
        let audit = self.audit(&raw);
        let upstream = self.upstream(&raw.ca);
        let federation = self.federation(&raw.federation, trust_domain.as_ref());
        let entries = self.entries(&raw, trust_domain.as_ref(), &durations, &federation);
        let deny = self.deny_rules(&raw.deny);
        let spire = self.spire(raw.spire.as_ref(), &raw.entries);
        let paths = paths(&raw);
        let telemetry = self.telemetry(&raw.telemetry);
        let delegation = self.delegation(
            raw.delegation.as_ref(),
            raw.token_socket_path.as_ref(),
            raw.jwt_issuer.as_deref(),
            &raw.entries,
            &paths.socket_path,
        );
        let approvals = self.approvals(raw.approvals.as_ref(), delegation.as_ref());
        let oidc = self.oidc(&raw.oidc);
        let bundle_endpoint = self.bundle_endpoint(&raw.bundle_endpoint, trust_domain.as_ref());
        let gateway = self.gateway(raw.gateway.as_ref(), &paths.socket_path);
        let guards = self.guards(&raw.guard, trust_domain.as_ref(), raw.spire.is_some());
        let discovery = match &raw.discovery.interval {
            None => None,
            Some(_) => Some(crate::discovery::Periodic {
                every: self.duration(
                    &raw.discovery.interval,
                    "discovery.interval",
                    Duration::from_secs(300),
                    Duration::from_secs(7 * 86_400),
                ),
                signatures: raw.discovery.signatures.clone(),
            }),
        };
        let attest = attest_config(raw.attestors, &entries);
        self.policy_files = self.policy(raw.policy.as_ref(), path);
        Some(Config {
            source: Some(path.to_owned()),
            trust_domain: trust_domain?,
            socket_path: paths.socket_path,
            socket_mode,
            admin_socket_path: paths.admin_socket_path,
            admin_socket_group,
            data_dir: paths.data_dir,
            audit_log: paths.audit_log,
            audit,
            jwt_issuer: raw.jwt_issuer,
            delegation,
            approvals,
            ca_ttl: durations.ca_ttl,
            upstream,
            reattest_interval: durations.reattest_interval,
            federation,
            oidc,
            bundle_endpoint,
            attest,
            registry: Registry::new(entries),
            deny,
            warnings: Vec::new(),
            dev_mode: false,
            telemetry,
            spire,
            gateway,
            policy: None,
            guards,
            discovery,
        })
    }

    fn trust_domain(&mut self, raw: &Spanned<String>) -> Option<TrustDomain> {
        match raw.get_ref().parse::<TrustDomain>() {
            Ok(td) => Some(td),
            Err(e) => {
                self.issue(
                    raw,
                    "trust_domain",
                    format!("invalid trust domain {:?}: {e}", raw.get_ref()),
                    "write a lowercase DNS-like name, e.g. trust_domain = \"example.org\"",
                );
                None
            }
        }
    }

    /// The Workload API socket's file mode (octal; default 0777).
    fn socket_mode(&mut self, raw: Option<&Spanned<String>>) -> u32 {
        let Some(m) = raw else { return 0o777 };
        match u32::from_str_radix(m.get_ref().trim_start_matches("0o"), 8) {
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
        }
    }

    fn durations(&mut self, raw: &RawConfig) -> Durations {
        Durations {
            x509_svid_ttl: self.duration(
                &raw.default_x509_svid_ttl,
                "default_x509_svid_ttl",
                DEFAULT_X509_TTL,
                MAX_SVID_TTL,
            ),
            jwt_svid_ttl: self.duration(
                &raw.default_jwt_svid_ttl,
                "default_jwt_svid_ttl",
                DEFAULT_JWT_TTL,
                MAX_SVID_TTL,
            ),
            ca_ttl: self.duration(&raw.ca.ttl, "ca.ttl", DEFAULT_CA_TTL, MAX_CA_TTL),
            reattest_interval: self.duration(
                &raw.reattest_interval,
                "reattest_interval",
                DEFAULT_REATTEST,
                MAX_REATTEST,
            ),
        }
    }

    /// Audit rotation and refusal aggregation.
    fn audit(&mut self, raw: &RawConfig) -> AuditOptions {
        let mut audit = AuditOptions::default();
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
        audit
    }

    /// `[ca]` upstream: the operator's root that signs the node CA, all three files or none.
    fn upstream(&mut self, ca: &RawCa) -> Option<Upstream> {
        match (&ca.upstream_cert, &ca.upstream_key) {
            (None, None) => {
                if let Some(b) = &ca.upstream_bundle {
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
                    .chain(ca.upstream_bundle.as_ref().map(|b| (b, "ca.upstream_bundle")))
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
                    bundle: ca.upstream_bundle.as_ref().map(|b| b.get_ref().clone()),
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
        }
    }

    /// `[[federation]]` blocks: foreign trust domains, each once, with their bundle sources.
    fn federation(&mut self, raw: &[Spanned<RawFederation>], own: Option<&TrustDomain>) -> Vec<Federation> {
        let mut federation = Vec::new();
        for (i, f) in raw.iter().enumerate() {
            let fr = f.get_ref();
            match fr.trust_domain.get_ref().parse::<TrustDomain>() {
                Ok(td) if Some(&td) == own => self.issue(
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
        federation
    }
}

/// The sockets and files; the admin socket beside the Workload API's, the audit log in the data dir.
fn paths(raw: &RawConfig) -> Paths {
    let socket_path = raw.socket_path.clone().unwrap_or_else(|| DEFAULT_SOCKET.into());
    let data_dir = raw.data_dir.clone().unwrap_or_else(|| DEFAULT_DATA_DIR.into());
    Paths {
        admin_socket_path: raw.admin_socket_path.clone().unwrap_or_else(|| beside(&socket_path, "admin.sock")),
        audit_log: raw.audit_log.clone().unwrap_or_else(|| data_dir.join("audit.log")),
        socket_path,
        data_dir,
    }
}

/// `[attestors]`: hashing bounds, and which digests the entries' selectors need.
fn attest_config(raw: RawAttestors, entries: &[Entry]) -> AttestConfig {
    let base = AttestConfig {
        // A default bound: argv names the script to hash, so without one any local user could
        // make the daemon read a huge (or sparse) file on every cache miss.
        max_hash_size: Some(raw.max_hash_size.unwrap_or(DEFAULT_MAX_HASH)),
        max_script_hash_size: Some(raw.max_script_hash_size.unwrap_or(tessera_attestors::DEFAULT_MAX_SCRIPT_HASH_SIZE)),
        hash_budget_per_uid: Some(match raw.hash_budget_per_uid {
            Some(bytes) => HashBudget { bytes, window: Duration::from_secs(60) },
            None => HashBudget::default(),
        }),
        env_allowlist: raw.env_allowlist,
        ..Default::default()
    };
    // Executables, scripts and config files are hashed only when some entry asks for the
    // digest (the same rule the policy composer applies to every set of entries in force).
    crate::registry::compose::attest_for_entries(&base, entries.iter())
}
