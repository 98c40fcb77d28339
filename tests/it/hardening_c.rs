//! A local attacker against the sockets and tokens added since the first hardening round: each
//! test drives the real daemon with real processes, as uid 65534 where the attack needs another
//! user, and checks the audit log as a security engineer reads it.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers: a panic is the test failing")]

use crate::common::*;
use futures::StreamExt;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn verify_audit(d: &Daemon) {
    let out = Command::new(bin()).args(["audit", "verify"]).arg(d.data_dir()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The sum of a JSON object's number values.
fn total(v: &Value) -> u64 {
    v.as_object().map(|o| o.values().filter_map(Value::as_u64).sum()).unwrap_or(0)
}

/// A uid with no entry floods the token socket on one keep-alive connection, the admin socket
/// (its mode loosened by mistake) and the Workload API: every kind of refusal, and the
/// `attested` line of each refused caller, counts against one per-uid budget; the rest is counted
/// in `refused_suppressed` lines (by event), so nothing is lost and the log does not grow with
/// the flood. Before: 2 lines per refused exchange (attested, delegation_refused), every one
/// written (16,549 exchanges in 10 s gave 33,119 lines, 160 MB).
#[test]
fn every_refusal_kind_counts_against_the_uids_audit_budget() {
    if !attacks_possible() {
        return;
    }
    let mut d = Daemon::start(&format!(
        "jwt_issuer = \"https://tessera.test\"\n\
         [[entries]]\nspiffe_id = \"spiffe://{TD}/agent\"\nselectors = [\"unix:uid:{}\", \"unix:path:/nonexistent\"]\n\
         [entries.delegation]\nfrom = [\"spiffe://{TD}/other\"]\nscopes = [\"s\"]\naudiences = [\"https://api\"]\n",
        uid()
    ));
    let (token, admin) = (d.dir.path().join("token.sock"), d.dir.path().join("admin.sock"));
    eventually("token socket", Duration::from_secs(10), || std::os::unix::net::UnixStream::connect(&token).is_ok());
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o666)).unwrap();

    let out =
        as_nobody(PYTHON, None).arg(support("refusal_flood.py")).arg(&token).arg(&admin).arg("3").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sent: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (n_token, n_admin) = (total(&sent["token"]), total(&sent["admin"]));
    assert_eq!(sent["token"]["400"].as_u64(), Some(n_token), "{sent}");
    assert_eq!(sent["admin"]["403"].as_u64(), Some(n_admin), "{sent}");
    // Refused Workload API calls too (each an attested line and a refused line).
    let api_calls = 10;
    for _ in 0..api_calls {
        let out = as_nobody(bin(), None).args(["api", "fetch", "x509", "--socket"]).arg(&d.socket).output().unwrap();
        assert!(!out.status.success());
    }
    // The counts are written when the window ends, or at shutdown (as here).
    assert!(d.stop().success());

    let lines = d.audit_json();
    let mine = |l: &Value| l["uid"] == NOBODY || l["agent"]["uid"] == NOBODY;
    let kinds = ["attested", "refused", "delegation_refused", "admin_refused"];
    let recorded = |kind: &str| lines.iter().filter(|l| l["event"] == kind && mine(l)).count() as u64;
    let written: u64 = kinds.iter().map(|k| recorded(k)).sum();
    assert!(written <= 20, "{written} refusal lines for uid {NOBODY}: the per-uid budget is 20 a minute");
    let suppressed: Vec<&Value> =
        lines.iter().filter(|l| l["event"] == "refused_suppressed" && l["uid"] == NOBODY).collect();
    let counted = |kind: &str| suppressed.iter().map(|l| l["events"][kind].as_u64().unwrap_or(0)).sum::<u64>();
    assert_eq!(recorded("delegation_refused") + counted("delegation_refused"), n_token);
    assert_eq!(recorded("admin_refused") + counted("admin_refused"), n_admin);
    for kind in ["attested", "refused"] {
        assert_eq!(recorded(kind) + counted(kind), n_token + api_calls, "{kind}");
    }
    let bytes = std::fs::metadata(d.audit_log()).unwrap().len();
    eprintln!(
        "measured: {n_token} exchanges, {n_admin} admin requests and {api_calls} fetches from uid {NOBODY}: \
         {written} refusal lines, {} counted, audit log {bytes} bytes",
        suppressed.iter().map(|l| total(&l["events"])).sum::<u64>()
    );
    assert!(n_token > 100, "the flood ran: {sent}");
    assert!(bytes < 64 * 1024, "{bytes} bytes of audit log");
    assert!(
        lines.iter().filter(|l| kinds.contains(&l["event"].as_str().unwrap())).all(|l| l.to_string().len() <= 4096)
    );
    verify_audit(&d);
}

