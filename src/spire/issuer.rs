//! The [`Issuer`] of SPIRE mode: X.509-SVIDs are the ones the sync loop prefetched from the
//! server (looked up by entry, never minted here); JWT-SVIDs come from `SVID/NewJWTSVID`, cached
//! by (SPIFFE ID, audiences) until half their life, as spire-agent does.

use super::svids::{EXPIRY_MARGIN, Held};
use crate::bundle::{JwtBundle, X509Bundle};
use crate::caller::Caller;
use crate::issuer::{Bundles, IssueError, IssuedJwt, IssuedX509, Issuer, X509Svids};
use crate::registry::Entry;
use crate::spiffe_id::{SpiffeId, TrustDomain};
use crate::svid::jwt::JwtSvid;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tessera_attestors::Selector;
use tokio::sync::watch;
use tonic::transport::Channel;

/// A registry entry's identity in the served set (the server's entry ID is in [`Held`]).
pub(crate) type EntryKey = (SpiffeId, BTreeSet<Selector>);

pub(crate) fn key_of(e: &Entry) -> EntryKey {
    (e.spiffe_id.clone(), e.selectors.clone())
}

/// What is served now; replaced whole by the sync loop.
pub(crate) struct Served {
    pub bundles: Arc<Bundles>,
    pub svids: HashMap<EntryKey, Held>,
    /// Server entry IDs of every served entry (for JWT-SVIDs).
    pub entry_ids: HashMap<EntryKey, String>,
}

impl Served {
    pub(crate) fn empty() -> Self {
        Self {
            bundles: Arc::new(Bundles {
                x509: X509Bundle::new(vec![]),
                jwt: Arc::new(JwtBundle::new(vec![])),
                wit: Arc::new(JwtBundle::new(vec![])),
            }),
            svids: HashMap::new(),
            entry_ids: HashMap::new(),
        }
    }
}

struct CachedJwt {
    token: String,
    kid: String,
    issued: SystemTime,
    expires: SystemTime,
}

/// JWT-SVIDs kept at most (the key includes caller-chosen audiences).
const JWT_CACHE_LIMIT: usize = 4096;
const JWT_RPC_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct SpireIssuer {
    td: TrustDomain,
    served: Mutex<Arc<Served>>,
    channel: Mutex<Option<Channel>>,
    jwt_cache: Mutex<HashMap<(SpiffeId, Vec<String>), CachedJwt>>,
    changes: watch::Sender<u64>,
}

impl SpireIssuer {
    pub(crate) fn new(td: TrustDomain) -> Self {
        Self {
            td,
            served: Mutex::new(Arc::new(Served::empty())),
            channel: Mutex::default(),
            jwt_cache: Mutex::default(),
            changes: watch::channel(0).0,
        }
    }

    pub(crate) fn served(&self) -> Arc<Served> {
        self.served.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Put a new served set in force; open streams re-render.
    pub(crate) fn publish(&self, served: Served) {
        *self.served.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(served);
        self.changes.send_modify(|g| *g += 1);
    }

    /// The agent's current mTLS channel (None: no agent identity, JWT-SVIDs refused).
    pub(crate) fn set_channel(&self, channel: Option<Channel>) {
        *self.channel.lock().unwrap_or_else(|p| p.into_inner()) = channel;
    }

    /// Forget every JWT-SVID (banned agent, removed entries).
    pub(crate) fn clear_jwts(&self) {
        self.jwt_cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn fetch_jwt(&self, entry_id: &str, audience: &[String]) -> Result<(String, SystemTime), IssueError> {
        let channel = self
            .channel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| IssueError::JwtMint("no connection to the SPIRE Server".into()))?;
        // The trait is synchronous; the RPC runs on this worker thread, which tokio hands back
        // to the scheduler meanwhile. Only a multi-threaded runtime allows that.
        let handle = tokio::runtime::Handle::try_current().map_err(|e| IssueError::JwtMint(e.to_string()))?;
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return Err(IssueError::JwtMint("JWT-SVIDs from SPIRE need the multi-threaded runtime".into()));
        }
        let req = super::pb::svid::NewJwtsvidRequest { entry_id: entry_id.to_owned(), audience: audience.to_vec() };
        let resp = tokio::task::block_in_place(|| {
            handle.block_on(async move {
                let mut client = super::pb::svid::svid_client::SvidClient::new(channel);
                tokio::time::timeout(JWT_RPC_TIMEOUT, client.new_jwtsvid(req)).await
            })
        })
        .map_err(|_| IssueError::JwtMint("the SPIRE Server did not answer NewJWTSVID in time".into()))?
        .map_err(|s| IssueError::JwtMint(format!("NewJWTSVID: {}", super::error::describe(&s))))?
        .into_inner();
        let svid = resp.svid.ok_or_else(|| IssueError::JwtMint("NewJWTSVID without an SVID".into()))?;
        Ok((svid.token, super::keys::from_unix(svid.expires_at)))
    }
}

