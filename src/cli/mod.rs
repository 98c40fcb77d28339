//! Command-line subcommands other than `run`: Workload API client, config check, attest, audit.
mod admin_client;
pub mod api;
pub mod attest;
pub mod audit;
pub mod check;
pub mod delegation;
pub mod export;
pub mod inventory;
pub mod revoke;
