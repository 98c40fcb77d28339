//! Whose subject tokens tessera accepts, and their verification:
//! - a configured identity provider (`[[delegation.issuers]]`, its JWKS read from a file): first hop;
//! - tessera itself (`iss` = our delegation issuer, `jwt_issuer` + `/delegation`, signed by our
//!   delegation key; `aud` = our `jwt_issuer`): a later hop;
//! - a federated tessera node (its delegation keys in its federated bundle, found by the trust
//!   domain of the outermost `act.sub`): a later hop across trust domains.
//!
//! The token's form is checked before any key is looked up: JWS compact, an asymmetric `alg` from
//! an allowlist (never `none` or HS*), a `kid`, a known `typ`. The signature is checked by
//! `jsonwebtoken` with the key's own algorithm; `iss`, `aud`, `exp`, `nbf` and `iat` after it.

use crate::bundle::JwtBundle;
pub(crate) use crate::bundle::jwks::{published_jwk as delegation_jwk, signing_jwk};
use crate::registry::delegation::Issuers;
use crate::spiffe_id::{SpiffeId, TrustDomain};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Longest subject token accepted (bytes).
pub(crate) const MAX_SUBJECT_TOKEN: usize = 16 * 1024;
/// Actors a subject token's `act` chain may hold.
pub(crate) const MAX_CHAIN: usize = 32;
/// Clock skew allowed on `exp`, `nbf` and `iat` (seconds).
pub(crate) const LEEWAY: u64 = 30;

/// Where the verification keys of a later-hop token come from.
pub(crate) struct TesseraKeys<'a> {
    pub trust_domain: &'a TrustDomain,
    /// Our delegation issuer (`jwt_issuer` + `/delegation`): the `iss` of our tokens.
    pub issuer: &'a str,
    /// Our `jwt_issuer` (required with delegation): the `aud` a subject token from a tessera node
    /// must name (the hand-off audience).
    pub audience: &'a str,
    /// Our delegation keys.
    pub own: JwtBundle,
    /// Delegation keys of federated trust domains.
    pub federated: BTreeMap<TrustDomain, JwtBundle>,
}

impl<'a> TesseraKeys<'a> {
    /// Our delegation keys (from `keys`) and the federated ones the policy holds, for tokens of
    /// `issuer` that must name `audience`.
    pub(crate) fn of(
        keys: &'a dyn crate::issuer::KeySource,
        policy: &crate::registry::Policy,
        issuer: &'a str,
        audience: &'a str,
    ) -> Self {
        let auth = keys.authorities();
        TesseraKeys {
            trust_domain: keys.trust_domain(),
            issuer,
            audience,
            own: JwtBundle::new(auth.delegation.iter().filter_map(|k| signing_jwk(&delegation_jwk(k))).collect()),
            federated: policy.federated.iter().map(|(td, b)| (td.clone(), b.delegation.clone())).collect(),
        }
    }
}

/// Who issued a subject token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A configured identity provider: a user's own token (first hop).
    IdentityProvider,
    /// A token tessera (this node or a federated one) issued to an earlier agent.
    Tessera(TrustDomain),
}

/// A verified subject token.
#[derive(Debug, Clone)]
pub(crate) struct Subject {
    /// The end user (`sub`).
    pub user: String,
    pub issuer: String,
    /// Which route verified it (identity provider, or which tessera trust domain): a user's
    /// approval takes identity-provider tokens only; the decision reads the delegator instead.
    pub origin: Origin,
    pub scopes: Vec<String>,
    pub exp: u64,
    /// The token's `act` claim (earlier actors), copied unchanged into the new token.
    pub act: Option<Value>,
    /// Its actors, outermost (most recent) first.
    pub actors: Vec<String>,
    /// The immediate delegator: the issuer (first hop) or the outermost `act.sub`.
    pub delegator: String,
    /// The token's `client_id`, if any (a tessera token's is its outermost actor).
    pub client_id: Option<String>,
    pub jti: Option<String>,
    /// The token's RFC 9396 `authorization_details` claim, if any (a later hop may not change them).
    pub authorization_details: Option<Value>,
    /// Its `iat`, if it has one (a user's approval must come with a token newer than the request).
    pub iat: Option<u64>,
}

