//! The token exchange's decision, from verified inputs alone (no I/O, no clock read): may this
//! agent, under its entry's delegation policy, get a token for this audience and these scopes
//! from this subject token; until when; and must a human approve it first? The I/O shell
//! (`exchange`) attests the caller, verifies the subject token, runs approvals and mints.

use super::request::{OAuthCode, OAuthError};
use super::trust::Subject;
use crate::registry::delegation::EntryDelegation;
use crate::spiffe_id::SpiffeId;

/// What was asked for.
pub(super) struct Ask<'a> {
    /// The calling agent's SPIFFE ID (its entry with `[entries.delegation]`).
    pub agent: &'a str,
    pub audience: &'a str,
    pub scopes: &'a [String],
    /// The validated RFC 9396 `authorization_details`, by type (each an object of its fields;
    /// empty when none were asked for): the policy engine's `context.details`
    /// (`context.details.flight_booking.amount`). Checked against the declared types already.
    #[allow(dead_code, reason = "the Cedar decision (issue 24, part 1) reads it")]
    pub details: &'a serde_json::Map<String, serde_json::Value>,
}

/// A request that may be granted.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Decision {
    /// The new token's `exp` (unix seconds).
    pub exp: u64,
    /// An `approval` scope was asked for: a human must say yes first.
    pub needs_approval: bool,
}

/// Decide, in the order the errors are answered: a revoked actor or client in the chain, `from`,
/// depth, audience, scopes (the user's, then the entry's), the signing key, expiry, approval.
/// `refuses` says why tokens of a SPIFFE ID are refused now (revoked, denied, retired);
/// `key_not_after` is the active delegation key's end (`None`: no key is active).
pub(super) fn decide(
    ask: &Ask<'_>,
    policy: &EntryDelegation,
    subject: &Subject,
    now: u64,
    key_not_after: Option<u64>,
    refuses: impl Fn(&SpiffeId) -> Option<String>,
) -> Result<Decision, OAuthError> {
    let agent = ask.agent;
    // A revoked agent's earlier hand-offs die with it: no actor of the chain, nor the token's
    // client, may be revoked or denied now.
    for id in subject.actors.iter().chain(subject.client_id.iter()) {
        let Ok(id) = id.parse::<SpiffeId>() else { continue };
        if let Some(why) = refuses(&id) {
            return Err(OAuthError::invalid_grant(format!("the subject token's chain names {id}: {why}")));
        }
    }
    if !policy.from.contains(&subject.delegator) {
        return Err(OAuthError::invalid_grant(format!(
            "{} may not delegate to {agent} (not in its delegation.from)",
            subject.delegator
        )));
    }
    let depth = subject.actors.len() + 1;
    if depth > policy.max_depth as usize {
        return Err(OAuthError::invalid_grant(format!(
            "the chain would hold {depth} actors; {agent} allows at most {}",
            policy.max_depth
        )));
    }
    if !policy.audiences.iter().any(|a| a == ask.audience) {
        return Err(OAuthError::new(
            OAuthCode::InvalidTarget,
            format!("{agent} may not ask for tokens for audience {:?}", ask.audience),
        ));
    }
    for s in ask.scopes {
        if !subject.scopes.contains(s) {
            // A later hop's subject token is the delegating agent's, not the user's.
            let whose = match subject.actors.first() {
                Some(a) => format!("the delegating agent's token ({a}, for {})", subject.user),
                None => "the user's token".to_owned(),
            };
            return Err(OAuthError::new(OAuthCode::InvalidScope, format!("{whose} does not grant {s:?}")));
        }
        if !policy.scopes.contains(s) {
            return Err(OAuthError::new(
                OAuthCode::InvalidScope,
                format!("{agent} may not hold {s:?} (delegation.scopes)"),
            ));
        }
    }
    let Some(key_not_after) = key_not_after else {
        return Err(OAuthError::new(OAuthCode::TemporarilyUnavailable, "no delegation signing key is active"));
    };
    let exp = now.saturating_add(policy.max_ttl.as_secs()).min(subject.exp).min(key_not_after);
    if exp <= now {
        return Err(OAuthError::invalid_grant("the subject token expires now"));
    }
    Ok(Decision { exp, needs_approval: ask.scopes.iter().any(|s| policy.approval.contains(s)) })
}

#[cfg(test)]
mod tests;
