//! The located-error machinery: [`ConfigIssue`] and [`ConfigError`], the [`Validator`] that
//! collects every issue with its line, and the value helpers the sections share (durations,
//! groups, unknown-key suggestions).

use crate::duration;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// One problem in a config file, located.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ConfigIssue {
    /// The file the issue is in when it is not the config file itself (a policy file).
    pub file: Option<PathBuf>,
    pub line: usize,
    /// Dotted key, e.g. `entries[2].spiffe_id`.
    pub key: String,
    pub message: String,
    /// What to write instead.
    pub fix: String,
}

/// Every problem found in a config file (all of them, not just the first).
#[derive(Debug, thiserror::Error)]
pub(crate) struct ConfigError {
    pub file: PathBuf,
    pub issues: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.issues.len();
        write!(f, "{} has {n} error{}:", self.file.display(), if n == 1 { "" } else { "s" })?;
        for i in &self.issues {
            let file = i.file.as_ref().unwrap_or(&self.file);
            write!(f, "\n  {}:{}: {}: {}", file.display(), i.line, i.key, i.message)?;
            if !i.fix.is_empty() {
                write!(f, "\n      fix: {}", i.fix)?;
            }
        }
        Ok(())
    }
}

/// The issue for text that does not read as a config: bad TOML, a value of the wrong type, a
/// missing or unknown key. An unknown key's fix names the nearest valid one, if one is near.
pub(super) fn syntax_issue(text: &str, e: &toml::de::Error) -> ConfigIssue {
    let message = e.message().trim().to_owned();
    let fix = match unknown_key(&message).and_then(|(unknown, valid)| nearest_key(unknown, &valid)) {
        Some(near) => format!("did you mean {near}?"),
        None => "see the README's configuration reference or systemd/tessera.toml".into(),
    };
    ConfigIssue {
        file: None,
        line: e.span().map(|s| line_of(text, s.start)).unwrap_or(0),
        key: "(syntax)".into(),
        message,
        fix,
    }
}

/// The unknown key and the valid ones, from serde's `deny_unknown_fields` message: "unknown field
/// `x`, expected `a`", "... expected `a` or `b`", "... expected one of `a`, `b`, `c`". It names the
/// keys of the table the unknown key is in (top level, a section or an entry).
fn unknown_key(message: &str) -> Option<(&str, Vec<&str>)> {
    let (unknown, rest) = message.strip_prefix("unknown field `")?.split_once('`')?;
    let expected = rest.strip_prefix(", expected ")?;
    // Every other piece between backquotes is a key.
    let valid: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    (!valid.is_empty()).then_some((unknown, valid))
}

/// The valid key closest to `unknown` (edit distance, ignoring case, adjacent swaps counting
/// once), if it is close enough to be a typo: at most a third of the key's length, at least one.
pub(super) fn nearest_key<'k>(unknown: &str, valid: &[&'k str]) -> Option<&'k str> {
    let unknown = unknown.to_ascii_lowercase();
    valid
        .iter()
        .map(|k| (edit_distance(&unknown, k), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of two
/// adjacent characters each cost one.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // Three rows: two back (for swaps), one back, current.
    let mut rows = [vec![0; b.len() + 1], (0..=b.len()).collect(), vec![0; b.len() + 1]];
    for i in 1..=a.len() {
        rows[2][0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[1][j] + 1).min(rows[2][j - 1] + 1).min(rows[1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[0][j - 2] + 1);
            }
            rows[2][j] = d;
        }
        rows.rotate_left(1);
    }
    rows[1][b.len()]
}

pub(super) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

fn newline_offsets(text: &str) -> Vec<usize> {
    text.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| i).collect()
}

/// Collects the issues (which stop the config from loading) and warnings of one config text.
pub(super) struct Validator<'a> {
    text: &'a str,
    /// Byte offsets of the text's newlines, computed at the first issue: a config of thousands of
    /// entries may warn about each one, and counting from the start every time was quadratic
    /// (100 ms of a 1,000-entry daemon's start).
    newlines: std::sync::OnceLock<Vec<usize>>,
    pub(super) issues: Vec<ConfigIssue>,
    pub(super) warnings: Vec<ConfigIssue>,
    /// `[policy]` files, loaded once everything else validated.
    pub(super) policy_files: Option<crate::registry::authz::PolicyFiles>,
}

impl<'a> Validator<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Validator { text, newlines: Default::default(), issues: Vec::new(), warnings: Vec::new(), policy_files: None }
    }

    /// The 1-based line of a byte offset.
    pub(super) fn line(&self, offset: usize) -> usize {
        let newlines = self.newlines.get_or_init(|| newline_offsets(self.text));
        newlines.partition_point(|&n| n < offset.min(self.text.len())) + 1
    }

    pub(super) fn issue<T>(&mut self, at: &Spanned<T>, key: &str, message: String, fix: &str) {
        self.issues.push(ConfigIssue {
            file: None,
            line: self.line(at.span().start),
            key: key.to_owned(),
            message,
            fix: fix.to_owned(),
        });
    }

    /// A duration of at least one second and at most `max`; `default` when absent or invalid.
    pub(super) fn duration(
        &mut self,
        v: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
        max: Duration,
    ) -> Duration {
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
    pub(super) fn group(&mut self, v: &Spanned<toml::Value>, key: &str) -> Option<u32> {
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
}
