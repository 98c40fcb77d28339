//! Issue 9 (second half): a local attacker gets no panic, no log flood, no foreign socket
//! directory, no permanent kernel watches and no unbounded audit trail — against the real daemon.

mod common;

use common::*;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(ty: u8, flags: u8, sid: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.push(ty);
    f.push(flags);
    f.extend_from_slice(&sid.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Send raw bytes on a fresh connection and read until the daemon closes it (bounded).
fn send_raw(socket: &std::path::Path, bytes: &[u8]) -> Vec<u8> {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn malformed_hpack_integers_are_refused_without_a_panic_line() {
    let d = Daemon::start("");
    for block in [&[0x3f, 0xff][..], &[0x3f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], &[0x82, 0x3f]] {
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[]));
        input.extend(frame(0x1, 0x4 | 0x1, 1, block));
        let reply = send_raw(&d.socket, &input);
        // A clean refusal: the connection closes, no response HEADERS for stream 1.
        assert!(!reply.windows(5).any(|w| w[3] == 0x1 && w[4] & 0x4 != 0), "{reply:x?}");
    }
    // The daemon still serves, and its log holds no panic.
    let reply = send_raw(&d.socket, &[PREFACE, &frame(0x4, 0, 0, &[]), &frame(0x7, 0, 0, &[0; 8])].concat());
    assert!(reply.len() >= 9 && reply[3] == 0x4, "the server's SETTINGS: {reply:x?}");
    let log = d.log();
    assert!(!log.contains("panicked"), "{log}");
}

/// Run `tessera ARGS` to completion (bounded), returning (success, stderr).
fn run_to_end(args: &[&str], cfg: &std::path::Path) -> (bool, String) {
    let mut child =
        Command::new(bin()).args(args).arg(cfg).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            return (status.success(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tessera {args:?} did not exit: it accepted the config");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn durations_that_would_overflow_are_config_errors_in_check_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    let head = format!(
        "trust_domain = \"{TD}\"\nsocket_path = \"{}\"\ndata_dir = \"{}\"\n",
        dir.path().join("s.sock").display(),
        dir.path().join("data").display()
    );
    let entry = |ttl: &str| {
        format!("[[entries]]\nspiffe_id = \"spiffe://{TD}/a\"\nselectors = [\"unix:uid:{}\"]\n{ttl}\n", uid())
    };
    for (body, line, key) in [
        ("[ca]\nttl = \"3650000d\"\n".to_string(), 5, "ca.ttl"),
        (entry("x509_svid_ttl = \"100000000d\""), 7, "entries[0].x509_svid_ttl"),
        (entry("jwt_svid_ttl = \"213503982334601d\""), 7, "entries[0].jwt_svid_ttl"),
        ("default_jwt_svid_ttl = \"99999999999999999999s\"\n".to_string(), 4, "default_jwt_svid_ttl"),
        ("reattest_interval = \"1000000d\"\n".to_string(), 4, "reattest_interval"),
    ] {
        std::fs::write(&cfg, format!("{head}{body}")).unwrap();
        for cmd in [&["check", "--config"][..], &["run", "--config"]] {
            let (ok, err) = run_to_end(cmd, &cfg);
            assert!(!ok, "{cmd:?} accepted {body}");
            assert!(!err.contains("panicked"), "{err}");
            assert!(err.contains(&format!("{}:{line}: {key}", cfg.display())), "{cmd:?} {body}: {err}");
            assert!(err.contains("fix: use at most") || err.contains("too large"), "{err}");
        }
    }
}

#[test]
fn stale_ca_temp_files_are_removed_at_start() {
    let mut d = Daemon::start("");
    // (Not asserting a clean exit: a SIGTERM right after the socket appears can precede the
    // daemon's signal handler.)
    d.stop();
    let stale = d.data_dir().join(".ca.json.tmp.999999");
    let stale_new_form = d.data_dir().join(".ca.json.tmp.999998.3");
    std::fs::write(&stale, b"{\"x509\": \"every CA key\"}").unwrap();
    std::fs::write(&stale_new_form, b"{}").unwrap();
    d.spawn();
    assert!(!stale.exists() && !stale_new_form.exists(), "stale temp files removed when the CA store opens");
    assert!(d.data_dir().join("ca.json").exists());
}
