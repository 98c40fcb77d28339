//! A process in a mount namespace of its own user namespace chooses every path: `unix:path`,
//! `script:path` and `config:sha256` must not come from there, while `unix:sha256` stays.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use tessera_attestors::{AttestConfig, AttestError, Attestor, ProcessHandle};

const SETPRIV: &str = "/usr/bin/setpriv";
const UNSHARE: &str = "/usr/bin/unshare";

fn possible() -> bool {
    if !nix::unistd::geteuid().is_root() || !Path::new(SETPRIV).exists() || !Path::new(UNSHARE).exists() {
        eprintln!("SKIP: needs root, {SETPRIV} and {UNSHARE}");
        return false;
    }
    // Unprivileged user namespaces may be disabled (sysctl, AppArmor): then the attack is moot.
    let ok = Command::new(SETPRIV)
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", UNSHARE, "-Urm", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIP: unprivileged user namespaces are not available here");
    }
    ok
}

#[test]
fn paths_from_an_unprivileged_mount_namespace_are_withheld() {
    if !possible() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sbin = dir.path().join("sbin");
    std::fs::create_dir(&sbin).unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    // On the host: a root-owned prompt (readable, as prompts often are) and no legit-daemon.
    let prompt = etc.join("prompt.md");
    std::fs::write(&prompt, "You are the support agent.\n").unwrap();
    // Named like a shell so that the script attestor also runs (a "legit-daemon" is the same).
    let legit = sbin.join("sh");
    let script = sbin.join("agent.sh");

    // As nobody: own user+mount namespace, tmpfs over both directories, a copy of the prompt,
    // a shell copied to the "legit" path, and a script run by it.
    let setup = format!(
        "cp {prompt} /tmp/prompt.$$ && mount -t tmpfs none {sbin} && mount -t tmpfs none {etc} && \
         cp /tmp/prompt.$$ {prompt} && rm /tmp/prompt.$$ && cp /bin/dash {legit} && \
         printf 'echo ready; read x\\n' > {script} && exec {legit} {script}",
        prompt = prompt.display(),
        sbin = sbin.display(),
        etc = etc.display(),
        legit = legit.display(),
        script = script.display(),
    );
    let mut cmd = Command::new(SETPRIV);
    cmd.args(["--reuid", "65534", "--regid", "65534", "--clear-groups", UNSHARE, "-Urm", "/bin/sh", "-c", &setup]);
    let p = spawn_ready(&mut cmd);
    assert!(!legit.exists(), "the forged binary exists only inside the namespace");

    let attestor = Attestor::new(AttestConfig { config_paths: vec![prompt.clone()], ..AttestConfig::default() });
    let x = attest(&attestor, p.pid());
    assert!(x.selectors.contains(&sel("unix:uid:65534")), "{:?}", x.selectors);
    // The exe digest is the mapped inode's own content: a copy of dash.
    assert_eq!(value_of(&x, "unix", "sha256:"), Some(sha256_file(Path::new("/bin/dash"))));
    assert_eq!(value_of(&x, "unix", "path:"), None, "{:?}", x.selectors);
    assert_eq!(value_of(&x, "script", "path:"), None, "{:?}", x.selectors);
    assert!(x.selectors.iter().all(|s| s.kind() != "config"), "{:?}", x.selectors);
    // Still evidence for the audit trail, and the reasons say why.
    assert_eq!(x.exe.path.as_deref(), Some(legit.to_str().unwrap()));
    let reason = |name: &str| x.reports.iter().find(|r| r.attestor == name).unwrap().error.clone().unwrap_or_default();
    assert!(reason("unix").contains("unix:path withheld"), "{}", reason("unix"));
    assert!(reason("unix").contains("user namespace"), "{}", reason("unix"));
    assert!(reason("config").contains("config:sha256 withheld"), "{}", reason("config"));
    assert!(reason("script").contains("script:path withheld"), "{}", reason("script"));
}

#[test]
fn a_privileged_mount_namespace_keeps_its_paths() {
    // Root-made namespaces (systemd sandboxing, containers run by root) stay evidence.
    let dir = tempfile::tempdir().unwrap();
    let prompt = dir.path().join("prompt.md");
    std::fs::write(&prompt, "hello\n").unwrap();
    let mut cmd = Command::new(UNSHARE);
    cmd.args(["-m", "/bin/dash", "-c", "echo ready; read x"]);
    let p = spawn_ready(&mut cmd);
    let attestor = Attestor::new(AttestConfig { config_paths: vec![prompt.clone()], ..AttestConfig::default() });
    let x = attest(&attestor, p.pid());
    assert!(value_of(&x, "unix", "path:").is_some(), "{:?}", x.reports);
    assert!(value_of(&x, "config", &format!("sha256:{}:", prompt.display())).is_some(), "{:?}", x.reports);
}

/// A process that leaves the daemon's mount namespace while it is being attested (`unshare`
/// without an exec: the attestation's first reads took its paths for the daemon's view) gets
/// no identity from that attestation; a new one sees the namespace for what it is.
#[test]
fn leaving_the_mount_namespace_during_attestation_is_refused() {
    if !possible() {
        return;
    }
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args([
        "-c",
        "import ctypes, sys; print('ready', flush=True); sys.stdin.readline(); \
         libc = ctypes.CDLL(None, use_errno=True); \
         assert libc.unshare(0x10000000 | 0x00020000) == 0, ctypes.get_errno(); \
         print('unshared', flush=True); sys.stdin.readline()",
    ]);
    let mut child = spawn_ready(&mut cmd);
    let handle = ProcessHandle::open(child.pid()).unwrap();
    let attestor = Attestor::new(AttestConfig::default());
    let before = attestor.attest(&handle).unwrap();
    assert!(before.selectors.iter().any(|s| s.to_string().starts_with("unix:path:")), "{:?}", before.selectors);

    child.step("unshared");
    let err = attestor.attest(&handle).unwrap_err();
    assert!(matches!(err, AttestError::MountNamespaceChanged { .. }), "{err}");
    let fresh = attestor.attest(&ProcessHandle::open(child.pid()).unwrap()).unwrap();
    assert!(!fresh.selectors.iter().any(|s| s.to_string().starts_with("unix:path:")), "{:?}", fresh.selectors);
}
