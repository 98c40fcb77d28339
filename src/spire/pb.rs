//! Generated SPIRE Server API types and clients (proto/spire, spire-api-sdk v1.13.3). The module
//! tree mirrors the proto packages because the generated code refers across them (`super::…`).
#![allow(clippy::all, missing_docs, unreachable_pub)]

pub mod spire {
    pub mod api {
        pub mod types {
            tonic::include_proto!("spire.api.types");
        }
        pub mod server {
            pub mod agent {
                pub mod v1 {
                    tonic::include_proto!("spire.api.server.agent.v1");
                }
            }
            pub mod bundle {
                pub mod v1 {
                    tonic::include_proto!("spire.api.server.bundle.v1");
                }
            }
            pub mod entry {
                pub mod v1 {
                    tonic::include_proto!("spire.api.server.entry.v1");
                }
            }
            pub mod svid {
                pub mod v1 {
                    tonic::include_proto!("spire.api.server.svid.v1");
                }
            }
        }
    }
}

pub use spire::api::server::agent::v1 as agent;
pub use spire::api::server::bundle::v1 as bundle;
pub use spire::api::server::entry::v1 as entry;
pub use spire::api::server::svid::v1 as svid;
pub use spire::api::types;
