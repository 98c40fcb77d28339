//! Config keys for accountability: `owner`, `metadata` and `retired` on entries, top-level
//! `require_owner`, and `[[deny]]` rules. Values end up in JWT-SVIDs (`agent` claim), the
//! inventory and the audit log, so they are bounded and typed here.

use super::{ConfigIssue, Validator};
use crate::registry::MetaValue;
use crate::registry::deny::{DenyRule, DenyTarget, Origin};
use crate::spiffe_id::SpiffeId;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use tessera_attestors::Selector;
use toml::Spanned;

const MAX_OWNER_LEN: usize = 256;
const MAX_METADATA_KEYS: usize = 32;
const MAX_METADATA_KEY_LEN: usize = 64;
const MAX_METADATA_VALUE_LEN: usize = 1024;
const MAX_METADATA_LIST: usize = 64;
const MAX_REASON_LEN: usize = 1024;

/// One `[[deny]]` block.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDeny {
    selector: Option<Spanned<String>>,
    spiffe_id: Option<Spanned<String>>,
    reason: Option<Spanned<String>>,
}

/// Owner, metadata and retired flag of a validated entry.
pub(super) struct AgentKeys {
    pub owner: Option<String>,
    pub metadata: BTreeMap<String, MetaValue>,
    pub retired: bool,
}

