//! Node attestation (`Agent/AttestAgent`) and agent SVID renewal (`Agent/RenewAgent`). The agent
//! key is fresh each time; the new state is persisted by the caller before it is used, because
//! the server retires the old SVID the first time the new one is presented.

use super::error::SpireError;
use super::keys::{new_key_and_csr, unix};
use super::pb::agent::{
    AgentX509svidParams, AttestAgentRequest, RenewAgentRequest, agent_client::AgentClient, attest_agent_request,
    attest_agent_response,
};
use super::pb::bundle::{GetBundleRequest, bundle_client::BundleClient};
use super::pb::types;
use super::persist::AgentState;
use super::x509pop;
use crate::config::spire::NodeAttestation;
use std::time::SystemTime;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

/// Attest over `channel` (server-authenticated TLS only). Returns the agent state and the
/// server's bundle, fetched on the same connection.
pub(crate) async fn attest(channel: Channel, how: &NodeAttestation) -> Result<(AgentState, types::Bundle), SpireError> {
    let kc = new_key_and_csr()?;
    let data = match how {
        NodeAttestation::JoinToken(token) => {
            types::AttestationData { r#type: "join_token".into(), payload: token.as_bytes().to_vec() }
        }
        NodeAttestation::X509Pop { cert_path, intermediates_path, .. } => types::AttestationData {
            r#type: "x509pop".into(),
            payload: x509pop::payload(cert_path, intermediates_path.as_deref())?,
        },
    };
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let first = AttestAgentRequest {
        step: Some(attest_agent_request::Step::Params(attest_agent_request::Params {
            data: Some(data),
            params: Some(AgentX509svidParams { csr: kc.csr }),
        })),
    };
    tx.send(first).await.map_err(|_| SpireError::Protocol("attestation stream closed".into()))?;
    let mut client = AgentClient::new(channel.clone());
    let mut responses = client
        .attest_agent(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(SpireError::rpc("attestation refused"))?
        .into_inner();
    let result = loop {
        let msg = match responses.next().await {
            Some(m) => m.map_err(SpireError::rpc("attestation refused"))?,
            None => return Err(SpireError::Protocol("attestation stream ended without a result".into())),
        };
        match msg.step {
            Some(attest_agent_response::Step::Result(r)) => break r,
            Some(attest_agent_response::Step::Challenge(challenge)) => {
                let NodeAttestation::X509Pop { key_path, .. } = how else {
                    return Err(SpireError::Protocol("a challenge for join_token attestation".into()));
                };
                let answer = x509pop::respond(key_path, &challenge)?;
                let step = attest_agent_request::Step::ChallengeResponse(answer);
                tx.send(AttestAgentRequest { step: Some(step) })
                    .await
                    .map_err(|_| SpireError::Protocol("attestation stream closed".into()))?;
            }
            None => return Err(SpireError::Protocol("empty attestation step".into())),
        }
    };
    drop(tx);
    let svid = result.svid.ok_or_else(|| SpireError::Protocol("attestation result without an SVID".into()))?;
    let state = agent_state(kc.key.expose().to_vec(), svid, result.reattestable)?;
    let bundle = BundleClient::new(channel)
        .get_bundle(GetBundleRequest { output_mask: None })
        .await
        .map_err(SpireError::rpc("GetBundle"))?
        .into_inner();
    Ok((state, bundle))
}

/// `RenewAgent` over the agent's mTLS channel.
pub(crate) async fn renew(channel: Channel, current: &AgentState) -> Result<AgentState, SpireError> {
    let kc = new_key_and_csr()?;
    let resp = AgentClient::new(channel)
        .renew_agent(RenewAgentRequest { params: Some(AgentX509svidParams { csr: kc.csr }) })
        .await
        .map_err(SpireError::rpc("RenewAgent"))?
        .into_inner();
    let svid = resp.svid.ok_or_else(|| SpireError::Protocol("RenewAgent without an SVID".into()))?;
    agent_state(kc.key.expose().to_vec(), svid, current.reattestable)
}

fn agent_state(key_pkcs8: Vec<u8>, svid: types::X509svid, reattestable: bool) -> Result<AgentState, SpireError> {
    if svid.cert_chain.is_empty() {
        return Err(SpireError::Protocol("agent SVID without certificates".into()));
    }
    let id = svid.id.as_ref().map(|i| format!("spiffe://{}{}", i.trust_domain, i.path)).unwrap_or_default();
    let (_, not_after, _) = super::keys::leaf_facts(&svid.cert_chain[0]).map_err(SpireError::Protocol)?;
    Ok(AgentState {
        key_pkcs8,
        chain: svid.cert_chain,
        spiffe_id: id,
        // The certificate's NotAfter is the truth; `expires_at` is a copy of it.
        expires_at: unix(not_after),
        reattestable,
        issued_at: unix(crate::clock::now()),
    })
}

/// Renew at half of the SVID's life, as spire-agent does.
pub(crate) fn renewal_due(state: &AgentState, now: SystemTime) -> bool {
    let half = state.issued_at + (state.expires_at - state.issued_at) / 2;
    unix(now) >= half
}
