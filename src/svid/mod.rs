//! SVIDs: minting X.509-SVIDs, JWT-SVIDs and WIT-SVIDs from the CA, and validating JWT-SVIDs.
pub mod jwt;
pub(crate) mod wit;
pub mod x509;
