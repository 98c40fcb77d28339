//! The audit trail: one JSON line per attestation, issuance and refusal, with the evidence behind
//! it. Each line carries the SHA-256 of the line before it, so an edited, inserted or deleted line
//! is found by `tessera audit verify`. Never holds a private key or a token.
//!
//! Bounded against a caller who wants to fill the disk: long strings and arrays are cut (marked
//! `…(+N more)`), a line never exceeds 16 KiB, refusals are recorded at most N per uid per window
//! and then counted in one `refused_suppressed` line, and the file rotates by size (`audit.log.1`,
//! …) with the chain running on across files. The chain head (sequence number and hash) is logged
//! to the journal at open, at each rotation and at shutdown: `tessera audit verify --anchor
//! SEQ:HASH` then catches lines cut from the end, which the chain alone cannot.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Longest string kept whole in an audit line (bytes).
const MAX_STRING: usize = 1024;
/// Most array elements (or object members) kept in an audit line.
const MAX_ITEMS: usize = 64;
/// Deepest nesting kept.
const MAX_DEPTH: usize = 6;
/// Longest audit line (bytes); a longer one keeps only its top-level scalars.
pub const MAX_LINE: usize = 16 * 1024;
/// The first line of a file started by rotation.
const ROTATED: &str = "audit_rotated";

/// Limits of the audit trail; `Default` is what the daemon uses unless configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditOptions {
    /// Rotate before the file would grow past this many bytes (0: never).
    pub max_size: u64,
    /// Rotated files kept (`audit.log.1` newest … `audit.log.N`); older ones are deleted.
    pub max_files: u32,
    /// "refused" lines recorded per uid per window; the rest are counted.
    pub refusals_per_window: u32,
    pub refusal_window: Duration,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self { max_size: 64 << 20, max_files: 8, refusals_per_window: 20, refusal_window: Duration::from_secs(60) }
    }
}

enum Msg {
    Event(Map<String, Value>),
    /// Flush counts, log the chain head, then answer.
    Close(mpsc::Sender<()>),
}

/// Handle for recording events; cheap to clone. Writing happens on a dedicated thread so the
/// request path never waits on the disk.
#[derive(Clone)]
pub struct Audit {
    tx: mpsc::Sender<Msg>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn line_hash(line: &str) -> String {
    hex(&Sha256::digest(line.as_bytes()))
}

impl Audit {
    /// Open (append to) the audit file with the default limits.
    pub fn open(path: &Path) -> io::Result<Self> {
        Self::open_with(path, AuditOptions::default())
    }

    /// Open (append to) the audit file, continuing the hash chain of what is already there (or,
    /// after an interrupted rotation, of the newest rotated file).
    pub fn open_with(path: &Path, options: AuditOptions) -> io::Result<Self> {
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
            failed: 0,
            failure_logged: None,
        };
        std::thread::Builder::new().name("audit".into()).spawn(move || writer.run(rx))?;
        Ok(Self { tx })
    }

    /// Record one event. `fields` must be a JSON object; it must never contain keys or tokens.
    /// Long values are cut here, before they are queued.
    pub fn record(&self, event: &str, fields: Value) {
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
        let _ = self.tx.send(Msg::Event(map));
    }

