//! A tessera delegated token presented on a route without a credential: it must be ours (the
//! delegation issuer and keys; a federated node's keys too), unexpired, for this route's
//! audience, and its outermost actor (`act.sub`) must be the attested caller itself. A delegated
//! token stolen by another process is then useless through the gateway: the thief is attested
//! as itself, not as the agent the token was issued to.

use super::server::Shared;
use crate::config::gateway::Route;
use crate::delegation::trust::{self, TesseraKeys};
use crate::registry::Policy;
use crate::registry::delegation::Issuers;
use crate::spiffe_id::SpiffeId;
use std::time::SystemTime;

/// What the audit line records of a verified token.
pub(crate) struct Delegated {
    pub user: String,
    /// The `act` chain, outermost (this agent) first.
    pub act: Vec<String>,
    pub scope: String,
    pub jti: Option<String>,
}

pub(crate) fn check(
    shared: &Shared,
    route: &Route,
    token: &str,
    agent: &SpiffeId,
    now: SystemTime,
    policy: &Policy,
) -> Result<Delegated, String> {
    let Some(keys) = &shared.keys else {
        return Err("delegated tokens are not accepted here: no delegation keys (SPIRE mode)".into());
    };
    let Some(jwt_issuer) = policy.jwt_issuer.as_deref().filter(|i| !i.is_empty()) else {
        return Err("delegated tokens need jwt_issuer in the daemon's config".into());
    };
    let issuer = crate::publish::oidc::delegation_issuer(jwt_issuer);
    // The route's audience, not the hand-off audience: a token minted for the next agent is
    // not a token for this upstream.
    let tessera = TesseraKeys::of(&**keys, policy, &issuer, &route.audience);
    // Only tessera-issued tokens: an identity provider's own user token is no delegation.
    let subject = trust::verify(token, &Issuers::default(), &tessera, crate::clock::unix_secs(now))
        .map_err(|e| format!("the bearer token is not a delegated token for {:?}: {e}", route.audience))?;
    if subject.delegator != agent.to_string() {
        return Err(format!(
            "the delegated token was issued to {}, not to the calling process ({agent})",
            subject.delegator
        ));
    }
    Ok(Delegated { user: subject.user, act: subject.actors, scope: subject.scopes.join(" "), jti: subject.jti })
}
