//! `tessera proxy connect|accept`: the command line of the `tessera-proxy` crate. Only the command
//! line is here: the proxy is a Workload API client and shares no code with the daemon.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use tessera_proxy::authorize::{AllowList, Pattern};
use tessera_proxy::peer_id::PeerIdHeader;

#[derive(Args, Debug)]
pub(crate) struct ProxyArgs {
    #[command(subcommand)]
    pub command: ProxyCommand,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ProxyCommand {
    /// Outbound: a local agent speaks plain TCP to --listen; the proxy opens mTLS to --to and
    /// admits the server only if its SPIFFE ID matches --allow.
    Connect {
        #[command(flatten)]
        common: Common,
    },
    /// Inbound: terminate mTLS on --listen, admit only clients whose SPIFFE ID matches --allow,
    /// forward the plain stream to the local agent at --to.
    Accept {
        #[command(flatten)]
        common: Common,
        /// How the local agent learns the verified client ID: `none`; `line` (a first line
        /// `X-Spiffe-Id: spiffe://…\r\n`); `proxy-v2` (PROXY protocol v2 header, ID in TLV 0xE0,
        /// plus PP2_TYPE_SSL).
        #[arg(long, value_enum, default_value_t = PeerIdHeaderArg::None)]
        peer_id_header: PeerIdHeaderArg,
    },
}

#[derive(Args, Debug)]
pub(crate) struct Common {
    /// Address to listen on (host:port; port 0 picks one, logged in the "proxy ready" line).
    #[arg(long)]
    pub listen: String,
    /// Where to forward: the remote mTLS endpoint (connect) or the local agent (accept).
    #[arg(long)]
    pub to: String,
    /// Admit peers with this SPIFFE ID: exact (spiffe://td/agents/billing), a whole trust
    /// domain (spiffe://td) or a path prefix (spiffe://td/agents/*). Repeatable.
    #[arg(long, required = true, value_parser = parse_pattern)]
    pub allow: Vec<Pattern>,
    /// Workload API socket: unix:///path or a path. Default: $SPIFFE_ENDPOINT_SOCKET, then the
    /// dev socket.
    #[arg(long, short = 's')]
    pub socket: Option<String>,
    /// Use the SVID with this SPIFFE ID when the proxy is entitled to several (default: first).
    #[arg(long = "spiffe-id")]
    pub spiffe_id: Option<String>,
    /// Bound on getting the first SVID, on each TCP connect and on each TLS handshake.
    #[arg(long, default_value = "10s")]
    pub timeout: String,
    /// Log a "proxy stats" summary this often (when the counters changed) and at shutdown.
    #[arg(long, default_value = "60s")]
    pub stats_interval: String,
}

/// `--peer-id-header` values (the library type carries no CLI concerns).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PeerIdHeaderArg {
    /// Pass the stream through untouched.
    None,
    /// Write `X-Spiffe-Id: <id>\r\n` before the stream.
    Line,
    /// Write a PROXY protocol v2 header with the ID in TLV 0xE0.
    #[value(name = "proxy-v2")]
    ProxyV2,
}

impl From<PeerIdHeaderArg> for PeerIdHeader {
    fn from(a: PeerIdHeaderArg) -> Self {
        match a {
            PeerIdHeaderArg::None => Self::None,
            PeerIdHeaderArg::Line => Self::Line,
            PeerIdHeaderArg::ProxyV2 => Self::ProxyV2,
        }
    }
}

fn parse_pattern(s: &str) -> Result<Pattern, String> {
    s.parse().map_err(|e: tessera_proxy::authorize::PatternError| e.to_string())
}

fn settings(common: Common, default_socket: PathBuf) -> Result<tessera_proxy::Settings> {
    let socket = crate::cli::api::resolve_socket(common.socket, default_socket)?;
    let timeout = crate::duration::parse(&common.timeout).map_err(anyhow::Error::msg).context("--timeout")?;
    let stats_interval =
        crate::duration::parse(&common.stats_interval).map_err(anyhow::Error::msg).context("--stats-interval")?;
    let spiffe_id = common
        .spiffe_id
        .map(|s| tessera_proxy::PeerSpiffeId::new(&s).with_context(|| format!("--spiffe-id {s:?}")))
        .transpose()?;
    Ok(tessera_proxy::Settings {
        endpoint: format!("unix:{}", socket.display()),
        listen: common.listen,
        to: common.to,
        allow: AllowList::new(common.allow),
        spiffe_id,
        timeout: timeout.max(std::time::Duration::from_millis(100)),
        stats_interval: stats_interval.max(std::time::Duration::from_secs(1)),
    })
}

/// Run a proxy until SIGINT/SIGTERM.
pub(crate) fn run(args: ProxyArgs, default_socket: PathBuf) -> Result<()> {
    crate::install_crypto_provider();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        match args.command {
            ProxyCommand::Connect { common } => tessera_proxy::connect::run(settings(common, default_socket)?).await?,
            ProxyCommand::Accept { common, peer_id_header } => {
                tessera_proxy::accept::run(settings(common, default_socket)?, peer_id_header.into()).await?
            }
        }
        Ok(())
    })
}
