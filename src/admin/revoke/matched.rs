//! What a new revocation cuts off at the moment it is made: configured entries, running
//! workloads (SVID holders, token-socket agents, gateway callers), named, and live grants.

use crate::events::{CutOff, MatchedNow};
use crate::inventory::{Grant, Held, Workload};
use crate::registry::Policy;
use crate::registry::deny::{DenyRule, DenyTarget};
use std::collections::HashMap;

/// What `target` cuts off now: configured active entries, live workloads and live grants.
pub(super) fn matched_now(
    target: &DenyTarget,
    policy: &Policy,
    workloads: &[Workload],
    grants: &[Grant],
) -> MatchedNow {
    let entries: Vec<_> = policy.registry.entries().iter().filter(|e| !e.retired).collect();
    let mut m = MatchedNow::default();
    let live = |w: &&Workload| w.held.values().any(|h| h.status == "active");
    match target {
        DenyTarget::SpiffeId(id) => {
            m.entries = entries.iter().filter(|e| e.spiffe_id == *id).map(|e| e.spiffe_id.clone()).collect();
            for w in workloads {
                push(&mut m, w, |h| h.spiffe_id == *id);
            }
            m.grants = grants.iter().filter(|g| g.act_chain.iter().any(|a| *a == id.to_string())).map(jti).collect();
        }
        DenyTarget::Selector(s) => {
            m.entries = entries.iter().filter(|e| e.selectors.contains(s)).map(|e| e.spiffe_id.clone()).collect();
            let wanted = s.to_string();
            // A digest nobody computed yet (no entry asked for it): hash the running executable.
            let exe_digest = s.value().strip_prefix("sha256:").filter(|_| s.kind() == tessera_attestors::Kind::Unix);
            let max = policy.attest_base.max_hash_size.unwrap_or(u64::MAX);
            let mut hashed = HashMap::new();
            for w in workloads.iter().filter(live) {
                let matches = w.selectors.contains(&wanted)
                    || exe_digest.is_some_and(|hex| {
                        let digest = match &w.exe.sha256 {
                            Some(d) => Some(d.clone()),
                            None => running_exe_digest(w.pid, max, &mut hashed),
                        };
                        digest.as_deref() == Some(hex)
                    });
                if matches {
                    push(&mut m, w, |_| true);
                }
            }
            m.grants = grants.iter().filter(|g| g.pid.is_some_and(|p| m.workloads.contains(&p))).map(jti).collect();
        }
    }
    m.entries.dedup();
    m
}

fn jti(g: &Grant) -> String {
    g.jti.clone()
}

/// Record `w` as cut off when any of its active identities matches `held`.
fn push(m: &mut MatchedNow, w: &Workload, held: impl Fn(&Held) -> bool) {
    let cut: Vec<String> = w
        .held
        .values()
        .filter(|h| h.status == "active" && held(h))
        .map(|h| format!("{} {}", h.kind, h.spiffe_id))
        .collect();
    if cut.is_empty() || m.workloads.contains(&w.pid) {
        return;
    }
    m.workloads.push(w.pid);
    m.holders.push(CutOff { pid: w.pid, exe: w.exe.path.clone(), held: cut });
}

/// The admin answer's sentence: counts, then each workload by pid with what it held.
pub(super) fn message(rule: &DenyRule, m: &MatchedNow) -> String {
    if m.is_empty() && m.grants.is_empty() {
        return format!("revocation {} recorded; it matches nothing now", rule.id);
    }
    let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut out = format!(
        "revocation {} in force; it takes away {} and cuts off {}",
        rule.id,
        plural(m.entries.len(), "configured entry", "configured entries"),
        plural(m.workloads.len(), "running workload", "running workloads"),
    );
    if !m.grants.is_empty() {
        out += &format!("; it ends {}", plural(m.grants.len(), "live grant", "live grants"));
    }
    for h in &m.holders {
        out += &format!("\n  pid {} ({}): {}", h.pid, h.exe.as_deref().unwrap_or("?"), h.held.join(", "));
    }
    out
}

/// SHA-256 of the executable a process runs (through /proc/PID/exe, so the inode it mapped),
/// once per inode; `None` when unreadable or larger than `max`.
fn running_exe_digest(pid: i32, max: u64, done: &mut HashMap<(u64, u64), Option<String>>) -> Option<String> {
    use sha2::Digest;
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let mut file = std::fs::File::open(format!("/proc/{pid}/exe")).ok()?;
    let meta = file.metadata().ok()?;
    done.entry((meta.dev(), meta.ino()))
        .or_insert_with(|| {
            if meta.len() > max {
                return None;
            }
            let mut hasher = sha2::Sha256::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => hasher.update(&buf[..n]),
                    Err(_) => return None,
                }
            }
            Some(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
        })
        .clone()
}
