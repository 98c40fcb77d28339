//! `script` attestor: which script an interpreter runs.
//!
//! The interpreter is recognised from the **mapped executable's** file name (not argv[0], which
//! the caller chooses), with the version dropped after the major number: `python3.11` →
//! `python3`, `ruby3.1` → `ruby`, `nodejs` → `node`. `sh` on Debian is `dash`, and reported so.
//!
//! The script is found by skipping the interpreter's own flags on the command line
//! (`python3 -u -X dev agent.py`, `node --inspect -r x app.js`, `bash -e run.sh`), or for
//! `python -m pkg.mod` by looking for `pkg/mod.py`, then `pkg/mod/__main__.py` in the process's
//! cwd (the first `sys.path` entry for `-m`; `PYTHONPATH` and site-packages are not searched).
//! Launchers: `uv run [--directory D] script.py`, `deno run|serve file`, `bun [run] file`, and
//! `npx NAME` / `bunx NAME` / `bun x NAME` when `node_modules/.bin/NAME` exists under the cwd.
//! `-c`/`-e` code, stdin and REPLs have no script: only `script:interpreter` is emitted.
//!
//! Relative paths resolve against `/proc/PID/cwd`; the file is opened inside `/proc/PID/root`
//! with `RESOLVE_IN_ROOT` (symlinks resolve as the process sees them, clamped at its root).
//! `script:path` is the path as named (made absolute, `.` components removed), not the
//! symlink-resolved one. All script selectors are **weak**: argv is writable process memory.

use crate::in_root::{Resolve, open_in_root};
use crate::{Ctx, Found, Kind, Selector};
use std::path::{Component, Path, PathBuf};

const KIND: Kind = Kind::Script;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    Python,
    Node,
    Deno,
    Bun,
    Ruby,
    Perl,
    Shell,
    Uv,
}

/// What the command line says the process runs.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    /// No script file: `-c` code, stdin, a REPL, a package.json task...
    None,
    /// A file, relative to the cwd (or to `base`, itself relative to the cwd) unless absolute.
    File { path: String, base: Option<String> },
    /// `python -m a.b`.
    Module(String),
    /// `npx NAME` / `bunx NAME`: `node_modules/.bin/NAME`.
    Bin(String),
}

pub(crate) fn attest(ctx: &Ctx<'_>) -> Found {
    let mut found = Found::new(KIND.as_str());
    let p = ctx.process;
    let exe = match p.exe_link() {
        Ok(l) => l,
        Err(e) => {
            found.fail(format!("exe: {e}"));
            return found;
        }
    };
    let exe_name =
        exe.file_name().map(|n| n.to_string_lossy().trim_end_matches(" (deleted)").to_owned()).unwrap_or_default();
    let Some((lang, name)) = interpreter_of(&exe_name) else {
        return found; // not an interpreter: nothing to say, and nothing went wrong
    };
    found.push(Selector::keyed(KIND, "interpreter", &name));
    let argv = match p.cmdline() {
        Ok(a) => a,
        Err(e) => {
            found.fail(format!("cmdline: {e}"));
            return found;
        }
    };
    let entry = entry_of(lang, &argv);
    if entry == Entry::None {
        return found;
    }
    let resolved = (|| {
        let root = p.root_dir()?;
        let cwd = p.cwd_in_root()?;
        for candidate in candidates(&entry, &cwd) {
            match open_in_root(&root, &candidate, Resolve::InRoot) {
                Ok(file) => return Ok((candidate, file)),
                Err(e) if matches!(entry, Entry::File { .. }) => return Err(e),
                Err(_) => continue,
            }
        }
        Err(format!("entry point {entry:?} not found under {}", cwd.display()))
    })();
    match resolved {
        Ok((path, mut file)) => {
            // The digest is of the bytes the interpreter can read; the path is only what that
            // namespace chose to mount there.
            match p.untrusted_root() {
                Some(why) => found.fail(format!("script:path withheld: {why}")),
                None => found.push(Selector::keyed(KIND, "path", path.display())),
            }
            found.watched.push(p.host_path(&path));
            if ctx.config.want_script_digest {
                match ctx.digest(&mut file, crate::HashOf::ScriptOrConfig) {
                    Ok(hex) => found.push(Selector::keyed(KIND, "sha256", hex)),
                    Err(e) => found.fail(format!("{}: {e}", path.display())),
                }
            }
        }
        Err(e) => found.fail(e),
    }
    found
}

