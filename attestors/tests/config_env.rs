//! config and env attestors on real processes and files.

mod common;

use common::*;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use tessera_attestors::{AttestConfig, Attestor};

fn config_attestor(paths: &[&Path]) -> Attestor {
    Attestor::new(AttestConfig {
        config_paths: paths.iter().map(|p| p.to_path_buf()).collect(),
        ..AttestConfig::default()
    })
}

fn config_digest(x: &tessera_attestors::Attestation, path: &Path) -> Option<String> {
    value_of(x, "config", &format!("sha256:{}:", path.display()))
}

#[test]
fn editing_a_config_file_flips_its_selector() {
    let dir = tempfile::tempdir().unwrap();
    let prompt = dir.path().join("prompt.md");
    std::fs::write(&prompt, "You are the support agent.\n").unwrap();
    let relative = dir.path().join("relative-link.md");
    symlink("prompt.md", &relative).unwrap();
    let attestor = config_attestor(&[&prompt, &relative]);
    let p = spawn_ready(&mut shell_waiting(Path::new("/bin/dash")));

    let x = attest(&attestor, p.pid());
    let before = config_digest(&x, &prompt).unwrap();
    assert_eq!(before, sha256_file(&prompt));
    assert_eq!(config_digest(&x, &relative), Some(before.clone()), "a link inside the root is fine");
    let selector = sel(&format!("config:sha256:{}:{before}", prompt.display()));
    assert_eq!(tessera_attestors::config_path_of(&selector), Some(prompt.clone()));
    assert!(x.watched_files.contains(&prompt));

    std::fs::write(&prompt, "You are the support agent. Ignore refunds.\n").unwrap();
    let y = attest(&attestor, p.pid());
    let after = config_digest(&y, &prompt).unwrap();
    assert_ne!(before, after);
    assert!(!y.selectors.contains(&selector));
}

#[test]
fn links_out_of_the_root_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let absolute = dir.path().join("absolute-link");
    symlink("/etc/hostname", &absolute).unwrap();
    let climbing = dir.path().join("climbing-link");
    symlink("../../../../../../../../etc/hostname", &climbing).unwrap();
    let missing = dir.path().join("missing.md");
    let attestor = config_attestor(&[&absolute, &climbing, &missing]);
    let p = spawn_ready(&mut shell_waiting(Path::new("/bin/dash")));

    let x = attest(&attestor, p.pid());
    assert!(x.selectors.iter().all(|s| s.kind() != "config"), "{:?}", x.selectors);
    let reason = x.reports.iter().find(|r| r.attestor == "config").unwrap().error.clone().unwrap();
    assert_eq!(reason.matches("leaves the process root").count(), 2, "{reason}");
    assert!(reason.contains("missing.md"), "{reason}");
}

#[test]
fn config_is_read_inside_a_chrooted_process_root() {
    let root = tempfile::tempdir().unwrap();
    let etc = root.path().join("etc/agent");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("prompt.md"), "inside the chroot\n").unwrap();
    // Absolute link: resolved from our root it would be the host's /etc/hostname.
    symlink("/etc/hostname", etc.join("escape")).unwrap();
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args([
        "-c",
        "import os, sys; os.chroot(sys.argv[1]); os.chdir('/'); print('ready', flush=True); sys.stdin.readline()",
    ])
    .arg(root.path());
    let p = spawn_ready(&mut cmd);
    let prompt = PathBuf::from("/etc/agent/prompt.md");
    let escape = PathBuf::from("/etc/agent/escape");
    let attestor = config_attestor(&[&prompt, &escape]);

    let x = attest(&attestor, p.pid());
    assert_eq!(config_digest(&x, &prompt).unwrap(), sha256_file(&etc.join("prompt.md")));
    assert_eq!(config_digest(&x, &escape), None);
    // Watched as a path the daemon can open: the file under the chroot directory.
    assert!(x.watched_files.contains(&etc.join("prompt.md")), "{:?}", x.watched_files);
}

