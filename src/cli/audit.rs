//! `tessera audit verify`: check the hash chain across the audit file and its rotated
//! predecessors, and optionally that it still reaches a chain head recorded in the journal.

use crate::events::audit::{Anchor, SetVerdict, verify_set};
use anyhow::{Context, Result, bail};
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// Files to verify: each argument is a file, or a directory standing for its `audit.log` and
/// `audit.log.N` files. The set is put in chain order (by the sequence number of each file's first
/// line), so `audit.log*` as the shell expands it works.
pub(super) fn collect(args: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for a in args {
        if a.is_dir() {
            for e in std::fs::read_dir(a).with_context(|| format!("cannot read {}", a.display()))? {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                let rotated = name.strip_prefix("audit.log.").is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
                if (name == "audit.log" || rotated) && e.file_type()?.is_file() {
                    files.push(e.path());
                }
            }
        } else {
            files.push(a.clone());
        }
    }
    let mut keyed = Vec::with_capacity(files.len());
    for f in files {
        keyed.push((first_seq(&f).with_context(|| format!("cannot read {}", f.display()))?, f));
    }
    keyed.sort();
    Ok(keyed.into_iter().map(|(_, f)| f).collect())
}

/// The first line's sequence number (empty files sort last).
fn first_seq(path: &Path) -> Result<u64> {
    let mut line = String::new();
    std::io::BufReader::new(std::fs::File::open(path)?).read_line(&mut line)?;
    Ok(serde_json::from_str::<serde_json::Value>(&line).ok().and_then(|v| v.get("seq")?.as_u64()).unwrap_or(u64::MAX))
}

pub(super) fn verify(args: &[PathBuf], anchor: Option<&str>) -> Result<()> {
    let anchor: Option<Anchor> = anchor.map(str::parse).transpose().map_err(anyhow::Error::msg)?;
    let files = collect(args)?;
    if files.is_empty() {
        bail!("no audit files found in {args:?}");
    }
    let names = files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(" ");
    match verify_set(&files, anchor.as_ref()).with_context(|| format!("cannot read {names}"))? {
        SetVerdict::Intact { lines, first_seq, head, from_genesis } => {
            let start = if from_genesis {
                String::new()
            } else {
                format!("; starts at seq {first_seq} after a rotation, older files not given")
            };
            let anchored = anchor.map(|a| format!("; reaches anchor {}", a.seq)).unwrap_or_default();
            println!("{names}: intact ({lines} lines{start}{anchored}); head {head}");
            Ok(())
        }
        SetVerdict::Broken { file, line, reason } => {
            bail!("{}: chain broken at line {line}: {reason}", file.display())
        }
    }
}
