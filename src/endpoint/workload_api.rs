//! The `SpiffeWorkloadAPI` gRPC service, thin: check the request, run the caller pipeline, ask the
//! issuer, encode the answer. Streams are driven by [`super::stream`]; errors become statuses in
//! [`super::status`] only.

use super::convert::json_to_struct;
use super::status::ApiError;
use super::stream::{self, Entitlement};
use crate::bundle::FederatedBundle;
use crate::caller::Caller;
use crate::events::{Call, Event, IssuedSvid, Rpc, SvidKind};
use crate::pb;
use crate::pb::spiffe_workload_api_server::SpiffeWorkloadApi;
use crate::peer::PeerInfo;
use crate::registry::authz::{Resource, Verdict, What};
use crate::spiffe_id::{SpiffeId, TrustDomain};
use crate::svid::jwt;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub(crate) use super::context::Context;

#[derive(Clone)]
pub(crate) struct WorkloadService {
    ctx: Arc<Context>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl WorkloadService {
    pub(crate) fn new(ctx: Arc<Context>) -> Self {
        Self { ctx }
    }

    fn peer<T>(req: &Request<T>) -> Result<PeerInfo, ApiError> {
        req.extensions().get::<PeerInfo>().cloned().ok_or(crate::caller::CallerError::NoPeerCredentials.into())
    }

    async fn entitlement(&self, peer: &PeerInfo, rpc: Rpc) -> Result<Entitlement, ApiError> {
        Ok(Entitlement::of(&self.ctx, Caller::clone(&*self.ctx.pipeline.caller_reused(peer, rpc).await?)))
    }

    /// Open an entitlement stream: the first attestation happens before it opens, so a refused
    /// caller gets its status right away rather than an empty stream.
    async fn open_stream<T: Send + 'static>(
        &self,
        req_peer: Result<PeerInfo, ApiError>,
        rpc: Rpc,
        render: impl Fn(&Context, &Entitlement) -> stream::Rendered<T> + Send + Sync + 'static,
    ) -> Result<BoxStream<T>, Status> {
        let peer = req_peer?;
        let initial = self.entitlement(&peer, rpc).await?;
        Ok(stream::open(self.ctx.clone(), peer, rpc, initial, render))
    }

    // The streaming RPCs, from the caller and its request message: shared by the tonic service
    // below and by the streaming module, which serves these routes with its own response body.

    pub(crate) async fn x509_svid_stream(
        &self,
        peer: Result<PeerInfo, ApiError>,
        _req: pb::X509svidRequest,
    ) -> Result<BoxStream<pb::X509svidResponse>, Status> {
        let rpc = Rpc::of(Call::FetchX509Svid);
        self.open_stream(peer, rpc, move |ctx, s| x509_response(ctx, s, rpc)).await
    }

    pub(crate) async fn x509_bundles_stream(
        &self,
        peer: Result<PeerInfo, ApiError>,
        _req: pb::X509BundlesRequest,
    ) -> Result<BoxStream<pb::X509BundlesResponse>, Status> {
        self.open_stream(peer, Rpc::of(Call::FetchX509Bundles), x509_bundles).await
    }

    pub(crate) async fn jwt_bundles_stream(
        &self,
        peer: Result<PeerInfo, ApiError>,
        _req: pb::JwtBundlesRequest,
    ) -> Result<BoxStream<pb::JwtBundlesResponse>, Status> {
        self.open_stream(peer, Rpc::of(Call::FetchJwtBundles), jwt_bundles).await
    }