impl Issuer for SpireIssuer {
    fn trust_domain(&self) -> &TrustDomain {
        &self.td
    }

    /// SPIRE Server 1.13.3 mints no WIT-SVIDs and the agent API has no call for them.
    fn wit_svids(
        &self,
        _caller: &Caller,
        _now: SystemTime,
    ) -> Result<(Vec<crate::svid::wit::WitSvid>, SystemTime), IssueError> {
        Err(IssueError::NoWitKey)
    }

    fn x509_svids(&self, caller: &Caller, now: SystemTime) -> Result<X509Svids, IssueError> {
        let served = self.served();
        let mut svids = Vec::new();
        let mut refresh: Option<SystemTime> = None;
        for entry in &caller.entries {
            let Some(h) = served.svids.get(&key_of(entry)) else { continue };
            // Never past the NotAfter the server gave.
            if h.svid.not_after <= now + EXPIRY_MARGIN {
                continue;
            }
            let at = h.svid.not_after.min(h.rotate_at() + Duration::from_secs(30));
            refresh = Some(refresh.map_or(at, |r| r.min(at)));
            svids.push(IssuedX509 { svid: h.svid.clone(), reused: true });
        }
        if svids.is_empty() && !caller.entries.is_empty() {
            return Err(IssueError::X509Mint("no valid SVID from the SPIRE Server for this workload yet".into()));
        }
        let refresh = refresh.unwrap_or(now + Duration::from_secs(5)).max(now + Duration::from_secs(1));
        Ok(X509Svids { svids, bundles: served.bundles.clone(), refresh })
    }

    fn jwt_svids(&self, caller: &Caller, audience: &[String], now: SystemTime) -> Result<Vec<IssuedJwt>, IssueError> {
        let served = self.served();
        let mut aud = audience.to_vec();
        aud.sort();
        aud.dedup();
        let mut out = Vec::with_capacity(caller.entries.len());
        for entry in &caller.entries {
            let id = served
                .entry_ids
                .get(&key_of(entry))
                .ok_or_else(|| IssueError::JwtMint(format!("{} is no longer served", entry.spiffe_id)))?;
            let key = (entry.spiffe_id.clone(), aud.clone());
            let cached = {
                let cache = self.jwt_cache.lock().unwrap_or_else(|p| p.into_inner());
                cache.get(&key).and_then(|c| {
                    let half = c.issued + c.expires.duration_since(c.issued).unwrap_or_default() / 2;
                    (now < half && now + EXPIRY_MARGIN < c.expires).then(|| (c.token.clone(), c.kid.clone(), c.expires))
                })
            };
            let (token, kid, expires) = match cached {
                Some(c) => c,
                None => {
                    let (token, expires) = self.fetch_jwt(id, &aud)?;
                    let kid = jsonwebtoken::decode_header(&token).ok().and_then(|h| h.kid).unwrap_or_default();
                    let mut cache = self.jwt_cache.lock().unwrap_or_else(|p| p.into_inner());
                    if cache.len() >= JWT_CACHE_LIMIT {
                        cache.retain(|_, c| c.expires > now);
                        if cache.len() >= JWT_CACHE_LIMIT {
                            cache.clear();
                        }
                    }
                    cache.insert(key, CachedJwt { token: token.clone(), kid: kid.clone(), issued: now, expires });
                    (token, kid, expires)
                }
            };
            out.push(IssuedJwt {
                svid: JwtSvid { spiffe_id: entry.spiffe_id.clone(), token, expires_at: expires },
                kid,
            });
        }
        Ok(out)
    }

    fn bundles(&self) -> Arc<Bundles> {
        self.served().bundles.clone()
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}
