//! Test harness: the real `tessera` binary on a temporary socket, and helpers to talk to it.
#![allow(unreachable_pub, reason = "pub for the test modules of this binary (`use crate::common::*`)")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

pub const TD: &str = "test.example";

/// The tools the tests that act as another uid run (skipped where absent).
pub const PYTHON: &str = "/usr/bin/python3";
pub const SETPRIV: &str = "/usr/bin/setpriv";
/// The other uid (and gid) those tests act as.
pub const NOBODY: u32 = 65534;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tessera")
}

pub fn uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// A running daemon; killed on drop.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub child: Option<Child>,
}

impl Daemon {
    /// Write `entries_toml` (plus the standard header) and start the daemon on it.
    pub fn start(extra_toml: &str) -> Self {
        let mut d = Self::configure(extra_toml);
        d.spawn();
        d
    }

    /// Write the config as `start` does, without starting the daemon.
    pub fn configure(extra_toml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let config = dir.path().join("tessera.toml");
        let text = format!(
            "trust_domain = \"{TD}\"\nsocket_path = \"{}\"\ndata_dir = \"{}\"\n{extra_toml}",
            socket.display(),
            dir.path().join("data").display()
        );
        std::fs::write(&config, text).unwrap();
        Self { dir, socket, config, child: None }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn audit_log(&self) -> PathBuf {
        self.data_dir().join("audit.log")
    }

    /// The audit log as written so far ("" before it exists).
    pub fn audit_text(&self) -> String {
        std::fs::read_to_string(self.audit_log()).unwrap_or_default()
    }

    /// Whether the audit log holds `needle` yet.
    pub fn audit_has(&self, needle: &str) -> bool {
        self.audit_text().contains(needle)
    }

    /// Every audit line, parsed (a line that is not JSON fails the test).
    pub fn audit_json(&self) -> Vec<serde_json::Value> {
        self.audit_text().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// The audit lines of one `event` (lines that do not parse, e.g. one being written, skipped).
    pub fn audit_events(&self, event: &str) -> Vec<serde_json::Value> {
        self.audit_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == event)
            .collect()
    }

    /// The admin socket (`admin.sock` beside the Workload API socket).
    pub fn admin_socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    /// Replace the config (atomically) by its first three lines (trust domain, socket, data
    /// directory: the header `configure` writes) and `body`.
    pub fn rewrite_config(&self, body: &str) {
        let head: String =
            std::fs::read_to_string(&self.config).unwrap().lines().take(3).map(|l| format!("{l}\n")).collect();
        replace_file(&self.config, &format!("{head}{body}"));
    }

    pub fn endpoint(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    /// Start the binary and wait until the socket accepts connections.
    pub fn spawn(&mut self) {
        self.spawn_wrapped(&[]);
    }

    /// `spawn`, through `wrapper` (a command that execs the rest of its arguments in its own
    /// process, e.g. `prlimit --nofile=1024:1024 --`), so the child is still the daemon.
    pub fn spawn_wrapped(&mut self, wrapper: &[&str]) {
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let child = command
            .args(["run", "--config"])
            .arg(&self.config)
            .env("TESSERA_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(self.dir.path().join("daemon.log")).unwrap()))
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for_socket(&self.socket, self.child.as_mut().unwrap(), &self.dir.path().join("daemon.log"));
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
            .unwrap();
        child.wait().unwrap()
    }

    pub async fn client(&self) -> spiffe::WorkloadApiClient {
        spiffe::WorkloadApiClient::connect_to(self.endpoint()).await.unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Readiness: the socket accepts a connection (bounded; fails fast if the daemon exits).
pub fn wait_for_socket(socket: &Path, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("daemon exited with {status}: {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "daemon not ready: {}", std::fs::read_to_string(log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `unix:uid:` of this process's uid.
pub fn uid_sel() -> String {
    format!("unix:uid:{}", uid())
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A script of `tests/support/`.
pub fn support(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support").join(name)
}

/// The attacks from another uid need root (the daemon as root, the attacker as [`NOBODY`]),
/// python3 and setpriv; says SKIP where they are missing.
pub fn attacks_possible() -> bool {
    if uid() != 0 || !Path::new(PYTHON).exists() || !Path::new(SETPRIV).exists() {
        eprintln!("SKIP: needs root, {PYTHON} and {SETPRIV}");
        return false;
    }
    true
}

/// `setpriv` as uid and gid [`NOBODY`] (no supplementary groups, or `groups`), running `program`.
pub fn as_nobody(program: &str, groups: Option<u32>) -> Command {
    let mut c = Command::new(SETPRIV);
    c.args(["--reuid", &NOBODY.to_string(), "--regid", &NOBODY.to_string()]);
    match groups {
        Some(g) => c.args(["--groups", &g.to_string()]),
        None => c.arg("--clear-groups"),
    };
    c.arg(program);
    c
}

/// A workload holding a stream open (`PROGRAM api watch --socket SOCKET`), once its first line
/// (which must start with `first`, e.g. "Received 1 svid") has arrived; with the rest of its stdout.
pub fn spawn_watch(program: &Path, socket: &Path, stderr: Stdio, first: &str) -> (Child, BufReader<ChildStdout>) {
    let mut child = Command::new(program)
        .args(["api", "watch", "--socket"])
        .arg(socket)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with(first), "{line}");
    (child, out)
}

/// [`spawn_watch`] of the tessera binary on `d`, its stdout read on (so it never blocks on a
/// full pipe).
pub fn spawn_watch_drained(d: &Daemon, stderr: Stdio, first: &str) -> Child {
    let (child, out) = spawn_watch(Path::new(bin()), &d.socket, stderr, first);
    std::thread::spawn(move || for _ in out.lines() {});
    child
}

/// VmRSS of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Wait (bounded) until `cond` holds, polling.
pub fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The gRPC status code inside a spiffe-crate error, if any (matched on the error's structure).
pub fn status_code(e: &spiffe::WorkloadApiError) -> Option<tonic::Code> {
    use spiffe::transport::{GrpcStatusCode as G, TransportError};
    use tonic::Code;
    match e {
        // The spiffe crate turns PermissionDenied into these two variants.
        spiffe::WorkloadApiError::NoIdentityIssued | spiffe::WorkloadApiError::PermissionDenied(_) => {
            Some(Code::PermissionDenied)
        }
        spiffe::WorkloadApiError::Transport(TransportError::Status(s)) => Some(match s.code() {
            G::Ok => Code::Ok,
            G::Cancelled => Code::Cancelled,
            G::Unknown => Code::Unknown,
            G::InvalidArgument => Code::InvalidArgument,
            G::DeadlineExceeded => Code::DeadlineExceeded,
            G::NotFound => Code::NotFound,
            G::AlreadyExists => Code::AlreadyExists,
            G::PermissionDenied => Code::PermissionDenied,
            G::ResourceExhausted => Code::ResourceExhausted,
            G::FailedPrecondition => Code::FailedPrecondition,
            G::Aborted => Code::Aborted,
            G::OutOfRange => Code::OutOfRange,
            G::Unimplemented => Code::Unimplemented,
            G::Internal => Code::Internal,
            G::Unavailable => Code::Unavailable,
            G::DataLoss => Code::DataLoss,
            G::Unauthenticated => Code::Unauthenticated,
            #[allow(unreachable_patterns)]
            _ => Code::Unknown,
        }),
        _ => None,
    }
}

/// A gRPC channel to the daemon's Unix socket.
pub async fn uds_channel(socket: &Path) -> tonic::transport::Channel {
    let socket = socket.to_owned();
    tonic::transport::Endpoint::try_from("http://localhost")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(socket).await?))
            }
        }))
        .await
        .unwrap()
}

/// A raw tonic client on the socket (for what the spiffe crate will not send, e.g. no header).
pub async fn raw_client(
    socket: &Path,
) -> tessera::pb::spiffe_workload_api_client::SpiffeWorkloadApiClient<tonic::transport::Channel> {
    tessera::pb::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(uds_channel(socket).await)
}

/// Parse one DER certificate.
pub fn with_cert<R>(der: &[u8], f: impl FnOnce(&x509_parser::certificate::X509Certificate<'_>) -> R) -> R {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    f(&cert)
}

/// Verify an SVID chain (leaf first) against bundle roots at a given time, as an RFC 5280 client would.
pub fn verify_chain(chain: &[Vec<u8>], roots: &[Vec<u8>], at_unix: u64) -> Result<(), String> {
    use rustls::pki_types::{CertificateDer, UnixTime};
    let ders: Vec<CertificateDer<'_>> = chain.iter().map(|c| CertificateDer::from(c.as_slice())).collect();
    let root_ders: Vec<CertificateDer<'_>> = roots.iter().map(|c| CertificateDer::from(c.as_slice())).collect();
    let anchors: Vec<_> = root_ders
        .iter()
        .map(|r| webpki::anchor_from_trusted_cert(r).map_err(|e| format!("anchor: {e:?}")))
        .collect::<Result<_, _>>()?;
    let leaf = webpki::EndEntityCert::try_from(&ders[0]).map_err(|e| format!("leaf: {e:?}"))?;
    let algs: &[&dyn rustls::pki_types::SignatureVerificationAlgorithm] = &[webpki::aws_lc_rs::ECDSA_P256_SHA256];
    leaf.verify_for_usage(
        algs,
        &anchors,
        &ders[1..],
        UnixTime::since_unix_epoch(Duration::from_secs(at_unix)),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| format!("{e:?}"))
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Write a file atomically (as editors and config managers do).
pub fn replace_file(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp-replace");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// Split concatenated DER certificates.
pub fn split_der(der: &[u8]) -> Vec<Vec<u8>> {
    tessera::testing::split_certs(der).unwrap()
}

/// Wait until `path` was last changed longer ago than the daemon's racy window (a file changed
/// more recently is re-read on every call rather than trusted to show its next change in `stat`).
pub fn wait_until_not_racy(path: &Path) {
    let m = std::fs::metadata(path).unwrap();
    let ctime = tessera_attestors::FileKey::of(&m).ctime().unwrap();
    let ready_at = ctime + tessera_attestors::DIGEST_CACHE_RACY_WINDOW + Duration::from_millis(1);
    if let Ok(left) = ready_at.duration_since(std::time::SystemTime::now()) {
        std::thread::sleep(left);
    }
}
