//! Before a daemon writes anything: is another one running on our sockets or our data directory?

use super::DaemonError;
use crate::ca::Ca;
use crate::config::Config;
use crate::net::listener as endpoint;

/// Refuse to start beside a running daemon before anything is written (a CA, an audit line, a
/// socket): another daemon answers on one of our sockets, or holds our data directory.
pub(crate) fn ensure_not_running(config: &Config) -> Result<(), DaemonError> {
    let token_socket = config.delegation.as_ref().map(|d| d.token_socket_path.as_path());
    for path in [Some(config.socket_path.as_path()), Some(config.admin_socket_path.as_path()), token_socket]
        .into_iter()
        .flatten()
    {
        endpoint::ensure_free(path)?;
    }
    Ca::ensure_unlocked(&config.data_dir)?;
    Ok(())
}
