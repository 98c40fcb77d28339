//! The live inventory: which process holds which identity right now, and who was refused. An
//! event-spine subscriber (issued, withdrawn, drift, refused) keeps it; a process leaves when it
//! exits (checked on every read and swept every [`SWEEP_EVERY`]) or when all it held expired.
//! Served as `GET /inventory` on the admin socket; the JSON shape is in docs/inventory.md.

mod grants;
mod process;
pub(crate) mod view;

use crate::clock::{Clock, SystemClock};
use crate::events::{Event, ExeEvidence, IssuedSvid, Refusal, Rpc, Subscriber};
use crate::peer::ProcessKey;
use crate::spiffe_id::SpiffeId;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) use grants::Grant;
pub(crate) use view::routes;

/// Refusals kept (the newest); a flood of refusals costs no more than this.
pub(crate) const MAX_REFUSALS: usize = 256;
/// Processes tracked at most; past this the longest-connected entries are dropped (logged).
const MAX_WORKLOADS: usize = 16_384;
/// How often exited processes are removed between reads.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// One identity a process was handed.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Held {
    pub spiffe_id: SpiffeId,
    /// `x509`, `jwt`, `wit`, `delegated` (a delegated token through the token socket) or
    /// `gateway` (calls through the node gateway).
    pub kind: &'static str,
    /// X.509 serial (hex); JWT-SVIDs have none.
    pub serial: Option<String>,
    /// JWT signing key ID.
    pub kid: Option<String>,
    pub expires_at: u64,
    pub owner: Option<String>,
    /// `active`, or `withdrawn` (the daemon took it back; an X.509-SVID stays valid until
    /// `expires_at` for anyone who trusts the bundle).
    pub status: &'static str,
    pub withdrawn_reason: Option<String>,
}

/// A process that was handed SVIDs.
#[derive(Debug, Clone)]
pub(crate) struct Workload {
    pub pid: i32,
    pub start_ticks: u64,
    pub uid: u32,
    pub exe: ExeEvidence,
    pub script: Option<String>,
    pub selectors: Vec<String>,
    /// Unix seconds of the first SVID handed to this process.
    pub connected_since: u64,
    /// By (kind, SPIFFE ID).
    pub held: BTreeMap<(&'static str, SpiffeId), Held>,
}

/// One refusal.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct RefusalRecord {
    pub time: u64,
    pub rpc: Rpc,
    pub pid: Option<i32>,
    pub uid: u32,
    pub exe: Option<ExeEvidence>,
    pub reason: String,
}

/// One agent's use of the node gateway: the routes it called (with counts) and its last call.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub(crate) struct GatewayUse {
    pub routes: BTreeMap<String, u64>,
    pub denied: u64,
    pub last_call: Option<LastCall>,
}

/// The newest gateway call of an agent.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct LastCall {
    pub time: u64,
    pub pid: Option<i32>,
    pub route: Option<String>,
    pub method: String,
    pub host: Option<String>,
    pub path: String,
    pub status: Option<u16>,
    pub decision: &'static str,
}

/// Agents tracked in the gateway section at most (a flood of new identities costs no more).
const MAX_GATEWAY_AGENTS: usize = 4096;

#[derive(Default)]
struct State {
    workloads: HashMap<ProcessKey, Workload>,
    refusals: VecDeque<RefusalRecord>,
    /// By SPIFFE ID.
    gateway: BTreeMap<String, GatewayUse>,
    /// Live delegated tokens, by `jti`.
    grants: BTreeMap<String, Grant>,
    /// The last discovery scan (`[discovery] interval`): when, and what it found unmanaged.
    unmanaged: Option<(u64, Vec<crate::discovery::Found>)>,
}

/// The live state. Share it as `Arc<Inventory>`. Its clock says which identities expired and
/// stamps connections, refusals and the document.
pub(crate) struct Inventory {
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
}

impl Default for Inventory {
    /// On the system clock, without the background sweep.
    fn default() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }
}

