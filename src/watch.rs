//! File change notification for the files identities depend on: the config, federated bundles,
//! and each workload's script and config files. One inotify watcher for the daemon; it watches
//! parent directories, because editors and config managers replace files by rename.
//!
//! Kernel watches are a host-wide resource counted against the daemon's user, and workloads
//! choose the directories: each directory watch is reference-counted and removed with its last
//! subscriber, and the directories one uid (and all together) may hold are capped. Past a cap,
//! `subscribe` returns nothing and the caller relies on its interval re-checks.
//!
//! Adding or removing a watch is a round trip to the watcher's thread, on the request path: a
//! directory's watch therefore outlives its last subscriber by a short linger (a client that
//! fetches, closes the stream and fetches again would otherwise pay both every time). Lingering
//! watches belong to no uid, count against the global cap, and make room for new ones first.

use notify::{RecursiveMode, Watcher};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Directories one uid's workloads may have watched at once.
pub(crate) const MAX_DIRS_PER_UID: usize = 256;
/// Directories watched at once in all (inotify's per-user limit is shared with the whole host).
pub(crate) const MAX_DIRS: usize = 2048;
/// How long the daemon keeps a directory watch after its last subscriber left.
pub(crate) const LINGER: Duration = Duration::from_secs(2);

type Subscribers = Arc<Mutex<HashMap<PathBuf, Vec<Weak<Notify>>>>>;

/// Who a subscription is for: the daemon itself (config and bundle files; never capped) or a
/// workload of a uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    Daemon,
    Uid(u32),
}

#[derive(Default)]
struct DirRefs {
    total: usize,
    by_uid: HashMap<u32, usize>,
}

#[derive(Default)]
struct Dirs {
    /// Watched directories and who holds them.
    refs: HashMap<PathBuf, DirRefs>,
    /// Distinct directories each uid holds.
    per_uid: HashMap<u32, usize>,
    /// Uids told (in the log) that they reached their cap, until they fall back under it.
    warned: HashSet<u32>,
    warned_global: bool,
    /// Watched directories nobody holds any more, and since when (see [`LINGER`]).
    idle: HashMap<PathBuf, Instant>,
}

pub(crate) struct FileWatcher {
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
    dirs: Mutex<Dirs>,
    subs: Subscribers,
    max_per_uid: usize,
    max_total: usize,
    linger: Duration,
}

/// A live subscription; dropping it unsubscribes and releases its directory watches.
#[must_use = "dropping the subscription ends it"]
pub(crate) struct Subscription {
    watcher: Arc<FileWatcher>,
    owner: Owner,
    /// The directories held, when not simply every parent of `paths` (one could not be
    /// watched): each open stream holds a subscription, and most hold all their parents.
    dirs: Option<Box<[PathBuf]>>,
    paths: Box<[PathBuf]>,
    notify: Weak<Notify>,
}

impl FileWatcher {
    #[cfg(test)]
    /// A watcher; if inotify is unavailable, file changes are only noticed by periodic re-checks.
    pub(crate) fn new() -> Arc<Self> {
        Self::with_limits(MAX_DIRS_PER_UID, MAX_DIRS)
    }

    pub(crate) fn with_limits(max_per_uid: usize, max_total: usize) -> Arc<Self> {
        Self::build(max_per_uid, max_total, Duration::ZERO)
    }

