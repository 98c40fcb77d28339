use super::schema::DetailType;
use super::*;
use crate::registry::{Entry, MetaValue};
use crate::spiffe_id::SpiffeId;
use std::path::PathBuf;

fn compile(files: &[(&str, &str)], mode: Mode) -> Result<Authz, LoadError> {
    let texts: Vec<(PathBuf, String)> =
        files.iter().map(|(f, t)| (PathBuf::from(format!("/etc/tessera/policy/{f}")), t.to_string())).collect();
    load::compile(&texts, mode, &flight())
}

fn flight() -> Vec<DetailType> {
    vec![DetailType {
        name: "flight_booking".into(),
        fields: vec![("amount".into(), "Long".into()), ("itinerary".into(), "String".into())],
    }]
}

fn agent(owner: Option<&str>, risk: Option<&str>) -> Entry {
    let mut e = Entry::for_test("spiffe://example.org/agents/travel", &["unix:uid:1000"]);
    e.owner = owner.map(str::to_owned);
    if let Some(r) = risk {
        e.metadata.insert("risk".into(), MetaValue::One(r.into()));
    }
    e
}

fn fetch<'a>(id: &'a SpiffeId, e: &'a Entry) -> Ask<'a> {
    Ask {
        what: What::FetchX509,
        principal: id,
        entry: Some(e),
        selectors: None,
        resource: Resource::Agent("spiffe://example.org/agents/travel"),
        ctx: Ctx::default(),
    }
}

const OWNED: &str = r#"
@id("owned-agents")
permit (principal, action == Action::"fetch_x509", resource) when { principal has owner && principal.owner == "team-travel" };
forbid (principal, action, resource) when { principal.hasTag("risk") && principal.getTag("risk") == "high" };
"#;

#[test]
fn allows_by_owner_and_forbid_by_tag_wins_with_the_determining_policy() {
    let authz = compile(&[("a.cedar", OWNED)], Mode::Enforce).unwrap();
    assert_eq!(authz.count, 2);
    let e = agent(Some("team-travel"), None);
    let v = authz.decide(&fetch(&e.spiffe_id, &e));
    assert_eq!((v.decision, v.policies.clone()), (PolicyDecision::Allow, vec!["owned-agents".to_owned()]));
    let e = agent(Some("team-travel"), Some("high"));
    let v = authz.decide(&fetch(&e.spiffe_id, &e));
    assert_eq!((v.decision, v.policies.clone()), (PolicyDecision::Deny, vec!["a.cedar#2".to_owned()]));
    let e = agent(Some("other"), None);
    let v = authz.decide(&fetch(&e.spiffe_id, &e));
    assert_eq!(v.decision, PolicyDecision::Deny);
    assert!(v.policies.is_empty() && v.reason().contains("no policy permits"), "{v:?}");
}

#[test]
fn log_mode_allows_and_says_would_deny() {
    let authz = compile(&[("a.cedar", OWNED)], Mode::Log).unwrap();
    let e = agent(None, None);
    let v = authz.decide(&fetch(&e.spiffe_id, &e));
    assert_eq!(v.decision, PolicyDecision::WouldDeny);
    assert!(v.permits());
    assert_eq!(v.audit()["policy_decision"], "would_deny");
}

#[test]
fn an_evaluation_error_denies_even_when_it_is_a_forbid_cedar_would_skip() {
    // getTag without hasTag passes validation only with tags typed; a missing tag errors at run time.
    let text = r#"
permit (principal, action, resource);
@id("no-high-risk")
forbid (principal, action, resource) when { principal.getTag("risk") == "high" };
"#;
    let authz = compile(&[("a.cedar", text)], Mode::Enforce).unwrap();
    assert!(authz.warnings.iter().any(|w| w.contains("permits every agent")), "{:?}", authz.warnings);
    assert!(authz.warnings.iter().any(|w| w.contains("risk") && w.contains("deny")), "{:?}", authz.warnings);
    let e = agent(None, None);
    let v = authz.decide(&fetch(&e.spiffe_id, &e));
    assert_eq!(v.decision, PolicyDecision::Deny, "{v:?}");
    assert_eq!(v.policies, vec!["no-high-risk".to_owned()]);
    assert!(v.errors[0].contains("risk"), "{v:?}");
}

#[test]
fn a_parse_error_is_located_by_file_line_and_column() {
    let text = "permit (principal, action, resource);\n\npermit (principal, action resource);\n";
    let err = compile(&[("ok.cedar", "permit (principal, action, resource);"), ("bad.cedar", text)], Mode::Enforce)
        .err()
        .unwrap();
    let l = &err.0[0];
    assert!(l.file.ends_with("bad.cedar"), "{err}");
    assert_eq!(l.line, 3, "{err}");
    assert!(l.column > 1, "{err}");
}

#[test]
fn unknown_attributes_types_and_actions_are_refused_by_the_schema() {
    for (text, needle) in [
        ("permit (principal, action, resource) when { principal.team == \"x\" };", "team"),
        ("permit (principal == User::\"alice\", action, resource);", "User"),
        ("permit (principal, action == Action::\"launch\", resource);", "launch"),
    ] {
        let err = compile(&[("p.cedar", text)], Mode::Enforce).err().unwrap_or_else(|| panic!("{text} loaded"));
        assert!(err.to_string().contains(needle), "{text}: {err}");
        assert_eq!(err.0[0].line, 1, "{err}");
    }
}

