//! STUB (replaced by the creds branch).
use std::path::Path;
use std::sync::Arc;
pub(crate) fn client_config(ca_file: Option<&Path>, alpn_h2: bool) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(p) = ca_file {
        let pem = std::fs::read(p).map_err(|e| e.to_string())?;
        for c in rustls_pemfile_certs(&pem) {
            roots.add(c).map_err(|e| e.to_string())?;
        }
    } else {
        for c in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(c);
        }
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = if alpn_h2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    Ok(Arc::new(cfg))
}
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    pem::parse_many(pem).unwrap_or_default().into_iter().filter(|p| p.tag() == "CERTIFICATE").map(|p| p.into_contents().into()).collect()
}
