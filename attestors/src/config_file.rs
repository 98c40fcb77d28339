//! `config` attestor: `config:sha256:/path:HEX` for the files some entry names.
//!
//! Files are read inside the process's mount namespace and root (`/proc/PID/root`), with
//! `RESOLVE_BENEATH`: a symlink that is absolute or climbs out with `..` is refused and the
//! file yields no selector. Deploy config files as regular files or relative links that stay
//! inside the root (Kubernetes ConfigMap mounts use such relative `..data/` links).
//!
//! Nothing is read for a process whose mount namespace belongs to its own user namespace: it
//! may have mounted its own copy of any file at that path (see `ProcessHandle::untrusted_root`).

use crate::in_root::{Resolve, open_in_root};
use crate::{Ctx, Found, Kind, Selector};

const KIND: Kind = Kind::Config;

pub(crate) fn attest(ctx: &Ctx<'_>) -> Found {
    let mut found = Found::new(KIND.as_str());
    if ctx.config.config_paths.is_empty() {
        return found;
    }
    if let Some(why) = ctx.process.untrusted_root() {
        found.fail(format!("config:sha256 withheld: {why}"));
        return found;
    }
    let root = match ctx.process.root_dir() {
        Ok(root) => root,
        Err(e) => {
            found.fail(format!("root: {e}"));
            return found;
        }
    };
    for path in &ctx.config.config_paths {
        let digest = open_in_root(&root, path, Resolve::Beneath).and_then(|mut f| {
            ctx.digest(&mut f, crate::HashOf::ScriptOrConfig).map_err(|e| format!("{}: {e}", path.display()))
        });
        match digest {
            Ok(hex) => found.push(Selector::new(KIND, format!("sha256:{}:{hex}", path.display()))),
            Err(e) => found.fail(e),
        }
        // Watched even when missing or refused: its appearance or repair changes the answer.
        found.watched.push(ctx.process.host_path(path));
    }
    found
}
