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
//!
//! The option tables and parsers live in one child module per interpreter family (`python`, `js`,
//! `perl_ruby`, `shell`); the environment refusals in `env`.

mod env;
mod js;
mod perl_ruby;
mod python;
mod shell;

use env::env_refusal;
use js::{BUN_VALUE_OPTS, bun, deno, launcher_bin, node};
use perl_ruby::{perl, ruby};
use python::{python, uv};
use shell::shell;

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
    // An empty argv element in the script position names no file (it would resolve to the cwd).
    let empty = match &entry {
        Entry::File { path, .. } => path.is_empty(),
        Entry::Module(name) | Entry::Bin(name) => name.is_empty(),
        Entry::None => false,
    };
    if empty {
        return Err("the script argument is empty".to_owned());
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

fn looks_like_file(word: &str) -> bool {
    word.contains('/') || word.contains('.')
}

#[cfg(test)]
mod tests;
