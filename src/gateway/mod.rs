//! The node gateway: agents call upstream APIs through it; it attests the calling process,
//! drops whatever credential the agent sent and injects the route's own.

// The server (next) is their user; until then nothing outside the tests calls them.
#[allow(dead_code, reason = "used by the gateway server, which is not wired in yet")]
pub(crate) mod credentials;
#[allow(dead_code, reason = "used by the gateway server, which is not wired in yet")]
pub(crate) mod tls;
