//! The CRC-32C (Castagnoli) of a log record: the same value as `crc32c::crc32c`, computed for
//! the short buffers of a record (a header and a payload of up to a few hundred bytes) with as
//! short a chain of dependent instructions as the CPU allows.
//!
//! The SSE 4.2 `crc32` instruction folds 8 bytes into the running value with a latency of
//! about 3 cycles, so a plain loop over a 76-byte record (a 64-byte message) waits about 30
//! cycles on one chain. Split in two halves, the chains run side by side, and the first
//! half's value is moved past the second half's length with one carry-less multiply
//! (`pclmulqdq`) by a constant from [`SHIFT`]. A writer computes it before every seal, on a
//! live message's path, and a replay checks every record with it.
//!
//! The algebra, in the reflected bit order of the instruction (bit `i` of a 32-bit value is
//! the coefficient of `x^(31-i)`, and of a 64-bit word of `x^(63-i)`), modulo the Castagnoli
//! polynomial `P`:
//! - the running value `c` after the first half, fed `m` more bytes `B`, becomes
//!   `c·x^(8m) + crc0(B)`, where `crc0(B)` is the chain over `B` started from 0 (the update is
//!   linear in the value and the data together);
//! - `crc32_u64(0, w)` is `W·x^32` for the word `w`; the 64-bit carry-less product of two
//!   32-bit values `a`, `k` read as such a word is `x·A·K`; so `crc32_u64(0, clmul(c, k))` is
//!   `C·K·x^33`, which is `C·x^(8m)` when `k` is `x^(8m-33) mod P`: `SHIFT[m]`.

/// Records up to this many bytes take the short path; longer ones go to the `crc32c` crate,
/// whose set-up pays off on long buffers.
const SHORT: usize = 512;

/// The reflected Castagnoli polynomial (without its `x^32` term).
#[cfg(any(target_arch = "x86_64", test))]
const POLY: u32 = 0x82F6_3B78;

/// `a·x mod P`, reflected.
#[cfg(any(target_arch = "x86_64", test))]
const fn times_x(a: u32) -> u32 {
    (a >> 1) ^ if a & 1 != 0 { POLY } else { 0 }
}

/// `SHIFT[m]` is `x^(8m-33) mod P`, reflected, for `5 <= m <= SHORT` (0 below: unused, the
/// second chain is at least a word long).
#[cfg(any(target_arch = "x86_64", test))]
static SHIFT: [u32; SHORT + 1] = shift_table();

#[cfg(any(target_arch = "x86_64", test))]
const fn shift_table() -> [u32; SHORT + 1] {
    let mut t = [0u32; SHORT + 1];
    // x^0, reflected.
    let mut p = 0x8000_0000u32;
    let mut degree = 0;
    let mut m = 5;
    while m <= SHORT {
        while degree < 8 * m - 33 {
            p = times_x(p);
            degree += 1;
        }
        t[m] = p;
        m += 1;
    }
    t
}

/// The CRC-32C of `bytes`.
#[inline(always)]
pub(crate) fn record_crc(bytes: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if bytes.len() <= SHORT
        && std::is_x86_feature_detected!("sse4.2")
        && std::is_x86_feature_detected!("pclmulqdq")
    {
        // SAFETY: the CPU has SSE 4.2 and PCLMULQDQ (checked just above).
        return unsafe { crc_short(bytes) };
    }
    crc32c::crc32c(bytes)
}

/// The CRC-32C of `bytes` (at most [`SHORT`] long) in two chains, joined by one multiply.
///
/// # Safety
/// The CPU must have SSE 4.2 and PCLMULQDQ.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2,pclmulqdq")]
unsafe fn crc_short(bytes: &[u8]) -> u32 {
    use std::arch::x86_64::{
        _mm_clmulepi64_si128, _mm_crc32_u16, _mm_crc32_u32, _mm_crc32_u64, _mm_crc32_u8,
        _mm_cvtsi128_si64, _mm_cvtsi32_si128, _mm_cvtsi64_si128,
    };
    let (n, p) = (bytes.len(), bytes.as_ptr());
    // The first chain takes words 0..half, the second words half..2*half, then any odd word
    // and the last 0 to 7 bytes; below two whole words in all, one chain takes everything.
    let half = if n >= 16 { n / 16 } else { 0 };
    // SAFETY: every read lies inside `bytes`: words `i` and `half + i` for `i < half` end by
    // byte `16 * half <= n`, and each read of the tail checks `at + width <= n`; they are
    // unaligned reads of plain bytes. The caller guarantees SSE 4.2 and PCLMULQDQ, which the
    // intrinsics need (safe to call here from Rust 1.87; unsafe in the rust-version, 1.80).
    #[allow(unused_unsafe)]
    unsafe {
        let word = |at: usize| u64::from_le(p.add(at).cast::<u64>().read_unaligned());
        let (mut a, mut b) = (u64::from(!0u32), 0u64);
        for i in 0..half {
            a = _mm_crc32_u64(a, word(8 * i));
            b = _mm_crc32_u64(b, word(8 * (half + i)));
        }
        let mut at = 16 * half;
        if half == 0 {
            // One chain: the second starts where the first would.
            b = a;
        }
        while at + 8 <= n {
            b = _mm_crc32_u64(b, word(at));
            at += 8;
        }
        let mut b = b as u32;
        if at + 4 <= n {
            b = _mm_crc32_u32(b, u32::from_le(p.add(at).cast::<u32>().read_unaligned()));
            at += 4;
        }
        if at + 2 <= n {
            b = _mm_crc32_u16(b, u16::from_le(p.add(at).cast::<u16>().read_unaligned()));
            at += 2;
        }
        if at < n {
            b = _mm_crc32_u8(b, *p.add(at));
        }
        if half == 0 {
            return !b;
        }
        // The first chain's value moved past the second chain's `n - 8 * half` bytes (at
        // least 8, at most SHORT: indexing cannot fail).
        let k = SHIFT[n - 8 * half];
        let product = _mm_clmulepi64_si128(
            _mm_cvtsi64_si128(a as i64),
            _mm_cvtsi32_si128(k as i32),
            0,
        );
        let moved = _mm_crc32_u64(0, _mm_cvtsi128_si64(product) as u64) as u32;
        !(moved ^ b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_crc_is_the_crates_crc32c() {
        let data: Vec<u8> = (0..700u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for start in 0..8 {
            for len in 0..600 {
                let b = &data[start..start + len];
                assert_eq!(record_crc(b), crc32c::crc32c(b), "{start} {len}");
            }
        }
    }

    #[test]
    fn every_shift_constant_moves_a_value_past_that_many_zero_bytes() {
        // Feeding m zero bytes multiplies the running value by x^(8m): the crate's
        // `crc32c_append` over zeros, undoing its inversions, is that product.
        for (m, &k) in SHIFT.iter().enumerate().skip(5) {
            let mut want = 0x8000_0000u32; // x^0
            for _ in 0..8 * m - 33 {
                want = times_x(want);
            }
            assert_eq!(k, want, "{m}");
        }
        let zeros = [0u8; SHORT];
        for m in [5, 16, 77, SHORT] {
            let c = 0x1234_5678u32;
            // c·x^(8m) = the value fed m zero bytes (raw, without the crate's inversions).
            let raw = !crc32c::crc32c_append(!c, &zeros[..m]);
            let mut slow = c;
            for _ in 0..8 * m {
                slow = times_x(slow);
            }
            assert_eq!(raw, slow, "{m}");
        }
    }
}
