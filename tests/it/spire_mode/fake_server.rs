//! An in-process SPIRE Server for `cargo test`: the same protos, TLS with a test CA, and the
//! server rules tessera must cope with: single-use join tokens, serial activation after
//! RenewAgent (the old SVID stops working once the new one is used: AGENT_NOT_ACTIVE), bans
//! (AGENT_BANNED), per-item errors in BatchNewX509SVID, PermissionDenied details.
#![allow(dead_code, unreachable_pub, reason = "a test helper module: pub for the `spire_mode` tests that use it")]

use crate::common::TD;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tessera::testing::denied;
use tessera::testing::spire_pb::{agent, bundle, entry, svid, types};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::{Request, Response, Status};
use types::permission_denied_details::Reason;

#[derive(Default)]
pub struct AgentRec {
    pub active_serial: String,
    pub pending_serial: Option<String>,
    pub banned: bool,
}

#[derive(Default)]
pub struct State {
    pub tokens: HashSet<String>,
    pub agents: HashMap<String, AgentRec>,
    pub entries: Vec<types::Entry>,
    /// BatchNewX509SVID answers a per-item error for these entry IDs.
    pub refuse: HashSet<String>,
    /// BatchNewX509SVID signs these entry IDs for another SPIFFE ID (a lying or broken server).
    pub lie: HashSet<String>,
    /// BatchNewX509SVID signs these entry IDs with a CA outside the bundle (a chain that does not verify).
    pub foreign_ca: HashSet<String>,
    /// SyncAuthorizedEntries answers Unimplemented (an older server): GetAuthorizedEntries must be used.
    pub sync_unimplemented: bool,
    /// Entries per SyncAuthorizedEntries page (0: the server's 500).
    pub page_size: usize,
    pub attest_calls: usize,
    pub renew_calls: usize,
    pub not_active_denials: usize,
    pub activations: usize,
    pub batch_params: usize,
    pub batch_calls: usize,
    /// The largest BatchNewX509SVID call seen.
    pub largest_batch: usize,
    pub sync_calls: usize,
    /// Entry IDs the client asked for by ID (stale or unknown to it) in SyncAuthorizedEntries.
    pub ids_requested: usize,
    pub get_authorized_calls: usize,
    /// Every NewJWTSVID call: (entry ID, audiences).
    pub jwt_calls: Vec<(String, Vec<String>)>,
}

pub struct FakeServer {
    pub state: Arc<Mutex<State>>,
    pub port: u16,
    pub ca_der: Vec<u8>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
    }
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// A CA that is in no bundle (for chains that must not verify).
    stranger: Issuer<'static, KeyPair>,
    agent_ttl: Duration,
    svid_ttl: Duration,
    /// The JWT signing key (ES256) and its kid; its public key is in the bundle.
    jwt_key: KeyPair,
}

const JWT_KID: &str = "fake-jwt-key-1";
const JWT_TTL: Duration = Duration::from_secs(60);

fn stranger_ca() -> Issuer<'static, KeyPair> {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, "a CA nobody trusts");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = p.self_signed(&key).unwrap();
    Issuer::from_ca_cert_der(cert.der(), key).unwrap()
}

impl Ca {
    fn sign(&self, csr: &[u8], id: &str, ttl: Duration, server: bool) -> Result<Vec<u8>, Status> {
        self.sign_with(&self.issuer, csr, id, ttl, server)
    }

    fn sign_with(
        &self,
        issuer: &Issuer<'static, KeyPair>,
        csr: &[u8],
        id: &str,
        ttl: Duration,
        server: bool,
    ) -> Result<Vec<u8>, Status> {
        let mut req = CertificateSigningRequestParams::from_der(&csr.to_vec().into())
            .map_err(|e| Status::invalid_argument(format!("bad CSR: {e}")))?;
        let mut p = CertificateParams::default();
        p.subject_alt_names = vec![SanType::URI(id.try_into().map_err(|_| Status::internal("uri"))?)];
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = if server {
            vec![ExtendedKeyUsagePurpose::ServerAuth]
        } else {
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
        };
        let now = SystemTime::now();
        p.not_before = (now - Duration::from_secs(5)).into();
        p.not_after = (now + ttl).into();
        let mut serial = [0u8; 16];
        rand::Rng::fill(&mut rand::rng(), &mut serial[..]);
        serial[0] &= 0x7f;
        p.serial_number = Some(serial.to_vec().into());
        req.params = p;
        Ok(req.signed_by(issuer).map_err(|e| Status::internal(e.to_string()))?.der().to_vec())
    }
}

