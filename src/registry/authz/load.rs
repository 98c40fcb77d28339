//! Reading, validating and indexing the policy files. Every problem is located (file, line,
//! column) so `tessera policy check` and a refused reload say exactly where; the set is loaded
//! whole or not at all (the daemon keeps the last good one).

use super::schema::{self, DetailType};
use super::{Authz, Mode, What};
use cedar_policy::{ActionConstraint, Effect, PolicyId, PolicySet, PrincipalConstraint, ResourceConstraint};
use cedar_policy::{ValidationMode, Validator};
use miette::Diagnostic;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

/// A policy file larger than this is refused (10,000 typical policies are ~2 MiB).
const MAX_FILE: u64 = 32 << 20;

/// `[policy]` as configured: the files (globs expanded at load) and the mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PolicyFiles {
    /// Paths or `dir/*.cedar` patterns, absolute (relative ones resolved against the config's
    /// directory by the config).
    pub patterns: Vec<PathBuf>,
    pub mode: Mode,
}

/// One located problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Located {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.column, self.message)
    }
}

/// Every problem in the policy files.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) struct LoadError(pub Vec<Located>);

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "the policy files have {n} error{}:", if n == 1 { "" } else { "s" })?;
        for l in &self.0 {
            write!(f, "\n  {l}")?;
        }
        Ok(())
    }
}

/// `*` matches any run of characters but `/` (in the file name only: `dir/*.cedar`).
fn wildcard(pattern: &str, name: &str) -> bool {
    let Some((head, rest)) = pattern.split_once('*') else { return pattern == name };
    let Some(mut name) = name.strip_prefix(head) else { return false };
    let parts: Vec<&str> = rest.split('*').collect();
    for (i, part) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            return name.ends_with(part);
        }
        match name.find(part) {
            Some(at) => name = &name[at + part.len()..],
            None => return false,
        }
    }
    true
}

impl PolicyFiles {
    /// The files the patterns name now, sorted, each once. A pattern's directory that cannot be
    /// read, or a plain path that does not exist, is an error; a pattern matching nothing is not
    /// (an empty set denies everything, which `check` warns about).
    pub(crate) fn expand(&self) -> Result<Vec<PathBuf>, LoadError> {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        let whole = |file: &Path, message: String| Located { file: file.to_owned(), line: 0, column: 0, message };
        for p in &self.patterns {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if !name.contains('*') {
                out.push(p.clone());
                continue;
            }
            let dir = p.parent().unwrap_or(Path::new("/"));
            match std::fs::read_dir(dir) {
                Ok(rd) => {
                    let mut found: Vec<PathBuf> = rd
                        .filter_map(Result::ok)
                        // Dotfiles are editors' locks and backups (`.#main.cedar`), never policies.
                        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                        .filter(|e| wildcard(&name, &e.file_name().to_string_lossy()))
                        .filter(|e| e.file_type().map(|t| t.is_file() || t.is_symlink()).unwrap_or(false))
                        .map(|e| e.path())
                        .collect();
                    found.sort();
                    out.extend(found);
                }
                Err(e) => errors.push(whole(dir, format!("cannot read the directory of {}: {e}", p.display()))),
            }
        }
        out.sort();
        out.dedup();
        if errors.is_empty() { Ok(out) } else { Err(LoadError(errors)) }
    }

    /// What to watch: each file, and `dir/*` for a pattern's directory (files appearing there).
    pub(crate) fn watch_paths(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self.expand().unwrap_or_default();
        for p in &self.patterns {
            let glob = p.file_name().is_some_and(|n| n.to_string_lossy().contains('*'));
            out.push(match (glob, p.parent()) {
                (true, Some(dir)) => dir.join("*"),
                _ => p.clone(),
            });
        }
        out.sort();
        out.dedup();
        out
    }

    /// Read, parse, validate and index the policies.
    pub(crate) fn load(&self, details: &[DetailType]) -> Result<Authz, LoadError> {
        let files = self.expand()?;
        let mut texts = Vec::new();
        let mut errors = Vec::new();
        for f in &files {
            match read(f) {
                Ok(t) => texts.push((f.clone(), t)),
                Err(e) => errors.push(Located { file: f.clone(), line: 0, column: 0, message: e }),
            }
        }
        if !errors.is_empty() {
            return Err(LoadError(errors));
        }
        compile(&texts, self.mode, details)
    }
}

