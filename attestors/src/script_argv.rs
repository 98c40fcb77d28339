//! Which script an interpreter runs, from its executable name, argv and environment alone.
//!
//! Pure functions (no I/O), so they can be fuzzed ([`script_of_argv`]). The rules, per
//! interpreter, are in the `script` module docs. Two principles:
//! - **argv positions are kept**, empty ones included: `python3 -W '' evil.py legit.py` runs
//!   `evil.py` (the empty string is `-W`'s value), and dropping the empty element would shift
//!   every later argument by one;
//! - **fail closed**: an option this parser does not know (its arity, hence which later word is
//!   the script, is unknown), or an option or environment variable that makes the interpreter
//!   load other code first (`-r`, `-M`, `NODE_OPTIONS`, `PYTHONPATH`, `LD_PRELOAD`, ...) yields
//!   no script, with the reason.

/// Interpreter families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lang {
    Python,
    Node,
    Deno,
    Bun,
    Ruby,
    Perl,
    Shell,
    Zsh,
    Uv,
}

/// What the command line says the process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptEntry {
    /// No script file: `-c` code, stdin, a REPL, a package.json task...
    None,
    /// A file, relative to the cwd (or to `base`, itself relative to the cwd) unless absolute.
    File {
        /// As written on the command line.
        path: String,
        /// A directory the launcher changes to first (`uv --directory`, `bun --cwd`).
        base: Option<String>,
    },
    /// `python -m a.b`.
    Module(String),
    /// `npx NAME` / `bunx NAME`: `node_modules/.bin/NAME`.
    Bin(String),
}

use ScriptEntry as Entry;

/// What the interpreter options said besides the entry point.
#[derive(Debug, Default, Clone, Copy)]
struct Flags {
    /// python -E / -I: `PYTHON*` variables are ignored.
    ignore_env: bool,
    /// python -P / -I: the cwd is not put on `sys.path` (so `-m` is not found there).
    safe_path: bool,
    /// shell -x / -o xtrace: `PS4` is expanded (command substitution runs) for each command.
    xtrace: bool,
    /// zsh -f: no startup files.
    no_rcs: bool,
}

type Parsed = Result<(Entry, Flags), String>;

/// Fuzzing and test entry point: for an executable file name (`python3.11`, `node`), the
/// process's argv (empty elements kept) and its raw environ block (`NAME=VALUE\0...`), the
/// reported interpreter name and either the entry point or why none can be trusted. `None`:
/// not an interpreter.
#[doc(hidden)]
pub fn script_of_argv(exe_name: &str, argv: &[String], environ: &[u8]) -> Option<(String, Result<Entry, String>)> {
    let (lang, name) = interpreter_of(exe_name)?;
    Some((name, entry_of(lang, argv, environ)))
}

pub(crate) fn entry_of(lang: Lang, argv: &[String], environ: &[u8]) -> Result<Entry, String> {
    let (entry, flags) = parse_argv(lang, argv)?;
    if entry == Entry::None {
        return Ok(entry);
    }
    if let Some(why) = env_refusal(lang, &entry, flags, environ) {
        return Err(why);
    }
    Ok(entry)
}

/// Interpreter kind and reported name for an executable file name.
pub(crate) fn interpreter_of(exe: &str) -> Option<(Lang, String)> {
    // "python3.11" → "python3"; "ruby3.1" → "ruby"; "perl5.36.0" → "perl".
    fn versioned<'a>(exe: &'a str, stem: &str) -> Option<&'a str> {
        let rest = exe.strip_prefix(stem)?;
        (rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_digit())).then_some(rest)
    }
    if let Some(rest) = versioned(exe, "python") {
        let major: String = rest.chars().take_while(char::is_ascii_digit).take(1).collect();
        return Some((Lang::Python, format!("python{major}")));
    }
    if versioned(exe, "ruby").is_some() {
        return Some((Lang::Ruby, "ruby".into()));
    }
    if versioned(exe, "perl").is_some() {
        return Some((Lang::Perl, "perl".into()));
    }
    let lang = match exe {
        "node" | "nodejs" => return Some((Lang::Node, "node".into())),
        "deno" => Lang::Deno,
        "bun" => Lang::Bun,
        "bash" | "sh" | "dash" | "ksh" | "mksh" => Lang::Shell,
        "zsh" => Lang::Zsh,
        "uv" => Lang::Uv,
        _ => return None,
    };
    Some((lang, exe.to_owned()))
}

fn file(path: &str) -> Entry {
    Entry::File { path: path.to_owned(), base: None }
}

fn plain(entry: Entry) -> Parsed {
    Ok((entry, Flags::default()))
}

fn unknown(interpreter: &str, option: &str) -> String {
    format!(
        "{interpreter} option {option:?} is not known to the script attestor (its arity decides which argument is the script): no script selector"
    )
}

fn loads_code(interpreter: &str, option: &str) -> String {
    format!("{interpreter} option {option:?} loads other code before the script: no script selector")
}