fn td_id(path: &str) -> String {
    format!("spiffe://{TD}{path}")
}

fn leaf_facts(der: &[u8]) -> (String, String) {
    let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
    let id = tessera::testing::uri_sans(der).unwrap().into_iter().next().unwrap_or_default();
    (id, c.raw_serial().iter().map(|b| format!("{b:02x}")).collect())
}

fn x509svid(der: Vec<u8>, id: &str, ttl: Duration) -> types::X509svid {
    let expires = SystemTime::now() + ttl;
    types::X509svid {
        cert_chain: vec![der],
        id: Some(types::Spiffeid { trust_domain: TD.into(), path: id.trim_start_matches(&td_id("")).into() }),
        expires_at: expires.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64,
        hint: String::new(),
    }
}

#[derive(Clone)]
struct PeerChain(Vec<Vec<u8>>);

#[derive(Clone)]
struct Svc {
    state: Arc<Mutex<State>>,
    ca: Arc<Ca>,
    ca_der: Arc<Vec<u8>>,
}

impl Svc {
    /// The calling agent, by the rules of the server's authorization middleware.
    fn agent<T>(&self, req: &Request<T>) -> Result<String, Status> {
        let chain = req.extensions().get::<PeerChain>().map(|c| c.0.clone()).unwrap_or_default();
        let Some(leaf) = chain.first() else { return Err(Status::unauthenticated("no client certificate")) };
        let (id, serial) = leaf_facts(leaf);
        let mut st = self.state.lock().unwrap();
        let Some(rec) = st.agents.get_mut(&id) else {
            return Err(denied("agent is not attested", Reason::AgentNotAttested));
        };
        if rec.banned {
            return Err(denied("agent is banned", Reason::AgentBanned));
        }
        if rec.active_serial == serial {
            return Ok(id);
        }
        if rec.pending_serial.as_deref() == Some(&serial) {
            rec.active_serial = serial;
            rec.pending_serial = None;
            st.activations += 1;
            return Ok(id);
        }
        st.not_active_denials += 1;
        Err(denied("agent is not active", Reason::AgentNotActive))
    }

    fn bundle(&self) -> types::Bundle {
        types::Bundle {
            trust_domain: TD.into(),
            x509_authorities: vec![types::X509Certificate { asn1: self.ca_der.to_vec(), tainted: false }],
            jwt_authorities: vec![types::JwtKey {
                public_key: rcgen::PublicKeyData::subject_public_key_info(&self.ca.jwt_key),
                key_id: JWT_KID.into(),
                expires_at: 0,
                tainted: false,
            }],
            refresh_hint: 0,
            sequence_number: 1,
        }
    }
}

