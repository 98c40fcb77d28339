//! A Rust agent serving mTLS with its own SVID, admitting only allowed client SPIFFE IDs.
//!
//!   cargo run --example rust_agent_server -- --socket /run/tessera/api.sock \
//!       --listen 127.0.0.1:9443 --allow spiffe://example.org/agents/client [--once]
//!
//! Prints `ready <addr>` once it accepts connections. For each client that passes the handshake,
//! reads one line and answers `hello <client SPIFFE ID>: <line>`. The SVID and bundle follow
//! rotations (X509Source); the identity check is the client's SPIFFE ID, never a hostname.

use anyhow::{Context, Result};
use clap::Parser;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[derive(Parser)]
struct Args {
    /// Workload API socket path.
    #[arg(long)]
    socket: String,
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Client SPIFFE IDs to admit (exact; repeatable).
    #[arg(long, required = true)]
    allow: Vec<String>,
    /// Exit after serving one client (for scripted runs).
    #[arg(long)]
    once: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    rustls::crypto::aws_lc_rs::default_provider().install_default().ok();
    let source = spiffe::X509Source::builder()
        .endpoint(format!("unix:{}", args.socket))
        .build()
        .await
        .context("no X.509-SVID from the Workload API (is an entry registered for this binary?)")?;
    let me = source.svid()?.spiffe_id().clone();
    // Verify the client's chain against the bundle of *its* trust domain (ours or federated),
    // then authorize its SPIFFE ID.
    let config = spiffe_rustls::mtls_server(source.clone())
        .trust_domain_policy(spiffe_rustls::AnyInBundleSet)
        .authorize(spiffe_rustls::authorizer::exact(args.allow.iter().map(String::as_str))?)
        .build()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    println!("ready {} as {me}", listener.local_addr()?);
    loop {
        let (tcp, remote) = listener.accept().await?;
        let mut tls = match acceptor.accept(tcp).await {
            Ok(tls) => tls,
            Err(e) => {
                eprintln!("refused {remote}: {e}");
                if args.once {
                    anyhow::bail!("client refused");
                }
                continue;
            }
        };
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|leaf| spiffe::cert::spiffe_id_from_der(leaf.as_ref()).ok())
            .context("no SPIFFE ID after a verified handshake")?;
        let mut line = String::new();
        BufReader::new(&mut tls).read_line(&mut line).await?;
        tls.write_all(format!("hello {peer}: {}\n", line.trim_end()).as_bytes()).await?;
        tls.shutdown().await.ok();
        println!("served {peer}");
        if args.once {
            return Ok(());
        }
    }
}
