//! Tests of the pure parts of process pinning (`/proc` parsing).

#[test]
fn cmdline_keeps_empty_arguments() {
    let got = super::split_cmdline(b"python3\0-W\0\0evil.py\0legit.py\0");
    assert_eq!(got, ["python3", "-W", "", "evil.py", "legit.py"]);
    assert_eq!(super::split_cmdline(b"a\0\0"), ["a", ""]);
    assert!(super::split_cmdline(b"").is_empty());
    assert_eq!(super::split_cmdline(b"no-nul"), ["no-nul"]);
}

#[test]
fn stat_layout_skips_odd_command_names() {
    // Field n holds the number n (field 3 is the state letter); the name has ") (" in it.
    let fields: Vec<String> = (4..=52).map(|n: u32| n.to_string()).collect();
    let line = format!("42 (a) b (c) R {}\n", fields.join(" "));
    assert_eq!(super::exe_identity::layout_of_stat(line.as_bytes()), Some((26, 28)));
}
