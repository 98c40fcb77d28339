//! A local attacker gets no identity. Each test drives the real daemon with real
//! processes as an unprivileged user where the attack needs one.

use crate::common::*;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Lets uid 65534 traverse the test directory and connect to the socket in it; returns a
/// directory inside it that belongs to 65534.
fn open_to_others(dir: &Path) -> std::path::PathBuf {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let theirs = dir.join("attacker");
    std::fs::create_dir(&theirs).unwrap();
    nix::unistd::chown(&theirs, Some(nix::unistd::Uid::from_raw(NOBODY)), Some(nix::unistd::Gid::from_raw(NOBODY)))
        .unwrap();
    theirs
}

/// Runs `exec_after_connect.py` as uid 65534: connect, fork, exec `program` in the connecting
/// process; the forked child relays the connection on `bridge`. Returns the child and the pid of
/// the process that connected (now running `program`).
fn exec_after_connect(daemon: &Daemon, bridge: &Path, program: &Path, args: &[&str]) -> (Child, i32) {
    let mut child = as_nobody(PYTHON, None)
        .arg(support("exec_after_connect.py"))
        .arg(&daemon.socket)
        .arg(bridge)
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let pid = line.trim().strip_prefix("ready ").unwrap_or_else(|| panic!("bridge not ready: {line:?}"));
    (child, pid.parse().unwrap())
}

/// Real, effective, saved and fs uid of a process.
fn uids_of(pid: i32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().skip(1).map(|v| v.parse().unwrap()).collect()
}

/// One relayed fetch after `exec_after_connect` with `program` (stays alive 30 s): the result and
/// the uids (real, effective, saved, fs) of the process that connected, read before the fetch.
async fn fetch_through_bridge(
    d: &Daemon,
    dir: &Path,
    name: &str,
    program: &Path,
) -> (Result<spiffe::X509Svid, spiffe::WorkloadApiError>, Vec<u32>) {
    let bridge = dir.join(format!("{name}-bridge.sock"));
    let (mut child, pid) = exec_after_connect(d, &bridge, program, &["30"]);
    let uids = uids_of(pid);
    let result = spiffe::WorkloadApiClient::connect_to(format!("unix:{}", bridge.display()))
        .await
        .unwrap()
        .fetch_x509_svid()
        .await;
    kill(&mut child, pid);
    (result, uids)
}

fn kill(child: &mut Child, pid: i32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    let _ = child.kill();
    let _ = child.wait();
}

/// High 1: `nobody` connects, forks a child that keeps the socket, and execs a setuid-root
/// program that stays alive. The child must not receive the `unix:uid:0` identity (nor
/// nobody's: the connecting process is no longer what connected).
#[tokio::test]
async fn a_setuid_exec_after_connect_gets_no_identity() {
    if !attacks_possible() {
        return;
    }
    let d = Daemon::start(&format!(
        "[[entries]]\nspiffe_id = \"spiffe://{TD}/root\"\nselectors = [\"unix:uid:0\"]\n\
         [[entries]]\nspiffe_id = \"spiffe://{TD}/nobody\"\nselectors = [\"unix:uid:{NOBODY}\"]\n"
    ));
    let attacker_dir = open_to_others(d.dir.path());
    // A setuid-root program that stays alive: a setuid copy of sleep, built by the test.
    let suid_sleep = d.dir.path().join("suid-sleep");
    std::fs::copy("/bin/sleep", &suid_sleep).unwrap();
    std::fs::set_permissions(&suid_sleep, std::fs::Permissions::from_mode(0o4755)).unwrap();

    // Control: without any exec, the relayed connection gets nobody's identity (the relay works).
    let (svid, _) = fetch_through_bridge(&d, &attacker_dir, "stay", Path::new("--stay")).await;
    assert_eq!(svid.expect("no exec: nobody's identity").spiffe_id().to_string(), format!("spiffe://{TD}/nobody"));

    // An ordinary exec after connect is refused too (Medium 9: identity does not follow an exec).
    let (result, _) = fetch_through_bridge(&d, &attacker_dir, "plain", Path::new("/bin/sleep")).await;
    let Err(err) = result else { panic!("an identity was issued after an exec following connect") };
    assert_eq!(status_code(&err), Some(tonic::Code::Unavailable), "{err:?}");
    assert!(format!("{err:?}").contains("exec'd since its connection was accepted"), "{err:?}");

    // The setuid exec: neither root's nor nobody's identity.
    let (result, uids) = fetch_through_bridge(&d, &attacker_dir, "suid", &suid_sleep).await;
    // The attack is real only if the kernel honoured the setuid bit.
    assert_eq!((uids[0], uids[1]), (NOBODY, 0), "setuid exec did not raise the effective uid: {uids:?}");
    let err = match result {
        Ok(svid) => panic!("an identity was issued after a setuid exec: {}", svid.spiffe_id()),
        Err(e) => e,
    };
    assert_eq!(status_code(&err), Some(tonic::Code::Unavailable), "{err:?}");
    eventually("refusal audited", std::time::Duration::from_secs(5), || {
        std::fs::read_to_string(d.audit_log()).unwrap_or_default().contains("changed credentials since it connected")
    });
}

