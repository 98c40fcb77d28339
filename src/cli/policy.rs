//! `tessera policy`: print the shipped Cedar schema, check the policy files of a config, explain
//! one decision offline.

use crate::config::Config;
use crate::registry::authz::{Ask, Ctx, Resource, What, schema};
use crate::spiffe_id::SpiffeId;
use anyhow::{Context as _, Result, anyhow, bail};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand)]
pub(crate) enum PolicyCommand {
    /// Print the Cedar schema policies are validated against (with --config: its
    /// authorization_details types in `context.details`).
    Schema {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate the policy files of a config: exit non-zero with file, line, column and reason.
    Check {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Decide one request offline and print the decision, the determining policies and errors.
    Explain {
        /// JSON: {"principal": SPIFFE ID, "action": "fetch_x509"|"fetch_jwt"|"delegate"|"call"|"serve",
        /// "resource": ID, "resource_type": "Guard"|"Tool" (serve), "selectors": [..], "context": {..}}
        request: PathBuf,
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

/// The config named by --config, else $TESSERA_CONFIG, else /etc/tessera/tessera.toml.
fn config_path(given: Option<PathBuf>) -> PathBuf {
    given
        .or_else(|| std::env::var_os("TESSERA_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/etc/tessera/tessera.toml"))
}

fn load(path: &Path) -> Result<Config> {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    Config::load(&path).map_err(|e| anyhow!("{e}"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    principal: String,
    action: String,
    resource: Option<String>,
    resource_type: Option<String>,
    #[serde(default)]
    selectors: Option<Vec<String>>,
    #[serde(default)]
    context: RequestContext,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RequestContext {
    user: Option<String>,
    scopes: Option<Vec<String>>,
    chain: Option<Vec<String>>,
    depth: Option<i64>,
    approved: Option<bool>,
    subject_issuer: Option<String>,
    details: Option<serde_json::Map<String, serde_json::Value>>,
    method: Option<String>,
    path: Option<String>,
    route: Option<String>,
    mcp_method: Option<String>,
}

pub(crate) fn run(command: PolicyCommand) -> Result<()> {
    match command {
        PolicyCommand::Schema { config } => {
            let details = match config {
                Some(c) => load(&c)?.detail_types(),
                None => Vec::new(),
            };
            print!("{}", schema::text(&details));
            Ok(())
        }
        PolicyCommand::Check { config } => {
            let path = config_path(config);
            let cfg = load(&path)?;
            let Some(p) = &cfg.policy else {
                bail!("{} has no [policy] section: no policies are in force", path.display());
            };
            for w in &p.authz.warnings {
                println!("warning: {w}");
            }
            let files: Vec<String> = p.authz.files.iter().map(|f| f.display().to_string()).collect();
            println!(
                "OK: {} policies in {} file{} ({}), mode {}",
                p.authz.count,
                files.len(),
                if files.len() == 1 { "" } else { "s" },
                files.join(", "),
                match p.authz.mode {
                    crate::registry::authz::Mode::Enforce => "enforce",
                    crate::registry::authz::Mode::Log => "log",
                }
            );
            Ok(())
        }
        PolicyCommand::Explain { request, config, json } => {
            let path = config_path(config);
            let cfg = load(&path)?;
            let Some(p) = &cfg.policy else {
                bail!("{} has no [policy] section: without it every action follows the fixed rules", path.display());
            };
            let text = std::fs::read_to_string(&request).with_context(|| format!("reading {}", request.display()))?;
            let req: Request =
                serde_json::from_str(&text).with_context(|| format!("{} is not a request", request.display()))?;
            let principal: SpiffeId = req.principal.parse().map_err(|e| anyhow!("principal: {e}"))?;
            let what = What::from_name(&req.action).ok_or_else(|| {
                anyhow!("action {:?}: one of fetch_x509, fetch_jwt, delegate, call, serve", req.action)
            })?;
            let own = principal.to_string();
            let res = req.resource.as_deref();
            let resource = match (what, req.resource_type.as_deref()) {
                (What::FetchX509, _) => Resource::Agent(res.unwrap_or(&own)),
                (What::FetchJwt | What::Delegate, _) => Resource::Audience(res.context("resource: the audience")?),
                (What::Call, _) => Resource::Host(res.context("resource: the upstream host")?),
                (What::Serve, None | Some("Guard")) => Resource::Guard(res.context("resource: the guard's name")?),
                (What::Serve, Some("Tool")) => Resource::Tool(res.context("resource: the tool's name")?),
                (What::Serve, Some(t)) => bail!("resource_type {t:?}: Guard or Tool"),
            };
            let entry = cfg.registry.entries().iter().find(|e| e.spiffe_id == principal && !e.retired).map(|e| &**e);
            let c = &req.context;
            let ask = Ask {
                what,
                principal: &principal,
                entry,
                selectors: req.selectors.as_deref(),
                resource,
                ctx: Ctx {
                    user: c.user.as_deref(),
                    scopes: c.scopes.as_deref(),
                    chain: c.chain.as_deref(),
                    depth: c.depth,
                    approved: c.approved,
                    subject_issuer: c.subject_issuer.as_deref(),
                    details: c.details.as_ref(),
                    method: c.method.as_deref(),
                    path: c.path.as_deref(),
                    route: c.route.as_deref(),
                    mcp_method: c.mcp_method.as_deref(),
                },
            };
            let v = p.authz.decide(&ask);
            if json {
                println!("{}", serde_json::to_string_pretty(&v.audit())?);
            } else {
                println!("decision: {}", v.decision.as_str());
                println!(
                    "policies: {}",
                    if v.policies.is_empty() { "(none: no policy permits)".into() } else { v.policies.join(", ") }
                );
                for e in &v.errors {
                    println!("error: {e}");
                }
                if entry.is_none() {
                    println!("note: {principal} has no entry in {}: no owner, no tags", path.display());
                }
            }
            Ok(())
        }
    }
}
