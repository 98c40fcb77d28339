//! JWT-SVIDs: ES256, header exactly `alg`, `kid`, `typ: JWT`; claims sub, aud, exp, iat and
//! (when configured) iss. Validation follows `standards/JWT-SVID.md`.

use crate::bundle;
use crate::ca::JwtKey;
use crate::spiffe_id::{SpiffeId, TrustDomain};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    aud: &'a [String],
    exp: u64,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
}

/// A minted token; the token itself is a secret (bearer credential) and is never logged.
pub struct JwtSvid {
    pub spiffe_id: String,
    pub token: String,
    pub expires_at: SystemTime,
}

pub fn mint(
    id: &SpiffeId,
    audience: &[String],
    ttl: Duration,
    issuer: Option<&str>,
    key: &JwtKey,
    now: SystemTime,
) -> Result<JwtSvid, jsonwebtoken::errors::Error> {
    // A TTL past the end of time (config bounds make this unreachable) is capped by the key's life.
    let expires_at = now.checked_add(ttl).unwrap_or(key.not_after).min(key.not_after);
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    header.typ = Some("JWT".into());
    let sub = id.to_string();
    let claims = Claims { sub: &sub, aud: audience, exp: secs(expires_at), iat: secs(now), iss: issuer };
    let token = jsonwebtoken::encode(&header, &claims, &key.encoding)?;
    Ok(JwtSvid { spiffe_id: sub, token, expires_at })
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

/// Validate `token` for `audience` against the JWKS of the subject's trust domain.
pub fn validate(
    token: &str,
    audience: &str,
    jwks_for: impl Fn(&TrustDomain) -> Option<Vec<u8>>,
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
    let key = bundle::find_jwt_key(&jwks, &kid).ok_or_else(|| JwtError::UnknownKey(kid.clone(), td.to_string()))?;
    if !key.algs.contains(&header.alg) {
        return Err(JwtError::Alg(format!("{:?} does not match the key", header.alg)));
    }
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "sub", "aud"]);
    // `nbf` is checked when present, with the same clock-skew leeway as `exp`.
    validation.validate_nbf = true;
    validation.leeway = 30;
    let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key.key, &validation)
        .map_err(|e| JwtError::Invalid(e.to_string()))?;
    Ok(Validated { spiffe_id: id, claims: data.claims })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::Authorities;
    use std::sync::Arc;

    fn key() -> (Arc<JwtKey>, Vec<u8>) {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let der = kp.serialize_der();
        let now = SystemTime::now();
        let key = Arc::new(JwtKey {
            kid: "k1".into(),
            not_before: now - Duration::from_secs(60),
            not_after: now + Duration::from_secs(3600),
            encoding: jsonwebtoken::EncodingKey::from_ec_der(&der),
            public_point: kp.public_key_raw().to_vec(),
        });
        let auth = Authorities { x509: vec![], jwt: vec![key.clone()], roots: vec![] };
        (key, bundle::local_jwks(&auth))
    }

    fn token_with_nbf(key: &JwtKey, nbf: u64) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        let claims = serde_json::json!({
            "sub": "spiffe://example.org/w", "aud": ["a"], "exp": now + 600, "iat": now, "nbf": nbf,
        });
        jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap()
    }

    #[test]
    fn a_token_not_yet_valid_is_refused() {
        let (key, jwks) = key();
        let jwks_for = |_: &TrustDomain| Some(jwks.clone());
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let future = token_with_nbf(&key, now + 3600);
        let err = validate(&future, "a", jwks_for).err().expect("a token whose nbf is an hour ahead is refused");
        assert!(err.to_string().contains("ImmatureSignature"), "{err}");
        // Within the clock-skew leeway, and in the past: accepted.
        assert!(validate(&token_with_nbf(&key, now + 10), "a", jwks_for).is_ok());
        assert!(validate(&token_with_nbf(&key, now - 10), "a", jwks_for).is_ok());
        // Minted tokens (no nbf) still validate.
        let id: SpiffeId = "spiffe://example.org/w".parse().unwrap();
        let t = mint(&id, &["a".into()], Duration::from_secs(60), None, &key, SystemTime::now()).unwrap();
        assert!(validate(&t.token, "a", jwks_for).is_ok());
        // A TTL past the end of time is capped by the key's life, not a panic.
        let t = mint(&id, &["a".into()], Duration::MAX, None, &key, SystemTime::now()).unwrap();
        assert_eq!(t.expires_at, key.not_after);
    }
}
