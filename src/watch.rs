//! File change notification for the files identities depend on: the config, federated bundles,
//! and each workload's script and config files. One inotify watcher for the daemon; it watches
//! parent directories, because editors and config managers replace files by rename.

use notify::{RecursiveMode, Watcher};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::Notify;

type Subscribers = Arc<Mutex<HashMap<PathBuf, Vec<Weak<Notify>>>>>;

pub struct FileWatcher {
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
    dirs: Mutex<HashSet<PathBuf>>,
    subs: Subscribers,
}

impl FileWatcher {
    /// A watcher; if inotify is unavailable, file changes are only noticed by periodic re-checks.
    pub fn new() -> Arc<Self> {
        let subs: Subscribers = Arc::default();
        let cb_subs = subs.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(event) = res else { return };
            if event.kind.is_access() {
                return;
            }
            let Ok(mut map) = cb_subs.lock() else { return };
            for path in &event.paths {
                if let Some(list) = map.get_mut(path) {
                    list.retain(|w| match w.upgrade() {
                        Some(n) => {
                            n.notify_one();
                            true
                        }
                        None => false,
                    });
                }
            }
        })
        .map_err(|e| tracing::warn!(error = %e, "inotify unavailable: file changes are noticed on re-attestation only"))
        .ok();
        Arc::new(Self { watcher: Mutex::new(watcher), dirs: Mutex::default(), subs })
    }

    /// Wake `notify` whenever one of `paths` is created, written, renamed or removed.
    pub fn subscribe(&self, paths: &[PathBuf], notify: &Arc<Notify>) {
        for path in paths {
            let Some(dir) = path.parent() else { continue };
            self.watch_dir(dir);
            if let Ok(mut map) = self.subs.lock() {
                let list = map.entry(path.clone()).or_default();
                // Prune ended subscribers when the list doubles: amortised O(1) per subscribe, so
                // opening 10,000 streams on one binary is not quadratic. A subscriber listed twice
                // is only woken twice.
                if list.len() >= 16 && list.len().is_power_of_two() {
                    list.retain(|w| w.strong_count() > 0);
                }
                list.push(Arc::downgrade(notify));
            }
        }
    }

    fn watch_dir(&self, dir: &Path) {
        let Ok(mut dirs) = self.dirs.lock() else { return };
        if dirs.contains(dir) {
            return;
        }
        if let Ok(mut w) = self.watcher.lock()
            && let Some(w) = w.as_mut()
        {
            match w.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    dirs.insert(dir.to_owned());
                }
                Err(e) => tracing::debug!(dir = %dir.display(), error = %e, "cannot watch directory"),
            }
        }
    }
}
