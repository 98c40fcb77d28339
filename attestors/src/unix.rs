//! `unix` attestor: SPIRE's selectors and meanings (effective ids, the mapped executable).

use crate::{Ctx, Found, Kind, Selector};
use nix::unistd::{Gid, Group, Uid, User};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const KIND: Kind = Kind::Unix;

pub(crate) fn attest(ctx: &Ctx<'_>) -> Found {
    let mut found = Found::new(KIND.as_str());
    let p = ctx.process;
    match p.ids() {
        Ok(ids) => {
            let (euid, egid) = (ids.uids[1], ids.gids[1]);
            found.push(Selector::keyed(KIND, "uid", euid));
            // Names come from the daemon's databases; a missing name is skipped silently, as
            // SPIRE does (containers often run uids the host has no name for).
            if let Some(name) = ctx.names.user(euid) {
                found.push(Selector::keyed(KIND, "user", name));
            }
            found.push(Selector::keyed(KIND, "gid", egid));
            if let Some(name) = ctx.names.group(egid) {
                found.push(Selector::keyed(KIND, "group", name));
            }
            for gid in ids.groups {
                found.push(Selector::keyed(KIND, "supplementary_gid", gid));
                if let Some(name) = ctx.names.group(gid) {
                    found.push(Selector::keyed(KIND, "supplementary_group", name));
                }
            }
        }
        Err(e) => found.fail(format!("status: {e}")),
    }
    let mut evidence = crate::ExeEvidence::default();
    match p.exe_link() {
        Ok(link) => {
            evidence.path = Some(link.to_string_lossy().into_owned());
            found.watched.push(p.exe_host_path(&link));
            match p.untrusted_root() {
                // The path is what that namespace chose to mount there; the inode's digest
                // (below) is still the mapped file's own content.
                Some(why) => found.fail(format!("unix:path withheld: {why}")),
                None => found.push(Selector::keyed(KIND, "path", link.display())),
            }
        }
        Err(e) => found.fail(format!("exe path: {e}")),
    }
    if !ctx.config.want_exe_digest {
        found.exe = Some(evidence);
        return found; // no entry uses unix:sha256: hash nothing
    }
    match p.open_exe() {
        Ok(mut exe) => match ctx.digest(&mut exe, crate::HashOf::Exe) {
            Ok(hex) => {
                found.push(Selector::keyed(KIND, "sha256", &hex));
                evidence.sha256 = Some(hex);
            }
            Err(e) => found.fail(format!("sha256 of exe: {e}")),
        },
        Err(e) => found.fail(format!("exe: {e}")),
    }
    found.exe = Some(evidence);
    found
}

/// How long a uid/gid → name answer is reused. Lookups go through NSS (reading /etc/passwd and
/// /etc/group, or a directory service) and would otherwise cost more than the rest of attestation.
const NAME_TTL: Duration = Duration::from_secs(30);

/// Short-lived cache of user and group names.
#[derive(Debug, Default)]
pub(crate) struct NameCache {
    users: Mutex<HashMap<u32, (Option<String>, Instant)>>,
    groups: Mutex<HashMap<u32, (Option<String>, Instant)>>,
}

impl NameCache {
    pub(crate) fn user(&self, uid: u32) -> Option<String> {
        Self::cached(&self.users, uid, || User::from_uid(Uid::from_raw(uid)).ok().flatten().map(|u| u.name))
    }

    #[cfg(test)]
    pub(crate) fn has_user(&self, uid: u32) -> bool {
        self.users.lock().is_ok_and(|m| m.contains_key(&uid))
    }

    pub(crate) fn group(&self, gid: u32) -> Option<String> {
        Self::cached(&self.groups, gid, || Group::from_gid(Gid::from_raw(gid)).ok().flatten().map(|g| g.name))
    }

    fn cached(
        map: &Mutex<HashMap<u32, (Option<String>, Instant)>>,
        id: u32,
        lookup: impl FnOnce() -> Option<String>,
    ) -> Option<String> {
        if let Ok(m) = map.lock()
            && let Some((name, at)) = m.get(&id)
            && at.elapsed() < NAME_TTL
        {
            return name.clone();
        }
        let name = lookup();
        if let Ok(mut m) = map.lock() {
            if m.len() > 4096 {
                m.clear();
            }
            m.insert(id, (name.clone(), Instant::now()));
        }
        name
    }
}