/// Absolute in-root paths to try, in order.
fn candidates(entry: &Entry, cwd: &Path) -> Vec<PathBuf> {
    match entry {
        Entry::None => vec![],
        Entry::File { path, base } => {
            let base = base.as_ref().map_or_else(|| cwd.to_path_buf(), |b| cwd.join(b));
            vec![clean(&base.join(path))]
        }
        Entry::Module(m) => {
            let rel: PathBuf = m.split('.').collect();
            vec![clean(&cwd.join(&rel).with_extension("py")), clean(&cwd.join(&rel).join("__main__.py"))]
        }
        Entry::Bin(name) => vec![clean(&cwd.join("node_modules/.bin").join(name))],
    }
}

/// Drops `.` components and repeated slashes; keeps `..` (its meaning depends on symlinks).
fn clean(p: &Path) -> PathBuf {
    p.components().filter(|c| !matches!(c, Component::CurDir)).collect()
}

/// Interpreter kind and reported name for an executable file name.
fn interpreter_of(exe: &str) -> Option<(Lang, String)> {
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
        "bash" | "sh" | "dash" | "zsh" | "ksh" | "mksh" => Lang::Shell,
        "uv" => Lang::Uv,
        _ => return None,
    };
    Some((lang, exe.to_owned()))
}

fn file(path: &str) -> Entry {
    Entry::File { path: path.to_owned(), base: None }
}

fn entry_of(lang: Lang, argv: &[String]) -> Entry {
    let args = argv.get(1..).unwrap_or_default();
    let argv0 = argv.first().map(|a| a.rsplit('/').next().unwrap_or(a)).unwrap_or_default();
    match lang {
        Lang::Python => python(args),
        Lang::Node => node(args),
        Lang::Deno => deno(args),
        Lang::Bun if argv0 == "bunx" => launcher_bin(args, BUN_VALUE_OPTS),
        Lang::Bun => bun(args),
        Lang::Ruby => short_opts(args, "e", "IrCE", "0FilTWxKUdX"),
        Lang::Perl => short_opts(args, "eE", "IMm", "0xilCDdV"),
        Lang::Shell => shell(args),
        Lang::Uv => uv(args),
    }
}

fn python(args: &[String]) -> Entry {
    let mut i = 0;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            "--" => return args.get(i + 1).map_or(Entry::None, |s| file(s)),
            "-" => return Entry::None,
            "--check-hash-based-pycs" => i += 2,
            long if long.starts_with("--") => i += 1,
            short if short.starts_with('-') => {
                // Clustered short flags, e.g. "-uB", "-Xdev", "-mpkg".
                let flags = &short[1..];
                let mut skip_next = false;
                for (j, ch) in flags.char_indices() {
                    let rest = &flags[j + ch.len_utf8()..];
                    match ch {
                        'c' => return Entry::None,
                        'm' => {
                            let module = if rest.is_empty() { args.get(i + 1).cloned() } else { Some(rest.to_owned()) };
                            return module.map_or(Entry::None, Entry::Module);
                        }
                        'W' | 'X' => {
                            skip_next = rest.is_empty();
                            break;
                        }
                        _ => {}
                    }
                }
                i += if skip_next { 2 } else { 1 };
            }
            script => return file(script),
        }
    }
    Entry::None
}

const NODE_VALUE_OPTS: &[&str] = &[
    "-r",
    "--require",
    "--import",
    "--loader",
    "--experimental-loader",
    "-C",
    "--conditions",
    "--input-type",
    "--title",
    "--env-file",
    "--env-file-if-exists",
    "--inspect-port",
    "--debug-port",
    "--openssl-config",
    "--redirect-warnings",
    "--icu-data-dir",
    "--diagnostic-dir",
    "--report-dir",
    "--report-filename",
    "--disable-warning",
    "--watch-path",
    "--dns-result-order",
    "--unhandled-rejections",
    "--max-http-header-size",
    "--stack-trace-limit",
    "--experimental-config-file",
];

