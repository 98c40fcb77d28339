//! Who is calling: the request's one bearer token, verified offline. A tessera delegated token
//! (`typ` at+jwt, signed by this node's delegation keys or a federated node's) names an agent
//! acting for a user; a JWT-SVID (`typ` JWT, signed by a key of this trust domain's or a
//! federated domain's JWT bundle) names an agent acting for itself. Either must carry the
//! guard's audience; a revoked or retired agent's tokens are refused. Nothing of the token is
//! kept or logged beyond its claims.
//!
//! On an mTLS guard the client's X.509-SVID names the agent ([`Verifier::authenticate`]): the
//! bearer token is then optional, and a token sent must name that same agent (a delegated
//! token's outermost actor, a JWT-SVID's subject); it adds the user, scopes and chain.

use crate::bundle::JwtBundle;
use crate::delegation::trust::{self, TesseraKeys};
use crate::issuer::{Issuer, KeySource};
use crate::registry::Policy;
use crate::registry::delegation::Issuers;
use crate::spiffe_id::{SpiffeId, TrustDomain};
use base64::Engine;
use http::{HeaderMap, header};
use std::sync::Arc;
use std::time::SystemTime;

/// Longest bearer token accepted (bytes).
const MAX_TOKEN: usize = trust::MAX_SUBJECT_TOKEN;

/// How the caller proved itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Delegated,
    JwtSvid,
    /// An mTLS client's X.509-SVID alone, no bearer token.
    X509Svid,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Delegated => "delegated",
            Kind::JwtSvid => "jwt_svid",
            Kind::X509Svid => "x509_svid",
        }
    }
}

/// A verified caller.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    pub kind: Kind,
    /// The acting agent: a delegated token's outermost actor, a JWT-SVID's subject.
    pub agent: SpiffeId,
    /// A delegated token's user.
    pub user: Option<String>,
    /// A delegated token's actors, outermost first.
    pub chain: Vec<String>,
    pub scopes: Vec<String>,
    pub jti: Option<String>,
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthError {
    /// No `Authorization: Bearer` at all.
    Missing,
    /// Two `Authorization` headers, or another scheme: a malformed request.
    Malformed(String),
    /// A token that is not valid here.
    Invalid(String),
}

impl AuthError {
    pub(crate) fn reason(&self) -> String {
        match self {
            AuthError::Missing => "no bearer token (Authorization: Bearer <token>)".into(),
            AuthError::Malformed(s) | AuthError::Invalid(s) => s.clone(),
        }
    }
}

/// The request's bearer token: exactly one `Authorization` header, scheme `Bearer`.
pub(crate) fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut all = headers.get_all(header::AUTHORIZATION).iter();
    let Some(v) = all.next() else { return Err(AuthError::Missing) };
    if all.next().is_some() {
        return Err(AuthError::Malformed("more than one Authorization header".into()));
    }
    let v = v.to_str().map_err(|_| AuthError::Malformed("the Authorization header is not ASCII".into()))?;
    let (scheme, token) =
        v.split_once(' ').ok_or_else(|| AuthError::Malformed("Authorization is not \"Bearer <token>\"".into()))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed("Authorization is not \"Bearer <token>\"".into()));
    }
    let token = token.trim();
    if token.is_empty() || token.len() > MAX_TOKEN {
        return Err(AuthError::Invalid(format!("the bearer token is empty or longer than {MAX_TOKEN} bytes")));
    }
    Ok(token)
}

/// The token's `typ` (unverified, to choose how it is verified).
fn typ(token: &str) -> Option<String> {
    let h = token.split('.').next()?;
    if h.len() > 2048 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("typ").and_then(|t| t.as_str()).map(str::to_ascii_lowercase)
}

/// What verifying a token needs.
pub(crate) struct Verifier {
    pub issuer: Arc<dyn Issuer>,
    /// The delegation keys (local CA mode only).
    pub keys: Option<Arc<dyn KeySource>>,
}

impl Verifier {
    /// Who is calling: the request's bearer token, and on an mTLS guard the `client` SVID's ID
    /// (then the token is optional, and must name the same agent when sent).
    pub(crate) fn authenticate(
        &self,
        headers: &HeaderMap,
        client: Option<&SpiffeId>,
        audience: &str,
        policy: &Policy,
        now: SystemTime,
    ) -> Result<Principal, AuthError> {
        let token = bearer(headers);
        let Some(client) = client else { return self.verify(token?, audience, policy, now) };
        let token = match token {
            Ok(t) => t,
            Err(AuthError::Missing) => {
                if let Some(why) = policy.refuses_tokens_of(client) {
                    return Err(AuthError::Invalid(format!("the client certificate is no longer accepted: {why}")));
                }
                return Ok(Principal {
                    kind: Kind::X509Svid,
                    agent: client.clone(),
                    user: None,
                    chain: Vec::new(),
                    scopes: Vec::new(),
                    jti: None,
                });
            }
            Err(e) => return Err(e),
        };
        // The token's agent is checked for revocation by `verify`; it must be the client's.
        let p = self.verify(token, audience, policy, now)?;
        if p.agent != *client {
            return Err(AuthError::Invalid(format!(
                "the token's agent {} is not the client certificate's {client}",
                p.agent
            )));
        }
        Ok(p)
    }

