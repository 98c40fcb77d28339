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
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use thiserror::Error;

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

impl FromStr for Selector {
    type Err = SelectorError;

    /// Parses and validates against the known selector types and value shapes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, value) = s.split_once(':').ok_or_else(|| SelectorError::Malformed(s.to_owned()))?;
        if kind.is_empty() || value.is_empty() {
            return Err(SelectorError::Malformed(s.to_owned()));
        }
        let Some(parsed) = Kind::from_name(kind) else {
            return Err(SelectorError::UnknownType {
                selector: s.to_owned(),
                kind: kind.to_owned(),
                known: known_with_suggestion(kind),
            });
        };
        validate(parsed, value).map_err(|reason| SelectorError::InvalidValue { selector: s.to_owned(), reason })?;
        Ok(Self::new(parsed, value))
    }
}

fn known_with_suggestion(kind: &str) -> String {
    let list = KNOWN_TYPES.join(", ");
    let lower = kind.to_ascii_lowercase();
    let best = KNOWN_TYPES.iter().map(|k| (edit_distance(&lower, k), *k)).min().filter(|(d, _)| *d <= 2);
    match best {
        Some((_, k)) => format!("{list} (did you mean {k:?}?)"),
        None => list,
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Splits `key:rest`, refusing an unknown key with the list of known ones.
fn keyed<'a>(kind: Kind, value: &'a str, keys: &[&str]) -> Result<(&'a str, &'a str), String> {
    let known = keys.iter().map(|k| format!("{kind}:{k}:…")).collect::<Vec<_>>().join(", ");
    let Some((key, rest)) = value.split_once(':') else {
        return Err(format!("expected {kind}:KEY:VALUE; write one of {known}"));
    };
    if !keys.contains(&key) {
        return Err(format!("unknown {kind} selector {key:?}; write one of {known}"));
    }
    Ok((key, rest))
}

fn validate(kind: Kind, value: &str) -> Result<(), String> {
    match kind {
        Kind::Unix => {
            let (key, v) = keyed(
                kind,
                value,
                &["uid", "user", "gid", "group", "supplementary_gid", "supplementary_group", "path", "sha256"],
            )?;
            match key {
                "uid" | "gid" | "supplementary_gid" => numeric_id(key, v),
                "user" | "group" | "supplementary_group" => account_name(key, v),
                "path" => absolute_path("unix:path", v),
                _ => sha256_hex("unix:sha256", v),
            }
        }
        Kind::Script => {
            let (key, v) = keyed(kind, value, &["interpreter", "path", "sha256"])?;
            match key {
                "interpreter" => interpreter_name(v),
                "path" => absolute_path("script:path", v),
                _ => sha256_hex("script:sha256", v),
            }
        }
        Kind::Config => {
            let (_, v) = keyed(kind, value, &["sha256"])?;
            let Some((path, hex)) = v.rsplit_once(':') else {
                return Err("write config:sha256:/absolute/path:HEX (64 lowercase hex digits, \
                            as printed by sha256sum)"
                    .into());
            };
            absolute_path("config:sha256", path)?;
            if Path::new(path).components().any(|c| matches!(c, Component::ParentDir)) {
                return Err(format!("config:sha256 path {path:?} contains \"..\"; write the plain absolute path"));
            }
            sha256_hex("config:sha256", hex)
        }
        Kind::Env => {
            let Some((name, _value)) = value.split_once(':') else {
                return Err(format!(
                    "write env:NAME:VALUE, e.g. env:{value}:production (an empty value is \
                     written env:{value}:)"
                ));
            };
            let mut chars = name.chars();
            let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "environment variable name {name:?} must be letters, digits and _ and not \
                     start with a digit, e.g. env:AGENT_ROLE:support"
                ))
            }
        }
        Kind::Systemd => {
            let (key, v) = keyed(kind, value, &["id", "fragment_path"])?;
            if key == "fragment_path" {
                return absolute_path("systemd:fragment_path", v);
            }
            const UNIT_TYPES: &[&str] = &[
                ".service",
                ".scope",
                ".socket",
                ".mount",
                ".swap",
                ".slice",
                ".timer",
                ".path",
                ".target",
                ".device",
                ".automount",
            ];
            if !v.contains('/') && UNIT_TYPES.iter().any(|t| v.len() > t.len() && v.ends_with(t)) {
                Ok(())
            } else {
                Err(format!(
                    "systemd:id takes a unit name with its type, e.g. systemd:id:{}.service",
                    v.trim_end_matches('/')
                ))
            }
        }
        Kind::Cgroup => {
            let (_, v) = keyed(kind, value, &["path"])?;
            absolute_path("cgroup:path", v)
        }
        Kind::Container => {
            let (key, v) = keyed(kind, value, &["id", "runtime"])?;
            if key == "id" {
                return sha256_hex("container:id", v).map_err(|_| {
                    format!(
                        "container:id takes the full 64-hex-digit container id (e.g. from \
                         `docker inspect --format '{{{{.Id}}}}'`), got {v:?}"
                    )
                });
            }
            const RUNTIMES: &[&str] = &["docker", "podman", "containerd", "cri-o"];
            if RUNTIMES.contains(&v) {
                Ok(())
            } else {
                Err(format!("container:runtime is one of {}; got {v:?}", RUNTIMES.join(", ")))
            }
        }
        Kind::K8s => {
            let Some(uid) = value.strip_prefix("pod-uid:") else {
                return Err("tessera derives only k8s:pod-uid:UID from cgroups (no kubelet \
                            access); write k8s:pod-uid:<metadata.uid of the pod>"
                    .into());
            };
            if is_pod_uid(uid) {
                Ok(())
            } else {
                Err(format!(
                    "k8s:pod-uid takes the pod's metadata.uid, e.g. \
                     k8s:pod-uid:7f3b2c1a-1234-4cde-9abc-0123456789ab (dashes, lowercase); got {uid:?}"
                ))
            }
        }
    }
}