/// Runs `script` (a copy of exec_after_connect.py) with `env` in `--stay` mode, so that the
/// python3 process running it holds a Workload API connection relayed on a bridge socket.
fn python_on_bridge(d: &Daemon, script: &Path, bridge: &Path, env: &[(&str, &str)], later: &[&str]) -> (Child, i32) {
    let mut cmd = Command::new(PYTHON);
    cmd.env_remove("LD_LIBRARY_PATH").envs(env.iter().copied()).arg(script).arg(&d.socket).arg(bridge);
    if later.is_empty() {
        cmd.arg("--stay");
    } else {
        cmd.arg("--later").args(later);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    let pid = line.trim().strip_prefix("ready ").unwrap_or_else(|| panic!("bridge not ready: {line:?}"));
    (child, pid.parse().unwrap())
}

async fn bridge_client(bridge: &Path) -> spiffe::WorkloadApiClient {
    spiffe::WorkloadApiClient::connect_to(format!("unix:{}", bridge.display())).await.unwrap()
}

/// `tessera revoke --selector script:sha256:<evil.py>` holds against `PYTHONPATH=/x python3
/// evil.py` (whose script selectors the script attestor withholds) under an entry that selects
/// by uid and the interpreter's digest. Before: the SVID was issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_digest_revocation_holds_when_the_script_attestor_withholds() {
    if !Path::new(PYTHON).exists() {
        eprintln!("SKIP: needs {PYTHON}");
        return;
    }
    let python = sha256_hex(&std::fs::read(std::fs::canonicalize(PYTHON).unwrap()).unwrap());
    let d = Daemon::start(&format!(
        "[[entries]]\nspiffe_id = \"spiffe://{TD}/py\"\nselectors = [\"unix:uid:{}\", \"unix:sha256:{python}\"]\n",
        uid()
    ));
    let relay = std::fs::read_to_string(support("exec_after_connect.py")).unwrap();
    let (evil, good) = (d.dir.path().join("evil.py"), d.dir.path().join("good.py"));
    std::fs::write(&evil, format!("# evil\n{relay}")).unwrap();
    std::fs::write(&good, format!("# good\n{relay}")).unwrap();
    let evil_digest = sha256_hex(&std::fs::read(&evil).unwrap());
    let out = Command::new(bin())
        .args(["revoke", "--selector", &format!("script:sha256:{evil_digest}"), "--reason", "evil.py leaked"])
        .arg("--admin-socket")
        .arg(d.dir.path().join("admin.sock"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // (case, script, environment, the refusing rule's id as the audit log names it)
    type Case<'a> = (&'a str, &'a Path, &'a [(&'a str, &'a str)], Option<&'a str>);
    let cases: [Case<'_>; 4] = [
        ("good.py", &good, &[], None),
        ("evil.py", &evil, &[], Some("revoked by rule r-")),
        ("PYTHONPATH=/x evil.py", &evil, &[("PYTHONPATH", "/x")], Some("-digest-unavailable")),
        // Fail closed: while the rule stands, no interpreter without a script digest gets one.
        ("PYTHONPATH=/x good.py", &good, &[("PYTHONPATH", "/x")], Some("-digest-unavailable")),
    ];
    for (i, (name, script, env, refusal)) in cases.into_iter().enumerate() {
        let bridge = d.dir.path().join(format!("bridge-{i}.sock"));
        let (mut child, pid) = python_on_bridge(&d, script, &bridge, env, &[]);
        let result = bridge_client(&bridge).await.fetch_x509_svid().await;
        let _ = child.kill();
        let _ = child.wait();
        match (refusal, result) {
            (None, Ok(svid)) => assert_eq!(svid.spiffe_id().to_string(), format!("spiffe://{TD}/py"), "{name}"),
            (Some(want), Err(e)) => {
                assert_eq!(status_code(&e), Some(tonic::Code::PermissionDenied), "{name}: {e:?}");
                // The rule that refused it, as the audit log names it.
                eventually(&format!("{name}: a refusal by {want}"), Duration::from_secs(5), || {
                    d.audit_json().iter().any(|l| {
                        l["event"] == "refused"
                            && l["reason"].as_str().is_some_and(|r| r.contains(want))
                            && l["pid"] == pid
                    })
                });
            }
            (want, got) => panic!("{name}: wanted refusal {want:?}, got {:?}", got.map(|s| s.spiffe_id().to_string())),
        }
    }
}

/// Once the process that connected to the admin socket is gone, a later owner of its pid does
/// not decide the request: groups are read through the connection's pidfd. Before: 403 while
/// the connecting process lived, then 200 once a process in admin_socket_group took its pid.
#[test]
fn admin_groups_are_the_connecting_processs_not_a_later_owner_of_its_pid() {
    if !attacks_possible() {
        return;
    }
    const GROUP: u32 = 4243;
    let d = Daemon::start(&format!("admin_socket_group = {GROUP}\n"));
    let admin = d.dir.path().join("admin.sock");
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The mistake the check guards against: the socket's mode loosened.
    std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o666)).unwrap();
    let ns_last_pid = Path::new("/proc/sys/kernel/ns_last_pid");
    let mut last_status = None;
    for _attempt in 0..5 {
        let mut attacker = as_nobody(PYTHON, None)
            .arg(support("admin_after_exit.py"))
            .arg(&admin)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(attacker.stdout.take().unwrap());
        // Held apart: `wait` would close it, and the forked child reads it.
        let mut stdin = attacker.stdin.take().unwrap();
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let pid: i32 = line.trim().strip_prefix("connected ").unwrap_or_else(|| panic!("{line:?}")).parse().unwrap();
        // The connecting process exits (reaped here); a process of admin_socket_group takes its
        // pid (the next pid the kernel hands out, set through ns_last_pid).
        attacker.wait().unwrap();
        if std::fs::write(ns_last_pid, (pid - 1).to_string()).is_err() {
            eprintln!("SKIP: cannot set {}", ns_last_pid.display());
            return;
        }
        let mut reuser = as_nobody("/usr/bin/sleep", Some(GROUP)).arg("30").spawn().unwrap();
        let reused = reuser.id() as i32 == pid;
        if reused {
            // setpriv has set the groups (it execs sleep only after that).
            eventually("the reusing process runs in the group", Duration::from_secs(5), || {
                std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e.ends_with("sleep"))
            });
        }
        // The child of the connecting process sends the request now.
        writeln!(stdin, "go").unwrap();
        line.clear();
        out.read_line(&mut line).unwrap();
        let _ = reuser.kill();
        let _ = reuser.wait();
        if reused {
            last_status = Some(line.trim().to_owned());
            break;
        }
        // Another process took the pid first: try again.
    }
    let Some(status) = last_status else {
        eprintln!("SKIP: the pid was never reused by the group member in 5 attempts");
        return;
    };
    assert_eq!(status, "status 403", "the later owner of the pid decided the request");
    eventually("admin_refused audit line", Duration::from_secs(5), || {
        d.audit_json().iter().any(|l| l["event"] == "admin_refused" && l["uid"] == NOBODY)
    });
}

