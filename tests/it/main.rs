//! The daemon's integration tests: one test binary (`cargo test --test it`), one module per area,
//! each running the real `tessera` binary (`env!("CARGO_BIN_EXE_tessera")`) through `common`.
//! Run one area with a filter on its module: `cargo test --test it -- hardening_b::`.
//!
//! One binary for all: a test that selects the test process by `unix:path:` (its own executable)
//! or re-runs it (`--exact MODULE::NAME`) shares that executable with every other module here.

mod common;

mod attestation;
mod cli;
mod compat;
mod delegation;
mod delegation_rar;
mod discover;
mod federation;
mod fuzz_regressions;
mod gateway;
mod grants;
mod guard;
mod hardening;
mod hardening_b;
mod hardening_c;
mod inventory;
mod live_identity;
mod ocsf;
mod oidc;
mod policy;
mod proxy;
mod revocation;
mod spire_mode;
mod stream_memory;
mod telemetry;
mod wit;
mod workload_api;
