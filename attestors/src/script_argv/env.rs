//! Environment refusal: variables that make an interpreter (or the loader) run other code before the script.

use super::{Entry, Flags, Lang};

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
pub(super) fn env_refusal(lang: Lang, entry: &Entry, fl: Flags, environ: &[u8]) -> Option<String> {
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
