//! The audit trail: one JSON line per attestation, issuance and refusal, with the evidence behind
//! it. Each line carries the SHA-256 of the line before it, so an edited, inserted or deleted line
//! is found by `tessera audit verify`. Never holds a private key or a token.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::fs::OpenOptions;
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Handle for recording events; cheap to clone. Writing happens on a dedicated thread so the
/// request path never waits on the disk.
#[derive(Clone)]
pub struct Audit {
    tx: mpsc::Sender<Map<String, Value>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn line_hash(line: &str) -> String {
    hex(&Sha256::digest(line.as_bytes()))
}

impl Audit {
    /// Open (append to) the audit file, continuing the hash chain of what is already there.
    pub fn open(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            crate::storage::private_dir(dir)?;
        }
        let mut file = OpenOptions::new().create(true).append(true).read(true).mode(0o600).open(path)?;
        let (mut seq, mut prev) = last_link(&mut file)?;
        let (tx, rx) = mpsc::channel::<Map<String, Value>>();
        let path_owned: PathBuf = path.to_owned();
        std::thread::Builder::new().name("audit".into()).spawn(move || {
            for mut event in rx {
                seq += 1;
                let mut line = Map::new();
                line.insert("seq".into(), seq.into());
                line.insert("time".into(), now_rfc3339().into());
                line.append(&mut event);
                line.insert("prev".into(), Value::String(prev.clone()));
                let text = Value::Object(line).to_string();
                prev = line_hash(&text);
                if let Err(e) = writeln!(file, "{text}") {
                    tracing::error!(path = %path_owned.display(), error = %e, "cannot write audit line");
                }
            }
        })?;
        Ok(Self { tx })
    }

    /// Record one event. `fields` must be a JSON object; it must never contain keys or tokens.
    pub fn record(&self, event: &str, fields: Value) {
        let mut map = match fields {
            Value::Object(m) => m,
            other => {
                let mut m = Map::new();
                m.insert("detail".into(), other);
                m
            }
        };
        map.insert("event".into(), event.into());
        let _ = self.tx.send(map);
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Sequence number and hash of the last line of an existing file (reads only its tail).
fn last_link(file: &mut std::fs::File) -> io::Result<(u64, String)> {
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

/// Check every link of the chain.
pub fn verify(path: &Path) -> io::Result<Verdict> {
    let file = std::fs::File::open(path)?;
    let mut prev = GENESIS.to_string();
    let mut expect_seq = None::<u64>;
    let mut n = 0;
    for line in io::BufReader::new(file).lines() {
        let line = line?;
        n += 1;
        let v: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                return Ok(Verdict::Broken { line: n, reason: format!("not a JSON audit line: {e}") });
            }
        };
        let seq = v.get("seq").and_then(Value::as_u64);
        let link = v.get("prev").and_then(Value::as_str).unwrap_or("");
        if let (Some(want), Some(got)) = (expect_seq, seq)
            && got != want
        {
            return Ok(Verdict::Broken {
                line: n,
                reason: format!("sequence jumps from {} to {got}: lines deleted or inserted before this one", want - 1),
            });
        }
        if link != prev {
            let reason = if n == 1 {
                "first line does not start the chain (lines deleted from the start?)".to_string()
            } else {
                format!("hash link does not match line {}: that line was edited, or a line was inserted here", n - 1)
            };
            return Ok(Verdict::Broken { line: n, reason });
        }
        prev = line_hash(&line);
        expect_seq = seq.map(|s| s + 1);
    }
    Ok(Verdict::Intact { lines: n })
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
