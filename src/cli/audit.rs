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

/// `tessera audit export --format ocsf`: every line of the files (in chain order) as one OCSF
/// record per line on stdout; with `follow`, then the live file as it grows, across rotations.
pub(super) fn export(args: &[PathBuf], follow: bool) -> Result<()> {
    let files = collect(args)?;
    if files.is_empty() && !follow {
        bail!("no audit files found in {args:?}");
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let live = match args {
        [one] if one.is_dir() => one.join("audit.log"),
        _ => files.last().cloned().or_else(|| args.last().cloned()).context("no audit file to follow")?,
    };
    let mut tail = None;
    for f in &files {
        let mut file = std::fs::File::open(f).with_context(|| format!("cannot read {}", f.display()))?;
        let mut pending = Vec::new();
        if !emit(&mut file, &mut pending, &mut out, !follow || f != &live)? {
            return Ok(());
        }
        if follow && f == &live {
            tail = Some((file, pending));
        }
    }
    if !flush(&mut out) || !follow {
        return Ok(());
    }
    let (mut file, mut pending) = match tail {
        Some(t) => t,
        None => (wait_open(&live), Vec::new()),
    };
    loop {
        if !emit(&mut file, &mut pending, &mut out, false)? || !flush(&mut out) {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        if replaced(&file, &live) {
            // Rotated (renamed away) or recreated: finish the old file, then start the new one.
            if !emit(&mut file, &mut pending, &mut out, true)? {
                return Ok(());
            }
            file = wait_open(&live);
            pending.clear();
        }
    }
}

/// Print the complete lines readable now (and a last unterminated one when `to_end`); false
/// when stdout is gone (a closed pipe ends the export quietly).
fn emit(file: &mut std::fs::File, pending: &mut Vec<u8>, out: &mut impl std::io::Write, to_end: bool) -> Result<bool> {
    use std::io::Read;
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        pending.extend_from_slice(&buf[..n]);
        while let Some(i) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            if !print_line(&line[..i], out) {
                return Ok(false);
            }
        }
    }
    if to_end && !pending.is_empty() {
        let line = std::mem::take(pending);
        return Ok(print_line(&line, out));
    }
    Ok(true)
}

fn print_line(line: &[u8], out: &mut impl std::io::Write) -> bool {
    let line = String::from_utf8_lossy(line);
    let line = line.strip_suffix('\r').unwrap_or(&line);
    if line.is_empty() {
        return true;
    }
    writeln!(out, "{}", super::ocsf::map_line(line)).is_ok()
}

fn flush(out: &mut impl std::io::Write) -> bool {
    out.flush().is_ok()
}

/// The live file is no longer the one open (renamed by rotation, or truncated).
fn replaced(open: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(now), Ok(ours)) = (std::fs::metadata(path), open.metadata()) else { return false };
    now.ino() != ours.ino() || now.dev() != ours.dev()
}

/// Open the live file, waiting while it does not exist (between a rotation's rename and create).
fn wait_open(path: &Path) -> std::fs::File {
    loop {
        if let Ok(f) = std::fs::File::open(path) {
            return f;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
