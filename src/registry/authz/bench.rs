//! A policy set of a given size for `benches/policy.rs` (decision latency): one permit per agent
//! (principal, action and audience in its scope, conditions on scopes and depth) and a few forbids
//! every request evaluates, as a node with thousands of agents would write them. A bench tool:
//! a failure to build the set aborts it.
#![allow(clippy::panic, reason = "a benchmark fixture: any failure aborts the run")]

use super::schema::DetailType;
use super::{Ask, Authz, Ctx, Mode, Resource, What};
use crate::registry::Entry;
use std::path::PathBuf;

pub struct PolicyBench {
    authz: Authz,
    agents: Vec<Entry>,
    scopes: Vec<String>,
    chain: Vec<Vec<String>>,
    details: serde_json::Map<String, serde_json::Value>,
}

impl PolicyBench {
    /// `n` policies (n ≥ 3): n - 3 per-agent permits and 3 forbids.
    pub fn new(n: usize) -> Self {
        let agents_n = n.saturating_sub(3).max(1);
        let mut text = String::new();
        for k in 0..agents_n {
            text.push_str(&format!(
                "@id(\"agent-{k}\")\npermit (principal == Agent::\"spiffe://example.org/agents/{k}\", action == Action::\"delegate\", resource == Audience::\"https://api{}.example\")\n  when {{ context.scopes.containsAll([\"flights:read\"]) && context.depth <= 2 }};\n",
                k % 10
            ));
        }
        text.push_str(
            "@id(\"purchase-needs-approval\")\nforbid (principal, action == Action::\"delegate\", resource)\n  when { context.details has flight_booking && context.details.flight_booking.amount > 1000 && !context.approved };\n\
             @id(\"no-high-risk\")\nforbid (principal, action, resource) when { principal.hasTag(\"risk\") && principal.getTag(\"risk\") == \"high\" };\n\
             @id(\"no-deep-chains\")\nforbid (principal, action == Action::\"delegate\", resource) when { context.depth > 4 };\n",
        );
        let details = vec![DetailType {
            name: "flight_booking".into(),
            fields: vec![("amount".into(), "Long".into()), ("itinerary".into(), "String".into())],
        }];
        let authz = super::load::compile(&[(PathBuf::from("bench.cedar"), text)], Mode::Enforce, &details)
            .unwrap_or_else(|e| panic!("{e}"));
        let agents: Vec<Entry> = (0..agents_n)
            .map(|k| {
                let id = format!("spiffe://example.org/agents/{k}");
                Entry {
                    spiffe_id: id.parse().unwrap_or_else(|e| panic!("{id}: {e}")),
                    selectors: Default::default(),
                    x509_svid_ttl: std::time::Duration::from_secs(600),
                    jwt_svid_ttl: std::time::Duration::from_secs(300),
                    dns_names: vec![],
                    hint: None,
                    federates_with: vec![],
                    owner: Some("team-travel".into()),
                    metadata: [("risk".to_owned(), crate::registry::MetaValue::One("low".into()))].into(),
                    retired: false,
                    delegation: None,
                }
            })
            .collect();
        let chain = agents.iter().map(|e| vec![e.spiffe_id.to_string()]).collect();
        let mut d = serde_json::Map::new();
        d.insert("flight_booking".into(), serde_json::json!({"amount": 800, "itinerary": "ZRH-SFO"}));
        PolicyBench { authz, agents, scopes: vec!["flights:read".into()], chain, details: d }
    }

    pub fn policies(&self) -> usize {
        self.authz.count
    }

    /// Decide a delegation for agent `i` (mod the agent count); true when allowed.
    pub fn decide(&self, i: usize) -> bool {
        let k = i % self.agents.len();
        let e = &self.agents[k];
        let aud = format!("https://api{}.example", k % 10);
        let v = self.authz.decide(&Ask {
            what: What::Delegate,
            principal: &e.spiffe_id,
            entry: Some(e),
            selectors: None,
            resource: Resource::Audience(&aud),
            ctx: Ctx {
                user: Some("alice"),
                scopes: Some(&self.scopes),
                chain: Some(&self.chain[k]),
                depth: Some(1),
                approved: Some(false),
                subject_issuer: Some("https://idp.example"),
                details: Some(&self.details),
                ..Ctx::default()
            },
        });
        v.permits()
    }
}
