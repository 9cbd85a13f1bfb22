//! A bridge's configuration: how its zenoh session connects, and which names cross the network.
//! Read from a JSON5 file ([`BridgeConfig::from_file`]) or built in code; nothing is exported or
//! imported unless a pattern names it.
//!
//! ```json5
//! {
//!   zenoh: {
//!     mode: "peer",                       // "peer" (default), "router" or "client"
//!     listen: ["tcp/0.0.0.0:7447"],
//!     connect: ["tcp/10.0.0.2:7447"],
//!     // tls: { root_ca: "ca.pem", certificate: "node.crt", private_key: "node.key", mutual: true },
//!     // lease_ms: 3000,                  // how soon a dead peer is noticed (zenoh's default 10 s)
//!   },
//!   topics:   { export: ["prices", "sensor-*"], import: ["*"] },
//!   services: { export: ["quote"],             import: ["quote"] },
//!   queues:   { export: ["jobs"], import: ["orders"], dir: "/var/lib/app/queues" },
//! }
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::BridgeError;

/// Everything a bridge is told (module doc).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeConfig {
    /// The zenoh session.
    pub zenoh: ZenohSettings,
    /// Which topics cross.
    pub topics: Routes,
    /// Which services cross.
    pub services: Routes,
    /// Which queues cross: exported queues are owned here, imported ones are owned by the
    /// host that exports them.
    pub queues: QueueRoutes,
    /// The first chunk of every key the bridge uses (default `"ringbus"`): bridges with
    /// different prefixes never see each other, as separate deployments on one network.
    pub prefix: Option<String>,
}

/// The zenoh session of a bridge.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ZenohSettings {
    /// `"peer"` (the default: no router needed), `"router"` (also routes between other
    /// hosts: the middle of a line of hosts) or `"client"`.
    pub mode: Option<String>,
    /// Endpoints to listen on, e.g. `"tcp/0.0.0.0:7447"` or `"tls/0.0.0.0:7447"`.
    pub listen: Vec<String>,
    /// Endpoints of other bridges (or routers) to connect to.
    pub connect: Vec<String>,
    /// Multicast scouting, to find peers on the local network without endpoints (default
    /// off: peers are named).
    pub multicast_scouting: bool,
    /// TLS for `tls/` endpoints.
    pub tls: Option<Tls>,
    /// The zenoh lease in milliseconds: a peer that sends nothing for this long is gone
    /// (zenoh's default 10,000). Set it on every host.
    pub lease_ms: Option<u64>,
}

/// TLS files (PEM).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// The certificate authority that signed the peers' certificates.
    pub root_ca: Option<PathBuf>,
    /// This host's certificate.
    pub certificate: Option<PathBuf>,
    /// This host's private key.
    pub private_key: Option<PathBuf>,
    /// Whether peers must present a certificate too (mutual TLS).
    pub mutual: bool,
}

/// Name patterns of one pattern kind: `export` makes local ones reachable from other hosts,
/// `import` makes other hosts' exported ones reachable here. A pattern is a name, or a name
/// with `*` standing for any run of name characters (`"sensor-*"`, `"*"`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Routes {
    /// Local names other hosts may use.
    pub export: Vec<String>,
    /// Names of other hosts used here.
    pub import: Vec<String>,
}

/// [`Routes`] of queues, and where this host's durable queues live.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueueRoutes {
    /// Local queues other hosts may send to and consume from (this host owns them).
    pub export: Vec<String>,
    /// Queues other hosts own, used here.
    pub import: Vec<String>,
    /// The directory of this host's durable queues (`QueueBuilder::durable(dir)`), exported
    /// from there; without it, exported queues are the in-memory ones of the node's root.
    pub dir: Option<PathBuf>,
}

impl QueueRoutes {
    /// Whether `name` is exported.
    pub fn exports(&self, name: &str) -> bool {
        any_matches(&self.export, name)
    }

    /// Whether `name` is imported.
    pub fn imports(&self, name: &str) -> bool {
        any_matches(&self.import, name)
    }
}

impl Routes {
    /// Whether `name` is exported.
    pub fn exports(&self, name: &str) -> bool {
        any_matches(&self.export, name)
    }

    /// Whether `name` is imported.
    pub fn imports(&self, name: &str) -> bool {
        any_matches(&self.import, name)
    }
}

/// Whether any of `patterns` matches `name`.
fn any_matches(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| matches(p, name))
}

