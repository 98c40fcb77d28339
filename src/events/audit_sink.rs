//! The audit log as an event subscriber: each event becomes one hash-chained line, with the event
//! names and fields the log has always had (`tessera audit verify` reads old and new logs alike).

use super::audit::{Audit, RefusalKey};
use super::{Event, ExeEvidence, IssuedSvid, Refusal, Subscriber};
use serde_json::{Value, json};

impl Subscriber for Audit {
    fn on_event(&self, event: &Event) {
        if let Some((name, fields)) = audit_line(event) {
            match refusal_key(event) {
                Some(key) => self.record_refusal(name, key, fields),
                None => self.record(name, fields),
            }
        }
    }
}

/// Whose refusal budget an event's line counts against, for every event that turns a caller (or
/// a partner) away, including the `attested` line of a caller that ends refused; `None` for the
/// rest, which are always written.
pub(crate) fn refusal_key(event: &Event) -> Option<RefusalKey> {
    use super::delegation::Outcome;
    match event {
        Event::Refused { uid, .. } | Event::Attested { uid, refused: true, .. } => Some(RefusalKey::Uid(Some(*uid))),
        Event::AdminRefused { uid, .. } => Some(RefusalKey::Uid(*uid)),
        // A refusal, or a repeated poll of an approval: the budget of whoever made the request.
        Event::Delegation(r) if r.remote_decider && r.outcome == Outcome::Refused => {
            Some(RefusalKey::Source("approvals listener".into()))
        }
        Event::Delegation(r) if r.outcome == Outcome::Refused || (r.outcome == Outcome::Pending && r.poll) => {
            Some(RefusalKey::Uid(r.caller_uid.or(r.agent.uid)))
        }
        Event::FederatedBundleRefused { trust_domain, .. } => {
            Some(RefusalKey::Source(format!("federation {trust_domain}")))
        }
        Event::SpireRefused { .. } => Some(RefusalKey::Source("spire server".into())),
        Event::GatewayCall(c) if !c.allowed => Some(RefusalKey::Uid(c.uid)),
        // A Unix peer's uid; a TCP peer (loopback) by its address.
        Event::GuardAction(a) if !a.allowed => Some(match (a.uid, &a.source) {
            (None, Some(source)) => RefusalKey::Source(format!("guard {} {source}", a.guard)),
            (uid, _) => RefusalKey::Uid(uid),
        }),
        _ => None,
    }
}

fn exe(e: &ExeEvidence) -> Value {
    json!({ "path": e.path, "sha256": e.sha256 })
}