    /// Write what is pending (counts of suppressed refusals included), log the chain head, and
    /// return once it is on disk. For a clean shutdown; recording may go on afterwards.
    pub fn close(&self) {
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

/// Cut long strings and arrays (marked, with what was left out), and deep nesting.
fn bound(v: &mut Value, depth: usize) {
    bound_to(v, depth, MAX_STRING, MAX_ITEMS)
}

fn bound_to(v: &mut Value, depth: usize, max_string: usize, max_items: usize) {
    match v {
        Value::String(s) if s.len() > max_string => {
            let mut cut = max_string;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            let more = s.len() - cut;
            s.truncate(cut);
            s.push_str(&format!("…(+{more} more bytes)"));
        }
        Value::Array(_) | Value::Object(_) if depth > MAX_DEPTH => *v = Value::String("…(nested too deep)".into()),
        Value::Array(a) => {
            if a.len() > max_items {
                // A marker from an earlier cut stands for the elements it counted.
                let earlier = a
                    .last()
                    .and_then(Value::as_str)
                    .and_then(|m| m.strip_prefix("…(+")?.strip_suffix(" more)")?.parse::<usize>().ok())
                    .map_or(0, |n| n - 1);
                let more = a.len() - max_items + earlier;
                a.truncate(max_items);
                a.push(Value::String(format!("…(+{more} more)")));
            }
            for x in a.iter_mut() {
                bound_to(x, depth + 1, max_string, max_items);
            }
        }
        Value::Object(m) => {
            if m.len() > max_items {
                let more = m.len() - max_items;
                let keep: Map<String, Value> = std::mem::take(m).into_iter().take(max_items).collect();
                *m = keep;
                m.insert("…".into(), Value::String(format!("(+{more} more)")));
            }
            for x in m.values_mut() {
                bound_to(x, depth + 1, max_string, max_items);
            }
        }
        _ => {}
    }
}

/// Refusals of one uid in the current window.
struct Window {
    start: Instant,
    recorded: u32,
    suppressed: u64,
}

struct Writer {
    path: PathBuf,
    file: File,
    len: u64,
    seq: u64,
    prev: String,
    options: AuditOptions,
    refusals: HashMap<Option<u64>, Window>,
    /// Lines that could not be written since the last report of it.
    failed: u64,
    failure_logged: Option<Instant>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(Msg::Event(e)) => self.event(e),
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

    fn event(&mut self, event: Map<String, Value>) {
        if event.get("event").and_then(Value::as_str) == Some("refused") {
            let uid = event.get("uid").and_then(Value::as_u64);
            let now = Instant::now();
            let window = self.options.refusal_window;
            let w = self.refusals.entry(uid).or_insert(Window { start: now, recorded: 0, suppressed: 0 });
            if now.duration_since(w.start) >= window {
                let suppressed = std::mem::take(&mut w.suppressed);
                let started = w.start;
                *w = Window { start: now, recorded: 0, suppressed: 0 };
                self.write_suppressed(uid, suppressed, now.duration_since(started));
            }
            let Some(w) = self.refusals.get_mut(&uid) else { return };
            if w.recorded >= self.options.refusals_per_window {
                w.suppressed += 1;
                return;
            }
            w.recorded += 1;
        }
        self.write(event);
    }

    /// End the windows that are over (all of them when `all`), writing their counts.
    fn flush_refusals(&mut self, all: bool) {
        let now = Instant::now();
        let window = self.options.refusal_window;
        let ended: Vec<(Option<u64>, u64, Duration)> = self
            .refusals
            .iter()
            .filter(|(_, w)| all || now.duration_since(w.start) >= window)
            .map(|(uid, w)| (*uid, w.suppressed, now.duration_since(w.start)))
            .collect();
        for (uid, suppressed, span) in ended {
            self.refusals.remove(&uid);
            self.write_suppressed(uid, suppressed, span);
        }
    }

    fn write_suppressed(&mut self, uid: Option<u64>, count: u64, span: Duration) {
        if count == 0 {
            return;
        }
        let mut m = Map::new();
        m.insert("event".into(), "refused_suppressed".into());
        m.insert("uid".into(), uid.map(Value::from).unwrap_or(Value::Null));
        m.insert("count".into(), count.into());
        m.insert("window_secs".into(), span.as_secs().into());
        m.insert(
            "reason".into(),
            format!("more than {} refusals for this uid in the window", self.options.refusals_per_window).into(),
        );
        self.write(m);
    }

    fn write(&mut self, mut event: Map<String, Value>) {
        let mut text = self.render(&mut event);
        if self.options.max_size > 0 && self.len > 0 && self.len + text.len() as u64 + 1 > self.options.max_size {
            match self.rotate() {
                Ok(()) => text = self.render(&mut event),
                Err(e) => tracing::error!(path = %self.path.display(), error = %e, "cannot rotate the audit log"),
            }
        }
        self.append(text);
    }

    /// The next line for `event`: seq, time, the fields, the link; cut to MAX_LINE.
    fn render(&self, event: &mut Map<String, Value>) -> String {
        let full = |event: &Map<String, Value>| {
            let mut line = Map::new();
            line.insert("seq".into(), (self.seq + 1).into());
            line.insert("time".into(), now_rfc3339().into());
            line.extend(event.clone());
            line.insert("prev".into(), Value::String(self.prev.clone()));
            Value::Object(line).to_string()
        };
        let text = full(event);
        if text.len() <= MAX_LINE {
            return text;
        }
        // Too long even so: cut every value much shorter…
        for v in event.values_mut() {
            bound_to(v, 1, MAX_STRING / 8, MAX_ITEMS / 4);
        }
        let shorter = full(event);
        if shorter.len() <= MAX_LINE {
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
        let text = self.render(&mut m);
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

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
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

/// The outcome of verifying an audit file.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Intact {
        lines: u64,
    },
    /// The first line (1-based) at which the chain breaks, and why.
    Broken {
        line: u64,
        reason: String,
    },
}

/// A chain head recorded outside the audit files (logged to the journal): `SEQ:HASH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub seq: u64,
    pub hash: String,
}

impl std::str::FromStr for Anchor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an audit anchor: write SEQ:HASH as logged (audit_anchor=SEQ:HASH)");
        let (seq, hash) = s.trim().split_once(':').ok_or_else(bad)?;
        let seq = seq.parse().map_err(|_| bad())?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Self { seq, hash: hash.to_ascii_lowercase() })
    }
}

