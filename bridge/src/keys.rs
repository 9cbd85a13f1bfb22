//! The zenoh key space of a bridge, in one place. With prefix `P` (default `ringbus`):
//!
//! | key | what |
//! |---|---|
//! | `P/topic/<name>` | a topic's messages, put by the exporting bridge |
//! | `P/service/<name>` | a service's calls: the exporting bridge's queryable |
//! | `P/queue/<name>/send` | a queue's remote sends: the owning bridge's queryable |
//! | `P/queue/<name>/pull` | a queue's remote deliveries (and `.../ack`, their acknowledgements) |
//! | `P/live/<kind>/<name>/<zid>` | liveliness token: bridge `zid` exports `name` of `kind` (`topic`, `service`, `queue`) |
//! | `P/shape/<kind>/<name>/<zid>` | queryable: the [`ringbus::Shape`] of that export |
//!
//! ringbus names (letters, digits, `_`, `-`) are valid key chunks as they are. Everything parsed
//! back from a key comes from the network: a name that is not a valid ringbus name is refused.

use ringbus::admin::Kind;

/// The keys of one bridge's prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    /// Messages of topic `name`.
    pub(crate) fn topic(&self, name: &str) -> String {
        format!("{}/topic/{name}", self.prefix)
    }

    /// Calls of service `name`.
    pub(crate) fn service(&self, name: &str) -> String {
        format!("{}/service/{name}", self.prefix)
    }

    /// Operation `op` (`send`, `pull`, `ack`) of queue `name`.
    pub(crate) fn queue(&self, name: &str, op: &str) -> String {
        format!("{}/queue/{name}/{op}", self.prefix)
    }

    /// The key expression of the names matching `pattern` (a `*` within a chunk is zenoh's
    /// `$*`; a lone `*` is a whole chunk).
    pub(crate) fn data_pattern(&self, kind: Kind, pattern: &str) -> String {
        let chunk = if pattern == "*" {
            "*".to_string()
        } else {
            pattern.replace('*', "$*")
        };
        format!("{}/{}/{chunk}", self.prefix, kind.as_str())
    }

    /// The liveliness token of an export.
    pub(crate) fn live(&self, kind: Kind, name: &str, zid: &str) -> String {
        format!("{}/live/{}/{name}/{zid}", self.prefix, kind.as_str())
    }

    /// Every liveliness token of `kind` (all kinds for `None`).
    pub(crate) fn live_all(&self, kind: Option<Kind>) -> String {
        match kind {
            Some(k) => format!("{}/live/{}/*/*", self.prefix, k.as_str()),
            None => format!("{}/live/*/*/*", self.prefix),
        }
    }

    /// The shape queryable of an export.
    pub(crate) fn shape(&self, kind: Kind, name: &str, zid: &str) -> String {
        format!("{}/shape/{}/{name}/{zid}", self.prefix, kind.as_str())
    }

    /// The name in a data key (`P/<kind>/<name>`), if it is one of `kind` and a valid name.
    pub(crate) fn parse_data<'k>(&self, kind: Kind, key: &'k str) -> Option<&'k str> {
        let rest = key.strip_prefix(self.prefix.as_str())?.strip_prefix('/')?;
        let name = rest.strip_prefix(kind.as_str())?.strip_prefix('/')?;
        ringbus::validate_name(name).ok()?;
        Some(name)
    }

    /// The (kind, name, zid) of a liveliness key.
    pub(crate) fn parse_live<'k>(&self, key: &'k str) -> Option<(Kind, &'k str, &'k str)> {
        let rest = key
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix("/live/")?;
        let mut parts = rest.split('/');
        let kind = match parts.next()? {
            "topic" => Kind::Topic,
            "service" => Kind::Service,
            "queue" => Kind::Queue,
            _ => return None,
        };
        let name = parts.next()?;
        let zid = parts.next()?;
        if parts.next().is_some() || zid.is_empty() {
            return None;
        }
        ringbus::validate_name(name).ok()?;
        Some((kind, name, zid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back_and_hostile_keys_are_refused() {
        let k = Keys::new("ringbus");
        assert_eq!(
            k.parse_data(Kind::Topic, &k.topic("prices")),
            Some("prices")
        );
        assert_eq!(k.parse_data(Kind::Service, &k.topic("prices")), None);
        assert_eq!(k.parse_data(Kind::Topic, "ringbus/topic/../x"), None);
        assert_eq!(k.parse_data(Kind::Topic, "ringbus/topic/a/b"), None);
        assert_eq!(k.parse_data(Kind::Topic, "other/topic/a"), None);
        assert_eq!(
            k.parse_live(&k.live(Kind::Service, "quote", "abc")),
            Some((Kind::Service, "quote", "abc"))
        );
        assert_eq!(k.parse_live("ringbus/live/stream/a/b"), None);
        assert_eq!(
            k.parse_live(&k.live(Kind::Queue, "jobs", "abc")),
            Some((Kind::Queue, "jobs", "abc"))
        );
        assert_eq!(k.parse_live("ringbus/live/topic/a/b/c"), None);
        assert_eq!(
            k.data_pattern(Kind::Topic, "sensor-*"),
            "ringbus/topic/sensor-$*"
        );
        assert_eq!(k.data_pattern(Kind::Topic, "*"), "ringbus/topic/*");
    }
}
