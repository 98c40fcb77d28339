//! Revocation by binary digest and by SPIFFE ID, from the config and from
//! `tessera revoke` — open streams end with PermissionDenied within a second, new fetches and
//! JWT validation are refused, it survives a restart, `--lift` restores — with real processes.

#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] fns: a failed unwrap is a failed test")]

use crate::common::*;
use futures::StreamExt;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// An entry for `tessera` processes by their binary's digest: the daemon then hashes executables
/// from the start, as a node that identifies agents by binary does, so a digest revocation finds
/// the digest cached. (With no entry using digests, the first digest rule makes the daemon hash
/// every streaming workload's executable once; for this 200 MB debug binary on a loaded 2-core
/// machine that alone took 1.2-2 s.)
fn tool_entry() -> String {
    format!(
        "[[entries]]\nspiffe_id = \"spiffe://{TD}/tools/tessera\"\nselectors = [\"unix:sha256:{}\"]\nowner = \"tools@example.org\"\n",
        tessera_digest()
    )
}

fn entry(path: &str, extra: &str) -> String {
    format!(
        "[[entries]]\nspiffe_id = \"spiffe://{TD}/{path}\"\nselectors = [\"unix:uid:{}\"]\nowner = \"team@example.org\"\n{extra}\n",
        uid()
    )
}

fn admin(d: &Daemon, args: &[&str]) -> Output {
    Command::new(bin()).args(args).arg("--admin-socket").arg(d.admin_socket()).output().unwrap()
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The digest of the `tessera` binary: the workloads below are `tessera api …` processes.
fn tessera_digest() -> String {
    static DIGEST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DIGEST.get_or_init(|| sha256_hex(&std::fs::read(bin()).unwrap())).clone()
}

/// A separate process holding an X.509 stream open, once its first SVID has arrived (its stderr
/// kept for [`ended_denied`]).
fn open_stream(d: &Daemon) -> Child {
    spawn_watch_drained(d, Stdio::piped(), "Received ")
}

/// Wait for the watcher to end; its stream must have ended with PermissionDenied.
fn ended_denied(child: &mut Child, t0: Instant, what: &str) -> Duration {
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: the stream was still open after 10 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let delay = t0.elapsed();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("permission") && err.contains("revoked"), "{err}");
    eprintln!("measured: {what}: open stream ended with PermissionDenied after {delay:?}");
    assert!(delay < Duration::from_secs(1), "{what} took {delay:?}");
    delay
}

/// A one-shot fetch by a separate `tessera` process: Ok(()) or the error text.
fn fetch_by_tessera(d: &Daemon) -> Result<(), String> {
    let out =
        Command::new(bin()).args(["api", "fetch", "x509", "--silent", "--socket"]).arg(&d.socket).output().unwrap();
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
}