    pub(crate) async fn wit_svid_stream(
        &self,
        peer: Result<PeerInfo, ApiError>,
        req: pb::WitsvidRequest,
    ) -> Result<BoxStream<pb::WitsvidResponse>, Status> {
        let rpc = Rpc::of(Call::FetchWitSvid);
        let wanted = match req.spiffe_id.as_str() {
            "" => None,
            id => Some(
                id.parse::<SpiffeId>()
                    .map_err(|e| ApiError::BadRequest(format!("invalid requested SPIFFE ID: {e}")))?,
            ),
        };
        if let (Some(id), Ok(p)) = (&wanted, &peer) {
            // Refused at once when the caller is not entitled to the ID it asks for.
            let mut caller = Caller::clone(&*self.ctx.pipeline.caller_reused(p, rpc).await.map_err(ApiError::from)?);
            caller.narrow_to(id, rpc, &self.ctx.pipeline.events).map_err(ApiError::from)?;
        }
        let render = move |ctx: &Context, s: &Entitlement| wit_response(ctx, s, rpc, wanted.as_ref());
        self.open_stream(peer, rpc, render).await
    }

    pub(crate) async fn wit_bundles_stream(
        &self,
        peer: Result<PeerInfo, ApiError>,
        _req: pb::WitBundlesRequest,
    ) -> Result<BoxStream<pb::WitBundlesResponse>, Status> {
        self.open_stream(peer, Rpc::of(Call::FetchWitBundles), wit_bundles).await
    }
}

/// X.509-SVIDs for every entry, with bundles (hints unique within a response: the first entry keeps it).
fn x509_response(ctx: &Context, state: &Entitlement, rpc: Rpc) -> stream::Rendered<pb::X509svidResponse> {
    let mut caller = state.caller.clone();
    let verdict = caller.authorize(What::FetchX509, None, rpc, &ctx.pipeline.events)?;
    let caller = &caller;
    let out = ctx.issuer.x509_svids(caller, ctx.pipeline.clock.now())?;
    let bundle = out.bundles.x509.to_der();
    let mut hints = BTreeSet::new();
    let mut svids = Vec::with_capacity(out.svids.len());
    let mut issued = Vec::with_capacity(out.svids.len());
    for i in &out.svids {
        let svid = &i.svid;
        issued.push(IssuedSvid::X509 {
            spiffe_id: svid.spiffe_id.clone(),
            serial: svid.serial_hex.clone(),
            not_after: crate::clock::unix_secs(svid.not_after),
            reused_for_process: i.reused,
        });
        let hint = svid.hint.clone().filter(|h| hints.insert(h.clone())).unwrap_or_default();
        svids.push(pb::X509svid {
            spiffe_id: svid.spiffe_id.to_string(),
            x509_svid: svid.chain_der.clone(),
            x509_svid_key: svid.key_pkcs8().to_vec(),
            bundle: bundle.clone(),
            hint,
        });
    }
    let federated_bundles = state.federated.iter().map(|(td, b)| (td.id_string(), b.x509.to_der())).collect();
    ctx.pipeline.events.emit(issued_event(caller, rpc, SvidKind::X509, issued, None, verdict));
    Ok((pb::X509svidResponse { svids, crl: vec![], federated_bundles }, Some(out.refresh)))
}

fn x509_bundles(ctx: &Context, state: &Entitlement) -> stream::Rendered<pb::X509BundlesResponse> {
    let bundles =
        bundle_map(ctx.issuer.trust_domain(), state.bundles.x509.to_der(), &state.federated, |b| b.x509.to_der());
    Ok((pb::X509BundlesResponse { crl: vec![], bundles }, None))
}

