//! Process attestation for tessera: a pid (and, where the kernel has one, a pidfd) in, selectors out.
//!
//! No gRPC and no CA here. Every read goes through a [`ProcessHandle`], which pins the process
//! (pidfd + start time) so that a recycled pid can never lend its identity to another process:
//! after all reads, [`ProcessHandle::verify_alive`] must succeed or the evidence is discarded.
//!
//! Attestors, one module each, run in a fixed order: `unix`, `script`, `config`, `env`,
//! `cgroup` (which also emits `systemd:`, `container:` and `k8s:` selectors). An attestor that
//! fails contributes no selectors and a reason; it never contributes a wrong one. The selector
//! reference with the strength of each type is in the [`selector`] module docs.
#![forbid(unsafe_code)]

mod cgroup;
mod config_file;
mod digest;
mod env;
mod error;
mod in_root;
pub mod local_fs;
mod process;
mod script;
mod script_argv;
pub mod selector;
mod unix;

pub use cgroup::{CgroupFacts, UNIT_DIRS, fragment_path, parse as parse_cgroup};
pub use digest::{DIGEST_CACHE_CAPACITY, DIGEST_CACHE_RACY_WINDOW, DigestStats, FileKey, HashBudget};
pub use error::AttestError;
pub use process::{ExeIdentity, PeerCredentials, ProcessHandle, current_exe_path, verify_exe_identity};
#[doc(hidden)]
pub use script_argv::{ScriptEntry, script_of_argv};
pub use selector::{Kind, Selector, SelectorError, Strength, config_path_of, known_selector_types};

use serde::Serialize;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// Default for [`AttestConfig::max_script_hash_size`]: scripts and config files are small, and
/// their path comes from the caller (argv, entries), so they get a much lower bound than
/// executables (whose size the kernel had to map).
pub const DEFAULT_MAX_SCRIPT_HASH_SIZE: u64 = 16 << 20;

/// What the attestors are allowed to look at. Built by the daemon from its config and entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestConfig {
    /// Largest executable hashed, in bytes; `None` = no limit. A larger file yields no
    /// `unix:sha256` selector (with a reason); the attestor's other selectors stay.
    pub max_hash_size: Option<u64>,
    /// Largest script or config file hashed, in bytes; `None` = no limit.
    pub max_script_hash_size: Option<u64>,
    /// Compute `unix:sha256` (the daemon sets this only when some entry uses it).
    pub want_exe_digest: bool,
    /// Compute `script:sha256` (likewise).
    pub want_script_digest: bool,
    /// Bytes each peer uid may have hashed per window (digest-cache misses); `None` = unbounded.
    /// Not applied to `tessera attest PID`, which has no peer.
    pub hash_budget_per_uid: Option<HashBudget>,
    /// Environment variable names that may become `env:NAME:VALUE` selectors.
    pub env_allowlist: Vec<String>,
    /// Config files (absolute paths inside the process's root) whose digest entries ask for.
    pub config_paths: Vec<PathBuf>,
}

impl Default for AttestConfig {
    /// Everything on (so `tessera attest PID` shows every selector), no executable size limit,
    /// the default script limit and per-uid budget.
    fn default() -> Self {
        Self {
            max_hash_size: None,
            max_script_hash_size: Some(DEFAULT_MAX_SCRIPT_HASH_SIZE),
            want_exe_digest: true,
            want_script_digest: true,
            hash_budget_per_uid: Some(HashBudget::default()),
            env_allowlist: Vec::new(),
            config_paths: Vec::new(),
        }
    }
}

/// One attestor's contribution, kept for `tessera attest` and the audit trail.
#[derive(Debug, Clone, Serialize)]
pub struct AttestorReport {
    /// Attestor name: `unix`, `script`, `config`, `env`, `cgroup` (the latter also reports the
    /// `systemd:`, `container:` and `k8s:` selectors).
    pub attestor: &'static str,
    /// Selectors it found (empty if it failed or had nothing to say).
    pub selectors: Vec<Selector>,
    /// Why it contributed nothing or less than usual (several reasons are joined by "; ").
    pub error: Option<String>,
}

