//! Attestation through the daemon: real processes with different binaries, scripts and environments
//! get different identities; the audit trail holds the evidence and never a secret.

use crate::common::*;
use std::process::Command;

fn fetch_id_with(
    program: &std::path::Path,
    args: &[&str],
    socket: &std::path::Path,
    env: &[(&str, &str)],
) -> Result<String, String> {
    let mut cmd = Command::new(program);
    cmd.args(args).arg("--socket").arg(socket);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    stdout.lines().find_map(|l| l.strip_prefix("SPIFFE ID:").map(|s| s.trim().to_owned())).ok_or(stdout)
}

#[test]
fn two_copies_of_a_binary_with_different_content_get_different_identities() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("agent-a"), dir.path().join("agent-b"));
    std::fs::copy(bin(), &a).unwrap();
    let mut content = std::fs::read(bin()).unwrap();
    content.extend_from_slice(b"\nanother build");
    std::fs::write(&b, &content).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (ha, hb) = (sha256_hex(&std::fs::read(&a).unwrap()), sha256_hex(&content));
    let d = Daemon::start(&format!(
        "[[entries]]\nspiffe_id = \"spiffe://{TD}/agents/a\"\nselectors = [\"unix:uid:{u}\", \"unix:sha256:{ha}\"]\n\
         [[entries]]\nspiffe_id = \"spiffe://{TD}/agents/b\"\nselectors = [\"unix:uid:{u}\", \"unix:sha256:{hb}\"]\n",
        u = uid()
    ));
    let args = ["api", "fetch", "x509"];
    assert_eq!(fetch_id_with(&a, &args, &d.socket, &[]).unwrap(), format!("spiffe://{TD}/agents/a"));
    assert_eq!(fetch_id_with(&b, &args, &d.socket, &[]).unwrap(), format!("spiffe://{TD}/agents/b"));
    // Same content at another path: same digest, same identity.
    assert_eq!(
        fetch_id_with(std::path::Path::new(bin()), &args, &d.socket, &[]).unwrap(),
        format!("spiffe://{TD}/agents/a")
    );

    // The audit trail names the binary and its digest, the entry, serial and expiry.
    eventually("issuance audited", std::time::Duration::from_secs(5), || {
        std::fs::read_to_string(d.audit_log()).unwrap_or_default().matches("\"event\":\"issued\"").count() >= 2
    });
    let audit = std::fs::read_to_string(d.audit_log()).unwrap();
    let line = audit.lines().find(|l| l.contains("\"event\":\"issued\"") && l.contains(&hb)).unwrap();
    for field in ["\"serial\"", "\"not_after\"", "\"pid\"", &format!("spiffe://{TD}/agents/b"), b.to_str().unwrap()] {
        assert!(line.contains(field), "{field} missing from {line}");
    }
    assert!(!audit.contains("PRIVATE KEY"));
    let ok = Command::new(bin()).args(["audit", "verify"]).arg(d.audit_log()).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
}

#[test]
fn allowlisted_environment_selects_an_identity_and_other_variables_never_show() {
    let d = Daemon::start(&format!(
        "[attestors]\nenv_allowlist = [\"AGENT_ROLE\"]\n\
         [[entries]]\nspiffe_id = \"spiffe://{TD}/agents/triage\"\nselectors = [\"unix:uid:{u}\", \"env:AGENT_ROLE:triage\"]\n",
        u = uid()
    ));
    let args = ["api", "fetch", "x509"];
    let secret = "sk-very-secret-token-123";
    let id = fetch_id_with(
        std::path::Path::new(bin()),
        &args,
        &d.socket,
        &[("AGENT_ROLE", "triage"), ("OPENAI_API_KEY", secret)],
    )
    .unwrap();
    assert_eq!(id, format!("spiffe://{TD}/agents/triage"));
    let refused = fetch_id_with(
        std::path::Path::new(bin()),
        &args,
        &d.socket,
        &[("AGENT_ROLE", "billing"), ("OPENAI_API_KEY", secret)],
    );
    assert!(refused.is_err());
    eventually("refusal audited", std::time::Duration::from_secs(5), || {
        std::fs::read_to_string(d.audit_log()).unwrap_or_default().contains("\"event\":\"refused\"")
    });
    let audit = std::fs::read_to_string(d.audit_log()).unwrap();
    assert!(audit.contains("env:AGENT_ROLE:billing"), "refusal shows the evidence");
    assert!(!audit.contains(secret) && !audit.contains("OPENAI_API_KEY"));
    assert!(!d.log().contains(secret));
}

#[test]
fn a_python_agent_is_known_by_its_script() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("python3 not installed: skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("agent.py");
    // A running agent script; `tessera attest PID` shows what an operator would register for it.
    std::fs::write(&script, "import sys, time\nprint('ready', flush=True)\nsys.stdin.read()\n").unwrap();
    let mut child = Command::new("python3")
        .arg(&script)
        // cargo sets it for test binaries; with it set the loader could run other code first,
        // and the script attestor (rightly) names no script.
        .env_remove("LD_LIBRARY_PATH")
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    let out = Command::new(bin()).args(["attest", &child.id().to_string(), "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sels: Vec<String> = v["attestors"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["selectors"].as_array().unwrap().iter().map(|s| s["selector"].as_str().unwrap().to_owned()))
        .collect();
    let digest = sha256_hex(&std::fs::read(&script).unwrap());
    assert!(sels.contains(&"script:interpreter:python3".to_owned()), "{sels:?}");
    assert!(sels.contains(&format!("script:path:{}", script.display())), "{sels:?}");
    assert!(sels.contains(&format!("script:sha256:{digest}")), "{sels:?}");
    // Strength is printed: script selectors are weak, uid is kernel-backed.
    let text = String::from_utf8_lossy(
        &Command::new(bin()).args(["attest", &child.id().to_string()]).output().unwrap().stdout,
    )
    .into_owned();
    assert!(text.contains("weak") && text.contains("kernel-backed"), "{text}");
    drop(child.stdin.take());
    child.wait().unwrap();
}
