//! What other hosts export: their bridges' liveliness tokens (`ringbus list --remote`).

use std::time::Duration;

use ringbus::admin::Kind;
use zenoh::Wait;

use crate::config::BridgeConfig;
use crate::keys::Keys;
use crate::BridgeError;

/// One export of another host's bridge.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub struct RemoteExport {
    /// A topic or a service.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// The exporting bridge's zenoh id.
    pub bridge: String,
}

/// Connects as `config` says (its patterns are ignored), asks for every export announced under
/// its prefix, waiting up to `wait` for the answers, and returns them sorted.
pub fn list_remote(
    config: &BridgeConfig,
    wait: Duration,
) -> Result<Vec<RemoteExport>, BridgeError> {
    let keys = Keys::new(config.key_prefix());
    let zconfig = config.zenoh_config()?;
    let wait_open = std::thread::spawn(move || zenoh::open(zconfig).wait());
    let session = wait_open
        .join()
        .map_err(|_| BridgeError::Zenoh("opening the session panicked".into()))?
        .map_err(BridgeError::zenoh)?;
    let replies = session
        .liveliness()
        .get(keys.live_all(None))
        .timeout(wait)
        .wait()
        .map_err(BridgeError::zenoh)?;
    let mut found = Vec::new();
    while let Ok(reply) = replies.recv() {
        if let Ok(sample) = reply.result() {
            if let Some((kind, name, zid)) = keys.parse_live(sample.key_expr().as_str()) {
                found.push(RemoteExport {
                    kind,
                    name: name.to_string(),
                    bridge: zid.to_string(),
                });
            }
        }
    }
    found.sort();
    found.dedup();
    let _ = std::thread::spawn(move || session.close().wait()).join();
    Ok(found)
}
