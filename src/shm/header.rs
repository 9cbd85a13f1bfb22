//! The header at the start of every segment.
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 8 | `MAGIC` = `b"RINGBUS\0"` |
//! | 8 | 4 | layout version of the segment kind (each kind has its own, raised on every change of its layout) |
//! | 12 | 4 | segment kind (1 = topic) |
//! | 16 | 4 | state: 0 = initialising, 1 = ready (published with Release after everything else) |
//! | 20 | 4 | header length (256) |
//! | 24 | 8 | total segment length in bytes |
//! | 32 | 8 | payload type size in bytes (0 for variable-length) |
//! | 40 | 8 | payload type alignment |
//! | 48 | 8 | payload type name length (≤ 128) |
//! | 56 | 128 | payload type name, UTF-8, zero padded (a longer name is stored as a prefix and a digest of the whole, see [`TypeIdentity::new`]) |
//! | 184 | 72 | nine 64-bit configuration words, meaning set by the segment kind |
//!
//! Every field is read through atomics and validated before use: the header is untrusted.

use std::sync::atomic::Ordering;

use super::region::Region;
use crate::error::OpenError;

/// First eight bytes of every segment.
pub const MAGIC: u64 = u64::from_le_bytes(*b"RINGBUS\0");
/// Bytes reserved for the header.
pub const HEADER_LEN: usize = 256;
/// Number of kind-specific configuration words.
pub(crate) const CONFIG_WORDS: usize = 9;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 8;
const OFF_KIND: usize = 12;
const OFF_STATE: usize = 16;
const OFF_HEADER_LEN: usize = 20;
const OFF_SEGMENT_LEN: usize = 24;
const OFF_TYPE_SIZE: usize = 32;
const OFF_TYPE_ALIGN: usize = 40;
const OFF_NAME_LEN: usize = 48;
const OFF_NAME: usize = 56;
const NAME_CAP: usize = 128;
const OFF_CONFIG: usize = 184;

/// `state` once the segment is fully initialised.
pub(crate) const STATE_READY: u32 = 1;

/// What a segment carries: a type name, its size and alignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeIdentity {
    /// A name for the payload type (`std::any::type_name`, or a fixed name like `[u8]`).
    pub name: String,
    /// Size in bytes, 0 for variable-length payloads.
    pub size: u64,
    /// Alignment in bytes.
    pub align: u64,
}

/// FNV-1a (64 bit) of `bytes`: a digest that is the same in every build and process (std's
/// hashers are seeded), for names and identities recorded in shared memory.
pub(crate) fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl TypeIdentity {
    /// The identity of a payload type as a segment header stores it. A name longer than the
    /// header's 128 bytes becomes a readable prefix (cut at a character boundary), `#`, and 16
    /// hex digits of a digest of the whole name: every handle of the same type computes the
    /// same stored name, so long names join like short ones.
    pub fn new(name: &str, size: u64, align: u64) -> TypeIdentity {
        let name = if name.len() <= NAME_CAP {
            name.to_string()
        } else {
            let digest = format!("#{:016x}", fnv1a(name.bytes()));
            let mut cut = NAME_CAP - digest.len();
            while !name.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}{digest}", &name[..cut])
        };
        TypeIdentity { name, size, align }
    }
}

impl std::fmt::Display for TypeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (size {}, align {})",
            self.name, self.size, self.align
        )
    }
}

/// The decoded, validated header of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Segment kind.
    pub kind: u32,
    /// Layout version of the kind (checked by the kind: [`Header::check_version`]).
    pub version: u32,
    /// Total length in bytes, as recorded by the creator.
    pub segment_len: u64,
    /// Payload type.
    pub ty: TypeIdentity,
    /// Kind-specific configuration.
    pub config: [u64; CONFIG_WORDS],
}

