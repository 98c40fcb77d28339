//! Tests of loopback TCP attribution, against real client processes (python3) that say when they
//! have connected.

use super::*;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdout, Command, Stdio};

/// A client process, killed (with any pids it reported) when dropped.
struct Client {
    child: Child,
    out: BufReader<ChildStdout>,
    also_kill: Vec<i32>,
}

impl Client {
    /// Runs `script` (python, with `PORT` and `HOST` set) and waits for its first line.
    fn spawn(host: &str, port: u16, script: &str, uid: Option<u32>) -> (Self, String) {
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg("-c").arg(format!("HOST={host:?}\nPORT={port}\n{script}")).stdout(Stdio::piped()).stdin(Stdio::null());
        if let Some(uid) = uid {
            cmd.uid(uid).gid(uid).current_dir("/");
        }
        let mut child = cmd.spawn().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut client = Self { child, out, also_kill: Vec::new() };
        let mut line = String::new();
        client.out.read_line(&mut line).unwrap();
        (client, line.trim().to_owned())
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        for pid in &self.also_kill {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CONNECT_AND_WAIT: &str = "import socket, time
s = socket.create_connection((HOST, PORT))
print('ok', flush=True)
time.sleep(60)";

fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

fn accepted(l: &TcpListener) -> (TcpStream, SocketAddr, SocketAddr) {
    let (s, peer) = l.accept().unwrap();
    let local = s.local_addr().unwrap();
    (s, peer, local)
}

fn inode_of(s: &TcpStream) -> u64 {
    nix::sys::stat::fstat(s.as_fd()).unwrap().st_ino
}

#[tokio::test]
async fn attributes_a_connection_to_the_process_that_opened_it() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (mut client, line) = Client::spawn("127.0.0.1", port, CONNECT_AND_WAIT, None);
    assert_eq!(line, "ok");
    let (stream, _) = l.accept().await.unwrap();

    let peer = attribute(&stream).unwrap();
    assert_eq!(peer.info.pid, Some(client.pid()));
    assert_eq!((peer.info.uid, peer.info.gid), (0, 0));
    assert!(peer.info.exe.is_some());
    assert!(!peer.info.pidfd_from_kernel);
    assert_ne!(peer.inode, nix::sys::stat::fstat(stream.as_fd()).unwrap().st_ino, "not our accepted socket");
    assert!(peer.still_holds());

    client.child.kill().unwrap();
    client.child.wait().unwrap();
    assert!(!peer.still_holds(), "the holder is gone");
}

#[test]
fn the_reversed_tuple_is_the_daemons_own_socket() {
    let (l, port) = listener();
    let (_client, _) = Client::spawn("127.0.0.1", port, CONNECT_AND_WAIT, None);
    let (stream, peer, local) = accepted(&l);
    // Looked up from the server's side, the tuple names the accepted socket, held by us.
    let ours = lookup(local, peer).unwrap().unwrap();
    assert_eq!(ours.inode, inode_of(&stream));
    let theirs = lookup(peer, local).unwrap().unwrap();
    assert_ne!(theirs.inode, ours.inode);
    assert_ne!(attribute_addrs(peer, local).unwrap().info.pid, Some(std::process::id() as i32));
}

#[test]
fn a_connection_from_the_daemon_itself_is_refused() {
    let (l, port) = listener();
    let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (_stream, peer, local) = accepted(&l);
    let own = std::process::id() as i32;
    // Another test spawning a process holds a copy of all our fds until its exec: while it does,
    // that child is a holder too (an answer that is right, if not the one tested). Never us.
    for _ in 0..1000 {
        match attribute_addrs(peer, local) {
            Err(Unattributable::SelfConnection { .. }) => return,
            Ok(p) if p.info.pid != Some(own) => continue,
            Err(Unattributable::Ambiguous { pids, .. }) if !pids.contains(&own) => continue,
            other => panic!("expected SelfConnection, got {other:?}"),
        }
    }
    panic!("never SelfConnection");
}

#[test]
fn a_socket_held_by_two_processes_is_ambiguous() {
    let (l, port) = listener();
    let script = "import os, socket, time
s = socket.create_connection((HOST, PORT))
child = os.fork()
if child == 0:
    time.sleep(60)
    os._exit(0)
print(child, flush=True)
time.sleep(60)";
    let (mut client, line) = Client::spawn("127.0.0.1", port, script, None);
    let forked: i32 = line.parse().unwrap();
    client.also_kill.push(forked);
    let (_stream, peer, local) = accepted(&l);
    match attribute_addrs(peer, local) {
        Err(Unattributable::Ambiguous { mut pids, .. }) => {
            pids.sort_unstable();
            let mut expected = vec![client.pid(), forked];
            expected.sort_unstable();
            assert_eq!(pids, expected);
        }
        other => panic!("expected Ambiguous, got {other:?}"),
    }
}

#[test]
fn a_client_that_exited_is_not_found() {
    let (l, port) = listener();
    let script = "import socket
s = socket.create_connection((HOST, PORT))
print('ok', flush=True)";
    let (mut client, _) = Client::spawn("127.0.0.1", port, script, None);
    client.child.wait().unwrap();
    let (_stream, peer, local) = accepted(&l);
    let err = attribute_addrs(peer, local).unwrap_err();
    assert!(matches!(err, Unattributable::NotFound { .. }), "{err}");
}

#[test]
fn a_client_of_another_uid_is_attributed_with_its_uid() {
    let (l, port) = listener();
    let (client, line) = Client::spawn("127.0.0.1", port, CONNECT_AND_WAIT, Some(65534));
    assert_eq!(line, "ok");
    let (_stream, peer, local) = accepted(&l);
    let peer = attribute_addrs(peer, local).unwrap();
    assert_eq!(peer.info.pid, Some(client.pid()));
    assert_eq!((peer.info.uid, peer.info.gid), (65534, 65534));
    assert!(peer.still_holds());
}

#[test]
fn ipv6_and_v4_mapped_clients_are_attributed() {
    // ::1, and a dual-stack socket bound to a v4-mapped loopback address (its peers are
    // ::ffff:127.0.0.1, looked up in the IPv4 table).
    for (bind, host) in [("[::1]:0", "::1"), ("[::ffff:127.0.0.1]:0", "127.0.0.1")] {
        let l = TcpListener::bind(bind).unwrap();
        let port = l.local_addr().unwrap().port();
        let (client, _) = Client::spawn(host, port, CONNECT_AND_WAIT, None);
        let (_stream, peer, local) = accepted(&l);
        assert!(peer.is_ipv6(), "{peer}");
        assert_eq!(attribute_addrs(peer, local).unwrap().info.pid, Some(client.pid()), "{bind}");
    }
}

#[test]
fn a_listener_on_the_asked_port_is_no_answer() {
    // With no connection on the tuple, the kernel's lookup returns a listener on the local
    // address: that is not the client's socket.
    let (_l, port) = listener();
    let local = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(lookup(local, SocketAddr::from(([127, 0, 0, 1], 9))).unwrap(), None);
}

#[test]
fn a_remote_peer_is_refused() {
    let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
    let err = attribute_addrs(peer, "192.0.2.1:4180".parse().unwrap()).unwrap_err();
    assert!(matches!(err, Unattributable::NotLoopback { .. }), "{err}");
    let mapped: SocketAddr = "[::ffff:192.0.2.7]:40000".parse().unwrap();
    assert!(matches!(attribute_addrs(mapped, "[::1]:4180".parse().unwrap()), Err(Unattributable::NotLoopback { .. })));
}

#[test]
fn the_request_is_an_exact_lookup_from_the_clients_side() {
    let (family, id) = sockid("127.0.0.2:40000".parse().unwrap(), "127.0.0.1:4180".parse().unwrap()).unwrap();
    assert_eq!(family, AF_INET);
    assert_eq!(&id[0..4], &[0x9c, 0x40, 0x10, 0x54]);
    assert_eq!(&id[4..8], &[127, 0, 0, 2]);
    assert_eq!(&id[8..20], &[0; 12]);
    assert_eq!(&id[20..24], &[127, 0, 0, 1]);
    assert_eq!(&id[40..48], &[0xff; 8], "INET_DIAG_NOCOOKIE");
}

/// The cost of one attribution (printed, not asserted): run with `--nocapture`.
#[test]
fn cost_of_an_attribution() {
    let (l, port) = listener();
    let (client, _) = Client::spawn("127.0.0.1", port, CONNECT_AND_WAIT, None);
    let (_stream, peer, local) = accepted(&l);
    const N: u32 = 100;
    let start = std::time::Instant::now();
    for _ in 0..N {
        lookup(peer, local).unwrap().unwrap();
    }
    let lookups = start.elapsed() / N;
    let start = std::time::Instant::now();
    for _ in 0..N {
        assert_eq!(attribute_addrs(peer, local).unwrap().info.pid, Some(client.pid()));
    }
    let attributions = start.elapsed() / N;
    let peer = attribute_addrs(peer, local).unwrap();
    let start = std::time::Instant::now();
    for _ in 0..N {
        assert!(peer.still_holds());
    }
    let rechecks = start.elapsed() / N;
    let processes = std::fs::read_dir("/proc")
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_str().unwrap().parse::<i32>().is_ok())
        .count();
    eprintln!(
        "tcp_peer cost ({processes} processes): sock_diag lookup {lookups:?}, attribution {attributions:?}, still_holds {rechecks:?}"
    );
}

/// A socket held only by a thread that outlived its process's leader: `/proc/PID/fd` (the
/// leader's table) reads empty, `/proc/PID/task/TID/fd` shows it. Seen there, the socket is
/// attributed to its process, and a second process holding it as well makes it ambiguous; with
/// only the leader's table read, that second process would have been taken as the sole holder.
#[test]
fn a_socket_held_by_a_thread_whose_leader_exited_is_seen() {
    let (l, port) = listener();
    let script = "import ctypes, os, socket, sys, threading, time
def worker():
    s = socket.create_connection((HOST, PORT))
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    # Wait for the leader to be a zombie: its fd table is gone from /proc/PID/fd.
    while open(f'/proc/{os.getpid()}/stat').read().rsplit(')', 1)[1].split()[0] != 'Z':
        time.sleep(0.01)
    print(child, flush=True)
    time.sleep(60)
threading.Thread(target=worker).start()
ctypes.CDLL(None).pthread_exit(None)";
    let (mut client, line) = Client::spawn("127.0.0.1", port, script, None);
    let forked: i32 = line.parse().unwrap();
    client.also_kill.push(forked);
    let (_stream, peer, local) = accepted(&l);
    match attribute_addrs(peer, local) {
        Err(Unattributable::Ambiguous { mut pids, .. }) => {
            pids.sort_unstable();
            let mut expected = vec![client.pid(), forked];
            expected.sort_unstable();
            assert_eq!(pids, expected);
        }
        other => panic!("expected Ambiguous, got {other:?}"),
    }
}
