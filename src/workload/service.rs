//! The `SpiffeWorkloadAPI` gRPC service. Each call: peer → attestation → matching entries → SVIDs.
//! Streams carry the full state in every message and are re-evaluated on rotation, on config
//! reload, on bundle change and on a re-attestation interval; a workload that stops matching any
//! entry gets `PermissionDenied` and its stream ends.

use super::peer::PeerInfo;
use crate::audit::Audit;
use crate::ca::Ca;
use crate::entry::{Entry, Registry};
use crate::pb;
use crate::pb::spiffe_workload_api_server::SpiffeWorkloadApi;
use crate::spiffe_id::{SpiffeId, TrustDomain};
use crate::svid::{jwt, x509};
use crate::watch::Owner;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tessera_attestors::{Attestation, Attestor, ProcessHandle, Selector};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// What a reload can change, swapped as a whole.
#[derive(Debug, Default)]
pub struct Policy {
    pub registry: Registry,
    pub jwt_issuer: Option<String>,
    /// Federated trust domains: X.509 bundle (concatenated DER) and JWKS.
    pub federated: BTreeMap<TrustDomain, FederatedBundle>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederatedBundle {
    pub x509_der: Vec<u8>,
    pub jwks: Vec<u8>,
}

/// An SVID already handed out on a connection, reusable until its renewal time.
pub struct CachedSvid {
    entry: Arc<Entry>,
    signer: Arc<crate::ca::X509Authority>,
    svid: Arc<x509::X509Svid>,
    refresh: SystemTime,
}

/// SVIDs by ((pid, start time), SPIFFE ID).
pub type SvidCache = HashMap<((i32, u64), SpiffeId), CachedSvid>;

/// Per-process SVIDs kept at most; past this, those due for renewal are dropped (then all).
const SVID_CACHE_LIMIT: usize = 16_384;

/// Everything the service needs, shared by all calls.
pub struct Shared {
    pub trust_domain: TrustDomain,
    pub ca: Arc<Ca>,
    pub attestor: Arc<Attestor>,
    pub policy: watch::Receiver<Arc<Policy>>,
    /// Bumped whenever the CA's bundle changes (rotation).
    pub ca_generation: watch::Receiver<u64>,
    pub audit: Audit,
    /// Wakes streams when a file their attestation read changes.
    pub files: Arc<crate::watch::FileWatcher>,
    /// Attestations running at once (each may hash files on a blocking thread).
    pub attest_slots: tokio::sync::Semaphore,
    /// SVIDs handed out per ((pid, start time), SPIFFE ID); see `svid_for`.
    pub svid_cache: std::sync::Mutex<SvidCache>,
    /// Streams are re-attested at least this often (drift detection).
    pub reattest_interval: Duration,
    pub shutdown: watch::Receiver<bool>,
}

#[derive(Clone)]
pub struct WorkloadService {
    shared: Arc<Shared>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The caller as attested, plus the entries it matched.
struct Caller {
    attestation: Attestation,
    uid: u32,
    /// Shared with the registry: a stream holds pointers, not copies.
    entries: Vec<Arc<Entry>>,
}

impl WorkloadService {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn peer<T>(req: &Request<T>) -> Result<PeerInfo, Status> {
        req.extensions()
            .get::<PeerInfo>()
            .cloned()
            .ok_or_else(|| Status::unavailable("workload attestation failed: peer credentials unavailable"))
    }

    /// Attest the peer. Failure → Unavailable (as SPIRE does: the client retries), audited.
    async fn attest(&self, peer: &PeerInfo, rpc: &str) -> Result<Attestation, Status> {
        // Bounded concurrency: one user opening hundreds of connections to slow binaries must not
        // take every blocking thread, and so every other workload's attestation, with it.
        let _permit = self.shared.attest_slots.acquire().await.map_err(|_| Status::unavailable("shutting down"))?;
        let attestor = self.shared.attestor.clone();
        let creds = peer.credentials();
        let result = tokio::task::spawn_blocking(move || {
            let handle = ProcessHandle::from_peer(creds)?;
            attestor.attest(&handle)
        })
        .await
        .map_err(|e| Status::internal(format!("attestation task failed: {e}")))?;
        result.map_err(|e| {
            self.shared.audit.record(
                "refused",
                json!({ "rpc": rpc, "pid": peer.pid, "uid": peer.uid, "reason": format!("attestation failed: {e}") }),
            );
            tracing::info!(rpc, pid = ?peer.pid, uid = peer.uid, error = %e, "workload attestation failed");
            Status::unavailable(format!("workload attestation failed: {e}"))
        })
    }

