//! The agent's state transitions, case by case, with certificates made here (no server).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::ca::test_pki::{TestCa as Ca, ca};
use crate::registry::deny::Origin;
use crate::registry::{ConfigPart, DenyRule, DenyTarget, PolicyComposer};
use crate::spiffe_id::SpiffeId;
use rcgen::{CertificateParams, IsCa, KeyPair, KeyUsagePurpose, SanType};
use std::time::Duration;
use tessera_attestors::AttestConfig;

const TD: &str = "example.org";
const HOUR: Duration = Duration::from_secs(3600);

/// An X.509-SVID of `id` signed by `ca`, valid over [from, to]: (leaf DER, PKCS#8 key).
fn svid(ca: &Ca, id: &str, from: SystemTime, to: SystemTime) -> (Vec<u8>, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    p.not_before = from.into();
    p.not_after = to.into();
    (p.signed_by(&key, &ca.issuer).unwrap().der().to_vec(), key.serialize_der())
}

fn id(path: &str) -> String {
    format!("spiffe://{TD}{path}")
}

/// A held SVID for entry `entry_id` at `revision`, obtained at `issued`, valid until `until`.
fn held(ca: &Ca, entry_id: &str, revision: i64, path: &str, issued: SystemTime, until: SystemTime) -> Held {
    let (leaf, key) = svid(ca, &id(path), issued - Duration::from_secs(10), until);
    let spiffe_id = SpiffeId::parse_workload(&id(path)).unwrap();
    Held::build(entry_id.into(), revision, spiffe_id, None, vec![leaf], PrivateKey::new(key), issued).unwrap()
}

