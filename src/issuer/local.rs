//! The node-local issuer: the [`Ca`] signs, and each process keeps the X.509-SVID it was handed
//! until its renewal time, so a client that fetches and then streams sees one SVID, not two (as
//! from SPIRE's cache, but never one shared between processes).

use super::{Bundles, IssueError, IssuedJwt, IssuedX509, Issuer, X509Svids};
use crate::bundle::{JwtBundle, X509Bundle};
use crate::ca::{Authorities, Ca, X509Authority};
use crate::caller::Caller;
use crate::registry::Entry;
use crate::spiffe_id::{SpiffeId, TrustDomain};
use crate::svid::wit::WitSvid;
use crate::svid::{jwt, x509};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// An SVID already handed out to a process, reusable until its renewal time.
struct CachedSvid {
    entry: Arc<Entry>,
    signer: Arc<X509Authority>,
    svid: Arc<x509::X509Svid>,
    refresh: SystemTime,
}

/// SVIDs by (process, SPIFFE ID).
type SvidCache = HashMap<(crate::peer::ProcessKey, SpiffeId), CachedSvid>;

/// Per-process SVIDs kept at most; past this, those due for renewal are dropped (then all).
const SVID_CACHE_LIMIT: usize = 16_384;

pub(crate) struct LocalIssuer {
    ca: Arc<Ca>,
    /// Bumped whenever the CA's bundle changes (rotation).
    generation: watch::Receiver<u64>,
    cache: Mutex<SvidCache>,
    /// The bundles of the last authorities snapshot seen (same `Arc` until a rotation).
    bundles: Mutex<Option<(Arc<Authorities>, Arc<Bundles>)>>,
}

impl LocalIssuer {
    pub(crate) fn new(ca: Arc<Ca>, generation: watch::Receiver<u64>) -> Self {
        Self { ca, generation, cache: Mutex::default(), bundles: Mutex::default() }
    }

    fn bundles_of(&self, auth: &Arc<Authorities>) -> Arc<Bundles> {
        let mut cached = self.bundles.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((a, b)) = cached.as_ref()
            && Arc::ptr_eq(a, auth)
        {
            return b.clone();
        }
        let b = Arc::new(Bundles {
            x509: X509Bundle::local(auth),
            jwt: Arc::new(JwtBundle::local(auth)),
            wit: Arc::new(JwtBundle::new(auth.wit.iter().map(|k| crate::svid::wit::bundle_jwk(k)).collect())),
        });
        *cached = Some((auth.clone(), b.clone()));
        b
    }

    /// The SVID for `entry` for this process: the one already handed to it if not yet due for
    /// renewal (same entry, same signing authority), else a freshly minted one.
    fn svid_for(
        &self,
        process: crate::peer::ProcessKey,
        entry: &Arc<Entry>,
        signer: &Arc<X509Authority>,
        now: SystemTime,
    ) -> Result<(Arc<x509::X509Svid>, SystemTime, bool), IssueError> {
        let key = (process, entry.spiffe_id.clone());
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.get(&key)
            && now < c.refresh
            && Arc::ptr_eq(&c.entry, entry)
            && Arc::ptr_eq(&c.signer, signer)
        {
            return Ok((c.svid.clone(), c.refresh, true));
        }
        let svid = Arc::new(x509::mint(entry, signer, now).map_err(|e| IssueError::X509Mint(e.to_string()))?);
        let refresh = refresh_time(now, svid.not_after);
        if cache.len() >= SVID_CACHE_LIMIT {
            cache.retain(|_, c| c.refresh > now);
            if cache.len() >= SVID_CACHE_LIMIT {
                cache.clear();
            }
        }
        cache.insert(key, CachedSvid { entry: entry.clone(), signer: signer.clone(), svid: svid.clone(), refresh });
        Ok((svid, refresh, false))
    }
}

impl Issuer for LocalIssuer {
    fn trust_domain(&self) -> &TrustDomain {
        self.ca.trust_domain()
    }

    fn x509_svids(&self, caller: &Caller, now: SystemTime) -> Result<X509Svids, IssueError> {
        let auth = self.ca.authorities();
        let signer = auth.x509_signer(now).ok_or(IssueError::NoX509Authority)?;
        let mut svids = Vec::with_capacity(caller.entries.len());
        let mut refresh = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::MAX / 4);
        for entry in &caller.entries {
            let (svid, svid_refresh, reused) = self.svid_for(caller.process(), entry, signer, now)?;
            refresh = refresh.min(svid_refresh);
            svids.push(IssuedX509 { svid, reused });
        }
        Ok(X509Svids { svids, bundles: self.bundles_of(&auth), refresh })
    }

    fn jwt_svids(&self, caller: &Caller, audience: &[String], now: SystemTime) -> Result<Vec<IssuedJwt>, IssueError> {
        let auth = self.ca.authorities();
        let key = auth.signer(crate::ca::KeyKind::Jwt, now).ok_or(IssueError::NoJwtKey)?;
        let issuer = caller.policy.jwt_issuer.as_deref();
        caller
            .entries
            .iter()
            .map(|entry| {
                let mut extra = serde_json::Map::new();
                if let Some(agent) = entry.agent_claim() {
                    extra.insert("agent".into(), agent);
                }
                let svid = jwt::mint_with(&entry.spiffe_id, audience, entry.jwt_svid_ttl, issuer, key, now, extra)
                    .map_err(|e| IssueError::JwtMint(e.to_string()))?;
                Ok(IssuedJwt { svid, kid: key.kid.clone() })
            })
            .collect()
    }

    fn wit_svids(&self, caller: &Caller, now: SystemTime) -> Result<(Vec<WitSvid>, SystemTime), IssueError> {
        let auth = self.ca.authorities();
        let key = auth.signer(crate::ca::KeyKind::Wit, now).ok_or(IssueError::NoWitKey)?;
        let mut refresh = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::MAX / 4);
        let mut out = Vec::with_capacity(caller.entries.len());
        for entry in &caller.entries {
            // The WIT lives as the entry's X.509-SVID does: both are key-bound, renewed on the stream.
            let svid = crate::svid::wit::mint(&entry.spiffe_id, entry.x509_svid_ttl, key, now)
                .map_err(|e| IssueError::WitMint(e.to_string()))?;
            refresh = refresh.min(refresh_time(now, svid.expires_at));
            out.push(svid);
        }
        Ok((out, refresh))
    }

    fn bundles(&self) -> Arc<Bundles> {
        self.bundles_of(&self.ca.authorities())
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.generation.clone()
    }
}

/// Renew at half-life with up to 10 % jitter earlier, as SPIRE does, so fleets do not renew at once.
/// Life counts from the moment of issue, not from `not_before` (backdated for clock skew), or a
/// TTL shorter than the backdating would come due at once.
fn refresh_time(issued: SystemTime, not_after: SystemTime) -> SystemTime {
    use rand::Rng;
    let life = not_after.duration_since(issued).unwrap_or_default();
    let half = life / 2;
    let jitter = half.mul_f64(rand::rng().random_range(0.0..0.1));
    crate::clock::add(issued, half.max(Duration::from_millis(500))) - jitter
}
