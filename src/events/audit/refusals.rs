//! The refusal budget of the audit log: refusal lines of one uid (or source) per window, and of
//! everyone together, are written up to their budgets and then only counted, by event, in one
//! `refused_suppressed` line per key when its window ends.

use super::{MAX_LINE, MAX_REFUSAL_LINE, RefusalKey, Writer};
use serde_json::{Map, Value};
use std::time::{Duration, Instant};

/// Refusals of one uid or source in the current window.
pub(super) struct Window {
    start: Instant,
    recorded: u32,
    /// Lines not written, by event name.
    suppressed: std::collections::BTreeMap<String, u64>,
}

impl Window {
    fn new(start: Instant) -> Self {
        Self { start, recorded: 0, suppressed: Default::default() }
    }
}

/// All refusals in the current window.
pub(super) struct Total {
    start: Instant,
    recorded: u32,
}

impl Total {
    pub(super) fn new(start: Instant) -> Self {
        Self { start, recorded: 0 }
    }
}

impl Writer {
    pub(super) fn event(&mut self, event: Map<String, Value>, key: Option<RefusalKey>) {
        // A key that went quiet gets its count written when its window ends, however busy the
        // log is with other lines (else it waited for an idle second, or for shutdown).
        if self.flushed.elapsed() >= Duration::from_secs(1) {
            self.flush_refusals(false);
        }
        let Some(key) = key else {
            self.write(event, MAX_LINE);
            return;
        };
        let now = Instant::now();
        let window = self.options.refusal_window;
        if now.duration_since(self.total.start) >= window {
            self.total = Total { start: now, recorded: 0 };
        }
        let w = self.refusals.entry(key.clone()).or_insert_with(|| Window::new(now));
        if now.duration_since(w.start) >= window {
            let ended = std::mem::replace(w, Window::new(now));
            self.write_suppressed(&key, &ended, now);
        }
        let Some(w) = self.refusals.get_mut(&key) else { return };
        if w.recorded >= self.options.refusals_per_window
            || self.total.recorded >= self.options.refusals_per_window_total
        {
            let name = event.get("event").and_then(Value::as_str).unwrap_or("refused");
            *w.suppressed.entry(name.to_owned()).or_insert(0) += 1;
            return;
        }
        w.recorded += 1;
        self.total.recorded += 1;
        self.write(event, MAX_REFUSAL_LINE);
    }

    /// End the windows that are over (all of them when `all`), writing their counts.
    pub(super) fn flush_refusals(&mut self, all: bool) {
        let now = Instant::now();
        self.flushed = now;
        let window = self.options.refusal_window;
        let ended: Vec<RefusalKey> = self
            .refusals
            .iter()
            .filter(|(_, w)| all || now.duration_since(w.start) >= window)
            .map(|(key, _)| key.clone())
            .collect();
        for key in ended {
            if let Some(w) = self.refusals.remove(&key) {
                self.write_suppressed(&key, &w, now);
            }
        }
    }

    fn write_suppressed(&mut self, key: &RefusalKey, w: &Window, now: Instant) {
        let count: u64 = w.suppressed.values().sum();
        if count == 0 {
            return;
        }
        let mut m = Map::new();
        m.insert("event".into(), "refused_suppressed".into());
        match key {
            RefusalKey::Uid(uid) => {
                m.insert("uid".into(), uid.map(Value::from).unwrap_or(Value::Null));
            }
            RefusalKey::Source(source) => {
                m.insert("source".into(), source.clone().into());
            }
        }
        m.insert("count".into(), count.into());
        m.insert("events".into(), w.suppressed.iter().map(|(k, v)| (k.clone(), Value::from(*v))).collect());
        m.insert("window_secs".into(), now.duration_since(w.start).as_secs().into());
        m.insert(
            "reason".into(),
            format!(
                "more than {} refusals for this {} (or {} in all) in the window",
                self.options.refusals_per_window,
                if matches!(key, RefusalKey::Uid(_)) { "uid" } else { "source" },
                self.options.refusals_per_window_total
            )
            .into(),
        );
        self.write(m, MAX_LINE);
    }
}
