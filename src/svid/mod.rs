//! SVIDs: minting X.509-SVIDs and JWT-SVIDs from the CA, and validating JWT-SVIDs.
pub mod jwt;
pub mod x509;
