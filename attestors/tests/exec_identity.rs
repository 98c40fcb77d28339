//! Identity does not follow an exec: a process pinned as a socket peer with the executable it
//! ran at accept gets no identity once it runs another image.

mod common;

use common::*;
use nix::sys::socket::{getsockopt, sockopt};
use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tessera_attestors::{AttestError, ExeIdentity, PeerCredentials, ProcessHandle, verify_exe_identity};

/// A shell that connects to `sock` (through python, which then execs back into a plain wait),
/// as the daemon would see it: SO_PEERCRED + SO_PEERPIDFD + the exe identity at accept.
fn peer_running(dir: &Path, script: &str) -> (Ready, PeerCredentials) {
    let path = dir.join("api.sock");
    let listener = UnixListener::bind(&path).unwrap();
    // python connects, keeps the socket open across exec (inheritable fd), then execs `sh -c
    // script`: the connecting process and the exec'd one are the same pid.
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args([
        "-c",
        "import os, socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); \
         os.set_inheritable(s.fileno(), True); os.execv('/bin/sh', ['sh', '-c', sys.argv[2]])",
    ])
    .arg(&path)
    .arg(script);
    let child = spawn_ready(&mut cmd);
    let (stream, _) = listener.accept().unwrap();
    let cred = getsockopt(&stream, sockopt::PeerCredentials).unwrap();
    let pidfd = getsockopt(&stream, sockopt::PeerPidfd).ok();
    let exe = ExeIdentity::of_peer(cred.pid(), pidfd.as_ref());
    let pidfd_from_kernel = pidfd.is_some();
    (child, PeerCredentials { pid: Some(cred.pid()), uid: cred.uid(), gid: cred.gid(), pidfd, pidfd_from_kernel, exe })
}

fn wait_for_exe(pid: i32, suffix: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|l| l.to_string_lossy().ends_with(suffix)) {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} never exec'd {suffix}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn an_exec_after_accept_gets_no_identity() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, peer) = peer_running(dir.path(), "echo ready; read x; exec sleep 30");
    let pid = child.pid();
    // At accept the peer may still be python (it execs sh right after connecting): pin the
    // identity only once it runs sh, as a daemon accepting later would.
    wait_for_exe(pid, "dash");
    let peer = PeerCredentials { exe: ExeIdentity::of_peer(pid, peer.pidfd.as_ref()), ..peer };
    let accepted = peer.exe.expect("exe identity at accept");
    let handle = ProcessHandle::from_peer(peer).unwrap();
    assert_eq!(handle.exe_identity(), Some(accepted));
    let attestor = attestor();
    attestor.attest(&handle).unwrap();
    handle.verify_exe().unwrap();

    child.child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    wait_for_exe(pid, "sleep");
    let err = attestor.attest(&handle).unwrap_err();
    assert!(matches!(err, AttestError::ExecutableChanged { pid: p, .. } if p == pid), "{err}");
    assert!(err.to_string().contains("exec'd since its connection was accepted"), "{err}");
    assert!(matches!(handle.verify_alive(), Err(AttestError::ExecutableChanged { .. })));
    assert!(matches!(handle.verify_exe(), Err(AttestError::ExecutableChanged { .. })));
}

#[test]
fn an_exec_after_the_identity_was_taken_is_refused_by_attestation_and_by_the_poll() {
    // The identity recorded at accept is python's; the process has exec'd sh since: pinning
    // reads it, and the attestation that follows refuses it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args([
        "-c",
        "import os, socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); \
         print('ready', flush=True); sys.stdin.readline(); \
         os.set_inheritable(s.fileno(), True); os.execv('/bin/sh', ['sh', '-c', 'read x'])",
    ])
    .arg(&path);
    let mut child = spawn_ready(&mut cmd);
    let (stream, _) = listener.accept().unwrap();
    let cred = getsockopt(&stream, sockopt::PeerCredentials).unwrap();
    let pidfd = getsockopt(&stream, sockopt::PeerPidfd).ok();
    let exe = ExeIdentity::of_peer(cred.pid(), pidfd.as_ref()).unwrap();
    let live_pidfd = pidfd.as_ref().map(|fd| fd.try_clone().unwrap()).unwrap();
    verify_exe_identity(cred.pid(), &live_pidfd, exe).unwrap();

    child.child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    wait_for_exe(cred.pid(), "dash");
    assert!(matches!(verify_exe_identity(cred.pid(), &live_pidfd, exe), Err(AttestError::ExecutableChanged { .. })));
    let peer = PeerCredentials {
        pid: Some(cred.pid()),
        uid: cred.uid(),
        gid: cred.gid(),
        pidfd,
        pidfd_from_kernel: true,
        exe: Some(exe),
    };
    let handle = ProcessHandle::from_peer(peer).unwrap();
    assert!(matches!(attestor().attest(&handle), Err(AttestError::ExecutableChanged { .. })));
    assert!(matches!(handle.verify_alive(), Err(AttestError::ExecutableChanged { .. })));
}

#[test]
fn re_exec_of_the_same_binary_is_caught_by_the_layout_under_aslr() {
    if std::fs::read_to_string("/proc/sys/kernel/randomize_va_space").is_ok_and(|v| v.trim() == "0") {
        eprintln!("ASLR is off on this machine; the layout fields cannot tell execs apart");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut child, peer) = peer_running(dir.path(), "echo ready; read x; exec /bin/sh -c 'read y'");
    let pid = child.pid();
    wait_for_exe(pid, "dash");
    let peer = PeerCredentials { exe: ExeIdentity::of_peer(pid, peer.pidfd.as_ref()), ..peer };
    let handle = ProcessHandle::from_peer(peer).unwrap();
    child.child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    // Same binary: wait for the cmdline to change instead.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read(format!("/proc/{pid}/cmdline")).unwrap().starts_with(b"/bin/sh\0") {
        assert!(Instant::now() < deadline, "never re-exec'd");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
        std::fs::read_link("/bin/sh").map(|l| Path::new("/bin").join(l)).unwrap().canonicalize().unwrap()
    );
    assert!(matches!(handle.verify_exe(), Err(AttestError::ExecutableChanged { .. })));
}
