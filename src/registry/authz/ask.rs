//! A decision's inputs, typed: who ([`Ask::principal`], with its entry's owner and metadata and
//! the caller's selectors), which action ([`What`]), on what ([`Resource`]) and the action's
//! context. Built into Cedar values here, so the services never write Cedar by hand and every
//! request has exactly the shape of the shipped schema.

use super::super::{Entry, MetaValue};
use crate::spiffe_id::SpiffeId;
use cedar_policy::{Context, Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression};
use serde_json::Value;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::LazyLock;

/// The actions of the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum What {
    FetchX509,
    FetchJwt,
    Delegate,
    Call,
    Serve,
}

impl What {
    pub(crate) const ALL: [What; 5] = [What::FetchX509, What::FetchJwt, What::Delegate, What::Call, What::Serve];

    /// The action's ID in policies (`Action::"fetch_x509"`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            What::FetchX509 => "fetch_x509",
            What::FetchJwt => "fetch_jwt",
            What::Delegate => "delegate",
            What::Call => "call",
            What::Serve => "serve",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<What> {
        What::ALL.into_iter().find(|w| w.name() == name)
    }
}

/// What the action is on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Resource<'a> {
    /// `fetch_x509`: the agent itself.
    Agent(&'a str),
    /// `fetch_jwt`, `delegate`: the token's audience.
    Audience(&'a str),
    /// `call`: the gateway route's upstream host.
    Host(&'a str),
    /// `serve`: a guard, by name.
    Guard(&'a str),
    /// `serve`: an MCP tool, by name.
    Tool(&'a str),
}

impl Resource<'_> {
    fn uid(&self) -> Result<EntityUid, String> {
        let (ty, id) = match self {
            Resource::Agent(id) => ("Agent", id),
            Resource::Audience(id) => ("Audience", id),
            Resource::Host(id) => ("Host", id),
            Resource::Guard(id) => ("Guard", id),
            Resource::Tool(id) => ("Tool", id),
        };
        uid(ty, id)
    }
}

/// The action's context (the schema's `context` record for that action).
#[derive(Debug, Clone, Default)]
pub(crate) struct Ctx<'a> {
    pub user: Option<&'a str>,
    pub scopes: Option<&'a [String]>,
    /// `delegate`: actors of the new token's chain; `serve`: the token's chain.
    pub chain: Option<&'a [String]>,
    pub depth: Option<i64>,
    pub approved: Option<bool>,
    pub subject_issuer: Option<&'a str>,
    /// `delegate`: the validated `authorization_details`, by type.
    pub details: Option<&'a serde_json::Map<String, Value>>,
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
    pub route: Option<&'a str>,
    /// `serve`: the JSON-RPC method of an MCP message.
    pub mcp_method: Option<&'a str>,
}

/// One decision's inputs.
#[derive(Debug, Clone)]
pub(crate) struct Ask<'a> {
    pub what: What,
    pub principal: &'a SpiffeId,
    /// The principal's entry on this node (owner, metadata), when it has one.
    pub entry: Option<&'a Entry>,
    /// The caller's attested selectors; the entry's own when the caller was not attested here
    /// (a guard's caller known by token).
    pub selectors: Option<&'a [String]>,
    pub resource: Resource<'a>,
    pub ctx: Ctx<'a>,
}

/// An [`Ask`] as Cedar values.
pub(super) struct Built {
    /// The principal's SPIFFE ID (the per-principal policy index's key).
    pub principal_id: String,
    pub principal: EntityUid,
    pub action: EntityUid,
    pub resource: EntityUid,
    pub context: Context,
    pub entities: Vec<Entity>,
}

/// The schema's entity type names, parsed once (parsing one costs microseconds).
static TYPES: LazyLock<HashMap<&'static str, EntityTypeName>> = LazyLock::new(|| {
    ["Agent", "Action", "Audience", "Host", "Guard", "Tool"]
        .into_iter()
        .filter_map(|t| EntityTypeName::from_str(t).ok().map(|n| (t, n)))
        .collect()
});

fn uid(ty: &str, id: &str) -> Result<EntityUid, String> {
    let ty = TYPES.get(ty).cloned().ok_or_else(|| format!("entity type {ty} is not in the schema"))?;
    Ok(EntityUid::from_type_name_and_id(ty, EntityId::new(id)))
}

fn string_set(items: &[String]) -> RestrictedExpression {
    RestrictedExpression::new_set(items.iter().map(|s| RestrictedExpression::new_string(s.clone())))
}