impl Inventory {
    /// Without the background sweep.
    pub(crate) fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self { state: Mutex::default(), clock }
    }

    /// Now, in whole seconds since the epoch.
    pub(crate) fn now_unix(&self) -> u64 {
        crate::clock::unix_secs(self.clock.now())
    }

    /// A new inventory, swept for exited processes in the background (call inside a runtime).
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Arc<Self> {
        let inventory = Arc::new(Self::with_clock(clock));
        let weak = Arc::downgrade(&inventory);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                let Some(inv) = weak.upgrade() else { return };
                inv.prune();
            }
        });
        inventory
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drop exited processes and expired identities (the /proc reads happen outside the lock).
    fn prune(&self) {
        let keys: Vec<ProcessKey> = self.lock().workloads.keys().copied().collect();
        let gone: Vec<ProcessKey> = keys.into_iter().filter(|k| !process::alive(k.pid, k.start_ticks)).collect();
        let now = self.now_unix();
        let mut state = self.lock();
        for k in &gone {
            state.workloads.remove(k);
        }
        state.grants.retain(|_, g| g.expires_at > now);
        state.workloads.retain(|_, w| {
            w.held.retain(|_, h| h.expires_at > now);
            !w.held.is_empty()
        });
    }

    /// Keep a discovery scan's agents, leaving out the pids that hold identities; how many are left.
    pub(crate) fn set_unmanaged(&self, found: Vec<crate::discovery::Found>) -> usize {
        let now = self.now_unix();
        let mut state = self.lock();
        let held: std::collections::HashSet<i32> = state.workloads.values().map(|w| w.pid).collect();
        let left: Vec<_> = found.into_iter().filter(|f| !held.contains(&f.pid)).collect();
        let n = left.len();
        state.unmanaged = Some((now, left));
        n
    }

    /// The last scan's unmanaged agents, each with the kept refusals of its pid.
    pub(crate) fn unmanaged(&self) -> (Option<u64>, Vec<(crate::discovery::Found, Vec<RefusalRecord>)>) {
        let state = self.lock();
        let Some((at, found)) = &state.unmanaged else { return (None, Vec::new()) };
        let linked = found
            .iter()
            .map(|f| (f.clone(), state.refusals.iter().filter(|r| r.pid == Some(f.pid)).cloned().collect()))
            .collect();
        (Some(*at), linked)
    }

    /// Every live process holding an identity, by pid, and the newest `refusals` refusals.
    pub(crate) fn snapshot(&self, refusals: usize) -> (Vec<Workload>, Vec<RefusalRecord>) {
        self.prune();
        let state = self.lock();
        let mut workloads: Vec<Workload> = state.workloads.values().cloned().collect();
        workloads.sort_by_key(|w| (w.pid, w.start_ticks));
        let skip = state.refusals.len().saturating_sub(refusals);
        (workloads, state.refusals.iter().skip(skip).cloned().collect())
    }

    /// Each agent's gateway use.
    pub(crate) fn gateway(&self) -> BTreeMap<String, GatewayUse> {
        self.lock().gateway.clone()
    }

    fn gateway_call(&self, c: &crate::events::gateway::GatewayCall) {
        let Some(agent) = &c.agent else { return };
        let now = self.now_unix();
        let mut state = self.lock();
        if !state.gateway.contains_key(agent) && state.gateway.len() >= MAX_GATEWAY_AGENTS {
            return;
        }
        let u = state.gateway.entry(agent.clone()).or_default();
        if c.allowed {
            if let Some(r) = &c.route {
                *u.routes.entry(r.clone()).or_default() += 1;
            }
        } else {
            u.denied += 1;
        }
        u.last_call = Some(LastCall {
            time: now,
            pid: c.pid,
            route: c.route.clone(),
            method: c.method.clone(),
            host: c.host.clone(),
            path: c.path.clone(),
            status: c.status,
            decision: c.decision(),
        });
    }

    fn issued(&self, event: &Event) {
        let Event::Issued { pid, uid, exe, issued, owners, process, .. } = event else { return };
        let now = self.now_unix();
        let mut state = self.lock();
        let key = ProcessKey { pid: *pid, start_ticks: process.start_ticks };
        let w = holder(&mut state, key, *uid, exe, now);
        w.exe = exe.clone();
        w.script = process.script.clone();
        w.selectors = process.selectors.clone();
        for svid in issued {
            let held = match svid {
                IssuedSvid::X509 { spiffe_id, serial, not_after, .. } => Held {
                    spiffe_id: spiffe_id.clone(),
                    kind: "x509",
                    serial: Some(serial.clone()),
                    kid: None,
                    expires_at: *not_after,
                    owner: owners.get(spiffe_id).cloned(),
                    status: "active",
                    withdrawn_reason: None,
                },
                IssuedSvid::Jwt { spiffe_id, kid, expires_at } => Held {
                    spiffe_id: spiffe_id.clone(),
                    kind: "jwt",
                    serial: None,
                    kid: Some(kid.clone()),
                    // Several JWT-SVIDs (audiences) for one ID: the latest expiry counts.
                    expires_at: w
                        .held
                        .get(&("jwt", spiffe_id.clone()))
                        .map_or(*expires_at, |h| h.expires_at.max(*expires_at)),
                    owner: owners.get(spiffe_id).cloned(),
                    status: "active",
                    withdrawn_reason: None,
                },
                IssuedSvid::Wit { spiffe_id, kid, expires_at } => Held {
                    spiffe_id: spiffe_id.clone(),
                    kind: "wit",
                    serial: None,
                    kid: Some(kid.clone()),
                    expires_at: *expires_at,
                    owner: owners.get(spiffe_id).cloned(),
                    status: "active",
                    withdrawn_reason: None,
                },
            };
            w.held.insert((held.kind, held.spiffe_id.clone()), held);
        }
    }

    /// Each live delegated token, soonest expiry first.
    pub(crate) fn grants(&self) -> Vec<Grant> {
        let now = self.now_unix();
        let mut grants: Vec<Grant> = self.lock().grants.values().filter(|g| g.expires_at > now).cloned().collect();
        grants.sort_by(|a, b| (a.expires_at, &a.jti).cmp(&(b.expires_at, &b.jti)));
        grants
    }

    fn withdrawn(&self, pid: i32, had: &[SpiffeId], reason: &str) {
        let mut state = self.lock();
        for w in state.workloads.values_mut().filter(|w| w.pid == pid) {
            for h in w.held.values_mut().filter(|h| had.contains(&h.spiffe_id)) {
                h.status = "withdrawn";
                h.withdrawn_reason = Some(reason.to_owned());
            }
        }
    }

    fn drifted(&self, pid: i32, removed: &[String], added: &[String]) {
        let mut state = self.lock();
        for w in state.workloads.values_mut().filter(|w| w.pid == pid) {
            w.selectors.retain(|s| !removed.contains(s));
            w.selectors.extend(added.iter().cloned());
            w.selectors.sort();
            w.selectors.dedup();
        }
    }

    fn refused(&self, rpc: Rpc, pid: Option<i32>, uid: u32, why: &Refusal) {
        let (exe, reason) = match why {
            Refusal::AttestationFailed(r) => (None, format!("attestation failed: {r}")),
            Refusal::NoEntry { exe, .. } => (Some(exe.clone()), "no registration entry matches".to_owned()),
            Refusal::NotEntitled(id) => (None, format!("not entitled to {id}")),
            Refusal::Revoked { rule, reason, exe, .. } => {
                (Some(exe.clone()), format!("revoked by rule {rule}: {reason}"))
            }
            Refusal::Policy { action, denied } => (
                None,
                format!(
                    "{action} denied by policy: {}",
                    denied.iter().map(|(id, v)| format!("{id} ({})", v.reason())).collect::<Vec<_>>().join("; ")
                ),
            ),
        };
        let mut state = self.lock();
        if state.refusals.len() >= MAX_REFUSALS {
            state.refusals.pop_front();
        }
        state.refusals.push_back(RefusalRecord { time: self.now_unix(), rpc, pid, uid, exe, reason });
    }
}

