//! SPIRE mode against an in-process SPIRE Server that enforces the server's rules (single-use
//! join tokens, serial activation after renewal, bans, per-item batch errors, PermissionDenied
//! details). The real tessera binary serves; the `spiffe` crate is the workload.

mod common;
#[path = "spire_mode/fake_server.rs"]
mod fake_server;

use common::{Daemon, uid};
use fake_server::{FakeServer, State, TestCa, entry};
use futures::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

fn spire_toml(port: u16, bundle: &std::path::Path, token: &str, extra: &str) -> String {
    format!(
        "[spire]\nserver_address = \"127.0.0.1:{port}\"\ntrust_bundle_path = \"{}\"\njoin_token = \"{token}\"\nsync_interval = \"1s\"\n{extra}",
        bundle.display()
    )
}

fn uid_sel() -> String {
    format!("unix:uid:{}", uid())
}

/// Poll (bounded) until the daemon hands this process an X.509-SVID.
async fn until_served(d: &Daemon, within: Duration) -> spiffe::X509Svid {
    let deadline = Instant::now() + within;
    loop {
        match d.client().await.fetch_x509_svid().await {
            Ok(s) => return s,
            Err(e) => assert!(Instant::now() < deadline, "never served: {e}\n{}", d.log()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = Instant::now() + within;
    while !cond() {
        if Instant::now() >= deadline {
            eprintln!("timed out waiting for {what}");
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

struct Setup {
    ca: TestCa,
    state: Arc<Mutex<State>>,
    server: Option<FakeServer>,
    bundle_dir: tempfile::TempDir,
}

async fn setup(token: &str, entries: Vec<tessera::spire::pb::types::Entry>, agent_ttl: Duration) -> Setup {
    let ca = TestCa::new();
    let state = Arc::new(Mutex::new(State::default()));
    {
        let mut st = state.lock().unwrap();
        st.tokens.insert(token.into());
        st.entries = entries;
    }
    let server = FakeServer::start(&ca, 0, agent_ttl, Duration::from_secs(120), state.clone()).await;
    let bundle_dir = tempfile::tempdir().unwrap();
    ca.write_pem(&bundle_dir.path().join("bundle.pem"));
    Setup { ca, state, server: Some(server), bundle_dir }
}

impl Setup {
    fn toml(&self, token: &str, extra: &str) -> String {
        let port = self.server.as_ref().map(|s| s.port).unwrap_or(1);
        spire_toml(port, &self.bundle_dir.path().join("bundle.pem"), token, extra)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_entries_reach_workloads_and_removal_withdraws() {
    let s = setup(
        "tok-serve",
        vec![
            entry("e-me", "/w/me", &[&uid_sel()]),
            entry("e-refused", "/w/refused", &[&uid_sel()]),
            entry("e-lying", "/w/lying", &[&uid_sel()]),
            // Malformed: a SPIFFE ID of another trust domain.
            fake_server::types_entry_foreign("e-foreign", &uid_sel()),
            // A node alias: not for tessera's attestors, never served, not an error.
            entry("e-alias", "/node/ci", &["spiffe_id:spiffe://test.example/spire/agent/join_token/x"]),
        ],
        Duration::from_secs(120),
    )
    .await;
    s.state.lock().unwrap().refuse.insert("e-refused".into());
    s.state.lock().unwrap().lie.insert("e-lying".into());
    let d = Daemon::start(&s.toml("tok-serve", ""));
    let svid = until_served(&d, Duration::from_secs(20)).await;
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://test.example/w/me");
    // Signed by the server's CA: the chain verifies against it.
    let chain: Vec<Vec<u8>> = svid.cert_chain().iter().map(|c| c.as_ref().to_vec()).collect();
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    common::verify_chain(&chain, &[s.ca.der().to_vec()], now).unwrap();
    // The per-item error left one entry unsigned: only the other is served, and it is audited.
    let ctx = d.client().await.fetch_x509_context().await.unwrap();
    let ids: Vec<String> = ctx.svids().iter().map(|s| s.spiffe_id().to_string()).collect();
    assert_eq!(ids, ["spiffe://test.example/w/me"]);
    let audit = std::fs::read_to_string(d.audit_log()).unwrap();
    assert!(audit.contains("spire_refused") && audit.contains("e-refused"), "{audit}");
    // A chain naming another ID than the entry's, and an entry outside the trust domain: refused, audited.
    assert!(audit.contains("e-lying") && audit.contains("someone-else"), "{audit}");
    assert!(audit.contains("e-foreign") && audit.contains("outside"), "{audit}");

    // The entry removed on the server → the open stream loses the identity within a sync.
    let client = d.client().await;
    let mut stream = Box::pin(client.stream_x509_contexts().await.unwrap());
    stream.next().await.unwrap().unwrap();
    s.state.lock().unwrap().entries.retain(|e| e.id != "e-me");
    let t0 = Instant::now();
    let next = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.expect("stream not updated");
    assert!(matches!(next, Some(Err(_)) | None), "identity still streamed after removal");
    assert!(t0.elapsed() < Duration::from_secs(5), "withdrawal took {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_reuses_the_agent_and_serves_through_an_outage() {
    let mut s = setup("tok-restart", vec![entry("e-me", "/w/me", &[&uid_sel()])], Duration::from_secs(120)).await;
    let mut d = Daemon::start(&s.toml("tok-restart", "persist_svids = true\n"));
    let first = until_served(&d, Duration::from_secs(20)).await;

    // Restart: the persisted agent SVID is used; the single-use token is not presented again.
    d.stop();
    d.spawn();
    until_served(&d, Duration::from_secs(20)).await;
    until("a sync after restart", Duration::from_secs(10), || d.log().contains("synced with the SPIRE Server"))
        .await
        .unwrap();
    assert_eq!(s.state.lock().unwrap().attest_calls, 1, "{}", d.log());

    // Server gone, daemon restarted: the persisted, still-valid SVID is served.
    s.server.take();
    d.stop();
    d.spawn();
    let offline = until_served(&d, Duration::from_secs(10)).await;
    assert_eq!(offline.spiffe_id(), first.spiffe_id());
    assert!(d.log().contains("serving the persisted state"), "{}", d.log());
    for f in ["agent.pb", "svids.pb"] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(d.data_dir().join("spire").join(f)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_svid_renewal_activates_the_new_serial() {
    // Agent SVIDs live 4 s: renewed at half-life, the server retiring each old serial on first
    // use of the new one. An agent that kept using an old SVID would be refused (AGENT_NOT_ACTIVE).
    let s = setup("tok-renew", vec![entry("e-me", "/w/me", &[&uid_sel()])], Duration::from_secs(4)).await;
    let d = Daemon::start(&s.toml("tok-renew", ""));
    until_served(&d, Duration::from_secs(20)).await;
    until("two renewals, each activated", Duration::from_secs(20), || {
        let st = s.state.lock().unwrap();
        st.renew_calls >= 3 && st.activations >= 3
    })
    .await
    .unwrap();
    let (denials, attests) = {
        let st = s.state.lock().unwrap();
        (st.not_active_denials, st.attest_calls)
    };
    assert_eq!(denials, 0, "{}", d.log());
    assert_eq!(attests, 1);
    // Past several agent lifetimes, still syncing and serving.
    d.client().await.fetch_x509_svid().await.unwrap();
    assert!(!d.log().contains("SPIRE sync failed"), "{}", d.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn banned_agent_stops_serving_and_forgets_its_identity() {
    let s = setup("tok-ban", vec![entry("e-me", "/w/me", &[&uid_sel()])], Duration::from_secs(120)).await;
    let d = Daemon::start(&s.toml("tok-ban", "persist_svids = true\n"));
    until_served(&d, Duration::from_secs(20)).await;
    for rec in s.state.lock().unwrap().agents.values_mut() {
        rec.banned = true;
    }
    until("identities withdrawn after the ban", Duration::from_secs(10), || {
        d.log().contains("NO IDENTITIES ARE SERVED")
    })
    .await
    .unwrap();
    let err = d.client().await.fetch_x509_svid().await.unwrap_err();
    assert_eq!(common::status_code(&err), Some(tonic::Code::PermissionDenied), "{err}");
    let audit = std::fs::read_to_string(d.audit_log()).unwrap();
    assert!(audit.contains("spire_agent_stopped"), "{audit}");
    assert!(!d.data_dir().join("spire/agent.pb").exists());
    assert!(!d.data_dir().join("spire/svids.pb").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reused_token_and_wrong_bundle_are_named() {
    let s = setup("tok-used", vec![], Duration::from_secs(120)).await;
    s.state.lock().unwrap().tokens.clear();
    let d = Daemon::start(&s.toml("tok-used", ""));
    until("the refusal in the log", Duration::from_secs(10), || {
        d.log().contains("join token does not exist or has already been used") && d.log().contains("single-use")
    })
    .await
    .unwrap();

    // A bootstrap bundle from another CA: the TLS failure is named, nothing is served.
    let other = TestCa::new();
    other.write_pem(&s.bundle_dir.path().join("bundle.pem"));
    let s2 = setup("tok-tls", vec![entry("e-me", "/w/me", &[&uid_sel()])], Duration::from_secs(120)).await;
    let toml = spire_toml(s2.server.as_ref().unwrap().port, &s.bundle_dir.path().join("bundle.pem"), "tok-tls", "");
    let d2 = Daemon::start(&toml);
    until("a TLS error in the log", Duration::from_secs(10), || d2.log().contains("TLS to the SPIRE Server failed"))
        .await
        .unwrap_or_else(|()| panic!("{}", d2.log()));
    assert!(d2.log().contains("invalid peer certificate"), "{}", d2.log());
    assert!(!d2.log().contains("single-use"), "a TLS failure is not a used token: {}", d2.log());
    assert!(d2.client().await.fetch_x509_svid().await.is_err());
    assert_eq!(s2.state.lock().unwrap().attest_calls, 0);
}