/// A JSON value of a declared `authorization_details` field as a Cedar value (strings, numbers
/// that are i64, booleans, arrays and objects of those).
fn json_value(v: &Value) -> Result<RestrictedExpression, String> {
    Ok(match v {
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::Number(n) => {
            RestrictedExpression::new_long(n.as_i64().ok_or_else(|| format!("{n} is not a whole number (Long)"))?)
        }
        Value::Array(a) => RestrictedExpression::new_set(a.iter().map(json_value).collect::<Result<Vec<_>, _>>()?),
        Value::Object(o) => json_record(o)?,
        Value::Null => return Err("null has no Cedar value".into()),
    })
}

fn json_record(o: &serde_json::Map<String, Value>) -> Result<RestrictedExpression, String> {
    RestrictedExpression::new_record(
        o.iter().map(|(k, v)| Ok((k.clone(), json_value(v)?))).collect::<Result<Vec<_>, String>>()?,
    )
    .map_err(|e| e.to_string())
}

impl Ask<'_> {
    pub(super) fn build(&self) -> Result<Built, String> {
        let principal_id = self.principal.to_string();
        let principal = uid("Agent", &principal_id)?;
        let action = uid("Action", self.what.name())?;
        let resource = self.resource.uid()?;
        let mut attrs = vec![
            ("trust_domain".to_owned(), RestrictedExpression::new_string(self.principal.trust_domain().to_string())),
            (
                "selectors".to_owned(),
                match (self.selectors, self.entry) {
                    (Some(s), _) => string_set(s),
                    (None, Some(e)) => RestrictedExpression::new_set(
                        e.selectors.iter().map(|s| RestrictedExpression::new_string(s.to_string())),
                    ),
                    (None, None) => RestrictedExpression::new_set([]),
                },
            ),
        ];
        let mut tags = Vec::new();
        if let Some(e) = self.entry {
            if let Some(owner) = &e.owner {
                attrs.push(("owner".to_owned(), RestrictedExpression::new_string(owner.clone())));
            }
            for (k, v) in &e.metadata {
                let text = match v {
                    MetaValue::One(s) => s.clone(),
                    // Non-string values as their JSON text.
                    MetaValue::Many(list) => serde_json::to_string(list).unwrap_or_default(),
                };
                tags.push((k.clone(), RestrictedExpression::new_string(text)));
            }
        }
        let agent = Entity::new_with_tags(principal.clone(), attrs, [], tags).map_err(|e| e.to_string())?;
        let mut entities = vec![agent];
        if !matches!(self.resource, Resource::Agent(_)) {
            entities.push(Entity::with_uid(resource.clone()));
        }
        let context = Context::from_pairs(self.context_pairs()?).map_err(|e| e.to_string())?;
        Ok(Built { principal_id, principal, action, resource, context, entities })
    }

    /// The context record, with exactly the schema's attributes for this action.
    fn context_pairs(&self) -> Result<Vec<(String, RestrictedExpression)>, String> {
        let c = &self.ctx;
        let mut out: Vec<(String, RestrictedExpression)> = Vec::new();
        let mut s = |k: &str, v: Option<&str>| {
            if let Some(v) = v {
                out.push((k.to_owned(), RestrictedExpression::new_string(v.to_owned())));
            }
        };
        match self.what {
            What::FetchX509 | What::FetchJwt => {}
            What::Delegate => {
                s("user", Some(c.user.unwrap_or_default()));
                s("subject_issuer", Some(c.subject_issuer.unwrap_or_default()));
                out.push(("scopes".into(), string_set(c.scopes.unwrap_or_default())));
                out.push(("chain".into(), string_set(c.chain.unwrap_or_default())));
                out.push(("depth".into(), RestrictedExpression::new_long(c.depth.unwrap_or_default())));
                out.push(("approved".into(), RestrictedExpression::new_bool(c.approved.unwrap_or_default())));
                let details = match c.details {
                    Some(d) => json_record(d)?,
                    None => RestrictedExpression::new_record([]).map_err(|e| e.to_string())?,
                };
                out.push(("details".into(), details));
            }
            What::Call => {
                s("method", Some(c.method.unwrap_or_default()));
                s("path", Some(c.path.unwrap_or_default()));
                s("route", Some(c.route.unwrap_or_default()));
                s("user", c.user);
                if let Some(scopes) = c.scopes {
                    out.push(("scopes".into(), string_set(scopes)));
                }
            }
            What::Serve => {
                s("method", Some(c.method.unwrap_or_default()));
                s("path", Some(c.path.unwrap_or_default()));
                s("user", c.user);
                out.push(("scopes".into(), string_set(c.scopes.unwrap_or_default())));
                out.push(("chain".into(), string_set(c.chain.unwrap_or_default())));
                if let Some(m) = c.mcp_method {
                    out.push(("mcp_method".into(), RestrictedExpression::new_string(m.to_owned())));
                }
            }
        }
        Ok(out)
    }
}
