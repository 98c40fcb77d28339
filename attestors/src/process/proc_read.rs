//! The `/proc/PID` files the attestors read, all through the pinned process's dirfd (status,
//! cmdline, environ, cgroup), and the parsing of the status and cmdline files.

use super::ProcessHandle;
use crate::AttestError;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

impl ProcessHandle {
    /// The process's supplementary groups (`Groups:` of `/proc/PID/status`), read through the
    /// pinned process's dirfd and confirmed by [`Self::verify_alive`] after the read: never the
    /// groups of a later owner of its pid.
    pub fn groups(&self) -> Result<Vec<u32>, AttestError> {
        let ids = self.ids().map_err(|_| AttestError::ProcessGone { pid: self.pid })?;
        self.verify_alive()?;
        Ok(ids.groups)
    }

    // === reads for the attestors, all through the /proc/PID dirfd ===

    /// The process's ids from `/proc/PID/status`. Only these three lines are parsed: a full
    /// parse of the file was a fifth of the daemon's CPU per warm fetch (it is read twice per
    /// attestation).
    pub(crate) fn ids(&self) -> Result<Ids, String> {
        let raw = self.read_raw("status")?;
        parse_ids(&raw).ok_or_else(|| format!("/proc/{}/status has no valid Uid, Gid and Groups lines", self.pid))
    }

    pub(crate) fn cmdline(&self) -> Result<Vec<String>, String> {
        // Not procfs's cmdline(): it drops args that are not UTF-8; we only need them as paths.
        let raw = self.read_raw("cmdline")?;
        Ok(split_cmdline(&raw))
    }

    pub(crate) fn environ_raw(&self) -> Result<Vec<u8>, String> {
        self.read_raw("environ")
    }

    pub(crate) fn cgroup_text(&self) -> Result<String, String> {
        let raw = self.read_raw("cgroup")?;
        String::from_utf8(raw).map_err(|_| "cgroup file is not UTF-8".to_owned())
    }

    /// The raw `/proc/PID/cmdline` (which script an interpreter runs): with [`Self::verify_alive`]
    /// after it, a cheap "still the same program" check between full attestations.
    pub fn cmdline_raw(&self) -> Result<Vec<u8>, AttestError> {
        self.read_raw("cmdline").map_err(|_| AttestError::ProcessGone { pid: self.pid })
    }

    pub(super) fn read_raw(&self, name: &str) -> Result<Vec<u8>, String> {
        let mut f = self.proc_dir.open_relative(name).map_err(|e| e.to_string())?;
        read_all(&mut f).map_err(|e| format!("reading /proc/{}/{name}: {e}", self.pid))
    }
}

/// argv from `/proc/PID/cmdline`: NUL-terminated strings. Empty arguments are kept as
/// positions (`python3 -W '' evil.py legit.py`: the empty string is `-W`'s value, and dropping
/// it would make `evil.py` look like that value and `legit.py` like the script).
pub(crate) fn split_cmdline(raw: &[u8]) -> Vec<String> {
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    if raw.is_empty() {
        return Vec::new();
    }
    raw.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

/// Real, effective, saved and filesystem uids and gids, and the supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ids {
    pub(crate) uids: [u32; 4],
    pub(crate) gids: [u32; 4],
    pub(crate) groups: Vec<u32>,
}

/// The `Uid:`, `Gid:` and `Groups:` lines of a `/proc/PID/status` file (the first of each; the
/// kernel escapes newlines in the process name, so a name cannot forge a line). Lines are
/// matched as bytes: a name that is not UTF-8 does not hide them. `None` unless all three parse.
pub(crate) fn parse_ids(status: &[u8]) -> Option<Ids> {
    let (mut uids, mut gids, mut groups) = (None, None, None);
    for line in status.split(|b| *b == b'\n') {
        let (target, rest) = if let Some(rest) = line.strip_prefix(b"Uid:") {
            (&mut uids, rest)
        } else if let Some(rest) = line.strip_prefix(b"Gid:") {
            (&mut gids, rest)
        } else if let Some(rest) = line.strip_prefix(b"Groups:") {
            if groups.is_none() {
                groups = Some(numbers(rest)?);
            }
            continue;
        } else {
            continue;
        };
        if target.is_none() {
            *target = Some(<[u32; 4]>::try_from(numbers(rest)?).ok()?);
        }
        if uids.is_some() && gids.is_some() && groups.is_some() {
            break;
        }
    }
    Some(Ids { uids: uids?, gids: gids?, groups: groups? })
}

/// Whitespace-separated decimal u32s.
fn numbers(field: &[u8]) -> Option<Vec<u32>> {
    std::str::from_utf8(field).ok()?.split_ascii_whitespace().map(|v| v.parse().ok()).collect()
}

/// Initial buffer for reading a /proc file (most fit; longer ones grow it).
const PROC_READ: usize = 4096;

/// A small /proc file, read in one go rather than by probing (they report size 0).
pub(super) fn read_proc(path: &Path) -> io::Result<Vec<u8>> {
    read_all(&mut File::open(path)?)
}

/// A whole /proc file in few syscalls. /proc files report size 0, and `read_to_end` asks for
/// the size (statx, lseek) before it reads, then starts with small probes: reads into room for
/// a page instead, until a read returns nothing.
fn read_all(f: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; PROC_READ];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    Ok(buf)
}
