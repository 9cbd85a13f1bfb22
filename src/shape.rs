//! The shape of a segment: its kind, layout version, payload type and configuration words, as
//! read from its header. A network bridge sends a shape to another host so that the bridge there
//! can open (or create) a segment of exactly the same shape, and read and write its messages as
//! bytes: [`crate::Node::topic_shaped`], [`crate::Node::service_shaped`] and
//! [`crate::Node::queue_shaped`].
//!
//! On the wire a shape is a fixed little-endian encoding ([`Shape::to_bytes`]), every field
//! named below; [`Shape::from_bytes`] validates all of it (a shape comes from the network:
//! untrusted) and builds the layout it describes, so a shape that decodes is one an open accepts.
//!
//! ```text
//! 0    8   SHAPE_MAGIC = b"RBSHAPE1"
//! 8    4   segment kind (1 topic, 2 service, 3 queue)
//! 12   4   layout version of that kind
//! 16   8   segment length in bytes
//! 24   8   payload type size (0: variable length)
//! 32   8   payload type alignment
//! 40   8   payload type name length (≤ 128)
//! 48   72  nine configuration words
//! 120  n   payload type name, UTF-8
//! ```

use std::path::Path;

use crate::admin::Kind;
use crate::error::OpenError;
use crate::queue::layout::{QueueLayout, KIND_QUEUE};
use crate::service::layout::{ServiceLayout, KIND_SERVICE};
use crate::shm::{Header, TypeIdentity, CONFIG_WORDS};
use crate::topic::layout::{TopicLayout, KIND_TOPIC};

/// First eight bytes of an encoded shape.
pub const SHAPE_MAGIC: [u8; 8] = *b"RBSHAPE1";
const OFF_KIND: usize = 8;
const OFF_VERSION: usize = 12;
const OFF_LEN: usize = 16;
const OFF_SIZE: usize = 24;
const OFF_ALIGN: usize = 32;
const OFF_NAME_LEN: usize = 40;
const OFF_CONFIG: usize = 48;
const OFF_NAME: usize = OFF_CONFIG + 8 * CONFIG_WORDS;
/// Longest type name a shape carries (the header's).
const NAME_CAP: usize = 128;

/// The shape of a topic, service or queue segment (module doc).
///
/// ```
/// use ringbus::admin::Kind;
/// use ringbus::{Node, Shape};
///
/// let dir = std::env::temp_dir().join(format!("ringbus-doc-shape-{}", std::process::id()));
/// let node = Node::with_root(&dir)?;
/// let _sub = node.topic::<[u32; 4]>("doc-shape").capacity(8).subscriber()?;
/// let shape = Shape::read(&dir, Kind::Topic, "doc-shape")?;
/// let bytes = shape.to_bytes(); // sent to another host
/// let there = Shape::from_bytes(&bytes)?;
/// assert_eq!(there, shape);
/// // The same shape, opened as bytes (here on the same node).
/// let mut relay = node.topic_shaped("doc-shape", &there)?.publisher()?;
/// relay.send_copy(&[1u8; 16])?;
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub(crate) header: Header,
}

impl Shape {
    /// The shape of the existing segment `name` of `kind` under root `dir`, read without joining
    /// it (as `ringbus inspect` reads it). [`OpenError::NotFound`] if there is none (or it is not
    /// finished yet). A durable queue's shape is read from its directory.
    pub fn read(dir: &Path, kind: Kind, name: &str) -> Result<Shape, OpenError> {
        crate::shm::validate_name(name)?;
        let path = dir.join(kind.file(name));
        let Some((region, _)) = crate::shm::map_read_only(&path)? else {
            return Err(OpenError::NotFound(name.to_string()));
        };
        match crate::admin::published(&region) {
            Ok(Some(header)) => Shape::checked(header),
            Ok(None) => Err(OpenError::NotFound(name.to_string())),
            Err(why) => Err(OpenError::Corrupt(why)),
        }
    }

    /// Validates `header` as the shape of a topic, service or queue this build opens.
    fn checked(header: Header) -> Result<Shape, OpenError> {
        let len = usize::try_from(header.segment_len).unwrap_or(usize::MAX);
        match header.kind {
            KIND_TOPIC => TopicLayout::from_header(&header, len).map(drop)?,
            KIND_SERVICE => ServiceLayout::from_header(&header, len).map(drop)?,
            KIND_QUEUE => QueueLayout::from_header(&header, len).map(drop)?,
            k => return Err(OpenError::Corrupt(format!("no shape for segment kind {k}"))),
        }
        Ok(Shape { header })
    }

    /// The kind of segment it describes.
    pub fn kind(&self) -> Kind {
        match self.header.kind {
            KIND_TOPIC => Kind::Topic,
            KIND_QUEUE => Kind::Queue,
            _ => Kind::Service,
        }
    }

    /// The payload type (a service's request type) as the header names it.
    pub fn type_name(&self) -> &str {
        &self.header.ty.name
    }