impl Header {
    /// Writes every field except `state`, which the creator sets with [`Header::publish`] once the
    /// rest of the segment is initialised. The region must be zeroed and exclusively owned.
    ///
    /// A type name longer than 128 bytes is an [`OpenError::InvalidConfig`] (never truncated:
    /// a truncated name would not match the full one; [`TypeIdentity::new`] shortens names the
    /// way every handle does).
    pub fn write(&self, r: &Region) -> Result<(), OpenError> {
        let name = self.ty.name.as_bytes();
        if name.len() > NAME_CAP {
            return Err(OpenError::InvalidConfig(format!(
                "a type name of {} bytes (at most {NAME_CAP}): use TypeIdentity::new",
                name.len()
            )));
        }
        // Relaxed, every store in this function: nobody reads these until `publish` stores
        // `state` with Release.
        r.u64_at(OFF_MAGIC).store(MAGIC, Ordering::Relaxed);
        r.u32_at(OFF_VERSION).store(self.version, Ordering::Relaxed);
        r.u32_at(OFF_KIND).store(self.kind, Ordering::Relaxed);
        r.u32_at(OFF_HEADER_LEN)
            .store(HEADER_LEN as u32, Ordering::Relaxed);
        r.u64_at(OFF_SEGMENT_LEN)
            .store(self.segment_len, Ordering::Relaxed);
        r.u64_at(OFF_TYPE_SIZE)
            .store(self.ty.size, Ordering::Relaxed);
        r.u64_at(OFF_TYPE_ALIGN)
            .store(self.ty.align, Ordering::Relaxed);
        r.u64_at(OFF_NAME_LEN)
            .store(name.len() as u64, Ordering::Relaxed);
        let mut padded = [0u8; NAME_CAP];
        padded[..name.len()].copy_from_slice(name);
        for (i, chunk) in padded.chunks_exact(8).enumerate() {
            let w = u64::from_le_bytes(chunk.try_into().expect("8-byte chunk"));
            r.u64_at(OFF_NAME + 8 * i).store(w, Ordering::Relaxed);
        }
        for (i, w) in self.config.iter().enumerate() {
            r.u64_at(OFF_CONFIG + 8 * i).store(*w, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Marks the segment ready. Release: a reader that sees `STATE_READY` with Acquire sees every
    /// byte written before.
    pub fn publish(r: &Region) {
        r.u32_at(OFF_STATE).store(STATE_READY, Ordering::Release);
    }

    /// The raw `state` word (Acquire, pairing with `publish`).
    pub(crate) fn state(r: &Region) -> u32 {
        r.u32_at(OFF_STATE).load(Ordering::Acquire)
    }

    /// [`OpenError::VersionMismatch`] unless the segment was laid out by version `expected` of
    /// its kind. Checked first by every kind, before any configuration word is interpreted.
    pub fn check_version(&self, expected: u32) -> Result<(), OpenError> {
        if self.version != expected {
            return Err(OpenError::VersionMismatch {
                expected,
                found: self.version,
            });
        }
        Ok(())
    }

    /// Reads and validates the header of `r`. Checks magic, header length, the recorded length
    /// against the real one, and the type name. Does not check `state` (the caller does) nor
    /// the version (the kind does, [`Header::check_version`]).
    pub fn read(r: &Region) -> Result<Header, OpenError> {
        if r.len() < HEADER_LEN {
            return Err(OpenError::Corrupt(format!(
                "segment of {} bytes is shorter than its header",
                r.len()
            )));
        }
        // Acquire on state first, so that a ready segment's fields below are visible.
        let _ = Self::state(r);
        // Relaxed, every load below in this function: ordered after the Acquire load above, and
        // validated one by one.
        let magic = r.u64_at(OFF_MAGIC).load(Ordering::Relaxed);
        if magic != MAGIC {
            return Err(OpenError::Corrupt(format!("bad magic {magic:#018x}")));
        }
        let version = r.u32_at(OFF_VERSION).load(Ordering::Relaxed);
        let header_len = r.u32_at(OFF_HEADER_LEN).load(Ordering::Relaxed);
        if header_len as usize != HEADER_LEN {
            return Err(OpenError::Corrupt(format!("header length {header_len}")));
        }
        let segment_len = r.u64_at(OFF_SEGMENT_LEN).load(Ordering::Relaxed);
        if segment_len != r.len() as u64 {
            return Err(OpenError::Corrupt(format!(
                "header says {segment_len} bytes, segment has {}",
                r.len()
            )));
        }
        let name_len = r.u64_at(OFF_NAME_LEN).load(Ordering::Relaxed);
        if name_len as usize > NAME_CAP {
            return Err(OpenError::Corrupt(format!("type name length {name_len}")));
        }
        let mut name = Vec::with_capacity(NAME_CAP);
        for i in 0..NAME_CAP / 8 {
            name.extend_from_slice(
                &r.u64_at(OFF_NAME + 8 * i)
                    .load(Ordering::Relaxed)
                    .to_le_bytes(),
            );
        }
        name.truncate(name_len as usize);
        let name = String::from_utf8(name)
            .map_err(|_| OpenError::Corrupt("type name is not UTF-8".into()))?;
        let mut config = [0u64; CONFIG_WORDS];
        for (i, w) in config.iter_mut().enumerate() {
            *w = r.u64_at(OFF_CONFIG + 8 * i).load(Ordering::Relaxed);
        }
        Ok(Header {
            kind: r.u32_at(OFF_KIND).load(Ordering::Relaxed),
            version,
            segment_len,
            ty: TypeIdentity {
                name,
                size: r.u64_at(OFF_TYPE_SIZE).load(Ordering::Relaxed),
                align: r.u64_at(OFF_TYPE_ALIGN).load(Ordering::Relaxed),
            },
            config,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            kind: 1,
            version: 1,
            segment_len: 4096,
            ty: TypeIdentity {
                name: "my::Type".into(),
                size: 24,
                align: 8,
            },
            config: [1, 2, 3, 4, 5, 6, 7, 8, 9],
        }
    }

    #[test]
    fn round_trip() {
        let r = Region::heap(4096);
        let h = sample();
        h.write(&r).unwrap();
        Header::publish(&r);
        assert_eq!(Header::state(&r), STATE_READY);
        assert_eq!(Header::read(&r).unwrap(), h);
    }

    #[test]
    fn long_type_names_are_stored_as_prefix_and_digest() {
        // 'é' is two bytes: with this many, byte 128 falls inside a character.
        let long = format!("a::{}", "é".repeat(80));
        let other = format!("a::{}x", "é".repeat(80));
        let id = TypeIdentity::new(&long, 8, 8);
        assert!(id.name.len() <= NAME_CAP, "{}", id.name.len());
        assert!(id.name.starts_with("a::é"));
        assert_eq!(id, TypeIdentity::new(&long, 8, 8));
        assert_ne!(id, TypeIdentity::new(&other, 8, 8));
        assert_eq!(TypeIdentity::new("short", 1, 1).name, "short");
        let r = Region::heap(4096);
        let mut h = sample();
        h.ty = id;
        h.write(&r).unwrap();
        Header::publish(&r);
        assert_eq!(Header::read(&r).unwrap(), h);
        h.ty.name = long;
        assert!(matches!(h.write(&r), Err(OpenError::InvalidConfig(_))));
    }

    #[test]
    fn garbage_is_an_error() {
        let r = Region::heap(4096);
        for i in 0..4096 / 8 {
            r.u64_at(i * 8)
                .store(0xdead_beef_1234_5678 ^ i as u64, Ordering::Relaxed);
        }
        assert!(matches!(Header::read(&r), Err(OpenError::Corrupt(_))));
    }

    #[test]
    fn wrong_version_and_length_are_errors() {
        let r = Region::heap(4096);
        let mut h = sample();
        h.write(&r).unwrap();
        r.u32_at(OFF_VERSION).store(99, Ordering::Relaxed);
        assert!(matches!(
            Header::read(&r).unwrap().check_version(1),
            Err(OpenError::VersionMismatch { found: 99, .. })
        ));
        h.segment_len = 8192;
        h.write(&r).unwrap();
        assert!(matches!(Header::read(&r), Err(OpenError::Corrupt(_))));
    }
}