type Stream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl agent::agent_server::Agent for Svc {
    async fn attest_agent(
        &self,
        req: Request<tonic::Streaming<agent::AttestAgentRequest>>,
    ) -> Result<Response<Stream<agent::AttestAgentResponse>>, Status> {
        let mut stream = req.into_inner();
        let first = stream.message().await?.ok_or_else(|| Status::invalid_argument("no params"))?;
        let Some(agent::attest_agent_request::Step::Params(p)) = first.step else {
            return Err(Status::invalid_argument("missing params"));
        };
        let data = p.data.ok_or_else(|| Status::invalid_argument("missing data"))?;
        let csr = p.params.ok_or_else(|| Status::invalid_argument("missing csr"))?.csr;
        let token = String::from_utf8_lossy(&data.payload).into_owned();
        {
            let mut st = self.state.lock().unwrap();
            st.attest_calls += 1;
            // Deleted before anything else is checked: single use even when refused.
            if data.r#type != "join_token" || !st.tokens.remove(&token) {
                return Err(Status::invalid_argument(
                    "failed to attest: join token does not exist or has already been used",
                ));
            }
        }
        let id = td_id(&format!("/spire/agent/join_token/{token}"));
        let der = self.ca.sign(&csr, &id, self.ca.agent_ttl, false)?;
        let (_, serial) = leaf_facts(&der);
        self.state.lock().unwrap().agents.insert(id.clone(), AgentRec { active_serial: serial, ..Default::default() });
        let result = agent::AttestAgentResponse {
            step: Some(agent::attest_agent_response::Step::Result(agent::attest_agent_response::Result {
                svid: Some(x509svid(der, &id, self.ca.agent_ttl)),
                reattestable: false,
            })),
        };
        Ok(Response::new(Box::pin(tokio_stream::iter([Ok(result)]))))
    }

    async fn renew_agent(
        &self,
        req: Request<agent::RenewAgentRequest>,
    ) -> Result<Response<agent::RenewAgentResponse>, Status> {
        let id = self.agent(&req)?;
        let csr = req.into_inner().params.ok_or_else(|| Status::invalid_argument("missing params"))?.csr;
        let der = self.ca.sign(&csr, &id, self.ca.agent_ttl, false)?;
        let (_, serial) = leaf_facts(&der);
        let mut st = self.state.lock().unwrap();
        st.renew_calls += 1;
        if let Some(rec) = st.agents.get_mut(&id) {
            rec.pending_serial = Some(serial);
        }
        Ok(Response::new(agent::RenewAgentResponse { svid: Some(x509svid(der, &id, self.ca.agent_ttl)) }))
    }
}

#[tonic::async_trait]
impl bundle::bundle_server::Bundle for Svc {
    async fn get_bundle(&self, _: Request<bundle::GetBundleRequest>) -> Result<Response<types::Bundle>, Status> {
        Ok(Response::new(self.bundle()))
    }
}

