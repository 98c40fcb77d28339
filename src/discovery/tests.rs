use super::signatures::*;
use super::*;

#[test]
fn key_names_and_prefixes_are_found_by_name_only() {
    let env = b"PATH=/usr/bin\0OPENAI_API_KEY=sk-test-abcdefghijklmnop\0HOME=/root\0WEIRD=ghp_0123456789abcdef\0GITHUB_TOKEN=\0";
    assert_eq!(secret_names(env), vec!["OPENAI_API_KEY".to_owned(), "WEIRD".to_owned()]);
    assert!(secret_names(b"SLACK_SECRET=x\0").contains(&"SLACK_SECRET".to_owned()));
    assert!(secret_names(b"AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\0").contains(&"AWS_ACCESS_KEY_ID".to_owned()));
    assert!(secret_names(b"SKIP=sk-\0TERM=xterm\0").is_empty());
}

#[test]
fn signatures_match_exe_script_and_cmdline() {
    let s = Signature {
        name: "mine".into(),
        exe: Some("python3".into()),
        script: Some("agent.py".into()),
        ..Default::default()
    };
    assert!(s.matches(&Shown { exe: "/usr/bin/python3", script: Some("/srv/agent.py"), cmdline: "" }));
    assert!(!s.matches(&Shown { exe: "/usr/bin/python3", script: Some("other.py"), cmdline: "" }));
    let empty = Signature { name: "none".into(), ..Default::default() };
    assert!(!empty.matches(&Shown { exe: "x", script: None, cmdline: "x" }));
    let b = builtin();
    let any = |cmd: &str, exe: &str| b.iter().any(|s| s.matches(&Shown { exe, script: None, cmdline: cmd }));
    assert!(any("python3 -c import openai", "/usr/bin/python3"));
    assert!(any("npx -y @modelcontextprotocol/server-filesystem /tmp", "/usr/bin/node"));
    assert!(any("uvx mcp-server-fetch", "/usr/bin/uv"));
    assert!(any("claude", "/usr/local/bin/claude"));
    assert!(!any("sleep 100", "/usr/bin/sleep"));
}

#[test]
fn a_fake_proc_is_scanned_with_bounded_and_unreadable_environments() {
    let d = tempfile::tempdir().unwrap();
    let mk = |pid: &str, cmd: &[u8], env: Option<&[u8]>| {
        let p = d.path().join(pid);
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("cmdline"), cmd).unwrap();
        if let Some(env) = env {
            std::fs::write(p.join("environ"), env).unwrap();
        }
    };
    mk("10", b"python3\0-c\0import openai\0", Some(b"OPENAI_API_KEY=sk-test-0123456789\0"));
    mk("11", b"sleep\x00100\0", Some(b"HOME=/\0"));
    mk("12", b"node\0mcp-server.js\0", None);
    let mut huge = vec![b'A'; usize::try_from(MAX_ENVIRON).unwrap() * 2];
    huge.extend_from_slice(b"\0LATE_API_KEY=sk-zzzzzzzzzzzzzz\0");
    mk("13", b"bash\0", Some(&huge));
    mk("14", b"", None);
    mk("self", b"x", None);
    let s = scan(d.path(), &[], 0);
    assert_eq!(s.processes, 5);
    let pids: Vec<i32> = s.found.iter().map(|f| f.pid).collect();
    assert_eq!(pids, vec![10, 12]);
    assert_eq!(s.found[0].secret_env, vec!["OPENAI_API_KEY".to_owned()]);
    assert!(s.found[1].environ.starts_with("unreadable"));
    let text = serde_json::to_string(&s).unwrap();
    assert!(!text.contains("sk-test-0123456789"), "{text}");
    let custom = Signature { name: "bash things".into(), exe: Some("bash".into()), ..Default::default() };
    let s = scan(d.path(), &[custom], 0);
    let f = s.found.iter().find(|f| f.pid == 13).unwrap();
    assert_eq!(f.environ, "truncated");
    assert!(f.secret_env.is_empty(), "nothing past 256 KiB is read");
}
