//! Owners and metadata in JWT-SVIDs, the live inventory, the admin socket's refusals,
//! and `tessera check` on the new keys — against the real daemon with real processes.

#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] fns: a failed unwrap is a failed test")]

use crate::common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn tessera(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

fn inventory_json(d: &Daemon) -> serde_json::Value {
    let out =
        Command::new(bin()).args(["inventory", "--json", "--admin-socket"]).arg(d.admin_socket()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn owned_entry() -> String {
    format!(
        "[[entries]]\nspiffe_id = \"spiffe://{TD}/agents/support\"\nselectors = [\"unix:uid:{}\"]\n\
         owner = \"support-team@example.org\"\n\
         metadata = {{ model = \"claude-sonnet-4\", capabilities = [\"email-read\", \"crm-access\"], risk = \"medium\" }}\n",
        uid()
    )
}

fn workload_pids(doc: &serde_json::Value) -> Vec<i64> {
    doc["workloads"].as_array().unwrap().iter().map(|w| w["pid"].as_i64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_svid_carries_the_agent_claim_and_unmodified_clients_still_validate_it() {
    let d = Daemon::start(&owned_entry());
    let client = d.client().await;
    let token = client.fetch_jwt_token(["billing-api"], None).await.unwrap();
    // The spiffe crate's own offline verifier accepts it.
    let bundles = client.fetch_jwt_bundles().await.unwrap();
    let svid = spiffe::JwtSvid::parse_and_validate(&token, &bundles, &["billing-api"]).unwrap();
    assert_eq!(svid.spiffe_id().to_string(), format!("spiffe://{TD}/agents/support"));
    // ... and so does the daemon's ValidateJWTSVID.
    let validated = client.validate_jwt_token("billing-api", &token).await.unwrap();
    assert_eq!(validated.spiffe_id(), svid.spiffe_id());
    // The claim itself.
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(
        claims["agent"],
        serde_json::json!({
            "owner": "support-team@example.org",
            "model": "claude-sonnet-4",
            "capabilities": ["email-read", "crm-access"],
            "risk": "medium",
        })
    );
    // The audit line of the issuance names the owner.
    let audit = std::fs::read_to_string(d.audit_log()).unwrap();
    let issued = audit.lines().find(|l| l.contains("\"event\":\"issued\"")).unwrap();
    assert!(
        issued.contains("\"owners\":{\"spiffe://test.example/agents/support\":\"support-team@example.org\"}"),
        "{issued}"
    );
}

#[test]
fn inventory_lists_a_spawned_workload_then_drops_it_within_a_second_of_its_exit() {
    let d = Daemon::start(&owned_entry());
    let mut child = spawn_watch_drained(&d, Stdio::null(), "Received 1 svid");
    let pid = child.id() as i64;

    let doc = inventory_json(&d);
    assert_eq!(doc["version"], 1);
    let entry = &doc["entries"][0];
    assert_eq!(entry["owner"], "support-team@example.org");
    assert_eq!(entry["status"], "active");
    assert_eq!(entry["metadata"]["risk"], "medium");
    let w = doc["workloads"].as_array().unwrap().iter().find(|w| w["pid"] == pid).expect("spawned workload listed");
    assert_eq!(w["uid"], uid());
    assert_eq!(w["exe"]["path"], std::fs::canonicalize(bin()).unwrap().display().to_string());
    let id = &w["identities"][0];
    assert_eq!(id["spiffe_id"], format!("spiffe://{TD}/agents/support"));
    assert_eq!(id["kind"], "x509");
    assert_eq!(id["owner"], "support-team@example.org");
    assert_eq!(id["status"], "active");
    assert!(id["serial"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(id["expires_at"].as_u64().unwrap() > now_unix());
    let started = w["start_time"].as_u64().unwrap();
    assert!(started <= now_unix() && now_unix() - started < 120, "start time {started}");
    assert!(w["connected_since"].as_u64().unwrap() >= started);

    // The text form names it too.
    let text = Command::new(bin()).args(["inventory", "--admin-socket"]).arg(d.admin_socket()).output().unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains(&format!("pid {pid} ")) && text.contains("owner=support-team@example.org"), "{text}");

    // Exit (SIGKILL: no goodbye on the connection); not reaped yet, it is a zombie.
    let t0 = Instant::now();
    child.kill().unwrap();
    let deadline = t0 + Duration::from_secs(5);
    while workload_pids(&inventory_json(&d)).contains(&pid) {
        assert!(Instant::now() < deadline, "exited workload still listed");
    }
    let delay = t0.elapsed();
    eprintln!("measured: exited workload left the inventory after {delay:?}");
    assert!(delay < Duration::from_secs(1), "took {delay:?}");
    child.wait().unwrap();
}

/// Let uid 65534 reach sockets in the daemon's directory (the data dir stays private).
fn open_dir_to_others(d: &Daemon) {
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn refusals_are_listed_with_uid_exe_and_reason() {
    let d = Daemon::start(&owned_entry());
    open_dir_to_others(&d);
    let out = as_nobody(bin(), None).args(["api", "fetch", "x509", "--socket"]).arg(&d.socket).output().unwrap();
    assert!(!out.status.success());
    let doc = inventory_json(&d);
    let r = doc["refusals"].as_array().unwrap().iter().find(|r| r["uid"] == 65534).expect("refusal listed");
    assert_eq!(r["reason"], "no registration entry matches");
    assert_eq!(r["exe"]["path"], std::fs::canonicalize(bin()).unwrap().display().to_string());
    assert!(r["pid"].as_i64().is_some() && r["time"].as_u64().unwrap() <= now_unix());
}

#[test]
fn the_admin_socket_refuses_a_non_root_uid_clearly_and_audits_it() {
    let d = Daemon::start(&owned_entry());
    open_dir_to_others(&d);
    let admin = d.admin_socket();
    let nobody_admin =
        |args: &[&str]| as_nobody(bin(), None).args(args).arg("--admin-socket").arg(&admin).output().unwrap();
    // Mode 0600: the kernel refuses the connection; the CLI says what the socket serves.
    let out = nobody_admin(&["inventory"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("permission denied on the admin socket") && err.contains("admin_socket_group"), "{err}");

    // A mode loosened by mistake: the daemon's peer-credential check still refuses, and audits.
    std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o666)).unwrap();
    for args in [&["inventory"][..], &["revoke", "--spiffe-id", "spiffe://test.example/x", "--reason", "r"][..]] {
        let out = nobody_admin(args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("serves only root") && err.contains("403"), "{err}");
    }
    eventually("admin refusal audited", Duration::from_secs(5), || {
        std::fs::read_to_string(d.audit_log()).unwrap_or_default().lines().any(|l| {
            l.contains("\"event\":\"admin_refused\"") && l.contains("\"uid\":65534") && l.contains("/revocations")
        })
    });
    // Nothing was revoked.
    let list = tessera(&["revoke", "--list", "--admin-socket", admin.to_str().unwrap()]);
    assert!(list.status.success() && list.stdout.is_empty(), "{list:?}");
}

#[test]
fn check_reports_bad_owner_metadata_and_deny_rules_with_file_line_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    std::fs::write(
        &cfg,
        "trust_domain = \"example.org\"\n\
         [[entries]]\n\
         spiffe_id = \"spiffe://example.org/a\"\n\
         selectors = [\"unix:uid:1\"]\n\
         owner = \"\"\n\
         metadata = { risk = 3, limits = { a = \"b\" } }\n\
         [[deny]]\n\
         selector = \"bogus:sha256:abc\"\n\
         reason = \"r\"\n",
    )
    .unwrap();
    let out = tessera(&["check", "--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let file = cfg.display().to_string();
    for want in [
        format!("{file}:5: entries[0].owner: owner is empty"),
        format!("{file}:6: entries[0].metadata.risk"),
        format!("{file}:6: entries[0].metadata.limits"),
        format!("{file}:8: deny[0].selector: unknown selector type \"bogus\""),
    ] {
        assert!(err.contains(&want), "missing {want:?} in {err}");
    }
    assert_eq!(err.matches("fix: ").count(), 4, "{err}");

    // Without an owner: a located warning; with require_owner = true: an error.
    let plain = "trust_domain = \"example.org\"\n[[entries]]\nspiffe_id = \"spiffe://example.org/a\"\nselectors = [\"unix:uid:1\"]\n";
    std::fs::write(&cfg, plain).unwrap();
    let out = tessera(&["check", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("warning: {file}:2: entries[0]: entry has no owner")), "{stdout}");
    std::fs::write(&cfg, format!("require_owner = true\n{plain}")).unwrap();
    let out = tessera(&["check", "--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("require_owner = true"));
}
