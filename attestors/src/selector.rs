//! Selectors: the typed `<type>:<value>` facts an attestor found about a process.
//!
//! # Selector reference and strength
//!
//! *Kernel* selectors come from state that a process cannot change on its own: the kernel's
//! credentials, the inode it mapped as its executable, the cgroup root placed it in, or a file
//! the process cannot write. *Weak* selectors come from data the process (or any process of the
//! same uid) can rewrite: its argv, its environment block, files it owns. Weak selectors are
//! meant to narrow an entry that already has a kernel-backed selector, never to stand alone
//! (SPIRE refuses cmdline selectors outright for this reason, spiffe/spire#3160).
//!
//! | selector | strength | where it comes from / why |
//! |---|---|---|
//! | `unix:uid:N`, `unix:gid:N` | kernel | effective ids, 2nd field of `Uid:`/`Gid:` in `/proc/PID/status` (SPIRE's meaning). Only privilege changes them. |
//! | `unix:user:NAME`, `unix:group:NAME` | kernel | names of the above from the daemon's passwd/group database; skipped if no name. |
//! | `unix:supplementary_gid:N`, `unix:supplementary_group:NAME` | kernel | `Groups:` of `/proc/PID/status`; one selector per group. |
//! | `unix:path:/abs` | kernel | `readlink /proc/PID/exe`, as the daemon sees it (for a chrooted process this is the host path; in another mount namespace it is the path inside that namespace). **Withheld** when that mount namespace belongs to the process's own user namespace (made without privilege, e.g. `unshare -Urm`), where any path can be mounted over; so are `script:path` and `config:sha256`. |
//! | `unix:sha256:HEX` | kernel | SHA-256 of the inode the kernel mapped, read through `/proc/PID/exe` (works for deleted or replaced binaries). |
//! | `cgroup:path:/p` | kernel (*weak* under `user@UID.service`) | the cgroup v2 path (or v1 `name=systemd` path). Moving into a cgroup needs write access to it; inside a user's delegated subtree (`…/user@UID.service/…`) any process of that uid can create and enter cgroups, so such paths are weak. |
//! | `systemd:id:UNIT` | kernel | outermost unit in the cgroup path (what systemd's `GetUnitByPID` answers, e.g. `user@1000.service` for user units). Never taken from a user's delegated subtree. |
//! | `systemd:fragment_path:/p` | kernel | the unit file found for `systemd:id` in the daemon's systemd search path (best effort). |
//! | `container:id:HEX64` | kernel | container id in the cgroup path (docker, podman, containerd, cri-o scopes; v1 `/docker/ID`; kubepods leaf). Not taken from user-delegated subtrees, where the same uid could forge it. |
//! | `container:runtime:NAME` | kernel | `docker`, `podman`, `containerd` or `cri-o`, from the scope prefix (absent when the path does not say). |
//! | `k8s:pod-uid:UID` | kernel | `pod<uid>` in a kubepods cgroup path (underscores of systemd slices turned back into dashes). |
//! | `config:sha256:/p:HEX` | kernel* | SHA-256 of the file at `/p` read inside the process's root (`/proc/PID/root`), refusing any symlink that is absolute or climbs out of that root. *Kernel-backed only if the workload cannot write the file (deploy it root-owned, not writable by the workload's uid).* |
//! | `script:interpreter:NAME` | weak | the interpreter (from the mapped executable's name) of a script process; only meaningful with `script:path`/`script:sha256`. |
//! | `script:path:/p` | weak | the script named on the command line, resolved against `/proc/PID/cwd` inside `/proc/PID/root`. argv is writable process memory. |
//! | `script:sha256:HEX` | weak | SHA-256 of that script file. The bytes are real, but *which* file is chosen comes from argv, which the process can rewrite, and the interpreter may have loaded something else. |
//! | `env:NAME:VALUE` | weak | `/proc/PID/environ`, only for allowlisted names. The initial environment block lives in the process's own writable memory. |
//!
//! Entries made only of weak selectors can be matched by any process of a uid that can forge
//! them; `tessera check` warns about such entries.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::path::PathBuf;
use thiserror::Error;

mod parse;
pub(crate) use parse::is_pod_uid;

/// A selector: `<type>:<value>`, e.g. `unix:uid:1000` has type `unix` and value `uid:1000`.
///
/// Ordered by its text (type name, then value), as when the type was a string: sets of
/// selectors print, serialize and audit in the same order as before.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Selector {
    kind: Kind,
    value: String,
}

impl Ord for Selector {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.kind.as_str(), self.value.as_str()).cmp(&(other.kind.as_str(), other.value.as_str()))
    }
}