fn node(args: &[String]) -> Entry {
    let mut i = 0;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            "--" => return args.get(i + 1).map_or(Entry::None, |s| file(s)),
            "-" | "-e" | "--eval" | "-p" | "--print" | "-pe" | "-i" | "--interactive" | "--run" | "--test" => {
                return Entry::None;
            }
            opt if NODE_VALUE_OPTS.contains(&opt) => i += 2,
            opt if opt.starts_with('-') => i += 1,
            script => {
                let name = script.rsplit('/').next().unwrap_or(script);
                // npx is a node script; its entry is the package's bin, if installed locally.
                if matches!(name, "npx" | "npx-cli.js") {
                    return launcher_bin(&args[i + 1..], &["-p", "--package", "-c", "--call"]);
                }
                return file(script);
            }
        }
    }
    Entry::None
}

const DENO_VALUE_OPTS: &[&str] =
    &["-c", "--config", "--import-map", "--lock", "--cert", "--location", "--seed", "-L", "--log-level", "--ext"];

fn deno(args: &[String]) -> Entry {
    let mut i = 0;
    let mut subcommand_seen = false;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            opt if DENO_VALUE_OPTS.contains(&opt) => i += 2,
            opt if opt.starts_with('-') => i += 1,
            "run" | "serve" if !subcommand_seen => {
                subcommand_seen = true;
                i += 1;
            }
            // Any other subcommand (eval, repl, task, test, ...) runs no single script file.
            word if !subcommand_seen && !looks_like_file(word) => return Entry::None,
            script => return file(script),
        }
    }
    Entry::None
}

const BUN_VALUE_OPTS: &[&str] = &[
    "--cwd",
    "-r",
    "--preload",
    "-c",
    "--config",
    "--env-file",
    "--tsconfig-override",
    "--main-fields",
    "--conditions",
];

fn bun(args: &[String]) -> Entry {
    let mut i = 0;
    let mut base = None;
    let mut subcommand_seen = false;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            "--cwd" => {
                base = args.get(i + 1).cloned();
                i += 2;
            }
            opt if BUN_VALUE_OPTS.contains(&opt) => i += 2,
            opt if opt.starts_with('-') => i += 1,
            "x" if !subcommand_seen => return launcher_bin(&args[i + 1..], BUN_VALUE_OPTS),
            "run" if !subcommand_seen => {
                subcommand_seen = true;
                i += 1;
            }
            word if !subcommand_seen && !looks_like_file(word) => return Entry::None,
            script => {
                return Entry::File { path: script.to_owned(), base };
            }
        }
    }
    Entry::None
}

/// `npx NAME` / `bunx NAME`: the first positional names a package bin.
fn launcher_bin(args: &[String], value_opts: &[&str]) -> Entry {
    let mut i = 0;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            opt if value_opts.contains(&opt) => i += 2,
            opt if opt.starts_with('-') => i += 1,
            name => {
                // "pkg@1.2" or "@scope/pkg": the bin is named after the package.
                let bare = name.rsplit('/').next().unwrap_or(name);
                let bare = bare.split('@').next().unwrap_or(bare);
                return if bare.is_empty() { Entry::None } else { Entry::Bin(bare.to_owned()) };
            }
        }
    }
    Entry::None
}

fn looks_like_file(word: &str) -> bool {
    word.contains('/') || word.contains('.')
}

/// Perl/ruby-style short options: `eval` flags mean no script, `with_value` flags take the
/// rest of the cluster or the next argument, `attached` flags take the rest of the cluster.
fn short_opts(args: &[String], eval: &str, with_value: &str, attached: &str) -> Entry {
    let mut i = 0;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            "--" => return args.get(i + 1).map_or(Entry::None, |s| file(s)),
            "-" => return Entry::None,
            "--encoding" | "--external-encoding" | "--internal-encoding" | "--enable" | "--disable" | "--dump" => {
                i += 2
            }
            long if long.starts_with("--") => i += 1,
            short if short.starts_with('-') => {
                let flags = &short[1..];
                let mut skip_next = false;
                for (j, ch) in flags.char_indices() {
                    let rest = &flags[j + ch.len_utf8()..];
                    if eval.contains(ch) {
                        return Entry::None;
                    }
                    if with_value.contains(ch) {
                        skip_next = rest.is_empty();
                        break;
                    }
                    if attached.contains(ch) {
                        break;
                    }
                }
                i += if skip_next { 2 } else { 1 };
            }
            script => return file(script),
        }
    }
    Entry::None
}