/// The verified result of attesting one process.
#[derive(Debug, Clone, Serialize)]
pub struct Attestation {
    /// Pid as seen from the daemon's pid namespace.
    pub pid: i32,
    /// The process's start time (clock ticks since boot, /proc/PID/stat field 22): with the pid,
    /// it names this process rather than whichever holds the pid later.
    pub starttime: u64,
    /// Every selector of every attestor that succeeded.
    pub selectors: BTreeSet<Selector>,
    /// Per-attestor detail, in a fixed order.
    pub reports: Vec<AttestorReport>,
    /// The executable the kernel mapped, as evidence for the audit trail (present even when a
    /// `unix:path` selector is withheld).
    pub exe: ExeEvidence,
    /// Files whose content the selectors depend on (executable, script, config files, the
    /// latter even if missing), as paths **the daemon** can open: the path itself when the
    /// process shares the daemon's mount namespace (under its chroot directory if chrooted),
    /// otherwise `/proc/PID/root/<path>`, valid while the process lives. For re-attesting on
    /// change.
    pub watched_files: Vec<PathBuf>,
}

/// What the `unix` attestor saw of the executable: its path (`readlink /proc/PID/exe`, as the
/// daemon sees it) and the SHA-256 of the mapped inode; `None` where it could not be read or was
/// not computed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExeEvidence {
    /// The executable's path (lossily rendered as UTF-8).
    pub path: Option<String>,
    /// Lowercase hex SHA-256 of the executable.
    pub sha256: Option<String>,
}

/// The set of attestors plus their shared digest cache. Share it behind an `Arc`.
#[derive(Debug, Default)]
pub struct Attestor {
    config: RwLock<Arc<AttestConfig>>,
    cache: digest::DigestCache,
    names: unix::NameCache,
}

impl Attestor {
    /// Attestors with this configuration and an empty digest cache.
    pub fn new(config: AttestConfig) -> Self {
        Self { config: RwLock::new(Arc::new(config)), cache: digest::DigestCache::default(), names: Default::default() }
    }

    /// The configuration in force (a snapshot; [`Attestor::set_config`] does not change it).
    pub fn config(&self) -> Arc<AttestConfig> {
        Arc::clone(&self.config.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Swap the configuration (on reload). The digest cache is kept: it is keyed by file
    /// version, not by configuration. Attestations already running finish with the old one.
    pub fn set_config(&self, config: AttestConfig) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }

    /// Digest cache counters.
    pub fn digest_stats(&self) -> DigestStats {
        self.cache.stats()
    }

    /// Pays one-time costs now rather than in the first caller's attestation: the NSS modules
    /// behind user and group names (loaded by the first lookup; root's names are cached) and
    /// the SHA-256 implementation's CPU feature detection. Blocking; reads no caller's files.
    pub fn prewarm(&self) {
        let _ = self.names.user(0);
        let _ = self.names.group(0);
        let _ = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"");
    }

    /// Attest a pinned process. Blocking (reads /proc, hashes files): call it off the async runtime.
    /// Fails if the process is gone or was replaced while we read; individual attestor failures
    /// only empty their own report.
    pub fn attest(&self, process: &ProcessHandle) -> Result<Attestation, AttestError> {
        let config = self.config();
        let ctx = Ctx { process, config: &config, cache: &self.cache, names: &self.names };
        let found = [
            unix::attest(&ctx),
            script::attest(&ctx),
            config_file::attest(&ctx),
            env::attest(&ctx),
            cgroup::attest(&ctx),
        ];
        // Only now, after every read: if the pinned process is not the one still running,
        // everything above may describe another process. No identity.
        process.verify_alive()?;
        let mut selectors = BTreeSet::new();
        let mut reports = Vec::with_capacity(found.len());
        let mut watched_files = Vec::new();
        let mut exe = ExeEvidence::default();
        for f in found {
            if let Some(e) = f.exe {
                exe = e;
            }
            if let Some(reason) = &f.report.error {
                // Reasons name files and attestors, never environment contents.
                tracing::info!(pid = process.pid(), attestor = f.report.attestor, %reason, "attestor incomplete");
            }
            selectors.extend(f.report.selectors.iter().cloned());
            watched_files.extend(f.watched);
            reports.push(f.report);
        }
        let mut seen = BTreeSet::new();
        watched_files.retain(|p| seen.insert(p.clone()));
        Ok(Attestation { pid: process.pid(), starttime: process.starttime(), selectors, reports, exe, watched_files })
    }
}

