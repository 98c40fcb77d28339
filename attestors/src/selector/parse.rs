//! Parsing selector text: `TYPE:VALUE` checked against each type's grammar, refusals saying what to write.

use super::{KNOWN_TYPES, Kind, Selector, SelectorError};
use std::path::{Component, Path};
use std::str::FromStr;

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
