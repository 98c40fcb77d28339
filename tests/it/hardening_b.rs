//! A local attacker gets no panic, no log flood, no foreign socket
//! directory, no permanent kernel watches and no unbounded audit trail — against the real daemon.

use crate::common::*;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(ty: u8, flags: u8, sid: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.push(ty);
    f.push(flags);
    f.extend_from_slice(&sid.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Send raw bytes on a fresh connection and read until the daemon closes it (bounded).
fn send_raw(socket: &std::path::Path, bytes: &[u8]) -> Vec<u8> {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn malformed_hpack_integers_are_refused_without_a_panic_line() {
    let d = Daemon::start("");
    for block in [&[0x3f, 0xff][..], &[0x3f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], &[0x82, 0x3f]] {
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[]));
        input.extend(frame(0x1, 0x4 | 0x1, 1, block));
        let reply = send_raw(&d.socket, &input);
        // A clean refusal: the connection closes, no response HEADERS for stream 1.
        assert!(!reply.windows(5).any(|w| w[3] == 0x1 && w[4] & 0x4 != 0), "{reply:x?}");
    }
    // The daemon still serves, and its log holds no panic.
    let reply = send_raw(&d.socket, &[PREFACE, &frame(0x4, 0, 0, &[]), &frame(0x7, 0, 0, &[0; 8])].concat());
    assert!(reply.len() >= 9 && reply[3] == 0x4, "the server's SETTINGS: {reply:x?}");
    let log = d.log();
    assert!(!log.contains("panicked"), "{log}");
}

/// Run `tessera ARGS` to completion (bounded), returning (success, stderr).
fn run_to_end(args: &[&str], cfg: &std::path::Path) -> (bool, String) {
    let mut child =
        Command::new(bin()).args(args).arg(cfg).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            return (status.success(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tessera {args:?} did not exit: it accepted the config");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn durations_that_would_overflow_are_config_errors_in_check_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    let head = format!(
        "trust_domain = \"{TD}\"\nsocket_path = \"{}\"\ndata_dir = \"{}\"\n",
        dir.path().join("s.sock").display(),
        dir.path().join("data").display()
    );
    let entry = |ttl: &str| {
        format!("[[entries]]\nspiffe_id = \"spiffe://{TD}/a\"\nselectors = [\"unix:uid:{}\"]\n{ttl}\n", uid())
    };
    for (body, line, key) in [
        ("[ca]\nttl = \"3650000d\"\n".to_string(), 5, "ca.ttl"),
        (entry("x509_svid_ttl = \"100000000d\""), 7, "entries[0].x509_svid_ttl"),
        (entry("jwt_svid_ttl = \"213503982334601d\""), 7, "entries[0].jwt_svid_ttl"),
        ("default_jwt_svid_ttl = \"99999999999999999999s\"\n".to_string(), 4, "default_jwt_svid_ttl"),
        ("reattest_interval = \"1000000d\"\n".to_string(), 4, "reattest_interval"),
    ] {
        std::fs::write(&cfg, format!("{head}{body}")).unwrap();
        for cmd in [&["check", "--config"][..], &["run", "--config"]] {
            let (ok, err) = run_to_end(cmd, &cfg);
            assert!(!ok, "{cmd:?} accepted {body}");
            assert!(!err.contains("panicked"), "{err}");
            assert!(err.contains(&format!("{}:{line}: {key}", cfg.display())), "{cmd:?} {body}: {err}");
            assert!(err.contains("fix: use at most") || err.contains("too large"), "{err}");
        }
    }
}

#[test]
fn stale_ca_temp_files_are_removed_at_start() {
    let mut d = Daemon::start("");
    // (Not asserting a clean exit: a SIGTERM right after the socket appears can precede the
    // daemon's signal handler.)
    d.stop();
    let stale = d.data_dir().join(".ca.json.tmp.999999");
    let stale_new_form = d.data_dir().join(".ca.json.tmp.999998.3");
    std::fs::write(&stale, b"{\"x509\": \"every CA key\"}").unwrap();
    std::fs::write(&stale_new_form, b"{}").unwrap();
    d.spawn();
    assert!(!stale.exists() && !stale_new_form.exists(), "stale temp files removed when the CA store opens");
    assert!(d.data_dir().join("ca.json").exists());
}

/// Dev mode without XDG_RUNTIME_DIR, in a private mount namespace whose /tmp is a fresh tmpfs (so
/// the host's /tmp/tessera-<uid> is never touched): `setup` prepares /tmp first, then `tessera
/// run` starts. Returns (exited, success, stderr, socket dir mode) once it exits or serves.
fn dev_mode_in_private_tmp(setup: &str) -> (bool, bool, String, String) {
    // A tessera binary under /tmp (a checkout or target directory there) would be hidden by the
    // fresh tmpfs: opened before the mount, it is bind-mounted back at its path (from the open
    // descriptor) inside the namespace, so `{bin}` below runs the same file wherever it lives.
    let exe = std::fs::canonicalize(bin()).unwrap();
    let (keep, restore) = if exe.starts_with(std::fs::canonicalize("/tmp").unwrap()) {
        let (exe, dir) = (exe.display(), exe.parent().unwrap().display());
        (
            format!("exec 3<'{exe}' && "),
            format!(
                "mkdir -p '{dir}' && touch '{exe}' && mount --no-canonicalize --bind /proc/self/fd/3 '{exe}' && \
                 exec 3<&- && "
            ),
        )
    } else {
        (String::new(), String::new())
    };
    let script = format!(
        "{keep}mount -t tmpfs tmpfs /tmp && {restore}D=/tmp/tessera-$(id -u) && {setup} || exit 1; \
         env -u XDG_RUNTIME_DIR -u XDG_STATE_HOME HOME=/tmp/home {bin} run 2>/tmp/log & P=$!; \
         for i in $(seq 1 400); do \
           if ! kill -0 $P 2>/dev/null; then wait $P; echo \"exit=$?\"; cat /tmp/log >&2; exit 0; fi; \
           if [ -S $D/api.sock ]; then echo serving; stat -c %a $D; kill $P; wait $P; cat /tmp/log >&2; exit 0; fi; \
           sleep 0.05; done; echo timeout; kill $P",
        bin = bin()
    );
    let out = Command::new("unshare").args(["-m", "sh", "-c", &script]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stdout.contains("timeout"), "{stdout} {stderr}");
    let mode = stdout.lines().nth(1).unwrap_or_default().to_owned();
    (stdout.starts_with("exit="), stdout.starts_with("exit=0"), stderr, mode)
}

#[test]
fn dev_mode_refuses_a_socket_directory_another_user_created() {
    if uid() != 0 {
        eprintln!("skipped: needs root for a private mount namespace and chown");
        return;
    }
    // Pre-created by uid 65534, mode 0777: refused with a clear message, nothing served.
    let (exited, ok, err, _) = dev_mode_in_private_tmp("mkdir $D && chmod 0777 $D && chown 65534:65534 $D");
    assert!(exited && !ok, "{err}");
    assert!(err.contains("owned by uid 65534"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Ours but 0777: refused too, and not chmodded behind the user's back.
    let (exited, ok, err, _) = dev_mode_in_private_tmp("mkdir $D && chmod 0777 $D");
    assert!(exited && !ok, "{err}");
    assert!(err.contains("writable by group or others"), "{err}");
    // Absent: created 0700 and served.
    let (exited, _, err, mode) = dev_mode_in_private_tmp("true");
    assert!(!exited, "{err}");
    assert_eq!(mode, "700", "{err}");
}

#[test]
fn api_client_refuses_a_foreign_dev_socket_directory() {
    let run = tempfile::tempdir().unwrap();
    let dir = run.path().join("tessera");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o777))
        .unwrap();
    let out = Command::new(bin())
        .args(["api", "fetch", "jwt", "--audience", "x"])
        .env("XDG_RUNTIME_DIR", run.path())
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("writable by group or others"), "{err}");
}

/// Kernel inotify watches a process holds (`inotify wd:` lines in the fdinfo of its inotify fds).
fn inotify_watches(pid: u32) -> usize {
    let mut n = 0;
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        if std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == "anon_inode:inotify") {
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy()))
                .unwrap_or_default();
            n += info.lines().filter(|l| l.starts_with("inotify wd:")).count();
        }
    }
    n
}

