//! `cgroup` attestor: `cgroup:path`, `systemd:id`, `systemd:fragment_path`, `container:id`,
//! `container:runtime` and `k8s:pod-uid`, all from `/proc/PID/cgroup` (no runtime socket).
//!
//! - **cgroup:path** is the v2 (`0::`) path, or on a pure v1 host the `name=systemd` path.
//! - **systemd:id** is the outermost unit below the slices (`/system.slice/foo.service/sub` →
//!   `foo.service`), which is what systemd's `GetUnitByPID` answers and SPIRE reports; for user
//!   units that is `user@UID.service`.
//! - **systemd:fragment_path** is looked up (best effort) in the systemd unit search path
//!   [`UNIT_DIRS`] in the daemon's root, `foo@bar.service` falling back to `foo@.service`.
//!   Units without a file (e.g. session scopes) get no fragment path.
//! - **container:*** and **k8s:pod-uid** are searched in every hierarchy's path, innermost match
//!   first. Components inside a user's delegated subtree (`user@UID.service/...`) are ignored:
//!   that user can create cgroups of any name there, e.g. a fake `docker-<victim>.scope`.

use crate::selector::{is_pod_uid, is_user_delegated};
use crate::{Ctx, Found, Kind, Selector};
use std::path::{Path, PathBuf};

/// Where systemd looks for system unit files, highest precedence first.
pub const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/transient",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// What a `/proc/PID/cgroup` file says about a process.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CgroupFacts {
    /// The v2 path, or the v1 `name=systemd` path.
    pub path: Option<String>,
    /// Outermost systemd unit (not a slice) of that path.
    pub systemd_unit: Option<String>,
    /// Full container id.
    pub container_id: Option<String>,
    /// `docker`, `podman`, `containerd` or `cri-o` when the path says which.
    pub runtime: Option<&'static str>,
    /// Kubernetes pod UID, with dashes.
    pub pod_uid: Option<String>,
}

pub(crate) fn attest(ctx: &Ctx<'_>) -> Found {
    let mut found = Found::new("cgroup");
    let text = match ctx.process.cgroup_text() {
        Ok(t) => t,
        Err(e) => {
            found.fail(format!("cgroup: {e}"));
            return found;
        }
    };
    let facts = parse(&text);
    if let Some(path) = &facts.path {
        found.push(Selector::keyed(Kind::Cgroup, "path", path));
    }
    if let Some(unit) = &facts.systemd_unit {
        found.push(Selector::keyed(Kind::Systemd, "id", unit));
        let dirs: Vec<&Path> = UNIT_DIRS.iter().map(Path::new).collect();
        if let Some(frag) = fragment_path(unit, &dirs) {
            found.push(Selector::keyed(Kind::Systemd, "fragment_path", frag.display()));
        }
    }
    if let Some(id) = &facts.container_id {
        found.push(Selector::keyed(Kind::Container, "id", id));
    }
    if let Some(rt) = facts.runtime {
        found.push(Selector::keyed(Kind::Container, "runtime", rt));
    }
    if let Some(uid) = &facts.pod_uid {
        found.push(Selector::keyed(Kind::K8s, "pod-uid", uid));
    }
    found
}

