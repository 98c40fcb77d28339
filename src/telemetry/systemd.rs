//! systemd's notify protocol (`Type=notify`), without libsystemd: one datagram per state change to
//! the socket named by `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace). READY=1 once
//! the Workload API serves, RELOADING=1 … READY=1 around a reload, STOPPING=1 at shutdown, and
//! WATCHDOG=1 every WatchdogSec/2 when systemd asks for it. Without NOTIFY_SOCKET nothing is sent.

use crate::events::{Event, Subscriber};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// Where to send, from `NOTIFY_SOCKET`; None when unset or of a kind not supported (vsock).
fn notify_addr() -> Option<SocketAddr> {
    let raw = std::env::var_os("NOTIFY_SOCKET")?;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(raw.as_os_str());
    match bytes.first()? {
        b'/' => SocketAddr::from_pathname(raw).ok(),
        b'@' => SocketAddr::from_abstract_name(&bytes[1..]).ok(),
        _ => {
            tracing::warn!(socket = ?raw, "NOTIFY_SOCKET is neither a path nor @abstract; not notifying systemd");
            None
        }
    }
}

/// Send one state message. Never blocks: a full queue drops the message (logged).
pub(crate) fn notify(state: &str) {
    let Some(addr) = notify_addr() else { return };
    let sent = UnixDatagram::unbound()
        .and_then(|s| s.set_nonblocking(true).map(|()| s))
        .and_then(|s| s.send_to_addr(state.as_bytes(), &addr));
    if let Err(e) = sent {
        tracing::warn!(error = %e, state, "cannot notify systemd");
    }
}

/// CLOCK_MONOTONIC in microseconds, as systemd wants with RELOADING=1.
fn monotonic_usec() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64).saturating_mul(1_000_000).saturating_add(t.tv_nsec as u64 / 1_000)
}

/// Set once STOPPING=1 is sent: after it, a reload that was under way does not say READY=1.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// STOPPING=1: shutdown has begun.
pub(crate) fn stopping() {
    STOPPING.store(true, Ordering::SeqCst);
    notify("STOPPING=1");
}

/// A reload in progress: RELOADING=1 now, READY=1 when dropped (whether the new config was
/// taken or refused, the daemon serves again).
pub(crate) struct Reloading(());

impl Reloading {
    pub(crate) fn begin() -> Self {
        notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
        Reloading(())
    }
}

impl Drop for Reloading {
    fn drop(&mut self) {
        if !STOPPING.load(Ordering::SeqCst) {
            notify("READY=1");
        }
    }
}

/// READY=1 when the Workload API starts serving.
pub(crate) struct Notifier;

impl Subscriber for Notifier {
    fn on_event(&self, event: &Event) {
        if let Event::Started { .. } = event {
            notify("READY=1\nSTATUS=serving the SPIFFE Workload API");
        }
    }
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`, for this process per `WATCHDOG_PID`).
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok().filter(|u| *u > 0)?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    Some(Duration::from_micros(usec))
}

/// Ping the watchdog every half interval from the async runtime, so a wedged runtime stops the
/// pings and systemd restarts the daemon.
pub(crate) fn spawn_watchdog(mut shutdown: watch::Receiver<bool>) {
    let Some(interval) = watchdog_interval() else { return };
    let every = (interval / 2).max(Duration::from_millis(10));
    tracing::info!(?interval, "systemd watchdog enabled");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => notify("WATCHDOG=1"),
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn monotonic_usec_moves_forward() {
        let a = super::monotonic_usec();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(super::monotonic_usec() > a);
    }
}
