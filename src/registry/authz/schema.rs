//! The Cedar schema tessera ships (`tessera policy schema`): the principal `Agent`, the resources,
//! and one action per decision point with its context. The `delegate` action's
//! `context.details` has one optional record per declared `authorization_details` type, so a
//! policy reading `context.details.flight_booking.amount` is checked against the declaration.

use cedar_policy::Schema;

/// The schema without declared `authorization_details` types.
const BASE: &str = r#"// tessera's Cedar schema. Principals are agents, known by SPIFFE ID.
entity Agent {
  // The entry's accountable human or team (entries without one have no owner).
  owner?: String,
  trust_domain: String,
  // The caller's attested selectors ("unix:uid:1000", "systemd:unit:agent.service", ...).
  selectors: Set<String>,
} tags String; // the entry's metadata: principal.getTag("risk")

entity Audience;
entity Host;
entity Guard;
entity Tool;

// A Workload API X.509-SVID fetch (and every push on its stream); the resource is the agent.
action fetch_x509 appliesTo { principal: [Agent], resource: [Agent], context: {} };

// A Workload API JWT-SVID fetch; the resource is each requested audience.
action fetch_jwt appliesTo { principal: [Agent], resource: [Audience], context: {} };

// A token exchange (RFC 8693): the agent acts for `user`.
action delegate appliesTo {
  principal: [Agent],
  resource: [Audience],
  context: {
    user: String,
    scopes: Set<String>,
    // The actors of the new token's chain (this agent included).
    depth: Long,
    chain: Set<String>,
    // A human approved exactly this request.
    approved: Bool,
    subject_issuer: String,
    details: __DETAILS__,
  },
};

// A call through the node gateway; the resource is the upstream host.
action call appliesTo {
  principal: [Agent],
  resource: [Host],
  context: {
    method: String,
    path: String,
    route: String,
    // Present when the call carries a delegated token.
    user?: String,
    scopes?: Set<String>,
  },
};

// A request to a guarded resource (Guard) or an MCP tool call (Tool).
action serve appliesTo {
  principal: [Agent],
  resource: [Guard, Tool],
  context: {
    method: String,
    path: String,
    // Present when the bearer token is a delegated token.
    user?: String,
    scopes: Set<String>,
    chain: Set<String>,
    // The JSON-RPC method of an MCP message (`mcp = true`): "tools/call", "tools/list", ...
    mcp_method?: String,
  },
};
"#;

/// One declared `authorization_details` type: its name and its fields with their Cedar types
/// (`String`, `Long`, `Bool`, `Set<String>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DetailType {
    pub name: String,
    pub fields: Vec<(String, String)>,
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The schema's text with these detail types.
pub(crate) fn text(details: &[DetailType]) -> String {
    let mut record = String::from("{");
    for t in details {
        let fields: Vec<String> = t.fields.iter().map(|(f, ty)| format!("{}: {ty}", quoted(f))).collect();
        record.push_str(&format!("\n      {}?: {{ {} }},", quoted(&t.name), fields.join(", ")));
    }
    record.push_str(if details.is_empty() { "}" } else { "\n    }" });
    BASE.replace("__DETAILS__", &record)
}

/// The parsed schema.
pub(crate) fn build(details: &[DetailType]) -> Result<Schema, String> {
    Schema::from_cedarschema_str(&text(details)).map(|(s, _warnings)| s).map_err(|e| e.to_string())
}
