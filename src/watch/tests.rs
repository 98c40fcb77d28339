//! Tests of the file watcher (kernel inotify watches, per-uid bounds, lingering directories).
use super::*;
use std::time::Duration;

/// Tests that add or remove kernel watches take turns: one counts the process's watches
/// before and after, and another's changes in between would be miscounted.
static KERNEL_WATCH_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Kernel watches held by this process's inotify instances (`inotify wd:` lines in fdinfo).
fn kernel_watches() -> usize {
    let mut n = 0;
    for fd in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == "anon_inode:inotify") {
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.file_name().to_string_lossy()))
                .unwrap_or_default();
            n += info.lines().filter(|l| l.starts_with("inotify wd:")).count();
        }
    }
    n
}

#[tokio::test]
async fn watches_are_reference_counted_removed_with_the_last_subscriber_and_capped() {
    let _turn = KERNEL_WATCH_TESTS.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = |i: usize| {
        let d = tmp.path().join(format!("d{i}"));
        std::fs::create_dir_all(&d).unwrap();
        d.join("script.py")
    };
    let w = FileWatcher::with_limits(3, 5);
    let n = Arc::new(Notify::new());
    let a = w.subscribe(Owner::Uid(1000), &[dir(0)], &n).unwrap();
    let b = w.subscribe(Owner::Uid(1000), &[dir(0), dir(1)], &n).unwrap();
    let c = w.subscribe(Owner::Uid(2000), &[dir(1)], &n).unwrap();
    assert_eq!(w.watched_dirs(), 2);
    drop(a);
    assert_eq!(w.watched_dirs(), 2, "d0 is still held by b");
    drop(b);
    assert_eq!(w.watched_dirs(), 1, "d1 is still held by c");

    // A file change still wakes the remaining subscriber.
    std::fs::write(dir(1), "x").unwrap();
    tokio::time::timeout(Duration::from_secs(5), n.notified()).await.expect("woken by the change");
    drop(c);
    assert_eq!(w.watched_dirs(), 0);

    // Per-uid cap: three directories, then none (all or nothing); others are unaffected.
    let held: Vec<_> = (0..3).map(|i| w.subscribe(Owner::Uid(1000), &[dir(i)], &n).unwrap()).collect();
    assert!(w.subscribe(Owner::Uid(1000), &[dir(3)], &n).is_none());
    assert!(w.subscribe(Owner::Uid(1000), &[dir(0), dir(4)], &n).is_none());
    let shared = w.subscribe(Owner::Uid(1000), &[dir(2)], &n).expect("an already held directory is free");
    assert_eq!(w.watched_dirs(), 3);
    // Global cap: five directories in all; the daemon itself is never refused.
    let other: Vec<_> = (5..7).map(|i| w.subscribe(Owner::Uid(2000), &[dir(i)], &n).unwrap()).collect();
    assert!(w.subscribe(Owner::Uid(3000), &[dir(7)], &n).is_none());
    let daemon = w.subscribe(Owner::Daemon, &[dir(8)], &n).unwrap();
    assert_eq!(w.watched_dirs(), 6);
    drop((held, shared, other, daemon));
    assert_eq!(w.watched_dirs(), 0);
    assert!(w.subscribe(Owner::Uid(1000), &[dir(3)], &n).is_some(), "under the cap again");
}

#[test]
fn kernel_watches_follow_the_count() {
    let _turn = KERNEL_WATCH_TESTS.blocking_lock();
    let tmp = tempfile::tempdir().unwrap();
    let w = FileWatcher::new();
    let n = Arc::new(Notify::new());
    let before = kernel_watches();
    let subs: Vec<_> = (0..50)
        .map(|i| {
            let d = tmp.path().join(format!("d{i}"));
            std::fs::create_dir(&d).unwrap();
            w.subscribe(Owner::Uid(1), &[d.join("f")], &n).unwrap()
        })
        .collect();
    assert_eq!(w.watched_dirs(), 50);
    // Other tests in this process may hold watches of their own: compare loosely.
    assert!(kernel_watches() >= before + 50);
    drop(subs);
    assert_eq!(w.watched_dirs(), 0);
    assert!(kernel_watches() < before + 50, "the kernel watches are gone too");
}

#[tokio::test]
async fn watches_linger_after_the_last_subscriber_then_go() {
    let _turn = KERNEL_WATCH_TESTS.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("script.py");
    let w = FileWatcher::with_linger(8, 16, Duration::from_millis(300));
    let n = Arc::new(Notify::new());
    drop(w.subscribe(Owner::Uid(1000), std::slice::from_ref(&file), &n).unwrap());
    assert_eq!(w.watched_dirs(), 1, "the watch outlives its last subscriber for a while");
    // Taken up again without a new kernel watch, and it still reports changes.
    let again = w.subscribe(Owner::Uid(1000), std::slice::from_ref(&file), &n).unwrap();
    assert_eq!(w.watched_dirs(), 1);
    std::fs::write(&file, "x").unwrap();
    tokio::time::timeout(Duration::from_secs(5), n.notified()).await.expect("woken by the change");
    drop(again);
    let deadline = Instant::now() + Duration::from_secs(5);
    while w.watched_dirs() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(w.watched_dirs(), 0, "removed once the linger is over");
}

#[tokio::test]
async fn lingering_watches_make_room_under_the_global_cap() {
    let _turn = KERNEL_WATCH_TESTS.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = |i: usize| {
        let d = tmp.path().join(format!("d{i}"));
        std::fs::create_dir_all(&d).unwrap();
        d.join("f")
    };
    let w = FileWatcher::with_linger(8, 2, Duration::from_secs(3600));
    let n = Arc::new(Notify::new());
    drop(w.subscribe(Owner::Uid(1), &[dir(0)], &n).unwrap());
    drop(w.subscribe(Owner::Uid(1), &[dir(1)], &n).unwrap());
    assert_eq!(w.watched_dirs(), 2, "both linger");
    // A lingering watch belongs to nobody: another uid gets its directory, the oldest goes.
    let held = w.subscribe(Owner::Uid(2), &[dir(2)], &n).expect("room is made");
    assert_eq!(w.watched_dirs(), 2);
    let kept = w.subscribe(Owner::Uid(2), &[dir(1)], &n).expect("d1 still lingered");
    assert_eq!(w.watched_dirs(), 2);
    assert!(w.subscribe(Owner::Uid(3), &[dir(3)], &n).is_none(), "held watches are still capped");
    drop((held, kept));
}