/// SHA-256 of a JWT's signing input (`header.payload`): the same for every signature of the same
/// claims, so re-encoding the signature (ECDSA's `s` ↔ `n - s`) does not make another token.
pub(crate) fn signing_input_sha256(token: &str) -> [u8; 32] {
    use sha2::Digest;
    let input = token.rsplit_once('.').map_or(token, |(head, _)| head);
    sha2::Sha256::digest(input.as_bytes()).into()
}

/// The unverified header fields we route on.
struct Header {
    alg: jsonwebtoken::Algorithm,
    kid: String,
    typ: Option<String>,
}

fn header(token: &str) -> Result<Header, String> {
    use jsonwebtoken::Algorithm::*;
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err("not a JWS in compact form (three dot-separated parts)".into());
    };
    if h.len() > 2048 {
        return Err("the JOSE header is longer than 2048 bytes".into());
    }
    let bytes = URL_SAFE_NO_PAD.decode(h).map_err(|_| "the JOSE header is not base64url".to_owned())?;
    let v: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| "the JOSE header is not a JSON object".to_owned())?;
    if v.contains_key("crit") {
        return Err("the JOSE header has \"crit\" extensions".into());
    }
    let alg_name = v.get("alg").and_then(Value::as_str).ok_or("the JOSE header has no \"alg\"")?;
    let alg = match alg_name {
        "ES256" => ES256,
        "ES384" => ES384,
        "RS256" => RS256,
        "RS384" => RS384,
        "RS512" => RS512,
        "PS256" => PS256,
        "PS384" => PS384,
        "PS512" => PS512,
        other => return Err(format!("\"alg\": {:?} is not accepted (asymmetric signatures only)", cut(other))),
    };
    let kid = v.get("kid").and_then(Value::as_str).ok_or("the JOSE header has no \"kid\"")?.to_owned();
    let typ = match v.get("typ") {
        None => None,
        Some(Value::String(t)) => Some(t.clone()),
        Some(_) => return Err("\"typ\" is not a string".into()),
    };
    if let Some(t) = &typ
        && !matches!(t.to_ascii_lowercase().as_str(), "jwt" | "at+jwt" | "application/at+jwt")
    {
        return Err(format!("\"typ\": {:?} is not a user or delegated access token", cut(t)));
    }
    Ok(Header { alg, kid, typ })
}

fn cut(s: &str) -> String {
    s.chars().take(64).collect()
}

fn payload(token: &str) -> Result<Map<String, Value>, String> {
    let p = token.split('.').nth(1).unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD.decode(p).map_err(|_| "the payload is not base64url".to_owned())?;
    serde_json::from_slice(&bytes).map_err(|_| "the payload is not a JSON object".to_owned())
}

/// The actors of an `act` claim, outermost first; each must have a string `sub`.
pub(crate) fn actors(act: Option<&Value>) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = act;
    while let Some(a) = cur {
        let sub = a.get("sub").and_then(Value::as_str).ok_or("an \"act\" has no \"sub\"")?;
        if out.len() >= MAX_CHAIN {
            return Err(format!("the \"act\" chain is longer than {MAX_CHAIN}"));
        }
        out.push(sub.to_owned());
        cur = a.get("act");
    }
    Ok(out)
}

