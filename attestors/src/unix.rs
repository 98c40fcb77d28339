//! `unix` attestor: SPIRE's selectors and meanings (effective ids, the mapped executable).

use crate::{Ctx, Found, Selector};
use nix::unistd::{Gid, Group, Uid, User};

const KIND: &str = "unix";

pub(crate) fn attest(ctx: &Ctx<'_>) -> Found {
    let mut found = Found::new(KIND);
    let p = ctx.process;
    match p.status() {
        Ok(status) => {
            found.push(Selector::keyed(KIND, "uid", status.euid));
            // Names come from the daemon's databases; a missing name is skipped silently, as
            // SPIRE does (containers often run uids the host has no name for).
            if let Ok(Some(u)) = User::from_uid(Uid::from_raw(status.euid)) {
                found.push(Selector::keyed(KIND, "user", u.name));
            }
            found.push(Selector::keyed(KIND, "gid", status.egid));
            if let Ok(Some(g)) = Group::from_gid(Gid::from_raw(status.egid)) {
                found.push(Selector::keyed(KIND, "group", g.name));
            }
            for gid in status.groups {
                found.push(Selector::keyed(KIND, "supplementary_gid", gid));
                if let Ok(Some(g)) = Group::from_gid(Gid::from_raw(gid)) {
                    found.push(Selector::keyed(KIND, "supplementary_group", g.name));
                }
            }
        }
        Err(e) => found.fail(format!("status: {e}")),
    }
    match p.exe_link() {
        Ok(link) => {
            found.push(Selector::keyed(KIND, "path", link.display()));
            found.watched.push(p.exe_host_path(&link));
        }
        Err(e) => found.fail(format!("exe path: {e}")),
    }
    match p.open_exe() {
        Ok(mut exe) => match ctx.cache.digest(&mut exe, ctx.config.max_hash_size) {
            Ok(hex) => found.push(Selector::keyed(KIND, "sha256", hex)),
            Err(e) => found.fail(format!("sha256 of exe: {e}")),
        },
        Err(e) => found.fail(format!("exe: {e}")),
    }
    found
}
