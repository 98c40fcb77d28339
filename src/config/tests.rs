//! The validator's tests across sections (each section's own module tests its keys).

use super::validator::{Validator, line_of};
use super::*;

#[test]
fn indexed_line_numbers_match_counting() {
    let text = "a = 1\n\nb = 2\nc = \"x\"\n";
    let v = Validator::new(text);
    for offset in 0..=text.len() + 3 {
        assert_eq!(v.line(offset), line_of(text, offset), "offset {offset}");
    }
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/tessera/tessera.toml"))
}

#[test]
fn minimal_config() {
    let cfg = parse(
        r#"trust_domain = "example.org"
[[entries]]
spiffe_id = "spiffe://example.org/agents/support"
selectors = ["unix:uid:1000"]
x509_svid_ttl = "2m"
"#,
    )
    .unwrap();
    assert_eq!(cfg.registry.entries().len(), 1);
    assert_eq!(cfg.registry.entries()[0].x509_svid_ttl, Duration::from_secs(120));
    assert_eq!(cfg.registry.entries()[0].jwt_svid_ttl, DEFAULT_JWT_TTL);
    assert_eq!(cfg.socket_path, Path::new(DEFAULT_SOCKET));
}

#[test]
fn digests_are_wanted_only_when_an_entry_uses_them() {
    let hex = "a".repeat(64);
    let cfg = parse(
        r#"trust_domain = "example.org"
[attestors]
max_script_hash_size = 1000
hash_budget_per_uid = 5000
[[entries]]
spiffe_id = "spiffe://example.org/a"
selectors = ["unix:uid:1000", "script:path:/a.py"]
"#,
    )
    .unwrap();
    assert!(!cfg.attest.want_exe_digest && !cfg.attest.want_script_digest);
    assert_eq!(cfg.attest.max_script_hash_size, Some(1000));
    assert_eq!(cfg.attest.hash_budget_per_uid.map(|b| b.bytes), Some(5000));
    let cfg = parse(&format!(
        "trust_domain = \"example.org\"\n[[entries]]\nspiffe_id = \"spiffe://example.org/a\"\n\
         selectors = [\"unix:sha256:{hex}\", \"script:sha256:{hex}\"]\n"
    ))
    .unwrap();
    assert!(cfg.attest.want_exe_digest && cfg.attest.want_script_digest);
    assert_eq!(cfg.attest.max_script_hash_size, Some(tessera_attestors::DEFAULT_MAX_SCRIPT_HASH_SIZE));
    assert_eq!(cfg.attest.hash_budget_per_uid, Some(tessera_attestors::HashBudget::default()));
}

#[test]
fn every_error_is_located_and_has_a_fix() {
    let err = parse(
        r#"trust_domain = "example.org"

[[entries]]
spiffe_id = "spiffe://example.org/a//b"
selectors = ["unix:uid:1000"]

[[entries]]
spiffe_id = "spiffe://other.org/x"
selectors = ["bogus:thing", "nocolon"]
x509_svid_ttl = "ten minutes"

[[entries]]
spiffe_id = "spiffe://example.org/dup"
selectors = ["unix:uid:1"]
[[entries]]
spiffe_id = "spiffe://example.org/dup"
selectors = ["unix:uid:1"]
"#,
    )
    .unwrap_err();
    let found: Vec<(usize, &str)> = err.issues.iter().map(|i| (i.line, i.key.as_str())).collect();
    assert_eq!(
        found,
        [
            (4, "entries[0].spiffe_id"),
            (8, "entries[1].spiffe_id"),
            (9, "entries[1].selectors[0]"),
            (9, "entries[1].selectors[1]"),
            (10, "entries[1].x509_svid_ttl"),
            (15, "entries[3]"),
        ]
    );
    assert!(err.issues.iter().all(|i| !i.fix.is_empty()));
    let text = err.to_string();
    assert!(text.contains("/etc/tessera/tessera.toml:8: entries[1].spiffe_id"), "{text}");
    assert!(text.contains("write spiffe://example.org/x"), "{text}");
}

#[test]
fn durations_past_their_bounds_are_located_errors() {
    let err = parse(
        r#"trust_domain = "example.org"
reattest_interval = "2d"
default_jwt_svid_ttl = "99999999999999999999s"
[ca]
ttl = "3650000d"
[[entries]]
spiffe_id = "spiffe://example.org/a"
selectors = ["unix:uid:1"]
x509_svid_ttl = "213503982334601d"
jwt_svid_ttl = "366d"
"#,
    )
    .unwrap_err();
    let found: Vec<(usize, &str)> = err.issues.iter().map(|i| (i.line, i.key.as_str())).collect();
    assert_eq!(
        found,
        [
            (3, "default_jwt_svid_ttl"),
            (5, "ca.ttl"),
            (2, "reattest_interval"),
            (9, "entries[0].x509_svid_ttl"),
            (10, "entries[0].jwt_svid_ttl"),
        ]
    );
    assert!(err.issues.iter().all(|i| !i.fix.is_empty()));
    let text = err.to_string();
    assert!(text.contains("longer than the maximum of 3650d"), "{text}");
    assert!(text.contains("use at most \"365d\""), "{text}");
    // The bounds themselves are accepted.
    parse("trust_domain = \"example.org\"\nreattest_interval = \"24h\"\n[ca]\nttl = \"3650d\"\n").unwrap();
}

