//! `tessera revoke`: add, list and lift runtime revocations over the admin socket.

use super::admin_client::{call, revocation_line, s};
use anyhow::{Result, bail};
use std::path::Path;

/// What `tessera revoke` was asked to do.
pub(super) enum Revoke {
    Add { selector: Option<String>, spiffe_id: Option<String>, reason: String },
    List { json: bool },
    Lift { id: String },
}

pub(super) fn revoke(socket: &Path, action: Revoke) -> Result<()> {
    match action {
        Revoke::Add { selector, spiffe_id, reason } => {
            let answer = call(
                socket,
                http::Method::POST,
                "/revocations",
                Some(serde_json::json!({ "selector": selector, "spiffe_id": spiffe_id, "reason": reason })),
            )?;
            println!("{}", s(&answer["message"]));
        }
        Revoke::List { json } => {
            let answer = call(socket, http::Method::GET, "/revocations", None)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                for r in answer["revocations"].as_array().unwrap_or(&Vec::new()) {
                    println!("{}", revocation_line(r));
                }
            }
        }
        Revoke::Lift { id } => {
            if id.is_empty() || id.contains('/') || id.contains('?') {
                bail!("invalid revocation ID {id:?}");
            }
            let answer = call(socket, http::Method::DELETE, &format!("/revocations/{id}"), None)?;
            println!("{}", s(&answer["message"]));
        }
    }
    Ok(())
}
