//! `token_socket_path`, `[[delegation.issuers]]` and `[entries.delegation]`: parsed here, checked
//! with located errors, into the types of [`crate::registry::delegation`].

use super::{RawEntry, Validator, beside};
use crate::registry::delegation::{
    DEFAULT_MAX_DEPTH, DEFAULT_MAX_TTL, DelegationConfig, EntryDelegation, MAX_DEPTH_LIMIT, MAX_MAX_TTL, TrustedIssuer,
    valid_scope_token,
};
use crate::spiffe_id::SpiffeId;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toml::Spanned;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelegation {
    #[serde(default)]
    issuers: Vec<Spanned<RawIssuer>>,
    #[serde(default)]
    authorization_details: Vec<Spanned<super::details::RawDetailType>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    issuer: Spanned<String>,
    jwks_path: Spanned<PathBuf>,
    audience: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEntryDelegation {
    from: Spanned<Vec<Spanned<String>>>,
    scopes: Spanned<Vec<Spanned<String>>>,
    audiences: Spanned<Vec<Spanned<String>>>,
    max_ttl: Option<Spanned<String>>,
    max_depth: Option<Spanned<i64>>,
    #[serde(default)]
    approval: Vec<Spanned<String>>,
    /// The `authorization_details` types this agent may request (checked by [`Self::delegation`]).
    #[serde(default)]
    pub(super) authorization_details: Vec<Spanned<String>>,
}

impl Validator<'_> {
    /// One entry's `[entries.delegation]` table (its `from` issuers are checked by [`Self::delegation`]).
    pub(super) fn entry_delegation(
        &mut self,
        i: usize,
        raw: Option<&Spanned<RawEntryDelegation>>,
    ) -> Option<Arc<EntryDelegation>> {
        let d = raw?.get_ref();
        let key = |k: &str| format!("entries[{i}].delegation.{k}");
        let mut from = Vec::new();
        if d.from.get_ref().is_empty() {
            self.issue(
                &d.from,
                &key("from"),
                "no delegator is allowed".into(),
                "name the issuer of user tokens (from = [\"https://idp.example.com\"]) or the agent that delegates",
            );
        }
        for (j, f) in d.from.get_ref().iter().enumerate() {
            let s = f.get_ref();
            if s.starts_with("spiffe://") {
                match SpiffeId::parse_workload(s) {
                    Ok(id) => from.push(id.to_string()),
                    Err(e) => self.issue(
                        f,
                        &format!("entries[{i}].delegation.from[{j}]"),
                        format!("invalid SPIFFE ID {s:?}: {e}"),
                        "write the delegating agent's SPIFFE ID, e.g. spiffe://example.org/agents/concierge",
                    ),
                }
            } else if s.is_empty() {
                self.issue(f, &format!("entries[{i}].delegation.from[{j}]"), "empty delegator".into(), "remove it");
            } else {
                from.push(s.clone());
            }
        }
        let mut list = |v: &Spanned<Vec<Spanned<String>>>, name: &str, what: &str, scope: bool| -> Vec<String> {
            if v.get_ref().is_empty() {
                self.issue(v, &key(name), format!("no {what} listed"), &format!("list at least one {what}"));
            }
            let mut out: Vec<String> = Vec::new();
            for (j, s) in v.get_ref().iter().enumerate() {
                let ok = if scope {
                    valid_scope_token(s.get_ref())
                } else {
                    !s.get_ref().is_empty() && s.get_ref().len() <= 1024
                };
                if !ok {
                    self.issue(
                        s,
                        &format!("entries[{i}].delegation.{name}[{j}]"),
                        format!("{:?} is not a valid {what}", s.get_ref()),
                        if scope {
                            "write a scope without spaces, quotes or backslashes, e.g. \"flight:search\""
                        } else {
                            "write a non-empty audience of at most 1024 bytes, e.g. \"https://api.flights.example\""
                        },
                    );
                } else if !out.contains(s.get_ref()) {
                    out.push(s.get_ref().clone());
                }
            }
            out
        };
        let scopes = list(&d.scopes, "scopes", "scope", true);
        let audiences = list(&d.audiences, "audiences", "audience", false);
        let mut approval = Vec::new();
        for (j, s) in d.approval.iter().enumerate() {
            if !scopes.contains(s.get_ref()) {
                self.issue(
                    s,
                    &format!("entries[{i}].delegation.approval[{j}]"),
                    format!("{:?} is not among this entry's scopes", s.get_ref()),
                    "list only scopes that are also in delegation.scopes",
                );
            } else if !approval.contains(s.get_ref()) {
                approval.push(s.get_ref().clone());
            }
        }
        let max_ttl = self.duration(&d.max_ttl, &key("max_ttl"), DEFAULT_MAX_TTL, MAX_MAX_TTL);
        let max_depth = match &d.max_depth {
            None => DEFAULT_MAX_DEPTH,
            Some(n) => match u32::try_from(*n.get_ref()) {
                Ok(n) if (1..=MAX_DEPTH_LIMIT).contains(&n) => n,
                _ => {
                    self.issue(
                        n,
                        &key("max_depth"),
                        format!("{} is outside 1..={MAX_DEPTH_LIMIT}", n.get_ref()),
                        "1 lets the agent act directly for a user; each further hop adds one",
                    );
                    DEFAULT_MAX_DEPTH
                }
            },
        };
        let mut authorization_details: Vec<String> = Vec::new();
        for t in &d.authorization_details {
            if !authorization_details.contains(t.get_ref()) {
                authorization_details.push(t.get_ref().clone());
            }
        }
        Some(Arc::new(EntryDelegation { from, scopes, audiences, max_ttl, max_depth, approval, authorization_details }))
    }

    /// `[delegation]` and `token_socket_path`: Some when delegation is configured (a
    /// `[delegation]` table or any `[entries.delegation]`). Checks what spans both: `jwt_issuer`
    /// is required, and every issuer an entry names in `from` must be configured.
    pub(super) fn delegation(
        &mut self,
        raw: Option<&Spanned<RawDelegation>>,
        token_socket_path: Option<&PathBuf>,
        jwt_issuer: Option<&str>,
        entries: &[Spanned<RawEntry>],
        socket_path: &Path,
    ) -> Option<DelegationConfig> {
        let first_entry = entries.iter().enumerate().find_map(|(i, e)| e.get_ref().delegation.as_ref().map(|d| (i, d)));
        if raw.is_none() && first_entry.is_none() {
            return None;
        }
        let mut issuers: Vec<TrustedIssuer> = Vec::new();
        for (i, r) in raw.map(|r| r.get_ref().issuers.as_slice()).unwrap_or_default().iter().enumerate() {
            let ri = r.get_ref();
            let key = |k: &str| format!("delegation.issuers[{i}].{k}");
            let name = ri.issuer.get_ref();
            if name.is_empty() || name.starts_with("spiffe://") {
                self.issue(
                    &ri.issuer,
                    &key("issuer"),
                    format!("{name:?} is not an issuer of user tokens"),
                    "write the exact \"iss\" of the identity provider's tokens, e.g. \"https://idp.example.com\"",
                );
            } else if Some(name.as_str()) == jwt_issuer {
                self.issue(
                    &ri.issuer,
                    &key("issuer"),
                    "this is tessera's own jwt_issuer; earlier tessera hops are trusted through its own keys".into(),
                    "remove this [[delegation.issuers]] block",
                );
            } else if issuers.iter().any(|x| &x.issuer == name) {
                self.issue(
                    r,
                    &format!("delegation.issuers[{i}]"),
                    format!("{name} is listed twice"),
                    "keep one block per issuer",
                );
            }
            if !ri.jwks_path.get_ref().is_file() {
                self.issue(
                    &ri.jwks_path,
                    &key("jwks_path"),
                    format!("{} is not a readable file", ri.jwks_path.get_ref().display()),
                    "give the path of the identity provider's JWK Set (JSON with a \"keys\" array)",
                );
            }
            if ri.audience.get_ref().is_empty() {
                self.issue(
                    &ri.audience,
                    &key("audience"),
                    "empty audience".into(),
                    "write the audience the IdP puts in tokens for tessera, e.g. \"tessera\"",
                );
            }
            issuers.push(TrustedIssuer {
                issuer: name.clone(),
                jwks_path: ri.jwks_path.get_ref().clone(),
                audience: ri.audience.get_ref().clone(),
            });
        }
        if jwt_issuer.is_none_or(str::is_empty) {
            let fix = "set jwt_issuer (the \"iss\" of the tokens tessera issues), e.g. jwt_issuer = \"https://tessera.example.org\"";
            let message = "delegation is configured but jwt_issuer is not set".to_owned();
            match (raw, first_entry) {
                (Some(r), _) => self.issue(r, "jwt_issuer", message, fix),
                (None, Some((i, d))) => self.issue(d, &format!("entries[{i}].delegation"), message, fix),
                (None, None) => {}
            }
        }
        let declared = raw.map(|r| r.get_ref().authorization_details.as_slice()).unwrap_or_default();
        let detail_types = self.detail_types(declared);
        self.entry_detail_types(entries, declared);
        for (i, e) in entries.iter().enumerate() {
            let Some(d) = &e.get_ref().delegation else { continue };
            for (j, f) in d.get_ref().from.get_ref().iter().enumerate() {
                let s = f.get_ref();
                if s.is_empty() {
                    continue;
                }
                if !s.starts_with("spiffe://") && !issuers.iter().any(|x| &x.issuer == s) {
                    self.issue(
                        f,
                        &format!("entries[{i}].delegation.from[{j}]"),
                        format!("{s:?} is neither a configured issuer nor a SPIFFE ID"),
                        &format!("add [[delegation.issuers]] issuer = \"{s}\" with its jwks_path and audience, or name an agent's SPIFFE ID"),
                    );
                }
            }
        }
        Some(DelegationConfig {
            token_socket_path: token_socket_path.cloned().unwrap_or_else(|| beside(socket_path, "token.sock")),
            issuers,
            detail_types: Arc::new(detail_types),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(text, Path::new("/etc/tessera/tessera.toml"))
    }

    fn jwks_file() -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), r#"{"keys":[]}"#).unwrap();
        f
    }

    #[test]
    fn a_full_delegation_config() {
        let jwks = jwks_file();
        let cfg = parse(&format!(
            r#"trust_domain = "example.org"
socket_path = "/run/t/api.sock"
jwt_issuer = "https://tessera.example.org"
[[delegation.issuers]]
issuer = "https://idp.example.com"
jwks_path = "{}"
audience = "tessera"
[[entries]]
spiffe_id = "spiffe://example.org/agents/travel"
selectors = ["unix:uid:1000"]
[entries.delegation]
from = ["https://idp.example.com", "spiffe://example.org/agents/concierge"]
scopes = ["flight:search", "flight:reserve", "booking:create"]
audiences = ["https://api.flights.example"]
max_ttl = "5m"
max_depth = 3
approval = ["booking:create"]
"#,
            jwks.path().display()
        ))
        .unwrap();
        let d = cfg.delegation.unwrap();
        assert_eq!(d.token_socket_path, Path::new("/run/t/token.sock"));
        assert_eq!(d.issuers[0].audience, "tessera");
        let e = cfg.registry.entries()[0].delegation.clone().unwrap();
        assert_eq!((e.max_depth, e.max_ttl.as_secs()), (3, 300));
        assert_eq!(e.approval, ["booking:create"]);
    }

    #[test]
    fn delegation_without_jwt_issuer_and_bad_keys_are_located() {
        let err = parse(
            r#"trust_domain = "example.org"
[[entries]]
spiffe_id = "spiffe://example.org/agents/travel"
selectors = ["unix:uid:1000"]
[entries.delegation]
from = ["https://unknown-idp.example", "spiffe://bad id"]
scopes = ["ok", "bad scope"]
audiences = []
max_depth = 0
max_ttl = "2d"
approval = ["booking:create"]
"#,
        )
        .unwrap_err();
        let found: Vec<(usize, &str)> = err.issues.iter().map(|i| (i.line, i.key.as_str())).collect();
        assert_eq!(
            found,
            [
                (6, "entries[0].delegation.from[1]"),
                (7, "entries[0].delegation.scopes[1]"),
                (8, "entries[0].delegation.audiences"),
                (11, "entries[0].delegation.approval[0]"),
                (10, "entries[0].delegation.max_ttl"),
                (9, "entries[0].delegation.max_depth"),
                (5, "entries[0].delegation"),
                (6, "entries[0].delegation.from[0]"),
            ]
        );
        assert!(err.issues.iter().all(|i| !i.fix.is_empty()));
        let text = err.to_string();
        assert!(text.contains("delegation is configured but jwt_issuer is not set"), "{text}");
        assert!(text.contains("fix: set jwt_issuer"), "{text}");
        assert!(text.contains("add [[delegation.issuers]] issuer = \"https://unknown-idp.example\""), "{text}");
    }

    #[test]
    fn issuer_blocks_are_checked() {
        let err = parse(
            r#"trust_domain = "example.org"
jwt_issuer = "https://tessera.example.org"
[[delegation.issuers]]
issuer = "https://tessera.example.org"
jwks_path = "/nonexistent/jwks.json"
audience = ""
"#,
        )
        .unwrap_err();
        let found: Vec<(usize, &str)> = err.issues.iter().map(|i| (i.line, i.key.as_str())).collect();
        assert_eq!(
            found,
            [
                (4, "delegation.issuers[0].issuer"),
                (5, "delegation.issuers[0].jwks_path"),
                (6, "delegation.issuers[0].audience")
            ]
        );
        // No delegation anywhere: no token socket.
        assert!(parse("trust_domain = \"example.org\"\n").unwrap().delegation.is_none());
    }
}
