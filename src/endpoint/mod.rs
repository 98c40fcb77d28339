//! The SPIFFE Workload API on its socket (the transport below it is [`crate::net`]):
//! [`workload_api`] is the SpiffeWorkloadAPI service, whose streams [`stream`] drives and
//! [`streaming`] serves; [`context`] is what they share; [`status`] is the one place errors become
//! gRPC codes; [`convert`] turns JSON claims into protobuf structs.
pub(crate) mod context;
pub(crate) mod convert;
pub(crate) mod status;
pub(crate) mod stream;
pub(crate) mod streaming;
pub(crate) mod workload_api;
