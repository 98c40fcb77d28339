//! The audit trail: one JSON line per attestation, issuance and refusal, with the evidence behind
//! it. Each line carries the SHA-256 of the line before it, so an edited, inserted or deleted line
//! is found by `tessera audit verify`. Never holds a private key or a token.
//!
//! Bounded against a caller who wants to fill the disk: long strings and arrays are cut (marked
//! `…(+N more)`), a line never exceeds 16 KiB (a refusal line 4 KiB), and the file rotates by size
//! (`audit.log.1`, …) with the chain running on across files. Refusals of every kind (a refused
//! call and the `attested` line before it, a refused token exchange or approval decision, an admin
//! caller turned away, a partner's refused bundle) are recorded at most N per uid (or per source)
//! per window and at most M in all, and then counted in one `refused_suppressed` line per uid or
//! source: a caller who is refused over and over cannot rotate the evidence of what came before
//! out of the log. The chain head (sequence number and hash) is logged
//! to the journal at open, at each rotation and at shutdown: `tessera audit verify --anchor
//! SEQ:HASH` then catches lines cut from the end, which the chain alone cannot.
//!
//! This module writes the chain; [`verify`] checks it (its items are re-exported here);
//! `refusals` keeps the refusal windows.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod refusals;
mod verify;
pub(crate) use verify::{Anchor, SetVerdict, verify_set};
#[cfg(test)]
use verify::{Verdict, verify};

mod bound;
use bound::{MAX_ITEMS, MAX_STRING, bound, bound_to};

/// The `prev` of the first line of a chain.
pub(super) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Longest audit line (bytes); a longer one keeps only its top-level scalars.
pub(crate) const MAX_LINE: usize = 16 * 1024;
/// Longest refusal line (bytes): what a refused caller sends (a scope list, a user name, a path)
/// costs the log at most this much per line.
pub(crate) const MAX_REFUSAL_LINE: usize = 4 * 1024;
/// The first line of a file started by rotation.
pub(super) const ROTATED: &str = "audit_rotated";

/// Limits of the audit trail; `Default` is what the daemon uses unless configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuditOptions {
    /// Rotate before the file would grow past this many bytes (0: never).
    pub max_size: u64,
    /// Rotated files kept (`audit.log.1` newest … `audit.log.N`); older ones are deleted.
    pub max_files: u32,
    /// Refusal lines recorded per uid (or source) per window; the rest are counted.
    pub refusals_per_window: u32,
    /// Refusal lines recorded per window for all uids and sources together (many uids, or a
    /// uid per setuid program, must not add up to a flood either).
    pub refusals_per_window_total: u32,
    pub refusal_window: Duration,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            max_size: 64 << 20,
            max_files: 8,
            refusals_per_window: 20,
            refusals_per_window_total: 400,
            refusal_window: Duration::from_secs(60),
        }
    }
}

/// Whose refusals a refusal line counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum RefusalKey {
    /// A local caller (None: the kernel gave no uid).
    Uid(Option<u32>),
    /// Something that is not a local user: a federation partner, the SPIRE Server.
    Source(String),
}

enum Msg {
    /// A line; with a key, a refusal counted against that key's window.
    Event(Map<String, Value>, Option<RefusalKey>),
    /// Flush counts, log the chain head, then answer.
    Close(mpsc::Sender<()>),
}

/// Handle for recording events; cheap to clone. Writing happens on a dedicated thread so the
/// request path never waits on the disk.
#[derive(Clone)]
pub(crate) struct Audit {
    tx: mpsc::Sender<Msg>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn line_hash(line: &str) -> String {
    hex(&Sha256::digest(line.as_bytes()))
}

impl Audit {
    #[cfg(test)]
    /// Open (append to) the audit file with the default limits.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        Self::open_with(path, AuditOptions::default())
    }