/// Verify a subject token at `now` (Unix seconds) and extract what the exchange needs.
pub(crate) fn verify(token: &str, idps: &Issuers, tessera: &TesseraKeys<'_>, now: u64) -> Result<Subject, String> {
    if token.len() > MAX_SUBJECT_TOKEN {
        return Err(format!("subject_token is {} bytes; at most {MAX_SUBJECT_TOKEN} are accepted", token.len()));
    }
    let h = header(token)?;
    let unverified = payload(token)?;
    let iss = unverified.get("iss").and_then(Value::as_str).ok_or("the subject token has no \"iss\"")?.to_owned();
    let delegated = h
        .typ
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt"));
    // Route on claims the signature check below then vouches for.
    let (keys, audience, origin) = if let Some((i, keys)) = idps.find(&iss) {
        (keys.clone(), i.audience.clone(), Origin::IdentityProvider)
    } else if delegated && iss == tessera.issuer {
        (tessera.own.clone(), tessera.audience.to_owned(), Origin::Tessera(tessera.trust_domain.clone()))
    } else if delegated {
        let first = actors(unverified.get("act"))?.into_iter().next().ok_or("a delegated token without \"act\"")?;
        let id: SpiffeId = first.parse().map_err(|_| format!("unknown issuer {:?}", cut(&iss)))?;
        let keys =
            tessera.federated.get(id.trust_domain()).filter(|k| !k.is_empty()).ok_or_else(|| {
                format!("unknown issuer {:?} (no delegation keys for {})", cut(&iss), id.trust_domain())
            })?;
        (keys.clone(), tessera.audience.to_owned(), Origin::Tessera(id.trust_domain().clone()))
    } else {
        return Err(format!("unknown issuer {:?}", cut(&iss)));
    };
    if matches!(origin, Origin::Tessera(_)) && h.alg != jsonwebtoken::Algorithm::ES256 {
        return Err("a tessera token must be ES256".into());
    }
    let jwk = keys.keys().iter().find(|k| k.kid.as_deref() == Some(h.kid.as_str()));
    let key =
        keys.find(&h.kid).ok_or_else(|| format!("no key with kid {:?} for issuer {:?}", cut(&h.kid), cut(&iss)))?;
    if !key.algs.contains(&h.alg) {
        return Err(format!("\"alg\" {:?} does not match the key {:?}", h.alg, cut(&h.kid)));
    }
    if let Some(pinned) = jwk.and_then(|k| k.alg.as_deref())
        && pinned != format!("{:?}", h.alg)
    {
        return Err(format!("\"alg\" {:?} differs from the key's \"alg\" {pinned:?}", h.alg));
    }
    let mut validation = jsonwebtoken::Validation::new(h.alg);
    validation.set_audience(&[audience.as_str()]);
    validation.set_issuer(&[iss.as_str()]);
    validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
    validation.validate_nbf = true;
    validation.leeway = LEEWAY;
    let claims = crate::svid::jwt::decode_at(token, &key.key, validation, now)
        .map_err(|e| format!("subject token rejected: {}", describe(&e)))?;
    if let Some(iat) = claims.get("iat").and_then(Value::as_u64)
        && iat > now + LEEWAY
    {
        return Err("subject token rejected: issued in the future (\"iat\")".into());
    }
    let user = claims.get("sub").and_then(Value::as_str).unwrap_or_default().to_owned();
    if user.is_empty() || user.len() > 1024 || user.chars().any(char::is_control) {
        return Err("the subject token's \"sub\" is empty, longer than 1024 bytes or has control characters".into());
    }
    // A user is never a workload: a delegated token whose `sub` looked like a SPIFFE ID could be
    // taken for that workload's JWT-SVID by a relying party that checks no `typ`.
    if user.parse::<SpiffeId>().is_ok() || user.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("spiffe:")) {
        return Err(format!("the subject token's \"sub\" {:?} is a SPIFFE ID, not a user", cut(&user)));
    }
    let scopes: Vec<String> = match (claims.get("scope"), claims.get("scp")) {
        (Some(Value::String(s)), _) => s.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        (None, Some(Value::Array(a))) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => return Err("the subject token carries no scope (\"scope\" or \"scp\"): nothing can be delegated".into()),
    };
    let exp = claims.get("exp").and_then(Value::as_u64).ok_or("\"exp\" is not a number")?;
    let act = claims.get("act").cloned();
    let actors = actors(act.as_ref())?;
    let delegator = match &origin {
        Origin::IdentityProvider => iss.clone(),
        Origin::Tessera(td) => {
            let first = actors.first().ok_or("a tessera token without \"act\"")?;
            let id: SpiffeId = first.parse().map_err(|_| "the outermost \"act.sub\" is not a SPIFFE ID".to_owned())?;
            if id.trust_domain() != td {
                return Err(format!("the outermost actor {id} is not of trust domain {td}"));
            }
            if claims.get("client_id").and_then(Value::as_str) != Some(first.as_str()) {
                return Err("\"client_id\" differs from the outermost \"act.sub\"".into());
            }
            first.clone()
        }
    };
    let jti = claims.get("jti").and_then(Value::as_str).map(cut);
    let client_id = claims.get("client_id").and_then(Value::as_str).map(str::to_owned);
    let authorization_details = claims.get("authorization_details").cloned();
    Ok(Subject {
        user,
        issuer: iss,
        origin,
        scopes,
        exp,
        act,
        actors,
        delegator,
        client_id,
        jti,
        authorization_details,
        iat: claims.get("iat").and_then(Value::as_u64),
    })
}

