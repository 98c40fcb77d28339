//! An upstream (operator) root: its files are read afresh for each new intermediate, so the
//! operator can rotate them without a restart. The CA's own type, so the CA does not depend on
//! the config file's shape.

use super::CaError;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, PublicKeyData};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use zeroize::Zeroizing;

/// Where the upstream root's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Roots to publish as the trust bundle (default: the upstream cert itself).
    pub bundle: Option<PathBuf>,
}

impl Upstream {
    /// Sign `params` (an intermediate's, for `key`) with the upstream root. Returns the
    /// intermediate's PEM and the roots to publish (PEM).
    pub(super) fn sign_intermediate(
        &self,
        mut params: CertificateParams,
        key: &KeyPair,
        not_after: SystemTime,
    ) -> Result<(String, Vec<String>), CaError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map_err(|source| CaError::Upstream(format!("cannot read {}: {source}", p.display())))
        };
        let up_cert_pem = read(&self.cert)?;
        let up_key = KeyPair::from_pem(&Zeroizing::new(read(&self.key)?))
            .map_err(|e| CaError::Upstream(format!("{}: {e}", self.key.display())))?;
        let up_der = pem::parse(&up_cert_pem)
            .map_err(|e| CaError::Upstream(format!("{}: {e}", self.cert.display())))?
            .into_contents();
        let (_, up_parsed) = x509_parser::parse_x509_certificate(&up_der)
            .map_err(|e| CaError::Upstream(format!("{}: {e}", self.cert.display())))?;
        if up_parsed.public_key().raw != up_key.subject_public_key_info().as_slice() {
            return Err(CaError::Upstream(format!("{} does not match {}", self.key.display(), self.cert.display())));
        }
        if !up_parsed.is_ca() {
            return Err(CaError::Upstream(format!("{} is not a CA certificate", self.cert.display())));
        }
        let up_not_after = super::store::time(up_parsed.validity().not_after.timestamp().max(0) as u64);
        // The node's intermediate signs only leaves (pathLen 0) and never outlives its root.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.not_after = not_after.min(up_not_after).into();
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_ca_cert_der(&up_der.clone().into(), up_key)?;
        let cert = params.signed_by(key, &issuer)?;
        let roots = match &self.bundle {
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
        Ok((cert.pem(), roots))
    }
}
