//! perl and ruby: clustered short options (`-wle`, `-Ilib`) and which argument is the script.

use super::{Entry, Parsed, file, loads_code, plain, unknown};

/// How one family of clustered short options (`-wle`, `-Ilib`) behaves.
struct ShortSpec {
    name: &'static str,
    /// No script runs (inline code, version, help).
    no_script: &'static str,
    /// Loads other code first, or looks the script up elsewhere (`-S`: `PATH`), or changes
    /// directory first: no trustworthy script.
    refuse: &'static str,
    /// Takes a value: the rest of the cluster, or else the next argument.
    value: &'static str,
    /// Takes an optional value glued to it: the rest of the cluster.
    attached: &'static str,
    /// Plain switches.
    flags: &'static str,
}

const PERL: ShortSpec = ShortSpec {
    name: "perl",
    no_script: "eEvhV",
    refuse: "SMmId",
    value: "",
    attached: "0lCDFix",
    flags: "acnpstTuUwWXg",
};

const RUBY: ShortSpec =
    ShortSpec { name: "ruby", no_script: "eh", refuse: "SrICx", value: "E", attached: "0FKTW", flags: "acdlnpsvwyU" };

/// Long options of ruby: (name, takes a separate value when written without `=`).
const RUBY_LONG: &[(&str, bool)] = &[
    ("--enable", true),
    ("--disable", true),
    ("--encoding", true),
    ("--external-encoding", true),
    ("--internal-encoding", true),
    ("--dump", true),
    ("--verbose", false),
    ("--backtrace-limit", false),
    ("--crash-report", false),
    ("--parser", false),
    ("--jit", false),
    ("--yjit", false),
    ("--rjit", false),
];

fn short_cluster(spec: &ShortSpec, args: &[String], long: impl Fn(&str) -> Option<Result<usize, ()>>) -> Parsed {
    let mut i = 0;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            "--" => return plain(args.get(i + 1).map_or(Entry::None, |s| file(s))),
            "-" => return plain(Entry::None),
            "--help" | "--version" | "--copyright" => return plain(Entry::None),
            l if l.starts_with("--") => match long(l) {
                Some(Ok(skip)) => i += skip,
                Some(Err(())) => return Err(loads_code(spec.name, l)),
                None => return Err(unknown(spec.name, l)),
            },
            short if short.starts_with('-') => {
                let flags = &short[1..];
                let mut took_next = false;
                for (j, ch) in flags.char_indices() {
                    let rest = &flags[j + ch.len_utf8()..];
                    if spec.no_script.contains(ch) {
                        return plain(Entry::None);
                    }
                    if spec.refuse.contains(ch) {
                        return Err(loads_code(spec.name, &format!("-{ch}")));
                    }
                    if spec.value.contains(ch) {
                        took_next = rest.is_empty();
                        break;
                    }
                    if spec.attached.contains(ch) {
                        break;
                    }
                    if !spec.flags.contains(ch) {
                        return Err(unknown(spec.name, &format!("-{ch}")));
                    }
                }
                i += if took_next { 2 } else { 1 };
            }
            script => return plain(file(script)),
        }
    }
    plain(Entry::None)
}

pub(super) fn perl(args: &[String]) -> Parsed {
    short_cluster(&PERL, args, |_| None)
}

pub(super) fn ruby(args: &[String]) -> Parsed {
    short_cluster(&RUBY, args, |l| {
        let (name, inline) = l.split_once('=').map_or((l, false), |(n, _)| (n, true));
        if name.starts_with("--enable-") || name.starts_with("--disable-") {
            return Some(Ok(1));
        }
        if name.starts_with("--yjit-") || name.starts_with("--rjit-") || name.starts_with("--jit-") {
            return Some(Ok(1));
        }
        let (_, separate) = RUBY_LONG.iter().find(|(n, _)| *n == name)?;
        Some(Ok(if *separate && !inline { 2 } else { 1 }))
    })
}