    /// Open (append to) the audit file, continuing the hash chain of what is already there (or,
    /// after an interrupted rotation, of the newest rotated file).
    pub(crate) fn open_with(path: &Path, options: AuditOptions) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            crate::storage::private_dir(dir)?;
        }
        let mut file = open_log(path)?;
        let (mut seq, mut prev) = last_link(&mut file)?;
        if seq == 0
            && prev == GENESIS
            && let Ok(mut older) = File::open(rotated(path, 1))
        {
            (seq, prev) = last_link(&mut older)?;
        }
        let len = file.metadata()?.len();
        tracing::info!(
            path = %path.display(),
            audit_anchor = %format!("{seq}:{prev}"),
            "audit log opened; chain head (tessera audit verify --anchor SEQ:HASH)"
        );
        let (tx, rx) = mpsc::channel::<Msg>();
        let writer = Writer {
            path: path.to_owned(),
            file,
            len,
            seq,
            prev,
            options,
            refusals: HashMap::new(),
            total: refusals::Total::new(Instant::now()),
            flushed: Instant::now(),
            failed: 0,
            failure_logged: None,
        };
        std::thread::Builder::new().name("audit".into()).spawn(move || writer.run(rx))?;
        Ok(Self { tx })
    }

    /// Record one event. `fields` must be a JSON object; it must never contain keys or tokens.
    /// Long values are cut here, before they are queued. A `refused` line counts against its
    /// `uid`'s refusal window (other refusals say whose they are: [`Self::record_refusal`]).
    pub(crate) fn record(&self, event: &str, fields: Value) {
        let key = (event == "refused")
            .then(|| RefusalKey::Uid(fields.get("uid").and_then(Value::as_u64).and_then(|u| u32::try_from(u).ok())));
        self.queue(event, fields, key);
    }

    /// Record a refusal: written while `key` (and everyone together) is within its window's
    /// budget, counted in a `refused_suppressed` line after that.
    pub(crate) fn record_refusal(&self, event: &str, key: RefusalKey, fields: Value) {
        self.queue(event, fields, Some(key));
    }

    fn queue(&self, event: &str, fields: Value, key: Option<RefusalKey>) {
        let mut map = match fields {
            Value::Object(m) => m,
            other => {
                let mut m = Map::new();
                m.insert("detail".into(), other);
                m
            }
        };
        for v in map.values_mut() {
            bound(v, 1);
        }
        map.insert("event".into(), event.into());
        let _ = self.tx.send(Msg::Event(map, key));
    }

    /// Write what is pending (counts of suppressed refusals included), log the chain head, and
    /// return once it is on disk. For a clean shutdown; recording may go on afterwards.
    pub(crate) fn close(&self) {
        let (ack, done) = mpsc::channel();
        if self.tx.send(Msg::Close(ack)).is_ok() {
            let _ = done.recv_timeout(Duration::from_secs(5));
        }
    }
}

fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).read(true).mode(0o600).open(path)
}

/// `audit.log.N`
fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