fn parse_argv(lang: Lang, argv: &[String]) -> Parsed {
    let args = argv.get(1..).unwrap_or_default();
    let argv0 = argv.first().map(|a| a.rsplit('/').next().unwrap_or(a)).unwrap_or_default();
    match lang {
        Lang::Python => python(args),
        Lang::Node => node(args),
        Lang::Deno => deno(args).map(|e| (e, Flags::default())),
        Lang::Bun if argv0 == "bunx" => launcher_bin(args, BUN_VALUE_OPTS).map(|e| (e, Flags::default())),
        Lang::Bun => bun(args).map(|e| (e, Flags::default())),
        Lang::Ruby => ruby(args),
        Lang::Perl => perl(args),
        Lang::Shell | Lang::Zsh => shell(lang, args),
        Lang::Uv => uv(args),
    }
}

// ===================================================================== python

/// `-X` keys that make python load code from elsewhere (`presite` imports a module before
/// `site`; `pycache_prefix` reads bytecode from another tree).
const PYTHON_X_CODE: &[&str] = &["pycache_prefix", "presite"];

fn python(args: &[String]) -> Parsed {
    let mut fl = Flags::default();
    let mut i = 0;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            "--" => return Ok((args.get(i + 1).map_or(Entry::None, |s| file(s)), fl)),
            "-" => return Ok((Entry::None, fl)),
            "--check-hash-based-pycs" => i += 2,
            "--help" | "--version" | "--help-env" | "--help-xoptions" | "--help-all" => return Ok((Entry::None, fl)),
            long if long.starts_with("--") => return Err(unknown("python", long)),
            short if short.starts_with('-') => {
                // Clustered short flags, e.g. "-uB", "-Xdev", "-mpkg".
                let flags = &short[1..];
                let mut took_next = false;
                for (j, ch) in flags.char_indices() {
                    let rest = &flags[j + ch.len_utf8()..];
                    match ch {
                        'c' => return Ok((Entry::None, fl)),
                        'h' | '?' | 'V' => return Ok((Entry::None, fl)),
                        'm' => {
                            let module = if rest.is_empty() { args.get(i + 1).cloned() } else { Some(rest.to_owned()) };
                            return Ok((module.map_or(Entry::None, Entry::Module), fl));
                        }
                        'W' | 'X' => {
                            // The value is the rest of the cluster or the next argument, even
                            // an empty one.
                            let value = if rest.is_empty() {
                                took_next = true;
                                args.get(i + 1).map(String::as_str)
                            } else {
                                Some(rest)
                            };
                            let Some(value) = value else { return Ok((Entry::None, fl)) };
                            if ch == 'X' && PYTHON_X_CODE.contains(&value.split('=').next().unwrap_or_default()) {
                                return Err(loads_code("python", &format!("-X {value}")));
                            }
                            if ch == 'W' && warning_imports(value) {
                                return Err(loads_code("python", &format!("-W {value}")));
                            }
                            break;
                        }
                        'E' => fl.ignore_env = true,
                        'I' => {
                            fl.ignore_env = true;
                            fl.safe_path = true;
                        }
                        'P' => fl.safe_path = true,
                        'b' | 'B' | 'd' | 'i' | 'O' | 'q' | 's' | 'S' | 'u' | 'v' | 'x' | 'R' => {}
                        other => return Err(unknown("python", &format!("-{other}"))),
                    }
                }
                i += if took_next { 2 } else { 1 };
            }
            script => return Ok((file(script), fl)),
        }
    }
    Ok((Entry::None, fl))
}

/// A warnings filter `action:message:category:module:lineno` whose category is dotted makes
/// python import that module at startup.
fn warning_imports(filter: &str) -> bool {
    filter.split(':').nth(2).is_some_and(|c| c.contains('.'))
}

// ===================================================================== node

/// Options that run other code before the script (or load config that can).
const NODE_CODE_OPTS: &[&str] = &[
    "-r",
    "--require",
    "--import",
    "--loader",
    "--experimental-loader",
    "--env-file",
    "--env-file-if-exists",
    "--openssl-config",
    "--openssl-shared-config",
    "--snapshot-blob",
    "--build-snapshot",
    "--build-snapshot-config",
    "--experimental-config-file",
    "--experimental-default-config-file",
    "--experimental-sea-config",
];

/// Options that take a separate value (or `=value`).
const NODE_VALUE_OPTS: &[&str] = &[
    "-C",
    "--conditions",
    "--input-type",
    "--title",
    "--inspect-port",
    "--debug-port",
    "--redirect-warnings",
    "--icu-data-dir",
    "--diagnostic-dir",
    "--report-dir",
    "--report-directory",
    "--report-filename",
    "--report-signal",
    "--disable-warning",
    "--watch-path",
    "--dns-result-order",
    "--unhandled-rejections",
    "--max-http-header-size",
    "--stack-trace-limit",
    "--heapsnapshot-signal",
    "--heapsnapshot-near-heap-limit",
    "--secure-heap",
    "--secure-heap-min",
    "--tls-cipher-list",
    "--tls-keylog",
    "--trace-event-categories",
    "--trace-event-file-pattern",
    "--localstorage-file",
    "--experimental-default-type",
    "--cpu-prof-dir",
    "--cpu-prof-name",
    "--cpu-prof-interval",
    "--heap-prof-dir",
    "--heap-prof-name",
    "--heap-prof-interval",
    "--use-largepages",
    "--max-old-space-size",
    "--max-semi-space-size",
    "--stack-size",
    "--disable-proto",
    "--allow-fs-read",
    "--allow-fs-write",
];

