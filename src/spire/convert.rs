//! Server messages → tessera values. The server stores selectors as opaque `type`/`value`
//! strings; an entry whose selector types tessera's attestors never produce (node aliases with
//! `spiffe_id:`, spire-agent `k8s_psat:` entries, ...) can match no workload here and is left
//! out. An entry that is malformed (bad SPIFFE ID, foreign trust domain, no selectors) is refused.

use super::pb::types;
use crate::bundle::jwks::Jwk;
use crate::bundle::{FederatedBundle, JwtBundle, X509Bundle};
use crate::registry::Entry;
use crate::spiffe_id::{SpiffeId, TrustDomain};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::collections::BTreeSet;
use std::time::Duration;
use tessera_attestors::{Kind, Selector};

/// Why a server entry is not served.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum EntryRefusal {
    /// Normal: not a workload entry for tessera's attestors.
    #[error("selector type {0:?} is not one tessera's attestors produce")]
    ForeignSelector(String),
    #[error("malformed entry: {0}")]
    Malformed(String),
}

pub(crate) fn spiffe_id(id: Option<&types::Spiffeid>) -> Result<SpiffeId, String> {
    let id = id.ok_or("no SPIFFE ID")?;
    SpiffeId::parse_workload(&format!("spiffe://{}{}", id.trust_domain, id.path)).map_err(|e| e.to_string())
}

/// A server entry as a registry entry (TTLs are the server's business; kept for display only).
pub(crate) fn entry(e: &types::Entry, td: &TrustDomain) -> Result<Entry, EntryRefusal> {
    let id = spiffe_id(e.spiffe_id.as_ref()).map_err(|m| EntryRefusal::Malformed(format!("entry {}: {m}", e.id)))?;
    if id.trust_domain() != td {
        return Err(EntryRefusal::Malformed(format!("entry {}: {id} is outside {td}", e.id)));
    }
    if e.id.is_empty() {
        return Err(EntryRefusal::Malformed(format!("{id}: entry without an ID")));
    }
    if e.selectors.is_empty() {
        return Err(EntryRefusal::Malformed(format!("entry {}: no selectors", e.id)));
    }
    let mut selectors = BTreeSet::new();
    for s in &e.selectors {
        if Kind::from_name(&s.r#type).is_none() {
            return Err(EntryRefusal::ForeignSelector(s.r#type.clone()));
        }
        let sel: Selector = format!("{}:{}", s.r#type, s.value)
            .parse()
            .map_err(|err| EntryRefusal::Malformed(format!("entry {}: {err}", e.id)))?;
        selectors.insert(sel);
    }
    let mut federates_with = Vec::new();
    for f in &e.federates_with {
        let name = f.strip_prefix("spiffe://").unwrap_or(f);
        federates_with.push(
            name.parse::<TrustDomain>()
                .map_err(|err| EntryRefusal::Malformed(format!("entry {}: federates_with {f:?}: {err}", e.id)))?,
        );
    }
    Ok(Entry {
        spiffe_id: id,
        selectors,
        x509_svid_ttl: Duration::from_secs(u64::try_from(e.x509_svid_ttl).unwrap_or(0)),
        jwt_svid_ttl: Duration::from_secs(u64::try_from(e.jwt_svid_ttl).unwrap_or(0)),
        dns_names: e.dns_names.clone(),
        hint: Some(e.hint.clone()).filter(|h| !h.is_empty()),
        federates_with,
        owner: None,
        metadata: Default::default(),
        retired: false,
        delegation: None,
    })
}

/// A server bundle as tessera's X.509 and JWT bundles.
pub(crate) fn bundle(b: &types::Bundle) -> Result<FederatedBundle, String> {
    let mut certs = Vec::new();
    for a in &b.x509_authorities {
        x509_parser::parse_x509_certificate(&a.asn1).map_err(|e| format!("X.509 authority does not parse: {e}"))?;
        certs.push(a.asn1.clone());
    }
    if certs.is_empty() {
        return Err(format!("bundle of {:?} has no X.509 authority", b.trust_domain));
    }
    let mut keys = Vec::new();
    for k in &b.jwt_authorities {
        match jwk(&k.public_key, &k.key_id) {
            Ok(j) => keys.push(j),
            Err(e) => tracing::warn!(kid = %k.key_id, "JWT authority skipped: {e}"),
        }
    }
    Ok(FederatedBundle { x509: X509Bundle::new(certs), jwt: JwtBundle::new(keys), delegation: JwtBundle::new(vec![]) })
}

/// A PKIX public key (DER) as a JWK with `kid`.
fn jwk(der: &[u8], kid: &str) -> Result<Jwk, String> {
    use x509_parser::public_key::PublicKey;
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der_spki(der).map_err(|e| e.to_string())?;
    match spki.parsed().map_err(|e| e.to_string())? {
        PublicKey::EC(point) => {
            let p = point.data();
            let (crv, n) = match p.len() {
                65 => ("P-256", 32),
                97 => ("P-384", 48),
                l => return Err(format!("EC point of {l} bytes")),
            };
            if p.first() != Some(&4) {
                return Err("compressed EC point".into());
            }
            let mut j = Jwk::p256(&p[1..=n], &p[n + 1..], Some(kid.to_owned()), "jwt-svid");
            j.crv = Some(crv.into());
            Ok(j)
        }
        PublicKey::RSA(rsa) => Ok(Jwk {
            kty: "RSA".into(),
            kid: Some(kid.to_owned()),
            use_: Some("jwt-svid".into()),
            alg: None,
            crv: None,
            x: None,
            y: None,
            n: Some(URL_SAFE_NO_PAD.encode(strip(rsa.modulus))),
            e: Some(URL_SAFE_NO_PAD.encode(strip(rsa.exponent))),
            x5c: None,
            other: Default::default(),
        }),
        _ => Err("unsupported key type".into()),
    }
}

/// Big-endian integers without leading zero bytes (JWK form).
fn strip(b: &[u8]) -> &[u8] {
    let i = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[i..]
}

trait FromDerSpki<'a>: Sized {
    fn from_der_spki(der: &'a [u8]) -> x509_parser::prelude::X509Result<'a, Self>;
}

impl<'a> FromDerSpki<'a> for x509_parser::x509::SubjectPublicKeyInfo<'a> {
    fn from_der_spki(der: &'a [u8]) -> x509_parser::prelude::X509Result<'a, Self> {
        use x509_parser::prelude::FromDer;
        Self::from_der(der)
    }
}