/// Parses a `/proc/PID/cgroup` file (v2, v1 or hybrid). Malformed lines are ignored.
pub fn parse(text: &str) -> CgroupFacts {
    let mut unified = None;
    let mut v1_systemd = None;
    let mut all_paths = Vec::new();
    for line in text.lines() {
        // hierarchy-id:controller-list:path — the path itself may contain ':'.
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if !path.starts_with('/') {
            continue;
        }
        if id == "0" && controllers.is_empty() {
            unified = Some(path);
        } else if controllers.split(',').any(|c| c == "name=systemd") {
            v1_systemd = Some(path);
        }
        all_paths.push(path);
    }
    let primary = unified.or(v1_systemd);
    let mut facts = CgroupFacts {
        path: primary.map(str::to_owned),
        systemd_unit: primary.and_then(systemd_unit),
        ..CgroupFacts::default()
    };
    // The v2 path first, then v1 hierarchies, which normally agree. The outermost match wins: a
    // process that may create cgroups (delegation, a rw cgroupns) can only do so *below* its own,
    // so an inner component can be of its choosing while the outer ones were set up for it.
    for path in primary.into_iter().chain(all_paths) {
        let trusted = trusted_components(path);
        if facts.container_id.is_none()
            && let Some((id, rt)) = trusted.iter().find_map(|c| container_of(c))
        {
            facts.container_id = Some(id);
            facts.runtime = rt;
        }
        if facts.pod_uid.is_none() {
            facts.pod_uid = trusted.iter().find_map(|c| pod_uid_of(c));
        }
    }
    facts
}

/// Path components outside any user-delegated subtree.
fn trusted_components(path: &str) -> Vec<&str> {
    path.split('/').filter(|c| !c.is_empty()).take_while(|c| !is_user_delegated(c)).collect()
}

fn systemd_unit(path: &str) -> Option<String> {
    path.split('/')
        .filter(|c| !c.is_empty())
        .find(|c| !c.ends_with(".slice"))
        .filter(|c| [".service", ".scope", ".socket", ".mount", ".swap"].iter().any(|t| c.ends_with(t)))
        .map(str::to_owned)
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A container id (and runtime, if the name says) in one path component.
fn container_of(c: &str) -> Option<(String, Option<&'static str>)> {
    // systemd cgroup driver: <prefix>-<id>.scope. Conmon's own scopes (libpod-conmon-,
    // crio-conmon-) hold the monitor, not the container, and do not match: their id part
    // starts with "conmon-".
    const SCOPES: &[(&str, &str)] = &[
        ("docker-", "docker"),
        ("libpod-", "podman"),
        ("cri-containerd-", "containerd"),
        ("nerdctl-", "containerd"),
        ("crio-", "cri-o"),
    ];
    if let Some(stem) = c.strip_suffix(".scope") {
        for (prefix, rt) in SCOPES {
            if let Some(id) = stem.strip_prefix(prefix)
                && is_container_id(id)
            {
                return Some((id.to_owned(), Some(*rt)));
            }
        }
        return None;
    }
    // cgroupfs driver (v1 `/docker/<id>`, kubepods `/kubepods/burstable/pod<uid>/<id>`,
    // podman `/libpod_parent/libpod-<id>`): a bare id names no runtime, except podman's prefix.
    if let Some(id) = c.strip_prefix("libpod-")
        && is_container_id(id)
    {
        return Some((id.to_owned(), Some("podman")));
    }
    is_container_id(c).then(|| (c.to_owned(), None))
}

/// `pod<uid>` (cgroupfs) or `kubepods[-qos]-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid_of(c: &str) -> Option<String> {
    let raw = if let Some(stem) = c.strip_suffix(".slice") {
        if !stem.starts_with("kubepods") {
            return None;
        }
        stem.rsplit_once("-pod")?.1
    } else {
        c.strip_prefix("pod")?
    };
    let uid = raw.replace('_', "-");
    is_pod_uid(&uid).then_some(uid)
}