/// An exec on an open stream is audited as drift, naming the executable before and after, then
/// as withdrawn. Before: only the `withdrawn` line ("exec'd since …").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_on_an_open_stream_is_a_drift_line_naming_both_executables() {
    if !Path::new(PYTHON).exists() {
        eprintln!("SKIP: needs {PYTHON}");
        return;
    }
    let d = Daemon::start(&format!(
        "[[entries]]\nspiffe_id = \"spiffe://{TD}/py\"\nselectors = [\"unix:uid:{}\"]\n",
        uid()
    ));
    let bridge = d.dir.path().join("bridge.sock");
    let sleep = std::fs::canonicalize("/bin/sleep").unwrap();
    let (mut child, pid) =
        python_on_bridge(&d, &support("exec_after_connect.py"), &bridge, &[], &[sleep.to_str().unwrap(), "30"]);
    let client = bridge_client(&bridge).await;
    let mut stream = Box::pin(client.stream_x509_contexts().await.unwrap());
    stream.next().await.unwrap().unwrap();
    // The process holding the stream execs sleep.
    writeln!(child.stdin.as_mut().unwrap(), "exec").unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap().unwrap();
    // An attestation failure, as SPIRE answers one: Unavailable.
    assert_eq!(status_code(&end.unwrap_err()), Some(tonic::Code::Unavailable));
    let _ = child.kill();
    let _ = child.wait();
    eventually("drift and withdrawn lines", Duration::from_secs(5), || {
        let lines = d.audit_json();
        ["drift", "withdrawn"].iter().all(|e| lines.iter().any(|l| l["event"] == *e && l["pid"] == pid))
    });
    let lines = d.audit_json();
    let drift = lines.iter().find(|l| l["event"] == "drift" && l["pid"] == pid).unwrap();
    assert_eq!(drift["reason"], "exec", "{drift}");
    let python = std::fs::canonicalize(PYTHON).unwrap();
    assert_eq!(drift["exe_before"]["path"], python.to_str().unwrap(), "{drift}");
    assert!(drift["exe_before"]["sha256"].is_string() || drift["exe_before"]["sha256"].is_null());
    assert_eq!(drift["exe_after"]["path"], sleep.to_str().unwrap(), "{drift}");
    // Nothing of the new executable is attested: no selectors added.
    assert_eq!(drift["new"], serde_json::json!([]), "{drift}");
    assert!(drift["old"].as_array().unwrap().iter().any(|s| s == &format!("unix:path:{}", python.display())));
    assert_eq!(drift["entries_before"][0], format!("spiffe://{TD}/py"));
    // Drift first, then the withdrawal.
    let pos = |e: &str| lines.iter().position(|l| l["event"] == e && l["pid"] == pid).unwrap();
    assert!(pos("drift") < pos("withdrawn"));
}