impl std::fmt::Display for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

/// The outcome of verifying a set of audit files.
#[derive(Debug, PartialEq, Eq)]
pub enum SetVerdict {
    Intact {
        lines: u64,
        /// Sequence number of the first line given.
        first_seq: u64,
        /// The last line: record it to check later that nothing was cut from the end.
        head: Anchor,
        /// The set starts at the chain's beginning (else at a rotation; older files not given).
        from_genesis: bool,
    },
    /// The file and line (1-based) at which the chain breaks, and why.
    Broken { file: PathBuf, line: u64, reason: String },
}

/// Check every link of the chain in one file (which may start at a rotation).
pub fn verify(path: &Path) -> io::Result<Verdict> {
    Ok(match verify_set(&[path.to_owned()], None)? {
        SetVerdict::Intact { lines, .. } => Verdict::Intact { lines },
        SetVerdict::Broken { line, reason, .. } => Verdict::Broken { line, reason },
    })
}

/// Check every link of the chain across `files`, oldest first, and that it reaches `anchor`.
pub fn verify_set(files: &[PathBuf], anchor: Option<&Anchor>) -> io::Result<SetVerdict> {
    let mut prev: Option<String> = None;
    let mut expect_seq = None::<u64>;
    let (mut total, mut first_seq, mut last_seq, mut from_genesis, mut anchor_seen) = (0, 0, 0, true, false);
    let mut last_file = PathBuf::new();
    let mut last_line = 0;
    for path in files {
        let broken = |line: u64, reason: String| Ok(SetVerdict::Broken { file: path.clone(), line, reason });
        let mut n = 0;
        for line in io::BufReader::new(File::open(path)?).lines() {
            let line = line?;
            n += 1;
            total += 1;
            let v: Value = match serde_json::from_str(&line) {
                Ok(v) => v,
                Err(e) => return broken(n, format!("not a JSON audit line: {e}")),
            };
            let seq = v.get("seq").and_then(Value::as_u64);
            let link = v.get("prev").and_then(Value::as_str).unwrap_or("");
            if let (Some(want), Some(got)) = (expect_seq, seq)
                && got != want
            {
                return broken(
                    n,
                    format!("sequence jumps from {} to {got}: lines deleted or inserted before this one", want - 1),
                );
            }
            match &prev {
                None => {
                    let starts_rotated = v.get("event").and_then(Value::as_str) == Some(ROTATED);
                    if link != GENESIS && !(starts_rotated && seq.is_some_and(|s| s > 1)) {
                        return broken(n, "first line does not start the chain (lines deleted from the start?)".into());
                    }
                    from_genesis = link == GENESIS;
                    first_seq = seq.unwrap_or(1);
                }
                Some(p) if link != p => {
                    let reason = if n == 1 {
                        format!(
                            "first line does not link to the last line of {}: a file is missing, out of order, or \
                             was edited at its end",
                            last_file.display()
                        )
                    } else {
                        format!(
                            "hash link does not match line {}: that line was edited, or a line was inserted here",
                            n - 1
                        )
                    };
                    return broken(n, reason);
                }
                Some(_) => {}
            }
            let hash = line_hash(&line);
            if let Some(a) = anchor
                && seq == Some(a.seq)
            {
                if hash != a.hash {
                    return broken(
                        n,
                        format!("line with seq {} does not match the anchor {a}: edited or replaced", a.seq),
                    );
                }
                anchor_seen = true;
            }
            prev = Some(hash);
            expect_seq = seq.map(|s| s + 1);
            last_seq = seq.unwrap_or(last_seq + 1);
        }
        last_file = path.clone();
        last_line = n;
    }
    if let Some(a) = anchor
        && !anchor_seen
    {
        let reason = if total == 0 || last_seq < a.seq {
            format!(
                "the log ends at seq {last_seq}, before the anchor {a}: lines were cut from the end (or the newest \
                 file was not given)"
            )
        } else {
            format!(
                "the anchor's seq {} precedes the first line given (seq {first_seq}): give the older files too",
                a.seq
            )
        };
        return Ok(SetVerdict::Broken { file: last_file, line: last_line + 1, reason });
    }
    Ok(SetVerdict::Intact {
        lines: total,
        first_seq,
        head: Anchor { seq: last_seq, hash: prev.unwrap_or_else(|| GENESIS.into()) },
        from_genesis,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write_lines(path: &Path, n: usize) {
        let a = Audit::open(path).unwrap();
        for i in 0..n {
            a.record("test", json!({ "i": i }));
        }
        drop(a);
        // The writer thread drains the channel after the sender is dropped; wait for it.
        for _ in 0..1000 {
            if std::fs::read_to_string(path).unwrap().lines().count() >= n {
                return;
            }
            std::thread::yield_now();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    fn lines_of(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn long_values_are_cut_and_marked_and_no_line_exceeds_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.log");
        let a = Audit::open(&p).unwrap();
        // An entitled caller's 3.9 MB audience list, and one huge string.
        let audience: Vec<String> = (0..3900).map(|i| format!("{i:0>1000}")).collect();
        a.record("issued", json!({ "uid": 1, "audience": audience }));
        a.record("refused", json!({ "uid": 1, "reason": "x".repeat(100_000) }));
        // Many medium values, each within the bounds, together far over the line cap.
        let wide: serde_json::Map<String, Value> =
            (0..64).map(|i| (format!("k{i}"), json!(vec![vec!["x".repeat(100); 16]; 16]))).collect();
        a.record("attested", json!({ "uid": 1, "pid": 42, "selectors": wide }));
        a.close();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.lines().all(|l| l.len() <= MAX_LINE), "{:?}", text.lines().map(str::len).collect::<Vec<_>>());
        let lines = lines_of(&p);
        // Cut to 64 entries of 1 KiB at once, then (still over 16 KiB) to 16 of 128 bytes.
        let aud = lines[0]["audience"].as_array().unwrap();
        assert_eq!(aud.len(), MAX_ITEMS / 4 + 1);
        assert_eq!(aud[MAX_ITEMS / 4], "…(+3884 more)");
        assert!(aud[0].as_str().unwrap().ends_with("…(+872 more bytes)"), "{}", aud[0]);
        assert!(lines[1]["reason"].as_str().unwrap().ends_with("…(+98976 more bytes)"));
        assert_eq!(lines[2]["pid"], 42);
        assert!(lines[2]["truncated"].as_str().unwrap().contains("cut to its scalar fields"));
        assert!(lines[2].get("selectors").is_none());
        assert!(matches!(verify(&p).unwrap(), Verdict::Intact { lines: 3 }));
    }

    #[test]
    fn repeated_refusals_are_counted_per_uid_and_the_count_survives_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.log");
        let opts = AuditOptions {
            refusals_per_window: 3,
            refusal_window: Duration::from_millis(300),
            ..AuditOptions::default()
        };
        let a = Audit::open_with(&p, opts).unwrap();
        for _ in 0..10 {
            a.record("refused", json!({ "uid": 7, "reason": "no entry" }));
        }
        a.record("refused", json!({ "uid": 8, "reason": "no entry" }));
        a.record("issued", json!({ "uid": 7 }));
        // The window ends: its count is written without waiting for more events.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !std::fs::read_to_string(&p).unwrap().contains("refused_suppressed") {
            assert!(Instant::now() < deadline, "suppressed count not written when the window ended");
            std::thread::sleep(Duration::from_millis(20));
        }
        // A new window, cut short by shutdown: its count is not lost.
        for _ in 0..5 {
            a.record("refused", json!({ "uid": 7, "reason": "no entry" }));
        }
        a.close();
        let lines = lines_of(&p);
        let count = |event: &str, uid: u64| lines.iter().filter(|l| l["event"] == event && l["uid"] == uid).count();
        assert_eq!((count("refused", 7), count("refused", 8), count("issued", 7)), (6, 1, 1));
        let suppressed: Vec<u64> = lines
            .iter()
            .filter(|l| l["event"] == "refused_suppressed")
            .map(|l| {
                assert_eq!(l["uid"], 7);
                l["count"].as_u64().unwrap()
            })
            .collect();
        assert_eq!(suppressed, [7, 2]);
        assert!(matches!(verify(&p).unwrap(), Verdict::Intact { .. }));
    }

    #[test]
    fn rotation_keeps_the_chain_across_files_and_anchors_catch_a_cut_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.log");
        let opts = AuditOptions { max_size: 2000, max_files: 3, ..AuditOptions::default() };
        let a = Audit::open_with(&p, opts.clone()).unwrap();
        for i in 0..60 {
            a.record("test", json!({ "i": i, "pad": "p".repeat(100) }));
        }
        a.close();
        drop(a);
        // Reopening continues the chain, rotating on.
        let a = Audit::open_with(&p, opts).unwrap();
        for i in 60..80 {
            a.record("test", json!({ "i": i, "pad": "p".repeat(100) }));
        }
        a.close();
        let set: Vec<PathBuf> = [3, 2, 1].iter().map(|n| rotated(&p, *n)).chain([p.clone()]).collect();
        assert!(!rotated(&p, 4).exists(), "at most max_files rotated files are kept");
        for f in &set {
            assert!(std::fs::metadata(f).unwrap().len() <= 2000, "{}", f.display());
        }
        let SetVerdict::Intact { head, from_genesis, first_seq, .. } = verify_set(&set, None).unwrap() else {
            panic!("{:?}", verify_set(&set, None))
        };
        assert!(!from_genesis && first_seq > 1, "the oldest files were rotated away");
        assert_eq!(lines_of(&set[1])[0]["event"], ROTATED);
        // The head is the last line.
        let last = std::fs::read_to_string(&p).unwrap().lines().last().unwrap().to_owned();
        assert_eq!(head.hash, line_hash(&last));
        assert!(matches!(verify_set(&set, Some(&head)).unwrap(), SetVerdict::Intact { .. }));

        // A missing middle file breaks the chain.
        let gap = [set[0].clone(), set[2].clone(), set[3].clone()];
        assert!(matches!(verify_set(&gap, None).unwrap(), SetVerdict::Broken { .. }));

        // Lines cut from the end: the chain alone cannot tell, the anchor can.
        let text = std::fs::read_to_string(&p).unwrap();
        let kept: Vec<&str> = text.lines().collect();
        std::fs::write(&p, kept[..kept.len() - 2].join("\n") + "\n").unwrap();
        assert!(matches!(verify_set(&set, None).unwrap(), SetVerdict::Intact { .. }));
        let SetVerdict::Broken { reason, .. } = verify_set(&set, Some(&head)).unwrap() else { panic!() };
        assert!(reason.contains("cut from the end"), "{reason}");
        // An edited anchored line is caught too.
        let wrong = Anchor { seq: head.seq - 5, hash: head.hash.clone() };
        let SetVerdict::Broken { reason, .. } = verify_set(&set, Some(&wrong)).unwrap() else { panic!() };
        assert!(reason.contains("does not match the anchor"), "{reason}");
        assert!("12:abc".parse::<Anchor>().is_err());
        assert_eq!(head.to_string().parse::<Anchor>().unwrap(), head);
    }

    #[test]
    fn chain_detects_edit_insert_delete_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.log");
        write_lines(&p, 3);
        write_lines(&p, 6); // reopen continues the chain: 3 + 6 lines
        assert_eq!(verify(&p).unwrap(), Verdict::Intact { lines: 9 });
        let orig = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = orig.lines().collect();

        let edited = orig.replacen("\"i\":1", "\"i\":7", 1);
        std::fs::write(&p, edited).unwrap();
        assert!(matches!(verify(&p).unwrap(), Verdict::Broken { line: 3, .. }));

        let mut deleted = lines.clone();
        deleted.remove(4);
        std::fs::write(&p, deleted.join("\n") + "\n").unwrap();
        assert!(matches!(verify(&p).unwrap(), Verdict::Broken { line: 5, .. }));

        let mut inserted = lines.clone();
        inserted.insert(2, lines[1]);
        std::fs::write(&p, inserted.join("\n") + "\n").unwrap();
        assert!(matches!(verify(&p).unwrap(), Verdict::Broken { line: 3, .. }));
    }
}
