//! Compressed frames: large replies (a SyncBatch) to a device that accepts
//! LZ4 at login.
//!
//! A compressed frame has bit 0 of `flags` set ([`FLAG_LZ4`]); its payload
//! is the uncompressed payload's length (u32, little endian) followed by
//! one LZ4 block. The header is never compressed.

use thiserror::Error;

use super::{Frame, FRAME_HEADER_BYTES, LENGTH_PREFIX_BYTES};

/// The frame flag of an LZ4-compressed payload.
pub const FLAG_LZ4: u16 = 0x0001;
/// Payloads smaller than this are sent as they are: compression would not
/// pay for itself.
pub const COMPRESS_BYTES_MIN: usize = 1024;

/// Why a compressed frame cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecompressError {
    /// The uncompressed size is over what the reader accepts.
    #[error("compressed payload claims {length} bytes, over the limit of {limit}")]
    TooLarge {
        /// The size the payload claims.
        length: usize,
        /// The reader's limit.
        limit: usize,
    },
    /// The payload is not a valid LZ4 block.
    #[error("invalid LZ4 payload: {0}")]
    Invalid(String),
}

/// Appends `frame` (a whole encoded frame: prefix, header, payload) to
/// `out`, compressed if its payload is large enough to gain and the
/// compressed form is smaller; otherwise as it is.
pub fn compress_frame(frame: &[u8], out: &mut Vec<u8>) {
    let header_end = LENGTH_PREFIX_BYTES + FRAME_HEADER_BYTES;
    let payload = &frame[header_end..];
    if payload.len() < COMPRESS_BYTES_MIN {
        out.extend_from_slice(frame);
        return;
    }
    let compressed = lz4_flex::compress_prepend_size(payload);
    if compressed.len() >= payload.len() {
        out.extend_from_slice(frame);
        return;
    }
    let length = FRAME_HEADER_BYTES + compressed.len();
    out.extend_from_slice(&(length as u32).to_be_bytes());
    out.extend_from_slice(&frame[LENGTH_PREFIX_BYTES..LENGTH_PREFIX_BYTES + 2]);
    let flags = u16::from_be_bytes([frame[6], frame[7]]) | FLAG_LZ4;
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&frame[8..header_end]);
    out.extend_from_slice(&compressed);
}

/// Undoes [`compress_frame`] on a decoded frame; a frame without the flag
/// comes back as it is. `limit` bounds the uncompressed payload.
pub fn decompress(frame: Frame, limit: usize) -> Result<Frame, DecompressError> {
    if frame.flags & FLAG_LZ4 == 0 {
        return Ok(frame);
    }
    let Some(size) = frame.payload.get(..4) else {
        return Err(DecompressError::Invalid("no size prefix".into()));
    };
    let length = u32::from_le_bytes([size[0], size[1], size[2], size[3]]) as usize;
    if length > limit {
        return Err(DecompressError::TooLarge { length, limit });
    }
    let payload = lz4_flex::decompress_size_prepended(&frame.payload)
        .map_err(|e| DecompressError::Invalid(e.to_string()))?;
    Ok(Frame {
        flags: frame.flags & !FLAG_LZ4,
        payload: payload.into(),
        ..frame
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::FrameDecoder;
    use bytes::BytesMut;
    use proptest::prelude::*;

    fn encoded(payload: &[u8]) -> Vec<u8> {
        let frame = Frame {
            message_type: 24,
            flags: 0,
            correlation_id: 9,
            payload: payload.to_vec().into(),
        };
        let mut wire = BytesMut::new();
        frame.encode(&mut wire);
        wire.to_vec()
    }

    /// Bytes LZ4 cannot shrink (xorshift output).
    fn noise(count: usize) -> Vec<u8> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        (0..count)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    fn round_trip(payload: &[u8]) -> (Frame, usize) {
        let mut out = Vec::new();
        compress_frame(&encoded(payload), &mut out);
        let wire_len = out.len();
        let mut buffer = BytesMut::from(&out[..]);
        let frame = FrameDecoder::default()
            .decode(&mut buffer)
            .unwrap()
            .unwrap();
        (decompress(frame, 1 << 20).unwrap(), wire_len)
    }

    #[test]
    fn large_repetitive_payloads_shrink_small_ones_pass_through() {
        // Each case: a payload, and whether it goes compressed.
        let cases: [(Vec<u8>, bool); 3] = [
            (b"hello".to_vec(), false),
            (vec![7u8; 10_000], true),
            (noise(2000), false),
        ];
        for (payload, shrinks) in cases {
            let (frame, wire_len) = round_trip(&payload);
            assert_eq!(&frame.payload[..], &payload[..]);
            assert_eq!(frame.flags, 0);
            assert_eq!(frame.correlation_id, 9);
            assert_eq!(
                wire_len < 16 + payload.len(),
                shrinks,
                "{} bytes",
                payload.len()
            );
        }
    }

    #[test]
    fn a_claimed_size_over_the_limit_is_refused_before_allocating() {
        let mut payload = (u32::MAX).to_le_bytes().to_vec();
        payload.extend_from_slice(&[0; 8]);
        let frame = Frame {
            message_type: 24,
            flags: FLAG_LZ4,
            correlation_id: 0,
            payload: payload.into(),
        };
        assert!(matches!(
            decompress(frame, 1 << 20),
            Err(DecompressError::TooLarge { .. })
        ));
    }

    proptest! {
        #[test]
        fn any_payload_round_trips(payload in proptest::collection::vec(0u8..4, 0..5000)) {
            let (frame, _) = round_trip(&payload);
            prop_assert_eq!(&frame.payload[..], &payload[..]);
        }

        #[test]
        fn arbitrary_compressed_payloads_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let frame = Frame { message_type: 24, flags: FLAG_LZ4, correlation_id: 0, payload: payload.into() };
            let _ = decompress(frame, 1 << 16);
        }
    }
}
