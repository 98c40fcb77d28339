//! The Workload API service on a fake issuer: what it answers for what the issuer says, with a
//! real caller (this process, attested through a socket pair) and no CA.

use super::*;
use crate::clock::FakeClock;
use crate::issuer::fake::{FakeIssuer, JwtAnswer};
use crate::registry::{ConfigPart, Entry, PolicyComposer, Registry};
use std::time::Duration;

fn me() -> Entry {
    Entry::for_test("spiffe://fake.test/me", &[&format!("unix:uid:{}", nix::unistd::geteuid().as_raw())])
}

/// The service on `issuer`, and this process as a peer (one end of a socket pair).
fn service(issuer: Arc<FakeIssuer>) -> (WorkloadService, PeerInfo, tokio::net::UnixStream) {
    let part = ConfigPart {
        registry: Registry::new(vec![me()]),
        attest: Default::default(),
        jwt_issuer: None,
        deny: vec![],
        delegation_issuers: Arc::default(),
        detail_types: Arc::default(),
        federation: Default::default(),
        exe_digests: false,
        authz: None,
    };
    let composer = PolicyComposer::new(part, vec![]);
    let clock: Arc<dyn crate::clock::Clock> = Arc::new(FakeClock::at(std::time::SystemTime::now()));
    let pipeline = crate::caller::Pipeline::new(
        composer.subscribe(),
        crate::limits::FairSlots::new(4, 4),
        crate::events::Events::new(),
        clock,
    );
    let (_, shutdown) = tokio::sync::watch::channel(false);
    let (_, stream_wake) = tokio::sync::watch::channel(0);
    let ctx = super::super::context::Context {
        pipeline: Arc::new(pipeline),
        issuer,
        files: crate::watch::FileWatcher::new(),
        reattest_interval: Duration::from_secs(30),
        shutdown,
        stream_wake,
    };
    let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
    let peer = PeerInfo::of_unix(&ours, ours.peer_cred().unwrap()).unwrap();
    (WorkloadService::new(Arc::new(ctx)), peer, theirs)
}

fn jwt_request(peer: &PeerInfo) -> Request<pb::JwtsvidRequest> {
    let mut req = Request::new(pb::JwtsvidRequest { audience: vec!["aud".into()], spiffe_id: String::new() });
    req.extensions_mut().insert(peer.clone());
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_jwtsvid_answers_what_the_issuer_mints_and_unavailable_without_a_key() {
    crate::install_crypto_provider();
    let issuer = Arc::new(FakeIssuer::new("fake.test", JwtAnswer::Token("header.payload.signature")));
    let (svc, peer, _keep) = service(issuer.clone());
    let answer = svc.fetch_jwtsvid(jwt_request(&peer)).await.unwrap().into_inner();
    assert_eq!(answer.svids.len(), 1);
    assert_eq!(answer.svids[0].spiffe_id, "spiffe://fake.test/me");
    assert_eq!(answer.svids[0].svid, "header.payload.signature");

    // The signing side has no key: the SDK is told to retry (SPIRE's code), not that it has no
    // identity.
    issuer.answer_jwt(JwtAnswer::NoKey);
    let err = svc.fetch_jwtsvid(jwt_request(&peer)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("no active JWT signing key"), "{}", err.message());

    // No audience: InvalidArgument before the issuer is asked.
    let mut req = jwt_request(&peer);
    req.get_mut().audience.clear();
    assert_eq!(svc.fetch_jwtsvid(req).await.unwrap_err().code(), tonic::Code::InvalidArgument);
}
