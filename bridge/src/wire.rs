//! What a bridge adds to zenoh messages: fixed little-endian attachments, every byte named. A
//! payload crosses as the message's bytes (the ringbus encoding: Pod, bytes or rkyv), unchanged.
//! Everything decoded here comes from the network: a wrong length, version or value is `None`
//! (the message is dropped and counted), never a panic.
//!
//! Topic message (`MessageHeader`, 40 bytes):
//! ```text
//! 0   1  VERSION
//! 1   7  zero
//! 8   8  digest of the topic's shape (ringbus::Shape::digest) at the exporting host
//! 16  8  the publisher's index there (messages of one publisher arrive in order)
//! 24  8  the exporting bridge's message number for this topic (0, 1, 2, ...)
//! 32  8  messages its subscriber lost just before this one (a DropOldest topic's lag there)
//! ```
//! Call (`CallHeader`, 24 bytes, on the query):
//! ```text
//! 0   1  VERSION
//! 1   7  zero
//! 8   8  the caller's timeout in ns (0: the exporting side's own)
//! 16  8  digest of the service's shape at the calling host
//! ```
//! Response (`ReplyHeader`, 16 bytes, on each reply):
//! ```text
//! 0   1  VERSION
//! 1   1  flags: LAST (the call's last message), NODATA (no response: a stream's end)
//! 2   6  zero
//! 8   8  the response's number in the call (0, 1, 2, ...)
//! ```
//! A failed call ends with an error reply whose payload's first byte names the failure
//! ([`Fail`]).
//!
//! Queues use the call header on every query (`P/queue/<name>/send`, `pull`, `ack`: timeout
//! 0, except a pull's, which is how long the owner may wait for a message), and on each
//! message a pull returns (`DeliveryHeader`, 24 bytes):
//! ```text
//! 0   1  VERSION
//! 1   1  flags: LAST (the pull's last message), NODATA (no message: the pull found none)
//! 2   6  zero
//! 8   8  the message's number in the pull (0, 1, 2, ...)
//! 16  8  the delivery's token at the owning bridge (what an `ack` names)
//! ```

/// Version byte of every attachment.
pub(crate) const VERSION: u8 = 1;
/// Bytes of a topic message's attachment.
pub(crate) const MESSAGE_HEADER: usize = 40;
/// Bytes of a call's attachment.
pub(crate) const CALL_HEADER: usize = 24;
/// Bytes of a response's attachment.
pub(crate) const REPLY_HEADER: usize = 16;
/// Bytes of a pulled queue message's attachment.
pub(crate) const DELIVERY_HEADER: usize = 24;
/// Response flag: the call's last message.
pub(crate) const LAST: u8 = 1;
/// Response flag: no response in this message (the end of a stream, after its responses).
pub(crate) const NODATA: u8 = 2;

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// Version byte then zeros: the fixed start of every attachment.
fn start_ok(b: &[u8], len: usize, zeros: std::ops::Range<usize>) -> bool {
    b.len() == len && b[0] == VERSION && b[zeros].iter().all(|&z| z == 0)
}

/// The attachment of a topic message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MessageHeader {
    pub(crate) digest: u64,
    pub(crate) publisher: u64,
    pub(crate) seq: u64,
    pub(crate) lost: u64,
}

