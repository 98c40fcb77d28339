//! The node-local CA of the trust domain: X.509 signing authorities and JWT signing keys, their
//! persistence under `data_dir` (one state file, written atomically, mode 0600) and their rotation.
//!
//! Rotation keeps nothing in flight from breaking: a successor is created at half the current
//! authority's life and published in the bundle at once, takes over signing a while later, and the
//! old one stays in the bundle until it expires (no SVID outlives the authority that signed it).

use crate::spiffe_id::TrustDomain;
use crate::storage;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType,
};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

const STATE_FILE: &str = "ca.json";
const STATE_VERSION: u32 = 1;
/// Written once a CA exists, so that a lost `ca.json` is noticed instead of replaced.
const MARKER_FILE: &str = "trust_domain";
const LOCK_FILE: &str = "ca.lock";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    #[error("cannot write CA state {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read CA state {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "CA state {path} is corrupt ({reason}); refusing to start rather than silently create a new trust domain. \
         Restore it from backup, or move it away to start a new trust domain on purpose"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "CA state {path} belongs to trust domain {found:?}, but the config says {want:?}; \
         use another data_dir for a different trust domain"
    )]
    WrongTrustDomain { path: PathBuf, found: String, want: String },
    #[error(
        "CA state {path} is missing although {marker} says this data_dir already had a CA; refusing to start a \
         new trust domain silently. Restore ca.json from backup, or remove the marker to start over on purpose",
        marker = MARKER_FILE
    )]
    Missing { path: PathBuf },
    #[error("{path} is in use by another tessera daemon; give each daemon its own data_dir")]
    Locked { path: PathBuf },
    #[error("upstream CA: {0}")]
    Upstream(String),
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("JWT key error: {0}")]
    Jwt(String),
}

/// One X.509 signing authority (self-signed root, or an intermediate under an upstream root).
pub struct X509Authority {
    pub cert_der: Vec<u8>,
    /// Certificates that follow the leaf in an SVID chain (the intermediate under an upstream root).
    pub chain_tail_der: Vec<u8>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    issuer: Issuer<'static, KeyPair>,
}

impl X509Authority {
    pub fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }
}

/// One ES256 JWT signing key.
pub struct JwtKey {
    pub kid: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub encoding: jsonwebtoken::EncodingKey,
    /// Uncompressed P-256 point (0x04 || X || Y).
    pub public_point: Vec<u8>,
}

/// A consistent snapshot of the CA: what signs now and what the bundles contain.
pub struct Authorities {
    /// Oldest first; the newest active one signs.
    pub x509: Vec<Arc<X509Authority>>,
    pub jwt: Vec<Arc<JwtKey>>,
    /// The X.509 trust bundle (DER certificates): our self-signed roots, or the upstream roots.
    pub roots: Vec<Vec<u8>>,
}

