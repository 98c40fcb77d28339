//! Audit chain verification: every hash link, the sequence, and an optional anchor (`tessera audit verify`).

use super::{GENESIS, ROTATED, line_hash};
use serde_json::Value;
use std::fs::File;
use std::io::{self, BufRead};
#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;

#[cfg(test)]
/// The outcome of verifying an audit file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
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
pub(crate) struct Anchor {
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
pub(crate) enum SetVerdict {
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

#[cfg(test)]
/// Check every link of the chain in one file (which may start at a rotation).
pub(crate) fn verify(path: &Path) -> io::Result<Verdict> {
    Ok(match verify_set(&[path.to_owned()], None)? {
        SetVerdict::Intact { lines, .. } => Verdict::Intact { lines },
        SetVerdict::Broken { line, reason, .. } => Verdict::Broken { line, reason },
    })
}

/// Check every link of the chain across `files`, oldest first, and that it reaches `anchor`.
pub(crate) fn verify_set(files: &[PathBuf], anchor: Option<&Anchor>) -> io::Result<SetVerdict> {
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