/// The workload entry of this process, made (room made first, the longest-connected process
/// dropped and logged) when it holds nothing yet.
fn holder<'a>(state: &'a mut State, key: ProcessKey, uid: u32, exe: &ExeEvidence, now: u64) -> &'a mut Workload {
    if !state.workloads.contains_key(&key)
        && state.workloads.len() >= MAX_WORKLOADS
        && let Some(oldest) = state
            .workloads
            .values()
            .min_by_key(|w| w.connected_since)
            .map(|w| ProcessKey { pid: w.pid, start_ticks: w.start_ticks })
    {
        tracing::warn!(pid = oldest.pid, "inventory full ({MAX_WORKLOADS} processes): dropping the oldest entry");
        state.workloads.remove(&oldest);
    }
    state.workloads.entry(key).or_insert_with(|| Workload {
        pid: key.pid,
        start_ticks: key.start_ticks,
        uid,
        exe: exe.clone(),
        script: None,
        selectors: Vec::new(),
        connected_since: now,
        held: BTreeMap::new(),
    })
}

impl Subscriber for Inventory {
    fn on_event(&self, event: &Event) {
        match event {
            Event::Issued { .. } => self.issued(event),
            Event::Withdrawn { pid, had, reason, .. } => self.withdrawn(*pid, had, reason),
            Event::Drift { pid, removed, added, .. } => self.drifted(*pid, removed, added),
            Event::Refused { rpc, pid, uid, why } => self.refused(*rpc, *pid, *uid, why),
            Event::GatewayCall(c) => {
                self.gateway_call(c);
                self.gateway_holder(c);
            }
            Event::Delegation(rec) => self.delegated(rec),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{ProcessFacts, SvidKind};

    fn own_start() -> u64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        stat.rsplit_once(')').unwrap().1.split_whitespace().nth(19).unwrap().parse().unwrap()
    }

    fn issued(pid: i32, start_ticks: u64, id: &str, expires: u64) -> Event {
        Event::Issued {
            rpc: crate::events::Call::FetchX509Svid.into(),
            kind: SvidKind::X509,
            pid,
            uid: 0,
            attested_at: std::time::SystemTime::UNIX_EPOCH,
            exe: ExeEvidence { path: Some("/bin/x".into()), sha256: None },
            selectors_matched: vec![],
            entries: vec![id.parse().unwrap()],
            issued: vec![IssuedSvid::X509 {
                spiffe_id: id.parse().unwrap(),
                serial: "0a".into(),
                not_after: expires,
                reused_for_process: false,
            }],
            audience: None,
            owners: [(id.parse().unwrap(), "team".to_owned())].into(),
            process: Arc::new(ProcessFacts { start_ticks, selectors: vec![], script: None }),
            policy: None,
        }
    }

    #[test]
    fn lists_live_holders_and_drops_dead_or_expired_ones() {
        let clock = Arc::new(crate::clock::FakeClock::at_unix(1_700_000_000));
        let inv = Inventory::with_clock(clock.clone());
        let me = std::process::id() as i32;
        let start = own_start();
        let later = inv.now_unix() + 600;
        inv.on_event(&issued(me, start, "spiffe://t/a", later));
        inv.on_event(&issued(me, start + 1, "spiffe://t/ghost", later)); // pid reused: not this process
        inv.on_event(&issued(me, start, "spiffe://t/old", inv.now_unix() - 1)); // expired
        let (w, _) = inv.snapshot(10);
        assert_eq!(w.len(), 1);
        let ids: Vec<String> = w[0].held.values().map(|h| h.spiffe_id.to_string()).collect();
        assert_eq!(ids, ["spiffe://t/a"]);
        assert_eq!(w[0].held.values().next().unwrap().owner.as_deref(), Some("team"));

        inv.on_event(&Event::Withdrawn {
            rpc: crate::events::Call::FetchX509Svid.into(),
            pid: me,
            uid: 0,
            had: vec!["spiffe://t/a".parse().unwrap()],
            reason: "revoked".into(),
            owners: Default::default(),
        });
        assert_eq!(inv.snapshot(10).0[0].held.values().next().unwrap().status, "withdrawn");
        // When the last identity it held expires, the process leaves.
        clock.advance(Duration::from_secs(599));
        assert_eq!(inv.snapshot(10).0.len(), 1);
        clock.advance(Duration::from_secs(1));
        assert!(inv.snapshot(10).0.is_empty());
    }

    #[test]
    fn refusals_are_bounded_and_newest_last() {
        let inv = Inventory::default();
        for pid in 0..(MAX_REFUSALS as i32 + 10) {
            inv.on_event(&Event::Refused {
                rpc: crate::events::Call::FetchX509Svid.into(),
                pid: Some(pid),
                uid: 1,
                why: Refusal::AttestationFailed("x".into()),
            });
        }
        let (_, r) = inv.snapshot(3);
        let pids: Vec<Option<i32>> = r.iter().map(|r| r.pid).collect();
        let last = MAX_REFUSALS as i32 + 9;
        assert_eq!(pids, [Some(last - 2), Some(last - 1), Some(last)]);
        assert_eq!(inv.lock().refusals.len(), MAX_REFUSALS);
    }
}