/// What every attestor gets.
pub(crate) struct Ctx<'a> {
    pub(crate) process: &'a ProcessHandle,
    pub(crate) config: &'a AttestConfig,
    pub(crate) cache: &'a digest::DigestCache,
    pub(crate) names: &'a unix::NameCache,
}

/// Which size limit (and config key, for the reason) a digest is bound by.
#[derive(Debug, Clone, Copy)]
pub(crate) enum HashOf {
    Exe,
    ScriptOrConfig,
}

impl Ctx<'_> {
    /// Digest of an opened file under the right size limit, charged to the peer's uid.
    pub(crate) fn digest(&self, file: &mut std::fs::File, of: HashOf) -> Result<String, String> {
        let (limit, key) = match of {
            HashOf::Exe => (self.config.max_hash_size, "max_hash_size"),
            HashOf::ScriptOrConfig => (self.config.max_script_hash_size, "max_script_hash_size"),
        };
        let charge = self.process.peer_uid().zip(self.config.hash_budget_per_uid);
        self.cache.digest(file, limit, key, charge).map_err(|e| e.to_string())
    }
}

/// What every attestor returns.
pub(crate) struct Found {
    pub(crate) report: AttestorReport,
    pub(crate) watched: Vec<PathBuf>,
    /// Set by the `unix` attestor only.
    pub(crate) exe: Option<ExeEvidence>,
}

impl Found {
    fn new(attestor: &'static str) -> Self {
        Self { report: AttestorReport { attestor, selectors: Vec::new(), error: None }, watched: Vec::new(), exe: None }
    }

    fn push(&mut self, selector: Selector) {
        self.report.selectors.push(selector);
    }

    fn fail(&mut self, reason: impl Into<String>) {
        let reason = reason.into();
        self.report.error = Some(match self.report.error.take() {
            Some(prev) => format!("{prev}; {reason}"),
            None => reason,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attestor_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Attestor>();
        assert_send_sync::<ProcessHandle>();
        assert_send_sync::<Attestation>();
    }

    #[test]
    fn set_config_swaps_config_and_keeps_old_snapshots() {
        let attestor = Attestor::new(AttestConfig::default());
        let old = attestor.config();
        attestor.set_config(AttestConfig { env_allowlist: vec!["ROLE".into()], ..AttestConfig::default() });
        assert!(old.env_allowlist.is_empty());
        assert_eq!(attestor.config().env_allowlist, vec!["ROLE".to_owned()]);
    }

    #[test]
    fn prewarm_caches_root_names() {
        let attestor = Attestor::new(AttestConfig::default());
        attestor.prewarm();
        assert!(attestor.names.has_user(0), "root's name is looked up at start, not by the first caller");
    }

    #[test]
    fn attests_itself() {
        let attestor = Attestor::new(AttestConfig::default());
        let me = ProcessHandle::open(i32::try_from(std::process::id()).unwrap()).unwrap();
        let a = attestor.attest(&me).unwrap();
        assert_eq!(
            a.reports.iter().map(|r| r.attestor).collect::<Vec<_>>(),
            ["unix", "script", "config", "env", "cgroup"]
        );
        assert!(a.selectors.iter().any(|s| s.value().starts_with("sha256:")));
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert_eq!(a.exe.path.as_deref(), Some(exe.to_string_lossy().as_ref()));
        let digest = a.exe.sha256.clone().unwrap();
        assert!(a.selectors.contains(&Selector::new(Kind::Unix, format!("sha256:{digest}"))));
    }
}
