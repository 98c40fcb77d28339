//! unix attestor on real binaries: digests follow content, the cache follows file versions.

mod common;

use common::*;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tessera_attestors::{AttestConfig, Attestor};

/// Copies /bin/dash to `dir/name`, appending `extra` bytes (ELF ignores trailing data).
fn copy_shell(dir: &Path, name: &str, extra: &[u8]) -> PathBuf {
    let path = dir.join(name);
    let mut bytes = std::fs::read("/bin/dash").unwrap();
    bytes.extend_from_slice(extra);
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&bytes).unwrap();
    f.sync_all().unwrap();
    drop(f);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn binary_digest_follows_content() {
    let dir = tempfile::tempdir().unwrap();
    let a = copy_shell(dir.path(), "agent-a", b"");
    let b = copy_shell(dir.path(), "agent-b", b"a different build");
    let c = copy_shell(dir.path(), "agent-c", b"");
    let attestor = attestor();
    let (pa, pb, pc) =
        (spawn_ready(&mut shell_waiting(&a)), spawn_ready(&mut shell_waiting(&b)), spawn_ready(&mut shell_waiting(&c)));
    let (xa, xb, xc) = (attest(&attestor, pa.pid()), attest(&attestor, pb.pid()), attest(&attestor, pc.pid()));
    let sha = |x| value_of(x, "unix", "sha256:").unwrap();
    assert_ne!(sha(&xa), sha(&xb), "different content, different digest");
    assert_eq!(sha(&xa), sha(&xc), "same content, same digest");
    assert_eq!(sha(&xa), sha256_file(&a));
    assert_eq!(sha(&xb), sha256_file(&b));

    // SPIRE's other unix selectors, for a root test process.
    for s in ["unix:uid:0", "unix:gid:0", "unix:user:root", "unix:group:root"] {
        assert!(xa.selectors.contains(&sel(s)), "missing {s} in {:?}", xa.selectors);
    }
    assert_eq!(value_of(&xa, "unix", "path:").unwrap(), a.display().to_string());
    assert!(xa.watched_files.contains(&a));
    let unix = &xa.reports[0];
    assert_eq!((unix.attestor, &unix.error), ("unix", &None));
}

#[test]
fn deleted_binary_is_still_hashed_through_proc_exe() {
    let dir = tempfile::tempdir().unwrap();
    let a = copy_shell(dir.path(), "agent", b"v1");
    let expected = sha256_file(&a);
    let p = spawn_ready(&mut shell_waiting(&a));
    std::fs::remove_file(&a).unwrap();
    copy_shell(dir.path(), "agent", b"v2 planted at the same path");
    let x = attest(&attestor(), p.pid());
    assert_eq!(value_of(&x, "unix", "sha256:").unwrap(), expected);
    assert!(value_of(&x, "unix", "path:").unwrap().ends_with("(deleted)"));
}

#[test]
fn second_attestation_of_100mib_binary_is_served_from_cache() {
    let dir = tempfile::tempdir().unwrap();
    let big = copy_shell(dir.path(), "big-agent", &vec![0x5a; 100 * 1024 * 1024]);
    let size = std::fs::metadata(&big).unwrap().len();
    wait_until_not_racy(&big);
    let p = spawn_ready(&mut shell_waiting(&big));
    let attestor = attestor();

    let first = attest(&attestor, p.pid());
    let after_first = attestor.digest_stats();
    assert_eq!(after_first.misses, 1);
    assert_eq!(after_first.hits, 0);
    assert_eq!(after_first.bytes_hashed, size, "hashed exactly once, streamed whole");

    let second = attest(&attestor, p.pid());
    let after_second = attestor.digest_stats();
    assert_eq!(after_second.hits, after_first.hits + 1);
    assert_eq!(after_second.misses, after_first.misses);
    assert_eq!(after_second.bytes_hashed, after_first.bytes_hashed, "file not read again");
    assert_eq!(value_of(&first, "unix", "sha256:"), value_of(&second, "unix", "sha256:"));

    // A reload keeps the cache.
    attestor.set_config(AttestConfig { max_hash_size: Some(u64::MAX), ..AttestConfig::default() });
    attest(&attestor, p.pid());
    assert_eq!(attestor.digest_stats().hits, after_second.hits + 1);
    assert_eq!(attestor.digest_stats().bytes_hashed, after_first.bytes_hashed);
}

#[test]
fn over_limit_binary_keeps_other_selectors() {
    let attestor = Attestor::new(AttestConfig { max_hash_size: Some(1000), ..AttestConfig::default() });
    let p = spawn_ready(&mut shell_waiting(Path::new("/bin/dash")));
    let x = attest(&attestor, p.pid());
    assert_eq!(value_of(&x, "unix", "sha256:"), None);
    assert!(x.selectors.contains(&sel("unix:uid:0")));
    assert!(value_of(&x, "unix", "path:").is_some());
    let reason = x.reports[0].error.as_deref().unwrap();
    assert!(reason.contains("max_hash_size"), "{reason}");
    assert_eq!(attestor.digest_stats().bytes_hashed, 0, "over-limit files are not read");
}

#[test]
fn digests_nobody_asked_for_are_not_computed() {
    let attestor = Attestor::new(AttestConfig { want_exe_digest: false, ..AttestConfig::default() });
    let p = spawn_ready(&mut shell_waiting(Path::new("/bin/dash")));
    let x = attest(&attestor, p.pid());
    assert_eq!(value_of(&x, "unix", "sha256:"), None);
    assert!(value_of(&x, "unix", "path:").is_some());
    assert_eq!(x.reports[0].error, None, "not wanted is not a failure");
    assert_eq!(attestor.digest_stats().misses + attestor.digest_stats().hits, 0, "nothing hashed");
}

#[test]
fn a_peer_uid_over_its_hashing_budget_gets_no_digest() {
    use tessera_attestors::{HashBudget, PeerCredentials, ProcessHandle};
    let budget = HashBudget { bytes: 1000, window: std::time::Duration::from_secs(60) };
    let attestor = Attestor::new(AttestConfig { hash_budget_per_uid: Some(budget), ..AttestConfig::default() });
    let p = spawn_ready(&mut shell_waiting(Path::new("/bin/dash")));
    let peer = PeerCredentials { pid: Some(p.pid()), uid: 0, gid: 0, pidfd: None, pidfd_from_kernel: false, exe: None };
    let x = attestor.attest(&ProcessHandle::from_peer(peer).unwrap()).unwrap();
    assert_eq!(value_of(&x, "unix", "sha256:"), None);
    let reason = x.reports[0].error.as_deref().unwrap();
    assert!(reason.contains("hashing budget") && reason.contains("uid 0"), "{reason}");
    assert_eq!(attestor.digest_stats().bytes_hashed, 0, "refused before reading");
    // `tessera attest PID` (no peer) is not charged.
    assert!(value_of(&attest(&attestor, p.pid()), "unix", "sha256:").is_some());
}