    /// A watcher whose directory watches linger `linger` after their last subscriber (removed
    /// by a task on the current tokio runtime; without one, they do not linger).
    pub(crate) fn with_linger(max_per_uid: usize, max_total: usize, linger: Duration) -> Arc<Self> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Self::with_limits(max_per_uid, max_total);
        };
        let w = Self::build(max_per_uid, max_total, linger);
        let weak = Arc::downgrade(&w);
        let every = (linger / 2).max(Duration::from_millis(20));
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match weak.upgrade() {
                    Some(w) => w.reap(),
                    None => return,
                }
            }
        });
        w
    }

    fn build(max_per_uid: usize, max_total: usize, linger: Duration) -> Arc<Self> {
        let subs: Subscribers = Arc::default();
        let cb_subs = subs.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(event) = res else { return };
            if event.kind.is_access() {
                return;
            }
            let Ok(map) = cb_subs.lock() else { return };
            for path in &event.paths {
                // `dir/*` subscribes to every entry of `dir` (a policy file pattern: files come
                // and go).
                let any = path.parent().map(|d| d.join("*"));
                let subs = map.get(path).into_iter().chain(any.as_ref().and_then(|a| map.get(a)));
                for n in subs.flatten().filter_map(Weak::upgrade) {
                    n.notify_one();
                }
            }
        })
        .map_err(|e| tracing::warn!(error = %e, "inotify unavailable: file changes are noticed on re-attestation only"))
        .ok();
        Arc::new(Self { watcher: Mutex::new(watcher), dirs: Mutex::default(), subs, max_per_uid, max_total, linger })
    }

    /// Wake `notify` whenever one of `paths` is created, written, renamed or removed, for as long
    /// as the returned subscription lives. None when inotify is unavailable or `owner` is at its
    /// cap (logged once): the caller then notices changes only when it re-checks on its own.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        owner: Owner,
        paths: &[PathBuf],
        notify: &Arc<Notify>,
    ) -> Option<Subscription> {
        let wanted = parents(paths);
        let dirs = {
            let mut state = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
            if !self.within_caps(&mut state, owner, &wanted) {
                return None;
            }
            let mut watcher = self.watcher.lock().unwrap_or_else(|p| p.into_inner());
            let w = watcher.as_mut()?;
            let mut held = Vec::with_capacity(wanted.len());
            for dir in wanted {
                if !state.refs.contains_key(&dir) && state.idle.remove(&dir).is_none() {
                    // A new kernel watch: lingering ones make room first.
                    if state.refs.len() + state.idle.len() >= self.max_total
                        && let Some(oldest) = state.idle.iter().min_by_key(|(_, t)| **t).map(|(d, _)| d.clone())
                    {
                        state.idle.remove(&oldest);
                        unwatch(w, &oldest);
                    }
                    if let Err(e) = w.watch(&dir, RecursiveMode::NonRecursive) {
                        tracing::debug!(dir = %dir.display(), error = %e, "cannot watch directory");
                        continue;
                    }
                }
                let refs = state.refs.entry(dir.clone()).or_default();
                refs.total += 1;
                if let Owner::Uid(uid) = owner {
                    let n = refs.by_uid.entry(uid).or_default();
                    *n += 1;
                    if *n == 1 {
                        *state.per_uid.entry(uid).or_default() += 1;
                    }
                }
                held.push(dir);
            }
            held
        };
        if let Ok(mut map) = self.subs.lock() {
            for path in paths {
                map.entry(path.clone()).or_default().push(Arc::downgrade(notify));
            }
        }
        let dirs = if dirs.len() == parents(paths).len() { None } else { Some(dirs.into_boxed_slice()) };
        Some(Subscription { watcher: self.clone(), owner, dirs, paths: paths.into(), notify: Arc::downgrade(notify) })
    }

    /// Whether `owner` may hold `wanted` in addition to what it holds; logs the first refusal.
    fn within_caps(&self, state: &mut Dirs, owner: Owner, wanted: &[PathBuf]) -> bool {
        let Owner::Uid(uid) = owner else { return true };
        let new_total = wanted.iter().filter(|d| !state.refs.contains_key(*d)).count();
        let new_for_uid = wanted
            .iter()
            .filter(|d| state.refs.get(*d).and_then(|r| r.by_uid.get(&uid)).is_none_or(|n| *n == 0))
            .count();
        let held = state.per_uid.get(&uid).copied().unwrap_or(0);
        if held + new_for_uid > self.max_per_uid {
            if state.warned.insert(uid) {
                tracing::warn!(
                    uid,
                    limit = self.max_per_uid,
                    "this uid's workloads hold the most watched directories allowed; its further streams \
                     notice file changes at their re-attestation interval only"
                );
            }
            return false;
        }
        if state.refs.len() + new_total > self.max_total {
            if !state.warned_global {
                state.warned_global = true;
                tracing::warn!(
                    limit = self.max_total,
                    "the most watched directories allowed are in use; further streams notice file changes at \
                     their re-attestation interval only"
                );
            }
            return false;
        }
        true
    }

    #[cfg(test)]
    /// Directories watched now, lingering ones included (each is one kernel inotify watch).
    pub(crate) fn watched_dirs(&self) -> usize {
        let state = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
        state.refs.len() + state.idle.len()
    }

    /// Removes the watches that lingered long enough.
    fn reap(&self) {
        let mut state = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
        if state.idle.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut expired = Vec::new();
        state.idle.retain(|dir, since| {
            let keep = now.duration_since(*since) < self.linger;
            if !keep {
                expired.push(dir.clone());
            }
            keep
        });
        if let Some(w) = self.watcher.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            for dir in &expired {
                unwatch(w, dir);
            }
        }
    }

    fn release(&self, owner: Owner, dirs: &[PathBuf], paths: &[PathBuf], notify: &Weak<Notify>) {
        if let Ok(mut map) = self.subs.lock() {
            for path in paths {
                if let Some(list) = map.get_mut(path) {
                    // One entry per subscription; drop ours and any of ended subscribers.
                    if let Some(i) = list.iter().position(|w| w.ptr_eq(notify)) {
                        list.swap_remove(i);
                    }
                    list.retain(|w| w.strong_count() > 0);
                    if list.is_empty() {
                        map.remove(path);
                    }
                }
            }
        }
        let mut state = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
        let mut gone = Vec::new();
        for dir in dirs {
            let Some(refs) = state.refs.get_mut(dir) else { continue };
            refs.total = refs.total.saturating_sub(1);
            let mut uid_left_dir = None;
            if let Owner::Uid(uid) = owner
                && let Some(n) = refs.by_uid.get_mut(&uid)
            {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    refs.by_uid.remove(&uid);
                    uid_left_dir = Some(uid);
                }
            }
            if refs.total == 0 {
                state.refs.remove(dir);
                if self.linger.is_zero() {
                    gone.push(dir);
                } else {
                    state.idle.insert(dir.clone(), Instant::now());
                }
            }
            if let Some(uid) = uid_left_dir
                && let Some(held) = state.per_uid.get_mut(&uid)
            {
                *held = held.saturating_sub(1);
                if *held == 0 {
                    state.per_uid.remove(&uid);
                }
                if *state.per_uid.get(&uid).unwrap_or(&0) < self.max_per_uid {
                    state.warned.remove(&uid);
                }
            }
        }
        if state.refs.len() < self.max_total {
            state.warned_global = false;
        }
        if !gone.is_empty()
            && let Some(w) = self.watcher.lock().unwrap_or_else(|p| p.into_inner()).as_mut()
        {
            for dir in gone {
                unwatch(w, dir);
            }
        }
    }
}

/// The distinct parent directories of `paths`, in order.
fn parents(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut seen = HashSet::new();
    paths.iter().filter_map(|p| p.parent()).filter(|d| seen.insert(d.to_owned())).map(Path::to_owned).collect()
}

fn unwatch(w: &mut notify::RecommendedWatcher, dir: &Path) {
    if let Err(e) = w.unwatch(dir) {
        tracing::debug!(dir = %dir.display(), error = %e, "cannot remove directory watch");
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let all;
        let dirs = match &self.dirs {
            Some(dirs) => dirs,
            None => {
                all = parents(&self.paths);
                &all[..]
            }
        };
        self.watcher.release(self.owner, dirs, &self.paths, &self.notify);
    }
}

#[cfg(test)]
mod tests;