struct Writer {
    path: PathBuf,
    file: File,
    len: u64,
    seq: u64,
    prev: String,
    options: AuditOptions,
    refusals: HashMap<RefusalKey, refusals::Window>,
    total: refusals::Total,
    /// When windows were last checked for their end (on a busy log, not only when idle).
    flushed: Instant,
    /// Lines that could not be written since the last report of it.
    failed: u64,
    failure_logged: Option<Instant>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        loop {
            // After a burst, a short nap before waiting again: lines that arrive meanwhile are
            // taken in one go, and their senders find no blocked receiver to wake (a futex wake
            // per line was a visible share of a busy gateway's CPU). Idle, it blocks as before.
            if let Ok(msg) = rx.try_recv() {
                self.handle(msg);
                continue;
            }
            std::thread::sleep(Duration::from_millis(2));
            if let Ok(msg) = rx.try_recv() {
                self.handle(msg);
                continue;
            }
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(Msg::Event(e, key)) => self.event(e, key),
                Ok(Msg::Close(ack)) => {
                    self.flush_refusals(true);
                    self.log_head("audit log closed");
                    let _ = ack.send(());
                }
                Err(mpsc::RecvTimeoutError::Timeout) => self.flush_refusals(false),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.flush_refusals(true);
                    self.log_head("audit log closed");
                    return;
                }
            }
        }
    }

    /// One message taken without waiting.
    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Event(e, key) => self.event(e, key),
            Msg::Close(ack) => {
                self.flush_refusals(true);
                self.log_head("audit log closed");
                let _ = ack.send(());
            }
        }
    }

    /// Write one line of at most `max_line` bytes.
    fn write(&mut self, mut event: Map<String, Value>, max_line: usize) {
        let mut text = self.render(&mut event, max_line);
        if self.options.max_size > 0 && self.len > 0 && self.len + text.len() as u64 + 1 > self.options.max_size {
            match self.rotate() {
                Ok(()) => text = self.render(&mut event, max_line),
                Err(e) => tracing::error!(path = %self.path.display(), error = %e, "cannot rotate the audit log"),
            }
        }
        self.append(text);
    }

    /// The next line for `event`: seq, time, the fields, the link; cut to `max_line`.
    fn render(&self, event: &mut Map<String, Value>, max_line: usize) -> String {
        let full = |event: &Map<String, Value>| {
            let mut line = Map::new();
            line.insert("seq".into(), (self.seq + 1).into());
            line.insert("time".into(), now_rfc3339().into());
            line.extend(event.clone());
            line.insert("prev".into(), Value::String(self.prev.clone()));
            Value::Object(line).to_string()
        };
        let text = full(event);
        if text.len() <= max_line {
            return text;
        }
        // Too long even so: cut every value much shorter…
        for v in event.values_mut() {
            bound_to(v, 1, MAX_STRING / 8, MAX_ITEMS / 4);
        }
        let shorter = full(event);
        if shorter.len() <= max_line {
            return shorter;
        }
        // …else keep the scalars (event, rpc, pid, uid, reason…) and say so.
        let mut line = Map::new();
        line.insert("seq".into(), (self.seq + 1).into());
        line.insert("time".into(), now_rfc3339().into());
        for (k, v) in event.iter() {
            if !v.is_array() && !v.is_object() {
                line.insert(k.clone(), v.clone());
            }
        }
        line.insert("truncated".into(), format!("line of {} bytes cut to its scalar fields", text.len()).into());
        line.insert("prev".into(), Value::String(self.prev.clone()));
        Value::Object(line).to_string()
    }

    /// Append one line; advance the chain only once it is written. A failure (full disk) is
    /// logged at most once a minute with a count, and never stops the daemon.
    fn append(&mut self, text: String) {
        let mut bytes = text.into_bytes();
        bytes.push(b'\n');
        match self.file.write_all(&bytes) {
            Ok(()) => {
                self.len += bytes.len() as u64;
                self.seq += 1;
                bytes.pop();
                self.prev = hex(&Sha256::digest(&bytes));
                if self.failed > 0 {
                    tracing::warn!(lost = self.failed, path = %self.path.display(), "audit log writable again");
                    self.failed = 0;
                    self.failure_logged = None;
                }
            }
            Err(e) => {
                // A partial line would break the chain: cut it off again.
                let _ = self.file.set_len(self.len);
                self.failed += 1;
                let due = self.failure_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
                if due {
                    tracing::error!(
                        path = %self.path.display(), error = %e, lost = self.failed,
                        "cannot write audit lines (is the disk full?); the daemon goes on without them"
                    );
                    self.failure_logged = Some(Instant::now());
                }
            }
        }
    }

    /// `audit.log` → `audit.log.1` → … → `audit.log.N` (the oldest is overwritten), then a new
    /// file whose first line links to the last line of the previous one.
    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.options.max_files.max(1);
        for n in (1..keep).rev() {
            match std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
        self.file = open_log(&self.path)?;
        self.len = 0;
        self.log_head("audit log rotated");
        let mut m = Map::new();
        m.insert("event".into(), ROTATED.into());
        m.insert("previous_file".into(), rotated(&self.path, 1).display().to_string().into());
        let text = self.render(&mut m, MAX_LINE);
        self.append(text);
        Ok(())
    }

    fn log_head(&self, what: &str) {
        tracing::info!(
            path = %self.path.display(),
            audit_anchor = %format!("{}:{}", self.seq, self.prev),
            "{what}; chain head (tessera audit verify --anchor SEQ:HASH)"
        );
    }
}

/// A line's timestamp: decides nothing, so the system clock's (see `crate::clock`).
fn now_rfc3339() -> String {
    rfc3339(crate::clock::now())
}

/// A time as audit lines write it (UTC, RFC 3339, nanoseconds).
pub(crate) fn rfc3339(t: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(t).format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Sequence number and hash of the last line of an existing file (reads only its tail).
fn last_link(file: &mut File) -> io::Result<(u64, String)> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok((0, GENESIS.into()));
    }
    let start = len.saturating_sub(256 * 1024);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = String::new();
    file.read_to_string(&mut tail)?;
    let last = tail.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    let seq = serde_json::from_str::<Value>(last).ok().and_then(|v| v.get("seq")?.as_u64()).unwrap_or(0);
    Ok((seq, line_hash(last)))
}

#[cfg(test)]
mod tests;
