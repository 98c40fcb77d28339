//! The exchange's decision, case by case.

use super::*;
use crate::delegation::trust::Origin;
use std::time::Duration;

const NOW: u64 = 1_800_000_000;
const CONCIERGE: &str = "spiffe://example.org/agents/concierge";
const BOOKER: &str = "spiffe://example.org/agents/booker";
const IDP: &str = "https://idp.example";
const API: &str = "https://api.flights.example";

fn policy() -> EntryDelegation {
    EntryDelegation {
        from: vec![IDP.into(), CONCIERGE.into()],
        scopes: vec!["flight:search".into(), "booking:create".into()],
        audiences: vec![API.into()],
        max_ttl: Duration::from_secs(300),
        max_depth: 2,
        approval: vec!["booking:create".into()],
        authorization_details: vec![],
    }
}

/// Alice's own token (first hop), valid for another hour.
fn user() -> Subject {
    Subject {
        user: "alice".into(),
        issuer: IDP.into(),
        origin: Origin::IdentityProvider,
        scopes: vec!["flight:search".into(), "booking:create".into()],
        exp: NOW + 3600,
        act: None,
        actors: vec![],
        delegator: IDP.into(),
        client_id: None,
        jti: None,
        authorization_details: None,
        iat: None,
    }
}

/// A hand-off from the concierge (later hop).
fn hand_off() -> Subject {
    Subject {
        origin: Origin::Tessera("example.org".parse().unwrap()),
        actors: vec![CONCIERGE.into()],
        delegator: CONCIERGE.into(),
        client_id: Some(CONCIERGE.into()),
        ..user()
    }
}

fn scopes(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| (*s).to_owned()).collect()
}

fn run(subject: &Subject, audience: &str, asked: &[&str]) -> Result<Decision, OAuthError> {
    let asked = scopes(asked);
    let ask = Ask { agent: BOOKER, audience, scopes: &asked, details: &serde_json::Map::new() };
    decide(&ask, &policy(), subject, NOW, Some(NOW + 86_400), |_| None)
}

fn code(r: Result<Decision, OAuthError>) -> &'static str {
    r.map(|d| panic!("granted: {d:?}")).unwrap_or_else(|e| e.code.as_str())
}

#[test]
fn granted_for_the_shortest_life_of_ttl_subject_and_key() {
    assert_eq!(run(&user(), API, &["flight:search"]).unwrap(), Decision { exp: NOW + 300, needs_approval: false });
    let soon = Subject { exp: NOW + 60, ..user() };
    assert_eq!(run(&soon, API, &["flight:search"]).unwrap().exp, NOW + 60);
    let asked = scopes(&["flight:search"]);
    let ask = Ask { agent: BOOKER, audience: API, scopes: &asked, details: &serde_json::Map::new() };
    assert_eq!(decide(&ask, &policy(), &user(), NOW, Some(NOW + 10), |_| None).unwrap().exp, NOW + 10);
}

#[test]
fn from_must_name_the_immediate_delegator() {
    let other = Subject { delegator: "https://evil.example".into(), ..user() };
    assert_eq!(code(run(&other, API, &["flight:search"])), "invalid_grant");
    assert!(run(&hand_off(), API, &["flight:search"]).is_ok());
}

#[test]
fn depth_counts_this_agent_too() {
    let deep = Subject { actors: vec![CONCIERGE.into(), "spiffe://example.org/agents/x".into()], ..hand_off() };
    let e = run(&deep, API, &["flight:search"]).unwrap_err();
    assert!(e.description.contains("3 actors"), "{}", e.description);
}

#[test]
fn audience_must_be_allowed() {
    assert_eq!(code(run(&user(), "https://bank.example", &["flight:search"])), "invalid_target");
}

#[test]
fn scopes_must_be_the_users_and_the_entrys() {
    let narrow = Subject { scopes: scopes(&["flight:search"]), ..user() };
    assert_eq!(code(run(&narrow, API, &["booking:create"])), "invalid_scope");
    let wide = Subject { scopes: scopes(&["flight:search", "profile"]), ..user() };
    let e = run(&wide, API, &["profile"]).unwrap_err();
    assert!(e.description.contains("delegation.scopes"), "{}", e.description);
}

#[test]
fn an_expiring_subject_or_no_key_is_refused() {
    let expired = Subject { exp: NOW, ..user() };
    assert_eq!(code(run(&expired, API, &["flight:search"])), "invalid_grant");
    let asked = scopes(&["flight:search"]);
    let ask = Ask { agent: BOOKER, audience: API, scopes: &asked, details: &serde_json::Map::new() };
    let e = decide(&ask, &policy(), &user(), NOW, None, |_| None).unwrap_err();
    assert_eq!(e.code, OAuthCode::TemporarilyUnavailable);
}

#[test]
fn approval_scopes_need_a_human() {
    assert!(run(&user(), API, &["flight:search", "booking:create"]).unwrap().needs_approval);
}

#[test]
fn a_revoked_actor_or_client_refuses_the_chain_first() {
    let asked = scopes(&["flight:search"]);
    let ask = Ask { agent: BOOKER, audience: API, scopes: &asked, details: &serde_json::Map::new() };
    let revoked = |id: &SpiffeId| (id.to_string() == CONCIERGE).then(|| "revoked (rule r-1)".to_owned());
    let e = decide(&ask, &policy(), &hand_off(), NOW, Some(NOW + 600), revoked).unwrap_err();
    assert_eq!(e.code, OAuthCode::InvalidGrant);
    assert!(e.description.contains(CONCIERGE) && e.description.contains("revoked"), "{}", e.description);
    // Only the client_id naming it is enough too.
    let client_only = Subject { actors: vec![], client_id: Some(CONCIERGE.into()), ..user() };
    assert!(decide(&ask, &policy(), &client_only, NOW, Some(NOW + 600), revoked).is_err());
}
