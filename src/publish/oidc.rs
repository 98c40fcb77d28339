//! OIDC discovery (`/.well-known/openid-configuration`) and the JWKS it names, for verifiers that
//! know only OIDC (cloud workload-identity federation, OAuth servers, go-oidc, PyJWT).
//!
//! Delegated tokens have an issuer of their own (`jwt_issuer` + `/delegation`, its discovery
//! document and JWKS under `/delegation/`), and their keys are never in the JWT-SVID JWKS: a
//! relying party configured for JWT-SVIDs (issuer, key by `kid`, `aud`, `exp`, no `typ` check)
//! then cannot take a delegated token for a JWT-SVID (RFC 8725 §3.11–3.12: explicit typing and
//! mutually exclusive validation rules).

use crate::ca::Authorities;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::SystemTime;

pub(crate) const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
pub(crate) const JWKS_PATH: &str = "/keys";
/// Where the delegated-token issuer's documents live, below the JWT-SVID issuer.
pub(crate) const DELEGATION_PREFIX: &str = "/delegation";
pub(crate) const DELEGATION_DISCOVERY_PATH: &str = "/delegation/.well-known/openid-configuration";
pub(crate) const DELEGATION_JWKS_PATH: &str = "/delegation/keys";

/// The delegated-token keys to publish (when delegation is on): called on every request,
/// returns JWKs (each with `kid`; `use: sig` is set here).
pub(crate) type DelegationKeys = Arc<dyn Fn() -> Vec<crate::bundle::jwks::Jwk> + Send + Sync>;

/// The `iss` of delegated tokens: `jwt_issuer` + `/delegation`.
pub(crate) fn delegation_issuer(jwt_issuer: &str) -> String {
    format!("{}{DELEGATION_PREFIX}", jwt_issuer.trim_end_matches('/'))
}

/// The discovery document of `issuer` (`jwt_issuer`, or the delegation issuer); the JWKS is
/// served beside it.
pub(crate) fn discovery(issuer: &str) -> Value {
    let base = issuer.trim_end_matches('/');
    json!({
        "issuer": issuer,
        "jwks_uri": format!("{base}{JWKS_PATH}"),
        // Required by OIDC discovery, but there is no login here: empty, as SPIRE's provider has it.
        "authorization_endpoint": "",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "claims_supported": ["sub", "aud", "exp", "iat", "iss", "jti"],
    })
}

/// The JWK Set: every JWT-SVID key in the ring (successors from the moment they are made, before
/// they sign; predecessors until they expire, which no token they signed outlives). Only those.
pub(crate) fn jwks(auth: &Authorities) -> Value {
    let keys: Vec<crate::bundle::jwks::Jwk> = auth.jwt.iter().map(|k| crate::bundle::jwks::published_jwk(k)).collect();
    json!({ "keys": keys })
}

/// The delegation issuer's JWK Set: only the delegated-token keys.
pub(crate) fn delegation_jwks(keys: &DelegationKeys) -> Value {
    let keys: Vec<crate::bundle::jwks::Jwk> =
        keys().into_iter().map(|k| crate::bundle::jwks::Jwk { use_: Some("sig".into()), ..k }).collect();
    json!({ "keys": keys })
}

/// When the key set changes next by a new key: the newest JWT key's half-life (the rotation rule
/// makes its successor then; it signs a tenth of the CA TTL later). A static copy of the JWKS
/// must be republished between the two.
pub(crate) fn next_publication(auth: &Authorities) -> Option<SystemTime> {
    let newest = auth.jwt.last()?;
    let life = newest.not_after.duration_since(newest.not_before).unwrap_or_default();
    Some(newest.not_before + life / 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::JwtKey;
    use std::time::Duration;

    #[test]
    fn jwks_holds_every_jwt_svid_key_and_the_delegation_keys_stand_apart() {
        let now = crate::clock::from_unix_secs(1_700_000_000);
        let old = Arc::new(JwtKey::for_test("old", now - Duration::from_secs(600), now + Duration::from_secs(60)));
        let new = Arc::new(JwtKey::for_test("new", now + Duration::from_secs(30), now + Duration::from_secs(1000)));
        let deleg = Arc::new(JwtKey::for_test("deleg", now, now + Duration::from_secs(1000)));
        let auth =
            Authorities { x509: vec![], jwt: vec![old, new], wit: vec![], delegation: vec![deleg], roots: vec![] };
        let doc = jwks(&auth);
        let kids: Vec<_> = doc["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
        assert_eq!(kids, ["old", "new"], "the delegation key is not a JWT-SVID key");
        assert!(doc["keys"].as_array().unwrap().iter().all(|k| k["use"] == "sig"));
        assert_eq!(doc["keys"][0]["alg"], "ES256");
        let d = discovery("https://issuer.example/");
        assert_eq!(d["jwks_uri"], "https://issuer.example/keys");
        assert_eq!(d["issuer"], "https://issuer.example/");

        let k = Arc::new(JwtKey::for_test("deleg", now, now + Duration::from_secs(1000)));
        let keys: DelegationKeys = Arc::new(move || vec![crate::bundle::jwks::jwk(&k)]);
        let doc = delegation_jwks(&keys);
        assert_eq!(doc["keys"].as_array().unwrap().len(), 1);
        assert_eq!(doc["keys"][0]["kid"], "deleg");
        assert_eq!(doc["keys"][0]["use"], "sig");
        let issuer = delegation_issuer("https://issuer.example/");
        assert_eq!(issuer, "https://issuer.example/delegation");
        assert_eq!(discovery(&issuer)["jwks_uri"], "https://issuer.example/delegation/keys");
        assert_eq!(next_publication(&auth), Some(now + Duration::from_secs(30) + Duration::from_secs(485)));
    }
}