fn describe(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind::*;
    match e.kind() {
        ExpiredSignature => "expired (\"exp\")".into(),
        ImmatureSignature => "not yet valid (\"nbf\")".into(),
        InvalidAudience => "wrong audience (\"aud\")".into(),
        InvalidIssuer => "wrong issuer".into(),
        InvalidSignature => "bad signature".into(),
        MissingRequiredClaim(c) => format!("missing claim {c:?}"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::JwtKey;
    use serde_json::json;
    use std::time::Duration;

    const ISS: &str = "https://tessera.example.org";
    const DELEGATION_ISS: &str = "https://tessera.example.org/delegation";

    /// Tests run at a fixed instant (2023-11-14T22:13:20Z).
    const T0: u64 = 1_700_000_000;

    fn key(kid: &str) -> JwtKey {
        let now = crate::clock::from_unix_secs(T0);
        JwtKey::for_test(kid, now - Duration::from_secs(60), now + Duration::from_secs(3600))
    }

    fn bundle(k: &JwtKey) -> JwtBundle {
        JwtBundle::new(signing_jwk(&delegation_jwk(k)).into_iter().collect())
    }

    fn at_jwt(k: &JwtKey, claims: &Value) -> String {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some(k.kid.clone());
        h.typ = Some("at+jwt".into());
        k.sign(&h, claims).unwrap()
    }

    /// A hand-off token: `aud` is the receiving node's `jwt_issuer`.
    fn hop(iss: &str, agent: &str, now: u64) -> Value {
        json!({ "iss": iss, "sub": "alice", "aud": ISS, "client_id": agent, "act": { "sub": agent },
                "scope": "a b", "iat": now, "exp": now + 300, "jti": "j1" })
    }

    #[test]
    fn earlier_hops_of_this_node_and_of_federated_nodes() {
        crate::install_crypto_provider();
        let now = T0;
        let ours = key("ours");
        let theirs = key("theirs");
        let td: TrustDomain = "example.org".parse().unwrap();
        let partner: TrustDomain = "partner.org".parse().unwrap();
        let mut keys = TesseraKeys {
            trust_domain: &td,
            issuer: DELEGATION_ISS,
            audience: ISS,
            own: bundle(&ours),
            federated: BTreeMap::new(),
        };
        let idps = Issuers::default();

        // A token with the JWT-SVID issuer as `iss` is not one of our delegated tokens.
        let old = at_jwt(&ours, &hop(ISS, "spiffe://example.org/agents/concierge", now));
        assert!(verify(&old, &idps, &keys, now).unwrap_err().contains("unknown issuer"));
        let own = at_jwt(&ours, &hop(DELEGATION_ISS, "spiffe://example.org/agents/concierge", now));
        let s = verify(&own, &idps, &keys, now).unwrap();
        assert_eq!((s.user.as_str(), s.delegator.as_str()), ("alice", "spiffe://example.org/agents/concierge"));
        assert_eq!(s.origin, Origin::Tessera(td.clone()));
        assert_eq!(s.scopes, ["a", "b"]);

        // A partner node's token: refused until its delegation keys are in its federated bundle.
        let foreign =
            at_jwt(&theirs, &hop("https://tessera.partner.org/delegation", "spiffe://partner.org/agents/planner", now));
        assert!(verify(&foreign, &idps, &keys, now).unwrap_err().contains("unknown issuer"));
        keys.federated.insert(partner.clone(), bundle(&theirs));
        let s = verify(&foreign, &idps, &keys, now).unwrap();
        assert_eq!(s.origin, Origin::Tessera(partner.clone()));
        assert_eq!(s.delegator, "spiffe://partner.org/agents/planner");

        // A partner's key cannot vouch for an agent of ours, or of a third domain.
        let forged = at_jwt(&theirs, &hop("https://tessera.partner.org", "spiffe://example.org/agents/concierge", now));
        assert!(verify(&forged, &idps, &keys, now).is_err());
        let third = at_jwt(&theirs, &hop("https://x", "spiffe://third.org/agents/x", now));
        assert!(verify(&third, &idps, &keys, now).is_err());
        // Our issuer with a partner's key: no such kid among ours.
        let mixed = at_jwt(&theirs, &hop(DELEGATION_ISS, "spiffe://example.org/agents/concierge", now));
        assert!(verify(&mixed, &idps, &keys, now).unwrap_err().contains("no key with kid"));
        // client_id must be the outermost actor.
        let mut c = hop(DELEGATION_ISS, "spiffe://example.org/agents/concierge", now);
        c["client_id"] = "spiffe://example.org/agents/other".into();
        assert!(verify(&at_jwt(&ours, &c), &idps, &keys, now).unwrap_err().contains("client_id"));
        // A JWT-SVID-shaped token (typ JWT) with our issuer is not exchangeable.
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some(ours.kid.clone());
        let svid = ours.sign(&h, &hop(DELEGATION_ISS, "spiffe://example.org/agents/concierge", now)).unwrap();
        assert!(verify(&svid, &idps, &keys, now).unwrap_err().contains("unknown issuer"));
        // A user is never a SPIFFE ID, in any spelling.
        for sub in ["spiffe://example.org/payments", "SPIFFE://example.org/payments", "spiffe:x"] {
            let mut c = hop(DELEGATION_ISS, "spiffe://example.org/agents/concierge", now);
            c["sub"] = sub.into();
            let e = verify(&at_jwt(&ours, &c), &idps, &keys, now).unwrap_err();
            assert!(e.contains("is a SPIFFE ID"), "{sub}: {e}");
        }
    }

    /// `exp` and `nbf` are judged at the `now` given, not by the system clock.
    #[test]
    fn a_subject_token_is_judged_at_the_given_time() {
        crate::install_crypto_provider();
        let ours = key("ours");
        let td: TrustDomain = "example.org".parse().unwrap();
        let keys = TesseraKeys {
            trust_domain: &td,
            issuer: DELEGATION_ISS,
            audience: ISS,
            own: bundle(&ours),
            federated: BTreeMap::new(),
        };
        let idps = Issuers::default();
        let mut claims = hop(DELEGATION_ISS, "spiffe://example.org/agents/concierge", T0);
        claims["nbf"] = (T0 + 60).into();
        let token = at_jwt(&ours, &claims);
        // exp = T0 + 300, nbf = T0 + 60, each with LEEWAY.
        let at = |now: u64| verify(&token, &idps, &keys, now);
        assert!(at(T0 + 29).unwrap_err().contains("not yet valid"));
        assert!(at(T0 + 30).is_ok());
        assert!(at(T0 + 300 + LEEWAY).is_ok());
        assert!(at(T0 + 300 + LEEWAY + 1).unwrap_err().contains("expired"));
    }

    #[test]
    fn delegation_keys_round_trip_through_a_spiffe_bundle() {
        let k = key("d1");
        let jwk = crate::bundle::jwks::Jwk {
            use_: Some(crate::bundle::jwks::BUNDLE_KEY_USE.into()),
            ..crate::bundle::jwks::jwk(&k)
        };
        // A SPIFFE JWT-SVID lookup ignores it; the delegation lookup finds it.
        assert!(crate::bundle::jwks::find_key(std::slice::from_ref(&jwk), "d1").is_none());
        assert!(JwtBundle::new(signing_jwk(&jwk).into_iter().collect()).find("d1").is_some());
    }
}
