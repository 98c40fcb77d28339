//! Cedar policies (`[policy]`) through the real daemon: Workload API fetches allowed and denied by
//! owner and entity tags, log mode allowing and auditing `would_deny`, a reload re-deciding an
//! open stream, a policy that does not load refused with its location (the last good set stays),
//! and `tessera policy check|explain|schema`.

#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] fns: a failed unwrap is a failed test")]

use crate::common::*;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Two entries for this uid: one owned by team-a with risk "low", one by team-b with risk "high".
fn entries() -> String {
    format!(
        r#"[[entries]]
spiffe_id = "spiffe://{TD}/agents/low"
selectors = ["unix:uid:{uid}"]
owner = "team-a"
metadata = {{ risk = "low" }}

[[entries]]
spiffe_id = "spiffe://{TD}/agents/high"
selectors = ["unix:uid:{uid}"]
owner = "team-b"
metadata = {{ risk = "high" }}
"#,
        uid = uid()
    )
}

const POLICIES: &str = r#"
@id("owned-agents-may-fetch")
permit (principal, action in [Action::"fetch_x509", Action::"fetch_jwt"], resource)
  when { principal has owner };
@id("no-high-risk")
forbid (principal, action, resource) when { principal.hasTag("risk") && principal.getTag("risk") == "high" };
@id("only-api-audience")
forbid (principal, action == Action::"fetch_jwt", resource) unless { resource == Audience::"api" };
"#;

fn start(mode: &str, policies: &str) -> Daemon {
    let d = Daemon::configure("");
    let dir = d.dir.path().join("policy");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("main.cedar"), policies).unwrap();
    let mut d = d;
    d.rewrite_config(&format!("[policy]\nfiles = [\"policy/*.cedar\"]\nmode = \"{mode}\"\n{}", entries()));
    d.spawn();
    d
}

fn ids(svids: &[spiffe::X509Svid]) -> Vec<String> {
    svids.iter().map(|s| s.spiffe_id().to_string()).collect()
}

#[tokio::test]
async fn fetches_are_allowed_and_denied_by_owner_and_tags_and_audited() {
    let d = start("enforce", POLICIES);
    let client = d.client().await;
    // The high-risk entry is withheld; the low-risk one is served.
    let svids = client.fetch_all_x509_svids().await.unwrap();
    assert_eq!(ids(&svids), vec![format!("spiffe://{TD}/agents/low")]);
    // A JWT-SVID for "api" only.
    let jwt = client.fetch_jwt_svid(&["api"], None).await.unwrap();
    assert_eq!(jwt.spiffe_id().to_string(), format!("spiffe://{TD}/agents/low"));
    let err = client.fetch_jwt_svid(&["payments"], None).await.unwrap_err();
    assert_eq!(status_code(&err), Some(tonic::Code::PermissionDenied), "{err:?}");

    let issued = d.audit_events("issued");
    let x509 = issued.iter().find(|l| l["rpc"] == "FetchX509SVID").unwrap();
    assert_eq!(x509["policy_decision"], "allow");
    assert_eq!(x509["policies"], serde_json::json!(["owned-agents-may-fetch"]));
    eventually("the refusal of the payments audience is audited", Duration::from_secs(5), || {
        d.audit_events("refused").iter().any(|l| {
            l["action"] == "fetch_jwt"
                && l["policy_decision"] == "deny"
                && l["policies"].as_array().unwrap().iter().any(|p| p == "only-api-audience")
        })
    });
}

#[tokio::test]
async fn log_mode_allows_and_audits_would_deny() {
    let d = start("log", POLICIES);
    let client = d.client().await;
    let svids = client.fetch_all_x509_svids().await.unwrap();
    assert_eq!(svids.len(), 2, "log mode withholds nothing");
    let line = d.audit_events("issued").into_iter().find(|l| l["rpc"] == "FetchX509SVID").unwrap();
    assert_eq!(line["policy_decision"], "would_deny", "{line}");
    assert!(line["policies"].as_array().unwrap().iter().any(|p| p == "no-high-risk"), "{line}");
}

#[tokio::test]
async fn a_reload_re_decides_open_streams_and_a_bad_policy_keeps_the_last_good_set() {
    let d = start("enforce", POLICIES);
    let mut watch = spawn_watch_drained(&d, Stdio::piped(), "Received ");
    let file = d.dir.path().join("policy/main.cedar");

    // A policy that does not validate: refused with its location; the set in force stays.
    replace_file(&file, "permit (principal, action, resource) when { principal.team == \"x\" };\n");
    eventually("the bad policy is refused", Duration::from_secs(5), || {
        d.audit_events("reload_refused").iter().any(|l| {
            let r = l["reason"].as_str().unwrap_or_default();
            r.contains("main.cedar:1") && r.contains("column") && r.contains("team")
        })
    });
    assert!(watch.try_wait().unwrap().is_none(), "the stream stays open under the last good set");
    assert_eq!(d.client().await.fetch_all_x509_svids().await.unwrap().len(), 1);

    // Forbid every fetch: the open stream ends with PermissionDenied within a second.
    let t0 = Instant::now();
    replace_file(
        &file,
        &format!("{POLICIES}\n@id(\"freeze\")\nforbid (principal, action == Action::\"fetch_x509\", resource);\n"),
    );
    let status = loop {
        if let Some(s) = watch.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "the stream was still open after 10 s");
        std::thread::sleep(Duration::from_millis(5));
    };
    let delay = t0.elapsed();
    let mut err = String::new();
    watch.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("permission") && err.contains("freeze"), "{err}");
    eprintln!("measured: policy change ended an open stream after {delay:?}");
    assert!(delay < Duration::from_secs(1), "{delay:?}");
}

#[test]
fn policy_check_explain_and_schema() {
    let d = Daemon::configure("");
    let dir = d.dir.path().join("policy");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("main.cedar"), POLICIES).unwrap();
    d.rewrite_config(&format!("[policy]\nfiles = [\"policy/*.cedar\"]\n{}", entries()));
    let run = |args: &[&str]| Command::new(bin()).args(args).output().unwrap();
    let config = d.config.to_str().unwrap();

    let out = run(&["policy", "check", "--config", config]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("3 policies"), "{stdout}");

    let req = d.dir.path().join("req.json");
    std::fs::write(&req, format!(r#"{{"principal":"spiffe://{TD}/agents/high","action":"fetch_x509"}}"#)).unwrap();
    let out = run(&["policy", "explain", req.to_str().unwrap(), "--config", config, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["policy_decision"], "deny");
    assert_eq!(v["policies"], serde_json::json!(["no-high-risk"]));

    let out = run(&["policy", "schema"]);
    let schema = String::from_utf8_lossy(&out.stdout);
    for needle in ["entity Agent", "action delegate", "action serve", "tags String"] {
        assert!(schema.contains(needle), "{needle}: {schema}");
    }

    // A policy that permits everything is warned about; one that does not parse is located.
    std::fs::write(dir.join("open.cedar"), "permit (principal, action, resource);\n").unwrap();
    let out = run(&["policy", "check", "--config", config]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("permits every agent"));
    std::fs::write(dir.join("broken.cedar"), "permit (principal, action resource);\n").unwrap();
    let out = run(&["policy", "check", "--config", config]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("broken.cedar:1") && stderr.contains("column"), "{stderr}");
}
