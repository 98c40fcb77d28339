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

/// `[discovery] interval`: the daemon scans on its own; the inventory lists the agent under
/// `unmanaged` (by pid and variable name, never the value) and `tessera_unmanaged_agents` counts.
#[test]
fn the_daemon_scans_periodically_into_the_inventory_and_a_gauge() {
    let d = Daemon::start(&format!(
        "[discovery]\ninterval = \"1s\"\n[[discovery.signatures]]\nname = \"test agent\"\ncmdline_contains = \"import openai\"\n[[entries]]\nspiffe_id = \"spiffe://{TD}/x\"\nselectors = [\"{}\"]\n",
        uid_sel()
    ));
    let secret = format!("sk-test-{}", sha256_hex(b"periodic"));
    let mut agent = Command::new("python3")
        .args(["-c", AGENT])
        .env("OPENAI_API_KEY", &secret)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut up = [0u8; 3];
    std::io::Read::read_exact(agent.stdout.as_mut().unwrap(), &mut up).unwrap();
    let pid = i64::from(agent.id());
    let mut doc = Value::Null;
    eventually("the daemon's scan lists the agent", std::time::Duration::from_secs(10), || {
        let out =
            Command::new(bin()).args(["inventory", "--json", "--admin-socket"]).arg(d.admin_socket()).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(!text.contains(&secret));
        doc = serde_json::from_str(&text).unwrap_or(Value::Null);
        doc["unmanaged"].as_array().is_some_and(|u| u.iter().any(|f| f["pid"] == pid))
    });
    let found = doc["unmanaged"].as_array().unwrap().iter().find(|f| f["pid"] == pid).unwrap();
    assert_eq!(found["secret_env"], serde_json::json!(["OPENAI_API_KEY"]));
    assert!(found["signatures"].as_array().unwrap().iter().any(|s| s == "test agent"), "{found}");
    assert!(found["refusals"].is_array());
    assert!(doc["unmanaged_scanned_at"].as_u64().is_some());
    let out = Command::new(bin()).args(["inventory", "--admin-socket"]).arg(d.admin_socket()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("UNMANAGED") && text.contains(&format!("pid {pid} ")), "{text}");
    assert!(text.contains("OPENAI_API_KEY") && !text.contains(&secret), "{text}");
    let out = Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(d.admin_socket())
        .arg("http://localhost/metrics")
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&out.stdout);
    let line =
        metrics.lines().find(|l| l.starts_with("tessera_unmanaged_agents ")).unwrap_or_else(|| panic!("{metrics}"));
    assert!(line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() >= 1.0, "{line}");
    let _ = agent.kill();
    let _ = agent.wait();
}
