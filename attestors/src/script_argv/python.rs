//! python and uv: which script or module `python …` / `uv run …` runs, and the options that load other code first.

use super::{Entry, Flags, Lang, Parsed, file, interpreter_of, loads_code, looks_like_file, plain, unknown};

/// `-X` keys that make python load code from elsewhere (`presite` imports a module before
/// `site`; `pycache_prefix` reads bytecode from another tree).
const PYTHON_X_CODE: &[&str] = &["pycache_prefix", "presite"];

pub(super) fn python(args: &[String]) -> Parsed {
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

pub(super) fn uv(args: &[String]) -> Parsed {
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