#[test]
fn audit_rotation_keys() {
    let cfg = parse(
        "trust_domain = \"example.org\"\naudit_max_size = 1048576\naudit_max_files = 3\naudit_refusals_per_minute = 5\n",
    )
    .unwrap();
    assert_eq!((cfg.audit.refusals_per_window, cfg.audit.refusals_per_window_total), (5, 400));
    assert_eq!((cfg.audit.max_size, cfg.audit.max_files), (1 << 20, 3));
    let large = parse("trust_domain = \"example.org\"\naudit_refusals_per_minute = 1000\n").unwrap();
    assert_eq!(large.audit.refusals_per_window_total, 1000, "the total follows a larger per-uid budget");
    let below =
        parse("trust_domain = \"example.org\"\naudit_refusals_per_minute = 50\naudit_refusals_per_minute_total = 10\n")
            .unwrap_err();
    assert_eq!(below.issues[0].key, "audit_refusals_per_minute_total");
    let err = parse("trust_domain = \"example.org\"\naudit_max_size = 100\naudit_max_files = 0\n").unwrap_err();
    let found: Vec<(usize, &str)> = err.issues.iter().map(|i| (i.line, i.key.as_str())).collect();
    assert_eq!(found, [(2, "audit_max_size"), (3, "audit_max_files")]);
}

#[test]
fn syntax_and_unknown_keys_are_located() {
    let err = parse("trust_domain = \"example.org\"\nsocket_pth = \"/x\"\n").unwrap_err();
    assert_eq!(err.issues[0].line, 2);
    assert!(err.issues[0].message.contains("socket_pth"), "{}", err.issues[0].message);
}

#[test]
fn an_unknown_key_suggests_the_nearest_valid_one() {
    let fix_for = |text: &str| {
        let err = parse(text).unwrap_err();
        assert_eq!(err.issues.len(), 1, "{err}");
        let i = &err.issues[0];
        (i.line, i.fix.clone())
    };
    let td = "trust_domain = \"example.org\"\n";
    // Top level.
    assert_eq!(fix_for(&format!("{td}socket_pth = \"/x\"\n")), (2, "did you mean socket_path?".into()));
    assert_eq!(fix_for(&format!("{td}Socket_Path = \"/x\"\n")).1, "did you mean socket_path?");
    assert_eq!(fix_for(&format!("{td}reatest_interval = \"1m\"\n")).1, "did you mean reattest_interval?");
    // A section, an array of tables, and a section of another module.
    assert_eq!(fix_for(&format!("{td}[ca]\ntll = \"1d\"\n")), (3, "did you mean ttl?".into()));
    assert_eq!(fix_for(&format!("{td}[attestors]\nmax_hashsize = 1\n")).1, "did you mean max_hash_size?");
    assert_eq!(
        fix_for(&format!("{td}[[federation]]\ntrust_domain = \"p.org\"\nbundle_pth = \"/b\"\n")).1,
        "did you mean bundle_path?"
    );
    assert_eq!(fix_for(&format!("{td}[telemetry]\nlistne = \"127.0.0.1:1\"\n")).1, "did you mean listen?");
    // Within an entry (swapped letters count once).
    let entry = "[[entries]]\nspiffe_id = \"spiffe://example.org/a\"\nselectors = [\"unix:uid:1\"]\n";
    assert_eq!(fix_for(&format!("{td}{entry}hnit = \"x\"\n")), (5, "did you mean hint?".into()));
    assert_eq!(fix_for(&format!("{td}{entry}dns_name = [\"a.b\"]\n")).1, "did you mean dns_names?");
    let delegation =
        "[entries.delegation]\nfrom = [\"spiffe://example.org/u\"]\nscopes = [\"x\"]\naudiences = [\"y\"]\n";
    assert_eq!(fix_for(&format!("{td}{entry}{delegation}max_ttll = \"1m\"\n")).1, "did you mean max_ttl?");
    // Nothing near: the general pointer, as for any other syntax error.
    let (_, fix) = fix_for(&format!("{td}colour = \"blue\"\n"));
    assert_eq!(fix, "see the README's configuration reference or systemd/tessera.toml");
}

#[test]
fn nearest_key_is_a_close_typo_or_nothing() {
    use super::validator::nearest_key;
    let keys = ["socket_path", "socket_mode", "ttl", "hint", "admin_socket_path"];
    assert_eq!(nearest_key("socket_pth", &keys), Some("socket_path"));
    assert_eq!(nearest_key("socket_mdoe", &keys), Some("socket_mode"));
    assert_eq!(nearest_key("admin_sock_path", &keys), Some("admin_socket_path"));
    assert_eq!(nearest_key("tl", &keys), Some("ttl"));
    assert_eq!(nearest_key("socket", &keys), None);
    assert_eq!(nearest_key("x", &keys), None);
    assert_eq!(nearest_key("", &keys), None);
}
