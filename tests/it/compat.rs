//! What earlier releases wrote must still be read: an audit log written by tessera at 3102019
//! verifies with today's `tessera audit verify`, and an edit to it is still caught.

use crate::common::bin;
use std::process::Command;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/audit-3102019.log");

#[test]
fn audit_log_written_before_the_event_spine_verifies() {
    let out = Command::new(bin()).args(["audit", "verify", FIXTURE]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("intact (12 lines)"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let edited = dir.path().join("audit.log");
    let text = std::fs::read_to_string(FIXTURE).unwrap();
    std::fs::write(&edited, text.replacen("\"uid\":65534", "\"uid\":0", 1)).unwrap();
    let out = Command::new(bin()).args(["audit", "verify"]).arg(&edited).output().unwrap();
    assert!(!out.status.success(), "an edited line must break the chain");
}