#[tonic::async_trait]
impl entry::entry_server::Entry for Svc {
    async fn sync_authorized_entries(
        &self,
        req: Request<tonic::Streaming<entry::SyncAuthorizedEntriesRequest>>,
    ) -> Result<Response<Stream<entry::SyncAuthorizedEntriesResponse>>, Status> {
        self.agent(&req)?;
        let (entries, page) = {
            let mut st = self.state.lock().unwrap();
            if st.sync_unimplemented {
                return Err(Status::unimplemented("unknown method SyncAuthorizedEntries"));
            }
            st.sync_calls += 1;
            (st.entries.clone(), if st.page_size == 0 { 500 } else { st.page_size })
        };
        let mut stream = req.into_inner();
        let first = stream.message().await?.ok_or_else(|| Status::invalid_argument("no request"))?;
        if !first.ids.is_empty() {
            return Err(Status::invalid_argument("ids on the first request"));
        }
        // As the server does: up to a page, the entries whole; else pages of revisions, then
        // the entries the client asks for by ID, in pages, until it closes its side.
        if entries.len() <= page {
            let resp = entry::SyncAuthorizedEntriesResponse { entry_revisions: vec![], entries, more: false };
            return Ok(Response::new(Box::pin(tokio_stream::iter([Ok(resp)]))));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let state = self.state.clone();
        tokio::spawn(async move {
            let chunks: Vec<_> = entries.chunks(page).map(<[types::Entry]>::to_vec).collect();
            for (i, chunk) in chunks.iter().enumerate() {
                let revisions = chunk
                    .iter()
                    .map(|e| entry::EntryRevision {
                        id: e.id.clone(),
                        revision_number: e.revision_number,
                        created_at: e.created_at,
                    })
                    .collect();
                let resp = entry::SyncAuthorizedEntriesResponse {
                    entry_revisions: revisions,
                    entries: vec![],
                    more: i + 1 < chunks.len(),
                };
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
            while let Ok(Some(req)) = stream.message().await {
                if req.ids.len() > page {
                    let _ = tx.send(Err(Status::invalid_argument("more IDs than a page"))).await;
                    return;
                }
                state.lock().unwrap().ids_requested += req.ids.len();
                let found: Vec<types::Entry> =
                    req.ids.iter().filter_map(|id| entries.iter().find(|e| &e.id == id).cloned()).collect();
                let resp =
                    entry::SyncAuthorizedEntriesResponse { entry_revisions: vec![], entries: found, more: false };
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn get_authorized_entries(
        &self,
        req: Request<entry::GetAuthorizedEntriesRequest>,
    ) -> Result<Response<entry::GetAuthorizedEntriesResponse>, Status> {
        self.agent(&req)?;
        let mut st = self.state.lock().unwrap();
        st.get_authorized_calls += 1;
        Ok(Response::new(entry::GetAuthorizedEntriesResponse { entries: st.entries.clone() }))
    }
}

#[tonic::async_trait]
impl svid::svid_server::Svid for Svc {
    async fn batch_new_x509svid(
        &self,
        req: Request<svid::BatchNewX509svidRequest>,
    ) -> Result<Response<svid::BatchNewX509svidResponse>, Status> {
        self.agent(&req)?;
        let params = req.into_inner().params;
        if params.len() > 500 {
            return Err(Status::invalid_argument("more than 500 params"));
        }
        {
            let mut st = self.state.lock().unwrap();
            st.batch_calls += 1;
            st.largest_batch = st.largest_batch.max(params.len());
        }
        let mut results = Vec::new();
        for p in params {
            let (entry, refused, lie, stranger) = {
                let mut st = self.state.lock().unwrap();
                st.batch_params += 1;
                let e = st.entries.iter().find(|e| e.id == p.entry_id).cloned();
                (e, st.refuse.contains(&p.entry_id), st.lie.contains(&p.entry_id), st.foreign_ca.contains(&p.entry_id))
            };
            let status = |code: i32, message: &str| Some(types::Status { code, message: message.into() });
            let result = match entry {
                None => svid::batch_new_x509svid_response::Result {
                    status: status(tonic::Code::NotFound as i32, "entry not found or not authorized"),
                    svid: None,
                },
                Some(_) if refused => svid::batch_new_x509svid_response::Result {
                    status: status(tonic::Code::Internal as i32, "failed to sign X509-SVID"),
                    svid: None,
                },
                Some(e) => {
                    let idp = e.spiffe_id.unwrap();
                    let mut id = format!("spiffe://{}{}", idp.trust_domain, idp.path);
                    if lie {
                        id = td_id("/w/someone-else");
                    }
                    let issuer = if stranger { &self.ca.stranger } else { &self.ca.issuer };
                    let der = self.ca.sign_with(issuer, &p.csr, &id, self.ca.svid_ttl, false)?;
                    svid::batch_new_x509svid_response::Result {
                        status: status(0, "OK"),
                        svid: Some(x509svid(der, &id, self.ca.svid_ttl)),
                    }
                }
            };
            results.push(result);
        }
        Ok(Response::new(svid::BatchNewX509svidResponse { results }))
    }

    async fn new_jwtsvid(
        &self,
        req: Request<svid::NewJwtsvidRequest>,
    ) -> Result<Response<svid::NewJwtsvidResponse>, Status> {
        self.agent(&req)?;
        let req = req.into_inner();
        if req.audience.is_empty() {
            return Err(Status::invalid_argument("at least one audience is required"));
        }
        let entry = {
            let mut st = self.state.lock().unwrap();
            st.jwt_calls.push((req.entry_id.clone(), req.audience.clone()));
            st.entries.iter().find(|e| e.id == req.entry_id).cloned()
        };
        let entry = entry.ok_or_else(|| Status::not_found("entry not found or not authorized"))?;
        let idp = entry.spiffe_id.unwrap_or_default();
        let sub = format!("spiffe://{}{}", idp.trust_domain, idp.path);
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        let exp = now + JWT_TTL.as_secs();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(JWT_KID.into());
        header.typ = Some("JWT".into());
        let claims = serde_json::json!({"sub": sub, "aud": req.audience, "exp": exp, "iat": now});
        let key = jsonwebtoken::EncodingKey::from_ec_der(&self.ca.jwt_key.serialize_der());
        let token = jsonwebtoken::encode(&header, &claims, &key).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(svid::NewJwtsvidResponse {
            svid: Some(types::Jwtsvid {
                token,
                id: Some(idp),
                expires_at: exp as i64,
                issued_at: now as i64,
                hint: String::new(),
            }),
        }))
    }
}

/// A TLS connection whose client chain reaches the handlers as `PeerChain`.
struct Conn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>);

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = PeerChain;
    fn connect_info(&self) -> PeerChain {
        PeerChain(
            self.0.get_ref().1.peer_certificates().map(|c| c.iter().map(|d| d.to_vec()).collect()).unwrap_or_default(),
        )
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The CA, kept across server restarts in one test (as the server's disk KeyManager would).
pub struct TestCa {
    key_pem: String,
    params_der: Vec<u8>,
    jwt_key_pem: String,
}

impl TestCa {
    pub fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, "fake spire CA");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.subject_alt_names = vec![SanType::URI(td_id("").as_str().try_into().unwrap())];
        let cert = p.self_signed(&key).unwrap();
        let jwt_key = KeyPair::generate().unwrap();
        Self { key_pem: key.serialize_pem(), params_der: cert.der().to_vec(), jwt_key_pem: jwt_key.serialize_pem() }
    }

    pub fn der(&self) -> &[u8] {
        &self.params_der
    }

    pub fn write_pem(&self, path: &Path) {
        std::fs::write(path, pem::encode(&pem::Pem::new("CERTIFICATE", self.params_der.clone()))).unwrap();
    }
}

impl FakeServer {
    /// Start on 127.0.0.1 (`port` 0: any free port) with `ca`.
    pub async fn start(
        ca: &TestCa,
        port: u16,
        agent_ttl: Duration,
        svid_ttl: Duration,
        state: Arc<Mutex<State>>,
    ) -> Self {
        tessera::install_crypto_provider();
        let key = KeyPair::from_pem(&ca.key_pem).unwrap();
        let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(ca.params_der.clone()), key).unwrap();
        let ca_signer = Arc::new(Ca {
            issuer,
            stranger: stranger_ca(),
            agent_ttl,
            svid_ttl,
            jwt_key: KeyPair::from_pem(&ca.jwt_key_pem).unwrap(),
        });
        // The server's own SVID.
        let server_key = KeyPair::generate().unwrap();
        let csr = CertificateParams::default().serialize_request(&server_key).unwrap().der().to_vec();
        let server_der = ca_signer.sign(&csr, &td_id("/spire/server"), Duration::from_secs(3600), true).unwrap();
        let roots = {
            let mut r = rustls::RootCertStore::empty();
            r.add(CertificateDer::from(ca.params_der.clone())).unwrap();
            Arc::new(r)
        };
        let client_verifier =
            rustls::server::WebPkiClientVerifier::builder(roots).allow_unauthenticated().build().unwrap();
        let mut tls = rustls::ServerConfig::builder()
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(
                vec![CertificateDer::from(server_der)],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
            )
            .unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Conn, std::io::Error>>(16);
        let accept_task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = tx.send(Ok(Conn(tls))).await;
                    }
                });
            }
        });
        let svc = Svc { state: state.clone(), ca: ca_signer, ca_der: Arc::new(ca.params_der.clone()) };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(agent::agent_server::AgentServer::new(svc.clone()))
                .add_service(bundle::bundle_server::BundleServer::new(svc.clone()))
                .add_service(entry::entry_server::EntryServer::new(svc.clone()))
                .add_service(svid::svid_server::SvidServer::new(svc))
                .serve_with_incoming_shutdown(tokio_stream::wrappers::ReceiverStream::new(rx), async {
                    let _ = stop_rx.await;
                })
                .await;
            accept_task.abort();
        });
        Self { state, port, ca_der: ca.params_der.clone(), shutdown: Some(stop_tx) }
    }
}

/// A workload entry for `id` with `selectors` ("type:value").
pub fn entry(id: &str, path: &str, selectors: &[&str]) -> types::Entry {
    types::Entry {
        id: id.into(),
        spiffe_id: Some(types::Spiffeid { trust_domain: TD.into(), path: path.into() }),
        selectors: selectors
            .iter()
            .map(|s| {
                let (t, v) = s.split_once(':').unwrap();
                types::Selector { r#type: t.into(), value: v.into() }
            })
            .collect(),
        revision_number: 1,
        created_at: 1,
        ..Default::default()
    }
}

/// An entry whose SPIFFE ID is in another trust domain (malformed for this node).
pub fn types_entry_foreign(id: &str, selector: &str) -> types::Entry {
    let mut e = entry(id, "/w/foreign", &[selector]);
    e.spiffe_id = Some(types::Spiffeid { trust_domain: "elsewhere.example".into(), path: "/w/foreign".into() });
    e
}