    /// Verify `token` for `audience` under `policy` at `now`.
    pub(crate) fn verify(
        &self,
        token: &str,
        audience: &str,
        policy: &Policy,
        now: SystemTime,
    ) -> Result<Principal, AuthError> {
        let delegated = matches!(typ(token).as_deref(), Some("at+jwt" | "application/at+jwt"));
        let principal = if delegated {
            self.delegated(token, audience, policy, now)?
        } else {
            self.svid(token, audience, policy, now)?
        };
        // Revoked or retired identities: refused at once (an offline verifier cannot know).
        if let Some(why) = policy.refuses_tokens_of(&principal.agent) {
            return Err(AuthError::Invalid(format!("the token is no longer accepted: {why}")));
        }
        for actor in principal.chain.iter().skip(1).filter_map(|a| a.parse::<SpiffeId>().ok()) {
            if let Some(why) = policy.refuses_tokens_of(&actor) {
                return Err(AuthError::Invalid(format!("the token's chain is no longer accepted: {why}")));
            }
        }
        Ok(principal)
    }

    fn delegated(&self, token: &str, audience: &str, policy: &Policy, now: SystemTime) -> Result<Principal, AuthError> {
        let Some(keys) = &self.keys else {
            return Err(AuthError::Invalid(
                "delegated tokens are not accepted here: no delegation keys (SPIRE mode)".into(),
            ));
        };
        let Some(jwt_issuer) = policy.jwt_issuer.as_deref().filter(|i| !i.is_empty()) else {
            return Err(AuthError::Invalid("delegated tokens need jwt_issuer in the daemon's config".into()));
        };
        let issuer = crate::publish::oidc::delegation_issuer(jwt_issuer);
        let tessera = TesseraKeys::of(&**keys, policy, &issuer, audience);
        // Only tessera-issued tokens: an identity provider's own user token is no delegation.
        let subject = trust::verify(token, &Issuers::default(), &tessera, crate::clock::unix_secs(now))
            .map_err(|e| AuthError::Invalid(format!("not a delegated token for {audience:?}: {e}")))?;
        let agent: SpiffeId = subject
            .delegator
            .parse()
            .map_err(|_| AuthError::Invalid("the delegated token's actor is not a SPIFFE ID".into()))?;
        Ok(Principal {
            kind: Kind::Delegated,
            agent,
            user: Some(subject.user),
            chain: subject.actors,
            scopes: subject.scopes,
            jti: subject.jti,
        })
    }

    fn svid(&self, token: &str, audience: &str, policy: &Policy, now: SystemTime) -> Result<Principal, AuthError> {
        let local_td = self.issuer.trust_domain().clone();
        let local = self.issuer.bundles().jwt.clone();
        let jwks_for = |td: &TrustDomain| -> Option<Arc<JwtBundle>> {
            if *td == local_td {
                Some(local.clone())
            } else {
                policy.federated.get(td).map(|b| Arc::new(b.jwt.clone()))
            }
        };
        let v = crate::svid::jwt::validate(token, audience, jwks_for, now)
            .map_err(|e| AuthError::Invalid(format!("not a JWT-SVID for {audience:?}: {e}")))?;
        let jti = v.claims.get("jti").and_then(|j| j.as_str()).map(|j| j.chars().take(64).collect());
        Ok(Principal {
            kind: Kind::JwtSvid,
            agent: v.spiffe_id,
            user: None,
            chain: Vec::new(),
            scopes: Vec::new(),
            jti,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn exactly_one_bearer_header() {
        assert_eq!(bearer(&with(&[])), Err(AuthError::Missing));
        assert_eq!(bearer(&with(&["Bearer a.b.c"])), Ok("a.b.c"));
        assert_eq!(bearer(&with(&["bearer  a.b.c "])), Ok("a.b.c"));
        assert!(matches!(bearer(&with(&["Bearer a.b.c", "Bearer d.e.f"])), Err(AuthError::Malformed(_))));
        assert!(matches!(bearer(&with(&["Basic eA=="])), Err(AuthError::Malformed(_))));
        assert!(matches!(bearer(&with(&["Bearer"])), Err(AuthError::Malformed(_))));
        assert!(matches!(bearer(&with(&["Bearer  "])), Err(AuthError::Invalid(_))));
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN + 1));
        assert!(matches!(bearer(&with(&[&long])), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn typ_routes_the_token() {
        let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        assert_eq!(typ(&format!("{}.x.y", b(r#"{"typ":"at+JWT"}"#))).as_deref(), Some("at+jwt"));
        assert_eq!(typ(&format!("{}.x.y", b(r#"{"alg":"ES256"}"#))), None);
        assert_eq!(typ("%%%.x.y"), None);
    }
}
