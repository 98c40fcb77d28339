//! Entry and bundle sync. `Entry/SyncAuthorizedEntries`: the server sends full entries when there
//! are few, else pages of (id, revision, created_at); the client then asks, in sorted chunks of
//! the first page's size, for the entries it does not hold at that revision. Servers without it
//! get `GetAuthorizedEntries`. Entries not seen in a sync are gone.

use super::error::SpireError;
use super::pb::bundle::{GetBundleRequest, GetFederatedBundleRequest, bundle_client::BundleClient};
use super::pb::entry::{
    GetAuthorizedEntriesRequest, SyncAuthorizedEntriesRequest, SyncAuthorizedEntriesResponse, entry_client::EntryClient,
};
use super::pb::types;
use std::collections::{BTreeSet, HashMap};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

/// The fields spire-agent asks for; TTLs and DNS names are applied by the server when it signs.
fn mask() -> types::EntryMask {
    types::EntryMask {
        spiffe_id: true,
        selectors: true,
        federates_with: true,
        admin: true,
        downstream: true,
        revision_number: true,
        store_svid: true,
        hint: true,
        created_at: true,
        ..Default::default()
    }
}

/// The entries authorized for this agent now. `cache` (by entry ID) saves refetching unchanged ones.
pub(crate) async fn entries(
    channel: Channel,
    cache: &HashMap<String, types::Entry>,
) -> Result<Vec<types::Entry>, SpireError> {
    let mut client = EntryClient::new(channel.clone());
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let closed = || SpireError::Protocol("SyncAuthorizedEntries stream closed early".into());
    tx.send(SyncAuthorizedEntriesRequest { output_mask: Some(mask()), ids: vec![] }).await.map_err(|_| closed())?;
    let mut stream = match client.sync_authorized_entries(tokio_stream::wrappers::ReceiverStream::new(rx)).await {
        Ok(s) => s.into_inner(),
        Err(s) if s.code() == tonic::Code::Unimplemented => return get_authorized(client).await,
        Err(s) => return Err(SpireError::rpc("SyncAuthorizedEntries")(s)),
    };
    let next = |m: Option<Result<SyncAuthorizedEntriesResponse, tonic::Status>>| match m {
        Some(r) => r.map_err(SpireError::rpc("SyncAuthorizedEntries")),
        None => Err(closed()),
    };
    let first = next(stream.next().await)?;
    if first.entry_revisions.is_empty() {
        // Few entries: they came whole, in one response.
        if first.more {
            return Err(SpireError::Protocol("full entries with more=true".into()));
        }
        return Ok(first.entries);
    }
    let page = first.entry_revisions.len();
    let mut revisions = first.entry_revisions;
    let mut more = first.more;
    while more {
        let r = next(stream.next().await)?;
        revisions.extend(r.entry_revisions);
        more = r.more;
    }
    let mut out = Vec::with_capacity(revisions.len());
    let mut stale = BTreeSet::new();
    for rev in &revisions {
        match cache.get(&rev.id) {
            Some(e) if e.revision_number == rev.revision_number && e.created_at == rev.created_at => {
                out.push(e.clone())
            }
            _ => {
                stale.insert(rev.id.clone());
            }
        }
    }
    let stale: Vec<String> = stale.into_iter().collect();
    for chunk in stale.chunks(page) {
        tx.send(SyncAuthorizedEntriesRequest { output_mask: None, ids: chunk.to_vec() }).await.map_err(|_| closed())?;
        loop {
            let r = next(stream.next().await)?;
            out.extend(r.entries);
            if !r.more {
                break;
            }
        }
    }
    drop(tx);
    Ok(out)
}

async fn get_authorized(mut client: EntryClient<Channel>) -> Result<Vec<types::Entry>, SpireError> {
    Ok(client
        .get_authorized_entries(GetAuthorizedEntriesRequest { output_mask: Some(mask()) })
        .await
        .map_err(SpireError::rpc("GetAuthorizedEntries"))?
        .into_inner()
        .entries)
}

/// The trust domain's bundle, and the federated bundles `entries` name (missing ones are skipped).
pub(crate) async fn bundles(
    channel: Channel,
    entries: &[types::Entry],
) -> Result<(types::Bundle, Vec<types::Bundle>), SpireError> {
    let mut client = BundleClient::new(channel);
    let own = client
        .get_bundle(GetBundleRequest { output_mask: None })
        .await
        .map_err(SpireError::rpc("GetBundle"))?
        .into_inner();
    let wanted: BTreeSet<&String> = entries.iter().flat_map(|e| e.federates_with.iter()).collect();
    let mut federated = Vec::new();
    for td in wanted {
        match client
            .get_federated_bundle(GetFederatedBundleRequest { trust_domain: td.clone(), output_mask: None })
            .await
        {
            Ok(b) => federated.push(b.into_inner()),
            Err(s) if s.code() == tonic::Code::NotFound => {
                tracing::warn!(trust_domain = %td, "no federated bundle on the server")
            }
            Err(s) => return Err(SpireError::rpc("GetFederatedBundle")(s)),
        }
    }
    Ok((own, federated))
}
