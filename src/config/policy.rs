//! `[policy]`: the Cedar policy files and the mode. The files are read, parsed and validated
//! against the shipped schema with the config, so `tessera check`, `tessera policy check` and a
//! reload refuse a bad policy exactly as they refuse a bad key (file, line, column, reason), and
//! the policies in force stay.

use super::{Config, ConfigError, ConfigIssue, Validator};
use crate::registry::authz::{Authz, Mode, PolicyFiles};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    files: Spanned<Vec<Spanned<String>>>,
    mode: Option<Spanned<String>>,
}

/// The validated `[policy]` section with its loaded policy set.
#[derive(Debug, Clone)]
pub(crate) struct PolicyConfig {
    pub files: PolicyFiles,
    /// Loaded by [`Config::load_policies`] once the rest validated.
    pub authz: Arc<Authz>,
}

impl Validator<'_> {
    /// The files and mode; `None` (with issues) when they are wrong.
    pub(super) fn policy(&mut self, raw: Option<&Spanned<RawPolicy>>, config_path: &Path) -> Option<PolicyFiles> {
        let raw = raw?.get_ref();
        let mode = match raw.mode.as_ref().map(|m| m.get_ref().as_str()) {
            None | Some("enforce") => Mode::Enforce,
            Some("log") => Mode::Log,
            Some(other) => {
                self.issue(
                    raw.mode.as_ref()?,
                    "policy.mode",
                    format!("{other:?} is not a policy mode"),
                    "write mode = \"enforce\" (a deny refuses) or mode = \"log\" (decide and audit, allow)",
                );
                return None;
            }
        };
        if raw.files.get_ref().is_empty() {
            self.issue(
                &raw.files,
                "policy.files",
                "no policy files: with [policy] present, what no policy permits is denied".into(),
                "list the Cedar files, e.g. files = [\"/etc/tessera/policy/*.cedar\"], or remove [policy]",
            );
            return None;
        }
        let base = config_path.parent().unwrap_or(Path::new("/"));
        let mut patterns = Vec::new();
        for f in raw.files.get_ref() {
            let p = PathBuf::from(f.get_ref());
            let parent_has_star = p.parent().is_some_and(|d| d.to_string_lossy().contains('*'));
            if f.get_ref().is_empty() || parent_has_star {
                self.issue(
                    f,
                    "policy.files",
                    format!("{:?} is not a file or a file pattern", f.get_ref()),
                    "write a path, or `*` in the file name only: \"/etc/tessera/policy/*.cedar\"",
                );
                continue;
            }
            patterns.push(if p.is_absolute() { p } else { base.join(p) });
        }
        Some(PolicyFiles { patterns, mode })
    }
}

impl Config {
    /// Load the policy files named by `[policy]` (after the rest of the config validated: the
    /// schema needs the declared `authorization_details` types).
    pub(super) fn load_policies(&mut self, files: Option<PolicyFiles>) -> Result<(), ConfigError> {
        let Some(files) = files else { return Ok(()) };
        let details = self.detail_types();
        let authz = files.load(&details).map_err(|e| ConfigError {
            file: self.source.clone().unwrap_or_default(),
            issues: e
                .0
                .into_iter()
                .map(|l| ConfigIssue {
                    file: Some(l.file),
                    line: l.line,
                    key: format!("policy (column {})", l.column),
                    message: l.message,
                    fix: "correct the policy; the policies in force stay until the files load whole".into(),
                })
                .collect(),
        })?;
        for w in &authz.warnings {
            self.warnings.push(ConfigIssue {
                file: None,
                line: 0,
                key: "policy".into(),
                message: w.clone(),
                fix: "narrow it with a scope (principal, action, resource) or a when { … } condition".into(),
            });
        }
        if authz.count == 0 {
            self.warnings.push(ConfigIssue {
                file: None,
                line: 0,
                key: "policy.files".into(),
                message: "the policy files hold no policy: every action will be denied".into(),
                fix: "add a permit, or remove [policy] to go back to the fixed rules".into(),
            });
        }
        self.policy = Some(PolicyConfig { files, authz: Arc::new(authz) });
        Ok(())
    }

    /// The declared `authorization_details` types, as the schema wants them.
    pub(crate) fn detail_types(&self) -> Vec<crate::registry::authz::schema::DetailType> {
        let Some(d) = &self.delegation else { return Vec::new() };
        d.detail_types
            .iter()
            .map(|(name, fields)| crate::registry::authz::schema::DetailType {
                name: name.to_owned(),
                fields: fields.iter().map(|(f, ty)| (f.clone(), ty.name().to_owned())).collect(),
            })
            .collect()
    }
}
