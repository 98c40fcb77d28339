//! A Rust agent calling an mTLS server with its own SVID, admitting only the expected server ID.
//!
//!   cargo run --example rust_agent_client -- --socket /run/tessera/api.sock \
//!       --connect 127.0.0.1:9443 --server-id spiffe://example.org/agents/server [--message hi]
//!
//! Prints the server's answer and exits 0, or exits 1 if the handshake or authorization fails.

use anyhow::{Context, Result};
use clap::Parser;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[derive(Parser)]
struct Args {
    /// Workload API socket path.
    #[arg(long)]
    socket: String,
    #[arg(long)]
    connect: String,
    /// The SPIFFE ID the server must have (exact; repeatable).
    #[arg(long = "server-id", required = true)]
    server_id: Vec<String>,
    #[arg(long, default_value = "ping")]
    message: String,
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
    let config = spiffe_rustls::mtls_client(source.clone())
        .trust_domain_policy(spiffe_rustls::AnyInBundleSet)
        .authorize(spiffe_rustls::authorizer::exact(args.server_id.iter().map(String::as_str))?)
        .build()?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(&args.connect).await?;
    // The name only fills SNI: the server is authenticated by its SPIFFE ID.
    let name = rustls::pki_types::ServerName::try_from("spiffe-peer")?;
    let mut tls = connector.connect(name, tcp).await.context("mTLS handshake (server refused or not authorized)")?;
    tls.write_all(format!("{}\n", args.message).as_bytes()).await?;
    let mut answer = String::new();
    BufReader::new(&mut tls).read_line(&mut answer).await.context("reading the answer")?;
    anyhow::ensure!(!answer.is_empty(), "server closed the connection (it refused our SVID?)");
    print!("{answer}");
    Ok(())
}