impl Authorities {
    /// The authority that signs at `now`: the newest whose activation time has come.
    pub fn x509_signer(&self, now: SystemTime) -> Option<&Arc<X509Authority>> {
        self.x509.iter().rev().find(|a| a.not_before <= now && now < a.not_after)
    }
    pub fn jwt_signer(&self, now: SystemTime) -> Option<&Arc<JwtKey>> {
        self.jwt.iter().rev().find(|k| k.not_before <= now && now < k.not_after)
    }
    /// The local X.509 bundle as the Workload API carries it: concatenated DER.
    pub fn x509_bundle_der(&self) -> Vec<u8> {
        self.roots.concat()
    }
    /// The bundle's certificates, one DER each.
    pub fn bundle_certs(&self) -> &[Vec<u8>] {
        &self.roots
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredState {
    version: u32,
    trust_domain: String,
    x509: Vec<StoredX509>,
    jwt: Vec<StoredJwt>,
    /// Roots of the operator's PKI that our intermediates chain to (PEM), if any.
    #[serde(default)]
    upstream_roots: Vec<String>,
    /// Roots the operator has replaced, kept until what chains to them has expired.
    #[serde(default)]
    retired_roots: Vec<RetiredRoot>,
}

#[derive(Clone, Serialize, Deserialize)]
struct RetiredRoot {
    pem: String,
    /// Unix seconds after which nothing chains to this root any more.
    until: u64,
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredX509 {
    cert_pem: String,
    key_pem: String,
    /// An intermediate under an upstream root (it goes into SVID chains, not into the bundle).
    #[serde(default)]
    intermediate: bool,
    /// When this authority may start signing (unix seconds); it is in the bundle before that.
    active_from: u64,
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredJwt {
    kid: String,
    key_pem: String,
    active_from: u64,
    not_after: u64,
}

impl Drop for StoredState {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for a in &mut self.x509 {
            a.key_pem.zeroize();
        }
        for k in &mut self.jwt {
            k.key_pem.zeroize();
        }
    }
}

/// The CA: state on disk plus the in-memory signing keys.
pub struct Ca {
    trust_domain: TrustDomain,
    path: PathBuf,
    ttl: Duration,
    upstream: Option<crate::config::Upstream>,
    /// Held for the daemon's life: two daemons sharing a data_dir would overwrite each other's keys.
    _lock: nix::fcntl::Flock<std::fs::File>,
    state: RwLock<Arc<Authorities>>,
    /// Same content as on disk; kept to append on rotation without re-reading.
    stored: RwLock<StoredState>,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
fn from_unix(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s)
}

impl Ca {
    /// Load the CA state from `data_dir`, or create a new CA there on first start.
    pub fn open(
        data_dir: &Path,
        trust_domain: &TrustDomain,
        ttl: Duration,
        upstream: Option<crate::config::Upstream>,
    ) -> Result<Self, CaError> {
        let path = data_dir.join(STATE_FILE);
        storage::private_dir(data_dir).map_err(|source| CaError::Write { path: data_dir.to_owned(), source })?;
        let lock_path = data_dir.join(LOCK_FILE);
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|source| CaError::Write { path: lock_path.clone(), source })?;
        let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| CaError::Locked { path: data_dir.to_owned() })?;
        storage::remove_stale_temps(data_dir).map_err(|source| CaError::Write { path: data_dir.to_owned(), source })?;
        let stored = match std::fs::read(&path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                let s: StoredState = serde_json::from_slice(&bytes)
                    .map_err(|e| CaError::Corrupt { path: path.clone(), reason: e.to_string() })?;
                if s.version != STATE_VERSION {
                    return Err(CaError::Corrupt { path, reason: format!("unknown version {}", s.version) });
                }
                if s.trust_domain != trust_domain.as_str() {
                    return Err(CaError::WrongTrustDomain {
                        path,
                        found: s.trust_domain.clone(),
                        want: trust_domain.to_string(),
                    });
                }
                s
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if data_dir.join(MARKER_FILE).exists() {
                    return Err(CaError::Missing { path });
                }
                let s = StoredState {
                    version: STATE_VERSION,
                    trust_domain: trust_domain.to_string(),
                    x509: vec![],
                    jwt: vec![],
                    upstream_roots: vec![],
                    retired_roots: vec![],
                };
                tracing::info!(path = %path.display(), trust_domain = %trust_domain, "no CA state yet: creating a new CA");
                s
            }
            Err(source) => return Err(CaError::Read { path, source }),
        };
        let authorities = build(&stored, &path)?;
        let ca = Self {
            trust_domain: trust_domain.clone(),
            path,
            ttl,
            upstream,
            _lock: lock,
            state: RwLock::new(Arc::new(authorities)),
            stored: RwLock::new(stored),
        };
        // A switch between self-signed and upstream mode takes effect with a new authority now.
        let mode_changed = {
            let stored = ca.stored.read().unwrap_or_else(|p| p.into_inner());
            stored.x509.last().is_some_and(|last| last.intermediate != ca.upstream.is_some())
        };
        ca.rotate(SystemTime::now(), mode_changed)?;
        let marker = data_dir.join(MARKER_FILE);
        if !marker.exists() {
            storage::write_atomic(&marker, format!("{trust_domain}\n").as_bytes())
                .map_err(|source| CaError::Write { path: marker, source })?;
        }
        Ok(ca)
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The current snapshot (cheap: an `Arc` clone).
    pub fn authorities(&self) -> Arc<Authorities> {
        self.state.read().map(|s| s.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Create successors at half-life, drop expired authorities. Returns true if the bundle changed.
    /// Each change is on disk before it is used.
    pub fn rotate_if_due(&self, now: SystemTime) -> Result<bool, CaError> {
        self.rotate(now, false)
    }

    fn rotate(&self, now: SystemTime, force_x509: bool) -> Result<bool, CaError> {
        let mut stored = self.stored.write().unwrap_or_else(|p| p.into_inner());
        let auth = self.authorities();
        // Work on a copy: memory changes only after the disk has the new state.
        let mut next = stored.clone();
        let mut changed = false;
        // Successors become signers after a tenth of the lifetime, so every client has fetched the new
        // bundle (pushed at once on the bundle streams) before the first SVID it signs is seen —
        // unless nothing could sign meanwhile (first start, or a restart late in the CA's life).
        let lead = self.ttl / 10;
        let covered = |signer: Option<SystemTime>| signer.is_some_and(|not_after| not_after > now + lead);
        let needs_x509 = force_x509
            || match auth.x509.last() {
                None => true,
                Some(last) => half_life_passed(last.not_before, last.not_after, now),
            };
        if needs_x509 {
            let x509_covered = !force_x509 && covered(auth.x509_signer(now).map(|a| a.not_after));
            let active_from = if x509_covered { now + lead } else { now };
            let (cert_pem, key_pem, roots) = self.new_x509_authority(now)?;
            next.x509.push(StoredX509 {
                cert_pem,
                key_pem,
                intermediate: self.upstream.is_some(),
                active_from: unix(active_from),
            });
            if let Some(roots) = roots {
                // Roots dropped by the operator stay trusted until every intermediate issued under
                // them (and so every SVID those signed) has expired.
                let until = auth.x509.iter().map(|a| unix(a.not_after)).max().unwrap_or(0);
                for old in std::mem::take(&mut next.upstream_roots) {
                    if !roots.contains(&old) {
                        next.retired_roots.push(RetiredRoot { pem: old, until });
                    }
                }
                next.upstream_roots = roots;
            }
            changed = true;
        }
        let needs_jwt = match auth.jwt.last() {
            None => true,
            Some(last) => half_life_passed(last.not_before, last.not_after, now),
        };
        if needs_jwt {
            let jwt_covered = covered(auth.jwt_signer(now).map(|k| k.not_after));
            let active_from = if jwt_covered { now + lead } else { now };
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
            next.jwt.push(StoredJwt {
                kid: random_kid(),
                key_pem: key.serialize_pem(),
                active_from: unix(active_from),
                not_after: unix(now + self.ttl),
            });
            changed = true;
        }
        // Expired authorities signed nothing still valid: drop them from the bundle.
        let before = (next.x509.len(), next.jwt.len(), next.retired_roots.len());
        let expired_x509: Vec<bool> = auth.x509.iter().map(|a| a.not_after <= now).collect();
        let mut i = 0;
        next.x509.retain(|_| {
            let keep = !expired_x509.get(i).copied().unwrap_or(false);
            i += 1;
            keep
        });
        next.jwt.retain(|k| from_unix(k.not_after) > now);
        next.retired_roots.retain(|r| from_unix(r.until) > now);
        changed |= before != (next.x509.len(), next.jwt.len(), next.retired_roots.len());
        if changed {
            let built = build(&next, &self.path)?;
            let json = Zeroizing::new(serde_json::to_vec_pretty(&next).map_err(|e| CaError::Jwt(e.to_string()))?);
            storage::write_atomic(&self.path, &json)
                .map_err(|source| CaError::Write { path: self.path.clone(), source })?;
            *stored = next;
            *self.state.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(built);
            tracing::info!(x509_authorities = stored.x509.len(), jwt_keys = stored.jwt.len(), "CA state updated");
        }
        Ok(changed)
    }

    /// A new signing authority: a self-signed root, or an intermediate signed by the upstream root
    /// (whose files are read afresh each time, so the operator can rotate them without a restart).
    /// Returns the cert and key PEM, and the upstream roots to publish if there is an upstream.
    fn new_x509_authority(&self, now: SystemTime) -> Result<(String, String, Option<Vec<String>>), CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "tessera");
        dn.push(DnType::CommonName, format!("tessera CA {}", self.trust_domain));
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.subject_alt_names = vec![SanType::URI(self.trust_domain.id_string().try_into()?)];
        params.serial_number = Some(crate::svid::x509::random_serial());
        params.not_before = (now - Duration::from_secs(10)).into();
        let Some(up) = &self.upstream else {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.not_after = (now + self.ttl).into();
            let cert = params.self_signed(&key)?;
            return Ok((cert.pem(), key.serialize_pem(), None));
        };
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map_err(|source| CaError::Upstream(format!("cannot read {}: {source}", p.display())))
        };
        let up_cert_pem = read(&up.cert)?;
        let up_key = KeyPair::from_pem(&Zeroizing::new(read(&up.key)?))
            .map_err(|e| CaError::Upstream(format!("{}: {e}", up.key.display())))?;
        let up_der = pem::parse(&up_cert_pem)
            .map_err(|e| CaError::Upstream(format!("{}: {e}", up.cert.display())))?
            .into_contents();
        let (_, up_parsed) = x509_parser::parse_x509_certificate(&up_der)
            .map_err(|e| CaError::Upstream(format!("{}: {e}", up.cert.display())))?;
        if up_parsed.public_key().raw != up_key.subject_public_key_info().as_slice() {
            return Err(CaError::Upstream(format!("{} does not match {}", up.key.display(), up.cert.display())));
        }
        if !up_parsed.is_ca() {
            return Err(CaError::Upstream(format!("{} is not a CA certificate", up.cert.display())));
        }
        let up_not_after = from_unix(up_parsed.validity().not_after.timestamp().max(0) as u64);
        // The node's intermediate signs only leaves (pathLen 0) and never outlives its root.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.not_after = (now + self.ttl).min(up_not_after).into();
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_ca_cert_der(&up_der.clone().into(), up_key)?;
        let cert = params.signed_by(&key, &issuer)?;
        let roots = match &up.bundle {
            Some(b) => {
                let text = read(b)?;
                let blocks = pem::parse_many(&text).map_err(|e| CaError::Upstream(format!("{}: {e}", b.display())))?;
                blocks.iter().filter(|p| p.tag() == "CERTIFICATE").map(pem::encode).collect::<Vec<_>>()
            }
            None => vec![up_cert_pem],
        };
        if roots.is_empty() {
            return Err(CaError::Upstream("the upstream bundle holds no certificate".into()));
        }
        Ok((cert.pem(), key.serialize_pem(), Some(roots)))
    }
}

