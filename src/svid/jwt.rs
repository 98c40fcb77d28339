//! JWT-SVIDs: ES256, header exactly `alg`, `kid`, `typ: JWT`; claims sub, aud, exp, iat, a random
//! jti and (when configured) iss. Validation follows `standards/JWT-SVID.md`.

use crate::bundle::JwtBundle;
use crate::ca::JwtKey;
use crate::spiffe_id::{SpiffeId, TrustDomain};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The claims of a JWT-SVID. The registered ones are typed; `extra` holds any other claim a
/// profile adds (`jti`, `act`, `scope`, `cnf`, agent metadata), serialized beside them.
#[derive(Debug, Clone, Serialize)]
pub struct JwtClaims {
    pub sub: SpiffeId,
    /// One audience is written as a plain string (the OAuth SPIFFE client-authentication draft
    /// wants the authorization server's issuer alone), several as an array.
    #[serde(serialize_with = "audience")]
    pub aud: Vec<String>,
    pub exp: u64,
    pub iat: u64,
    /// Random per token, so a verifier can refuse a replay (RFC 7523, MCP workload identity).
    pub jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl JwtClaims {
    /// The claims of a plain JWT-SVID for `id`, valid from `now` until `expires_at`.
    pub fn new(
        id: &SpiffeId,
        audience: &[String],
        issuer: Option<&str>,
        now: SystemTime,
        expires_at: SystemTime,
    ) -> Self {
        Self {
            sub: id.clone(),
            aud: audience.to_vec(),
            exp: unix_secs(expires_at),
            iat: unix_secs(now),
            jti: crate::ca::serial::random_kid(),
            iss: issuer.map(str::to_owned),
            extra: serde_json::Map::new(),
        }
    }
}

/// A minted token; the token itself is a secret (bearer credential) and is never logged.
pub struct JwtSvid {
    pub spiffe_id: SpiffeId,
    pub token: String,
    pub expires_at: SystemTime,
}

impl std::fmt::Debug for JwtSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("JwtSvid")
            .field("spiffe_id", &self.spiffe_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Mint a JWT-SVID for `id`; it never outlives the signing key.
pub fn mint(
    id: &SpiffeId,
    audience: &[String],
    ttl: Duration,
    issuer: Option<&str>,
    key: &JwtKey,
    now: SystemTime,
) -> Result<JwtSvid, jsonwebtoken::errors::Error> {
    mint_with(id, audience, ttl, issuer, key, now, serde_json::Map::new())
}

/// [`mint`] with extra claims (e.g. `agent`) beside the registered ones.
pub fn mint_with(
    id: &SpiffeId,
    audience: &[String],
    ttl: Duration,
    issuer: Option<&str>,
    key: &JwtKey,
    now: SystemTime,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Result<JwtSvid, jsonwebtoken::errors::Error> {
    // A TTL past the end of time (config bounds make this unreachable) is capped by the key's life.
    let expires_at = now.checked_add(ttl).unwrap_or(key.not_after).min(key.not_after);
    let mut claims = JwtClaims::new(id, audience, issuer, now, expires_at);
    claims.extra = extra;
    sign(&claims, key, expires_at)
}

/// Sign `claims` (ES256, header `alg`, `kid`, `typ: JWT`).
pub fn sign(claims: &JwtClaims, key: &JwtKey, expires_at: SystemTime) -> Result<JwtSvid, jsonwebtoken::errors::Error> {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    header.typ = Some("JWT".into());
    let token = key.sign(&header, claims)?;
    Ok(JwtSvid { spiffe_id: claims.sub.clone(), token, expires_at })
}

fn audience<S: serde::Serializer>(aud: &[String], s: S) -> Result<S::Ok, S::Error> {
    match aud {
        [one] => s.serialize_str(one),
        many => many.serialize(s),
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Why a JWT-SVID is not valid (becomes `InvalidArgument` with this text).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("header has no \"kid\"")]
    NoKid,
    #[error("unsupported \"typ\" {0:?}: must be JWT or JOSE")]
    Typ(String),
    #[error("unsupported algorithm {0:?}")]
    Alg(String),
    #[error("\"sub\" is not a valid SPIFFE ID: {0}")]
    Subject(String),
    #[error("no bundle for trust domain {0:?}")]
    NoBundle(String),
    #[error("no key with kid {0:?} in the bundle of {1:?}")]
    UnknownKey(String, String),
    #[error("token is invalid: {0}")]
    Invalid(String),
    #[error("token is no longer accepted: {0}")]
    Revoked(String),
}

#[derive(Deserialize)]
struct SubjectOnly {
    sub: Option<String>,
}

/// A validated token: the subject and every claim.
pub struct Validated {
    pub spiffe_id: SpiffeId,
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// Validate `token` for `audience` against the JWKS of the subject's trust domain, at `now`
/// (`exp` and `nbf`, with 30 s of clock-skew leeway).
pub fn validate(
    token: &str,
    audience: &str,
    jwks_for: impl Fn(&TrustDomain) -> Option<std::sync::Arc<JwtBundle>>,
    now: SystemTime,
) -> Result<Validated, JwtError> {
    use jsonwebtoken::Algorithm::*;
    let header = jsonwebtoken::decode_header(token).map_err(|e| JwtError::Malformed(e.to_string()))?;
    let kid = header.kid.clone().ok_or(JwtError::NoKid)?;
    if let Some(typ) = &header.typ
        && typ != "JWT"
        && typ != "JOSE"
    {
        return Err(JwtError::Typ(typ.clone()));
    }
    if !matches!(header.alg, RS256 | RS384 | RS512 | ES256 | ES384 | PS256 | PS384 | PS512) {
        return Err(JwtError::Alg(format!("{:?}", header.alg)));
    }
    // The subject picks the bundle; the signature check below is what makes it trustworthy.
    let unverified: SubjectOnly =
        jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(|e| JwtError::Malformed(e.to_string()))?;
    let sub = unverified.sub.ok_or_else(|| JwtError::Subject("missing".into()))?;
    let id: SpiffeId = sub.parse().map_err(|e: crate::spiffe_id::SpiffeIdError| JwtError::Subject(e.to_string()))?;
    let td = id.trust_domain();
    let jwks = jwks_for(td).ok_or_else(|| JwtError::NoBundle(td.to_string()))?;
    let key = jwks.find(&kid).ok_or_else(|| JwtError::UnknownKey(kid.clone(), td.to_string()))?;
    if !key.algs.contains(&header.alg) {
        return Err(JwtError::Alg(format!("{:?} does not match the key", header.alg)));
    }
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "sub", "aud"]);
    // `nbf` is checked when present, with the same clock-skew leeway as `exp`.
    validation.validate_nbf = true;
    validation.leeway = 30;
    let claims =
        decode_at(token, &key.key, validation, unix_secs(now)).map_err(|e| JwtError::Invalid(e.to_string()))?;
    Ok(Validated { spiffe_id: id, claims })
}

/// `jsonwebtoken::decode` with `exp` and `nbf` checked against `now` (Unix seconds) rather than
/// the system clock `jsonwebtoken` reads: the same checks, in the same order (signature,
/// required claims, `exp` and `nbf` with `validation.leeway`, then `sub`, `iss`, `aud`), with
/// the same errors.
pub fn decode_at(
    token: &str,
    key: &jsonwebtoken::DecodingKey,
    mut validation: jsonwebtoken::Validation,
    now: u64,
) -> Result<serde_json::Map<String, serde_json::Value>, jsonwebtoken::errors::Error> {
    use jsonwebtoken::errors::ErrorKind;
    let (check_exp, check_nbf, check_aud) = (validation.validate_exp, validation.validate_nbf, validation.validate_aud);
    let (sub, iss, aud) = (validation.sub.take(), validation.iss.take(), validation.aud.take());
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    // Signature and required claims.
    let claims = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, key, &validation)?.claims;
    let fail = |kind: ErrorKind| Err(jsonwebtoken::errors::Error::from(kind));
    if check_exp || check_nbf {
        let exp = numeric_claim(&claims, "exp");
        let nbf = numeric_claim(&claims, "nbf");
        if check_exp && exp == Some(None) {
            return fail(ErrorKind::InvalidClaimFormat("exp".into()));
        }
        if check_nbf && nbf == Some(None) {
            return fail(ErrorKind::InvalidClaimFormat("nbf".into()));
        }
        let ahead = validation.reject_tokens_expiring_in_less_than;
        if let Some(Some(exp)) = exp {
            if exp < ahead {
                return fail(ErrorKind::InvalidToken);
            }
            if check_exp && exp - ahead < now.saturating_sub(validation.leeway) {
                return fail(ErrorKind::ExpiredSignature);
            }
        }
        if let Some(Some(nbf)) = nbf
            && check_nbf
            && nbf > now.saturating_add(validation.leeway)
        {
            return fail(ErrorKind::ImmatureSignature);
        }
    }
    if let Some(sub) = sub
        && claims.get("sub").and_then(serde_json::Value::as_str).is_some_and(|s| s != sub)
    {
        return fail(ErrorKind::InvalidSubject);
    }
    if let Some(iss) = iss
        && !names_one_of(claims.get("iss"), &iss)
    {
        return fail(ErrorKind::InvalidIssuer);
    }
    if check_aud && !names_one_of(claims.get("aud"), &aud.unwrap_or_default()) {
        return fail(ErrorKind::InvalidAudience);
    }
    Ok(claims)
}

/// A NumericDate claim as `jsonwebtoken` reads it: `None` when absent, `Some(None)` when not a
/// number it takes (a negative, an unrepresentable float), else the value (floats rounded).
fn numeric_claim(claims: &serde_json::Map<String, serde_json::Value>, name: &str) -> Option<Option<u64>> {
    let v = claims.get(name)?;
    let n = v.as_number().and_then(|n| {
        if let Some(u) = n.as_u64() {
            Some(u)
        } else if n.is_f64() {
            n.as_f64().filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64).map(|f| f.round() as u64)
        } else {
            None
        }
    });
    Some(n)
}

