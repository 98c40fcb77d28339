//! The `tessera` command line: subcommands shaped like `spire-agent`'s, parsed by clap and run
//! here (the binary only parses and calls [`run`]).

use crate::config::Config;
use crate::config::dev as devmode;
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "tessera", version, about = "Node-local SPIFFE Workload API daemon with process attestation")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon. Without --config: a dev-mode default for trying tessera out.
    Run {
        #[arg(long, short, env = "TESSERA_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate a config file; exit non-zero with located errors.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the selectors of a running process, grouped by attestor, with their strength.
    Attest {
        pid: i32,
        /// Use the attestor settings (env allowlist, config files) of this config.
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        /// Print a ready-to-paste `spire-server entry create` command with these selectors.
        #[arg(long, conflicts_with = "json")]
        spire: bool,
    },
    /// Talk to a Workload API (tessera's or any SPIFFE one).
    Api {
        #[command(subcommand)]
        command: ApiCommand,
        /// Socket: unix:///path or a path. Default: $SPIFFE_ENDPOINT_SOCKET, then the dev socket.
        #[arg(long, short = 's', global = true, alias = "socketPath")]
        socket: Option<String>,
        /// Connection timeout.
        #[arg(long, global = true, default_value = "5s")]
        timeout: String,
    },
    /// mTLS for plain-TCP agents, authorized by SPIFFE ID (the proxy holds the SVID).
    Proxy(super::proxy::ProxyArgs),
    /// Delegation requests waiting for a human's decision (admin socket).
    Approvals(super::delegation::ListArgs),
    /// Approve a pending delegation request; the agent then gets its token once.
    Approve(super::delegation::DecideArgs),
    /// Reject a pending delegation request; the agent gets access_denied.
    Reject(super::delegation::DecideArgs),
    /// Write published documents as files for static hosting.
    Export {
        #[command(subcommand)]
        what: ExportWhat,
        /// The admin socket (default: from --config, $TESSERA_ADMIN_SOCKET, /run/tessera/admin.sock).
        #[arg(long, global = true)]
        admin_socket: Option<PathBuf>,
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
    },
    /// Audit trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The live inventory: entries with owners, workloads holding identities, recent refusals.
    Inventory {
        #[command(flatten)]
        admin: AdminArgs,
        /// The stable JSON document (docs/inventory.md).
        #[arg(long)]
        json: bool,
        /// How many recent refusals to list.
        #[arg(long, default_value_t = 20)]
        refusals: usize,
    },
    /// Processes that look like agents (signatures, key-like environment variables) and hold no
    /// tessera identity; keys are named, never shown (docs/discovery.md).
    Discover {
        /// (`--config` also gives `[[discovery.signatures]]`.)
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        json: bool,
    },
    /// Revoke identities at once: by selector (binary, script, config digest) or SPIFFE ID.
    Revoke(RevokeArgs),
    /// Cedar policies: the schema, checking the files, explaining a decision.
    Policy {
        #[command(subcommand)]
        command: super::policy::PolicyCommand,
    },
}

/// How admin commands find the admin socket.
#[derive(clap::Args)]
struct AdminArgs {
    /// The admin socket (else $TESSERA_ADMIN_SOCKET, else admin_socket_path of --config, else
    /// /run/tessera/admin.sock).
    #[arg(long)]
    admin_socket: Option<PathBuf>,
    #[arg(long, short)]
    config: Option<PathBuf>,
}

impl AdminArgs {
    fn socket(&self) -> Result<PathBuf> {
        crate::admin::socket_for_cli(self.admin_socket.as_deref(), self.config.as_deref())
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("action").required(true).args(["selector", "spiffe_id", "list", "lift"])))]
struct RevokeArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// Deny every workload with this selector (e.g. unix:sha256:HEX).
    #[arg(long, requires = "reason")]
    selector: Option<String>,
    /// Deny this SPIFFE ID to every workload; its JWT-SVIDs stop validating here.
    #[arg(long = "spiffe-id", requires = "reason")]
    spiffe_id: Option<String>,
    /// Why (recorded in the audit log).
    #[arg(long)]
    reason: Option<String>,
    /// List revocations, one a line: ID, what it matches, reason.
    #[arg(long)]
    list: bool,
    /// With --list: JSON.
    #[arg(long, requires = "list")]
    json: bool,
    /// Lift the runtime revocation with this ID.
    #[arg(long, value_name = "ID")]
    lift: Option<String>,
}