fn shell(args: &[String]) -> Entry {
    let mut i = 0;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            "--" | "-" => return args.get(i + 1).map_or(Entry::None, |s| file(s)),
            "--rcfile" | "--init-file" => i += 2,
            long if long.starts_with("--") => i += 1,
            opt if opt.starts_with('-') || opt.starts_with('+') => {
                let flags = &opt[1..];
                if flags.contains('c') || flags.contains('s') {
                    return Entry::None; // -c command string, or -s script from stdin
                }
                // -o NAME / -O NAME take a value.
                i += if flags.contains('o') || flags.contains('O') { 2 } else { 1 };
            }
            script => return file(script),
        }
    }
    Entry::None
}

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

fn uv(args: &[String]) -> Entry {
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
                return args.get(i + 1).map_or(Entry::None, |m| Entry::Module(m.clone()));
            }
            opt if UV_VALUE_OPTS.contains(&opt) => i += 2,
            opt if opt.starts_with('-') => i += 1,
            "run" if !in_run => {
                in_run = true;
                i += 1;
            }
            _ if !in_run => return Entry::None, // uv pip, uv sync, ...
            // `uv run python x.py`: the python flags rules apply from here.
            cmd if interpreter_of(cmd.rsplit('/').next().unwrap_or(cmd)).is_some_and(|(l, _)| l == Lang::Python) => {
                return match python(&args[i + 1..]) {
                    Entry::File { path, .. } => Entry::File { path, base },
                    other => other,
                };
            }
            script if looks_like_file(script) => {
                return Entry::File { path: script.to_owned(), base };
            }
            _ => return Entry::None, // `uv run pytest`: a console script, not a file we can find
        }
    }
    Entry::None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(lang: Lang, line: &str) -> Entry {
        let argv: Vec<String> = line.split(' ').map(str::to_owned).collect();
        entry_of(lang, &argv)
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
    }

    #[test]
    fn node_deno_bun_forms() {
        assert_eq!(e(Lang::Node, "node --inspect x.js"), f("x.js"));
        assert_eq!(e(Lang::Node, "node -r dotenv/config --max-old-space-size=99 app.mjs"), f("app.mjs"));
        assert_eq!(e(Lang::Node, "node -e 1"), Entry::None);
        assert_eq!(e(Lang::Node, "node /usr/bin/npx cowsay hi"), Entry::Bin("cowsay".into()));
        assert_eq!(e(Lang::Node, "node /usr/bin/npx @scope/tool@2"), Entry::Bin("tool".into()));
        assert_eq!(e(Lang::Deno, "deno run --allow-net -c deno.json main.ts"), f("main.ts"));
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
        assert_eq!(e(Lang::Ruby, "ruby -w -I lib -rjson app.rb"), f("app.rb"));
        assert_eq!(e(Lang::Ruby, "ruby -e 1"), Entry::None);
        assert_eq!(e(Lang::Perl, "perl -w -Ilib -M strict s.pl"), f("s.pl"));
        assert_eq!(e(Lang::Perl, "perl -ne print"), Entry::None);
        assert_eq!(e(Lang::Shell, "bash -e -o pipefail run.sh a"), f("run.sh"));
        assert_eq!(e(Lang::Shell, "sh -c echo"), Entry::None);
        assert_eq!(e(Lang::Shell, "-bash"), Entry::None);
        assert_eq!(e(Lang::Uv, "uv run --with requests agent.py"), f("agent.py"));
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
    fn candidate_paths() {
        let cwd = Path::new("/srv/app");
        assert_eq!(candidates(&f("./a/./b.py"), cwd), vec![PathBuf::from("/srv/app/a/b.py")]);
        assert_eq!(candidates(&f("/opt/x.py"), cwd), vec![PathBuf::from("/opt/x.py")]);
        assert_eq!(
            candidates(&Entry::Module("pkg.mod".into()), cwd),
            vec![PathBuf::from("/srv/app/pkg/mod.py"), PathBuf::from("/srv/app/pkg/mod/__main__.py")]
        );
        assert_eq!(candidates(&Entry::Bin("tool".into()), cwd), vec![PathBuf::from("/srv/app/node_modules/.bin/tool")]);
    }
}