    /// The payload's fixed size in bytes (a service's request), `None` for variable-length
    /// payloads.
    pub fn fixed_size(&self) -> Option<usize> {
        (self.header.ty.size != 0).then_some(self.header.ty.size as usize)
    }

    /// The largest message (a service's request) in bytes.
    pub fn max_message_size(&self) -> usize {
        let len = self.header.segment_len as usize;
        match self.kind() {
            Kind::Topic => TopicLayout::from_header(&self.header, len)
                .map_or(0, |l| l.max_message_size),
            Kind::Queue => QueueLayout::from_header(&self.header, len)
                .map_or(0, |l| l.max_message_size),
            _ => ServiceLayout::from_header(&self.header, len).map_or(0, |l| l.max_request),
        }
    }

    /// The largest response of a service in bytes (`None` for a topic or queue).
    pub fn max_response_size(&self) -> Option<usize> {
        let len = self.header.segment_len as usize;
        match self.kind() {
            Kind::Topic | Kind::Queue => None,
            _ => ServiceLayout::from_header(&self.header, len)
                .ok()
                .map(|l| l.max_response),
        }
    }

    /// A queue's visibility timeout (`None` for a topic or service).
    pub fn visibility_timeout(&self) -> Option<std::time::Duration> {
        self.queue()
            .map(|l| std::time::Duration::from_millis(l.visibility_ms))
    }

    /// Whether it is a durable queue's (kept in files: [`crate::QueueBuilder::durable`]).
    pub fn is_durable(&self) -> bool {
        self.queue().is_some_and(|l| l.durable)
    }

    fn queue(&self) -> Option<QueueLayout> {
        let len = self.header.segment_len as usize;
        (self.kind() == Kind::Queue)
            .then(|| QueueLayout::from_header(&self.header, len).ok())
            .flatten()
    }

    /// A 64-bit digest of the encoding: equal shapes have equal digests (FNV-1a, the same in
    /// every build).
    pub fn digest(&self) -> u64 {
        crate::shm::fnv1a(self.to_bytes())
    }

    /// The encoding (module doc).
    pub fn to_bytes(&self) -> Vec<u8> {
        let h = &self.header;
        let name = h.ty.name.as_bytes();
        let mut out = Vec::with_capacity(OFF_NAME + name.len());
        out.extend_from_slice(&SHAPE_MAGIC);
        out.extend_from_slice(&h.kind.to_le_bytes());
        out.extend_from_slice(&h.version.to_le_bytes());
        out.extend_from_slice(&h.segment_len.to_le_bytes());
        out.extend_from_slice(&h.ty.size.to_le_bytes());
        out.extend_from_slice(&h.ty.align.to_le_bytes());
        out.extend_from_slice(&(name.len() as u64).to_le_bytes());
        for w in h.config {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(name);
        out
    }

    /// Decodes and validates an encoding: any defect (length, magic, kind, version, a layout
    /// this build would refuse, a name that is not UTF-8) is [`OpenError::Corrupt`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Shape, OpenError> {
        let bad = |why: &str| OpenError::Corrupt(format!("shape: {why}"));
        if bytes.len() < OFF_NAME || bytes[..8] != SHAPE_MAGIC {
            return Err(bad("too short or bad magic"));
        }
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
        let name_len = u64_at(OFF_NAME_LEN);
        if name_len > NAME_CAP as u64 || bytes.len() as u64 != OFF_NAME as u64 + name_len {
            return Err(bad("type name length"));
        }
        let name = std::str::from_utf8(&bytes[OFF_NAME..])
            .map_err(|_| bad("type name is not UTF-8"))?;
        let mut config = [0u64; CONFIG_WORDS];
        for (i, w) in config.iter_mut().enumerate() {
            *w = u64_at(OFF_CONFIG + 8 * i);
        }
        let header = Header {
            kind: u32_at(OFF_KIND),
            version: u32_at(OFF_VERSION),
            segment_len: u64_at(OFF_LEN),
            ty: TypeIdentity {
                name: name.to_string(),
                size: u64_at(OFF_SIZE),
                align: u64_at(OFF_ALIGN),
            },
            config,
        };
        Shape::checked(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic_shape() -> Shape {
        let l = TopicLayout::new(
            crate::topic::Policy::Block,
            8,
            64,
            2,
            2,
            2,
            0,
            crate::topic::PayloadKind::Bytes,
        )
        .unwrap();
        Shape {
            header: l.header(TypeIdentity::new("[u8]", 0, 1)),
        }
    }

    #[test]
    fn a_shape_round_trips_and_every_truncation_or_bit_flip_is_an_error_or_the_same_valid_shape() {
        let shape = topic_shape();
        let bytes = shape.to_bytes();
        assert_eq!(Shape::from_bytes(&bytes).unwrap(), shape);
        for cut in 0..bytes.len() {
            assert!(Shape::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            // Either refused, or a valid shape (e.g. another capacity) that opens as it says.
            if let Ok(s) = Shape::from_bytes(&b) {
                assert_eq!(s.to_bytes(), b);
            }
        }
    }
}
