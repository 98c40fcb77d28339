//! Helpers shared by the integration tests: real processes that say when they are ready.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use tessera_attestors::{AttestConfig, Attestation, Attestor, ProcessHandle, Selector};

/// A child process that printed "ready"; killed and reaped on drop.
pub struct Ready {
    pub child: Child,
    _stdout: BufReader<ChildStdout>,
}

impl Ready {
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    /// Writes a line to its stdin and waits for its next line on stdout, which must be `expect`.
    pub fn step(&mut self, expect: &str) {
        use std::io::Write;
        self.child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
        let mut line = String::new();
        self._stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), expect);
    }

    /// Kill and reap, so that the pid becomes free for reuse.
    pub fn kill_and_reap(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Ready {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cmd` with piped stdin/stdout and waits for its first line to be "ready".
pub fn spawn_ready(cmd: &mut Command) -> Ready {
    // `cargo test` sets LD_LIBRARY_PATH for its test binaries; a workload with it set gets no
    // script selector (the loader could run other code first), so children run without it.
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).env_remove("LD_LIBRARY_PATH");
    let mut tries = 0;
    let mut child = loop {
        match cmd.spawn() {
            Ok(c) => break c,
            // A freshly written executable can be briefly "busy" while another test thread's
            // fork still holds the write fd before exec; retry.
            Err(e) if e.raw_os_error() == Some(26) && tries < 50 => tries += 1,
            Err(e) => panic!("spawn {cmd:?}: {e}"),
        }
    };
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "child {cmd:?} did not get ready");
    Ready { child, _stdout: stdout }
}

/// `program -c 'echo ready; read x'`: a shell (or a copy of one) that waits on stdin.
pub fn shell_waiting(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(["-c", "echo ready; read x"]);
    cmd
}

pub fn attest(attestor: &Attestor, pid: i32) -> Attestation {
    let handle = ProcessHandle::open(pid).unwrap();
    attestor.attest(&handle).unwrap()
}

pub fn attestor() -> Attestor {
    Attestor::new(AttestConfig::default())
}

pub fn sha256_file(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sel(s: &str) -> Selector {
    s.parse().unwrap()
}

/// The single selector of `kind` whose value starts with `prefix`, if any.
pub fn value_of(a: &Attestation, kind: &str, prefix: &str) -> Option<String> {
    let found: Vec<_> = a
        .selectors
        .iter()
        .filter(|s| s.kind() == kind && s.value().starts_with(prefix))
        .map(|s| s.value()[prefix.len()..].to_owned())
        .collect();
    assert!(found.len() <= 1, "several {kind}:{prefix} selectors: {found:?}");
    found.into_iter().next()
}

/// Waits (bounded, by the file's own ctime) until the digest cache will accept `path`.
pub fn wait_until_not_racy(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    let m = std::fs::metadata(path).unwrap();
    let ctime = UNIX_EPOCH + Duration::new(u64::try_from(m.ctime()).unwrap(), u32::try_from(m.ctime_nsec()).unwrap());
    let ready_at = ctime + tessera_attestors::DIGEST_CACHE_RACY_WINDOW + Duration::from_millis(1);
    if let Ok(left) = ready_at.duration_since(SystemTime::now()) {
        std::thread::sleep(left);
    }
}