    /// The entries an attested workload matches; none → PermissionDenied, audited.
    fn entitle(&self, attestation: Attestation, peer: &PeerInfo, rpc: &str) -> Result<Caller, Status> {
        let uid = peer.uid;
        let policy = self.shared.policy.borrow().clone();
        let entries: Vec<Arc<Entry>> = policy.registry.matching(&attestation.selectors).into_iter().cloned().collect();
        if entries.is_empty() {
            self.shared.audit.record(
                "refused",
                json!({
                    "rpc": rpc,
                    "pid": attestation.pid,
                    "uid": uid,
                    "exe": exe_evidence(&attestation.selectors),
                    "selectors": selector_strings(&attestation.selectors),
                    "reason": "no registration entry matches the workload's selectors",
                }),
            );
            tracing::info!(rpc, pid = attestation.pid, uid, "no identity issued: no entry matches");
            return Err(Status::permission_denied("no identity issued"));
        }
        // Streams keep this for drift comparison; the per-attestor detail was audited already.
        let mut attestation = attestation;
        attestation.reports = Vec::new();
        Ok(Caller { attestation, uid, entries })
    }

    /// Attest a caller at the start of an RPC (audited with its evidence) and find its entries.
    async fn caller(&self, peer: &PeerInfo, rpc: &str) -> Result<Caller, Status> {
        let attestation = self.attest(peer, rpc).await?;
        self.shared.audit.record(
            "attested",
            json!({
                "rpc": rpc,
                "pid": attestation.pid,
                "uid": peer.uid,
                "pinned_by": if peer.pidfd_from_kernel { "SO_PEERPIDFD" } else { "pidfd_open at accept" },
                "exe": exe_evidence(&attestation.selectors),
                "selectors": selector_strings(&attestation.selectors),
                "failed_attestors": attestation.reports.iter().filter_map(|r| r.error.as_ref().map(|e| json!({ "attestor": r.attestor, "reason": e }))).collect::<Vec<_>>(),
            }),
        );
        self.entitle(attestation, peer, rpc)
    }

    /// Federated bundles the caller's entries ask for (`federates_with`).
    fn federated_for(&self, entries: &[Arc<Entry>], policy: &Policy) -> BTreeMap<TrustDomain, FederatedBundle> {
        entries
            .iter()
            .flat_map(|e| e.federates_with.iter())
            .filter_map(|td| policy.federated.get(td).map(|b| (td.clone(), b.clone())))
            .collect()
    }

    fn x509_response(&self, caller: &Caller, rpc: &str) -> Result<(pb::X509svidResponse, SystemTime), Status> {
        let now = SystemTime::now();
        let auth = self.shared.ca.authorities();
        let signer = auth.x509_signer(now).ok_or_else(|| Status::unavailable("no active X.509 authority"))?;
        let bundle = auth.x509_bundle_der();
        let mut svids = Vec::with_capacity(caller.entries.len());
        let mut issued = Vec::new();
        let mut hints = BTreeSet::new();
        let mut refresh = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::MAX / 4);
        for entry in &caller.entries {
            let process = (caller.attestation.pid, caller.attestation.starttime);
            let (svid, svid_refresh, reused) = self.svid_for(process, entry, signer, now)?;
            refresh = refresh.min(svid_refresh);
            issued.push(json!({
                "spiffe_id": svid.spiffe_id,
                "serial": svid.serial_hex,
                "not_after": unix_secs(svid.not_after),
                "reused_for_process": reused,
            }));
            // Hints must be unique within a response: the first entry keeps it.
            let hint = svid.hint.clone().filter(|h| hints.insert(h.clone())).unwrap_or_default();
            svids.push(pb::X509svid {
                spiffe_id: svid.spiffe_id.clone(),
                x509_svid: svid.chain_der.clone(),
                x509_svid_key: svid.key_pkcs8.to_vec(),
                bundle: bundle.clone(),
                hint,
            });
        }
        let policy = self.shared.policy.borrow().clone();
        let federated_bundles = self
            .federated_for(&caller.entries, &policy)
            .into_iter()
            .map(|(td, b)| (td.id_string(), b.x509_der))
            .collect();
        self.audit_issue(caller, rpc, "x509_svid", issued, None);
        Ok((pb::X509svidResponse { svids, crl: vec![], federated_bundles }, refresh))
    }

