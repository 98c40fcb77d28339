//! The node-local CA of the trust domain: X.509 signing authorities and JWT signing keys, their
//! persistence under `data_dir` (one state file, written atomically, mode 0600) and their rotation.
//!
//! Rotation keeps nothing in flight from breaking: a successor is created at half the current
//! authority's life and published in the bundle at once, takes over signing a while later, and the
//! old one stays in the bundle until it expires (no SVID outlives the authority that signed it).
//!
//! Layout: [`keyring`] (the snapshot that signs), [`rotation`] (the one rotation rule, pure),
//! [`store`] (`ca.json`), [`upstream`] (an operator root), [`serial`] (serials and key IDs).

pub(crate) mod keyring;
pub(crate) mod rotation;
pub(crate) mod serial;
mod store;
#[cfg(test)]
pub(crate) mod test_pki;
pub(crate) mod upstream;

pub(crate) use keyring::{Authorities, JwtKey, X509Authority};
pub use rotation::KeyKind;
pub(crate) use upstream::Upstream;

use crate::secret::PrivateKey;
use crate::spiffe_id::TrustDomain;
use crate::storage;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType,
};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use store::{Change, StateView, StoredJwt, StoredState, StoredX509, secs, time};
use zeroize::Zeroizing;

const STATE_FILE: &str = "ca.json";
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
    #[error("cannot encode CA state: {0}")]
    Serialize(String),
}

/// The CA: state on disk plus the in-memory signing keys.
pub struct Ca {
    trust_domain: TrustDomain,
    path: PathBuf,
    ttl: Duration,
    upstream: Option<Upstream>,
    /// Held for the daemon's life: two daemons sharing a data_dir would overwrite each other's keys.
    _lock: nix::fcntl::Flock<std::fs::File>,
    state: RwLock<Arc<Authorities>>,
    /// Same content as on disk; kept to append on rotation without re-reading.
    stored: RwLock<StoredState>,
}

impl Ca {
    /// `Locked` when another daemon holds `data_dir` (its lock file is taken); nothing is created.
    pub fn ensure_unlocked(data_dir: &Path) -> Result<(), CaError> {
        let Ok(file) = std::fs::File::open(data_dir.join(LOCK_FILE)) else { return Ok(()) };
        // Released again when the guard drops at the end of this statement.
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map(drop)
            .map_err(|_| CaError::Locked { path: data_dir.to_owned() })
    }

    /// Load the CA state from `data_dir`, or create a new CA there on first start.
    pub fn open(
        data_dir: &Path,
        trust_domain: &TrustDomain,
        ttl: Duration,
        upstream: Option<Upstream>,
        now: SystemTime,
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
        // A kill -9 between create and rename leaves a temp file that may hold every CA key.
        storage::remove_stale_temps(data_dir).map_err(|source| CaError::Write { path: data_dir.to_owned(), source })?;
        let stored = match std::fs::read(&path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                let s = StoredState::parse(&bytes, &path)?;
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
                tracing::info!(path = %path.display(), trust_domain = %trust_domain, "no CA state yet: creating a new CA");
                StoredState::empty(trust_domain.as_str())
            }
            Err(source) => return Err(CaError::Read { path, source }),
        };
        let authorities = build(&stored.view(), &path)?;
        // A switch between self-signed and upstream mode takes effect with a new authority now.
        let mode_changed = stored.x509.last().is_some_and(|last| last.intermediate != upstream.is_some());
        let ca = Self {
            trust_domain: trust_domain.clone(),
            path,
            ttl,
            upstream,
            _lock: lock,
            state: RwLock::new(Arc::new(authorities)),
            stored: RwLock::new(stored),
        };
        ca.rotate(now, mode_changed)?;
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

    /// The life of each signing key.
    pub fn ttl(&self) -> Duration {
        self.ttl
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

    /// Apply [`rotation::plan`] to each key kind; write the result, then swap it in.
    fn rotate(&self, now: SystemTime, force_x509: bool) -> Result<bool, CaError> {
        let mut stored = self.stored.write().unwrap_or_else(|p| p.into_inner());
        let auth = self.authorities();
        let plans: Vec<(KeyKind, rotation::Plan)> = KeyKind::ALL
            .into_iter()
            .map(|kind| (kind, rotation::plan(&auth.lives(kind), now, self.ttl, force_x509 && kind == KeyKind::X509)))
            .collect();
        if !plans.iter().any(|(_, p)| p.changes_anything())
            && !stored.retired_roots.iter().any(|r| time(r.until) <= now)
        {
            return Ok(false);
        }
        let mut change = Change { now: secs(now), ..Change::default() };
        // A kid is unique across JWT, WIT and delegation keys (WIT-SVID.md §6): a verifier holding
        // several kinds must never pick the wrong one.
        let mut taken: Vec<String> =
            KeyKind::ALL.iter().flat_map(|k| auth.es256_keys(*k)).map(|k| k.kid.clone()).collect();
        for (kind, plan) in plans {
            if kind == KeyKind::X509 {
                if let Some(active_from) = plan.successor_from {
                    let (cert_pem, key_pem, roots) = self.new_x509_authority(now)?;
                    change.new_x509 = Some(StoredX509 {
                        cert_pem,
                        key_pem,
                        intermediate: self.upstream.is_some(),
                        active_from: secs(active_from),
                    });
                    // Roots dropped by the operator stay trusted until every intermediate issued
                    // under them (and so every SVID those signed) has expired.
                    change.retire_until = auth.x509.iter().map(|a| secs(a.not_after)).max().unwrap_or(0);
                    change.new_roots = roots;
                }
                change.keep_x509 = plan.keep;
                continue;
            }
            let new = plan.successor_from.map(|from| self.new_es256_key(now, from, &mut taken)).transpose()?;
            change.set_es256(kind, new, plan.keep);
        }
        let retired = store::newly_retired(&stored, &change);
        // Memory changes only after the disk has the new state.
        let (built, json) = {
            let next = stored.view_after(&change, &retired);
            (build(&next, &self.path)?, next.to_json()?)
        };
        storage::write_atomic(&self.path, &json)
            .map_err(|source| CaError::Write { path: self.path.clone(), source })?;
        stored.commit(change, retired);
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(built);
        tracing::info!(x509_authorities = stored.x509.len(), jwt_keys = stored.jwt.len(), "CA state updated");
        Ok(true)
    }

    /// A new ES256 key (JWT-SVID, WIT-SVID or delegation kind) with a random kid not in `taken`.
    fn new_es256_key(
        &self,
        now: SystemTime,
        active_from: SystemTime,
        taken: &mut Vec<String>,
    ) -> Result<StoredJwt, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut kid = serial::random_kid();
        while taken.contains(&kid) {
            kid = serial::random_kid();
        }
        taken.push(kid.clone());
        Ok(StoredJwt {
            kid,
            key_pem: PrivateKey::new(key.serialize_pem().into_bytes()),
            active_from: secs(active_from),
            not_after: secs(crate::clock::add(now, self.ttl)),
        })
    }

