//! Tests of the audit writer (bounds, refusal counts, rotation) and of chain verification.

use super::*;
use serde_json::json;

fn write_lines(path: &Path, n: usize) {
    let a = Audit::open(path).unwrap();
    for i in 0..n {
        a.record("test", json!({ "i": i }));
    }
    drop(a);
    // The writer thread drains the channel after the sender is dropped; wait for it.
    for _ in 0..1000 {
        if std::fs::read_to_string(path).unwrap().lines().count() >= n {
            return;
        }
        std::thread::yield_now();
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn lines_of(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn long_values_are_cut_and_marked_and_no_line_exceeds_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.log");
    let a = Audit::open(&p).unwrap();
    // An entitled caller's 3.9 MB audience list, and one huge string.
    let audience: Vec<String> = (0..3900).map(|i| format!("{i:0>1000}")).collect();
    a.record("issued", json!({ "uid": 1, "audience": audience }));
    a.record("refused", json!({ "uid": 1, "reason": "x".repeat(100_000) }));
    // Many medium values, each within the bounds, together far over the line cap.
    let wide: serde_json::Map<String, Value> =
        (0..64).map(|i| (format!("k{i}"), json!(vec![vec!["x".repeat(100); 16]; 16]))).collect();
    a.record("attested", json!({ "uid": 1, "pid": 42, "selectors": wide }));
    a.close();
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.lines().all(|l| l.len() <= MAX_LINE), "{:?}", text.lines().map(str::len).collect::<Vec<_>>());
    let lines = lines_of(&p);
    // Cut to 64 entries of 1 KiB at once, then (still over 16 KiB) to 16 of 128 bytes.
    let aud = lines[0]["audience"].as_array().unwrap();
    assert_eq!(aud.len(), MAX_ITEMS / 4 + 1);
    assert_eq!(aud[MAX_ITEMS / 4], "…(+3884 more)");
    assert!(aud[0].as_str().unwrap().ends_with("…(+872 more bytes)"), "{}", aud[0]);
    assert!(lines[1]["reason"].as_str().unwrap().ends_with("…(+98976 more bytes)"));
    assert_eq!(lines[2]["pid"], 42);
    assert!(lines[2]["truncated"].as_str().unwrap().contains("cut to its scalar fields"));
    assert!(lines[2].get("selectors").is_none());
    assert!(matches!(verify(&p).unwrap(), Verdict::Intact { lines: 3 }));
}

#[test]
fn repeated_refusals_are_counted_per_uid_and_the_count_survives_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.log");
    let opts =
        AuditOptions { refusals_per_window: 3, refusal_window: Duration::from_millis(300), ..AuditOptions::default() };
    let a = Audit::open_with(&p, opts).unwrap();
    for _ in 0..10 {
        a.record("refused", json!({ "uid": 7, "reason": "no entry" }));
    }
    a.record("refused", json!({ "uid": 8, "reason": "no entry" }));
    a.record("issued", json!({ "uid": 7 }));
    // The window ends: its count is written without waiting for more events.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&p).unwrap().contains("refused_suppressed") {
        assert!(Instant::now() < deadline, "suppressed count not written when the window ended");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A new window, cut short by shutdown: its count is not lost.
    for _ in 0..5 {
        a.record("refused", json!({ "uid": 7, "reason": "no entry" }));
    }
    a.close();
    let lines = lines_of(&p);
    let count = |event: &str, uid: u64| lines.iter().filter(|l| l["event"] == event && l["uid"] == uid).count();
    assert_eq!((count("refused", 7), count("refused", 8), count("issued", 7)), (6, 1, 1));
    let suppressed: Vec<u64> = lines
        .iter()
        .filter(|l| l["event"] == "refused_suppressed")
        .map(|l| {
            assert_eq!(l["uid"], 7);
            l["count"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(suppressed, [7, 2]);
    assert!(matches!(verify(&p).unwrap(), Verdict::Intact { .. }));
}

#[test]
fn rotation_keeps_the_chain_across_files_and_anchors_catch_a_cut_end() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.log");
    let opts = AuditOptions { max_size: 2000, max_files: 3, ..AuditOptions::default() };
    let a = Audit::open_with(&p, opts.clone()).unwrap();
    for i in 0..60 {
        a.record("test", json!({ "i": i, "pad": "p".repeat(100) }));
    }
    a.close();
    drop(a);
    // Reopening continues the chain, rotating on.
    let a = Audit::open_with(&p, opts).unwrap();
    for i in 60..80 {
        a.record("test", json!({ "i": i, "pad": "p".repeat(100) }));
    }
    a.close();
    let set: Vec<PathBuf> = [3, 2, 1].iter().map(|n| rotated(&p, *n)).chain([p.clone()]).collect();
    assert!(!rotated(&p, 4).exists(), "at most max_files rotated files are kept");
    for f in &set {
        assert!(std::fs::metadata(f).unwrap().len() <= 2000, "{}", f.display());
    }
    let SetVerdict::Intact { head, from_genesis, first_seq, .. } = verify_set(&set, None).unwrap() else {
        panic!("{:?}", verify_set(&set, None))
    };
    assert!(!from_genesis && first_seq > 1, "the oldest files were rotated away");
    assert_eq!(lines_of(&set[1])[0]["event"], ROTATED);
    // The head is the last line.
    let last = std::fs::read_to_string(&p).unwrap().lines().last().unwrap().to_owned();
    assert_eq!(head.hash, line_hash(&last));
    assert!(matches!(verify_set(&set, Some(&head)).unwrap(), SetVerdict::Intact { .. }));

    // A missing middle file breaks the chain.
    let gap = [set[0].clone(), set[2].clone(), set[3].clone()];
    assert!(matches!(verify_set(&gap, None).unwrap(), SetVerdict::Broken { .. }));

    // Lines cut from the end: the chain alone cannot tell, the anchor can.
    let text = std::fs::read_to_string(&p).unwrap();
    let kept: Vec<&str> = text.lines().collect();
    std::fs::write(&p, kept[..kept.len() - 2].join("\n") + "\n").unwrap();
    assert!(matches!(verify_set(&set, None).unwrap(), SetVerdict::Intact { .. }));
    let SetVerdict::Broken { reason, .. } = verify_set(&set, Some(&head)).unwrap() else { panic!() };
    assert!(reason.contains("cut from the end"), "{reason}");
    // An edited anchored line is caught too.
    let wrong = Anchor { seq: head.seq - 5, hash: head.hash.clone() };
    let SetVerdict::Broken { reason, .. } = verify_set(&set, Some(&wrong)).unwrap() else { panic!() };
    assert!(reason.contains("does not match the anchor"), "{reason}");
    assert!("12:abc".parse::<Anchor>().is_err());
    assert_eq!(head.to_string().parse::<Anchor>().unwrap(), head);
}

#[test]
fn chain_detects_edit_insert_delete_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.log");
    write_lines(&p, 3);
    write_lines(&p, 6); // reopen continues the chain: 3 + 6 lines
    assert_eq!(verify(&p).unwrap(), Verdict::Intact { lines: 9 });
    let orig = std::fs::read_to_string(&p).unwrap();
    let lines: Vec<&str> = orig.lines().collect();

    let edited = orig.replacen("\"i\":1", "\"i\":7", 1);
    std::fs::write(&p, edited).unwrap();
    assert!(matches!(verify(&p).unwrap(), Verdict::Broken { line: 3, .. }));

    let mut deleted = lines.clone();
    deleted.remove(4);
    std::fs::write(&p, deleted.join("\n") + "\n").unwrap();
    assert!(matches!(verify(&p).unwrap(), Verdict::Broken { line: 5, .. }));

    let mut inserted = lines.clone();
    inserted.insert(2, lines[1]);
    std::fs::write(&p, inserted.join("\n") + "\n").unwrap();
    assert!(matches!(verify(&p).unwrap(), Verdict::Broken { line: 3, .. }));
}