impl PartialOrd for Selector {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The selector types tessera knows. Every match on a kind is exhaustive: a new type cannot be
/// added without deciding its grammar and its strength.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `unix:` — credentials and the mapped executable.
    Unix,
    /// `script:` — the script an interpreter runs.
    Script,
    /// `config:` — digests of named files inside the process root.
    Config,
    /// `env:` — allowlisted environment variables.
    Env,
    /// `systemd:` — the unit from the cgroup path.
    Systemd,
    /// `cgroup:` — the cgroup path.
    Cgroup,
    /// `container:` — container id and runtime from the cgroup path.
    Container,
    /// `k8s:` — the pod uid from a kubepods cgroup path.
    K8s,
}

impl Kind {
    /// Every kind, in documentation order.
    pub const ALL: [Kind; 8] =
        [Kind::Unix, Kind::Script, Kind::Config, Kind::Env, Kind::Systemd, Kind::Cgroup, Kind::Container, Kind::K8s];

    /// The type name as written in selectors.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Unix => "unix",
            Kind::Script => "script",
            Kind::Config => "config",
            Kind::Env => "env",
            Kind::Systemd => "systemd",
            Kind::Cgroup => "cgroup",
            Kind::Container => "container",
            Kind::K8s => "k8s",
        }
    }

    /// The kind named `name` exactly (case-sensitive, as in selectors).
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Kind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Kind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// How far a selector can be trusted. See the table in this module's docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strength {
    /// Backed by kernel state the process cannot change on its own (uid, exe digest, cgroup).
    Kernel,
    /// Derived from memory or files a process of the same uid can rewrite (cmdline, environ).
    Weak,
}

impl fmt::Display for Strength {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strength::Kernel => "kernel",
            Strength::Weak => "weak",
        })
    }
}

/// Why a selector string was refused. Every message says what to write instead.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SelectorError {
    /// No `TYPE:VALUE` shape at all.
    #[error("selector {0:?} is not of the form TYPE:VALUE (for example \"unix:uid:1000\")")]
    Malformed(String),
    /// The type before the first `:` is not one tessera knows.
    #[error("unknown selector type {kind:?} in {selector:?}; known types: {known}")]
    UnknownType {
        /// The selector as written.
        selector: String,
        /// The unknown type.
        kind: String,
        /// Known types, and a suggestion when the type looks like a typo.
        known: String,
    },
    /// The type is known but the value does not have the right shape.
    #[error("invalid selector {selector:?}: {reason}")]
    InvalidValue {
        /// The selector as written.
        selector: String,
        /// What is wrong and what to write instead.
        reason: String,
    },
}

const KNOWN_TYPES: &[&str] = &{
    let mut names = [""; Kind::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = Kind::ALL[i].as_str();
        i += 1;
    }
    names
};

/// The selector types tessera understands, in documentation order.
pub fn known_selector_types() -> &'static [&'static str] {
    KNOWN_TYPES
}

/// The in-root path named by a `config:sha256:/path:HEX` selector, `None` for any other selector.
/// The daemon collects these from its entries into [`crate::AttestConfig::config_paths`]: only
/// files some entry names are ever hashed.
pub fn config_path_of(selector: &Selector) -> Option<PathBuf> {
    if selector.kind != Kind::Config {
        return None;
    }
    let rest = selector.value.strip_prefix("sha256:")?;
    let (path, _hex) = rest.rsplit_once(':')?;
    Some(PathBuf::from(path))
}

impl Selector {
    /// Build a selector without validation (attestors use this for values they produced).
    pub fn new(kind: Kind, value: impl Into<String>) -> Self {
        Self { kind, value: value.into() }
    }

    /// Shorthand for the common `type:key:value` shape.
    pub(crate) fn keyed(kind: Kind, key: &str, value: impl fmt::Display) -> Self {
        Self::new(kind, format!("{key}:{value}"))
    }

    /// The type, e.g. [`Kind::Unix`] (compares equal to `"unix"`).
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Everything after the type, e.g. `uid:1000`.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Strength of this selector; the reasoning is in this module's table.
    pub fn strength(&self) -> Strength {
        match self.kind {
            Kind::Unix | Kind::Systemd | Kind::Container | Kind::K8s | Kind::Config => Strength::Kernel,
            // A user's delegated cgroup subtree is writable by that user: they can create a
            // cgroup of any name there and move their processes into it.
            Kind::Cgroup if is_user_delegated(&self.value) => Strength::Weak,
            Kind::Cgroup => Strength::Kernel,
            // argv-derived, and writable memory.
            Kind::Script | Kind::Env => Strength::Weak,
        }
    }
}

/// Whether a cgroup path lies inside a systemd user manager's delegated subtree.
pub(crate) fn is_user_delegated(path: &str) -> bool {
    path.split('/').any(|c| c.starts_with("user@") && c.ends_with(".service"))
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