    /// A new signing authority: a self-signed root, or an intermediate signed by the upstream root.
    /// Returns the cert and key PEM, and the upstream roots to publish if there is an upstream.
    fn new_x509_authority(&self, now: SystemTime) -> Result<(String, PrivateKey, Option<Vec<String>>), CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "tessera");
        dn.push(DnType::CommonName, format!("tessera CA {}", self.trust_domain));
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.subject_alt_names = vec![SanType::URI(self.trust_domain.id_string().try_into()?)];
        params.serial_number = Some(serial::random_serial());
        params.not_before = (now - Duration::from_secs(10)).into();
        let Some(up) = &self.upstream else {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.not_after = crate::clock::add(now, self.ttl).into();
            let cert = params.self_signed(&key)?;
            return Ok((cert.pem(), PrivateKey::new(key.serialize_pem().into_bytes()), None));
        };
        let (cert_pem, roots) = up.sign_intermediate(params, &key, crate::clock::add(now, self.ttl))?;
        Ok((cert_pem, PrivateKey::new(key.serialize_pem().into_bytes()), Some(roots)))
    }
}

/// The key ring a stored state describes (every key checked against its certificate).
fn build(stored: &StateView<'_>, path: &Path) -> Result<Authorities, CaError> {
    let corrupt = |reason: String| CaError::Corrupt { path: path.to_owned(), reason };
    let mut x509 = Vec::new();
    let mut roots = Vec::new();
    for r in stored.upstream_roots.iter().copied().chain(stored.retired_roots.iter().map(|r| &r.pem)) {
        roots.push(pem::parse(r).map_err(|e| corrupt(format!("upstream root: {e}")))?.into_contents());
    }
    for a in &stored.x509 {
        let der = pem::parse(&a.cert_pem).map_err(|e| corrupt(format!("CA certificate: {e}")))?.into_contents();
        let pem = a.key_pem.expose_pem().ok_or_else(|| corrupt("CA key is not PEM text".into()))?;
        let key = KeyPair::from_pem(pem).map_err(|e| corrupt(format!("CA key: {e}")))?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(&der).map_err(|e| corrupt(format!("CA certificate: {e}")))?;
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(corrupt("CA key does not match its certificate".into()));
        }
        let not_after = time(parsed.validity().not_after.timestamp().max(0) as u64);
        let issuer = Issuer::from_ca_cert_der(&der.clone().into(), key)?;
        if !a.intermediate {
            roots.push(der.clone());
        }
        x509.push(Arc::new(X509Authority {
            chain_tail_der: if a.intermediate { der.clone() } else { Vec::new() },
            cert_der: der,
            not_before: time(a.active_from),
            not_after,
            issuer,
        }));
    }
    let es256 = |keys: &[&StoredJwt], what: &str| -> Result<Vec<Arc<JwtKey>>, CaError> {
        keys.iter()
            .map(|k| {
                let pem =
                    k.key_pem.expose_pem().ok_or_else(|| corrupt(format!("{what} key {} is not PEM text", k.kid)))?;
                let key = KeyPair::from_pem(pem).map_err(|e| corrupt(format!("{what} key {}: {e}", k.kid)))?;
                let der = Zeroizing::new(key.serialize_der());
                Ok(Arc::new(JwtKey {
                    kid: k.kid.clone(),
                    not_before: time(k.active_from),
                    not_after: time(k.not_after),
                    encoding: jsonwebtoken::EncodingKey::from_ec_der(&der),
                    public_point: key.public_key_raw().to_vec(),
                }))
            })
            .collect()
    };
    let jwt = es256(&stored.jwt, "JWT")?;
    let delegation = es256(&stored.delegation, "delegation")?;
    let wit = es256(&stored.wit, "WIT")?;
    if jwt.iter().any(|j| delegation.iter().any(|d| d.kid == j.kid)) {
        return Err(corrupt("a delegation key shares its kid with a JWT-SVID key".into()));
    }
    Ok(Authorities { x509, jwt, wit, delegation, roots })
}