    /// The SVID for `entry` for this process: the one already handed to it if not yet due for
    /// renewal (same entry, same signing authority), else a freshly minted one. A client that
    /// fetches and then opens a stream (as the SDKs' X.509 sources do) sees one SVID, not two, as
    /// it would from SPIRE's cache — but unlike SPIRE's per-entry cache, never one shared by two
    /// processes.
    fn svid_for(
        &self,
        process: (i32, u64),
        entry: &Arc<Entry>,
        signer: &Arc<crate::ca::X509Authority>,
        now: SystemTime,
    ) -> Result<(Arc<x509::X509Svid>, SystemTime, bool), Status> {
        let key = (process, entry.spiffe_id.clone());
        let mut cache = self.shared.svid_cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.get(&key)
            && now < c.refresh
            && Arc::ptr_eq(&c.entry, entry)
            && Arc::ptr_eq(&c.signer, signer)
        {
            return Ok((c.svid.clone(), c.refresh, true));
        }
        let svid =
            Arc::new(x509::mint(entry, signer, now).map_err(|e| Status::internal(format!("minting failed: {e}")))?);
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

    fn audit_issue(
        &self,
        caller: &Caller,
        rpc: &str,
        kind: &str,
        issued: Vec<serde_json::Value>,
        audience: Option<&[String]>,
    ) {
        let matched: Vec<String> = caller.entries.iter().map(|e| e.spiffe_id.to_string()).collect();
        let mattered: BTreeSet<String> =
            caller.entries.iter().flat_map(|e| e.selectors.iter().map(|s| s.to_string())).collect();
        let mut fields = json!({
            "rpc": rpc,
            "kind": kind,
            "pid": caller.attestation.pid,
            "uid": caller.uid,
            "exe": exe_evidence(&caller.attestation.selectors),
            "selectors_matched": mattered,
            "entries": matched,
            "issued": issued,
        });
        if let Some(aud) = audience {
            fields["audience"] = json!(aud);
        }
        self.shared.audit.record("issued", fields);
    }

    fn x509_bundles(&self, federated: &BTreeMap<TrustDomain, FederatedBundle>) -> pb::X509BundlesResponse {
        let auth = self.shared.ca.authorities();
        let mut bundles: HashMap<String, Vec<u8>> = HashMap::new();
        bundles.insert(self.shared.trust_domain.id_string(), auth.x509_bundle_der());
        for (td, b) in federated {
            bundles.insert(td.id_string(), b.x509_der.clone());
        }
        pb::X509BundlesResponse { crl: vec![], bundles }
    }

    fn jwt_bundles(&self, federated: &BTreeMap<TrustDomain, FederatedBundle>) -> pb::JwtBundlesResponse {
        let auth = self.shared.ca.authorities();
        let mut bundles: HashMap<String, Vec<u8>> = HashMap::new();
        bundles.insert(self.shared.trust_domain.id_string(), crate::bundle::local_jwks(&auth));
        for (td, b) in federated {
            bundles.insert(td.id_string(), b.jwks.clone());
        }
        pb::JwtBundlesResponse { bundles }
    }

    /// Drive a stream. `evaluate` re-attests and says what the caller is entitled to (cheap, no
    /// signing); `render` turns that into a message. A message is sent first at once, then again
    /// only when the entitlement changed or a refresh (rotation) came due. Wakes on rotation time,
    /// policy reload, CA bundle change, a change of a file the attestation read, and the
    /// re-attestation interval. Drift (changed selectors) is audited.
    fn spawn_stream<T, R>(
        &self,
        peer: PeerInfo,
        rpc: &'static str,
        initial: Entitlement,
        render: R,
    ) -> mpsc::Receiver<Result<T, Status>>
    where
        T: Send + 'static,
        R: Fn(&WorkloadService, &Entitlement) -> Result<(T, Option<SystemTime>), Status> + Send + Sync + 'static,
    {
        let (tx, rx) = mpsc::channel(2);
        let svc = self.clone();
        tokio::spawn(async move {
            let mut policy = svc.shared.policy.clone();
            let mut ca_gen = svc.shared.ca_generation.clone();
            let mut shutdown = svc.shared.shutdown.clone();
            policy.mark_unchanged();
            ca_gen.mark_unchanged();
            let files_changed = Arc::new(tokio::sync::Notify::new());
            let mut state = initial;
            let watched = &state.caller.attestation.watched_files;
            let mut _files_sub = svc.shared.files.subscribe(Owner::Uid(peer.uid), watched, &files_changed);
            let mut must_send = true;
            let mut refresh_at: Option<SystemTime> = None;
            loop {
                if must_send {
                    match render(&svc, &state) {
                        Ok((msg, refresh)) => {
                            refresh_at = refresh;
                            if tx.send(Ok(msg)).await.is_err() {
                                return;
                            }
                        }
                        Err(status) => {
                            let _ = tx.send(Err(status)).await;
                            return;
                        }
                    }
                }
                let sleep_for = refresh_at
                    .map(|t| t.duration_since(SystemTime::now()).unwrap_or_default())
                    .unwrap_or(svc.shared.reattest_interval)
                    .min(svc.shared.reattest_interval);
                tokio::select! {
                    _ = tokio::time::sleep(sleep_for) => {}
                    r = policy.changed() => if r.is_err() { return },
                    r = ca_gen.changed() => if r.is_err() { return },
                    _ = files_changed.notified() => {}
                    _ = tx.closed() => return,
                    _ = shutdown.changed() => return,
                }
                let next = match svc.attest(&peer, rpc).await {
                    Ok(attestation) => {
                        svc.audit_drift(rpc, &state, &attestation);
                        if attestation.watched_files != state.caller.attestation.watched_files {
                            _files_sub = svc.shared.files.subscribe(
                                Owner::Uid(peer.uid),
                                &attestation.watched_files,
                                &files_changed,
                            );
                        }
                        svc.entitle(attestation, &peer, rpc).map(|caller| svc.entitlement_of(caller))
                    }
                    Err(status) => Err(status),
                };
                match next {
                    Ok(next) => {
                        let due = refresh_at.is_some_and(|t| t <= SystemTime::now());
                        must_send = due || next != state;
                        state = next;
                    }
                    Err(status) => {
                        if status.code() == tonic::Code::PermissionDenied {
                            svc.shared.audit.record(
                                "withdrawn",
                                json!({ "rpc": rpc, "pid": state.caller.attestation.pid, "uid": state.caller.uid,
                                        "had": state.caller.entries.iter().map(|e| e.spiffe_id.to_string()).collect::<Vec<_>>(),
                                        "reason": status.message() }),
                            );
                        }
                        tracing::info!(rpc, pid = ?peer.pid, code = ?status.code(), "stream ended: {}", status.message());
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        rx
    }

    /// Record a change in what a streaming workload looks like (new binary, edited script or
    /// prompt, changed cgroup), with the old and new selectors that differ.
    fn audit_drift(&self, rpc: &str, old: &Entitlement, new: &Attestation) {
        let (a, b) = (&old.caller.attestation.selectors, &new.selectors);
        if a == b {
            return;
        }
        let removed: Vec<String> = a.difference(b).map(|s| s.to_string()).collect();
        let added: Vec<String> = b.difference(a).map(|s| s.to_string()).collect();
        tracing::info!(rpc, pid = new.pid, ?removed, ?added, "workload drifted");
        self.shared.audit.record(
            "drift",
            json!({
                "rpc": rpc,
                "pid": new.pid,
                "uid": old.caller.uid,
                "old": removed,
                "new": added,
                "entries_before": old.caller.entries.iter().map(|e| e.spiffe_id.to_string()).collect::<Vec<_>>(),
            }),
        );
    }
}

/// What a caller is entitled to on a stream; equal states need no new message.
struct Entitlement {
    caller: Caller,
    /// The CA snapshot the bundles came from; a rotation replaces it.
    authorities: Arc<crate::ca::Authorities>,
    federated: BTreeMap<TrustDomain, FederatedBundle>,
}

impl PartialEq for Entitlement {
    fn eq(&self, other: &Self) -> bool {
        self.caller.entries == other.caller.entries
            && Arc::ptr_eq(&self.authorities, &other.authorities)
            && self.federated == other.federated
    }
}

impl WorkloadService {
    async fn entitlement(&self, peer: &PeerInfo, rpc: &str) -> Result<Entitlement, Status> {
        Ok(self.entitlement_of(self.caller(peer, rpc).await?))
    }

    fn entitlement_of(&self, caller: Caller) -> Entitlement {
        let policy = self.shared.policy.borrow().clone();
        let federated = self.federated_for(&caller.entries, &policy);
        Entitlement { caller, authorities: self.shared.ca.authorities(), federated }
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
    issued + half.max(Duration::from_millis(500)) - jitter
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn selector_strings(s: &BTreeSet<Selector>) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

/// The executable path and digest, for the audit line.
fn exe_evidence(s: &BTreeSet<Selector>) -> serde_json::Value {
    let find = |prefix: &str| {
        s.iter()
            .find(|sel| sel.kind() == "unix" && sel.value().starts_with(prefix))
            .map(|sel| sel.value()[prefix.len()..].to_owned())
    };
    json!({ "path": find("path:"), "sha256": find("sha256:") })
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadService {
    type FetchX509SVIDStream = BoxStream<pb::X509svidResponse>;
    type FetchX509BundlesStream = BoxStream<pb::X509BundlesResponse>;
    type FetchJWTBundlesStream = BoxStream<pb::JwtBundlesResponse>;
    type FetchWITSVIDStream = BoxStream<pb::WitsvidResponse>;
    type FetchWITBundlesStream = BoxStream<pb::WitBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        req: Request<pb::X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let peer = Self::peer(&req)?;
        // The first attestation happens before the stream opens, so a refused caller gets its
        // status right away rather than an empty stream.
        let initial = self.entitlement(&peer, "FetchX509SVID").await?;
        let rx = self.spawn_stream(peer, "FetchX509SVID", initial, |svc, state| {
            let (msg, refresh) = svc.x509_response(&state.caller, "FetchX509SVID")?;
            Ok((msg, Some(refresh)))
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn fetch_x509_bundles(
        &self,
        req: Request<pb::X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let peer = Self::peer(&req)?;
        let initial = self.entitlement(&peer, "FetchX509Bundles").await?;
        let rx = self.spawn_stream(peer, "FetchX509Bundles", initial, |svc, state| {
            Ok((svc.x509_bundles(&state.federated), None))
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn fetch_jwtsvid(&self, req: Request<pb::JwtsvidRequest>) -> Result<Response<pb::JwtsvidResponse>, Status> {
        let peer = Self::peer(&req)?;
        let req = req.into_inner();
        if req.audience.is_empty() || req.audience.iter().any(String::is_empty) {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        let wanted = if req.spiffe_id.is_empty() {
            None
        } else {
            Some(
                req.spiffe_id
                    .parse::<SpiffeId>()
                    .map_err(|e| Status::invalid_argument(format!("invalid requested SPIFFE ID: {e}")))?,
            )
        };
        let mut caller = self.caller(&peer, "FetchJWTSVID").await?;
        if let Some(id) = &wanted {
            caller.entries.retain(|e| &e.spiffe_id == id);
            if caller.entries.is_empty() {
                self.shared.audit.record(
                    "refused",
                    json!({ "rpc": "FetchJWTSVID", "pid": caller.attestation.pid, "uid": caller.uid,
                            "reason": format!("workload is not entitled to {id}") }),
                );
                return Err(Status::permission_denied(format!("no identity issued for {id}")));
            }
        }
        let now = SystemTime::now();
        let auth = self.shared.ca.authorities();
        let key = auth.jwt_signer(now).ok_or_else(|| Status::unavailable("no active JWT signing key"))?;
        let issuer = self.shared.policy.borrow().jwt_issuer.clone();
        let mut svids = Vec::new();
        let mut issued = Vec::new();
        let mut hints = BTreeSet::new();
        for entry in &caller.entries {
            let t = jwt::mint(&entry.spiffe_id, &req.audience, entry.jwt_svid_ttl, issuer.as_deref(), key, now)
                .map_err(|e| Status::unavailable(format!("could not mint JWT-SVID: {e}")))?;
            issued.push(json!({ "spiffe_id": t.spiffe_id, "kid": key.kid, "expires_at": unix_secs(t.expires_at) }));
            let hint = entry.hint.clone().filter(|h| hints.insert(h.clone())).unwrap_or_default();
            svids.push(pb::Jwtsvid { spiffe_id: t.spiffe_id, svid: t.token, hint });
        }
        self.audit_issue(&caller, "FetchJWTSVID", "jwt_svid", issued, Some(&req.audience));
        Ok(Response::new(pb::JwtsvidResponse { svids }))
    }

    async fn fetch_jwt_bundles(
        &self,
        req: Request<pb::JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        let peer = Self::peer(&req)?;
        let initial = self.entitlement(&peer, "FetchJWTBundles").await?;
        let rx = self
            .spawn_stream(peer, "FetchJWTBundles", initial, |svc, state| Ok((svc.jwt_bundles(&state.federated), None)));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn validate_jwtsvid(
        &self,
        req: Request<pb::ValidateJwtsvidRequest>,
    ) -> Result<Response<pb::ValidateJwtsvidResponse>, Status> {
        let peer = Self::peer(&req)?;
        let req = req.into_inner();
        if req.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if req.svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        // Validation needs no identity, but the caller must be attestable, and foreign tokens are
        // checked only against the bundles its own entries federate with (as FetchJWTBundles gives).
        let attestation = self.attest(&peer, "ValidateJWTSVID").await?;
        let policy = self.shared.policy.borrow().clone();
        let entries: Vec<Arc<Entry>> = policy.registry.matching(&attestation.selectors).into_iter().cloned().collect();
        let federated = self.federated_for(&entries, &policy);
        let auth = self.shared.ca.authorities();
        let local = self.shared.trust_domain.clone();
        let validated = jwt::validate(&req.svid, &req.audience, |td| {
            if *td == local {
                Some(crate::bundle::local_jwks(&auth))
            } else {
                federated.get(td).map(|b| b.jwks.clone())
            }
        })
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(pb::ValidateJwtsvidResponse {
            spiffe_id: validated.spiffe_id.to_string(),
            claims: Some(json_to_struct(validated.claims)),
        }))
    }

    async fn fetch_witsvid(
        &self,
        _req: Request<pb::WitsvidRequest>,
    ) -> Result<Response<Self::FetchWITSVIDStream>, Status> {
        Err(Status::unimplemented("WIT-SVIDs are not supported"))
    }

    async fn fetch_wit_bundles(
        &self,
        _req: Request<pb::WitBundlesRequest>,
    ) -> Result<Response<Self::FetchWITBundlesStream>, Status> {
        Err(Status::unimplemented("WIT-SVIDs are not supported"))
    }
}

/// The security header every Workload API request must carry (anti-SSRF); else InvalidArgument.
pub fn require_security_header(req: Request<()>) -> Result<Request<()>, Status> {
    match req.metadata().get("workload.spiffe.io") {
        Some(v) if v.as_bytes() == b"true" => Ok(req),
        _ => Err(Status::invalid_argument("security header missing from request")),
    }
}

fn json_to_struct(map: serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct { fields: map.into_iter().map(|(k, v)| (k, json_to_value(v))).collect() }
}

fn json_to_value(v: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(a) => {
            Kind::ListValue(prost_types::ListValue { values: a.into_iter().map(json_to_value).collect() })
        }
        serde_json::Value::Object(m) => Kind::StructValue(json_to_struct(m)),
    };
    prost_types::Value { kind: Some(kind) }
}