fn entry(entry_id: &str, revision: i64, path: &str, selectors: &[&str]) -> types::Entry {
    types::Entry {
        id: entry_id.into(),
        spiffe_id: Some(types::Spiffeid { trust_domain: TD.into(), path: path.into() }),
        selectors: selectors
            .iter()
            .map(|s| {
                let (t, v) = s.split_once(':').unwrap();
                types::Selector { r#type: t.into(), value: v.into() }
            })
            .collect(),
        revision_number: revision,
        ..Default::default()
    }
}

fn bundle(td: &str, roots: &[&[u8]]) -> types::Bundle {
    types::Bundle {
        trust_domain: td.into(),
        x509_authorities: roots.iter().map(|r| types::X509Certificate { asn1: r.to_vec(), tainted: false }).collect(),
        ..Default::default()
    }
}

fn state(ca: &Ca) -> State {
    State::new(TD.parse().unwrap(), vec![ca.der.clone()])
}

fn wanted(p: &PendingSync) -> Vec<&str> {
    let mut ids: Vec<&str> = p.wants.iter().map(|w| w.entry_id.as_str()).collect();
    ids.sort();
    ids
}

/// A composer with an empty config (SPIRE mode) and these deny rules of the config.
fn composer(deny: Vec<DenyRule>) -> PolicyComposer {
    let config = ConfigPart {
        attest: AttestConfig::default(),
        deny: deny.into_iter().map(Arc::new).collect(),
        ..Default::default()
    };
    PolicyComposer::new(config, vec![])
}

#[test]
fn a_new_entry_is_signed_and_served_once_signed() {
    let (ca, now) = (ca(), crate::clock::now());
    let mut s = state(&ca);
    let p = s.begin_sync(vec![entry("e1", 1, "/a", &["unix:uid:1000"])], false, now);
    assert_eq!(wanted(&p), ["e1"]);
    assert_eq!(p.wants[0].spiffe_id.to_string(), id("/a"));
    assert!(p.refusals.is_empty());
    let out = s.finish_sync(p, vec![Ok(held(&ca, "e1", 1, "/a", now, now + HOUR))], now);
    assert_eq!(out, SyncOutcome { changed: true, refusals: vec![] });
    assert!(s.entries.contains_key("e1") && s.held.contains_key("e1"));
}

#[test]
fn an_unchanged_entry_with_a_fresh_svid_is_left_alone() {
    let (ca, now) = (ca(), crate::clock::now());
    let mut s = state(&ca);
    s.entries.insert("e1".into(), entry("e1", 1, "/a", &["unix:uid:1000"]));
    s.held.insert("e1".into(), held(&ca, "e1", 1, "/a", now, now + HOUR));
    let p = s.begin_sync(vec![entry("e1", 1, "/a", &["unix:uid:1000"])], false, now);
    assert!(p.wants.is_empty());
    let out = s.finish_sync(p, vec![], now);
    assert_eq!(out, SyncOutcome { changed: false, refusals: vec![] });
    assert!(s.held.contains_key("e1"));
    // A changed bundle alone is a change to publish.
    let p = s.begin_sync(vec![entry("e1", 1, "/a", &["unix:uid:1000"])], true, now);
    assert!(s.finish_sync(p, vec![], now).changed);
}

#[test]
fn a_new_revision_a_new_id_or_a_half_spent_svid_is_signed_again() {
    let (ca, now) = (ca(), crate::clock::now());
    let mut s = state(&ca);
    for e in ["rev", "moved", "old", "fresh"] {
        s.entries.insert(e.into(), entry(e, 1, &format!("/{e}"), &["unix:uid:1"]));
    }
    s.held.insert("rev".into(), held(&ca, "rev", 1, "/rev", now, now + HOUR));
    s.held.insert("moved".into(), held(&ca, "moved", 1, "/moved", now, now + HOUR));
    // Obtained 2 h ago, valid 1 h more: past half its life.
    s.held.insert("old".into(), held(&ca, "old", 1, "/old", now - 2 * HOUR, now + HOUR));
    s.held.insert("fresh".into(), held(&ca, "fresh", 1, "/fresh", now, now + HOUR));
    let list = vec![
        entry("rev", 2, "/rev", &["unix:uid:1"]),
        entry("moved", 1, "/elsewhere", &["unix:uid:1"]),
        entry("old", 1, "/old", &["unix:uid:1"]),
        entry("fresh", 1, "/fresh", &["unix:uid:1"]),
    ];
    let p = s.begin_sync(list, false, now);
    assert_eq!(wanted(&p), ["moved", "old", "rev"]);
    let rev = p.wants.iter().find(|w| w.entry_id == "rev").unwrap();
    assert_eq!(rev.revision, 2);
    let moved = p.wants.iter().find(|w| w.entry_id == "moved").unwrap();
    assert_eq!(moved.spiffe_id.to_string(), id("/elsewhere"));
}

#[test]
fn a_removed_entry_loses_its_svid_at_once() {
    let (ca, now) = (ca(), crate::clock::now());
    let mut s = state(&ca);
    for e in ["keep", "gone"] {
        s.entries.insert(e.into(), entry(e, 1, &format!("/{e}"), &["unix:uid:1"]));
        s.held.insert(e.into(), held(&ca, e, 1, &format!("/{e}"), now, now + HOUR));
    }
    let p = s.begin_sync(vec![entry("keep", 1, "/keep", &["unix:uid:1"])], false, now);
    // Dropped before any signing (an RPC failure then cannot bring it back).
    assert!(!s.held.contains_key("gone") && s.held.contains_key("keep"));
    let out = s.finish_sync(p, vec![], now);
    assert!(out.changed);
    assert_eq!(s.entries.keys().collect::<Vec<_>>(), ["keep"]);
}

#[test]
fn a_malformed_entry_keeps_its_previous_version_and_svid() {
    let (ca, now) = (ca(), crate::clock::now());
    let mut s = state(&ca);
    let good = entry("e1", 1, "/a", &["unix:uid:1"]);
    s.entries.insert("e1".into(), good.clone());
    s.held.insert("e1".into(), held(&ca, "e1", 1, "/a", now, now + HOUR));
    // Revision 2 names another trust domain; "e2" is new and has no selectors.
    let mut bad = entry("e1", 2, "/a", &["unix:uid:1"]);
    bad.spiffe_id = Some(types::Spiffeid { trust_domain: "other.org".into(), path: "/a".into() });
    let p = s.begin_sync(vec![bad, entry("e2", 1, "/b", &[])], false, now);
    assert!(p.wants.is_empty());
    let what: Vec<&str> = p.refusals.iter().map(|r| r.what.as_str()).collect();
    assert_eq!(what, ["entry e1", "entry e2"]);
    assert!(p.refusals[0].reason.contains("outside example.org"), "{:?}", p.refusals);
    let out = s.finish_sync(p, vec![], now);
    assert!(!out.changed);
    assert_eq!(s.entries.get("e1"), Some(&good));
    assert!(!s.entries.contains_key("e2"));
    assert_eq!(s.held.get("e1").map(|h| h.revision), Some(1));
}

#[test]
fn an_entry_for_other_attestors_is_left_out_without_a_refusal() {
    let (ca, now) = (ca(), crate::clock::now());
    let mut s = state(&ca);
    let p = s.begin_sync(vec![entry("alias", 1, "/node", &["spiffe_id:spiffe://example.org/x"])], false, now);
    assert!(p.wants.is_empty() && p.refusals.is_empty());
    let out = s.finish_sync(p, vec![], now);
    assert!(!out.changed && s.entries.is_empty());
}

#[test]
fn a_refused_svid_keeps_the_previous_one_of_the_same_revision_only() {
    let (ca, now) = (ca(), crate::clock::now());
    let mut s = state(&ca);
    for e in ["half", "rev"] {
        s.entries.insert(e.into(), entry(e, 1, &format!("/{e}"), &["unix:uid:1"]));
        s.held.insert(e.into(), held(&ca, e, 1, &format!("/{e}"), now - 2 * HOUR, now + HOUR));
    }
    let p = s.begin_sync(
        vec![entry("half", 1, "/half", &["unix:uid:1"]), entry("rev", 2, "/rev", &["unix:uid:2"])],
        false,
        now,
    );
    assert_eq!(wanted(&p), ["half", "rev"]);
    let out =
        s.finish_sync(p, vec![Err("server refused entry half".into()), Err("server refused entry rev".into())], now);
    assert_eq!(out.refusals.len(), 2);
    assert!(out.refusals.iter().all(|r| r.what == "X.509-SVID"));
    // The half-spent SVID is still good; the one for revision 1 may name other selectors: gone.
    assert!(s.held.contains_key("half"));
    assert!(!s.held.contains_key("rev"));
    assert_eq!(s.entries.get("rev").map(|e| e.revision_number), Some(2));
}

#[test]
fn an_expired_svid_is_dropped() {
    let (ca, now) = (ca(), crate::clock::now());
    let mut s = state(&ca);
    s.entries.insert("e1".into(), entry("e1", 1, "/a", &["unix:uid:1"]));
    s.held.insert("e1".into(), held(&ca, "e1", 1, "/a", now - HOUR, now - Duration::from_secs(1)));
    let p = s.begin_sync(vec![entry("e1", 1, "/a", &["unix:uid:1"])], false, now);
    assert_eq!(wanted(&p), ["e1"]);
    s.finish_sync(p, vec![Err("unavailable".into())], now);
    assert!(s.held.is_empty());
}

#[test]
fn bundles_of_another_trust_domain_or_unusable_are_refused_and_change_nothing() {
    let (ca, other) = (ca(), ca());
    let mut s = state(&ca);
    assert_eq!(s.roots(), std::slice::from_ref(&ca.der), "the bootstrap bundle until the server gave one");
    assert!(matches!(
        s.apply_bundles(bundle("other.org", &[&other.der]), vec![]),
        Err(BundleRefusal::ForeignTrustDomain(_))
    ));
    assert!(matches!(s.apply_bundles(bundle(TD, &[]), vec![]), Err(BundleRefusal::Invalid(_))));
    assert!(matches!(s.apply_bundles(bundle(TD, &[b"junk"]), vec![]), Err(BundleRefusal::Invalid(_))));
    assert!(s.bundle.is_none());
    assert_eq!(s.apply_bundles(bundle(TD, &[&other.der]), vec![]), Ok(true));
    assert_eq!(s.roots(), std::slice::from_ref(&other.der));
    assert_eq!(s.apply_bundles(bundle(TD, &[&other.der]), vec![]), Ok(false));
    assert_eq!(s.apply_bundles(bundle(TD, &[&other.der]), vec![bundle("partner.org", &[&ca.der])]), Ok(true));
}

#[test]
fn the_verdict_on_denials() {
    assert!(matches!(verdict(Some(Reason::AgentBanned), true), Verdict::Stop(r) if r.contains("banned")));
    for r in [Reason::AgentNotAttested, Reason::AgentExpired] {
        assert!(matches!(verdict(Some(r), false), Verdict::Stop(m) if m.contains("evicted")));
        assert_eq!(verdict(Some(r), true), Verdict::Reattest);
    }
    assert_eq!(verdict(Some(Reason::AgentMustReattest), false), Verdict::Reattest);
    assert_eq!(verdict(Some(Reason::AgentNotActive), false), Verdict::Reconnect);
    assert_eq!(verdict(None, false), Verdict::Retry);
}

#[test]
fn a_ban_clears_entries_and_svids_and_publishes_nothing() {
    let (ca, now) = (ca(), crate::clock::now());
    let mut s = state(&ca);
    s.apply_bundles(bundle(TD, &[&ca.der]), vec![]).unwrap();
    s.entries.insert("e1".into(), entry("e1", 1, "/a", &["unix:uid:1"]));
    s.held.insert("e1".into(), held(&ca, "e1", 1, "/a", now, now + HOUR));
    s.clear();
    assert!(s.entries.is_empty() && s.held.is_empty());
    assert!(s.stored_svids().svids.is_empty() && s.snapshot().entries.is_empty());
    let p = s.published();
    assert!(p.served.svids.is_empty() && p.sync.registry.entries().is_empty());
}

#[test]
fn only_entries_with_an_svid_are_published_oldest_first() {
    let (ca, now) = (ca(), crate::clock::now());
    let mut s = state(&ca);
    s.apply_bundles(bundle(TD, &[&ca.der]), vec![]).unwrap();
    for (e, created) in [("young", 20), ("old", 10), ("unsigned", 5)] {
        let mut x = entry(e, 1, &format!("/{e}"), &["unix:uid:1"]);
        x.created_at = created;
        s.entries.insert(e.into(), x);
    }
    for e in ["young", "old"] {
        s.held.insert(e.into(), held(&ca, e, 1, &format!("/{e}"), now, now + HOUR));
    }
    let p = s.published();
    let ids: Vec<String> = p.sync.registry.entries().iter().map(|e| e.spiffe_id.to_string()).collect();
    assert_eq!(ids, [id("/old"), id("/young")]);
    assert_eq!(p.served.svids.len(), 2);
    assert_eq!(p.served.entry_ids.values().filter(|v| *v == "old").count(), 1);
    assert_eq!(p.served.bundles.x509.certs(), std::slice::from_ref(&ca.der));
    let composer = composer(vec![]);
    composer.spire_synced(p.sync);
    assert!(composer.current().jwt_issuer.is_none());
}

#[test]
fn deny_rules_and_delegation_issuers_carry_over_into_the_published_policy() {
    let (ca, now) = (ca(), crate::clock::now());
    let mut s = state(&ca);
    s.apply_bundles(bundle(TD, &[&ca.der]), vec![]).unwrap();
    s.entries.insert("e1".into(), entry("e1", 1, "/a", &["unix:uid:1"]));
    s.held.insert("e1".into(), held(&ca, "e1", 1, "/a", now, now + HOUR));
    let rule = DenyRule {
        id: "config-1".into(),
        target: DenyTarget::Selector(format!("unix:sha256:{}", "a".repeat(64)).parse().unwrap()),
        reason: "compromised".into(),
        origin: Origin::Config,
    };
    let composer = composer(vec![rule]);
    let previous = composer.current();
    composer.spire_synced(s.published().sync);
    let p = composer.current();
    assert_eq!(p.registry.entries().len(), 1);
    assert!(Arc::ptr_eq(&p.deny, &previous.deny));
    assert!(Arc::ptr_eq(&p.delegation_issuers, &previous.delegation_issuers));
    // The rule names a digest: the attestor computes it though no entry asks for one.
    assert!(!p.attest_base.want_exe_digest);
    assert!(p.attestor.config().want_exe_digest);
    // Same settings next time: the attestor (and its digest cache) is kept.
    composer.spire_synced(s.published().sync);
    assert!(Arc::ptr_eq(&composer.current().attestor, &p.attestor));
}

#[test]
fn entries_asking_for_digests_and_config_files_set_the_attestor() {
    let (ca, now) = (ca(), crate::clock::now());
    let mut s = state(&ca);
    let digest = format!("unix:sha256:{}", "b".repeat(64));
    let config = format!("config:sha256:/etc/app.toml:{}", "c".repeat(64));
    s.entries.insert("e1".into(), entry("e1", 1, "/a", &[&digest, &config]));
    s.held.insert("e1".into(), held(&ca, "e1", 1, "/a", now, now + HOUR));
    let composer = composer(vec![]);
    composer.spire_synced(s.published().sync);
    let p = composer.current();
    assert!(p.attest_base.want_exe_digest && !p.attest_base.want_script_digest);
    assert_eq!(p.attest_base.config_paths, [std::path::PathBuf::from("/etc/app.toml")]);
}

#[test]
fn federated_bundles_are_published_and_unusable_ones_refused() {
    let (ca, partner) = (ca(), ca());
    let mut s = state(&ca);
    let federated = vec![bundle("spiffe://partner.org", &[&partner.der]), bundle("broken.org", &[])];
    s.apply_bundles(bundle(TD, &[&ca.der]), federated).unwrap();
    let p = s.published();
    let tds: Vec<String> = p.sync.federated.keys().map(|t| t.to_string()).collect();
    assert_eq!(tds, ["partner.org"]);
    assert_eq!(p.refusals.len(), 1);
    assert_eq!(p.refusals[0].what, "federated bundle broken.org");
}

#[test]
fn persisted_svids_are_restored_only_if_they_still_hold() {
    let (ca, other, now) = (ca(), ca(), crate::clock::now());
    let mut s = state(&ca);
    s.apply_bundles(bundle(TD, &[&ca.der]), vec![]).unwrap();
    for e in ["good", "foreign", "renamed"] {
        s.entries.insert(e.into(), entry(e, 1, &format!("/{e}"), &["unix:uid:1"]));
    }
    s.held.insert("good".into(), held(&ca, "good", 1, "/good", now, now + HOUR));
    s.held.insert("foreign".into(), held(&other, "foreign", 1, "/foreign", now, now + HOUR));
    s.held.insert("renamed".into(), held(&ca, "renamed", 1, "/not-renamed", now, now + HOUR));
    s.held.insert("orphan".into(), held(&ca, "orphan", 1, "/orphan", now, now + HOUR));
    let (snapshot, stored) = (s.snapshot(), s.stored_svids());
    assert_eq!(stored.svids.len(), 4);

    let mut restored = State::new(TD.parse().unwrap(), vec![]);
    restored.restore(snapshot);
    assert_eq!(restored.entries.len(), 3);
    assert_eq!(restored.roots(), std::slice::from_ref(&ca.der), "the persisted bundle's roots");
    restored.restore_svids(stored.clone(), now);
    // Another CA's chain, an SVID naming another ID, one of no entry: left out.
    assert_eq!(restored.held.keys().collect::<Vec<_>>(), ["good"]);
    let h = &restored.held["good"];
    assert_eq!((h.revision, h.svid.spiffe_id.to_string()), (1, id("/good")));

    // Past its NotAfter at restore time: left out.
    let mut later = State::new(TD.parse().unwrap(), vec![]);
    later.restore(s.snapshot());
    later.restore_svids(stored, now + 2 * HOUR);
    assert!(later.held.is_empty());
}