/// Whoever may write a policy file (or add one to its directory) decides what every agent may
/// do: it must be a regular file that only root or the daemon's user can change, in a directory
/// only they can change. Opened once and checked on the open file (no swap between check and
/// read), read up to the limit whatever its size claims (a FIFO or a device is refused first).
fn read(f: &Path) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let me = nix::unistd::geteuid().as_raw();
    let unsafe_owner = |m: &std::fs::Metadata| (m.uid() != 0 && m.uid() != me) || m.mode() & 0o022 != 0;
    let fix = "make it root-owned and not group- or world-writable (chown root; chmod go-w)";
    if let Some(dir) = f.parent()
        && let Ok(m) = std::fs::metadata(dir)
        && unsafe_owner(&m)
    {
        return Err(format!(
            "its directory {} (owner uid {}, mode {:04o}) may be changed by someone other than root: {fix}",
            dir.display(),
            m.uid(),
            m.mode() & 0o7777
        ));
    }
    // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(f)
        .map_err(|e| format!("cannot read: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if unsafe_owner(&meta) {
        return Err(format!(
            "owner uid {}, mode {:04o}: it may be changed by someone other than root: {fix}",
            meta.uid(),
            meta.mode() & 0o7777
        ));
    }
    let mut text = String::new();
    file.take(MAX_FILE + 1).read_to_string(&mut text).map_err(|e| format!("cannot read: {e}"))?;
    if text.len() as u64 > MAX_FILE {
        return Err(format!("larger than {MAX_FILE} bytes, the most a policy file may hold (split it)"));
    }
    Ok(text)
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, column)
}

/// Every message of a diagnostic, each at its first label (or the file as a whole).
fn located(file: &Path, text: &str, d: &dyn Diagnostic, message: String) -> Located {
    let offset = d.labels().and_then(|mut l| l.next()).map(|l| l.offset());
    let (line, column) = offset.map(|o| line_col(text, o)).unwrap_or((0, 0));
    let message = match d.help() {
        Some(help) => format!("{message} (help: {help})"),
        None => message,
    };
    Located { file: file.to_owned(), line, column, message }
}

/// Parse each file, name each policy, validate the whole set against the schema, index it.
pub(crate) fn compile(texts: &[(PathBuf, String)], mode: Mode, details: &[DetailType]) -> Result<Authz, LoadError> {
    let schema = schema::build(details)
        .map_err(|e| LoadError(vec![Located { file: PathBuf::from("(schema)"), line: 0, column: 0, message: e }]))?;
    let mut errors = Vec::new();
    let mut all = PolicySet::new();
    // Which file (index into `texts`) each policy came from, for locating validation errors.
    let mut origin: HashMap<PolicyId, usize> = HashMap::new();
    let mut warnings = Vec::new();
    for (i, (file, text)) in texts.iter().enumerate() {
        let set = match PolicySet::from_str(text) {
            Ok(s) => s,
            Err(e) => {
                for d in e.iter() {
                    errors.push(located(file, text, d, d.to_string()));
                }
                continue;
            }
        };
        if set.templates().next().is_some() {
            errors.push(Located {
                file: file.clone(),
                line: 0,
                column: 0,
                message: "policy templates (?principal, ?resource) are not supported; write static policies".into(),
            });
            continue;
        }
        // `from_str` names them policy0, policy1, … in file order.
        let mut ordered: BTreeMap<usize, &cedar_policy::Policy> = BTreeMap::new();
        for p in set.policies() {
            let n = p.id().to_string().trim_start_matches("policy").parse::<usize>().unwrap_or(usize::MAX);
            ordered.insert(n, p);
        }
        let fname = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        for (n, p) in ordered {
            let id = match p.annotation("id") {
                // `#` is reserved for the default IDs (`file.cedar#3`), so an @id cannot pose as one.
                Some(id) if id.contains('#') => {
                    errors.push(Located {
                        file: file.clone(),
                        line: 0,
                        column: 0,
                        message: format!("@id({id:?}): an @id may not contain '#' (reserved for file#n)"),
                    });
                    continue;
                }
                Some(id) if !id.is_empty() => id.to_owned(),
                _ => format!("{fname}#{}", n + 1),
            };
            let named = p.new_id(PolicyId::new(&id));
            if permits_everything(&named) {
                warnings.push(format!(
                    "{}: policy {id} permits every agent every action on every resource (no scope, no condition)",
                    file.display()
                ));
            }
            if let Err(e) = all.add(named) {
                // Point a duplicate @id at its annotation.
                let at = text.find(&format!("\"{id}\"")).map(|o| line_col(text, o)).unwrap_or((0, 0));
                errors.push(Located {
                    file: file.clone(),
                    line: at.0,
                    column: at.1,
                    message: format!("{e} (each @id must be unique across the policy files)"),
                });
                continue;
            }
            origin.insert(PolicyId::new(&id), i);
        }
    }
    if !errors.is_empty() {
        return Err(LoadError(errors));
    }
    let validated = Validator::new(schema).validate(&all, ValidationMode::Strict);
    for e in validated.validation_errors() {
        // Reading an optional attribute or a tag without `has`/`hasTag` is legal Cedar that
        // errors at run time when the value is absent: the decision then denies and its audit
        // line says why. Warned here, not refused.
        if matches!(
            e,
            cedar_policy::ValidationError::UnsafeOptionalAttributeAccess(_)
                | cedar_policy::ValidationError::UnsafeTagAccess(_)
        ) {
            warnings.push(format!("{e} (when it is absent, the decision is a deny)"));
            continue;
        }
        let (file, text) = origin
            .get(e.policy_id())
            .map(|&i| &texts[i])
            .map(|(f, t)| (f.as_path(), t.as_str()))
            .unwrap_or((Path::new("(policy)"), ""));
        errors.push(located(file, text, e, e.to_string()));
    }
    for w in validated.validation_warnings() {
        warnings.push(w.to_string());
    }
    if !errors.is_empty() {
        return Err(LoadError(errors));
    }
    let count = all.policies().count();
    let by_action = index(&all);
    Ok(Authz { mode, by_action, count, files: texts.iter().map(|(f, _)| f.clone()).collect(), warnings })
}