fn half_life_passed(not_before: SystemTime, not_after: SystemTime, now: SystemTime) -> bool {
    let life = not_after.duration_since(not_before).unwrap_or_default();
    now >= not_before + life / 2
}

fn random_kid() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn build(stored: &StoredState, path: &Path) -> Result<Authorities, CaError> {
    let corrupt = |reason: String| CaError::Corrupt { path: path.to_owned(), reason };
    let mut x509 = Vec::new();
    let mut roots = Vec::new();
    for r in stored.upstream_roots.iter().chain(stored.retired_roots.iter().map(|r| &r.pem)) {
        roots.push(pem::parse(r).map_err(|e| corrupt(format!("upstream root: {e}")))?.into_contents());
    }
    for a in &stored.x509 {
        let der = pem::parse(&a.cert_pem).map_err(|e| corrupt(format!("CA certificate: {e}")))?.into_contents();
        let key = KeyPair::from_pem(&a.key_pem).map_err(|e| corrupt(format!("CA key: {e}")))?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(&der).map_err(|e| corrupt(format!("CA certificate: {e}")))?;
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(corrupt("CA key does not match its certificate".into()));
        }
        let not_after = from_unix(parsed.validity().not_after.timestamp().max(0) as u64);
        let issuer = Issuer::from_ca_cert_der(&der.clone().into(), key)?;
        if !a.intermediate {
            roots.push(der.clone());
        }
        x509.push(Arc::new(X509Authority {
            chain_tail_der: if a.intermediate { der.clone() } else { Vec::new() },
            cert_der: der,
            not_before: from_unix(a.active_from),
            not_after,
            issuer,
        }));
    }
    let mut jwt = Vec::new();
    for k in &stored.jwt {
        let key = KeyPair::from_pem(&k.key_pem).map_err(|e| corrupt(format!("JWT key {}: {e}", k.kid)))?;
        let der = Zeroizing::new(key.serialize_der());
        jwt.push(Arc::new(JwtKey {
            kid: k.kid.clone(),
            not_before: from_unix(k.active_from),
            not_after: from_unix(k.not_after),
            encoding: jsonwebtoken::EncodingKey::from_ec_der(&der),
            public_point: key.public_key_raw().to_vec(),
        }));
    }
    Ok(Authorities { x509, jwt, roots })
}