/// A fresh WIT-SVID (and key) for every entry, or only `wanted`; renewed at half-life and on
/// every change of the entitlement, withdrawn with it.
fn wit_response(
    ctx: &Context,
    state: &Entitlement,
    rpc: Rpc,
    wanted: Option<&SpiffeId>,
) -> stream::Rendered<pb::WitsvidResponse> {
    let mut caller = state.caller.clone();
    caller.entries.retain(|e| wanted.is_none_or(|id| e.spiffe_id == *id));
    if let Some(id) = wanted
        && caller.entries.is_empty()
    {
        // The entry for the requested ID is gone (drift, reload): withdrawn.
        return Err(crate::caller::CallerError::NotEntitled(id.clone()).into());
    }
    // A WIT-SVID is the agent's own identity, as its X.509-SVID: decided as `fetch_x509`.
    let verdict = caller.authorize(What::FetchX509, None, rpc, &ctx.pipeline.events)?;
    let (minted, refresh) = ctx.issuer.wit_svids(&caller, ctx.pipeline.clock.now())?;
    let mut hints = BTreeSet::new();
    let mut svids = Vec::with_capacity(minted.len());
    let mut issued = Vec::with_capacity(minted.len());
    for (entry, w) in caller.entries.iter().zip(&minted) {
        issued.push(IssuedSvid::Wit {
            spiffe_id: w.spiffe_id.clone(),
            kid: w.kid.clone(),
            expires_at: crate::clock::unix_secs(w.expires_at),
        });
        let hint = entry.hint.clone().filter(|h| hints.insert(h.clone())).unwrap_or_default();
        svids.push(pb::Witsvid {
            spiffe_id: w.spiffe_id.to_string(),
            wit_svid: w.token.clone(),
            wit_svid_key: w.private_jwk().to_owned(),
            hint,
        });
    }
    ctx.pipeline.events.emit(issued_event(&caller, rpc, SvidKind::Wit, issued, None, verdict));
    Ok((pb::WitsvidResponse { svids }, Some(refresh)))
}

/// The local WIT keys (`use: wit-svid`). Federated bundles carry no WIT keys yet: partners'
/// bundle endpoints leave them out (spire-server 1.13 refuses bundles holding them).
fn wit_bundles(ctx: &Context, state: &Entitlement) -> stream::Rendered<pb::WitBundlesResponse> {
    let jwks = String::from_utf8(state.bundles.wit.to_jwks()).unwrap_or_default();
    let bundles = HashMap::from([(ctx.issuer.trust_domain().id_string(), jwks)]);
    Ok((pb::WitBundlesResponse { bundles }, None))
}

fn jwt_bundles(ctx: &Context, state: &Entitlement) -> stream::Rendered<pb::JwtBundlesResponse> {
    let bundles =
        bundle_map(ctx.issuer.trust_domain(), state.bundles.jwt.to_jwks(), &state.federated, |b| b.jwt.to_jwks());
    Ok((pb::JwtBundlesResponse { bundles }, None))
}

/// Bundles by trust domain ID, local first then federated, encoded for the wire.
fn bundle_map(
    local: &TrustDomain,
    local_bytes: Vec<u8>,
    federated: &BTreeMap<TrustDomain, Arc<FederatedBundle>>,
    encode: impl Fn(&FederatedBundle) -> Vec<u8>,
) -> HashMap<String, Vec<u8>> {
    let mut bundles = HashMap::new();
    bundles.insert(local.id_string(), local_bytes);
    for (td, b) in federated {
        bundles.insert(td.id_string(), encode(b));
    }
    bundles
}