/// Options without a value (some also accept `=value`).
const NODE_FLAGS: &[&str] = &[
    "--inspect",
    "--inspect-brk",
    "--inspect-wait",
    "--watch",
    "--watch-preserve-output",
    "--no-warnings",
    "--no-deprecation",
    "--trace-warnings",
    "--trace-deprecation",
    "--throw-deprecation",
    "--pending-deprecation",
    "--enable-source-maps",
    "--preserve-symlinks",
    "--preserve-symlinks-main",
    "--abort-on-uncaught-exception",
    "--expose-gc",
    "--trace-uncaught",
    "--trace-exit",
    "--trace-sigint",
    "--frozen-intrinsics",
    "--experimental-vm-modules",
    "--experimental-wasm-modules",
    "--experimental-strip-types",
    "--no-experimental-strip-types",
    "--experimental-transform-types",
    "--experimental-require-module",
    "--no-experimental-require-module",
    "--experimental-detect-module",
    "--no-experimental-detect-module",
    "--experimental-permission",
    "--permission",
    "--allow-child-process",
    "--allow-worker",
    "--allow-addons",
    "--allow-wasi",
    "--experimental-websocket",
    "--no-experimental-fetch",
    "--no-experimental-global-navigator",
    "--zero-fill-buffers",
    "--use-bundled-ca",
    "--use-openssl-ca",
    "--use-system-ca",
    "--report-on-fatalerror",
    "--report-uncaught-exception",
    "--report-on-signal",
    "--report-compact",
    "--cpu-prof",
    "--heap-prof",
    "--prof",
    "--insecure-http-parser",
    "--jitless",
    "--no-addons",
    "--no-global-search-paths",
    "--force-fips",
    "--enable-fips",
    "--tls-min-v1.0",
    "--tls-min-v1.1",
    "--tls-min-v1.2",
    "--tls-min-v1.3",
    "--tls-max-v1.2",
    "--tls-max-v1.3",
    "--experimental-sqlite",
    "--no-experimental-sqlite",
    "--experimental-shadow-realm",
    "--experimental-eventsource",
    "--experimental-print-required-tla",
    "--no-network-family-autoselection",
    "--trace-tls",
    "--trace-sync-io",
    "--verify-base-objects",
];

fn node(args: &[String]) -> Parsed {
    let mut i = 0;
    while let Some(a) = args.get(i) {
        let (name, inline_value) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v)),
            _ => (a.as_str(), None),
        };
        match name {
            "--" => return plain(args.get(i + 1).map_or(Entry::None, |s| file(s))),
            "-" | "-e" | "--eval" | "-p" | "--print" | "-pe" | "-i" | "--interactive" | "--run" | "--test" | "-c"
            | "--check" | "-v" | "--version" | "-h" | "--help" | "--v8-options" | "--completion-bash" => {
                return plain(Entry::None);
            }
            opt if NODE_CODE_OPTS.contains(&opt) => return Err(loads_code("node", opt)),
            opt if NODE_VALUE_OPTS.contains(&opt) => i += if inline_value.is_some() { 1 } else { 2 },
            opt if NODE_FLAGS.contains(&opt) => i += 1,
            opt if opt.starts_with('-') => return Err(unknown("node", opt)),
            script => {
                let base = script.rsplit('/').next().unwrap_or(script);
                // npx is a node script; its entry is the package's bin, if installed locally.
                if matches!(base, "npx" | "npx-cli.js") {
                    return launcher_bin(&args[i + 1..], &["-p", "--package", "-c", "--call"])
                        .map(|e| (e, Flags::default()));
                }
                return plain(file(script));
            }
        }
    }
    plain(Entry::None)
}

// ===================================================================== deno, bun, launchers

const DENO_VALUE_OPTS: &[&str] = &["--lock", "--cert", "--location", "--seed", "-L", "--log-level", "--ext"];
/// Import maps and config files remap what the script's imports load; preloads run first.
const DENO_CODE_OPTS: &[&str] = &["-c", "--config", "--import-map", "--preload", "--env-file", "--env"];

fn deno(args: &[String]) -> Result<Entry, String> {
    let mut i = 0;
    let mut subcommand_seen = false;
    while let Some(a) = args.get(i) {
        let name = a.split_once('=').map_or(a.as_str(), |(n, _)| n);
        match name {
            opt if DENO_CODE_OPTS.contains(&opt) => return Err(loads_code("deno", opt)),
            opt if DENO_VALUE_OPTS.contains(&opt) => i += if a.contains('=') { 1 } else { 2 },
            // deno's other options take their values with `=` only.
            opt if opt.starts_with('-') => i += 1,
            "run" | "serve" if !subcommand_seen => {
                subcommand_seen = true;
                i += 1;
            }
            // Any other subcommand (eval, repl, task, test, ...) runs no single script file.
            word if !subcommand_seen && !looks_like_file(word) => return Ok(Entry::None),
            script => return Ok(file(script)),
        }
    }
    Ok(Entry::None)
}