impl BridgeConfig {
    /// A configuration that exports and imports nothing, in zenoh peer mode with multicast
    /// scouting off.
    pub fn new() -> BridgeConfig {
        BridgeConfig::default()
    }

    /// Reads a JSON5 file (module doc). Unknown keys are errors, so a misspelt key never
    /// silently exports nothing.
    pub fn from_file(path: impl AsRef<Path>) -> Result<BridgeConfig, BridgeError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| BridgeError::Config(format!("{}: {e}", path.display())))?;
        BridgeConfig::from_json5(&text)
            .map_err(|e| BridgeError::Config(format!("{}: {e}", path.display())))
    }

    /// Parses the JSON5 text of a configuration file.
    pub fn from_json5(text: &str) -> Result<BridgeConfig, BridgeError> {
        let c: BridgeConfig =
            json5::from_str(text).map_err(|e| BridgeError::Config(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Listens on `endpoint` (e.g. `"tcp/0.0.0.0:7447"`).
    pub fn listen(mut self, endpoint: &str) -> Self {
        self.zenoh.listen.push(endpoint.to_string());
        self
    }

    /// Connects to `endpoint`.
    pub fn connect(mut self, endpoint: &str) -> Self {
        self.zenoh.connect.push(endpoint.to_string());
        self
    }

    /// The zenoh mode: `"peer"`, `"router"` or `"client"`.
    pub fn mode(mut self, mode: &str) -> Self {
        self.zenoh.mode = Some(mode.to_string());
        self
    }

    /// The zenoh lease in milliseconds.
    pub fn lease_ms(mut self, ms: u64) -> Self {
        self.zenoh.lease_ms = Some(ms);
        self
    }

    /// Exports the local topics matching `pattern`.
    pub fn export_topics(mut self, pattern: &str) -> Self {
        self.topics.export.push(pattern.to_string());
        self
    }

    /// Imports the remote topics matching `pattern`.
    pub fn import_topics(mut self, pattern: &str) -> Self {
        self.topics.import.push(pattern.to_string());
        self
    }

    /// Exports the local services matching `pattern`.
    pub fn export_services(mut self, pattern: &str) -> Self {
        self.services.export.push(pattern.to_string());
        self
    }

    /// Imports the remote services matching `pattern`.
    pub fn import_services(mut self, pattern: &str) -> Self {
        self.services.import.push(pattern.to_string());
        self
    }

    /// Exports the local queues matching `pattern` (this host owns them).
    pub fn export_queues(mut self, pattern: &str) -> Self {
        self.queues.export.push(pattern.to_string());
        self
    }

    /// Imports the queues other hosts own matching `pattern`.
    pub fn import_queues(mut self, pattern: &str) -> Self {
        self.queues.import.push(pattern.to_string());
        self
    }

    /// Exports durable queues from `dir` (see [`QueueRoutes::dir`]).
    pub fn queue_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.queues.dir = Some(dir.into());
        self
    }

    /// The key prefix.
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = Some(prefix.to_string());
        self
    }

    /// The key prefix in force.
    pub(crate) fn key_prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or("ringbus")
    }

    /// Checks what zenoh would only refuse later, or never: patterns, prefix, mode.
    pub fn validate(&self) -> Result<(), BridgeError> {
        for p in [&self.topics, &self.services]
            .into_iter()
            .flat_map(|r| r.export.iter().chain(&r.import))
            .chain(self.queues.export.iter().chain(&self.queues.import))
        {
            let ok = !p.is_empty()
                && !p.contains("**")
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'*');
            if !ok {
                return Err(BridgeError::Config(format!(
                    "pattern {p:?}: use name characters (letters, digits, _ and -) and *"
                )));
            }
        }
        let prefix = self.key_prefix();
        if prefix.is_empty()
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(BridgeError::Config(format!(
                "prefix {prefix:?}: use name characters"
            )));
        }
        if let Some(m) = &self.zenoh.mode {
            if !matches!(m.as_str(), "peer" | "router" | "client") {
                return Err(BridgeError::Config(format!(
                    "mode {m:?}: use \"peer\", \"router\" or \"client\""
                )));
            }
        }
        Ok(())
    }

    /// The zenoh configuration.
    pub(crate) fn zenoh_config(&self) -> Result<zenoh::Config, BridgeError> {
        self.validate()?;
        let z = &self.zenoh;
        let mut c = zenoh::Config::default();
        let json = |v: &dyn erased::Json| v.json();
        let mut set = |key: &str, value: String| {
            c.insert_json5(key, &value)
                .map_err(|e| BridgeError::Config(format!("zenoh {key}: {e}")))
        };
        set(
            "mode",
            json(&z.mode.clone().unwrap_or_else(|| "peer".into())),
        )?;
        set("listen/endpoints", json(&z.listen))?;
        set("connect/endpoints", json(&z.connect))?;
        set(
            "scouting/multicast/enabled",
            z.multicast_scouting.to_string(),
        )?;
        // Peers are named: no gossip of other peers' addresses either.
        set("scouting/gossip/enabled", "false".into())?;
        if let Some(ms) = z.lease_ms {
            set("transport/link/tx/lease", ms.to_string())?;
        }
        if let Some(tls) = &z.tls {
            let path = |p: &Option<PathBuf>| p.as_ref().map(|p| json(&p.display().to_string()));
            if let Some(ca) = path(&tls.root_ca) {
                set("transport/link/tls/root_ca_certificate", ca)?;
            }
            if let Some(cert) = path(&tls.certificate) {
                set("transport/link/tls/listen_certificate", cert.clone())?;
                if tls.mutual {
                    set("transport/link/tls/connect_certificate", cert)?;
                }
            }
            if let Some(key) = path(&tls.private_key) {
                set("transport/link/tls/listen_private_key", key.clone())?;
                if tls.mutual {
                    set("transport/link/tls/connect_private_key", key)?;
                }
            }
            set("transport/link/tls/enable_mtls", tls.mutual.to_string())?;
        }
        Ok(c)
    }
}