#[test]
fn duplicate_ids_across_files_are_refused() {
    let p = "@id(\"x\")\npermit (principal, action, resource) when { false };";
    let err = compile(&[("a.cedar", p), ("b.cedar", p)], Mode::Enforce).err().unwrap();
    assert!(err.0[0].file.ends_with("b.cedar") && err.0[0].line == 1, "{err}");
}

#[test]
fn delegate_decides_on_scopes_depth_and_amount() {
    let text = r#"
@id("reserve")
permit (principal, action == Action::"delegate", resource == Audience::"https://api.flights.example")
  when { context.scopes.containsAll(["flights:reserve"]) || context.scopes.isEmpty() };
@id("purchase-needs-approval")
forbid (principal, action == Action::"delegate", resource)
  when { context.details has flight_booking && context.details.flight_booking.amount > 500 && !context.approved };
@id("max-depth")
forbid (principal, action == Action::"delegate", resource) when { context.depth > 2 };
"#;
    let authz = compile(&[("d.cedar", text)], Mode::Enforce).unwrap();
    let e = agent(Some("team-travel"), None);
    let scopes = vec!["flights:reserve".to_owned()];
    let chain = vec![e.spiffe_id.to_string()];
    let mut details = serde_json::Map::new();
    details.insert("flight_booking".into(), serde_json::json!({"amount": 800, "itinerary": "ZRH-SFO"}));
    let ask = |depth: i64, approved: bool, details: Option<&serde_json::Map<String, serde_json::Value>>| {
        let ask = Ask {
            what: What::Delegate,
            principal: &e.spiffe_id,
            entry: Some(&e),
            selectors: None,
            resource: Resource::Audience("https://api.flights.example"),
            ctx: Ctx {
                user: Some("alice"),
                scopes: Some(&scopes),
                chain: Some(&chain),
                depth: Some(depth),
                approved: Some(approved),
                subject_issuer: Some("https://idp.example"),
                details,
                ..Ctx::default()
            },
        };
        authz.decide(&ask)
    };
    assert_eq!(ask(1, false, None).decision, PolicyDecision::Allow);
    let v = ask(1, false, Some(&details));
    assert_eq!((v.decision, v.policies), (PolicyDecision::Deny, vec!["purchase-needs-approval".to_owned()]));
    assert_eq!(ask(1, true, Some(&details)).decision, PolicyDecision::Allow);
    assert_eq!(ask(3, true, None).policies, vec!["max-depth".to_owned()]);
}

#[test]
fn without_a_permit_for_an_action_it_is_denied() {
    let authz =
        compile(&[("a.cedar", "permit (principal, action == Action::\"fetch_jwt\", resource);")], Mode::Enforce)
            .unwrap();
    let e = agent(None, None);
    assert_eq!(authz.decide(&fetch(&e.spiffe_id, &e)).decision, PolicyDecision::Deny);
}

#[test]
fn the_schema_text_declares_the_detail_types() {
    let t = schema::text(&flight());
    assert!(t.contains("\"flight_booking\"?: { \"amount\": Long, \"itinerary\": String }"), "{t}");
    schema::build(&flight()).unwrap();
    schema::build(&[]).unwrap();
}

#[test]
fn a_context_without_an_attribute_a_policy_reads_denies_and_says_why() {
    let text =
        "@id(\"gw\")\npermit (principal, action == Action::\"call\", resource) when { context.user == \"alice\" };";
    let authz = compile(&[("c.cedar", text)], Mode::Enforce).unwrap();
    let e = agent(None, None);
    let ask = Ask {
        what: What::Call,
        principal: &e.spiffe_id,
        entry: Some(&e),
        selectors: None,
        resource: Resource::Host("api.example.com"),
        ctx: Ctx { method: Some("GET"), path: Some("/"), route: Some("r"), ..Ctx::default() },
    };
    let v = authz.decide(&ask);
    assert_eq!(v.decision, PolicyDecision::Deny);
    assert!(v.errors[0].contains("user"), "{v:?}");
    assert!(v.reason().contains("evaluation error"), "{v:?}");
}

#[test]
fn the_principal_index_keeps_general_policies_for_named_principals() {
    let text = r#"
@id("low-only")
permit (principal == Agent::"spiffe://example.org/agents/travel", action == Action::"fetch_x509", resource);
@id("everyone-jwt")
permit (principal, action == Action::"fetch_jwt", resource);
@id("no-high-risk")
forbid (principal, action, resource) when { principal.hasTag("risk") && principal.getTag("risk") == "high" };
"#;
    let authz = compile(&[("i.cedar", text)], Mode::Enforce).unwrap();
    let e = agent(None, None);
    assert_eq!(authz.decide(&fetch(&e.spiffe_id, &e)).policies, vec!["low-only".to_owned()]);
    let e = agent(None, Some("high"));
    assert_eq!(authz.decide(&fetch(&e.spiffe_id, &e)).policies, vec!["no-high-risk".to_owned()]);
    let other = Entry::for_test("spiffe://example.org/agents/other", &["unix:uid:1"]);
    assert_eq!(authz.decide(&fetch(&other.spiffe_id, &other)).decision, PolicyDecision::Deny);
    let jwt = Ask { what: What::FetchJwt, resource: Resource::Audience("x"), ..fetch(&other.spiffe_id, &other) };
    assert_eq!(authz.decide(&jwt).policies, vec!["everyone-jwt".to_owned()]);
}
