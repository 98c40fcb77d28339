//! SPIRE mode against an in-process SPIRE Server that enforces the server's rules (single-use
//! join tokens, serial activation after renewal, bans, per-item batch errors, PermissionDenied
//! details). The real tessera binary serves; the `spiffe` crate is the workload.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failure there is the test's failure")]

mod fake_server;

use crate::common::{self, Daemon, free_port, uid_sel};
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

async fn setup(token: &str, entries: Vec<tessera::testing::spire_pb::types::Entry>, agent_ttl: Duration) -> Setup {
    setup_ttl(token, entries, agent_ttl, Duration::from_secs(120)).await
}

async fn setup_ttl(
    token: &str,
    entries: Vec<tessera::testing::spire_pb::types::Entry>,
    agent_ttl: Duration,
    svid_ttl: Duration,
) -> Setup {
    let ca = TestCa::new();
    let state = Arc::new(Mutex::new(State::default()));
    {
        let mut st = state.lock().unwrap();
        st.tokens.insert(token.into());
        st.entries = entries;
    }
    let server = FakeServer::start(&ca, 0, agent_ttl, svid_ttl, state.clone()).await;
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

/// A port nobody listens on right now (bound next by the daemon or a server).
/// GET `path` on the telemetry listener: (status, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    Some((status, text.split_once("\r\n\r\n")?.1.to_owned()))
}

