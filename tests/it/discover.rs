//! `tessera discover`: a Python process importing an agent SDK, with an API key in its
//! environment and no identity, is listed by pid with the variable's name; the key's value never
//! appears in the output (JSON or text).

#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] fns: a failed unwrap is a failed test")]

use crate::common::*;
use serde_json::Value;
use std::process::{Command, Stdio};

const AGENT: &str = "import sys, time\ntry:\n    import openai\nexcept ImportError:\n    pass\nprint('up', flush=True)\ntime.sleep(120)\n";

#[test]
fn discover_lists_an_unmanaged_python_agent_by_key_name_never_value() {
    let d = Daemon::start(&format!("[[entries]]\nspiffe_id = \"spiffe://{TD}/x\"\nselectors = [\"{}\"]\n", uid_sel()));
    let secret = format!("sk-test-{}", sha256_hex(format!("{:?}", std::time::SystemTime::now()).as_bytes()));
    let mut agent = Command::new("python3")
        .args(["-c", AGENT])
        .env("OPENAI_API_KEY", &secret)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut up = [0u8; 3];
    std::io::Read::read_exact(agent.stdout.as_mut().unwrap(), &mut up).unwrap();
    let pid = i64::from(agent.id());

    let out =
        Command::new(bin()).args(["discover", "--json", "--admin-socket"]).arg(d.admin_socket()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains(&secret), "the key's value was printed");
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&secret));
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["identities_checked"], true, "{doc}");
    let found =
        doc["unmanaged"].as_array().unwrap().iter().find(|f| f["pid"] == pid).unwrap_or_else(|| panic!("{doc}"));
    assert_eq!(found["secret_env"], serde_json::json!(["OPENAI_API_KEY"]));
    assert!(found["signatures"].as_array().unwrap().iter().any(|s| s == "python openai"), "{found}");
    assert_eq!(found["environ"], "read");

    let out = Command::new(bin()).args(["discover", "--admin-socket"]).arg(d.admin_socket()).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains(&secret));
    assert!(text.contains(&format!("pid {pid} ")) && text.contains("OPENAI_API_KEY"), "{text}");

    // Without a daemon: everything is listed, and it says so.
    let out =
        Command::new(bin()).args(["discover", "--json", "--admin-socket", "/nonexistent/admin.sock"]).output().unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["identities_checked"], false);
    assert!(doc["identities_unknown_reason"].is_string());
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&secret));
    let _ = agent.kill();
    let _ = agent.wait();
}