#[test]
fn directory_watches_end_with_the_streams_that_needed_them() {
    let d =
        Daemon::start(&format!("[[entries]]\nspiffe_id = \"spiffe://{TD}/a\"\nselectors = [\"unix:uid:{}\"]\n", uid()));
    let pid = d.child.as_ref().unwrap().id();
    // The reloader's watch on the config directory is added just after the socket appears.
    eventually("the config directory watch", Duration::from_secs(10), || inotify_watches(pid) >= 1);
    let baseline = inotify_watches(pid);
    // Each workload runs the tessera binary from its own directory (a hard link, so one digest
    // for all): the unix attestor's exe path makes the daemon watch that directory.
    const N: usize = 40;
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let exes: Vec<_> = (0..N)
        .map(|i| {
            let dir = base.path().join(format!("agent{i}"));
            std::fs::create_dir(&dir).unwrap();
            let exe = dir.join("tessera");
            std::fs::hard_link(bin(), &exe).unwrap();
            exe
        })
        .collect();
    let mut workloads = Vec::new();
    for exe in &exes {
        let mut child = Command::new(exe)
            .args(["api", "watch", "--socket"])
            .arg(&d.socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert!(line.starts_with("Received 1 svid"), "{line}");
        workloads.push((child, out));
    }
    let during = inotify_watches(pid);
    assert!(during >= baseline + N, "baseline {baseline}, with {N} streams {during}");
    for (mut child, _) in workloads {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    eventually("the daemon's inotify watches back to baseline", Duration::from_secs(10), || {
        inotify_watches(pid) <= baseline
    });
    eprintln!("inotify watches: baseline {baseline}, {N} streams {during}, after {}", inotify_watches(pid));
}

/// The last chain head the daemon logged (`audit_anchor=SEQ:HASH`).
fn last_anchor(log: &str) -> Option<String> {
    log.lines().rev().find_map(|l| {
        let rest = &l[l.find("audit_anchor=")? + "audit_anchor=".len()..];
        Some(rest.split_whitespace().next()?.trim_matches('"').to_owned())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_rotates_with_one_chain_aggregates_refusals_and_anchors_its_head_in_the_journal() {
    let mut d = Daemon::start(&format!(
        "audit_max_size = 65536\naudit_max_files = 50\n[[entries]]\nspiffe_id = \"spiffe://{TD}/a\"\nselectors = [\"unix:uid:{}\"]\n",
        uid()
    ));
    let client = d.client().await;
    // Enough audit lines for two rotations (calls on one connection are mostly not re-attested,
    // so most calls write one line).
    for _ in 0..300 {
        client.fetch_x509_svid().await.unwrap();
    }
    // 25 refusals from one uid (a SPIFFE ID it is not entitled to): 20 recorded, 5 counted.
    let other: spiffe::SpiffeId = format!("spiffe://{TD}/not-mine").parse().unwrap();
    for _ in 0..25 {
        assert!(client.fetch_jwt_svid(&["aud"], Some(&other)).await.is_err());
    }
    drop(client);
    d.stop();
    let anchor = last_anchor(&d.log()).expect("the chain head is logged at shutdown");
    let rotated: Vec<_> = (1..10).map(|n| d.data_dir().join(format!("audit.log.{n}"))).filter(|p| p.exists()).collect();
    assert!(rotated.len() >= 2, "rotated by size: {rotated:?}");
    let all: String =
        rotated.iter().rev().chain([&d.audit_log()]).map(|p| std::fs::read_to_string(p).unwrap()).collect();
    assert!(all.lines().all(|l| l.len() <= 16 * 1024));
    assert_eq!(all.lines().filter(|l| l.contains("\"event\":\"refused\"")).count(), 20);
    let suppressed =
        all.lines().find(|l| l.contains("\"event\":\"refused_suppressed\"")).expect("count written at shutdown");
    assert!(suppressed.contains("\"count\":5"), "{suppressed}");

    let verify = |anchor: Option<&str>| {
        let mut cmd = Command::new(bin());
        cmd.args(["audit", "verify"]).arg(d.data_dir());
        if let Some(a) = anchor {
            cmd.args(["--anchor", a]);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (ok, out) = verify(Some(&anchor));
    assert!(ok, "{out}");
    assert!(out.contains("intact") && out.contains("reaches anchor"), "{out}");
    // The rotated files in shell-glob order work too.
    let mut glob: Vec<_> = rotated.clone();
    glob.push(d.audit_log());
    glob.sort();
    let out = Command::new(bin()).args(["audit", "verify"]).args(&glob).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Three lines cut from the end: the chain alone still holds; the anchor catches it.
    let text = std::fs::read_to_string(d.audit_log()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(d.audit_log(), lines[..lines.len() - 3].join("\n") + "\n").unwrap();
    assert!(verify(None).0);
    let (ok, out) = verify(Some(&anchor));
    assert!(!ok && out.contains("cut from the end"), "{out}");
}

#[test]
fn a_full_disk_is_announced_and_failed_audit_writes_are_rate_limited_not_fatal() {
    if uid() != 0 {
        eprintln!("skipped: needs root for a private mount namespace");
        return;
    }
    // The audit log on a 256 KiB tmpfs in a private mount namespace, filled up once serving.
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let socket = dir.path().join("api.sock");
    let config = dir.path().join("t.toml");
    std::fs::write(
        &config,
        format!(
            "trust_domain = \"{TD}\"\nsocket_path = \"{}\"\ndata_dir = \"{}\"\naudit_log = \"{}\"\n",
            socket.display(),
            dir.path().join("data").display(),
            small.join("audit.log").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("daemon.log");
    let script = format!(
        "mount -t tmpfs -o size=256k tmpfs {small} || exit 1; \
         (while [ ! -S {sock} ]; do sleep 0.02; done; cat /dev/zero > {small}/fill 2>/dev/null; touch {small}/full) & \
         exec {bin} run --config {cfg}",
        small = small.display(),
        sock = socket.display(),
        bin = bin(),
        cfg = config.display()
    );
    let mut child = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .env("TESSERA_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    wait_for_socket(&socket, &mut child, &log);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually("the low-space warning", Duration::from_secs(10), || read_log().contains("LOW DISK SPACE"));
    // Wait for the filler (inside the namespace) by the effect: an audit write fails.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let endpoint = format!("unix:{}", socket.display());
    let fetch = || {
        rt.block_on(async {
            let c = spiffe::WorkloadApiClient::connect_to(endpoint.clone()).await.unwrap();
            c.fetch_x509_svid().await
        })
    };
    eventually("audit writes failing", Duration::from_secs(10), || {
        let _ = fetch();
        read_log().contains("cannot write audit lines")
    });
    for _ in 0..50 {
        // Refused (no entries), audited, and the audit line cannot be written: still answered.
        assert_eq!(status_code(&fetch().unwrap_err()), Some(tonic::Code::PermissionDenied));
    }
    let text = read_log();
    assert_eq!(text.matches("cannot write audit lines").count(), 1, "{text}");
    assert!(!text.contains("panicked"), "{text}");
    let _ = child.kill();
    let _ = child.wait();
}