const BUN_VALUE_OPTS: &[&str] = &["--cwd", "--tsconfig-override", "--main-fields", "--conditions"];
/// `--preload` runs first; a bunfig (`--config`) can list preloads; env files can set them.
const BUN_CODE_OPTS: &[&str] = &["-r", "--preload", "-c", "--config", "--env-file"];

fn bun(args: &[String]) -> Result<Entry, String> {
    let mut i = 0;
    let mut base = None;
    let mut subcommand_seen = false;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            "--cwd" => {
                base = args.get(i + 1).cloned();
                i += 2;
            }
            opt if BUN_CODE_OPTS.contains(&opt.split_once('=').map_or(opt, |(n, _)| n)) => {
                return Err(loads_code("bun", opt));
            }
            opt if BUN_VALUE_OPTS.contains(&opt) => i += 2,
            opt if opt.starts_with('-') => i += 1,
            "x" if !subcommand_seen => return launcher_bin(&args[i + 1..], BUN_VALUE_OPTS),
            "run" if !subcommand_seen => {
                subcommand_seen = true;
                i += 1;
            }
            word if !subcommand_seen && !looks_like_file(word) => return Ok(Entry::None),
            script => return Ok(Entry::File { path: script.to_owned(), base }),
        }
    }
    Ok(Entry::None)
}

/// `npx NAME` / `bunx NAME`: the first positional names a package bin.
fn launcher_bin(args: &[String], value_opts: &[&str]) -> Result<Entry, String> {
    let mut i = 0;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            opt if BUN_CODE_OPTS.contains(&opt) => return Err(loads_code("bunx", opt)),
            opt if value_opts.contains(&opt) => i += 2,
            opt if opt.starts_with('-') => i += 1,
            name => {
                // "pkg@1.2" or "@scope/pkg": the bin is named after the package.
                let bare = name.rsplit('/').next().unwrap_or(name);
                let bare = bare.split('@').next().unwrap_or(bare);
                return Ok(if bare.is_empty() { Entry::None } else { Entry::Bin(bare.to_owned()) });
            }
        }
    }
    Ok(Entry::None)
}

fn looks_like_file(word: &str) -> bool {
    word.contains('/') || word.contains('.')
}

// ===================================================================== perl, ruby

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

fn perl(args: &[String]) -> Parsed {
    short_cluster(&PERL, args, |_| None)
}

fn ruby(args: &[String]) -> Parsed {
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

// ===================================================================== shells

fn shell(lang: Lang, args: &[String]) -> Parsed {
    let mut fl = Flags::default();
    let name = if lang == Lang::Zsh { "zsh" } else { "shell" };
    let mut i = 0;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            "--" | "-" => return Ok((args.get(i + 1).map_or(Entry::None, |s| file(s)), fl)),
            "--version" | "--help" | "--dump-strings" | "--dump-po-strings" => return Ok((Entry::None, fl)),
            // Startup files and debuggers run before the script.
            "--rcfile" | "--init-file" | "--login" | "--debugger" => return Err(loads_code(name, a)),
            "--norc" | "--noprofile" | "--posix" | "--noediting" | "--restricted" | "--verbose" | "--pretty-print" => {
                i += 1
            }
            long if long.starts_with("--") => return Err(unknown(name, long)),
            opt if opt.starts_with('-') || opt.starts_with('+') => {
                let on = opt.starts_with('-');
                let mut took_next = false;
                for ch in opt[1..].chars() {
                    match ch {
                        'c' | 's' | 'D' => return Ok((Entry::None, fl)), // command string, stdin, dump
                        // Interactive and login shells read startup files first.
                        'i' | 'l' => return Err(loads_code(name, &format!("-{ch}"))),
                        'o' | 'O' => {
                            // -o NAME / -O NAME (the next argument; a second one in the same
                            // cluster takes the one after).
                            let value = args.get(i + 1 + usize::from(took_next)).map(String::as_str);
                            if ch == 'o' && on && value == Some("xtrace") {
                                fl.xtrace = true;
                            }
                            if took_next {
                                return Err(unknown(name, opt));
                            }
                            took_next = true;
                        }
                        'x' if on => fl.xtrace = true,
                        'f' if on => fl.no_rcs = true,
                        'a' | 'b' | 'e' | 'f' | 'h' | 'k' | 'm' | 'n' | 'p' | 't' | 'u' | 'v' | 'x' | 'B' | 'C'
                        | 'E' | 'H' | 'P' | 'T' | 'r' | 'V' => {}
                        other => return Err(unknown(name, &format!("{}{other}", &opt[..1]))),
                    }
                }
                i += if took_next { 2 } else { 1 };
            }
            script => {
                if lang == Lang::Zsh && !fl.no_rcs {
                    return Err("zsh reads ~/.zshenv (or $ZDOTDIR/.zshenv) before any script, a file the \
                                workload's uid can write: no script selector (run it with `zsh -f` for one)"
                        .into());
                }
                return Ok((file(script), fl));
            }
        }
    }
    Ok((Entry::None, fl))
}

