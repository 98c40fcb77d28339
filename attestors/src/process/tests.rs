//! Tests of the pure parts of process pinning (`/proc` parsing).

#[test]
fn cmdline_keeps_empty_arguments() {
    let got = super::proc_read::split_cmdline(b"python3\0-W\0\0evil.py\0legit.py\0");
    assert_eq!(got, ["python3", "-W", "", "evil.py", "legit.py"]);
    assert_eq!(super::proc_read::split_cmdline(b"a\0\0"), ["a", ""]);
    assert!(super::proc_read::split_cmdline(b"").is_empty());
    assert_eq!(super::proc_read::split_cmdline(b"no-nul"), ["no-nul"]);
}

#[test]
fn stat_layout_skips_odd_command_names() {
    // Field n holds the number n (field 3 is the state letter); the name has ") (" in it.
    let fields: Vec<String> = (4..=52).map(|n: u32| n.to_string()).collect();
    let line = format!("42 (a) b (c) R {}\n", fields.join(" "));
    assert_eq!(super::exe_identity::layout_of_stat(line.as_bytes()), Some((26, 28)));
    assert_eq!(super::exe_identity::stat_fields(line.as_bytes()), Some((22, 26, 28)));
    assert_eq!(super::exe_identity::stat_fields(b"42 (a) R 4 5"), None, "short line: nothing");
}

#[test]
fn ids_from_status_lines_only() {
    let status = b"Name:\tfake\\nUid:\t0\t0\t0\t0\nUmask:\t0022\nState:\tS (sleeping)\n\
                   Uid:\t1000\t1001\t1002\t1003\nGid:\t2000\t2001\t2002\t2003\nFDSize:\t64\n\
                   Groups:\t4 27 \nUid:\t0\t0\t0\t0\nVmPeak:\t 1 kB\n";
    let ids = super::proc_read::parse_ids(status).unwrap();
    // The escaped newline in the name forges nothing; the first real line of each counts.
    assert_eq!(ids.uids, [1000, 1001, 1002, 1003]);
    assert_eq!(ids.gids, [2000, 2001, 2002, 2003]);
    assert_eq!(ids.groups, [4, 27]);
    // A name that is not UTF-8 hides nothing; an empty group list is a list.
    let odd = b"Name:\t\xff\xfe\nUid:\t5\t5\t5\t5\nGid:\t6\t6\t6\t6\nGroups:\t\n";
    assert_eq!(super::proc_read::parse_ids(odd).unwrap().groups, Vec::<u32>::new());
    // Missing or malformed lines: no ids at all (fail closed).
    assert!(super::proc_read::parse_ids(b"Uid:\t1\t1\t1\t1\nGid:\t1\t1\t1\t1\n").is_none());
    assert!(super::proc_read::parse_ids(b"Uid:\t1\t1\t1\nGid:\t1\t1\t1\t1\nGroups:\t\n").is_none());
    assert!(super::proc_read::parse_ids(b"Uid:\t1\tx\t1\t1\nGid:\t1\t1\t1\t1\nGroups:\t\n").is_none());
}

#[test]
fn ids_match_procfs_for_this_process() {
    let me = procfs::process::Process::myself().unwrap();
    let full = me.status().unwrap();
    let ids = super::proc_read::parse_ids(&std::fs::read("/proc/self/status").unwrap()).unwrap();
    assert_eq!(ids.uids, [full.ruid, full.euid, full.suid, full.fuid]);
    assert_eq!(ids.gids, [full.rgid, full.egid, full.sgid, full.fgid]);
    assert_eq!(ids.groups, full.groups);
}
