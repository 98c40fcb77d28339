//! Workload X.509-SVIDs from `SVID/BatchNewX509SVID`: one fresh key per entry, at most 500 CSRs
//! per call, a status per item. Every chain that comes back must verify against the trust
//! bundle and name the entry's SPIFFE ID, or it is refused and the previous SVID (if any) kept.

use super::error::SpireError;
use super::keys::{KeyAndCsr, leaf_facts, new_key_and_csr};
use super::pb::svid::{BatchNewX509svidRequest, NewX509svidParams, svid_client::SvidClient};
use crate::secret::PrivateKey;
use crate::spiffe_id::SpiffeId;
use crate::svid::x509::X509Svid;
use rustls::pki_types::{CertificateDer, UnixTime};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tonic::transport::Channel;

/// The server's per-call limit.
pub(crate) const BATCH_LIMIT: usize = 500;

/// One SVID the server signed for an entry, as served.
#[derive(Clone)]
pub(crate) struct Held {
    pub entry_id: String,
    pub revision: i64,
    /// DER certificates, leaf first.
    pub chain: Vec<Vec<u8>>,
    pub svid: Arc<X509Svid>,
    pub issued_at: SystemTime,
}

impl Held {
    /// Rotate at half-life, counted from when it was obtained.
    pub(crate) fn rotate_at(&self) -> SystemTime {
        let life = self.svid.not_after.duration_since(self.issued_at).unwrap_or_default();
        self.issued_at + life / 2
    }

    pub(crate) fn build(
        entry_id: String,
        revision: i64,
        id: SpiffeId,
        hint: Option<String>,
        chain: Vec<Vec<u8>>,
        key: PrivateKey,
        issued_at: SystemTime,
    ) -> Result<Self, String> {
        let leaf = chain.first().ok_or("empty chain")?;
        let (nb, na, serial) = leaf_facts(leaf)?;
        let svid = X509Svid::from_parts(id, chain.concat(), key, serial, (nb, na), hint);
        Ok(Self { entry_id, revision, chain, svid: Arc::new(svid), issued_at })
    }
}

/// What to sign: entry ID, revision, expected SPIFFE ID, hint.
pub(crate) struct Want {
    pub entry_id: String,
    pub revision: i64,
    pub spiffe_id: SpiffeId,
    pub hint: Option<String>,
}

/// Check a chain: it verifies up to one of `roots` now, and its leaf names `id`.
pub(crate) fn verify_chain(chain: &[Vec<u8>], roots: &[Vec<u8>], id: &SpiffeId) -> Result<(), String> {
    let leaf = chain.first().ok_or("empty chain")?;
    let uris = crate::bundle::verifier::uri_sans(leaf)?;
    if uris != [id.to_string()] {
        return Err(format!("leaf names {uris:?}, not {id}"));
    }
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(CertificateDer::from(r.clone())).map_err(|e| e.to_string())?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(store)).build().map_err(|e| e.to_string())?;
    let intermediates: Vec<CertificateDer<'_>> =
        chain[1..].iter().map(|c| CertificateDer::from(c.as_slice())).collect();
    verifier
        .verify_client_cert(&CertificateDer::from(leaf.as_slice()), &intermediates, UnixTime::now())
        .map_err(|e| format!("chain does not verify against the trust bundle: {e}"))?;
    Ok(())
}

/// Sign `wants` in batches; one result per want, in order.
pub(crate) async fn sign(
    channel: Channel,
    wants: Vec<Want>,
    roots: &[Vec<u8>],
) -> Result<Vec<Result<Held, String>>, SpireError> {
    let mut client = SvidClient::new(channel);
    let mut out = Vec::with_capacity(wants.len());
    let mut wants = wants.into_iter().peekable();
    while wants.peek().is_some() {
        let batch: Vec<Want> = wants.by_ref().take(BATCH_LIMIT).collect();
        let keys: Vec<KeyAndCsr> = batch.iter().map(|_| new_key_and_csr()).collect::<Result<_, _>>()?;
        let params = batch
            .iter()
            .zip(&keys)
            .map(|(w, k)| NewX509svidParams { entry_id: w.entry_id.clone(), csr: k.csr.clone() })
            .collect();
        let issued_at = crate::clock::now();
        let resp = client
            .batch_new_x509svid(BatchNewX509svidRequest { params })
            .await
            .map_err(SpireError::rpc("BatchNewX509SVID"))?
            .into_inner();
        if resp.results.len() != batch.len() {
            return Err(SpireError::Protocol(format!(
                "BatchNewX509SVID answered {} results for {} requests",
                resp.results.len(),
                batch.len()
            )));
        }
        for ((want, key), result) in batch.into_iter().zip(keys).zip(resp.results) {
            let code = result.status.as_ref().map(|s| s.code).unwrap_or(0);
            if code != 0 {
                let msg = result.status.map(|s| s.message).unwrap_or_default();
                out.push(Err(format!("server refused entry {}: code {code}: {msg}", want.entry_id)));
                continue;
            }
            let Some(svid) = result.svid else {
                out.push(Err(format!("entry {}: OK without an SVID", want.entry_id)));
                continue;
            };
            let held = verify_chain(&svid.cert_chain, roots, &want.spiffe_id).and_then(|()| {
                Held::build(
                    want.entry_id.clone(),
                    want.revision,
                    want.spiffe_id,
                    want.hint,
                    svid.cert_chain,
                    key.key,
                    issued_at,
                )
            });
            out.push(held.map_err(|e| format!("entry {}: {e}", want.entry_id)));
        }
    }
    Ok(out)
}

/// An SVID must not be served in its last moments: clients need time to use it.
pub(crate) const EXPIRY_MARGIN: Duration = Duration::from_secs(1);
