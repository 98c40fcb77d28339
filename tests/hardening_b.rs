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

