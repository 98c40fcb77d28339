//! `tessera api …`: a Workload API client shaped like `spire-agent api`, for operators and tests.

use crate::pb;
use crate::pb::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Client = SpiffeWorkloadApiClient<
    InterceptedService<Channel, fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>>,
>;

fn add_header(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    req.metadata_mut().insert("workload.spiffe.io", tonic::metadata::MetadataValue::from_static("true"));
    Ok(req)
}

/// Connect to the Workload API on a Unix socket.
pub(crate) async fn connect(socket: &Path, timeout: Duration) -> Result<Client> {
    let socket = socket.to_owned();
    let channel = tonic::transport::Endpoint::try_from("http://localhost")?
        .connect_timeout(timeout)
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(socket).await?))
            }
        }))
        .await
        .context("cannot connect to the Workload API socket")?;
    Ok(SpiffeWorkloadApiClient::with_interceptor(channel, add_header as fn(_) -> _))
}

fn pem_block(tag: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(tag, der.to_vec()))
}

/// Split concatenated DER certificates.
pub fn split_certs(mut der: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while !der.is_empty() {
        let (rest, _) =
            x509_parser::parse_x509_certificate(der).map_err(|e| anyhow::anyhow!("bad certificate: {e}"))?;
        out.push(der[..der.len() - rest.len()].to_vec());
        der = rest;
    }
    Ok(out)
}

fn describe_svid(svid: &pb::X509svid) -> Result<String> {
    let certs = split_certs(&svid.x509_svid)?;
    let leaf = certs.first().context("empty SVID")?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|e| anyhow::anyhow!("{e}"))?;
    let bundle = split_certs(&svid.bundle)?;
    let mut s = format!("SPIFFE ID:\t\t{}\n", svid.spiffe_id);
    if !svid.hint.is_empty() {
        s += &format!("Hint:\t\t\t{}\n", svid.hint);
    }
    s += &format!("SVID Valid After:\t{}\n", cert.validity().not_before);
    s += &format!("SVID Valid Until:\t{}\n", cert.validity().not_after);
    s += &format!("Serial:\t\t\t{}\n", cert.raw_serial_as_string());
    s += &format!("Intermediates:\t\t{}\n", certs.len() - 1);
    s += &format!("CA certificates:\t{}\n", bundle.len());
    Ok(s)
}

pub(crate) async fn fetch_x509(client: &mut Client, write: Option<&Path>, silent: bool) -> Result<()> {
    let mut stream = client.fetch_x509svid(pb::X509svidRequest {}).await?.into_inner();
    let resp = stream.message().await?.context("the server closed the stream without a response")?;
    if !silent {
        println!("Received {} svid{}\n", resp.svids.len(), if resp.svids.len() == 1 { "" } else { "s" });
        for svid in &resp.svids {
            println!("{}", describe_svid(svid)?);
        }
    }
    if let Some(dir) = write {
        std::fs::create_dir_all(dir)?;
        for (i, svid) in resp.svids.iter().enumerate() {
            let certs: String = split_certs(&svid.x509_svid)?.iter().map(|c| pem_block("CERTIFICATE", c)).collect();
            let bundle: String = split_certs(&svid.bundle)?.iter().map(|c| pem_block("CERTIFICATE", c)).collect();
            std::fs::write(dir.join(format!("svid.{i}.pem")), certs)?;
            crate::storage::write_atomic(
                &dir.join(format!("svid.{i}.key")),
                pem_block("PRIVATE KEY", &svid.x509_svid_key).as_bytes(),
            )?;
            std::fs::write(dir.join(format!("bundle.{i}.pem")), bundle)?;
            if !silent {
                println!("Writing SVID #{i} to file {}", dir.join(format!("svid.{i}.pem")).display());
                println!("Writing key #{i} to file {}", dir.join(format!("svid.{i}.key")).display());
                println!("Writing bundle #{i} to file {}", dir.join(format!("bundle.{i}.pem")).display());
            }
        }
        for (td, der) in &resp.federated_bundles {
            let name = td.trim_start_matches("spiffe://");
            let pems: String = split_certs(der)?.iter().map(|c| pem_block("CERTIFICATE", c)).collect();
            std::fs::write(dir.join(format!("federated_bundle.{name}.pem")), pems)?;
        }
    }
    Ok(())
}

pub(crate) async fn fetch_jwt(client: &mut Client, audience: Vec<String>, spiffe_id: Option<String>) -> Result<()> {
    let resp = client
        .fetch_jwtsvid(pb::JwtsvidRequest { audience, spiffe_id: spiffe_id.unwrap_or_default() })
        .await?
        .into_inner();
    for svid in resp.svids {
        // The token is printed because the operator asked for it; tessera itself never logs one.
        println!("token({}):\n\t{}\n", svid.spiffe_id, svid.svid);
    }
    let mut stream = client.fetch_jwt_bundles(pb::JwtBundlesRequest {}).await?.into_inner();
    if let Some(b) = stream.message().await? {
        for (td, jwks) in b.bundles {
            println!("bundle({td}):\n\t{}\n", String::from_utf8_lossy(&jwks));
        }
    }
    Ok(())
}