/// Pod UIDs are RFC 4122 UUIDs, or for static pods a 32-hex-digit hash.
pub(crate) fn is_pod_uid(s: &str) -> bool {
    let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    match s.len() {
        32 => s.chars().all(hex),
        36 => s.char_indices().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { hex(c) }),
        _ => false,
    }
}

fn numeric_id(key: &str, v: &str) -> Result<(), String> {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) && v.parse::<u32>().is_ok() {
        return Ok(());
    }
    let by_name = match key {
        "uid" => "unix:user",
        "gid" => "unix:group",
        _ => "unix:supplementary_group",
    };
    Err(format!("unix:{key} takes a number, e.g. unix:{key}:1000; to match by name write {by_name}:{v}"))
}

fn account_name(key: &str, v: &str) -> Result<(), String> {
    if v.is_empty() || v.contains(':') || v.chars().any(char::is_whitespace) {
        return Err(format!("unix:{key} takes a user or group name without spaces or ':', e.g. unix:{key}:agent"));
    }
    Ok(())
}

fn absolute_path(what: &str, v: &str) -> Result<(), String> {
    if v.starts_with('/') {
        Ok(())
    } else {
        Err(format!("{what} takes an absolute path, e.g. {what}:/{}", v.trim_start_matches("./")))
    }
}

fn sha256_hex(what: &str, v: &str) -> Result<(), String> {
    let is_hex = v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit());
    if is_hex && v.bytes().all(|b| !b.is_ascii_uppercase()) {
        return Ok(());
    }
    if is_hex {
        return Err(format!("{what} digests are lowercase; write {what}:{}", v.to_ascii_lowercase()));
    }
    Err(format!("{what} takes 64 lowercase hex digits (the output of sha256sum), got {} characters", v.len()))
}