/// A flood process as `uid`: `flood.py SOCKET MODE COUNT`; returns it once its flood is in place
/// with the number of its connections the daemon kept.
fn flood(d: &Daemon, uid: u32, mode: &str, count: usize) -> (Child, usize) {
    let script = support("flood.py");
    let mut child = Command::new(SETPRIV)
        .args(["--reuid", &uid.to_string(), "--regid", &uid.to_string(), "--clear-groups", PYTHON])
        .arg(&script)
        .arg(&d.socket)
        .args([mode, &count.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    let kept = line.trim().strip_prefix("ready ").unwrap_or_else(|| panic!("flood {mode} not ready: {line:?}"));
    (child, kept.parse().unwrap())
}

/// Ends a flood; returns how many of its connections the daemon had closed.
fn end_flood(mut child: Child) -> usize {
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|l| l.strip_prefix("closed ")).map(|n| n.trim().parse().unwrap()).unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Legit fetches (as root, over fresh connections): the slowest one's latency.
async fn legit_fetches(d: &Daemon, n: usize) -> std::time::Duration {
    let mut worst = std::time::Duration::ZERO;
    for _ in 0..n {
        let t = std::time::Instant::now();
        let svid = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            d.client().await.fetch_x509_svid().await
        })
        .await
        .expect("a legit fetch finished within 10 s")
        .expect("a legit fetch succeeded");
        assert_eq!(svid.spiffe_id().to_string(), format!("spiffe://{TD}/root"));
        worst = worst.max(t.elapsed());
    }
    worst
}

/// Medium 2 and 3: thousands of idle connections, slowloris connections and one connection with
/// thousands of half-open streams, from three other uids, while root keeps getting its SVID.
#[tokio::test(flavor = "multi_thread")]
async fn floods_from_other_uids_leave_the_api_serving_and_memory_bounded() {
    if !attacks_possible() {
        return;
    }
    let d = Daemon::start(&format!("[[entries]]\nspiffe_id = \"spiffe://{TD}/root\"\nselectors = [\"unix:uid:0\"]\n"));
    open_to_others(d.dir.path());
    let pid = d.child.as_ref().unwrap().id();
    let base_latency = legit_fetches(&d, 5).await;
    let (rss_before, fds_before) = (rss_kib(pid), open_fds(pid));

    let (idle, idle_kept) = flood(&d, NOBODY, "idle", 3000);
    let (slow, slow_kept) = flood(&d, NOBODY - 1, "slowloris", 300);
    let (streams, _) = flood(&d, NOBODY - 2, "streams", 5000);
    let during_latency = legit_fetches(&d, 20).await;
    let (rss_during, fds_during) = (rss_kib(pid), open_fds(pid));
    eprintln!(
        "flood: idle kept {idle_kept}/3000, slowloris kept {slow_kept}/300; legit fetch worst {base_latency:?} before, \
         {during_latency:?} during; RSS {rss_before} KiB before, {rss_during} KiB during; fds {fds_before} → {fds_during}"
    );
    // Per-uid cap: one uid holds at most 1024 connections (2 fds each), and the rest are refused.
    assert!(idle_kept <= 1024, "idle connections kept: {idle_kept}");
    // (plus the legit client's 20 connections, which the daemon may not have closed yet)
    assert!(fds_during <= fds_before + 2 * (1024 + 300 + 1 + 20) + 16, "fds: {fds_before} → {fds_during}");
    assert!(during_latency < std::time::Duration::from_secs(2), "legit fetch took {during_latency:?} during the flood");

    // Connections that send no request in time are closed by the daemon.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while open_fds(pid) > fds_before + 8 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (idle_closed, slow_closed, streams_closed) = (end_flood(idle), end_flood(slow), end_flood(streams));
    eprintln!(
        "flood: the daemon closed {idle_closed} idle, {slow_closed} slowloris, {streams_closed} stream-flood connections"
    );
    assert_eq!(idle_closed, 3000, "every idle connection was refused or timed out");
    assert_eq!(slow_closed, 300, "every slowloris connection timed out");
    eventually("fds back to baseline", std::time::Duration::from_secs(10), || open_fds(pid) <= fds_before + 4);
    let rss_after = rss_kib(pid);
    eprintln!("flood: RSS after {rss_after} KiB (before {rss_before} KiB)");
    assert!(rss_after < rss_before + 32 * 1024, "RSS {rss_before} → {rss_after} KiB");
    legit_fetches(&d, 3).await;
    // Refusals are logged at most once per interval, not per connection.
    let refusals = d.log().matches("connection refused").count();
    assert!(refusals <= 10, "{refusals} refusal lines logged");
}