/// `tessera run` in dev mode beside a running one: refused before the banner and before anything
/// is written (no CA in a second data directory). Before: the full banner, and a new CA created
/// before the socket was found taken.
#[test]
fn a_second_dev_mode_daemon_refuses_before_writing_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, state) = (tmp.path().join("run"), tmp.path().join("state"));
    let dev = |state: &Path| {
        let mut c = Command::new(bin());
        c.arg("run").env("XDG_RUNTIME_DIR", &run).env("XDG_STATE_HOME", state).env_remove("SPIFFE_ENDPOINT_SOCKET");
        c
    };
    let log = std::fs::File::create(tmp.path().join("first.log")).unwrap();
    let mut first = dev(&state).stderr(log).spawn().unwrap();
    wait_for_socket(&run.join("tessera/api.sock"), &mut first, &tmp.path().join("first.log"));

    // The same data directory and socket.
    let out = dev(&state).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("already serving"), "{err}");
    assert!(!err.contains("DEV MODE") && !err.contains("In another terminal"), "the banner came first: {err}");
    // Its own data directory, the same socket: no CA made there.
    let other = tmp.path().join("other-state");
    let out = dev(&other).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("already serving"), "{err}");
    assert!(!other.join("tessera/ca.json").exists(), "a CA was created before refusing");
    // The first one serves on.
    assert!(first.try_wait().unwrap().is_none());
    let _ = first.kill();
    let _ = first.wait();
}
