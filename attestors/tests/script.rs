//! script attestor on a real Python agent.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

const AGENT: &str = "import sys\nprint('ready', flush=True)\nsys.stdin.readline()\n";

fn python(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args(args).current_dir(dir);
    cmd
}

#[test]
fn python_script_with_flags_and_edit() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("agent.py");
    std::fs::write(&script, AGENT).unwrap();
    let p = spawn_ready(&mut python(dir.path(), &["-u", "-X", "dev", "agent.py"]));
    let attestor = attestor();

    let x = attest(&attestor, p.pid());
    assert!(x.selectors.contains(&sel("script:interpreter:python3")), "{:?}", x.selectors);
    assert_eq!(
        value_of(&x, "script", "path:").unwrap_or_else(|| panic!("{:?}", x.reports)),
        script.display().to_string()
    );
    let before = value_of(&x, "script", "sha256:").unwrap();
    assert_eq!(before, sha256_file(&script));
    assert!(x.watched_files.contains(&script));
    assert!(
        x.selectors
            .iter()
            .filter(|s| s.kind() == "script")
            .all(|s| { s.strength() == tessera_attestors::Strength::Weak })
    );

    // Editing the script (the running process is unchanged) flips script:sha256.
    std::fs::write(&script, format!("{AGENT}# tampered\n")).unwrap();
    let y = attest(&attestor, p.pid());
    let after = value_of(&y, "script", "sha256:").unwrap();
    assert_ne!(before, after);
    assert_eq!(after, sha256_file(&script));
}

#[test]
fn python_dash_m_module_and_package() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("agent.py"), AGENT).unwrap();
    std::fs::create_dir(dir.path().join("pkg")).unwrap();
    std::fs::write(dir.path().join("pkg/__init__.py"), "").unwrap();
    std::fs::write(dir.path().join("pkg/__main__.py"), AGENT).unwrap();
    let attestor = attestor();

    let m = spawn_ready(&mut python(dir.path(), &["-m", "agent"]));
    let x = attest(&attestor, m.pid());
    let agent = dir.path().join("agent.py");
    assert_eq!(value_of(&x, "script", "path:").unwrap(), agent.display().to_string());
    assert_eq!(value_of(&x, "script", "sha256:").unwrap(), sha256_file(&agent));

    let pkg = spawn_ready(&mut python(dir.path(), &["-m", "pkg"]));
    let y = attest(&attestor, pkg.pid());
    let main = dir.path().join("pkg/__main__.py");
    assert_eq!(value_of(&y, "script", "path:").unwrap(), main.display().to_string());
}

#[test]
fn inline_code_has_interpreter_only_and_non_interpreters_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p =
        spawn_ready(&mut python(dir.path(), &["-c", "import sys; print('ready', flush=True); sys.stdin.readline()"]));
    let x = attest(&attestor(), p.pid());
    assert!(x.selectors.contains(&sel("script:interpreter:python3")));
    assert_eq!(value_of(&x, "script", "path:"), None);
    let script = x.reports.iter().find(|r| r.attestor == "script").unwrap();
    assert_eq!(script.error, None);

    let sh = spawn_ready(&mut shell_waiting(Path::new("/bin/dash")));
    let y = attest(&attestor(), sh.pid());
    // `dash -c ...`: an interpreter running inline code.
    assert!(y.selectors.contains(&sel("script:interpreter:dash")));
    assert_eq!(value_of(&y, "script", "path:"), None);
}

#[test]
fn shell_script_file() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("run.sh");
    std::fs::write(&script, "echo ready\nread x\n").unwrap();
    let mut cmd = Command::new("/bin/bash");
    cmd.args(["-e", "-o", "pipefail", "./run.sh"]).current_dir(dir.path());
    let p = spawn_ready(&mut cmd);
    let x = attest(&attestor(), p.pid());
    assert!(x.selectors.contains(&sel("script:interpreter:bash")));
    assert_eq!(value_of(&x, "script", "path:").unwrap(), script.display().to_string());
    assert_eq!(value_of(&x, "script", "sha256:").unwrap(), sha256_file(&script));
}

#[test]
fn scripts_have_a_lower_size_limit_than_executables() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("agent.py");
    std::fs::write(&script, AGENT).unwrap();
    let p = spawn_ready(&mut python(dir.path(), &["agent.py"]));
    let attestor = tessera_attestors::Attestor::new(tessera_attestors::AttestConfig {
        max_script_hash_size: Some(10),
        ..tessera_attestors::AttestConfig::default()
    });
    let x = attest(&attestor, p.pid());
    assert!(value_of(&x, "unix", "sha256:").is_some(), "the executable is under max_hash_size");
    assert_eq!(value_of(&x, "script", "path:").unwrap(), script.display().to_string());
    assert_eq!(value_of(&x, "script", "sha256:"), None);
    let reason = x.reports.iter().find(|r| r.attestor == "script").unwrap().error.clone().unwrap();
    assert!(reason.contains("max_script_hash_size"), "{reason}");
    const { assert!(tessera_attestors::DEFAULT_MAX_SCRIPT_HASH_SIZE <= 16 << 20) };
}

#[test]
fn spoofs_with_argv_and_env_do_not_report_the_legit_script() {
    let dir = tempfile::tempdir().unwrap();
    let legit = dir.path().join("legit.py");
    std::fs::write(&legit, "print('legit')\n").unwrap();
    let evil = dir.path().join("evil.py");
    std::fs::write(&evil, AGENT).unwrap();
    let attestor = attestor();

    // An empty -W value: python runs evil.py; we must not say legit.py.
    let p = spawn_ready(&mut python(dir.path(), &["-W", "", "evil.py", "legit.py"]));
    let x = attest(&attestor, p.pid());
    assert_eq!(value_of(&x, "script", "path:").unwrap(), evil.display().to_string());
    assert_eq!(value_of(&x, "script", "sha256:").unwrap(), sha256_file(&evil));

    // A preload through the environment: legit.py is named, but PYTHONPATH's sitecustomize
    // runs first (here it is the code that waits, so legit.py never even starts).
    std::fs::write(dir.path().join("sitecustomize.py"), AGENT).unwrap();
    let p = spawn_ready(python(dir.path(), &["legit.py"]).env("PYTHONPATH", dir.path()));
    let x = attest(&attestor, p.pid());
    assert!(x.selectors.contains(&sel("script:interpreter:python3")));
    assert_eq!(value_of(&x, "script", "path:"), None, "{:?}", x.selectors);
    assert_eq!(value_of(&x, "script", "sha256:"), None);
    let reason = x.reports.iter().find(|r| r.attestor == "script").unwrap().error.clone().unwrap();
    assert!(reason.contains("PYTHONPATH") && !reason.contains(dir.path().to_str().unwrap()), "{reason}");
}