/// Under a hard fd limit of 1,024 the Workload API fits 128 connections, and
/// one uid may hold a quarter of them (32): uid 65534 holding all it can leaves root's fetch
/// served. (Before, the per-uid cap stayed at the fitted 128, and root's fetch was refused.)
#[tokio::test(flavor = "multi_thread")]
async fn at_a_low_fd_limit_one_uid_holds_a_quarter_of_the_connections_and_root_still_fetches() {
    const PRLIMIT: &str = "/usr/bin/prlimit";
    if !attacks_possible() {
        return;
    }
    if !Path::new(PRLIMIT).exists() {
        eprintln!("SKIP: needs {PRLIMIT}");
        return;
    }
    let mut d =
        Daemon::configure(&format!("[[entries]]\nspiffe_id = \"spiffe://{TD}/root\"\nselectors = [\"unix:uid:0\"]\n"));
    d.spawn_wrapped(&[PRLIMIT, "--nofile=1024:1024", "--"]);
    open_to_others(d.dir.path());
    // Idle connections are closed after 5 s: the fetch below runs while the flood holds its share.
    let (idle, kept) = flood(&d, NOBODY, "idle", 400);
    let fetch = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        let client = spiffe::WorkloadApiClient::connect_to(d.endpoint()).await.map_err(|e| format!("connect: {e}"))?;
        client.fetch_x509_svid().await.map(|svid| svid.spiffe_id().to_string()).map_err(|e| format!("fetch: {e}"))
    })
    .await;
    end_flood(idle);
    eprintln!("fd limit 1024: uid {NOBODY} kept {kept} of 400 idle connections; root's fetch: {fetch:?}");
    assert_eq!(kept, 32, "connections uid {NOBODY} holds");
    let id = fetch.expect("root's fetch finished in time").expect("root's fetch succeeded");
    assert_eq!(id, format!("spiffe://{TD}/root"));
    let log = d.log();
    assert!(
        log.contains("fd_limit=1024 max_connections=128 max_connections_per_uid=32"),
        "fitted limits not logged: {log}"
    );
}

/// Medium 8: audiences are bounded (count and length) with InvalidArgument, so no caller can turn
/// a FetchJWTSVID into a multi-megabyte audit line; the audit stays small.
#[tokio::test]
async fn oversized_audience_lists_are_invalid_argument_and_never_reach_the_audit() {
    let d = Daemon::start(&format!(
        "[[entries]]\nspiffe_id = \"spiffe://{TD}/me\"\nselectors = [\"unix:uid:{}\"]\n",
        uid()
    ));
    let mut raw = raw_client(&d.socket).await;
    let fetch = |audience: Vec<String>| {
        let mut req = tonic::Request::new(tessera::pb::JwtsvidRequest { audience, spiffe_id: String::new() });
        req.metadata_mut().insert("workload.spiffe.io", "true".parse().unwrap());
        req
    };
    let many: Vec<String> = (0..10_000).map(|i| format!("aud-{i}")).collect();
    let err = raw.fetch_jwtsvid(fetch(many)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let long = vec!["x".repeat(1_000_000)];
    let err = raw.fetch_jwtsvid(fetch(long)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    // Within the bounds: a token, and a bounded audit line.
    let ok: Vec<String> = (0..32).map(|i| format!("https://service-{i}.example/{}", "p".repeat(900))).collect();
    let resp = raw.fetch_jwtsvid(fetch(ok)).await.unwrap().into_inner();
    assert_eq!(resp.svids.len(), 1);
    eventually("issuance audited", std::time::Duration::from_secs(5), || {
        std::fs::read_to_string(d.audit_log()).unwrap_or_default().contains("\"kind\":\"jwt_svid\"")
    });
    let audit = std::fs::read_to_string(d.audit_log()).unwrap();
    let longest = audit.lines().map(str::len).max().unwrap_or(0);
    assert!(longest <= 16 * 1024, "an audit line of {longest} bytes");
    assert!(!audit.contains("aud-9999") && !audit.contains(&"x".repeat(2000)));
}

/// Low 12: absurd numbers in `ca.json` (≥ 2^63 seconds) are the documented "corrupt" refusal,
/// not a panic, and the good state still loads afterwards.
#[test]
fn absurd_times_in_ca_json_are_a_corrupt_state_error_not_a_panic() {
    let mut d = Daemon::start(&format!(
        "[[entries]]\nspiffe_id = \"spiffe://{TD}/me\"\nselectors = [\"unix:uid:{}\"]\n",
        uid()
    ));
    d.stop();
    let ca = d.data_dir().join("ca.json");
    let good = std::fs::read_to_string(&ca).unwrap();
    for field in ["active_from", "not_after"] {
        let re = format!("\"{field}\": ");
        let at = good.find(&re).unwrap_or_else(|| panic!("{field} in ca.json")) + re.len();
        let end = at + good[at..].find(|c: char| !c.is_ascii_digit()).unwrap();
        for absurd in ["9223372036854775808", "18446744073709551615"] {
            std::fs::write(&ca, format!("{}{absurd}{}", &good[..at], &good[end..])).unwrap();
            let out = Command::new(bin()).args(["run", "--config"]).arg(&d.config).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{field}={absurd}: {err}");
            assert!(err.contains("is corrupt") && !err.contains("panicked"), "{field}={absurd}: {err}");
        }
    }
    std::fs::write(&ca, &good).unwrap();
    d.spawn();
}
