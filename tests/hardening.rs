//! Issue 9: a local attacker gets no identity. Each test drives the real daemon with real
//! processes as an unprivileged user where the attack needs one.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

const PYTHON: &str = "/usr/bin/python3";
const SETPRIV: &str = "/usr/bin/setpriv";
const NOBODY: u32 = 65534;

/// The attacks below need root (to run the daemon as root and the attacker as another uid).
fn unprivileged_attacks_possible() -> bool {
    if uid() != 0 || !Path::new(PYTHON).exists() || !Path::new(SETPRIV).exists() {
        eprintln!("SKIP: needs root, {PYTHON} and {SETPRIV}");
        return false;
    }
    true
}

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
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/exec_after_connect.py");
    let mut child = Command::new(SETPRIV)
        .args(["--reuid", &NOBODY.to_string(), "--regid", &NOBODY.to_string(), "--clear-groups", PYTHON])
        .arg(&script)
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
    if !unprivileged_attacks_possible() {
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

    // Control: the same trick with an ordinary exec reaches the daemon through the bridge and
    // is refused too, for the exec itself (Medium 9: identity does not follow an exec).
    let bridge = attacker_dir.join("plain-bridge.sock");
    let (mut child, pid) = exec_after_connect(&d, &bridge, Path::new("/bin/sleep"), &["30"]);
    let result = spiffe::WorkloadApiClient::connect_to(format!("unix:{}", bridge.display()))
        .await
        .unwrap()
        .fetch_x509_svid()
        .await;
    kill(&mut child, pid);
    let err = match result {
        Ok(svid) => panic!("an identity was issued after an exec following connect: {}", svid.spiffe_id()),
        Err(e) => e,
    };
    assert_eq!(status_code(&err), Some(tonic::Code::Unavailable), "{err:?}");
    assert!(format!("{err:?}").contains("exec'd since its connection was accepted"), "{err:?}");

    let bridge = attacker_dir.join("suid-bridge.sock");
    let (mut child, pid) = exec_after_connect(&d, &bridge, &suid_sleep, &["30"]);
    // The attack is real only if the kernel honoured the setuid bit.
    let uids = uids_of(pid);
    assert_eq!(uids[1], 0, "setuid exec did not raise the effective uid: {uids:?}");
    assert_eq!(uids[0], NOBODY);
    let result = spiffe::WorkloadApiClient::connect_to(format!("unix:{}", bridge.display()))
        .await
        .unwrap()
        .fetch_x509_svid()
        .await;
    kill(&mut child, pid);
    let err = match result {
        Ok(svid) => panic!("an identity was issued after a setuid exec: {}", svid.spiffe_id()),
        Err(e) => e,
    };
    assert_eq!(status_code(&err), Some(tonic::Code::Unavailable), "{err:?}");
    eventually("refusal audited", std::time::Duration::from_secs(5), || {
        std::fs::read_to_string(d.audit_log()).unwrap_or_default().contains("changed credentials since it connected")
    });
}