#[test]
fn revoking_a_binary_digest_ends_its_stream_at_once_survives_restart_and_lift_restores() {
    let mut d = Daemon::start(&format!("{}{}", entry("agents/a", ""), tool_entry()));
    let digest = tessera_digest();
    let selector = format!("unix:sha256:{digest}");
    let mut watch = open_stream(&d);

    let t0 = Instant::now();
    let said = ok(admin(&d, &["revoke", "--selector", &selector, "--reason", "build leaked in incident 42"]));
    ended_denied(&mut watch, t0, "tessera revoke --selector unix:sha256");
    assert!(said.contains("takes away 1 configured entry and cuts off 1 running workload"), "{said}");
    let id = said.split_whitespace().nth(1).unwrap().to_owned();
    assert!(id.starts_with("r-"), "{said}");

    // New fetches by that binary are refused; other binaries (this test) are not.
    assert!(fetch_by_tessera(&d).unwrap_err().contains(&format!("revoked by rule {id}")));
    // `--list`: one a line, ID first, then what it matches and the reason.
    let list = ok(admin(&d, &["revoke", "--list"]));
    let line = list.lines().find(|l| l.starts_with(&id)).expect("listed");
    assert!(line.contains(&format!("selector {selector}")) && line.contains("build leaked in incident 42"), "{line}");
    let json: serde_json::Value = serde_json::from_str(&ok(admin(&d, &["revoke", "--list", "--json"]))).unwrap();
    assert_eq!(json["revocations"][0]["id"], id.as_str());
    assert_eq!(json["revocations"][0]["selector"], selector.as_str());
    // Who revoked what and why.
    let revoked = d.audit_text().lines().find(|l| l.contains("\"event\":\"revoked\"")).unwrap().to_owned();
    let by: serde_json::Value = serde_json::from_str::<serde_json::Value>(&revoked).unwrap()["by"].clone();
    assert!(by["pid"].is_u64() && by["uid"] == 0, "{revoked}");
    assert!(revoked.contains(&selector) && revoked.contains("build leaked in incident 42"), "{revoked}");
    // Persisted privately.
    let store = d.data_dir().join("revocations.json");
    assert_eq!(std::fs::metadata(&store).unwrap().permissions().mode() & 0o777, 0o600);

    // A restart keeps it in force.
    assert!(d.stop().success());
    d.spawn();
    assert!(fetch_by_tessera(&d).unwrap_err().contains("revoked"));
    assert!(ok(admin(&d, &["revoke", "--list"])).starts_with(&id));

    // Lifted: identities come back, and the lift is audited.
    let said = ok(admin(&d, &["revoke", "--lift", &id]));
    assert!(said.contains("lifted"), "{said}");
    fetch_by_tessera(&d).unwrap();
    drop(open_stream(&d));
    assert!(ok(admin(&d, &["revoke", "--list"])).is_empty());
    assert!(d.audit_text().contains("\"event\":\"revocation_lifted\""));
    // Lifting twice: not found.
    assert!(!admin(&d, &["revoke", "--lift", &id]).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_spiffe_id_ends_streams_refuses_its_jwt_svids_and_lift_restores() {
    let d = Daemon::start(&entry("agents/b", ""));
    let client = d.client().await;
    let token = client.fetch_jwt_token(["api"], None).await.unwrap();
    let mut stream = Box::pin(client.stream_x509_contexts().await.unwrap());
    stream.next().await.unwrap().unwrap();

    let t0 = Instant::now();
    let said = ok(admin(&d, &["revoke", "--spiffe-id", &format!("spiffe://{TD}/agents/b"), "--reason", "key leaked"]));
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap().unwrap();
    let delay = t0.elapsed();
    assert_eq!(status_code(&end.unwrap_err()), Some(tonic::Code::PermissionDenied));
    eprintln!("measured: tessera revoke --spiffe-id: open stream ended with PermissionDenied after {delay:?}");
    assert!(delay < Duration::from_secs(1), "{delay:?}");
    assert!(said.contains("takes away 1 configured entry"), "{said}");

    // New fetches refused; the token minted before no longer validates here.
    let err = client.fetch_x509_svid().await.unwrap_err();
    assert_eq!(status_code(&err), Some(tonic::Code::PermissionDenied), "{err:?}");
    let err = client.validate_jwt_token("api", &token).await.unwrap_err();
    assert!(format!("{err:?}").contains("revoked"), "{err:?}");
    // The inventory marks the entry.
    let inv: serde_json::Value = serde_json::from_str(&ok(admin(&d, &["inventory", "--json"]))).unwrap();
    assert_eq!(inv["entries"][0]["revoked_by"][0].as_str().map(|s| s.starts_with("r-")), Some(true));

    let id = said.split_whitespace().nth(1).unwrap().to_owned();
    ok(admin(&d, &["revoke", "--lift", &id]));
    client.fetch_x509_svid().await.unwrap();
    client.validate_jwt_token("api", &token).await.unwrap();
}

#[test]
fn a_revocation_that_matches_nothing_is_accepted_and_says_so() {
    let d = Daemon::start(&entry("agents/c", ""));
    let said =
        ok(admin(&d, &["revoke", "--spiffe-id", &format!("spiffe://{TD}/agents/none"), "--reason", "precaution"]));
    assert!(said.contains("matches nothing now"), "{said}");
    let said = ok(admin(&d, &["revoke", "--selector", &format!("unix:sha256:{}", "0".repeat(64)), "--reason", "r"]));
    assert!(said.contains("matches nothing now"), "{said}");
    // Bad input is refused with the reason.
    let out = admin(&d, &["revoke", "--selector", "bogus:x", "--reason", "r"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown selector type"));
    fetch_by_tessera(&d).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_deny_rules_and_retired_entries_take_effect_on_reload_and_restart() {
    let mut d = Daemon::start(&format!("{}{}{}", entry("agents/d", ""), entry("agents/old", ""), tool_entry()));
    let client = d.client().await;
    let old_token =
        client.fetch_jwt_token(["api"], Some(&format!("spiffe://{TD}/agents/old").parse().unwrap())).await.unwrap();

    // A [[deny]] rule on the binary's digest, added to the config while its stream is open.
    let deny = format!("[[deny]]\nselector = \"unix:sha256:{}\"\nreason = \"quarantined build\"\n", tessera_digest());
    let config = format!("{}{}{}{deny}", entry("agents/d", ""), entry("agents/old", "retired = true"), tool_entry());
    let mut watch = open_stream(&d);
    let t0 = Instant::now();
    d.rewrite_config(&config);
    ended_denied(&mut watch, t0, "config [[deny]] selector (reload)");
    assert!(fetch_by_tessera(&d).unwrap_err().contains("revoked by rule config-0"));
    // Retired: this process (not denied) no longer gets it, its token is refused, it is listed as retired.
    let svids = client.fetch_x509_context().await.unwrap();
    let ids: Vec<String> = svids.svids().iter().map(|s| s.spiffe_id().to_string()).collect();
    assert_eq!(ids, [format!("spiffe://{TD}/agents/d")]);
    let err = client.validate_jwt_token("api", &old_token).await.unwrap_err();
    assert!(format!("{err:?}").contains("retired"), "{err:?}");
    let inv: serde_json::Value = serde_json::from_str(&ok(admin(&d, &["inventory", "--json"]))).unwrap();
    assert_eq!(inv["entries"][1]["status"], "retired");
    assert_eq!(inv["revocations"][0]["id"], "config-0");
    // A config rule is lifted in the config, not with --lift.
    let out = admin(&d, &["revoke", "--lift", "config-0"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("remove it there"));

    // From the config at start, by SPIFFE ID.
    assert!(d.stop().success());
    d.rewrite_config(&format!(
        "{}[[deny]]\nspiffe_id = \"spiffe://{TD}/agents/d\"\nreason = \"owner left\"\n",
        entry("agents/d", "")
    ));
    d.spawn();
    let err = d.client().await.fetch_x509_svid().await.unwrap_err();
    assert_eq!(status_code(&err), Some(tonic::Code::PermissionDenied), "{err:?}");
    // The audit writer runs on its own thread: the line follows the answer.
    eventually("the refusal audited", Duration::from_secs(5), || {
        d.audit_text().contains("revoked by rule config-0: owner left")
    });
}