impl MessageHeader {
    pub(crate) fn encode(&self) -> [u8; MESSAGE_HEADER] {
        let mut b = [0u8; MESSAGE_HEADER];
        b[0] = VERSION;
        b[8..16].copy_from_slice(&self.digest.to_le_bytes());
        b[16..24].copy_from_slice(&self.publisher.to_le_bytes());
        b[24..32].copy_from_slice(&self.seq.to_le_bytes());
        b[32..40].copy_from_slice(&self.lost.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Option<MessageHeader> {
        start_ok(b, MESSAGE_HEADER, 1..8).then(|| MessageHeader {
            digest: u64_at(b, 8),
            publisher: u64_at(b, 16),
            seq: u64_at(b, 24),
            lost: u64_at(b, 32),
        })
    }
}

/// The attachment of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CallHeader {
    pub(crate) timeout_ns: u64,
    pub(crate) digest: u64,
}

impl CallHeader {
    pub(crate) fn encode(&self) -> [u8; CALL_HEADER] {
        let mut b = [0u8; CALL_HEADER];
        b[0] = VERSION;
        b[8..16].copy_from_slice(&self.timeout_ns.to_le_bytes());
        b[16..24].copy_from_slice(&self.digest.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Option<CallHeader> {
        start_ok(b, CALL_HEADER, 1..8).then(|| CallHeader {
            timeout_ns: u64_at(b, 8),
            digest: u64_at(b, 16),
        })
    }
}

/// The attachment of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplyHeader {
    pub(crate) last: bool,
    pub(crate) nodata: bool,
    pub(crate) seq: u64,
}

impl ReplyHeader {
    pub(crate) fn encode(&self) -> [u8; REPLY_HEADER] {
        let mut b = [0u8; REPLY_HEADER];
        b[0] = VERSION;
        b[1] = if self.last { LAST } else { 0 } | if self.nodata { NODATA } else { 0 };
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Option<ReplyHeader> {
        (start_ok(b, REPLY_HEADER, 2..8) && b[1] & !(LAST | NODATA) == 0).then(|| ReplyHeader {
            last: b[1] & LAST != 0,
            nodata: b[1] & NODATA != 0,
            seq: u64_at(b, 8),
        })
    }
}

/// The attachment of a message a queue pull returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeliveryHeader {
    pub(crate) last: bool,
    pub(crate) nodata: bool,
    pub(crate) seq: u64,
    pub(crate) token: u64,
}

impl DeliveryHeader {
    pub(crate) fn encode(&self) -> [u8; DELIVERY_HEADER] {
        let mut b = [0u8; DELIVERY_HEADER];
        b[..REPLY_HEADER].copy_from_slice(
            &ReplyHeader {
                last: self.last,
                nodata: self.nodata,
                seq: self.seq,
            }
            .encode(),
        );
        b[16..24].copy_from_slice(&self.token.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Option<DeliveryHeader> {
        if b.len() != DELIVERY_HEADER {
            return None;
        }
        let r = ReplyHeader::decode(&b[..REPLY_HEADER])?;
        Some(DeliveryHeader {
            last: r.last,
            nodata: r.nodata,
            seq: r.seq,
            token: u64_at(b, 16),
        })
    }
}

/// How a relayed call failed at the exporting host: the first byte of an error reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fail {
    /// `CallError::Timeout` there.
    Timeout = b'T' as isize,
    /// `CallError::NoServer` there (the last server left).
    NoServer = b'N' as isize,
    /// `CallError::Disconnected` there (its server died).
    Disconnected = b'D' as isize,
    /// Aborted, invalid, or refused there: the caller is told `Aborted`.
    Aborted = b'A' as isize,
}

impl Fail {
    pub(crate) fn byte(self) -> u8 {
        self as u8
    }

    /// An error reply's failure; an unknown or empty one is `Aborted`.
    pub(crate) fn decode(b: &[u8]) -> Fail {
        match b.first() {
            Some(b'T') => Fail::Timeout,
            Some(b'N') => Fail::NoServer,
            Some(b'D') => Fail::Disconnected,
            _ => Fail::Aborted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_any_other_length_version_or_padding_is_refused() {
        let m = MessageHeader {
            digest: 1,
            publisher: 2,
            seq: 3,
            lost: 4,
        };
        let b = m.encode();
        assert_eq!(MessageHeader::decode(&b), Some(m));
        for cut in 0..b.len() {
            assert_eq!(MessageHeader::decode(&b[..cut]), None);
        }
        for i in 0..8 {
            let mut bad = b;
            bad[i] ^= 0x80;
            assert_eq!(MessageHeader::decode(&bad), None, "byte {i}");
        }
        let c = CallHeader {
            timeout_ns: 5,
            digest: 6,
        };
        assert_eq!(CallHeader::decode(&c.encode()), Some(c));
        assert_eq!(CallHeader::decode(&c.encode()[1..]), None);
        let r = ReplyHeader {
            last: true,
            nodata: true,
            seq: 7,
        };
        assert_eq!(ReplyHeader::decode(&r.encode()), Some(r));
        let mut bad = r.encode();
        bad[1] = 4;
        assert_eq!(ReplyHeader::decode(&bad), None);
        let d = DeliveryHeader {
            last: false,
            nodata: false,
            seq: 8,
            token: 9,
        };
        assert_eq!(DeliveryHeader::decode(&d.encode()), Some(d));
        assert_eq!(DeliveryHeader::decode(&d.encode()[..16]), None);
        assert_eq!(Fail::decode(b"N"), Fail::NoServer);
        assert_eq!(Fail::decode(&[]), Fail::Aborted);
        assert_eq!(Fail::decode(b"?"), Fail::Aborted);
    }
}