/// `tessera_spire_seconds_since_last_sync` and the `/ready` body's `spire.seconds_since_last_sync`.
fn sync_age(port: u16) -> Option<(f64, Option<u64>)> {
    let (_, metrics) = http_get(port, "/metrics")?;
    let gauge = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tessera_spire_seconds_since_last_sync "))
        .and_then(|v| v.parse().ok());
    let (_, ready) = http_get(port, "/ready")?;
    let Some(gauge) = gauge else {
        eprintln!("no gauge in\n{metrics}");
        return None;
    };
    let ready: serde_json::Value = serde_json::from_str(&ready).map_err(|e| eprintln!("{e}: {ready}")).ok()?;
    Some((gauge, ready["spire"]["seconds_since_last_sync"].as_u64()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_age_in_metrics_and_health_grows_while_the_server_is_away() {
    let mut s = setup("tok-age", vec![entry("e-me", "/w/me", &[&uid_sel()])], Duration::from_secs(120)).await;
    let port = free_port();
    let d = Daemon::start(&s.toml("tok-age", &format!("[telemetry]\nlisten = \"127.0.0.1:{port}\"\n")));
    until_served(&d, Duration::from_secs(20)).await;
    // Synced every second: the age stays small.
    let mut fresh = None;
    until("a fresh sync age", Duration::from_secs(10), || {
        fresh = sync_age(port);
        fresh.is_some_and(|(g, h)| g < 2.5 && h.is_some_and(|h| h < 3))
    })
    .await
    .unwrap_or_else(|()| panic!("{fresh:?}\n{}", d.log()));
    // The server goes away: with no good sync, both figures keep growing (read at scrape time).
    s.server.take();
    let mut stale = None;
    until("the sync age past 4 s", Duration::from_secs(15), || {
        stale = sync_age(port);
        stale.is_some_and(|(g, h)| g >= 4.0 && h.is_some_and(|h| h >= 4))
    })
    .await
    .unwrap_or_else(|()| panic!("{stale:?}\n{}", d.log()));
    // Still serving what it holds.
    d.client().await.fetch_x509_svid().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paged_sync_and_batches_within_the_server_limit() {
    // 1,201 entries: more than two pages of revisions, and three BatchNewX509SVID calls of ≤ 500.
    let mut entries = vec![entry("e-me", "/w/me", &[&uid_sel()])];
    for i in 0..1200 {
        entries.push(entry(&format!("e-filler-{i:04}"), &format!("/filler/{i}"), &["unix:uid:4000000"]));
    }
    let s = setup("tok-pages", entries, Duration::from_secs(120)).await;
    let d = Daemon::start(&s.toml("tok-pages", ""));
    let svid = until_served(&d, Duration::from_secs(60)).await;
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://test.example/w/me");
    {
        let st = s.state.lock().unwrap();
        assert!(st.batch_params >= 1201 && st.largest_batch == 500, "{} {}", st.batch_params, st.largest_batch);
        // The first sync knew nothing: every entry was asked for by ID (in chunks of a page).
        assert!(st.ids_requested >= 1201, "{}", st.ids_requested);
    }
    // Later syncs ask only for what changed: one entry gets a new revision (and a new ID).
    let (before, syncs) = {
        let st = s.state.lock().unwrap();
        (st.ids_requested, st.sync_calls)
    };
    until("a sync that asked for nothing", Duration::from_secs(10), || s.state.lock().unwrap().sync_calls >= syncs + 2)
        .await
        .unwrap();
    let idle = s.state.lock().unwrap().ids_requested - before;
    assert_eq!(idle, 0, "unchanged entries were fetched again");
    {
        let mut st = s.state.lock().unwrap();
        let e = st.entries.iter_mut().find(|e| e.id == "e-me").unwrap();
        e.revision_number = 2;
        e.spiffe_id.as_mut().unwrap().path = "/w/me-v2".into();
    }
    let before = s.state.lock().unwrap().ids_requested;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = d.client().await.fetch_x509_svid().await;
        if now.is_ok_and(|svid| svid.spiffe_id().to_string() == "spiffe://test.example/w/me-v2") {
            break;
        }
        assert!(Instant::now() < deadline, "the new revision never served: {}", d.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let asked = s.state.lock().unwrap().ids_requested - before;
    assert_eq!(asked, 1, "only the changed entry is fetched by ID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn older_server_without_sync_gets_get_authorized_entries() {
    let s = setup("tok-legacy", vec![entry("e-me", "/w/me", &[&uid_sel()])], Duration::from_secs(120)).await;
    s.state.lock().unwrap().sync_unimplemented = true;
    let d = Daemon::start(&s.toml("tok-legacy", ""));
    let svid = until_served(&d, Duration::from_secs(20)).await;
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://test.example/w/me");
    let st = s.state.lock().unwrap();
    assert!(st.get_authorized_calls >= 1 && st.sync_calls == 0, "{} {}", st.get_authorized_calls, st.sync_calls);
}

fn serial(svid: &spiffe::X509Svid) -> Vec<u8> {
    common::with_cert(svid.cert_chain()[0].as_ref(), |c| c.raw_serial().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workload_svid_rotates_at_half_life_on_the_open_stream() {
    // SVIDs live 6 s: re-signed through BatchNewX509SVID at half-life, pushed to the open stream.
    let s = setup_ttl(
        "tok-rotate",
        vec![entry("e-me", "/w/me", &[&uid_sel()])],
        Duration::from_secs(120),
        Duration::from_secs(6),
    )
    .await;
    let d = Daemon::start(&s.toml("tok-rotate", ""));
    until_served(&d, Duration::from_secs(20)).await;
    let client = d.client().await;
    let mut stream = Box::pin(client.stream_x509_contexts().await.unwrap());
    let first = stream.next().await.unwrap().unwrap();
    let first_serial = serial(first.default_svid().unwrap());
    let signed = s.state.lock().unwrap().batch_params;
    let t0 = Instant::now();
    let next = loop {
        let ctx = tokio::time::timeout(Duration::from_secs(8), stream.next())
            .await
            .expect("no rotation pushed to the open stream")
            .unwrap()
            .unwrap();
        let svid = ctx.default_svid().unwrap().clone();
        if serial(&svid) != first_serial {
            break svid;
        }
    };
    // Pushed before the old one expired, by a new BatchNewX509SVID, and signed by the server's CA.
    assert!(t0.elapsed() < Duration::from_secs(6), "rotation after {:?}", t0.elapsed());
    assert!(s.state.lock().unwrap().batch_params > signed);
    let chain: Vec<Vec<u8>> = next.cert_chain().iter().map(|c| c.as_ref().to_vec()).collect();
    common::verify_chain(&chain, &[s.ca.der().to_vec()], common::now_unix()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jwt_svids_cached_by_spiffe_id_and_audiences() {
    let s = setup("tok-jwt", vec![entry("e-me", "/w/me", &[&uid_sel()])], Duration::from_secs(120)).await;
    let d = Daemon::start(&s.toml("tok-jwt", ""));
    until_served(&d, Duration::from_secs(20)).await;
    let client = d.client().await;
    let calls = || s.state.lock().unwrap().jwt_calls.clone();
    let a1 = client.fetch_jwt_token(["a"], None).await.unwrap();
    let a2 = client.fetch_jwt_token(["a"], None).await.unwrap();
    assert_eq!(a1, a2, "the same (SPIFFE ID, audiences): the cached token");
    assert_eq!(calls(), [("e-me".to_owned(), vec!["a".to_owned()])]);
    let b = client.fetch_jwt_token(["b"], None).await.unwrap();
    assert_ne!(a1, b);
    assert_eq!(calls().len(), 2, "another audience: another NewJWTSVID");
    // Audiences are a set: order and repeats do not make another key.
    let ab = client.fetch_jwt_token(["a", "b"], None).await.unwrap();
    let ba = client.fetch_jwt_token(["b", "a", "b"], None).await.unwrap();
    assert_eq!(ab, ba);
    let got = calls();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[2].1, ["a", "b"], "sent sorted, without repeats");
    // The server's token validates against the JWT bundle tessera serves (from GetBundle).
    let validated = client.validate_jwt_token("b", &b).await.unwrap();
    assert_eq!(validated.spiffe_id().to_string(), "spiffe://test.example/w/me");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_entry_and_unverifiable_chain_keep_the_previous_state() {
    let s = setup_ttl(
        "tok-bad",
        vec![entry("e-me", "/w/me", &[&uid_sel()])],
        Duration::from_secs(120),
        Duration::from_secs(8),
    )
    .await;
    let d = Daemon::start(&s.toml("tok-bad", ""));
    let good = until_served(&d, Duration::from_secs(20)).await;
    let audit = || std::fs::read_to_string(d.audit_log()).unwrap_or_default();

    // A new revision of the entry that is malformed (a SPIFFE ID outside the trust domain):
    // refused, audited, the previous revision and its SVID stay in force.
    {
        let mut st = s.state.lock().unwrap();
        let e = st.entries.iter_mut().find(|e| e.id == "e-me").unwrap();
        e.revision_number = 2;
        e.spiffe_id.as_mut().unwrap().trust_domain = "elsewhere.example".into();
    }
    until("the malformed revision audited", Duration::from_secs(10), || {
        audit().contains("spire_refused") && audit().contains("outside")
    })
    .await
    .unwrap_or_else(|()| panic!("{}", audit()));
    let kept = d.client().await.fetch_x509_svid().await.unwrap();
    assert_eq!(kept.spiffe_id(), good.spiffe_id());
    assert_eq!(serial(&kept), serial(&good), "the previous SVID is still served");

    // Fixed on the server (revision 3): signed again. Then the server's chains stop verifying
    // (signed by a CA outside the bundle): the half-life rotation is refused, the SVID in hand stays.
    {
        let mut st = s.state.lock().unwrap();
        let e = st.entries.iter_mut().find(|e| e.id == "e-me").unwrap();
        e.revision_number = 3;
        e.spiffe_id.as_mut().unwrap().trust_domain = common::TD.into();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let current = loop {
        if let Ok(c) = d.client().await.fetch_x509_svid().await
            && serial(&c) != serial(&good)
        {
            break c;
        }
        assert!(Instant::now() < deadline, "revision 3 never signed: {}", d.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    s.state.lock().unwrap().foreign_ca.insert("e-me".into());
    until("the unverifiable chain audited", Duration::from_secs(10), || audit().contains("does not verify"))
        .await
        .unwrap_or_else(|()| panic!("{}\n{}", audit(), d.log()));
    let still = d.client().await.fetch_x509_svid().await.unwrap();
    assert_eq!(serial(&still), serial(&current), "the refused chain replaced the SVID in hand");
    let chain: Vec<Vec<u8>> = still.cert_chain().iter().map(|c| c.as_ref().to_vec()).collect();
    common::verify_chain(&chain, &[s.ca.der().to_vec()], common::now_unix()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_start_with_the_server_unreachable_retries_then_serves() {
    let ca = TestCa::new();
    let state = Arc::new(Mutex::new(State::default()));
    {
        let mut st = state.lock().unwrap();
        st.tokens.insert("tok-late".into());
        st.entries = vec![entry("e-me", "/w/me", &[&uid_sel()])];
    }
    let bundle_dir = tempfile::tempdir().unwrap();
    ca.write_pem(&bundle_dir.path().join("bundle.pem"));
    let port = free_port();
    let d = Daemon::start(&spire_toml(port, &bundle_dir.path().join("bundle.pem"), "tok-late", ""));
    // Nothing to serve yet, and the reason is in the log: the server cannot be reached.
    assert!(d.client().await.fetch_x509_svid().await.is_err());
    until("two failed attempts, backing off", Duration::from_secs(10), || {
        d.log().matches("SPIRE sync failed").count() >= 2
    })
    .await
    .unwrap_or_else(|()| panic!("{}", d.log()));
    let log = d.log();
    assert!(log.contains("Connection refused") || log.contains("connection refused"), "{log}");
    // Named as what it is: not a refusal by the server, no server at that address.
    assert!(log.contains(&format!("cannot reach the SPIRE Server at 127.0.0.1:{port}")), "{log}");
    assert!(log.contains("nothing is served until a sync succeeds"), "{log}");
    // Backoff: the retry delay grows (1 s, then 2 s with a 1 s interval).
    assert!(log.contains("retry_in=1s") && log.contains("retry_in=2s"), "{log}");
    // The server appears on that address: the node attests and serves without a restart.
    let _server = FakeServer::start(&ca, port, Duration::from_secs(120), Duration::from_secs(120), state.clone()).await;
    let svid = until_served(&d, Duration::from_secs(20)).await;
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://test.example/w/me");
    assert_eq!(state.lock().unwrap().attest_calls, 1);
}
