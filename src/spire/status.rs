//! Reading SPIRE's error details: a PermissionDenied status carries a
//! `spire.api.types.PermissionDeniedDetails` in its `google.rpc.Status` details, and the reason
//! decides between re-attesting, renewing and stopping for good.

use super::pb::types::{PermissionDeniedDetails, permission_denied_details::Reason};
use prost::Message;

/// `google.rpc.Status`, only to find the details.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// The PermissionDenied reason the server gave, if any.
pub(crate) fn denied_reason(status: &tonic::Status) -> Option<Reason> {
    if status.code() != tonic::Code::PermissionDenied {
        return None;
    }
    let rpc = RpcStatus::decode(status.details()).ok()?;
    rpc.details.iter().find(|a| a.type_url.ends_with("spire.api.types.PermissionDeniedDetails")).and_then(|a| {
        PermissionDeniedDetails::decode(a.value.as_slice()).ok().and_then(|d| Reason::try_from(d.reason).ok())
    })
}

/// A status carrying `reason`, as the server sends it (for the test server).
pub fn denied(message: &str, reason: Reason) -> tonic::Status {
    let details = PermissionDeniedDetails { reason: reason as i32 };
    let rpc = RpcStatus {
        code: tonic::Code::PermissionDenied as i32,
        message: message.to_owned(),
        details: vec![prost_types::Any {
            type_url: "type.googleapis.com/spire.api.types.PermissionDeniedDetails".into(),
            value: details.encode_to_vec(),
        }],
    };
    tonic::Status::with_details(tonic::Code::PermissionDenied, message, rpc.encode_to_vec().into())
}