/// Whether an `iss` or `aud` claim (a string, or an array of strings) names one of `wanted`. A
/// claim that is absent or of another shape passes, as in `jsonwebtoken`: its required-claims
/// check is what refuses those.
fn names_one_of(claim: Option<&serde_json::Value>, wanted: &std::collections::HashSet<String>) -> bool {
    use serde_json::Value;
    match claim {
        Some(Value::String(s)) => wanted.contains(s),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            a.iter().filter_map(Value::as_str).any(|s| wanted.contains(s))
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::Authorities;
    use crate::clock::{Clock, FakeClock};
    use std::sync::Arc;

    /// 2023-11-14T22:13:20Z: tests run at a fixed instant.
    const T0: u64 = 1_700_000_000;

    fn key(now: SystemTime) -> (Arc<JwtKey>, Arc<crate::bundle::JwtBundle>) {
        let key = Arc::new(JwtKey::for_test("k1", now - Duration::from_secs(60), now + Duration::from_secs(3600)));
        let auth = Authorities { x509: vec![], jwt: vec![key.clone()], wit: vec![], delegation: vec![], roots: vec![] };
        (key, Arc::new(crate::bundle::JwtBundle::local(&auth)))
    }

    fn token_with_nbf(key: &JwtKey, now: u64, nbf: u64) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        let claims = serde_json::json!({
            "sub": "spiffe://example.org/w", "aud": ["a"], "exp": now + 600, "iat": now, "nbf": nbf,
        });
        key.sign(&header, &claims).unwrap()
    }

    #[test]
    fn a_token_not_yet_valid_is_refused() {
        let clock = FakeClock::at_unix(T0);
        let (key, jwks) = key(clock.now());
        let jwks_for = |_: &TrustDomain| Some(jwks.clone());
        let now = T0;
        let future = token_with_nbf(&key, now + 3600, now + 3600);
        let err =
            validate(&future, "a", jwks_for, clock.now()).err().expect("a token whose nbf is an hour ahead is refused");
        assert!(err.to_string().contains("ImmatureSignature"), "{err}");
        // Within the clock-skew leeway, and in the past: accepted.
        assert!(validate(&token_with_nbf(&key, now, now + 10), "a", jwks_for, clock.now()).is_ok());
        assert!(validate(&token_with_nbf(&key, now, now - 10), "a", jwks_for, clock.now()).is_ok());
        // An hour later, the token whose nbf was an hour ahead is good.
        clock.advance(Duration::from_secs(3600));
        assert!(validate(&future, "a", jwks_for, clock.now()).is_ok());
        // Minted tokens (no nbf) still validate.
        let now = clock.now();
        let id: SpiffeId = "spiffe://example.org/w".parse().unwrap();
        let (key, jwks) = self::key(now);
        let jwks_for = |_: &TrustDomain| Some(jwks.clone());
        let t = mint(&id, &["a".into()], Duration::from_secs(60), None, &key, now).unwrap();
        assert!(validate(&t.token, "a", jwks_for, now).is_ok());
        let claims = jsonwebtoken::dangerous::insecure_decode_claims::<serde_json::Value>(&t.token).unwrap();
        // One audience: a plain string; a random jti and an iat.
        assert_eq!(claims["aud"], serde_json::json!("a"));
        assert_eq!(claims["jti"].as_str().map(str::len), Some(32));
        assert_eq!(claims["iat"].as_u64(), Some(T0 + 3600));
        let t2 = mint(&id, &["a".into(), "b".into()], Duration::from_secs(60), Some("https://i"), &key, now).unwrap();
        let claims2 = jsonwebtoken::dangerous::insecure_decode_claims::<serde_json::Value>(&t2.token).unwrap();
        assert_eq!(claims2["aud"], serde_json::json!(["a", "b"]));
        assert_eq!(claims2["iss"], serde_json::json!("https://i"));
        assert_ne!(claims["jti"], claims2["jti"]);
        assert!(validate(&t2.token, "b", jwks_for, now).is_ok());
        // A TTL past the end of time is capped by the key's life, not a panic.
        let t = mint(&id, &["a".into()], Duration::MAX, None, &key, now).unwrap();
        assert_eq!(t.expires_at, key.not_after);
    }

    /// In fake time: a JWT-SVID is good until its `exp` plus the 30 s leeway, and refused after,
    /// whatever the system clock says.
    #[test]
    fn a_token_validated_past_its_exp_is_refused() {
        let clock = FakeClock::at_unix(T0);
        let (key, jwks) = key(clock.now());
        let jwks_for = |_: &TrustDomain| Some(jwks.clone());
        let id: SpiffeId = "spiffe://example.org/w".parse().unwrap();
        let t = mint(&id, &["a".into()], Duration::from_secs(300), None, &key, clock.now()).unwrap();
        assert_eq!(crate::clock::unix_secs(t.expires_at), T0 + 300);
        assert!(validate(&t.token, "a", jwks_for, clock.now()).is_ok());
        clock.advance(Duration::from_secs(300 + 30));
        assert!(validate(&t.token, "a", jwks_for, clock.now()).is_ok(), "within the leeway");
        clock.advance(Duration::from_secs(1));
        let err = validate(&t.token, "a", jwks_for, clock.now()).err().expect("refused past exp + leeway");
        assert!(matches!(err, JwtError::Invalid(ref m) if m == "ExpiredSignature"), "{err}");
        // An expired token for the wrong audience: the expiry is what is reported (as before).
        let err = validate(&t.token, "b", jwks_for, clock.now()).err().expect("refused");
        assert!(err.to_string().contains("ExpiredSignature"), "{err}");
        // The clock stepped back before the token's life: good again; for another audience, not.
        clock.set(crate::clock::from_unix_secs(T0 + 10));
        assert!(validate(&t.token, "a", jwks_for, clock.now()).is_ok());
        let err = validate(&t.token, "b", jwks_for, clock.now()).err().expect("refused");
        assert!(err.to_string().contains("InvalidAudience"), "{err}");
    }

    /// `decode_at` gives `jsonwebtoken`'s answers for malformed time claims.
    #[test]
    fn malformed_time_claims_are_refused_as_jsonwebtoken_refuses_them() {
        let now = T0;
        let (key, jwks) = key(crate::clock::from_unix_secs(now));
        let verify_key = jwks.find("k1").unwrap();
        let dec = &verify_key.key;
        let sign = |claims: serde_json::Value| {
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
            header.kid = Some(key.kid.clone());
            key.sign(&header, &claims).unwrap()
        };
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        v.set_audience(&["a"]);
        v.set_required_spec_claims(&["exp", "aud"]);
        v.validate_nbf = true;
        let at = |claims| decode_at(&sign(claims), dec, v.clone(), now).map(|_| ()).map_err(|e| e.to_string());
        assert!(at(serde_json::json!({"aud": "a", "exp": now as f64 + 0.4})).is_ok());
        let cases = [
            (serde_json::json!({"aud": "a", "exp": "soon"}), "Missing required claim: exp"),
            (serde_json::json!({"aud": "a", "exp": -1}), "Missing required claim: exp"),
            (serde_json::json!({"aud": "a", "exp": now + 60, "nbf": "now"}), "Invalid format for claim: nbf"),
            (serde_json::json!({"aud": "a", "exp": now - 61}), "ExpiredSignature"),
            (serde_json::json!({"aud": "a", "exp": now + 60, "nbf": now + 61}), "ImmatureSignature"),
            (serde_json::json!({"aud": ["b", "c"], "exp": now + 60}), "InvalidAudience"),
            (serde_json::json!({"aud": [], "exp": now + 60}), "InvalidAudience"),
        ];
        for (claims, want) in cases {
            let got = at(claims.clone()).unwrap_err();
            assert!(got.contains(want), "{claims}: {got}");
        }
        assert!(at(serde_json::json!({"aud": ["b", "a"], "exp": now + 60})).is_ok());
    }
}