// ===================================================================== uv
const UV_VALUE_OPTS: &[&str] = &[
    "--with",
    "-w",
    "--with-editable",
    "--with-requirements",
    "-p",
    "--python",
    "--project",
    "--package",
    "--extra",
    "--group",
    "--only-group",
    "--no-group",
    "--env-file",
    "--index",
    "--default-index",
    "-i",
    "--index-url",
    "--extra-index-url",
    "-f",
    "--find-links",
    "--cache-dir",
    "--config-file",
    "--color",
    "--python-preference",
    "--index-strategy",
    "--keyring-provider",
    "--resolution",
    "--prerelease",
    "--exclude-newer",
    "--link-mode",
    "--refresh-package",
    "--reinstall-package",
    "--upgrade-package",
    "-P",
];

/// Extra packages can ship `.pth` files or `sitecustomize`, which python runs first.
const UV_CODE_OPTS: &[&str] = &["--with", "-w", "--with-editable", "--with-requirements", "--env-file"];

fn uv(args: &[String]) -> Parsed {
    let mut i = 0;
    let mut base = None;
    let mut in_run = false;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            "--directory" => {
                base = args.get(i + 1).cloned();
                i += 2;
            }
            "-m" | "--module" if in_run => {
                return plain(args.get(i + 1).map_or(Entry::None, |m| Entry::Module(m.clone())));
            }
            opt if UV_CODE_OPTS.contains(&opt.split_once('=').map_or(opt, |(n, _)| n)) => {
                return Err(loads_code("uv", opt));
            }
            opt if UV_VALUE_OPTS.contains(&opt) => i += 2,
            opt if opt.starts_with('-') => i += 1,
            "run" if !in_run => {
                in_run = true;
                i += 1;
            }
            _ if !in_run => return plain(Entry::None), // uv pip, uv sync, ...
            // `uv run python x.py`: the python flags rules apply from here.
            cmd if interpreter_of(cmd.rsplit('/').next().unwrap_or(cmd)).is_some_and(|(l, _)| l == Lang::Python) => {
                return match python(&args[i + 1..])? {
                    (Entry::File { path, .. }, fl) => Ok((Entry::File { path, base }, fl)),
                    other => Ok(other),
                };
            }
            script if looks_like_file(script) => {
                return plain(Entry::File { path: script.to_owned(), base });
            }
            _ => return plain(Entry::None), // `uv run pytest`: a console script, not a file we can find
        }
    }
    plain(Entry::None)
}

// ===================================================================== environment

/// Variables that make the dynamic loader run other code in any ELF process.
const LOADER_VARS: &[&str] = &["LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT"];

/// Variables that make each interpreter load other code first (or look modules up elsewhere).
fn code_vars(lang: Lang) -> &'static [&'static str] {
    match lang {
        Lang::Python | Lang::Uv => &[
            "PYTHONPATH",
            "PYTHONSTARTUP",
            "PYTHONHOME",
            "PYTHONINSPECT",
            "PYTHONUSERBASE",
            "PYTHONPYCACHEPREFIX",
            "PYTHONEXECUTABLE",
            "PYTHONPLATLIBDIR",
            "PYTHONBREAKPOINT",
            "PYTHONWARNINGS",
        ],
        Lang::Node => &["NODE_OPTIONS", "NODE_PATH", "NODE_REPL_EXTERNAL_MODULE", "OPENSSL_CONF"],
        Lang::Deno => &["DENO_OPTIONS"],
        Lang::Bun => &["BUN_OPTIONS", "BUN_CONFIG_PRELOAD"],
        Lang::Ruby => &["RUBYOPT", "RUBYLIB", "RUBYLIB_PREFIX", "GEM_HOME", "GEM_PATH"],
        Lang::Perl => &["PERL5OPT", "PERL5LIB", "PERLLIB", "PERL5DB", "PERLIO"],
        Lang::Shell => &["BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS"],
        Lang::Zsh => &["ZDOTDIR", "ENV", "SHELLOPTS"],
    }
}

/// Why the environment makes the script untrustworthy, if it does. Names only, never values
/// (the environment holds secrets).
fn env_refusal(lang: Lang, entry: &Entry, fl: Flags, environ: &[u8]) -> Option<String> {
    let python = matches!(lang, Lang::Python | Lang::Uv);
    for (name, value) in env_pairs(environ) {
        if value.is_empty() {
            continue;
        }
        let Ok(name) = std::str::from_utf8(name) else { continue };
        let refused = LOADER_VARS.contains(&name)
            || (code_vars(lang).contains(&name) && !(python && fl.ignore_env))
            || (matches!(lang, Lang::Shell | Lang::Zsh) && name.starts_with("BASH_FUNC_"))
            || (matches!(lang, Lang::Shell | Lang::Zsh) && fl.xtrace && name == "PS4")
            || (python && !fl.ignore_env && name == "PYTHONSAFEPATH" && matches!(entry, Entry::Module(_)));
        if refused {
            return Some(format!(
                "the environment sets {name}, which makes the interpreter run or find other code: no script selector"
            ));
        }
    }
    if python && fl.safe_path && matches!(entry, Entry::Module(_)) {
        return Some(
            "python -P/-I with -m does not search the cwd, where the module was looked up: no script selector".into(),
        );
    }
    None
}