/// The "issued" event for a caller: what was handed out and the evidence it was handed out on.
fn issued_event(
    caller: &Caller,
    rpc: Rpc,
    kind: SvidKind,
    issued: Vec<IssuedSvid>,
    audience: Option<&[String]>,
    policy: Option<Verdict>,
) -> Event {
    let selectors_matched: BTreeSet<String> =
        caller.entries.iter().flat_map(|e| e.selectors.iter().map(|s| s.to_string())).collect();
    Event::Issued {
        rpc,
        kind,
        pid: caller.attestation.pid,
        uid: caller.uid,
        attested_at: caller.attested_at,
        exe: caller.attestation.exe.clone(),
        selectors_matched: selectors_matched.into_iter().collect(),
        entries: caller.entries.iter().map(|e| e.spiffe_id.clone()).collect(),
        issued,
        audience: audience.map(<[String]>::to_vec),
        owners: crate::events::owners_of(&caller.entries),
        policy: policy.map(Box::new),
        process: Arc::new(crate::events::ProcessFacts {
            start_ticks: caller.attestation.starttime,
            selectors: crate::caller::selector_strings(&caller.attestation.selectors),
            script: caller
                .attestation
                .selectors
                .iter()
                .find(|s| s.kind() == tessera_attestors::Kind::Script && s.value().starts_with("path:"))
                .map(|s| s.value()["path:".len()..].to_owned()),
        }),
    }
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
        Ok(Response::new(self.x509_svid_stream(Self::peer(&req), req.into_inner()).await?))
    }

    async fn fetch_x509_bundles(
        &self,
        req: Request<pb::X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        Ok(Response::new(self.x509_bundles_stream(Self::peer(&req), req.into_inner()).await?))
    }

    async fn fetch_jwtsvid(&self, req: Request<pb::JwtsvidRequest>) -> Result<Response<pb::JwtsvidResponse>, Status> {
        let rpc = Rpc::of(Call::FetchJwtSvid);
        let peer = Self::peer(&req)?;
        let req = req.into_inner();
        if req.audience.is_empty() || req.audience.iter().any(String::is_empty) {
            return Err(ApiError::BadRequest("audience must be specified".into()).into());
        }
        check_audiences(&req.audience)?;
        let wanted = if req.spiffe_id.is_empty() {
            None
        } else {
            Some(
                req.spiffe_id
                    .parse::<SpiffeId>()
                    .map_err(|e| ApiError::BadRequest(format!("invalid requested SPIFFE ID: {e}")))?,
            )
        };
        let mut caller = Caller::clone(&*self.ctx.pipeline.caller_reused(&peer, rpc).await.map_err(ApiError::from)?);
        if let Some(id) = &wanted {
            caller.narrow_to(id, rpc, &self.ctx.pipeline.events).map_err(ApiError::from)?;
        }
        // Each audience is decided; an entry is kept only when every audience is permitted.
        let mut verdict: Option<Verdict> = None;
        for aud in &req.audience {
            let v = caller
                .authorize(What::FetchJwt, Some(Resource::Audience(aud)), rpc, &self.ctx.pipeline.events)
                .map_err(ApiError::from)?;
            verdict = match (verdict, v) {
                (Some(mut a), Some(b)) => {
                    a.merge(b);
                    Some(a)
                }
                (a, b) => a.or(b),
            };
        }
        let minted =
            self.ctx.issuer.jwt_svids(&caller, &req.audience, self.ctx.pipeline.clock.now()).map_err(ApiError::from)?;
        let mut svids = Vec::new();
        let mut issued = Vec::new();
        let mut hints = BTreeSet::new();
        for (entry, m) in caller.entries.iter().zip(minted) {
            issued.push(IssuedSvid::Jwt {
                spiffe_id: m.svid.spiffe_id.clone(),
                kid: m.kid,
                expires_at: crate::clock::unix_secs(m.svid.expires_at),
            });
            let hint = entry.hint.clone().filter(|h| hints.insert(h.clone())).unwrap_or_default();
            svids.push(pb::Jwtsvid { spiffe_id: m.svid.spiffe_id.to_string(), svid: m.svid.token, hint });
        }
        self.ctx.pipeline.events.emit(issued_event(&caller, rpc, SvidKind::Jwt, issued, Some(&req.audience), verdict));
        Ok(Response::new(pb::JwtsvidResponse { svids }))
    }

    async fn fetch_jwt_bundles(
        &self,
        req: Request<pb::JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        Ok(Response::new(self.jwt_bundles_stream(Self::peer(&req), req.into_inner()).await?))
    }

    async fn validate_jwtsvid(
        &self,
        req: Request<pb::ValidateJwtsvidRequest>,
    ) -> Result<Response<pb::ValidateJwtsvidResponse>, Status> {
        let peer = Self::peer(&req)?;
        let req = req.into_inner();
        if req.audience.is_empty() {
            return Err(ApiError::BadRequest("audience must be specified".into()).into());
        }
        check_audiences(std::slice::from_ref(&req.audience))?;
        if req.svid.is_empty() {
            return Err(ApiError::BadRequest("svid must be specified".into()).into());
        }
        // Validation needs no identity, but the caller must be attestable, and foreign tokens are
        // checked only against the bundles its own entries federate with (as FetchJWTBundles gives).
        let policy = self.ctx.pipeline.policy();
        let attestation = match self.ctx.pipeline.reused(&peer, &policy, Rpc::of(Call::ValidateJwtSvid)) {
            Some(caller) => caller.attestation.clone(),
            None => Arc::new(
                self.ctx
                    .pipeline
                    .attest(&peer, Rpc::of(Call::ValidateJwtSvid), &policy)
                    .await
                    .map_err(ApiError::from)?,
            ),
        };
        let entries: Vec<_> = policy.registry.matching(&attestation.selectors).into_iter().cloned().collect();
        let federated = policy.federated_for(&entries);
        let local_td = self.ctx.issuer.trust_domain().clone();
        let local = self.ctx.issuer.bundles().jwt.clone();
        let jwks_for = |td: &TrustDomain| {
            if *td == local_td { Some(local.clone()) } else { federated.get(td).map(|b| Arc::new(b.jwt.clone())) }
        };
        let validated = jwt::validate(&req.svid, &req.audience, jwks_for, self.ctx.pipeline.clock.now());
        let validated = validated.map_err(ApiError::from).and_then(|v| match policy.refuses_tokens_of(&v.spiffe_id) {
            // Revoked or retired identities: refused here at once (offline verifiers cannot know).
            Some(why) => Err(ApiError::InvalidJwt(jwt::JwtError::Revoked(why))),
            None => Ok(v),
        });
        self.ctx.pipeline.events.emit(Event::JwtValidated { valid: validated.is_ok() });
        let validated = validated?;
        Ok(Response::new(pb::ValidateJwtsvidResponse {
            spiffe_id: validated.spiffe_id.to_string(),
            claims: Some(json_to_struct(validated.claims)),
        }))
    }

    async fn fetch_witsvid(
        &self,
        req: Request<pb::WitsvidRequest>,
    ) -> Result<Response<Self::FetchWITSVIDStream>, Status> {
        Ok(Response::new(self.wit_svid_stream(Self::peer(&req), req.into_inner()).await?))
    }

    async fn fetch_wit_bundles(
        &self,
        req: Request<pb::WitBundlesRequest>,
    ) -> Result<Response<Self::FetchWITBundlesStream>, Status> {
        Ok(Response::new(self.wit_bundles_stream(Self::peer(&req), req.into_inner()).await?))
    }
}

/// The security header every Workload API request must carry (anti-SSRF); else InvalidArgument.
pub(crate) fn require_security_header(req: Request<()>) -> Result<Request<()>, Status> {
    match req.metadata().get("workload.spiffe.io") {
        Some(v) if v.as_bytes() == b"true" => Ok(req),
        _ => Err(ApiError::MissingSecurityHeader.into()),
    }
}

/// Audiences a JWT-SVID request may name, and how long each may be. Every audience travels into
/// the token and the audit line: without bounds, a 3.9 MB audience list became a 3.9 MB audit
/// line per call.
const MAX_AUDIENCES: usize = 32;
const MAX_AUDIENCE_LEN: usize = 1024;

fn check_audiences(audience: &[String]) -> Result<(), ApiError> {
    if audience.len() > MAX_AUDIENCES {
        return Err(ApiError::BadRequest(format!(
            "{} audiences requested; at most {MAX_AUDIENCES} are allowed",
            audience.len()
        )));
    }
    if let Some(long) = audience.iter().find(|a| a.len() > MAX_AUDIENCE_LEN) {
        return Err(ApiError::BadRequest(format!(
            "an audience of {} bytes was requested; at most {MAX_AUDIENCE_LEN} bytes are allowed",
            long.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