#[test]
fn env_allowlist_only() {
    let attestor = Attestor::new(AttestConfig {
        env_allowlist: vec!["AGENT_ROLE".into(), "ABSENT".into(), "URL".into()],
        ..AttestConfig::default()
    });
    let mut cmd = shell_waiting(Path::new("/bin/dash"));
    cmd.env_clear()
        .env("AGENT_ROLE", "support")
        .env("URL", "http://x:8080/a")
        .env("SECRET_TOKEN", "hunter2-do-not-leak");
    let p = spawn_ready(&mut cmd);

    let x = attest(&attestor, p.pid());
    assert!(x.selectors.contains(&sel("env:AGENT_ROLE:support")));
    assert!(x.selectors.contains(&sel("env:URL:http://x:8080/a")));
    let env: Vec<_> = x.selectors.iter().filter(|s| s.kind() == "env").collect();
    assert_eq!(env.len(), 2, "{env:?}");
    let debug = format!("{x:?}");
    assert!(!debug.contains("hunter2") && !debug.contains("SECRET_TOKEN"), "{debug}");

    // Without an allowlist, no env selectors at all.
    let none = attest(&attestor_default(), p.pid());
    assert!(none.selectors.iter().all(|s| s.kind() != "env"));
}

fn attestor_default() -> Attestor {
    Attestor::new(AttestConfig::default())
}

#[test]
fn live_cgroup_matches_the_parser() {
    let p = spawn_ready(&mut shell_waiting(Path::new("/bin/dash")));
    let x = attest(&attestor_default(), p.pid());
    let text = std::fs::read_to_string(format!("/proc/{}/cgroup", p.pid())).unwrap();
    let facts = tessera_attestors::parse_cgroup(&text);
    assert_eq!(value_of(&x, "cgroup", "path:"), facts.path);
    assert_eq!(value_of(&x, "systemd", "id:"), facts.systemd_unit);
}

#[test]
fn fifos_and_devices_named_as_config_or_script_get_no_digest_and_do_not_block() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("prompt.md");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let dev_link = dir.path().join("dev.md");
    symlink("/dev/zero", &dev_link).unwrap();
    let script_fifo = dir.path().join("agent.sh");
    assert!(Command::new("mkfifo").arg(&script_fifo).status().unwrap().success());
    let attestor = config_attestor(&[&fifo, &dev_link]);
    // A shell "running" the FIFO as its script: it blocks opening it, which is fine for us.
    let mut cmd = Command::new("/bin/dash");
    cmd.args(["-c", "echo ready; exec /bin/dash \"$0\"", script_fifo.to_str().unwrap()]);
    let p = spawn_ready(&mut cmd);
    let pid = p.pid();
    // Wait (bounded) until the exec happened, so the script attestor sees the FIFO in argv.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let after_exec = format!("/bin/dash\0{}\0", script_fifo.display()).into_bytes();
    while std::fs::read(format!("/proc/{pid}/cmdline")).unwrap() != after_exec {
        assert!(std::time::Instant::now() < deadline, "child never exec'd");
        std::thread::yield_now();
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(attest(&attestor, pid));
    });
    let x = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("attestation blocked on a FIFO");
    assert!(x.selectors.iter().all(|s| s.kind() != "config"), "{:?}", x.selectors);
    assert!(value_of(&x, "script", "sha256:").is_none(), "{:?}", x.selectors);
    let config = x.reports.iter().find(|r| r.attestor == "config").unwrap().error.clone().unwrap();
    assert!(config.contains("not a regular file"), "{config}");
    let script = x
        .reports
        .iter()
        .find(|r| r.attestor == "script")
        .unwrap()
        .error
        .clone()
        .unwrap_or_else(|| panic!("{:?}", x.reports));
    assert!(script.contains("not a regular file"), "{script}");
}
