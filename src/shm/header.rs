//! The header at the start of every segment.
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 8 | `MAGIC` = `b"RINGBUS\0"` |
//! | 8 | 4 | layout version ([`LAYOUT_VERSION`]) |
//! | 12 | 4 | segment kind (1 = topic) |
//! | 16 | 4 | state: 0 = initialising, 1 = ready (published with Release after everything else) |
//! | 20 | 4 | header length (256) |
//! | 24 | 8 | total segment length in bytes |
//! | 32 | 8 | payload type size in bytes (0 for variable-length) |
//! | 40 | 8 | payload type alignment |
//! | 48 | 8 | payload type name length (≤ 128) |
//! | 56 | 128 | payload type name, UTF-8, zero padded |
//! | 184 | 72 | nine 64-bit configuration words, meaning set by the segment kind |
//!
//! Every field is read through atomics and validated before use: the header is untrusted.

use std::sync::atomic::Ordering;

use super::region::Region;
use crate::error::OpenError;

/// First eight bytes of every segment.
pub const MAGIC: u64 = u64::from_le_bytes(*b"RINGBUS\0");
/// Version of the byte layout; bumped by every incompatible change.
pub const LAYOUT_VERSION: u32 = 1;
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
    pub fn write(&self, r: &Region) -> Result<(), OpenError> {
        let name = self.ty.name.as_bytes();
        let name = &name[..name.len().min(NAME_CAP)];
        // Relaxed, every store in this function: nobody reads these until `publish` stores
        // `state` with Release.
        r.u64_at(OFF_MAGIC).store(MAGIC, Ordering::Relaxed);
        r.u32_at(OFF_VERSION)
            .store(LAYOUT_VERSION, Ordering::Relaxed);
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

    /// Reads and validates the header of `r`. Checks magic, version, header length, the recorded
    /// length against the real one, and the type name. Does not check `state` (the caller does).
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
        if version != LAYOUT_VERSION {
            return Err(OpenError::VersionMismatch {
                expected: LAYOUT_VERSION,
                found: version,
            });
        }
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
            Header::read(&r),
            Err(OpenError::VersionMismatch { found: 99, .. })
        ));
        h.segment_len = 8192;
        h.write(&r).unwrap();
        assert!(matches!(Header::read(&r), Err(OpenError::Corrupt(_))));
    }
}
