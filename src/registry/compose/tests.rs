//! The composer, input by input: each writer changes its own part, every other part stays.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::bundle::{JwtBundle, X509Bundle};
use crate::registry::DenyTarget;
use crate::registry::deny::Origin;

fn entry(id: &str, selectors: &[&str]) -> Entry {
    Entry::for_test(&format!("spiffe://example.org{id}"), selectors)
}

fn bundle(cert: u8) -> Arc<FederatedBundle> {
    Arc::new(FederatedBundle {
        x509: X509Bundle::new(vec![vec![cert]]),
        jwt: JwtBundle::default(),
        delegation: JwtBundle::default(),
    })
}

fn td(name: &str) -> TrustDomain {
    name.parse().unwrap()
}

fn rule(id: &str, target: &str) -> Arc<DenyRule> {
    let target = match target.strip_prefix("spiffe://") {
        Some(_) => DenyTarget::SpiffeId(target.parse().unwrap()),
        None => DenyTarget::Selector(target.parse().unwrap()),
    };
    let origin =
        if id.starts_with("config") { Origin::Config } else { Origin::Runtime { by_uid: 0, by_pid: None, at: 1 } };
    Arc::new(DenyRule { id: id.into(), target, reason: "test".into(), origin })
}

fn digest(kind: &str, c: char) -> String {
    format!("{kind}:sha256:{}", c.to_string().repeat(64))
}

/// A config with one entry, one `[[deny]]` rule, a JWT issuer and two partners (one with a file
/// bundle, one without any yet).
fn config() -> ConfigPart {
    ConfigPart {
        registry: Registry::new(vec![entry("/a", &["unix:uid:1"])]),
        attest: AttestConfig { max_hash_size: Some(1000), ..Default::default() },
        jwt_issuer: Some("https://issuer".into()),
        deny: vec![rule("config-0", "spiffe://example.org/evil")],
        delegation_issuers: Arc::default(),
        detail_types: Arc::default(),
        federation: [(td("file.org"), Some(bundle(1))), (td("endpoint.org"), None)].into(),
        exe_digests: false,
        authz: None,
    }
}

fn ids(p: &Policy) -> Vec<String> {
    p.registry.entries().iter().map(|e| e.spiffe_id.to_string()).collect()
}

fn rule_ids(p: &Policy) -> Vec<String> {
    p.deny.rules().map(|r| r.id.clone()).collect()
}

#[test]
fn the_first_policy_is_the_config_with_the_stored_revocations() {
    let c = PolicyComposer::new(config(), vec![rule("r-1", "spiffe://example.org/b")]);
    let p = c.current();
    assert_eq!(ids(&p), ["spiffe://example.org/a"]);
    assert_eq!(rule_ids(&p), ["config-0", "r-1"]);
    assert_eq!(p.jwt_issuer.as_deref(), Some("https://issuer"));
    assert_eq!(p.federated.keys().map(|t| t.to_string()).collect::<Vec<_>>(), ["file.org"]);
    assert_eq!(p.attest_base.max_hash_size, Some(1000));
}

#[test]
fn a_config_reload_keeps_runtime_revocations_and_fetched_bundles() {
    let c = PolicyComposer::new(config(), vec![]);
    c.revocations_changed(vec![rule("r-1", "spiffe://example.org/b")]);
    c.bundle_updated(td("endpoint.org"), bundle(2));
    c.bundle_updated(td("file.org"), bundle(3));
    let mut next = config();
    next.registry = Registry::new(vec![entry("/new", &["unix:uid:2"])]);
    next.deny = vec![];
    next.jwt_issuer = None;
    c.config_loaded(next);
    let p = c.current();
    assert_eq!(ids(&p), ["spiffe://example.org/new"]);
    assert_eq!(rule_ids(&p), ["r-1"]);
    assert!(p.jwt_issuer.is_none());
    // Fetched bundles win over the config's file, for every partner the config still names.
    assert_eq!(p.federated[&td("endpoint.org")], bundle(2));
    assert_eq!(p.federated[&td("file.org")], bundle(3));
    // A partner the config no longer names is gone, its fetched bundle with it.
    let mut fewer = config();
    fewer.federation.remove(&td("endpoint.org"));
    c.config_loaded(fewer);
    assert_eq!(c.current().federated.keys().map(|t| t.to_string()).collect::<Vec<_>>(), ["file.org"]);
    // A late fetch for the dropped partner changes nothing; re-added, its configured bundle (not
    // the stale fetched one) is the anchor until its endpoint is fetched again.
    c.bundle_updated(td("endpoint.org"), bundle(4));
    assert!(!c.current().federated.contains_key(&td("endpoint.org")));
    let mut again = config();
    again.federation.insert(td("endpoint.org"), Some(bundle(5)));
    c.config_loaded(again);
    assert_eq!(c.current().federated[&td("endpoint.org")], bundle(5));
}

#[test]
fn a_revocation_keeps_the_configs_entries_and_is_in_force_when_the_call_returns() {
    let c = PolicyComposer::new(config(), vec![]);
    let mut rx = c.subscribe();
    c.bundle_updated(td("endpoint.org"), bundle(2));
    let before = c.current();
    c.revocations_changed(vec![rule("r-1", "spiffe://example.org/a")]);
    // Synchronous: the receiver has the new policy, no await in between.
    assert!(rx.has_changed().unwrap());
    let p = rx.borrow_and_update().clone();
    assert_eq!(rule_ids(&p), ["config-0", "r-1"]);
    assert_eq!(ids(&p), ids(&before));
    assert_eq!(p.jwt_issuer, before.jwt_issuer);
    assert_eq!(p.federated, before.federated);
    assert!(Arc::ptr_eq(&p.delegation_issuers, &before.delegation_issuers));
    assert!(p.refuses_tokens_of(&"spiffe://example.org/a".parse().unwrap()).is_some());
    // Lifting it: only the config's rule is left.
    c.revocations_changed(vec![]);
    assert_eq!(rule_ids(&c.current()), ["config-0"]);
}