/// `NAME=VALUE` pairs of an environ block (every occurrence of a repeated name).
fn env_pairs(raw: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    raw.split(|b| *b == 0).filter_map(|entry| {
        let eq = entry.iter().position(|b| *b == b'=')?;
        Some((&entry[..eq], &entry[eq + 1..]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<String> {
        // `''` stands for an empty argument.
        line.split(' ').map(|a| if a == "''" { String::new() } else { a.to_owned() }).collect()
    }

    fn e(lang: Lang, line: &str) -> Entry {
        entry_of(lang, &argv(line), b"").unwrap_or_else(|why| panic!("{line}: {why}"))
    }

    /// The reason a command line (with `env`, `NAME=VALUE` separated by spaces) is refused.
    fn refused(lang: Lang, line: &str, env: &str) -> String {
        let environ: Vec<u8> =
            env.split(' ').filter(|s| !s.is_empty()).flat_map(|s| [s.as_bytes(), b"\0"].concat()).collect();
        match entry_of(lang, &argv(line), &environ) {
            Err(why) => why,
            Ok(entry) => panic!("{line} with {env:?} was trusted: {entry:?}"),
        }
    }

    fn f(p: &str) -> Entry {
        file(p)
    }

    #[test]
    fn interpreter_names() {
        let name = |x: &str| interpreter_of(x).map(|(_, n)| n);
        assert_eq!(name("python3.11").as_deref(), Some("python3"));
        assert_eq!(name("python3").as_deref(), Some("python3"));
        assert_eq!(name("python").as_deref(), Some("python"));
        assert_eq!(name("python2.7").as_deref(), Some("python2"));
        assert_eq!(name("ruby3.1").as_deref(), Some("ruby"));
        assert_eq!(name("perl5.36.0").as_deref(), Some("perl"));
        assert_eq!(name("nodejs").as_deref(), Some("node"));
        assert_eq!(name("dash").as_deref(), Some("dash"));
        assert_eq!(name("zsh").as_deref(), Some("zsh"));
        assert_eq!(name("pythonista"), None);
        assert_eq!(name("sleep"), None);
    }

    #[test]
    fn python_forms() {
        assert_eq!(e(Lang::Python, "python3 agent.py --port 3"), f("agent.py"));
        assert_eq!(e(Lang::Python, "python3 -u -X dev agent.py"), f("agent.py"));
        assert_eq!(e(Lang::Python, "python3 -Xdev -W error -OO a.py"), f("a.py"));
        assert_eq!(e(Lang::Python, "python3 -m agent x"), Entry::Module("agent".into()));
        assert_eq!(e(Lang::Python, "python3 -um pkg.sub"), Entry::Module("pkg.sub".into()));
        assert_eq!(e(Lang::Python, "python3 -mpkg"), Entry::Module("pkg".into()));
        assert_eq!(e(Lang::Python, "python3 -c print(1) x.py"), Entry::None);
        assert_eq!(e(Lang::Python, "python3 -"), Entry::None);
        assert_eq!(e(Lang::Python, "python3"), Entry::None);
        assert_eq!(e(Lang::Python, "python3 -- -odd.py"), f("-odd.py"));
        assert_eq!(e(Lang::Python, "python3 -E -s -I a.py"), f("a.py"));
    }

    #[test]
    fn empty_arguments_are_values_not_gaps() {
        // The issue's spoofs: the empty string is the option's value, so evil.* is the script.
        assert_eq!(e(Lang::Python, "python3 -W '' evil.py legit.py"), f("evil.py"));
        assert_eq!(e(Lang::Python, "python3 -X '' evil.py legit.py"), f("evil.py"));
        assert_eq!(e(Lang::Node, "node --title '' evil.js legit.js"), f("evil.js"));
        assert_eq!(e(Lang::Node, "node --title= evil.js legit.js"), f("evil.js"));
        assert_eq!(e(Lang::Shell, "bash -o '' evil.sh legit.sh"), f("evil.sh"));
        assert_eq!(e(Lang::Ruby, "ruby -E '' evil.rb legit.rb"), f("evil.rb"));
        // An empty script name is a script name (that will not resolve), not a gap.
        assert_eq!(e(Lang::Python, "python3 '' legit.py"), f(""));
    }

    #[test]
    fn options_that_load_code_first_yield_no_script() {
        for (lang, line) in [
            (Lang::Python, "python3 -X pycache_prefix=/tmp/x legit.py"),
            (Lang::Python, "python3 -Xpresite=evil legit.py"),
            (Lang::Python, "python3 -W ignore::evil.Warn legit.py"),
            (Lang::Node, "node -r ./evil.js legit.js"),
            (Lang::Node, "node --require=./evil.js legit.js"),
            (Lang::Node, "node --import ./evil.mjs legit.js"),
            (Lang::Node, "node --loader ./evil.mjs legit.js"),
            (Lang::Node, "node --env-file .env legit.js"),
            (Lang::Node, "node --experimental-config-file c.json legit.js"),
            (Lang::Perl, "perl -S legit.pl"),
            (Lang::Perl, "perl -Mevil legit.pl"),
            (Lang::Perl, "perl -w -Ilib -M strict s.pl"),
            (Lang::Perl, "perl -d:Evil legit.pl"),
            (Lang::Ruby, "ruby -S legit.rb"),
            (Lang::Ruby, "ruby -revil legit.rb"),
            (Lang::Ruby, "ruby -w -I lib -rjson app.rb"),
            (Lang::Ruby, "ruby -C /tmp legit.rb"),
            (Lang::Shell, "bash -i legit.sh"),
            (Lang::Shell, "bash --login legit.sh"),
            (Lang::Shell, "bash --rcfile evil legit.sh"),
            (Lang::Zsh, "zsh legit.sh"),
            (Lang::Deno, "deno run --import-map evil.json main.ts"),
            (Lang::Deno, "deno run --config=deno.json main.ts"),
            (Lang::Bun, "bun --preload ./evil.ts index.ts"),
            (Lang::Uv, "uv run --with evil agent.py"),
        ] {
            let why = refused(lang, line, "");
            assert!(why.contains("no script selector"), "{line}: {why}");
        }
    }

    #[test]
    fn unknown_options_fail_closed() {
        // Their arity decides which word is the script: `--new-opt legit.js evil.js`.
        for (lang, line) in [
            (Lang::Python, "python3 --new-opt legit.py evil.py"),
            (Lang::Python, "python3 -Z legit.py"),
            (Lang::Node, "node --new-opt legit.js evil.js"),
            (Lang::Perl, "perl -q legit.pl"),
            (Lang::Ruby, "ruby --new-opt legit.rb evil.rb"),
            (Lang::Shell, "bash --new-opt legit.sh"),
            (Lang::Shell, "sh -Q legit.sh"),
        ] {
            let why = refused(lang, line, "");
            assert!(why.contains("not known"), "{line}: {why}");
        }
    }

    #[test]
    fn python_safe_path_with_dash_m_is_refused() {
        assert!(refused(Lang::Python, "python3 -P -m agent", "").contains("-P/-I"));
        assert!(refused(Lang::Python, "python3 -I -m agent", "").contains("-P/-I"));
        assert!(refused(Lang::Python, "python3 -m agent", "PYTHONSAFEPATH=1").contains("PYTHONSAFEPATH"));
        // A file script is unaffected by the safe path.
        assert_eq!(entry_of(Lang::Python, &argv("python3 -P a.py"), b"PYTHONSAFEPATH=1\0"), Ok(f("a.py")));
    }

    #[test]
    fn preload_variables_yield_no_script() {
        for (lang, line, env) in [
            (Lang::Node, "node legit.js", "NODE_OPTIONS=--require=/tmp/evil.js"),
            (Lang::Node, "node legit.js", "NODE_PATH=/tmp/evil"),
            (Lang::Python, "python3 legit.py", "PYTHONPATH=/tmp/evil"),
            (Lang::Python, "python3 legit.py", "PYTHONSTARTUP=/tmp/evil.py"),
            (Lang::Python, "python3 legit.py", "PYTHONINSPECT=1"),
            (Lang::Python, "python3 legit.py", "PYTHONHOME=/tmp/evil"),
            (Lang::Python, "python3 legit.py", "PYTHONUSERBASE=/tmp/evil"),
            (Lang::Python, "python3 legit.py", "PYTHONWARNINGS=ignore::evil.W"),
            (Lang::Uv, "uv run legit.py", "PYTHONPATH=/tmp/evil"),
            (Lang::Perl, "perl legit.pl", "PERL5OPT=-Mevil"),
            (Lang::Perl, "perl legit.pl", "PERL5LIB=/tmp/evil"),
            (Lang::Ruby, "ruby legit.rb", "RUBYOPT=-revil"),
            (Lang::Ruby, "ruby legit.rb", "RUBYLIB=/tmp/evil"),
            (Lang::Shell, "bash legit.sh", "BASH_ENV=/tmp/evil.sh"),
            (Lang::Shell, "sh legit.sh", "ENV=/tmp/evil.sh"),
            (Lang::Shell, "bash legit.sh", "BASH_FUNC_ls%%=()_{_evil;_}"),
            (Lang::Shell, "bash legit.sh", "SHELLOPTS=xtrace"),
            (Lang::Shell, "bash -x legit.sh", "PS4=$(evil)"),
            (Lang::Bun, "bun index.ts", "BUN_OPTIONS=--preload=evil.ts"),
            // The dynamic loader, for every interpreter.
            (Lang::Python, "python3 legit.py", "LD_PRELOAD=/tmp/evil.so"),
            (Lang::Node, "node legit.js", "LD_LIBRARY_PATH=/tmp/evil"),
            (Lang::Shell, "bash legit.sh", "LD_AUDIT=/tmp/evil.so"),
        ] {
            let why = refused(lang, line, env);
            let name = env.split('=').next().unwrap();
            assert!(why.contains(name), "{line} {env}: {why}");
            assert!(!why.contains(env.split_once('=').unwrap().1), "values are never quoted: {why}");
        }
    }

    #[test]
    fn harmless_environments_and_flags_keep_the_script() {
        let env = b"PATH=/usr/bin\0HOME=/root\0LD_PRELOAD=\0PS4=+ \0NODE_ENV=production\0";
        assert_eq!(entry_of(Lang::Node, &argv("node legit.js"), env), Ok(f("legit.js")));
        assert_eq!(entry_of(Lang::Shell, &argv("bash legit.sh"), env), Ok(f("legit.sh")));
        // -E / -I: python ignores PYTHON* variables (but not the loader's).
        assert_eq!(entry_of(Lang::Python, &argv("python3 -E legit.py"), b"PYTHONPATH=/x\0"), Ok(f("legit.py")));
        assert!(entry_of(Lang::Python, &argv("python3 -I legit.py"), b"LD_PRELOAD=/x.so\0").is_err());
        // No script at all: nothing to refuse.
        assert_eq!(entry_of(Lang::Node, &argv("node -e 1"), b"NODE_OPTIONS=-r x\0"), Ok(Entry::None));
        assert_eq!(e(Lang::Zsh, "zsh -f legit.sh"), f("legit.sh"));
    }

    #[test]
    fn node_deno_bun_forms() {
        assert_eq!(e(Lang::Node, "node --inspect x.js"), f("x.js"));
        assert_eq!(e(Lang::Node, "node --max-old-space-size=99 --title t app.mjs"), f("app.mjs"));
        assert_eq!(e(Lang::Node, "node -e 1"), Entry::None);
        assert_eq!(e(Lang::Node, "node /usr/bin/npx cowsay hi"), Entry::Bin("cowsay".into()));
        assert_eq!(e(Lang::Node, "node /usr/bin/npx @scope/tool@2"), Entry::Bin("tool".into()));
        assert_eq!(e(Lang::Deno, "deno run --allow-net --lock deno.lock main.ts"), f("main.ts"));
        assert_eq!(e(Lang::Deno, "deno main.ts"), f("main.ts"));
        assert_eq!(e(Lang::Deno, "deno task dev"), Entry::None);
        assert_eq!(e(Lang::Bun, "bun run index.ts"), f("index.ts"));
        assert_eq!(
            e(Lang::Bun, "bun --cwd sub index.ts"),
            Entry::File { path: "index.ts".into(), base: Some("sub".into()) }
        );
        assert_eq!(e(Lang::Bun, "bun install"), Entry::None);
        assert_eq!(e(Lang::Bun, "bun x tool"), Entry::Bin("tool".into()));
        assert_eq!(e(Lang::Bun, "/usr/local/bin/bunx tool"), Entry::Bin("tool".into()));
    }

    #[test]
    fn ruby_perl_shell_uv_forms() {
        assert_eq!(e(Lang::Ruby, "ruby -w --disable-gems -Eutf-8 app.rb"), f("app.rb"));
        assert_eq!(e(Lang::Ruby, "ruby --enable frozen-string-literal app.rb"), f("app.rb"));
        assert_eq!(e(Lang::Ruby, "ruby -e 1"), Entry::None);
        assert_eq!(e(Lang::Perl, "perl -w -T -l s.pl"), f("s.pl"));
        assert_eq!(e(Lang::Perl, "perl -ne print"), Entry::None);
        assert_eq!(e(Lang::Shell, "bash -e -o pipefail run.sh a"), f("run.sh"));
        assert_eq!(e(Lang::Shell, "bash -eo pipefail run.sh a"), f("run.sh"));
        assert_eq!(e(Lang::Shell, "sh -c echo"), Entry::None);
        assert_eq!(e(Lang::Shell, "-bash"), Entry::None);
        assert_eq!(e(Lang::Uv, "uv run --python 3.12 agent.py"), f("agent.py"));
        assert_eq!(
            e(Lang::Uv, "uv --directory /opt/a run main.py"),
            Entry::File { path: "main.py".into(), base: Some("/opt/a".into()) }
        );
        assert_eq!(e(Lang::Uv, "uv run python -u x.py"), f("x.py"));
        assert_eq!(e(Lang::Uv, "uv run -m agent"), Entry::Module("agent".into()));
        assert_eq!(e(Lang::Uv, "uv run pytest"), Entry::None);
        assert_eq!(e(Lang::Uv, "uv sync"), Entry::None);
    }

    #[test]
    fn fuzz_entry_point_never_panics_on_odd_input() {
        for line in ["-", "--", "-X", "-W", "-m", "-o", "--title", "-\u{e9}\u{301}x", "--=", "-=", ""] {
            for exe in ["python3", "node", "perl", "ruby", "bash", "zsh", "deno", "bun", "uv", "sleep"] {
                let argv = vec![exe.to_owned(), line.to_owned()];
                let _ = script_of_argv(exe, &argv, b"\0=\0A\0==\0\xff=\xff\0");
            }
        }
        assert_eq!(script_of_argv("sleep", &argv("sleep 1"), b""), None);
        assert_eq!(
            script_of_argv("python3.12", &argv("python3 a.py"), b"").map(|(n, _)| n).as_deref(),
            Some("python3")
        );
    }
}
