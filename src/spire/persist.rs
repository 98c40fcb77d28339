//! What SPIRE mode keeps under `data_dir/spire/` so a restart needs neither a new join token nor
//! (with `persist_svids`) the server: the agent key and SVID, the last synced entries and
//! bundles, and optionally the workload SVIDs. Protobuf files, written atomically, mode 0600.

use super::pb::types;
use prost::Message;
use std::path::{Path, PathBuf};

/// The node's own identity.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AgentState {
    /// PKCS#8 DER of the agent key.
    #[prost(bytes = "vec", tag = "1")]
    pub key_pkcs8: Vec<u8>,
    /// Agent SVID chain, leaf first, DER.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub chain: Vec<Vec<u8>>,
    #[prost(string, tag = "3")]
    pub spiffe_id: String,
    /// Unix seconds.
    #[prost(int64, tag = "4")]
    pub expires_at: i64,
    #[prost(bool, tag = "5")]
    pub reattestable: bool,
    /// Unix seconds when this SVID was obtained (renewal at half of [issued, expires]).
    #[prost(int64, tag = "6")]
    pub issued_at: i64,
}

/// The last good sync.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Snapshot {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<types::Entry>,
    #[prost(message, optional, tag = "2")]
    pub bundle: Option<types::Bundle>,
    #[prost(message, repeated, tag = "3")]
    pub federated: Vec<types::Bundle>,
}

/// One workload X.509-SVID as the server signed it, with its key.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StoredSvid {
    #[prost(string, tag = "1")]
    pub entry_id: String,
    /// The entry revision it was signed for.
    #[prost(int64, tag = "2")]
    pub revision: i64,
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub chain: Vec<Vec<u8>>,
    #[prost(bytes = "vec", tag = "4")]
    pub key_pkcs8: Vec<u8>,
    #[prost(int64, tag = "5")]
    pub issued_at: i64,
    #[prost(int64, tag = "6")]
    pub expires_at: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StoredSvids {
    #[prost(message, repeated, tag = "1")]
    pub svids: Vec<StoredSvid>,
}

/// Files under `<data_dir>/spire`.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    dir: PathBuf,
}

impl Store {
    pub(crate) fn open(data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join("spire");
        crate::storage::private_dir(&dir)?;
        Ok(Self { dir })
    }

    fn load<M: Message + Default>(&self, name: &str) -> Option<M> {
        let path = self.dir.join(name);
        let bytes = std::fs::read(&path).ok()?;
        match M::decode(bytes.as_slice()) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable SPIRE state file");
                None
            }
        }
    }

    fn save<M: Message>(&self, name: &str, m: &M) -> std::io::Result<()> {
        crate::storage::write_atomic(&self.dir.join(name), &m.encode_to_vec())
    }

    pub(crate) fn agent(&self) -> Option<AgentState> {
        self.load("agent.pb")
    }
    pub(crate) fn save_agent(&self, a: &AgentState) -> std::io::Result<()> {
        self.save("agent.pb", a)
    }
    /// Banned or evicted: the identity is gone for good.
    pub(crate) fn forget_agent(&self) {
        let _ = std::fs::remove_file(self.dir.join("agent.pb"));
        let _ = std::fs::remove_file(self.dir.join("svids.pb"));
    }
    pub(crate) fn snapshot(&self) -> Option<Snapshot> {
        self.load("cache.pb")
    }
    /// When the last snapshot was written (= the last good sync of an earlier run).
    pub(crate) fn snapshot_time(&self) -> Option<std::time::SystemTime> {
        std::fs::metadata(self.dir.join("cache.pb")).and_then(|m| m.modified()).ok()
    }
    /// Record a good sync that changed nothing (the snapshot's mtime is its time).
    pub(crate) fn touch_snapshot(&self) {
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open(self.dir.join("cache.pb")) {
            let _ = f.set_modified(crate::clock::now());
        }
    }
    pub(crate) fn save_snapshot(&self, s: &Snapshot) -> std::io::Result<()> {
        self.save("cache.pb", s)
    }
    pub(crate) fn svids(&self) -> Option<StoredSvids> {
        self.load("svids.pb")
    }
    pub(crate) fn save_svids(&self, s: &StoredSvids) -> std::io::Result<()> {
        self.save("svids.pb", s)
    }
    /// `persist_svids = false`: no workload key stays on disk from an earlier run.
    pub(crate) fn remove_svids(&self) {
        let _ = std::fs::remove_file(self.dir.join("svids.pb"));
    }
}