fn permits_everything(p: &cedar_policy::Policy) -> bool {
    p.effect() == Effect::Permit
        && p.principal_constraint() == PrincipalConstraint::Any
        && p.action_constraint() == ActionConstraint::Any
        && p.resource_constraint() == ResourceConstraint::Any
        && !p.has_non_scope_constraint()
}

/// At most this many policy copies in the per-principal sets of one action (general policies
/// × principals named); beyond it the action keeps one set (correct, slower).
const MAX_INDEXED: usize = 2_000_000;

/// The policies each action can match, and within an action those each principal can match, so a
/// decision evaluates only those (Cedar evaluates every policy of the set it is given). A policy
/// whose scope names a principal (`principal == Agent::"…"`) goes to that principal's set only;
/// every other policy of the action to every set.
fn index(all: &PolicySet) -> HashMap<What, ActionSets> {
    let mut general: HashMap<What, Vec<&cedar_policy::Policy>> = HashMap::new();
    let mut specific: HashMap<What, HashMap<String, Vec<&cedar_policy::Policy>>> = HashMap::new();
    for p in all.policies() {
        let actions: Vec<What> = match p.action_constraint() {
            ActionConstraint::Any => What::ALL.to_vec(),
            ActionConstraint::Eq(uid) => What::from_name(uid.id().unescaped()).into_iter().collect(),
            ActionConstraint::In(uids) => uids.iter().filter_map(|u| What::from_name(u.id().unescaped())).collect(),
        };
        let principal = match p.principal_constraint() {
            PrincipalConstraint::Eq(uid) => Some(uid.id().unescaped().to_owned()),
            _ => None,
        };
        for w in actions {
            match &principal {
                Some(id) => specific.entry(w).or_default().entry(id.clone()).or_default().push(p),
                None => general.entry(w).or_default().push(p),
            }
        }
    }
    // Ids are unique in `all`, so adding to a subset cannot fail.
    let set_of = |ps: &mut dyn Iterator<Item = &&cedar_policy::Policy>| {
        let mut s = PolicySet::new();
        for p in ps {
            let _ = s.add((*p).clone());
        }
        s
    };
    What::ALL
        .into_iter()
        .map(|w| {
            let g = general.get(&w).map(Vec::as_slice).unwrap_or_default();
            let sp = specific.remove(&w).unwrap_or_default();
            let sets = if sp.len().saturating_mul(g.len()) > MAX_INDEXED {
                let all_of = set_of(&mut g.iter().chain(sp.values().flatten()));
                ActionSets { general: Arc::new(all_of), by_principal: HashMap::new() }
            } else {
                let by_principal =
                    sp.iter().map(|(id, ps)| (id.clone(), Arc::new(set_of(&mut g.iter().chain(ps.iter()))))).collect();
                ActionSets { general: Arc::new(set_of(&mut g.iter())), by_principal }
            };
            (w, sets)
        })
        .collect()
}

/// One action's policies: those for any principal, and per named principal those plus its own.
pub(super) struct ActionSets {
    pub general: Arc<PolicySet>,
    pub by_principal: HashMap<String, Arc<PolicySet>>,
}

impl ActionSets {
    pub(super) fn for_principal(&self, id: &str) -> &PolicySet {
        self.by_principal.get(id).unwrap_or(&self.general)
    }
}
