//! Whether a process we listed still runs, and when it started, from /proc (no fd held per
//! process: an inventory of thousands of workloads must not cost thousands of pidfds).

use std::sync::OnceLock;

/// The pid still names the process that started at `start_ticks` and it has not exited (a
/// zombie has: its identity holder is gone).
pub(super) fn alive(pid: i32, start_ticks: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // comm may contain spaces and parentheses: fields start after the last ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else { return false };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); field 22 (starttime) is fields[19].
    let (Some(state), Some(start)) = (fields.first(), fields.get(19)) else { return false };
    !matches!(*state, "Z" | "X" | "x") && start.parse::<u64>().ok() == Some(start_ticks)
}

/// The start time (clock ticks since boot) of a running process.
pub(super) fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// Unix seconds of a start time in clock ticks since boot.
pub(super) fn start_unix(start_ticks: u64) -> u64 {
    let (boot, hz) = *BOOT.get_or_init(|| (boot_time().unwrap_or(0), clock_ticks()));
    boot.saturating_add(start_ticks / hz.max(1))
}

static BOOT: OnceLock<(u64, u64)> = OnceLock::new();

fn boot_time() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_start() -> u64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        stat.rsplit_once(')').unwrap().1.split_whitespace().nth(19).unwrap().parse().unwrap()
    }

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not() {
        let me = std::process::id() as i32;
        let start = own_start();
        assert!(alive(me, start));
        assert!(!alive(me, start + 1), "another start time is another process");
        let started = start_unix(start);
        let now = crate::clock::unix_secs(crate::clock::now());
        assert!(started <= now && now - started < 86400 * 365, "{started} vs {now}");
    }

    #[test]
    fn an_exited_child_leaves() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let start: u64 = stat.rsplit_once(')').map_or(0, |r| r.1.split_whitespace().nth(19).unwrap().parse().unwrap());
        // Exited but not yet reaped (a zombie): not alive. Then reaped: not alive either.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while alive(pid, start) {
            assert!(std::time::Instant::now() < deadline, "an exited child still counts as alive");
            std::thread::yield_now();
        }
        assert!(std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok(), "still a zombie, unreaped");
        child.wait().unwrap();
        assert!(!alive(pid, start));
    }
}
