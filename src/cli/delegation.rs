//! `tessera approvals`, `tessera approve ID`, `tessera reject ID`: the human in the loop, over
//! the admin socket.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::time::Duration;

/// Where the admin socket is (see `admin::socket_for_cli`).
#[derive(clap::Args, Debug)]
pub(super) struct AdminArgs {
    /// The admin socket (default: $TESSERA_ADMIN_SOCKET, then admin_socket_path of --config).
    #[arg(long)]
    pub admin_socket: Option<PathBuf>,
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub(super) struct ListArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Print the JSON answer.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub(super) struct DecideArgs {
    /// The approval_id the agent was given.
    pub approval_id: String,
    #[command(flatten)]
    pub admin: AdminArgs,
}

async fn call(admin: &AdminArgs, method: http::Method, path: &str) -> Result<(http::StatusCode, serde_json::Value)> {
    let socket = crate::admin::socket_for_cli(admin.admin_socket.as_deref(), admin.config.as_deref())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (status, body) = crate::net::http::client::request(&socket, method, path, None, Duration::from_secs(10))
        .await
        .map_err(|e| super::admin_client::unreachable(&socket, e))?;
    let v = serde_json::from_slice(&body).with_context(|| format!("{path}: answer is not JSON"))?;
    Ok((status, v))
}

/// `tessera approvals`
pub(super) async fn list(args: ListArgs) -> Result<()> {
    let (status, v) = call(&args.admin, http::Method::GET, "/approvals").await?;
    if !status.is_success() {
        bail!("{status}: {v}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let list = v["approvals"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no pending approvals");
    }
    for a in list {
        let scope: Vec<&str> = a["scope"].as_array().into_iter().flatten().filter_map(|s| s.as_str()).collect();
        println!(
            "{}  {}  agent={} (uid {}) user={} scope=\"{}\" audience={} expires_at={}{}{}",
            a["approval_id"].as_str().unwrap_or("?"),
            a["state"].as_str().unwrap_or("?"),
            a["agent"].as_str().unwrap_or("?"),
            a["agent_uid"],
            a["user"].as_str().unwrap_or("?"),
            scope.join(" "),
            a["audience"].as_str().unwrap_or("?"),
            a["expires_at"],
            a["approver"].as_str().map(|by| format!(" approver={by}")).unwrap_or_default(),
            details(&a),
        );
    }
    Ok(())
}

/// `tessera approve ID` / `tessera reject ID`
pub(super) async fn decide(args: DecideArgs, approve: bool) -> Result<()> {
    let id = &args.approval_id;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        bail!("{id:?} is not an approval id (see `tessera approvals`)");
    }
    let verb = if approve { "approve" } else { "reject" };
    let (status, v) = call(&args.admin, http::Method::POST, &format!("/approvals/{id}/{verb}")).await?;
    if !status.is_success() {
        bail!("{}", v["message"].as_str().or(v["error"].as_str()).unwrap_or("refused"));
    }
    let scope: Vec<&str> = v["scope"].as_array().into_iter().flatten().filter_map(|s| s.as_str()).collect();
    let (agent, user, aud) =
        (v["agent"].as_str().unwrap_or("?"), v["user"].as_str().unwrap_or("?"), v["audience"].as_str().unwrap_or("?"));
    if approve {
        println!("approved {id}: {agent} may act for {user} with \"{}\" on {aud}{}", scope.join(" "), details(&v));
    } else {
        println!(
            "rejected {id}: {agent} may NOT act for {user} with \"{}\" on {aud}{}; its next request gets access_denied",
            scope.join(" "),
            details(&v)
        );
    }
    Ok(())
}

/// ` authorization_details=[…]` (the JSON as requested: what the approval binds to), or nothing.
fn details(a: &serde_json::Value) -> String {
    match &a["authorization_details"] {
        serde_json::Value::Null => String::new(),
        d => format!(" authorization_details={d}"),
    }
}