/// The unit file for `unit` in the first of `dirs` that has it (templates fall back to `foo@.x`).
pub fn fragment_path(unit: &str, dirs: &[&Path]) -> Option<PathBuf> {
    let template =
        unit.split_once('@').and_then(|(prefix, rest)| Some(format!("{prefix}@.{}", rest.rsplit_once('.')?.1)));
    for name in std::iter::once(unit.to_owned()).chain(template) {
        for dir in dirs {
            let candidate = dir.join(&name);
            // is_file after following links: a unit masked as a link to /dev/null has no fragment.
            if let Ok(m) = std::fs::metadata(&candidate)
                && m.is_file()
            {
                return Some(candidate);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1d3c5a6b7e8f9012a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f801";

    fn facts(text: &str) -> CgroupFacts {
        parse(text)
    }

    #[test]
    fn docker_v1() {
        let text = format!("12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n");
        let f = facts(&text);
        assert_eq!(f.container_id.as_deref(), Some(ID));
        assert_eq!(f.runtime, None, "a bare v1 id does not say which runtime");
        assert_eq!(f.path.as_deref(), Some(&*format!("/docker/{ID}")));
        assert_eq!(f.systemd_unit, None);
    }

    #[test]
    fn docker_v2_systemd_driver() {
        let f = facts(&format!("0::/system.slice/docker-{ID}.scope\n"));
        assert_eq!(f.container_id.as_deref(), Some(ID));
        assert_eq!(f.runtime, Some("docker"));
        assert_eq!(f.systemd_unit.as_deref(), Some(&*format!("docker-{ID}.scope")));
        assert_eq!(f.pod_uid, None);
    }

    #[test]
    fn podman_and_conmon() {
        let f = facts(&format!("0::/machine.slice/libpod-{ID}.scope/container\n"));
        assert_eq!(f.container_id.as_deref(), Some(ID));
        assert_eq!(f.runtime, Some("podman"));
        let conmon = facts(&format!("0::/machine.slice/libpod-conmon-{ID}.scope\n"));
        assert_eq!(conmon.container_id, None);
        let cgroupfs = facts(&format!("0::/libpod_parent/libpod-{ID}\n"));
        assert_eq!(cgroupfs.runtime, Some("podman"));
    }

    #[test]
    fn containerd_and_crio() {
        let f = facts(&format!("0::/system.slice/cri-containerd-{ID}.scope\n"));
        assert_eq!((f.container_id.as_deref(), f.runtime), (Some(ID), Some("containerd")));
        let f = facts(&format!("0::/machine.slice/crio-{ID}.scope\n"));
        assert_eq!((f.container_id.as_deref(), f.runtime), (Some(ID), Some("cri-o")));
        let f = facts(&format!("0::/machine.slice/crio-conmon-{ID}.scope\n"));
        assert_eq!(f.container_id, None);
    }

    #[test]
    fn kubepods_systemd_driver() {
        let text = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/\
             kubepods-burstable-pod7f3b2c1a_1234_4cde_9abc_0123456789ab.slice/cri-containerd-{ID}.scope\n"
        );
        let f = facts(&text);
        assert_eq!(f.pod_uid.as_deref(), Some("7f3b2c1a-1234-4cde-9abc-0123456789ab"));
        assert_eq!(f.container_id.as_deref(), Some(ID));
        assert_eq!(f.runtime, Some("containerd"));
        let guaranteed = facts(&format!(
            "0::/kubepods.slice/kubepods-pod7f3b2c1a_1234_4cde_9abc_0123456789ab.slice/crio-{ID}.scope\n"
        ));
        assert_eq!(guaranteed.pod_uid.as_deref(), Some("7f3b2c1a-1234-4cde-9abc-0123456789ab"));
        assert_eq!(guaranteed.runtime, Some("cri-o"));
    }

    #[test]
    fn kubepods_cgroupfs_v1() {
        let text = format!(
            "11:memory:/kubepods/besteffort/pod7f3b2c1a-1234-4cde-9abc-0123456789ab/{ID}\n\
             10:cpu,cpuacct:/kubepods/besteffort/pod7f3b2c1a-1234-4cde-9abc-0123456789ab/{ID}\n\
             1:name=systemd:/kubepods/besteffort/pod7f3b2c1a-1234-4cde-9abc-0123456789ab/{ID}\n"
        );
        let f = facts(&text);
        assert_eq!(f.pod_uid.as_deref(), Some("7f3b2c1a-1234-4cde-9abc-0123456789ab"));
        assert_eq!(f.container_id.as_deref(), Some(ID));
        // Static pods: the uid is a 32-hex config hash.
        let f = facts("0::/kubepods/pod0123456789abcdef0123456789abcdef/x\n");
        assert_eq!(f.pod_uid.as_deref(), Some("0123456789abcdef0123456789abcdef"));
    }

    #[test]
    fn systemd_services_and_sessions() {
        let f = facts("0::/system.slice/support-agent.service\n");
        assert_eq!(f.systemd_unit.as_deref(), Some("support-agent.service"));
        assert_eq!(f.path.as_deref(), Some("/system.slice/support-agent.service"));
        assert_eq!(f.container_id, None);
        let f = facts("0::/system.slice/foo.service/worker/sub\n");
        assert_eq!(f.systemd_unit.as_deref(), Some("foo.service"));
        let f = facts("0::/user.slice/user-1000.slice/session-3.scope\n");
        assert_eq!(f.systemd_unit.as_deref(), Some("session-3.scope"));
        let f = facts("0::/user.slice/user-1000.slice/user@1000.service/app.slice/agent.service\n");
        assert_eq!(f.systemd_unit.as_deref(), Some("user@1000.service"));
        let f = facts("0::/\n");
        assert_eq!((f.path.as_deref(), f.systemd_unit), (Some("/"), None));
    }

    #[test]
    fn user_delegated_subtree_cannot_forge_containers() {
        let f = facts(&format!("0::/user.slice/user-1000.slice/user@1000.service/docker-{ID}.scope\n"));
        assert_eq!(f.container_id, None);
        let f = facts(
            "0::/user.slice/user-1000.slice/user@1000.service/\
             kubepods-pod7f3b2c1a_1234_4cde_9abc_0123456789ab.slice\n",
        );
        assert_eq!(f.pod_uid, None);
    }

    #[test]
    fn v1_multi_line_hybrid() {
        // A hybrid host: v1 controllers plus the unified hierarchy (as on this test machine).
        let text = "12:pids:/system.slice/agent.service\n\
                    9:name=systemd:/system.slice/agent.service\n\
                    4:memory:/process_api/94c5156ffba0f4593e67d2bee1c4893a\n\
                    0::/system.slice/agent.service\n";
        let f = facts(text);
        assert_eq!(f.path.as_deref(), Some("/system.slice/agent.service"));
        assert_eq!(f.systemd_unit.as_deref(), Some("agent.service"));
        assert_eq!(f.container_id, None);
        // Pure v1: the name=systemd hierarchy gives the path.
        let f = facts("2:cpu:/foo\n1:name=systemd:/system.slice/x.service\n");
        assert_eq!(f.path.as_deref(), Some("/system.slice/x.service"));
        // Garbage is ignored.
        assert_eq!(facts("garbage\n::\n"), CgroupFacts::default());
    }

    #[test]
    fn fragment_lookup() {
        let etc = tempfile::tempdir().unwrap();
        let lib = tempfile::tempdir().unwrap();
        std::fs::write(lib.path().join("agent.service"), "[Service]\n").unwrap();
        std::fs::write(lib.path().join("worker@.service"), "[Service]\n").unwrap();
        let dirs = [etc.path(), lib.path()];
        assert_eq!(fragment_path("agent.service", &dirs), Some(lib.path().join("agent.service")));
        std::fs::write(etc.path().join("agent.service"), "[Service]\n").unwrap();
        assert_eq!(
            fragment_path("agent.service", &dirs),
            Some(etc.path().join("agent.service")),
            "/etc overrides /usr/lib"
        );
        assert_eq!(fragment_path("worker@3.service", &dirs), Some(lib.path().join("worker@.service")));
        assert_eq!(fragment_path("session-3.scope", &dirs), None);
    }

    #[test]
    fn a_nested_cgroup_cannot_claim_another_container() {
        let mine = "a".repeat(64);
        let victim = "b".repeat(64);
        let line = format!("0::/system.slice/docker-{mine}.scope/docker-{victim}.scope\n");
        assert_eq!(parse(&line).container_id.as_deref(), Some(mine.as_str()));
    }
}