/// WIT-SVIDs: the tokens and the WIT bundle are printed; the private JWKs only go to files in
/// `write` (wit.N.jwt, wit.N.key.jwk mode 0600, wit_bundle.N.jwks).
pub(crate) async fn fetch_wit(client: &mut Client, spiffe_id: Option<String>, write: Option<&Path>) -> Result<()> {
    let mut stream =
        client.fetch_witsvid(pb::WitsvidRequest { spiffe_id: spiffe_id.unwrap_or_default() }).await?.into_inner();
    let resp = stream.message().await?.context("the stream ended without a WIT-SVID")?;
    let mut bundles = client.fetch_wit_bundles(pb::WitBundlesRequest {}).await?.into_inner();
    let b = bundles.message().await?.context("no WIT bundles")?;
    for (i, svid) in resp.svids.iter().enumerate() {
        println!("wit({}):\n\t{}\n", svid.spiffe_id, svid.wit_svid);
        if let Some(dir) = write {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::write(dir.join(format!("wit.{i}.jwt")), &svid.wit_svid)?;
            let key_path = dir.join(format!("wit.{i}.key.jwk"));
            let mut f =
                std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&key_path)?;
            f.write_all(svid.wit_svid_key.as_bytes())?;
            println!("wrote {} and {}", dir.join(format!("wit.{i}.jwt")).display(), key_path.display());
        }
    }
    let mut tds: Vec<_> = b.bundles.keys().cloned().collect();
    tds.sort();
    for (i, td) in tds.iter().enumerate() {
        println!("wit bundle({td}):\n\t{}\n", b.bundles[td]);
        if let Some(dir) = write {
            std::fs::write(dir.join(format!("wit_bundle.{i}.jwks")), &b.bundles[td])?;
        }
    }
    Ok(())
}

pub(crate) async fn fetch_bundles(client: &mut Client) -> Result<()> {
    let mut x = client.fetch_x509_bundles(pb::X509BundlesRequest {}).await?.into_inner();
    let xb = x.message().await?.context("no X.509 bundles")?;
    let mut tds: Vec<_> = xb.bundles.keys().cloned().collect();
    tds.sort();
    for td in tds {
        let certs = split_certs(&xb.bundles[&td])?;
        println!("X.509 bundle {td}: {} CA certificate{}", certs.len(), if certs.len() == 1 { "" } else { "s" });
        for c in certs {
            print!("{}", pem_block("CERTIFICATE", &c));
        }
    }
    let mut j = client.fetch_jwt_bundles(pb::JwtBundlesRequest {}).await?.into_inner();
    let jb = j.message().await?.context("no JWT bundles")?;
    for (td, jwks) in jb.bundles {
        println!("JWT bundle {td}: {}", String::from_utf8_lossy(&jwks));
    }
    Ok(())
}

pub(crate) async fn validate_jwt(client: &mut Client, audience: String, token: String) -> Result<()> {
    let resp = client.validate_jwtsvid(pb::ValidateJwtsvidRequest { audience, svid: token }).await;
    match resp {
        Ok(r) => {
            let r = r.into_inner();
            println!("SVID is valid.\nSPIFFE ID : {}", r.spiffe_id);
            if let Some(claims) = r.claims {
                let mut keys: Vec<_> = claims.fields.keys().cloned().collect();
                keys.sort();
                println!("Claims    : {}", keys.join(", "));
            }
            Ok(())
        }
        Err(status) => bail!("SVID is not valid: {} ({:?})", status.message(), status.code()),
    }
}

pub(crate) async fn watch(client: &mut Client) -> Result<()> {
    let mut stream = client.fetch_x509svid(pb::X509svidRequest {}).await?.into_inner();
    while let Some(resp) = stream.message().await? {
        println!("Received {} svid{} at {}", resp.svids.len(), if resp.svids.len() == 1 { "" } else { "s" }, now());
        for svid in &resp.svids {
            println!("{}", describe_svid(svid)?);
        }
    }
    bail!("the server closed the stream")
}

fn now() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// The socket a client should use: `--socket`, else `SPIFFE_ENDPOINT_SOCKET`, else the default.
pub(crate) fn resolve_socket(flag: Option<String>, default: PathBuf) -> Result<PathBuf> {
    match flag.or_else(|| std::env::var("SPIFFE_ENDPOINT_SOCKET").ok().filter(|s| !s.is_empty())) {
        Some(addr) => crate::net::listener::socket_from_address(&addr).map_err(anyhow::Error::msg),
        None => {
            // The dev-mode default lives in a shared place (/tmp): talk to it only if the directory
            // is ours alone, or another user's socket could receive our requests (and tokens).
            if let Some(dir) = default.parent()
                && dir.exists()
            {
                crate::config::dev::check_socket_dir(dir)?;
            }
            Ok(default)
        }
    }
}
