//! The record checksum: CRC-32C over the length word, the header from the
//! sequence on, and the payload, in that order (see [`format`](crate::format)).
//!
//! The appender computes it before it can write the record's header, so its
//! *latency*, not its throughput, bounds how fast records go in: a CRC-32C
//! instruction takes three cycles and each depends on the one before, so a
//! 256-byte record's 36 of them in a row are about 110 cycles. General
//! crates compute short inputs that way (they split inputs into parallel
//! streams only from several hundred bytes on). Here, on x86-64 with SSE 4.2
//! and carry-less multiply, the input is split into three streams whose
//! chains run side by side, and the three results are joined with one
//! multiply. For 64 to 1,024-byte payloads that takes about 0.6 of the
//! crate's time per record here (`cargo bench -p courier-journal --bench
//! journal -- checksum`; docs/notes/benchmarks-history.md). Elsewhere the `crc32c` crate
//! computes it; the two are tested equal.

use crate::format::HeaderWords;

/// CRC-32C of `length`, `words` (each little-endian) and `payload`.
pub(crate) fn record_checksum(length: u32, words: &HeaderWords, payload: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("sse4.2")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
        {
            // SAFETY: the function needs SSE 4.2 and PCLMULQDQ, both just
            // detected on this CPU.
            return unsafe { x86::record_checksum(length, words, payload) };
        }
    }
    portable(length, words, payload)
}

/// The same checksum by the `crc32c` crate.
fn portable(length: u32, words: &HeaderWords, payload: &[u8]) -> u32 {
    let mut front = [0u8; 4 + 8 * 3];
    front[..4].copy_from_slice(&length.to_le_bytes());
    for (index, word) in words.iter().enumerate() {
        front[4 + 8 * index..12 + 8 * index].copy_from_slice(&word.to_le_bytes());
    }
    crc32c::crc32c_append(crc32c::crc32c(&front), payload)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        _mm_clmulepi64_si128, _mm_crc32_u32, _mm_crc32_u64, _mm_crc32_u8, _mm_cvtsi128_si64,
        _mm_cvtsi32_si128, _mm_xor_si128,
    };

    use crate::format::HeaderWords;

    /// Longest stream, in 8-byte words; longer inputs go in several blocks.
    const STREAM_WORDS_MAX: usize = 128;

    /// CRC-32C's polynomial without its x^32 term, bit i the coefficient
    /// of x^i.
    const POLYNOMIAL: u32 = 0x1EDC_6F41;

    /// `SHIFT[j - 1]` is x^(64 j - 33) mod P, bit-reflected as the CRC
    /// instructions hold their state. Carry-less multiplying a state by it
    /// and folding the 64-bit product with one CRC instruction (which
    /// multiplies by x^32 and the product's reflection by x) moves the state
    /// past `j` words of zeros: x^(64 j - 33) · x · x^32 = x^(64 j).
    static SHIFT: [u32; 2 * STREAM_WORDS_MAX] = {
        let mut table = [0u32; 2 * STREAM_WORDS_MAX];
        let mut power: u32 = 1 << 31; // x^31 = x^(64 · 1 - 33)
        let mut j = 0;
        while j < table.len() {
            table[j] = power.reverse_bits();
            let mut bit = 0;
            while bit < 64 {
                power = if power & 0x8000_0000 != 0 {
                    (power << 1) ^ POLYNOMIAL
                } else {
                    power << 1
                };
                bit += 1;
            }
            j += 1;
        }
        table
    };

    fn word(bytes: &[u8], index: usize) -> u64 {
        let at = index * 8;
        u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
    }

    /// Multiplies `state` by x^(64 · words) mod P, as a 64-bit value to fold.
    #[target_feature(enable = "sse4.2,pclmulqdq")]
    fn shifted(state: u64, words: usize) -> std::arch::x86_64::__m128i {
        let constant = _mm_cvtsi32_si128(SHIFT[words - 1] as i32);
        _mm_clmulepi64_si128(_mm_cvtsi32_si128(state as u32 as i32), constant, 0)
    }

    /// See [`super::record_checksum`]. The header goes first on its own
    /// (four steps); then the payload in blocks of three equal streams, the
    /// first continuing the running state and the other two starting from
    /// zero, joined as a · x^(2n) + b · x^n + c; then the words and bytes
    /// left over.
    #[target_feature(enable = "sse4.2,pclmulqdq")]
    pub(super) fn record_checksum(length: u32, words: &HeaderWords, payload: &[u8]) -> u32 {
        let mut state = u64::from(_mm_crc32_u32(!0, length));
        for &word in words {
            state = _mm_crc32_u64(state, word);
        }
        let mut rest = payload;
        while rest.len() >= 3 * 8 {
            let words = (rest.len() / (3 * 8)).min(STREAM_WORDS_MAX);
            let (first, more) = rest.split_at(8 * words);
            let (second, more) = more.split_at(8 * words);
            let (third, more) = more.split_at(8 * words);
            rest = more;
            let (mut a, mut b, mut c) = (state, 0, 0);
            for index in 0..words {
                a = _mm_crc32_u64(a, word(first, index));
                b = _mm_crc32_u64(b, word(second, index));
                c = _mm_crc32_u64(c, word(third, index));
            }
            let folded = _mm_xor_si128(shifted(a, 2 * words), shifted(b, words));
            state = _mm_crc32_u64(0, _mm_cvtsi128_si64(folded) as u64) ^ c;
        }
        let mut words = rest.chunks_exact(8);
        for chunk in &mut words {
            state = _mm_crc32_u64(
                state,
                u64::from_le_bytes(chunk.try_into().expect("8 bytes")),
            );
        }
        let mut state = state as u32;
        for &byte in words.remainder() {
            state = _mm_crc32_u8(state, byte);
        }
        !state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes(len: usize, seed: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 131 + seed * 7 + 3) as u8).collect()
    }

    #[test]
    fn equals_crc32c_of_the_concatenation_for_every_length_over_several_blocks() {
        let words = [0x0102_0304_0506_0708, u64::MAX - 5, 0x8000_0000_0000_0011];
        // Three full blocks of three 128-word streams, and then some.
        for len in 0..=3 * 3 * 128 * 8 + 40 {
            let payload = bytes(len, len);
            let length = (32 + len) as u32;
            let mut whole = length.to_le_bytes().to_vec();
            for word in words {
                whole.extend_from_slice(&word.to_le_bytes());
            }
            whole.extend_from_slice(&payload);
            let expected = crc32c::crc32c(&whole);
            assert_eq!(portable(length, &words, &payload), expected, "len {len}");
            assert_eq!(
                record_checksum(length, &words, &payload),
                expected,
                "len {len}"
            );
        }
    }

    proptest! {
        #[test]
        fn any_record_checks_the_same_both_ways(
            length in any::<u32>(),
            words in any::<[u64; 3]>(),
            payload in proptest::collection::vec(any::<u8>(), 0..8192),
            skip in 0usize..8,
        ) {
            // An unaligned start, as a payload inside a bigger buffer has.
            let payload = &payload[skip.min(payload.len())..];
            prop_assert_eq!(record_checksum(length, &words, payload), portable(length, &words, payload));
        }
    }
}
