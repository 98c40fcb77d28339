//! The gateway's TLS client side: one rustls config per trust source (a route's or a token
//! endpoint's `ca_file`, else the system roots) and the HTTPS client built on it.
//!
//! Configs are cached: a request must not re-read and re-parse a PEM bundle. A `ca_file` is
//! stat'ed on each lookup and re-read when it changed (an operator replacing a CA file expects the
//! next request to use it, with no reload). The system roots are read once per process, as
//! other TLS clients do.

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// What identifies one version of a file: a replaced file (new inode), an edit in place (new
/// mtime or size), another file mounted over it (new device) all change it; so does a `chmod`
/// or `chown` (ctime, mode, owner), which must let a secret file refused for its mode be read
/// again once fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStamp {
    dev: u64,
    ino: u64,
    mtime: Option<SystemTime>,
    ctime: (i64, i64),
    size: u64,
    mode: u32,
    uid: u32,
}

impl FileStamp {
    pub(crate) fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            mtime: meta.modified().ok(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            size: meta.size(),
            mode: meta.mode(),
            uid: meta.uid(),
        }
    }

    /// The stamp of the file at `path` now (following symlinks, as reading it does).
    pub(crate) fn read(path: &Path) -> std::io::Result<Self> {
        std::fs::metadata(path).map(|m| Self::of(&m))
    }
}

/// Built configs by (ca_file, ALPN h2), with the stamp of the CA file they were built from.
type ConfigCache = HashMap<(Option<PathBuf>, bool), (Option<FileStamp>, Arc<rustls::ClientConfig>)>;

fn cache() -> &'static Mutex<ConfigCache> {
    static CACHE: OnceLock<Mutex<ConfigCache>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The system's trust anchors, read once (`SSL_CERT_FILE`/`SSL_CERT_DIR` or the platform store).
fn system_roots() -> Result<Arc<rustls::RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<rustls::RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut store = rustls::RootCertStore::empty();
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found.errors.first().map(|e| format!(": {e}")).unwrap_or_default();
                return Err(format!("no system CA certificates could be loaded{why}"));
            }
            Ok(Arc::new(store))
        })
        .clone()
}

/// Exactly the certificates in the PEM file at `path`.
fn file_roots(path: &Path) -> Result<Arc<rustls::RootCertStore>, String> {
    let mut store = rustls::RootCertStore::empty();
    let iter =
        CertificateDer::pem_file_iter(path).map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
    for cert in iter {
        let cert = cert.map_err(|e| format!("CA file {} is not valid PEM: {e}", path.display()))?;
        store.add(cert).map_err(|e| format!("CA file {} holds an unusable certificate: {e}", path.display()))?;
    }
    if store.is_empty() {
        return Err(format!("CA file {} holds no certificate", path.display()));
    }
    Ok(Arc::new(store))
}

fn build(roots: Arc<rustls::RootCertStore>, alpn_h2: bool) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols =
        if alpn_h2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    Ok(Arc::new(config))
}

/// The TLS client config trusting exactly the PEM certificates in `ca_file` when given, else the
/// system roots; offering `h2` and `http/1.1` by ALPN when `alpn_h2`, else `http/1.1` only.
pub(crate) fn client_config(ca_file: Option<&Path>, alpn_h2: bool) -> Result<Arc<rustls::ClientConfig>, String> {
    let stamp = match ca_file {
        None => None,
        Some(p) => Some(FileStamp::read(p).map_err(|e| format!("cannot read CA file {}: {e}", p.display()))?),
    };
    let key = (ca_file.map(Path::to_path_buf), alpn_h2);
    {
        let cache = cache().lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, cfg)) = cache.get(&key)
            && *s == stamp
        {
            return Ok(cfg.clone());
        }
    }
    // Built outside the lock: a slow disk must not stall lookups of other configs. Two requests
    // racing here both build; the second insert wins, and both configs are equally good.
    let roots = match ca_file {
        None => system_roots()?,
        Some(p) => file_roots(p)?,
    };
    let config = build(roots, alpn_h2)?;
    cache().lock().unwrap_or_else(|p| p.into_inner()).insert(key, (stamp, config.clone()));
    Ok(config)
}

/// An HTTPS-only client over `config` (HTTP/2 when the config offers `h2` and the server picks
/// it, else HTTP/1.1). Never through a proxy: hyper's connector ignores `HTTP(S)_PROXY`, and the
/// gateway must not honour them (one could point at the gateway itself, or at someone who would
/// see the injected credentials).
pub(crate) fn https_client<B>(
    config: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
) -> Client<HttpsConnector<HttpConnector>, B>
where
    B: http_body::Body + Send,
    B::Data: Send,
{
    let mut http = HttpConnector::new();
    // The HTTPS connector checks the scheme; the TCP one must let `https` URIs through.
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    // Not the builder: it insists on setting ALPN itself and panics on a config that has it,
    // while the config (shared, cached) already carries the protocols this client offers.
    let mut https = HttpsConnector::from((http, config));
    https.enforce_https();
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(https)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_file(dir: &Path, name: &str, der: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))).unwrap();
        path
    }

    #[test]
    fn a_ca_file_is_cached_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = pem_file(dir.path(), "ca.pem", &crate::ca::test_pki::ca().der);
        let a = client_config(Some(&path), true).unwrap();
        let b = client_config(Some(&path), true).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "same file, same config");
        assert_eq!(a.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        let h1 = client_config(Some(&path), false).unwrap();
        assert_eq!(h1.alpn_protocols, vec![b"http/1.1".to_vec()]);
        // Replaced by another CA (new inode and size): read again.
        let other = pem_file(dir.path(), "new.pem", &crate::ca::test_pki::ca().der);
        std::fs::write(&other, format!("{}\n", std::fs::read_to_string(&other).unwrap())).unwrap();
        std::fs::rename(&other, &path).unwrap();
        let c = client_config(Some(&path), true).unwrap();
        assert!(!Arc::ptr_eq(&a, &c), "a changed file is read again");
    }

    #[test]
    fn a_bad_ca_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let e = client_config(Some(&path), false).unwrap_err();
        assert!(e.contains("no certificate"), "{e}");
        let e = client_config(Some(&dir.path().join("missing.pem")), false).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
    }
}