#[test]
fn a_bundle_update_keeps_everything_else() {
    let c = PolicyComposer::new(config(), vec![rule("r-1", "spiffe://example.org/b")]);
    let before = c.current();
    c.bundle_updated(td("endpoint.org"), bundle(2));
    let p = c.current();
    assert_eq!(p.federated[&td("endpoint.org")], bundle(2));
    assert_eq!(p.federated[&td("file.org")], bundle(1));
    assert_eq!(ids(&p), ids(&before));
    assert_eq!(p.jwt_issuer, before.jwt_issuer);
    assert!(Arc::ptr_eq(&p.deny, &before.deny));
    assert!(Arc::ptr_eq(&p.attestor, &before.attestor));
    assert!(Arc::ptr_eq(&p.delegation_issuers, &before.delegation_issuers));
}

#[test]
fn the_attestor_is_kept_while_its_settings_are_equal_and_replaced_when_a_rule_needs_a_digest() {
    let c = PolicyComposer::new(config(), vec![]);
    let first = c.current().attestor.clone();
    assert!(!first.config().want_exe_digest);
    // A revocation by SPIFFE ID needs no digest: same attestor (its digest cache stays).
    c.revocations_changed(vec![rule("r-1", "spiffe://example.org/b")]);
    assert!(Arc::ptr_eq(&c.current().attestor, &first));
    // A reload with equal settings: same attestor.
    c.config_loaded(config());
    assert!(Arc::ptr_eq(&c.current().attestor, &first));
    // A rule on an executable digest: the attestor must compute it, though no entry asks.
    c.revocations_changed(vec![rule("r-2", &digest("unix", 'a'))]);
    let p = c.current();
    assert!(!Arc::ptr_eq(&p.attestor, &first));
    assert!(p.attestor.config().want_exe_digest && !p.attest_base.want_exe_digest);
    // Another digest rule of the same kind: the settings are equal, the attestor stays.
    let second = p.attestor.clone();
    c.revocations_changed(vec![rule("r-2", &digest("unix", 'a')), rule("r-3", &digest("unix", 'b'))]);
    assert!(Arc::ptr_eq(&c.current().attestor, &second));
}

#[test]
fn entries_asking_for_digests_and_config_files_set_the_attestor() {
    let mut part = config();
    let config_sel = format!("config:sha256:/etc/app.toml:{}", "c".repeat(64));
    part.registry = Registry::new(vec![
        entry("/a", &[&digest("script", 'b'), &config_sel]),
        entry("/b", &[&config_sel, "unix:uid:1"]),
    ]);
    let p = PolicyComposer::new(part, vec![]).current();
    assert!(!p.attest_base.want_exe_digest && p.attest_base.want_script_digest);
    assert_eq!(p.attest_base.config_paths, [std::path::PathBuf::from("/etc/app.toml")]);
    assert_eq!(p.attest_base.max_hash_size, Some(1000));
    assert_eq!(*p.attestor.config(), p.attest_base);
}

#[test]
fn a_spire_sync_replaces_entries_and_bundles_but_keeps_deny_rules_and_delegation_issuers() {
    let c = PolicyComposer::new(config(), vec![rule("r-1", &digest("unix", 'a'))]);
    let before = c.current();
    let sync = SpireSync {
        registry: Registry::new(vec![entry("/spire", &[&digest("unix", 'b')])]),
        federated: [(td("partner.org"), bundle(9))].into(),
    };
    c.spire_synced(sync.clone());
    let p = c.current();
    assert_eq!(ids(&p), ["spiffe://example.org/spire"]);
    assert_eq!(p.federated.keys().map(|t| t.to_string()).collect::<Vec<_>>(), ["partner.org"]);
    assert!(p.jwt_issuer.is_none());
    assert!(Arc::ptr_eq(&p.deny, &before.deny));
    assert!(Arc::ptr_eq(&p.delegation_issuers, &before.delegation_issuers));
    // The entries' settings over the config's base; the deny rule already wanted the digest.
    assert!(p.attest_base.want_exe_digest);
    assert_eq!(p.attest_base.max_hash_size, Some(1000));
    assert!(Arc::ptr_eq(&p.attestor, &before.attestor));
    // Later inputs keep the sync's entries: a revocation, a fetched bundle.
    c.revocations_changed(vec![]);
    c.bundle_updated(td("endpoint.org"), bundle(2));
    let p = c.current();
    assert_eq!(ids(&p), ["spiffe://example.org/spire"]);
    assert_eq!(rule_ids(&p), ["config-0"]);
    assert_eq!(p.federated.keys().map(|t| t.to_string()).collect::<Vec<_>>(), ["partner.org"]);
    // An empty sync (banned, evicted): nothing is served, the deny rules stay.
    c.spire_synced(SpireSync::default());
    let p = c.current();
    assert!(p.registry.entries().is_empty() && p.federated.is_empty());
    assert_eq!(rule_ids(&p), ["config-0"]);
}

#[test]
fn the_gateway_wants_every_callers_executable_digest() {
    // No entry selects on a digest: none wanted, unless the config part asks for them all.
    let plain = PolicyComposer::new(config(), vec![]);
    assert!(!plain.subscribe().borrow().attestor.config().want_exe_digest);
    let gateway = PolicyComposer::new(ConfigPart { exe_digests: true, ..config() }, vec![]);
    assert!(gateway.subscribe().borrow().attestor.config().want_exe_digest);
}
