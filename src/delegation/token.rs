//! The issued token: a JWT access token in the shape of RFC 9068 (`typ: at+jwt`, ES256, `kid` of
//! a delegation key), `sub` = the user, `act` = this agent with every earlier actor nested inside
//! (RFC 8693 §4.1), `client_id` = this agent; `authorization_details` (RFC 9396 §9.1) as
//! requested, and `approval` (`approver`, `approved_at`) when a human approved it. Not a JWT-SVID: its `sub` is not a SPIFFE ID, its
//! `typ` is not JWT, and its key is in no SPIFFE JWT bundle.

use crate::ca::JwtKey;
use crate::registry::Entry;
use serde::Serialize;
use serde_json::{Value, json};

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    client_id: &'a str,
    act: Value,
    scope: String,
    exp: u64,
    iat: u64,
    jti: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authorization_details: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    approval: Option<&'a Value>,
}

/// What to put in a new token.
pub(crate) struct Grant<'a> {
    pub issuer: &'a str,
    pub user: &'a str,
    pub audience: &'a str,
    pub agent: &'a str,
    /// The subject token's `act`, nested unchanged under this agent.
    pub prior_act: Option<&'a Value>,
    pub scopes: &'a [String],
    pub iat: u64,
    pub exp: u64,
    pub jti: &'a str,
    pub entry: &'a Entry,
    /// The RFC 9396 details, as requested.
    pub authorization_details: Option<&'a Value>,
    /// `{approver, approved_at}` of the approval this token was issued on.
    pub approval: Option<&'a Value>,
}

/// The `act` claim: this agent, the earlier chain inside.
pub(crate) fn act(agent: &str, prior: Option<&Value>) -> Value {
    let mut a = json!({ "sub": agent });
    if let Some(p) = prior {
        a["act"] = p.clone();
    }
    a
}

/// Sign the token.
pub(crate) fn mint(g: &Grant<'_>, key: &JwtKey) -> Result<String, jsonwebtoken::errors::Error> {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    header.typ = Some("at+jwt".into());
    let claims = Claims {
        iss: g.issuer,
        sub: g.user,
        aud: g.audience,
        client_id: g.agent,
        act: act(g.agent, g.prior_act),
        scope: g.scopes.join(" "),
        exp: g.exp,
        iat: g.iat,
        jti: g.jti,
        agent: agent_claim(g.entry),
        authorization_details: g.authorization_details,
        approval: g.approval,
    };
    key.sign(&header, &claims)
}

/// The entry's `agent` owner claim (owner and metadata), as JWT-SVIDs carry it.
fn agent_claim(entry: &Entry) -> Option<Value> {
    entry.agent_claim()
}
