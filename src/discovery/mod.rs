//! Unmanaged agents and static secrets on the node (`tessera discover`): one pass over /proc,
//! bounded reads (command line 64 KiB, environment 256 KiB), no hashing. A process is reported
//! when a signature matches it or its environment holds variables that look like keys; keys are
//! reported by variable NAME only, their values are never kept.

pub(crate) mod signatures;

use serde::Serialize;
use signatures::{Shown, Signature};
use std::io::Read;
use std::path::Path;

/// Longest command line read (bytes).
const MAX_CMDLINE: u64 = 64 * 1024;
/// Longest environment read (bytes); the rest is not looked at (reported as `truncated`).
pub(crate) const MAX_ENVIRON: u64 = 256 * 1024;

/// `[discovery]` of the config file.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    /// `[[discovery.signatures]]`: added to the built-in ones.
    #[serde(default)]
    pub signatures: Vec<Signature>,
    /// The daemon scans this often (`"5m"`); off when absent.
    pub interval: Option<toml::Spanned<String>>,
}

/// The daemon's periodic scan (`[discovery] interval`).
#[derive(Debug, Clone)]
pub(crate) struct Periodic {
    pub every: std::time::Duration,
    pub signatures: Vec<Signature>,
}

/// A process that looks like an agent.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Found {
    pub pid: i32,
    pub uid: Option<u32>,
    /// The executable (or, when /proc/PID/exe is not readable, the command's first word).
    pub exe: String,
    pub script: Option<String>,
    /// The names of the signatures that match.
    pub signatures: Vec<String>,
    /// Names of environment variables that look like keys (never their values).
    pub secret_env: Vec<String>,
    /// `read`, `truncated` (longer than 256 KiB), or `unreadable: REASON`.
    pub environ: String,
}

/// One pass.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Scan {
    pub processes: usize,
    pub found: Vec<Found>,
}

/// Scan `proc_root` (normally /proc) once, skipping `skip` (the scanner itself).
pub(crate) fn scan(proc_root: &Path, extra: &[Signature], skip: i32) -> Scan {
    let mut sigs = extra.to_vec();
    sigs.extend(signatures::builtin());
    let mut out = Scan { processes: 0, found: Vec::new() };
    let Ok(dir) = std::fs::read_dir(proc_root) else { return out };
    let mut buf = Vec::with_capacity(16 * 1024);
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        if pid == skip {
            continue;
        }
        out.processes += 1;
        if let Some(f) = look(&e.path(), pid, &sigs, &mut buf) {
            out.found.push(f);
        }
    }
    out.found.sort_by_key(|f| f.pid);
    out
}

fn read_bounded(path: &Path, max: u64, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    buf.clear();
    std::fs::File::open(path)?.take(max + 1).read_to_end(buf)?;
    let truncated = buf.len() as u64 > max;
    buf.truncate(usize::try_from(max).unwrap_or(usize::MAX));
    Ok(truncated)
}

const INTERPRETERS: &[&str] = &["python", "node", "ruby", "perl", "bash", "sh", "deno", "bun", "uv", "uvx", "npx"];

fn look(dir: &Path, pid: i32, sigs: &[Signature], buf: &mut Vec<u8>) -> Option<Found> {
    use std::os::unix::fs::MetadataExt;
    read_bounded(&dir.join("cmdline"), MAX_CMDLINE, buf).ok()?;
    if buf.is_empty() {
        return None; // a kernel thread, or gone
    }
    let args: Vec<String> =
        buf.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let cmdline = args.join(" ");
    let exe = std::fs::read_link(dir.join("exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| args.first().cloned().unwrap_or_default());
    let base = exe.rsplit('/').next().unwrap_or(&exe);
    let interpreted = INTERPRETERS.iter().any(|i| base.starts_with(i));
    let script = if interpreted {
        args.iter().skip(1).take_while(|a| *a != "-c" && *a != "-m").find(|a| !a.starts_with('-')).cloned()
    } else {
        None
    };
    let shown = Shown { exe: &exe, script: script.as_deref(), cmdline: &cmdline };
    let mut matched: Vec<String> = sigs.iter().filter(|s| s.matches(&shown)).map(|s| s.name.clone()).collect();
    matched.dedup();
    let (secret_env, environ) = match read_bounded(&dir.join("environ"), MAX_ENVIRON, buf) {
        Ok(truncated) => {
            let names = secret_names(buf);
            buf.fill(0);
            (names, if truncated { "truncated".to_owned() } else { "read".to_owned() })
        }
        Err(e) => (Vec::new(), format!("unreadable: {}", e.kind())),
    };
    if matched.is_empty() && secret_env.is_empty() {
        return None;
    }
    let uid = std::fs::metadata(dir).ok().map(|m| m.uid());
    Some(Found { pid, uid, exe, script, signatures: matched, secret_env, environ })
}

/// Names of `NAME=VALUE` entries whose name or value looks like a key (and whose value is not empty).
pub(crate) fn secret_names(environ: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    for kv in environ.split(|&b| b == 0) {
        let Some(eq) = kv.iter().position(|&b| b == b'=') else { continue };
        let (name, value) = (&kv[..eq], &kv[eq + 1..]);
        let Ok(name) = std::str::from_utf8(name) else { continue };
        if !value.is_empty() && (signatures::secret_name(name) || signatures::secret_value(value)) {
            names.push(name.to_owned());
        }
    }
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests;
