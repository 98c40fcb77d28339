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
//! **No script selector (fail closed, the reason in the report)** when the command line or the
//! environment can make the interpreter run other code first or look the script up elsewhere:
//! an option the parser does not know (its arity decides which word is the script), `-r`/
//! `--require`/`--import`/`--loader`/`--env-file` (node), `-M`/`-m`/`-I`/`-d`/`-S` (perl),
//! `-r`/`-I`/`-C`/`-S` (ruby), `-X pycache_prefix|presite` and dotted `-W` categories (python),
//! `-P`/`-I`/`PYTHONSAFEPATH` with `-m`, `-i`/`-l`/`--login`/`--rcfile` (shells), zsh without
//! `-f`, preloads and config files of deno/bun/uv; and the variables `LD_PRELOAD`,
//! `LD_LIBRARY_PATH`, `LD_AUDIT` (any interpreter), `NODE_OPTIONS`, `NODE_PATH`, `PYTHONPATH`,
//! `PYTHONSTARTUP`, `PYTHONHOME`, `PYTHONINSPECT`, `PYTHONUSERBASE`, `PYTHONWARNINGS`, ...,
//! `PERL5OPT`, `PERL5LIB`, `RUBYOPT`, `RUBYLIB`, `GEM_HOME`/`GEM_PATH`, `BASH_ENV`, `ENV`,
//! `SHELLOPTS`, exported bash functions, and `PS4` under xtrace (the full lists are in
//! `script_argv.rs`). Empty argv elements are kept as positions.
//!
//! Relative paths resolve against `/proc/PID/cwd`; the file is opened inside `/proc/PID/root`
//! with `RESOLVE_IN_ROOT` (symlinks resolve as the process sees them, clamped at its root).
//! `script:path` is the path as named (made absolute, `.` components removed), not the
//! symlink-resolved one. All script selectors are **weak**: argv is writable process memory.

use crate::in_root::{Resolve, open_in_root};
use crate::script_argv::{ScriptEntry as Entry, entry_of, interpreter_of};
use crate::{Ctx, Found, Kind, Selector};
use std::path::{Component, Path, PathBuf};

const KIND: Kind = Kind::Script;

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
    // The environment decides too (preloads, module paths); unreadable → fail closed.
    let environ = match p.environ_raw() {
        Ok(raw) => raw,
        Err(e) => {
            found.fail(format!("environ: {e}"));
            return found;
        }
    };
    let entry = match entry_of(lang, &argv, &environ) {
        Ok(Entry::None) => return found,
        Ok(entry) => entry,
        Err(why) => {
            found.fail(why);
            return found;
        }
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_paths() {
        let cwd = Path::new("/srv/app");
        let f = |p: &str| Entry::File { path: p.into(), base: None };
        assert_eq!(candidates(&f("./a/./b.py"), cwd), vec![PathBuf::from("/srv/app/a/b.py")]);
        assert_eq!(candidates(&f("/opt/x.py"), cwd), vec![PathBuf::from("/opt/x.py")]);
        assert_eq!(
            candidates(&Entry::Module("pkg.mod".into()), cwd),
            vec![PathBuf::from("/srv/app/pkg/mod.py"), PathBuf::from("/srv/app/pkg/mod/__main__.py")]
        );
        assert_eq!(candidates(&Entry::Bin("tool".into()), cwd), vec![PathBuf::from("/srv/app/node_modules/.bin/tool")]);
    }
}