/// JSON text of strings and lists of strings, for `insert_json5`.
mod erased {
    pub(super) trait Json {
        fn json(&self) -> String;
    }
    impl Json for String {
        fn json(&self) -> String {
            quote(self)
        }
    }
    impl Json for Vec<String> {
        fn json(&self) -> String {
            let items: Vec<String> = self.iter().map(|s| quote(s)).collect();
            format!("[{}]", items.join(","))
        }
    }
    fn quote(s: &str) -> String {
        let mut out = String::with_capacity(s.len() + 2);
        out.push('"');
        for ch in s.chars() {
            match ch {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }
}

/// Whether `name` matches `pattern`, where `*` stands for any run (possibly empty) of
/// characters.
pub(crate) fn matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    // Greedy with backtracking to the last star: linear in practice, never recursive.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && p[i] == b'*' {
            star = Some((i, j));
            i += 1;
        } else if i < p.len() && p[i] == n[j] {
            i += 1;
            j += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names_with_stars() {
        assert!(matches("*", "anything"));
        assert!(matches("sensor-*", "sensor-1"));
        assert!(matches("sensor-*", "sensor-"));
        assert!(!matches("sensor-*", "sensor"));
        assert!(matches("*-out", "a-b-out"));
        assert!(matches("a*b*c", "a-x-b-y-c"));
        assert!(!matches("a*b*c", "a-x-b-y"));
        assert!(matches("exact", "exact"));
        assert!(!matches("exact", "exact2"));
    }

    #[test]
    fn a_file_with_an_unknown_key_or_a_bad_pattern_is_refused() {
        let ok = BridgeConfig::from_json5(
            r#"{ zenoh: { listen: ["tcp/127.0.0.1:0"] }, topics: { export: ["a-*"] } }"#,
        )
        .unwrap();
        assert!(ok.topics.exports("a-1") && !ok.topics.imports("a-1"));
        assert!(BridgeConfig::from_json5(r#"{ topic: { export: ["a"] } }"#).is_err());
        assert!(BridgeConfig::from_json5(r#"{ topics: { export: ["a/b"] } }"#).is_err());
        assert!(BridgeConfig::from_json5(r#"{ zenoh: { mode: "mesh" } }"#).is_err());
        assert!(BridgeConfig::from_json5(r#"{ prefix: "a/b" }"#).is_err());
    }

    #[test]
    fn the_zenoh_configuration_takes_the_settings() {
        let c = BridgeConfig::new()
            .listen("tcp/127.0.0.1:7447")
            .connect("tcp/127.0.0.1:7448")
            .lease_ms(2000)
            .zenoh_config()
            .unwrap();
        assert_eq!(c.get_json("mode").unwrap(), "\"peer\"");
        assert!(c.get_json("connect/endpoints").unwrap().contains("7448"));
        assert_eq!(c.get_json("scouting/multicast/enabled").unwrap(), "false");
        assert_eq!(c.get_json("transport/link/tx/lease").unwrap(), "2000");
    }
}
