//! `tessera audit export --format ocsf` on the real daemon's audit log: a fetch (attested,
//! issued), a revocation, a refusal; every record carries its class's required attributes and
//! its line's chain hash; `--follow` prints lines written later.

#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] fns: a failed unwrap is a failed test")]

use crate::common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Required attributes per class (OCSF 1.8.0, resolved through `extends`).
fn check_required(r: &Value) {
    for k in ["activity_id", "category_uid", "class_uid", "metadata", "severity_id", "time", "type_uid"] {
        assert!(r.get(k).is_some_and(|x| !x.is_null()), "{k} missing in {r}");
    }
    assert_eq!(r["metadata"]["version"], "1.8.0");
    assert!(r["metadata"]["product"]["name"].is_string());
    let class = r["class_uid"].as_u64().unwrap();
    assert_eq!(r["type_uid"].as_u64().unwrap(), class * 100 + r["activity_id"].as_u64().unwrap());
    assert_eq!(r["category_uid"].as_u64().unwrap(), class / 1000);
    let needs: &[&str] = match class {
        3001 | 3002 | 3003 | 3005 => &["user"],
        6003 => &["actor", "api", "src_endpoint"],
        2004 => &["finding_info"],
        _ => &[],
    };
    for k in needs {
        assert!(r[*k].is_object(), "{k} missing in {r}");
    }
    assert!(r["time"].as_i64().unwrap() > 1_600_000_000_000, "{r}");
}

fn export(d: &Daemon) -> Vec<Value> {
    let out = Command::new(bin()).args(["audit", "export", "--format", "ocsf"]).arg(d.data_dir()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn audit_lines_export_as_ocsf_records() {
    let agent = format!("spiffe://{TD}/agent");
    let mut d = Daemon::start(&format!("[[entries]]\nspiffe_id = \"{agent}\"\nselectors = [\"{}\"]\n", uid_sel()));
    let fetch =
        || Command::new(bin()).args(["api", "fetch", "x509", "--silent", "--socket"]).arg(&d.socket).output().unwrap();
    assert!(fetch().status.success());
    let out = Command::new(bin())
        .args(["revoke", "--spiffe-id", &agent, "--reason", "ocsf test", "--admin-socket"])
        .arg(d.admin_socket())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually("the revocation applies", Duration::from_secs(5), || !fetch().status.success());
    eventually("the refusal is written", Duration::from_secs(5), || !d.audit_events("refused").is_empty());

    // Follow from now on: a line written later arrives.
    let mut follow = Command::new(bin())
        .args(["audit", "export", "--format", "ocsf", "--follow"])
        .arg(d.data_dir())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();

    let lines: Vec<String> = d.audit_text().lines().map(str::to_owned).collect();
    let records = export(&d);
    assert_eq!(records.len(), lines.len(), "one record per line, none dropped");
    for (r, l) in records.iter().zip(&lines) {
        check_required(r);
        let hash = sha256_hex(l.as_bytes());
        assert_eq!(r["metadata"]["uid"], hash);
        assert_eq!(r["unmapped"]["tessera"]["hash"], hash);
        let v: Value = serde_json::from_str(l).unwrap();
        assert_eq!(r["unmapped"]["tessera"]["seq"], v["seq"]);
        assert_eq!(r["unmapped"]["tessera"]["prev"], v["prev"]);
    }
    let of = |event: &str| records.iter().filter(|r| r["metadata"]["event_code"] == event).cloned().collect::<Vec<_>>();
    let issued = of("issued");
    assert!(!issued.is_empty());
    assert_eq!((issued[0]["class_uid"].as_u64(), issued[0]["activity_id"].as_u64()), (Some(3002), Some(3)));
    assert_eq!(issued[0]["user"]["name"], agent);
    assert!(of("attested").iter().all(|r| r["class_uid"] == 3002 && r["status_id"] == 1));
    let revoked = of("revoked");
    assert_eq!((revoked[0]["class_uid"].as_u64(), revoked[0]["activity_id"].as_u64()), (Some(3001), Some(5)));
    assert_eq!(revoked[0]["user"]["name"], agent);
    let refused = of("refused");
    assert!(!refused.is_empty() && refused.iter().all(|r| r["class_uid"] == 3002 && r["status_id"] == 2));
    assert!(of("started").iter().all(|r| r["class_uid"] == 0));

    // Never hang the suite: end the follower after 30 s whatever happens.
    let pid = follow.id().to_string();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(30));
        let _ = Command::new("kill").arg(&pid).status();
    });
    let mut reader = BufReader::new(follow.stdout.take().unwrap());
    let mut first = String::new();
    for _ in 0..lines.len() {
        first.clear();
        reader.read_line(&mut first).unwrap();
    }
    let _ = fetch();
    let mut next = String::new();
    reader.read_line(&mut next).unwrap();
    let r: Value = serde_json::from_str(&next).unwrap();
    check_required(&r);
    assert!(r["metadata"]["sequence"].as_u64().unwrap() > lines.len() as u64, "{r}");
    let _ = follow.kill();
    let _ = follow.wait();
    d.stop();
}