fn interpreter_name(v: &str) -> Result<(), String> {
    let ok = !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'));
    if ok {
        Ok(())
    } else {
        Err("script:interpreter takes an interpreter name, e.g. script:interpreter:python3".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "3f1c2b0a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";

    fn err(s: &str) -> String {
        s.parse::<Selector>().unwrap_err().to_string()
    }

    #[test]
    fn accepts_every_documented_shape() {
        for s in [
            "unix:uid:1000".to_string(),
            "unix:user:agent".into(),
            "unix:gid:0".into(),
            "unix:group:wheel".into(),
            "unix:supplementary_gid:27".into(),
            "unix:supplementary_group:docker".into(),
            "unix:path:/usr/bin/python3.11".into(),
            format!("unix:sha256:{HEX}"),
            "script:interpreter:python3".into(),
            "script:path:/opt/agent/main.py".into(),
            format!("script:sha256:{HEX}"),
            format!("config:sha256:/etc/agents/support/prompt.md:{HEX}"),
            format!("config:sha256:/odd:name/with:colons:{HEX}"),
            "env:AGENT_ROLE:support".into(),
            "env:URL:http://x:8080/".into(),
            "env:EMPTY:".into(),
            "systemd:id:support-agent.service".into(),
            "systemd:fragment_path:/etc/systemd/system/support-agent.service".into(),
            "cgroup:path:/system.slice/support-agent.service".into(),
            format!("container:id:{HEX}"),
            "container:runtime:cri-o".into(),
            "k8s:pod-uid:7f3b2c1a-1234-4cde-9abc-0123456789ab".into(),
        ] {
            let sel: Selector = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(sel.to_string(), s);
        }
    }

    #[test]
    fn refusals_say_what_to_write() {
        assert!(err("unix:uid:root").contains("unix:user:root"));
        assert!(err(&format!("unix:sha256:{}", HEX.to_uppercase())).contains(HEX));
        assert!(err("unix:sha256:abc").contains("64 lowercase hex"));
        assert!(err("unix:path:bin/x").contains("unix:path:/bin/x"));
        assert!(err("unix:pid:3").contains("unix:uid:…"));
        assert!(err("uinx:uid:3").contains("did you mean \"unix\""));
        assert!(err("config:sha256:/etc/x").contains("config:sha256:/absolute/path:HEX"));
        assert!(err(&format!("config:sha256:/etc/../x:{HEX}")).contains(".."));
        assert!(err("env:1BAD:x").contains("env:AGENT_ROLE"));
        assert!(err("env:ROLE").contains("env:ROLE:"));
        assert!(err("systemd:id:foo").contains("systemd:id:foo.service"));
        assert!(err("container:runtime:lxc").contains("docker"));
        assert!(err("k8s:ns:default").contains("k8s:pod-uid"));
        assert!(err("k8s:pod-uid:7F3B").contains("k8s:pod-uid:"));
        assert!(matches!("nocolon".parse::<Selector>(), Err(SelectorError::Malformed(_))));
    }

    #[test]
    fn strengths() {
        let s = |x: &str| x.parse::<Selector>().unwrap().strength();
        assert_eq!(s("unix:uid:1"), Strength::Kernel);
        assert_eq!(s(&format!("config:sha256:/a:{HEX}")), Strength::Kernel);
        assert_eq!(s("cgroup:path:/system.slice/a.service"), Strength::Kernel);
        assert_eq!(s("cgroup:path:/user.slice/user-1000.slice/user@1000.service/app.slice/a.service"), Strength::Weak);
        assert_eq!(s("script:path:/a.py"), Strength::Weak);
        assert_eq!(s("env:A:b"), Strength::Weak);
    }

    #[test]
    fn kinds_round_trip_and_order_like_their_text() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_name(k.as_str()), Some(k));
            assert_eq!(k, k.as_str());
        }
        assert_eq!(
            known_selector_types(),
            ["unix", "script", "config", "env", "systemd", "cgroup", "container", "k8s"]
        );
        assert_eq!(Kind::from_name("Unix"), None);
        let texts = [
            "unix:uid:1".to_string(),
            "k8s:pod-uid:7f3b2c1a-1234-4cde-9abc-0123456789ab".into(),
            "env:A:b".into(),
            format!("container:id:{HEX}"),
            format!("config:sha256:/a:{HEX}"),
            "cgroup:path:/a".into(),
            "systemd:id:a.service".into(),
            "script:path:/a.py".into(),
            "unix:gid:1".into(),
        ];
        let set: std::collections::BTreeSet<Selector> = texts.iter().map(|t| t.parse().unwrap()).collect();
        let mut sorted = texts.to_vec();
        sorted.sort();
        assert_eq!(set.iter().map(ToString::to_string).collect::<Vec<_>>(), sorted);
        // Serialize uses Display (collect_str), Deserialize uses FromStr: the text form both ways.
        let sel: Selector = "unix:uid:1".parse().unwrap();
        assert_eq!(sel.kind(), Kind::Unix);
        assert_eq!(sel.to_string(), "unix:uid:1");
    }

    #[test]
    fn config_path_extraction() {
        let sel: Selector = format!("config:sha256:/etc/a:b/p.md:{HEX}").parse().unwrap();
        assert_eq!(config_path_of(&sel), Some(PathBuf::from("/etc/a:b/p.md")));
        assert_eq!(config_path_of(&"unix:uid:1".parse().unwrap()), None);
    }
}
