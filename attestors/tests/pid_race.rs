//! Pid-race safety: evidence about a pid is only used while the pinned process lives.

mod common;

use common::*;
use nix::sys::socket::{getsockopt, sockopt};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;
use tessera_attestors::{AttestError, ExeIdentity, PeerCredentials, ProcessHandle};

/// Spawns shells until one gets `pid`, steering the kernel with `ns_last_pid` (needs root).
fn respawn_with_pid(pid: i32) -> Ready {
    for _ in 0..100 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
        let p = spawn_ready(&mut shell_waiting(Path::new("/bin/dash")));
        if p.pid() == pid {
            return p;
        }
        // Another test thread took the pid first; try again.
    }
    panic!("could not get pid {pid} reused");
}

#[test]
fn reused_pid_gets_no_identity() {
    let attestor = attestor();
    let a = spawn_ready(&mut shell_waiting(Path::new("/bin/dash")));
    let pid = a.pid();
    let pinned = ProcessHandle::open(pid).unwrap();
    assert!(attestor.attest(&pinned).is_ok());

    a.kill_and_reap();
    assert!(matches!(pinned.verify_alive(), Err(AttestError::ProcessGone { .. })));

    let b = respawn_with_pid(pid);
    assert_eq!(b.pid(), pid, "the pid now belongs to another process");
    assert!(matches!(pinned.verify_alive(), Err(AttestError::ProcessGone { .. })));
    assert!(matches!(attestor.attest(&pinned), Err(AttestError::ProcessGone { .. })));

    // The new process, pinned afresh, is attested as itself.
    // (Its start time may well equal the old one: it is in clock ticks, 10 ms. That is why the
    // pidfd and the held /proc dirfd, not the start time, are the primary checks.)
    let fresh = ProcessHandle::open(pid).unwrap();
    assert!(attestor.attest(&fresh).is_ok());
}

#[test]
fn exited_but_unreaped_process_is_gone() {
    let mut a = spawn_ready(&mut shell_waiting(Path::new("/bin/dash")));
    let pinned = ProcessHandle::open(a.pid()).unwrap();
    drop(a.child.stdin.take()); // EOF: `read` returns and the shell exits, left a zombie
    // Wait for the exit without reaping: waitid(WNOWAIT).
    nix::sys::wait::waitid(
        nix::sys::wait::Id::Pid(nix::unistd::Pid::from_raw(a.pid())),
        nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT,
    )
    .unwrap();
    assert!(matches!(pinned.verify_alive(), Err(AttestError::ProcessGone { .. })));
    assert!(attestor().attest(&pinned).is_err());
    assert!(matches!(ProcessHandle::open(a.pid()), Err(AttestError::ProcessGone { .. })));
}

/// A real socket peer: SO_PEERCRED + SO_PEERPIDFD, as the daemon gets them.
fn connect_python_peer(dir: &Path) -> (Ready, PeerCredentials) {
    let path = dir.join("api.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args([
        "-c",
        "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); \
         print('ready', flush=True); sys.stdin.readline()",
    ])
    .arg(&path);
    let child = spawn_ready(&mut cmd);
    let (stream, _) = listener.accept().unwrap();
    let cred = getsockopt(&stream, sockopt::PeerCredentials).unwrap();
    let pidfd = getsockopt(&stream, sockopt::PeerPidfd).ok();
    let pidfd_from_kernel = pidfd.is_some();
    let peer = PeerCredentials {
        pid: Some(cred.pid()),
        uid: cred.uid(),
        gid: cred.gid(),
        pidfd,
        pidfd_from_kernel,
        exe: None,
    };
    (child, peer)
}

#[test]
fn socket_peer_with_pidfd() {
    let dir = tempfile::tempdir().unwrap();
    let (child, peer) = connect_python_peer(dir.path());
    assert!(peer.pidfd.is_some(), "kernel ≥ 6.5 gives SO_PEERPIDFD");
    let handle = ProcessHandle::from_peer(peer).unwrap();
    assert!(handle.pidfd_from_peer());
    assert_eq!(handle.pid(), child.pid());
    let attestor = attestor();
    let x = attestor.attest(&handle).unwrap();
    assert!(x.selectors.contains(&sel("unix:uid:0")));
    assert!(x.selectors.contains(&sel("script:interpreter:python3")));
    child.kill_and_reap();
    assert!(matches!(attestor.attest(&handle), Err(AttestError::ProcessGone { .. })));
}

#[test]
fn socket_peer_pidfd_path_also_compares_credentials() {
    // SO_PEERPIDFD names the right process, but that process may have changed its ids since
    // connect() (a setuid exec): the ids must still match what the kernel reported then.
    let dir = tempfile::tempdir().unwrap();
    let (_child, mut peer) = connect_python_peer(dir.path());
    assert!(peer.pidfd.is_some(), "kernel ≥ 6.5 gives SO_PEERPIDFD");
    peer.gid = 4242;
    // As the daemon pins it (the executable identity taken at accept): refused by the
    // attestation's final check; without that identity, already at pinning.
    let again = PeerCredentials { pidfd: peer.pidfd.as_ref().map(|fd| fd.try_clone().unwrap()), ..peer };
    assert!(matches!(ProcessHandle::from_peer(again), Err(AttestError::CredentialsChanged { .. })));
    peer.exe = ExeIdentity::of_peer(peer.pid.unwrap(), peer.pidfd.as_ref());
    assert!(peer.exe.is_some());
    let handle = ProcessHandle::from_peer(peer).unwrap();
    assert!(matches!(attestor().attest(&handle), Err(AttestError::CredentialsChanged { .. })));
    assert!(matches!(handle.verify_alive(), Err(AttestError::CredentialsChanged { .. })));
}

#[test]
fn socket_peer_fallback_without_pidfd_checks_uid() {
    let dir = tempfile::tempdir().unwrap();
    let (_child, mut peer) = connect_python_peer(dir.path());
    peer.pidfd = None;
    let pid = peer.pid;
    let handle = ProcessHandle::from_peer(peer).unwrap();
    assert!(!handle.pidfd_from_peer());
    assert!(attestor().attest(&handle).is_ok());

    // Credentials that do not match the process now at that pid (a recycled pid, or a process
    // that changed ids after connecting): no identity.
    let wrong = PeerCredentials { pid, uid: 4242, gid: 4242, pidfd: None, pidfd_from_kernel: false, exe: None };
    assert!(matches!(ProcessHandle::from_peer(wrong), Err(AttestError::CredentialsChanged { .. })));
    let no_pid = PeerCredentials { pid: None, uid: 0, gid: 0, pidfd: None, pidfd_from_kernel: false, exe: None };
    assert!(matches!(ProcessHandle::from_peer(no_pid), Err(AttestError::NoPid)));
}

/// A pidfd that names another process than the pid (as under a /proc of another pid namespace
/// than the daemon's, where the number shows someone else): refused before anything is read
/// under that number, since the executable identity must then be taken from /proc now.
#[test]
fn a_pidfd_naming_another_process_than_the_pid_is_refused() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let (_a, peer_a) = connect_python_peer(dir_a.path());
    let (b, _peer_b) = connect_python_peer(dir_b.path());
    assert!(peer_a.pidfd_from_kernel, "kernel ≥ 6.5 gives SO_PEERPIDFD");
    let mixed = PeerCredentials { pid: Some(b.pid()), ..peer_a };
    assert!(matches!(ProcessHandle::from_peer(mixed), Err(AttestError::PidfdMismatch { .. })));
}
