//! `tessera check`: beyond the errors `Config::load` reports, warn about weak entries.

use crate::config::Config;
use tessera_attestors::Strength;

/// Entries made only of selectors that a process of the same uid could forge.
pub fn weak_only_entries(cfg: &Config) -> Vec<String> {
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

/// Published JWT keys without `jwt_issuer`: OIDC verifiers need `iss` and a discovery document.
pub fn publication_warnings(cfg: &Config) -> Vec<String> {
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
