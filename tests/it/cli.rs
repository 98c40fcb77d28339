//! The CLI as an operator meets it: `check`, the dev-mode default, `audit verify`.

use crate::common::*;
use std::process::{Command, Stdio};

#[test]
fn check_reports_every_error_with_file_line_key_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "trust_domain = \"example.org\"\n\n[[entries]]\nspiffe_id = \"spiffe://example.org/a/\"\nselectors = [\"unix:uid:root\"]\njwt_svid_ttl = \"5 minutes\"\n",
    )
    .unwrap();
    let out = Command::new(bin()).args(["check", "--config"]).arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let f = cfg.display().to_string();
    assert!(err.contains(&format!("{f}:4: entries[0].spiffe_id")), "{err}");
    assert!(err.contains("trailing slash"), "{err}");
    assert!(err.contains(&format!("{f}:5: entries[0].selectors[0]")), "{err}");
    assert!(err.contains("unix:user:root"), "the fix is suggested: {err}");
    assert!(err.contains(&format!("{f}:6: entries[0].jwt_svid_ttl")), "{err}");
    assert_eq!(err.matches("fix:").count(), 3, "{err}");
    // run refuses the same file.
    let out = Command::new(bin()).args(["run", "--config"]).arg(&cfg).output().unwrap();
    assert!(!out.status.success());

    // A valid config with only weak selectors passes with a warning.
    std::fs::write(
        &cfg,
        "trust_domain = \"example.org\"\n[attestors]\nenv_allowlist = [\"ROLE\"]\n[[entries]]\nspiffe_id = \"spiffe://example.org/a\"\nselectors = [\"env:ROLE:x\"]\n",
    )
    .unwrap();
    let out = Command::new(bin()).args(["check", "--config"]).arg(&cfg).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("only weak selectors"));
}

#[test]
fn dev_mode_serves_the_invoking_user_at_once() {
    let home = tempfile::tempdir().unwrap();
    let run = home.path().join("run");
    let mut child = Command::new(bin())
        .arg("run")
        .env("XDG_RUNTIME_DIR", &run)
        .env("HOME", home.path())
        .env_remove("XDG_STATE_HOME")
        .stderr(Stdio::from(std::fs::File::create(home.path().join("log")).unwrap()))
        .spawn()
        .unwrap();
    let sock = run.join("tessera/api.sock");
    wait_for_socket(&sock, &mut child, &home.path().join("log"));
    let out = Command::new(bin())
        .args(["api", "fetch", "x509"])
        .env("XDG_RUNTIME_DIR", &run)
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("spiffe://tessera.dev/user/"));
    let log = std::fs::read_to_string(home.path().join("log")).unwrap();
    assert!(log.contains("DEV MODE"), "{log}");
    assert!(log.contains(&sock.display().to_string()), "the socket is printed: {log}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn audit_verify_names_the_first_tampered_line() {
    let d =
        Daemon::start(&format!("[[entries]]\nspiffe_id = \"spiffe://{TD}/a\"\nselectors = [\"unix:uid:{}\"]\n", uid()));
    for _ in 0..3 {
        Command::new(bin()).args(["api", "fetch", "x509", "--silent", "--socket"]).arg(&d.socket).output().unwrap();
    }
    eventually("audit lines", std::time::Duration::from_secs(5), || {
        std::fs::read_to_string(d.audit_log()).unwrap_or_default().lines().count() >= 4
    });
    let log = d.audit_log();
    assert!(Command::new(bin()).args(["audit", "verify"]).arg(&log).output().unwrap().status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let tampered = text.replacen("\"event\":\"issued\"", "\"event\":\"isSued\"", 1);
    let first_issued = text.lines().position(|l| l.contains("\"event\":\"issued\"")).unwrap() + 1;
    std::fs::write(&log, tampered).unwrap();
    let out = Command::new(bin()).args(["audit", "verify"]).arg(&log).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("line {}", first_issued + 1)), "{err}");
}

/// Every CLI error prints the message (and fix), never a backtrace, even with RUST_BACKTRACE set.
#[test]
fn cli_errors_never_print_a_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "trust_domain = \"example.org\"\n[[entries]]\nspiffe_id = \"nope\"\nselectors = []\n")
        .unwrap();
    let missing = dir.path().join("missing.log");
    let runs: [Vec<std::ffi::OsString>; 4] = [
        vec!["check".into(), "--config".into(), cfg.clone().into()],
        vec!["run".into(), "--config".into(), cfg.clone().into()],
        vec!["audit".into(), "verify".into(), missing.into()],
        vec!["api".into(), "fetch".into(), "x509".into(), "--socket".into(), dir.path().join("no.sock").into()],
    ];
    for args in runs {
        for bt in ["1", "full"] {
            let out = Command::new(bin())
                .args(&args)
                .env("RUST_BACKTRACE", bt)
                .env("RUST_LIB_BACKTRACE", bt)
                .output()
                .unwrap();
            assert!(!out.status.success(), "{args:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.starts_with("error: "), "{args:?}: {err}");
            assert!(!err.to_lowercase().contains("backtrace"), "{args:?} printed a backtrace: {err}");
        }
    }
}