/// The audit line of an event (name and fields), or `None` for events the log does not record.
pub(crate) fn audit_line(event: &Event) -> Option<(&'static str, Value)> {
    Some(match event {
        Event::AdminRefused { uid, pid, method, path } => (
            "admin_refused",
            json!({ "uid": uid, "pid": pid, "method": method, "path": path,
                    "reason": "not root, the daemon's user or admin_socket_group" }),
        ),
        Event::Started { trust_domain, socket } => {
            ("started", json!({ "trust_domain": trust_domain, "socket": socket }))
        }
        Event::Attested { rpc, pid, uid, pinned_by_kernel, exe: e, selectors, failed_attestors, .. } => (
            "attested",
            json!({
                "rpc": rpc,
                "pid": pid,
                "uid": uid,
                "pinned_by": if *pinned_by_kernel { "SO_PEERPIDFD" } else { "pidfd_open at accept" },
                "exe": exe(e),
                "selectors": selectors,
                "failed_attestors": failed_attestors.iter().map(|(a, r)| json!({ "attestor": a, "reason": r })).collect::<Vec<_>>(),
            }),
        ),
        Event::Refused { rpc, pid, uid, why } => (
            "refused",
            match why {
                Refusal::AttestationFailed(reason) => {
                    json!({ "rpc": rpc, "pid": pid, "uid": uid, "reason": format!("attestation failed: {reason}") })
                }
                Refusal::NoEntry { exe: e, selectors } => json!({
                    "rpc": rpc,
                    "pid": pid,
                    "uid": uid,
                    "exe": exe(e),
                    "selectors": selectors,
                    "reason": "no registration entry matches the workload's selectors",
                }),
                Refusal::NotEntitled(id) => {
                    json!({ "rpc": rpc, "pid": pid, "uid": uid, "reason": format!("workload is not entitled to {id}") })
                }
                Refusal::Policy { action, denied } => json!({
                    "rpc": rpc,
                    "pid": pid,
                    "uid": uid,
                    "action": action,
                    "policy_decision": "deny",
                    "policies": denied.iter().flat_map(|(_, v)| v.policies.iter()).collect::<std::collections::BTreeSet<_>>(),
                    "denied": denied.iter().map(|(id, v)| json!({ "spiffe_id": id, "policies": v.policies, "reason": v.reason() })).collect::<Vec<_>>(),
                    "reason": "denied by policy",
                }),
                Refusal::Revoked { rule, reason, exe: e, owners } => json!({
                    "rpc": rpc,
                    "pid": pid,
                    "uid": uid,
                    "exe": exe(e),
                    "owners": owners,
                    "rule": rule,
                    "reason": format!("revoked by rule {rule}: {reason}"),
                }),
            },
        ),
        Event::Issued {
            rpc,
            kind,
            pid,
            uid,
            attested_at,
            exe: e,
            selectors_matched,
            entries,
            issued,
            audience,
            owners,
            policy,
            ..
        } => {
            let issued: Vec<Value> = issued
                .iter()
                .map(|i| match i {
                    IssuedSvid::X509 { spiffe_id, serial, not_after, reused_for_process } => json!({
                        "spiffe_id": spiffe_id,
                        "serial": serial,
                        "not_after": not_after,
                        "reused_for_process": reused_for_process,
                    }),
                    IssuedSvid::Jwt { spiffe_id, kid, expires_at } | IssuedSvid::Wit { spiffe_id, kid, expires_at } => {
                        json!({ "spiffe_id": spiffe_id, "kid": kid, "expires_at": expires_at })
                    }
                })
                .collect();
            let mut fields = json!({
                "rpc": rpc,
                "kind": kind.as_str(),
                "pid": pid,
                "uid": uid,
                "attested_at": super::audit::rfc3339(*attested_at),
                "exe": exe(e),
                "selectors_matched": selectors_matched,
                "entries": entries,
                "issued": issued,
                "owners": owners,
            });
            if let Some(aud) = audience {
                fields["audience"] = json!(aud);
            }
            if let (Some(v), Value::Object(f)) = (policy, &mut fields)
                && let Value::Object(p) = v.audit()
            {
                f.extend(p);
            }
            ("issued", fields)
        }
        Event::Withdrawn { rpc, pid, uid, had, reason, owners } => {
            ("withdrawn", json!({ "rpc": rpc, "pid": pid, "uid": uid, "had": had, "reason": reason, "owners": owners }))
        }
        Event::Drift { rpc, pid, uid, removed, added, entries_before, owners, exec } => {
            let mut fields = json!({ "rpc": rpc, "pid": pid, "uid": uid, "old": removed, "new": added,
                                     "entries_before": entries_before, "owners": owners });
            if let Some(exec) = exec {
                fields["reason"] = json!("exec");
                fields["exe_before"] = exe(&exec.0);
                fields["exe_after"] = exe(&exec.1);
            }
            ("drift", fields)
        }
        Event::Revoked { rule, by_uid, by_pid, matched_now } => {
            ("revoked", json!({ "rule": &**rule, "by": { "uid": by_uid, "pid": by_pid }, "matched_now": matched_now }))
        }
        Event::RevocationLifted { rule, by_uid, by_pid } => {
            ("revocation_lifted", json!({ "rule": &**rule, "by": { "uid": by_uid, "pid": by_pid } }))
        }
        Event::Reloaded { why, entries } => ("reloaded", json!({ "why": why, "entries": entries })),
        Event::ReloadRefused { reason } => ("reload_refused", json!({ "reason": reason })),
        Event::Delegation(r) => (r.outcome.audit_name(), r.audit_fields()),
        Event::GatewayCall(c) => ("gateway_call", c.audit_fields()),
        Event::GuardAction(a) => ("guard_action", a.audit_fields()),
        Event::FederatedBundleUpdated { trust_domain, sequence, x509_authorities, jwt_keys } => (
            "federated_bundle_updated",
            json!({ "trust_domain": trust_domain, "sequence": sequence,
                    "x509_authorities": x509_authorities, "jwt_keys": jwt_keys }),
        ),
        Event::FederatedBundleRefused { trust_domain, url, reason } => {
            ("federated_bundle_refused", json!({ "trust_domain": trust_domain, "url": url, "reason": reason }))
        }
        // Not in the audit log (it never was); the CA logs it, and later metrics count it.
        Event::CaRotated => return None,
        // Telemetry only (metrics count them); the audited facts are in the events above.
        Event::AttestationFinished { .. } | Event::StreamOpened | Event::StreamClosed | Event::JwtValidated { .. } => {
            return None;
        }
        // A good sync every few seconds is not worth a line; a failed one is.
        Event::SpireSync { ok: true, .. } => return None,
        Event::SpireSync { ok: false, entries, since_good_sync, error } => (
            "spire_sync_failed",
            json!({ "entries_served": entries, "seconds_since_good_sync": since_good_sync, "error": error }),
        ),
        Event::SpireRefused { what, reason } => ("spire_refused", json!({ "what": what, "reason": reason })),
        Event::SpireAgentStopped { agent_id, reason } => {
            ("spire_agent_stopped", json!({ "agent_id": agent_id, "reason": reason }))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Refusal, SvidKind};
    use std::collections::BTreeSet;

    /// An audit log written by tessera at 3102019, before events were typed.
    const FIXTURE: &str = include_str!("../../tests/fixtures/audit-3102019.log");

    /// The field names of the fixture's lines for `event` (minus the chain fields).
    fn fixture_fields(event: &str, pred: impl Fn(&Value) -> bool) -> BTreeSet<String> {
        let line = FIXTURE
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|v| v["event"] == event && pred(v))
            .unwrap_or_else(|| panic!("no {event} line in the fixture"));
        line.as_object()
            .unwrap()
            .keys()
            .filter(|k| !["event", "seq", "prev", "time"].contains(&k.as_str()))
            .cloned()
            .collect()
    }

    fn fields(event: &Event) -> (&'static str, BTreeSet<String>) {
        let (name, v) = audit_line(event).unwrap();
        (name, v.as_object().unwrap().keys().cloned().collect())
    }

    #[test]
    fn typed_events_write_the_lines_the_log_always_had() {
        let exe = ExeEvidence { path: Some("/bin/x".into()), sha256: Some("ab".into()) };
        let rpc = crate::events::Rpc::of(crate::events::Call::FetchX509Svid);
        let cases = [
            (
                Event::Started { trust_domain: "t".parse().unwrap(), socket: "/s".into() },
                "started",
                fixture_fields("started", |_| true),
            ),
            (
                Event::Attested {
                    rpc,
                    pid: 1,
                    uid: 0,
                    pinned_by_kernel: true,
                    exe: exe.clone(),
                    selectors: vec![],
                    failed_attestors: vec![],
                    refused: false,
                },
                "attested",
                fixture_fields("attested", |_| true),
            ),
            (
                Event::Issued {
                    rpc,
                    kind: SvidKind::X509,
                    pid: 1,
                    uid: 0,
                    attested_at: std::time::SystemTime::UNIX_EPOCH,
                    exe: exe.clone(),
                    selectors_matched: vec![],
                    entries: vec![],
                    issued: vec![],
                    audience: None,
                    owners: Default::default(),
                    process: Default::default(),
                    policy: None,
                },
                "issued",
                fixture_fields("issued", |v| v["kind"] == "x509_svid"),
            ),
            (
                Event::Issued {
                    rpc: crate::events::Call::FetchJwtSvid.into(),
                    kind: SvidKind::Jwt,
                    pid: 1,
                    uid: 0,
                    attested_at: std::time::SystemTime::UNIX_EPOCH,
                    exe: exe.clone(),
                    selectors_matched: vec![],
                    entries: vec![],
                    issued: vec![],
                    audience: Some(vec!["a".into()]),
                    owners: Default::default(),
                    process: Default::default(),
                    policy: None,
                },
                "issued",
                fixture_fields("issued", |v| v["kind"] == "jwt_svid"),
            ),
            (
                Event::Refused {
                    rpc,
                    pid: Some(1),
                    uid: 0,
                    why: Refusal::NoEntry { exe: exe.clone(), selectors: vec![] },
                },
                "refused",
                fixture_fields("refused", |_| true),
            ),
            (Event::Reloaded { why: "SIGHUP".into(), entries: 1 }, "reloaded", fixture_fields("reloaded", |_| true)),
        ];
        for (event, name, mut want) in cases {
            // Since the fixture was written, issuance lines gained the entries' owners and when
            // the attestation behind the issuance completed (calls reuse one for up to a second).
            if name == "issued" {
                want.insert("owners".into());
                want.insert("attested_at".into());
            }
            assert_eq!(fields(&event), (name, want), "{event:?}");
        }
        // Issued SVIDs keep their per-kind fields.
        let (_, v) = audit_line(&Event::Issued {
            rpc,
            kind: SvidKind::X509,
            pid: 1,
            uid: 0,
            attested_at: std::time::SystemTime::UNIX_EPOCH,
            exe,
            selectors_matched: vec![],
            entries: vec![],
            issued: vec![IssuedSvid::X509 {
                spiffe_id: "spiffe://t/a".parse().unwrap(),
                serial: "01".into(),
                not_after: 5,
                reused_for_process: false,
            }],
            audience: None,
            owners: Default::default(),
            process: Default::default(),
            policy: None,
        })
        .unwrap();
        let fixture_issued: Value = FIXTURE
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|v| v["event"] == "issued" && v["kind"] == "x509_svid")
            .unwrap();
        let keys = |v: &Value| v["issued"][0].as_object().unwrap().keys().cloned().collect::<BTreeSet<_>>();
        assert_eq!(keys(&v), keys(&fixture_issued));
    }

    #[test]
    fn ca_rotation_is_not_an_audit_line() {
        assert!(audit_line(&Event::CaRotated).is_none());
    }
}
