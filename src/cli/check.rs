//! `tessera check`: beyond the errors `Config::load` reports, warn about weak entries.

use crate::config::Config;
use tessera_attestors::Strength;

/// Entries made only of selectors that a process of the same uid could forge.
pub(crate) fn weak_only_entries(cfg: &Config) -> Vec<String> {
    cfg.registry
        .entries()
        .iter()
        .enumerate()
        .filter(|(_, e)| e.selectors.iter().all(|s| s.strength() == Strength::Weak))
        .map(|(i, e)| {
            format!(
                "entries[{i}] ({}) uses only weak selectors, which a process of the same uid can forge; \
                 add a kernel-backed one such as unix:uid, unix:sha256 or systemd:id",
                e.spiffe_id
            )
        })
        .collect()
}

/// Entries with `approval` scopes whose agents the admin socket would serve: root, the daemon's
/// uid (`daemon_uid`: `tessera check` runs as the daemon's user, as in the unit's
/// `ExecStartPre`), or `admin_socket_group`. Such an agent can reach the approval commands; the
/// daemon refuses a decision by the requesting uid or by a process matching the agent's entry,
/// but a second process of the same uid that the entry does not match could still decide, so
/// approvals then separate no duties.
pub(crate) fn self_approval_warnings(cfg: &Config, daemon_uid: u32) -> Vec<String> {
    let admin_uids: Vec<String> = [0, daemon_uid].iter().map(u32::to_string).collect();
    let admin_users: Vec<String> = [0, daemon_uid]
        .iter()
        .filter_map(|u| nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(*u)).ok().flatten())
        .map(|u| u.name)
        .collect();
    let group = cfg.admin_socket_group.map(|g| g.to_string());
    let group_name = cfg
        .admin_socket_group
        .and_then(|g| nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(g)).ok().flatten())
        .map(|g| g.name);
    cfg.registry
        .entries()
        .iter()
        .enumerate()
        .filter(|(_, e)| e.delegation.as_ref().is_some_and(|d| !d.approval.is_empty()))
        .filter_map(|(i, e)| {
            let hit = e.selectors.iter().find(|s| {
                s.kind() == tessera_attestors::Kind::Unix
                    && match s.value().split_once(':') {
                        Some(("uid", v)) => admin_uids.iter().any(|u| u == v),
                        Some(("user", v)) => admin_users.iter().any(|u| u == v),
                        Some(("gid" | "supplementary_gid", v)) => group.as_deref() == Some(v),
                        Some(("group" | "supplementary_group", v)) => group_name.as_deref() == Some(v),
                        _ => false,
                    }
            })?;
            Some(format!(
                "entries[{i}] ({}) has delegation.approval scopes but selects {hit}, whom the admin socket serves: \
                 its agent can reach the approval commands itself. Run the agent as its own user, outside \
                 admin_socket_group, so that a human approves",
                e.spiffe_id
            ))
        })
        .collect()
}

/// Published JWT keys without `jwt_issuer`: OIDC verifiers need `iss` and a discovery document.
pub(crate) fn publication_warnings(cfg: &Config) -> Vec<String> {
    let publishes = cfg.oidc.is_some() || cfg.bundle_endpoint.is_some();
    match &cfg.jwt_issuer {
        None if publishes => vec![
            "[oidc] or [bundle_endpoint] publishes keys but jwt_issuer is unset: JWT-SVIDs carry no \"iss\" and \
             there is no discovery document; set jwt_issuer = \"https://<host serving [oidc]>\""
                .into(),
        ],
        Some(i) if publishes && !i.starts_with("https://") => {
            vec![format!("jwt_issuer {i:?} is not an https URL: OIDC verifiers refuse such an issuer")]
        }
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn warns_when_an_agent_with_approvals_could_reach_the_admin_socket() {
        let cfg = |selector: &str, group: &str| {
            let text = format!(
                "trust_domain = \"example.org\"\njwt_issuer = \"https://i.example\"\n{group}\n\
                 [[entries]]\nspiffe_id = \"spiffe://example.org/a\"\nselectors = [\"{selector}\"]\n\
                 [entries.delegation]\nfrom = [\"spiffe://example.org/b\"]\nscopes = [\"s\"]\n\
                 audiences = [\"https://api\"]\napproval = [\"s\"]\n"
            );
            Config::parse(&text, Path::new("t.toml")).unwrap()
        };
        assert_eq!(self_approval_warnings(&cfg("unix:uid:0", ""), 999).len(), 1);
        assert_eq!(self_approval_warnings(&cfg("unix:user:root", ""), 999).len(), 1, "root by name");
        assert!(self_approval_warnings(&cfg("unix:uid:999", ""), 999)[0].contains("selects unix:uid:999"));
        assert!(self_approval_warnings(&cfg("unix:uid:1000", ""), 999).is_empty());
        assert_eq!(self_approval_warnings(&cfg("unix:gid:50", "admin_socket_group = 50"), 999).len(), 1);
        assert!(self_approval_warnings(&cfg("unix:gid:50", ""), 999).is_empty());
    }

    #[test]
    fn warns_when_keys_are_published_without_an_issuer() {
        let base = "trust_domain = \"example.org\"\n";
        let cfg = |extra: &str| Config::parse(&format!("{base}{extra}"), Path::new("t.toml")).unwrap();
        assert!(publication_warnings(&cfg("")).is_empty());
        let w = publication_warnings(&cfg("[oidc]\nlisten = \"127.0.0.1:0\"\n"));
        assert!(w[0].contains("jwt_issuer is unset"), "{w:?}");
        let w = publication_warnings(&cfg("[bundle_endpoint]\nlisten = \"127.0.0.1:0\"\n"));
        assert_eq!(w.len(), 1);
        assert!(
            publication_warnings(&cfg("jwt_issuer = \"https://i.example\"\n[oidc]\nlisten = \"127.0.0.1:0\"\n"))
                .is_empty()
        );
    }
}