impl Validator<'_> {
    fn warn<T>(&mut self, at: &Spanned<T>, key: &str, message: String, fix: &str) {
        self.warnings.push(ConfigIssue {
            file: None,
            line: self.line(at.span().start),
            key: key.to_owned(),
            message,
            fix: fix.to_owned(),
        });
    }

    /// `owner`, `metadata`, `retired` of `entries[i]`; `whole` locates an entry without owner.
    pub(super) fn agent_keys<T>(
        &mut self,
        i: usize,
        raw: &super::RawEntry,
        whole: &Spanned<T>,
        require_owner: bool,
    ) -> AgentKeys {
        let key = |k: &str| format!("entries[{i}].{k}");
        let owner = match &raw.owner {
            Some(o) if o.get_ref().trim().is_empty() => {
                self.issue(
                    o,
                    &key("owner"),
                    "owner is empty".into(),
                    "name the accountable human or team, e.g. owner = \"support-team@example.org\"",
                );
                None
            }
            Some(o) if o.get_ref().len() > MAX_OWNER_LEN => {
                self.issue(
                    o,
                    &key("owner"),
                    format!("owner is longer than {MAX_OWNER_LEN} bytes"),
                    "shorten it (a team address or name)",
                );
                None
            }
            Some(o) => Some(o.get_ref().clone()),
            None => {
                let (message, fix) = (
                    "entry has no owner".to_string(),
                    "add owner = \"team@example.org\" (the accountable human or team)",
                );
                if require_owner {
                    self.issue(whole, &format!("entries[{i}]"), format!("{message} and require_owner = true"), fix);
                } else {
                    self.warn(whole, &format!("entries[{i}]"), message, fix);
                }
                None
            }
        };
        let mut metadata = BTreeMap::new();
        if let Some(m) = &raw.metadata {
            if m.get_ref().len() > MAX_METADATA_KEYS {
                self.issue(
                    m,
                    &key("metadata"),
                    format!("{} metadata keys; at most {MAX_METADATA_KEYS} are allowed", m.get_ref().len()),
                    "keep the facts a verifier needs; the rest belongs in an inventory system",
                );
            }
            for (k, v) in m.get_ref() {
                let mkey = format!("entries[{i}].metadata.{k}");
                if k == "owner" {
                    self.issue(
                        v,
                        &mkey,
                        "\"owner\" is its own entry key".into(),
                        "write owner = \"…\" beside metadata",
                    );
                    continue;
                }
                if k.is_empty() || k.len() > MAX_METADATA_KEY_LEN {
                    self.issue(
                        v,
                        &mkey,
                        format!("metadata keys must be 1 to {MAX_METADATA_KEY_LEN} bytes"),
                        "use a short name such as model or risk",
                    );
                    continue;
                }
                if let Some(value) = self.meta_value(v, &mkey) {
                    metadata.insert(k.clone(), value);
                }
            }
        }
        AgentKeys { owner, metadata, retired: raw.retired.unwrap_or(false) }
    }

    fn meta_value(&mut self, v: &Spanned<toml::Value>, key: &str) -> Option<MetaValue> {
        let fix = "write a string (risk = \"medium\") or an array of strings (capabilities = [\"email-read\"])";
        let long = |s: &str| s.len() > MAX_METADATA_VALUE_LEN;
        match v.get_ref() {
            toml::Value::String(s) if long(s) => {
                self.issue(v, key, format!("value is longer than {MAX_METADATA_VALUE_LEN} bytes"), "shorten it");
                None
            }
            toml::Value::String(s) => Some(MetaValue::One(s.clone())),
            toml::Value::Array(items) => {
                let strings: Option<Vec<String>> =
                    items.iter().map(|i| i.as_str().filter(|s| !long(s)).map(str::to_owned)).collect();
                match strings {
                    Some(list) if list.len() <= MAX_METADATA_LIST => Some(MetaValue::Many(list)),
                    Some(list) => {
                        self.issue(
                            v,
                            key,
                            format!("{} items; at most {MAX_METADATA_LIST} are allowed", list.len()),
                            "shorten the list",
                        );
                        None
                    }
                    None => {
                        self.issue(
                            v,
                            key,
                            format!("arrays may hold only strings of at most {MAX_METADATA_VALUE_LEN} bytes"),
                            fix,
                        );
                        None
                    }
                }
            }
            other => {
                self.issue(
                    v,
                    key,
                    format!("metadata values are strings or arrays of strings, not {}", other.type_str()),
                    fix,
                );
                None
            }
        }
    }

    /// The `[[deny]]` rules, as `config-N`.
    pub(super) fn deny_rules(&mut self, raw: &[Spanned<RawDeny>]) -> Vec<Arc<DenyRule>> {
        let mut rules = Vec::new();
        for (i, d) in raw.iter().enumerate() {
            let key = |k: &str| format!("deny[{i}].{k}");
            let r = d.get_ref();
            let target = match (&r.selector, &r.spiffe_id) {
                (Some(s), None) => match s.get_ref().parse::<Selector>() {
                    Ok(sel) => Some(DenyTarget::Selector(sel)),
                    Err(e) => {
                        self.issue(
                            s,
                            &key("selector"),
                            e.to_string(),
                            "write a selector such as \"unix:sha256:<hex>\"; `tessera attest PID` shows a process's",
                        );
                        None
                    }
                },
                (None, Some(id)) => match SpiffeId::parse_workload(id.get_ref()) {
                    Ok(id) => Some(DenyTarget::SpiffeId(id)),
                    Err(e) => {
                        self.issue(
                            id,
                            &key("spiffe_id"),
                            format!("invalid SPIFFE ID {:?}: {e}", id.get_ref()),
                            "write spiffe://<trust domain>/<path>",
                        );
                        None
                    }
                },
                _ => {
                    self.issue(
                        d,
                        &format!("deny[{i}]"),
                        "a deny rule names exactly one of selector or spiffe_id".into(),
                        "write selector = \"unix:sha256:…\" or spiffe_id = \"spiffe://…\" (one per [[deny]] block)",
                    );
                    None
                }
            };
            let reason = match &r.reason {
                Some(reason) if !reason.get_ref().trim().is_empty() && reason.get_ref().len() <= MAX_REASON_LEN => {
                    Some(reason.get_ref().clone())
                }
                Some(reason) => {
                    self.issue(
                        reason,
                        &key("reason"),
                        format!("reason must be 1 to {MAX_REASON_LEN} bytes"),
                        "say why, e.g. reason = \"binary leaked in incident 42\"",
                    );
                    None
                }
                None => {
                    self.issue(
                        d,
                        &format!("deny[{i}]"),
                        "a deny rule needs a reason".into(),
                        "add reason = \"…\" (it is recorded in the audit log)",
                    );
                    None
                }
            };
            if let (Some(target), Some(reason)) = (target, reason) {
                rules.push(Arc::new(DenyRule { id: format!("config-{i}"), target, reason, origin: Origin::Config }));
            }
        }
        rules
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/tessera/tessera.toml"))
    }

    #[test]
    fn owner_metadata_and_deny_are_parsed() {
        let hex = "c".repeat(64);
        let cfg = parse(&format!(
            r#"trust_domain = "example.org"
[[entries]]
spiffe_id = "spiffe://example.org/a"
selectors = ["unix:uid:1"]
owner = "team@example.org"
metadata = {{ model = "m", capabilities = ["x", "y"] }}
[[entries]]
spiffe_id = "spiffe://example.org/old"
selectors = ["unix:uid:1"]
owner = "team@example.org"
retired = true
[[deny]]
selector = "unix:sha256:{hex}"
reason = "leaked"
[[deny]]
spiffe_id = "spiffe://example.org/b"
reason = "compromised"
"#
        ))
        .unwrap();
        let e = &cfg.registry.entries()[0];
        assert_eq!(e.owner.as_deref(), Some("team@example.org"));
        assert_eq!(e.agent_claim().unwrap()["capabilities"], serde_json::json!(["x", "y"]));
        assert!(cfg.registry.entries()[1].retired);
        let ids: Vec<&str> = cfg.deny.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["config-0", "config-1"]);
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    }

    #[test]
    fn bad_owner_metadata_and_deny_rules_are_located_errors_with_a_fix() {
        let err = parse(
            r#"trust_domain = "example.org"
require_owner = true
[[entries]]
spiffe_id = "spiffe://example.org/a"
selectors = ["unix:uid:1"]
owner = "  "
[[entries]]
spiffe_id = "spiffe://example.org/b"
selectors = ["unix:uid:1"]
owner = "t"
metadata = { risk = 3, limits = { a = "b" }, owner = "x", caps = ["a", 1] }
[[entries]]
spiffe_id = "spiffe://example.org/c"
selectors = ["unix:uid:1"]
[[deny]]
selector = "bogus:thing"
reason = "r"
[[deny]]
spiffe_id = "spiffe://example.org/x"
selector = "unix:uid:1"
reason = "r"
[[deny]]
spiffe_id = "spiffe://example.org/x"
"#,
        )
        .unwrap_err();
        let found: Vec<(usize, &str)> = err.issues.iter().map(|i| (i.line, i.key.as_str())).collect();
        assert_eq!(
            found,
            [
                (6, "entries[0].owner"),
                (11, "entries[1].metadata.caps"),
                (11, "entries[1].metadata.limits"),
                (11, "entries[1].metadata.owner"),
                (11, "entries[1].metadata.risk"),
                (12, "entries[2]"),
                (16, "deny[0].selector"),
                (18, "deny[1]"),
                (22, "deny[2]"),
            ]
        );
        assert!(err.issues.iter().all(|i| !i.fix.is_empty()));
        let text = err.to_string();
        assert!(text.contains("unknown selector type \"bogus\""), "{text}");
        assert!(text.contains("not integer"), "{text}");
        assert!(text.contains("not table"), "{text}");
        assert!(text.contains("owner is empty"), "{text}");
        assert!(text.contains("require_owner = true"), "{text}");
        assert!(text.contains("/etc/tessera/tessera.toml:16: deny[0].selector"), "{text}");
    }

    #[test]
    fn a_missing_owner_is_a_located_warning_without_require_owner() {
        let cfg = parse("trust_domain = \"example.org\"\n[[entries]]\nspiffe_id = \"spiffe://example.org/a\"\nselectors = [\"unix:uid:1\"]\n").unwrap();
        let w: Vec<(usize, &str)> = cfg.warnings.iter().map(|i| (i.line, i.key.as_str())).collect();
        assert_eq!(w, [(2, "entries[0]")]);
        assert!(cfg.warnings[0].fix.contains("owner ="));
    }
}
