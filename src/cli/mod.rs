//! The command line: [`Cli`] (parsed by the binary) and [`run`]; the subcommands' modules.
mod admin_client;
pub(crate) mod api;
mod attest;
mod audit;
pub(crate) mod check;
mod command;
mod delegation;
mod discover;
mod export;
mod inventory;
mod ocsf;
mod policy;
mod proxy;
mod revoke;

pub use command::{Cli, run};