#[derive(Subcommand)]
enum ApiCommand {
    /// Fetch SVIDs.
    Fetch {
        #[command(subcommand)]
        what: Option<FetchWhat>,
    },
    /// Validate tokens.
    Validate {
        #[command(subcommand)]
        what: ValidateWhat,
    },
    /// Stream X.509-SVID updates until interrupted.
    Watch,
}

#[derive(Subcommand)]
enum FetchWhat {
    /// X.509-SVIDs (the default of `api fetch`).
    X509 {
        /// Write svid.N.pem, svid.N.key and bundle.N.pem into this directory.
        #[arg(long)]
        write: Option<PathBuf>,
        #[arg(long)]
        silent: bool,
    },
    /// JWT-SVIDs for an audience.
    Jwt {
        #[arg(long, short, required = true, value_delimiter = ',')]
        audience: Vec<String>,
        #[arg(long = "spiffe-id", alias = "spiffeID")]
        spiffe_id: Option<String>,
    },
    /// X.509 and JWT bundles.
    Bundles,
    /// WIT-SVIDs and the WIT bundle.
    Wit {
        #[arg(long = "spiffe-id", alias = "spiffeID")]
        spiffe_id: Option<String>,
        /// Write wit.N.jwt, wit.N.key.jwk (0600) and wit_bundle.N.jwks into this directory.
        #[arg(long)]
        write: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ValidateWhat {
    /// Validate a JWT-SVID for an audience.
    Jwt {
        #[arg(long, short)]
        audience: String,
        /// The token (or use --svid).
        token: Option<String>,
        #[arg(long)]
        svid: Option<String>,
    },
}

#[derive(Subcommand)]
enum ExportWhat {
    /// OIDC discovery document and JWKS into DIR (.well-known/openid-configuration, keys).
    Oidc { dir: PathBuf },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the hash chain across the audit file and its rotated predecessors (files, or a
    /// directory for its audit.log*); report the first edited, inserted or deleted line.
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// A chain head logged by the daemon (audit_anchor=SEQ:HASH): fail if the files do not
        /// reach it, i.e. lines were cut from the end.
        #[arg(long)]
        anchor: Option<String>,
    },
    /// Export audit lines for a SIEM, one record per line on stdout (files, or a directory for
    /// its audit.log*, in chain order); docs/ocsf.md has the mapping.
    Export {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The output format: `ocsf` (OCSF 1.8.0 events).
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Keep reading the live audit.log as it grows, across rotations.
        #[arg(long)]
        follow: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    Ocsf,
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TESSERA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("TESSERA_LOG_FORMAT").is_ok_and(|v| v == "json");
    use std::io::IsTerminal;
    // Colour only on a terminal: log files and journald get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn load(path: &PathBuf) -> Result<Config> {
    // Absolute, so reloads and file watching do not depend on the working directory.
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
    Config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Run one command line. `once_serving` runs once the daemon serves (`tessera run`): the binary
/// drops its start-up code from memory there.
pub fn run(cli: Cli, once_serving: impl FnOnce() + Send + 'static) -> Result<()> {
    match cli.command {
        Command::Run { config } => {
            init_logging();
            let cfg = match config {
                Some(path) => load(&path)?,
                None => {
                    let cfg = devmode::config()?;
                    // Before the banner: a second `tessera run` beside a running one says so and
                    // nothing else.
                    crate::daemon::ensure_not_running(&cfg)?;
                    let sock = cfg.socket_path.display().to_string();
                    tracing::warn!(
                        "DEV MODE: no --config given; using a built-in development setup. Do not use it in production."
                    );
                    tracing::warn!(
                        "DEV MODE: trust domain {}, socket {sock}, data {}, identity {} for processes of uid {}",
                        cfg.trust_domain,
                        cfg.data_dir.display(),
                        cfg.registry.entries()[0].spiffe_id,
                        nix::unistd::geteuid()
                    );
                    eprintln!(
                        "\n  In another terminal:\n    tessera api fetch x509\n  or, for any SPIFFE SDK:\n    export SPIFFE_ENDPOINT_SOCKET=unix://{sock}\n"
                    );
                    cfg
                }
            };
            // Blocking threads (attestation reads and hashing) exit 2 s after their last job
            // instead of tokio's 10 s: an idle daemon keeps only its workers' stacks.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_keep_alive(Duration::from_secs(2))
                .build()?;
            rt.block_on(crate::daemon::run_then(cfg, once_serving))?;
            Ok(())
        }
        Command::Policy { command } => super::policy::run(command),
        Command::Check { config } => {
            let cfg = load(&config)?;
            let mut weak = super::check::weak_only_entries(&cfg);
            weak.extend(super::check::publication_warnings(&cfg));
            weak.extend(super::check::self_approval_warnings(&cfg, nix::unistd::geteuid().as_raw()));
            for w in &weak {
                println!("warning: {w}");
            }
            for w in &cfg.warnings {
                println!("warning: {}:{}: {}: {}\n      fix: {}", config.display(), w.line, w.key, w.message, w.fix);
            }
            println!(
                "{}: OK ({} entries, trust domain {})",
                config.display(),
                cfg.registry.entries().len(),
                cfg.trust_domain
            );
            Ok(())
        }
        Command::Attest { pid, config, json, spire } => {
            let loaded = config.as_ref().map(load).transpose()?;
            let td = loaded.as_ref().map(|c| c.trust_domain.to_string());
            let attest = loaded.map(|c| c.attest).unwrap_or_default();
            if spire {
                super::attest::run_spire(pid, attest, td.as_deref())
            } else {
                super::attest::run(pid, attest, json)
            }
        }
        Command::Api { command, socket, timeout } => {
            let timeout = crate::duration::parse(&timeout).map_err(anyhow::Error::msg).context("--timeout")?;
            let sock = super::api::resolve_socket(socket, devmode::socket_path())?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async move {
                let mut client =
                    tokio::time::timeout(timeout.max(Duration::from_millis(100)), super::api::connect(&sock, timeout))
                        .await
                        .with_context(|| format!("timed out connecting to {}", sock.display()))?
                        .with_context(|| format!("socket {}", sock.display()))?;
                match command {
                    ApiCommand::Fetch { what } => {
                        match what.unwrap_or(FetchWhat::X509 { write: None, silent: false }) {
                            FetchWhat::X509 { write, silent } => {
                                super::api::fetch_x509(&mut client, write.as_deref(), silent).await
                            }
                            FetchWhat::Jwt { audience, spiffe_id } => {
                                super::api::fetch_jwt(&mut client, audience, spiffe_id).await
                            }
                            FetchWhat::Bundles => super::api::fetch_bundles(&mut client).await,
                            FetchWhat::Wit { spiffe_id, write } => {
                                super::api::fetch_wit(&mut client, spiffe_id, write.as_deref()).await
                            }
                        }
                    }
                    ApiCommand::Validate { what: ValidateWhat::Jwt { audience, token, svid } } => {
                        let Some(token) = token.or(svid) else { bail!("give the token as an argument or with --svid") };
                        super::api::validate_jwt(&mut client, audience, token).await
                    }
                    ApiCommand::Watch => super::api::watch(&mut client).await,
                }
            })
        }
        Command::Proxy(args) => {
            init_logging();
            super::proxy::run(args, devmode::socket_path())
        }
        Command::Approvals(args) => tokio::runtime::Runtime::new()?.block_on(super::delegation::list(args)),
        Command::Approve(args) => tokio::runtime::Runtime::new()?.block_on(super::delegation::decide(args, true)),
        Command::Reject(args) => tokio::runtime::Runtime::new()?.block_on(super::delegation::decide(args, false)),
        Command::Export { what: ExportWhat::Oidc { dir }, admin_socket, config } => {
            let sock = crate::admin::socket_for_cli(admin_socket.as_deref(), config.as_deref())?;
            let said = tokio::runtime::Runtime::new()?.block_on(super::export::oidc(&sock, &dir))?;
            println!("{said}");
            Ok(())
        }
        Command::Audit { command: AuditCommand::Verify { files, anchor } } => {
            super::audit::verify(&files, anchor.as_deref())
        }
        Command::Audit { command: AuditCommand::Export { files, format: ExportFormat::Ocsf, follow } } => {
            super::audit::export(&files, follow)
        }
        Command::Inventory { admin, json, refusals } => super::inventory::inventory(&admin.socket()?, json, refusals),
        Command::Discover { admin, json } => {
            let socket = admin.socket().unwrap_or_else(|_| PathBuf::from("/run/tessera/admin.sock"));
            super::discover::discover(&socket, admin.config.as_deref(), json)
        }
        Command::Revoke(args) => {
            use super::revoke::Revoke;
            let action = if args.list {
                Revoke::List { json: args.json }
            } else if let Some(id) = args.lift {
                Revoke::Lift { id }
            } else {
                let reason = args.reason.context("--reason is required")?;
                Revoke::Add { selector: args.selector, spiffe_id: args.spiffe_id, reason }
            };
            super::revoke::revoke(&args.admin.socket()?, action)
        }
    }
}
