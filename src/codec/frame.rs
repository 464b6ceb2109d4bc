//! Framing: a length prefix, a fixed header, a payload.
//!
//! ```text
//!  0          4          6          8                     16
//!  +----------+----------+----------+---------------------+------------------
//!  | length   | type     | flags    | correlation id      | payload (protobuf)
//!  | u32 BE   | u16 BE   | u16 BE   | u64 BE              | length - 12 bytes
//!  +----------+----------+----------+---------------------+------------------
//! ```
//!
//! `length` counts the bytes after itself: the 12-byte header and the
//! payload. A frame whose length exceeds the limit is refused as soon as its
//! prefix arrives, before any of its body is buffered.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;
/// Bytes of the header after the length prefix.
pub const FRAME_HEADER_BYTES: usize = 12;
/// The default limit on `length` (header and payload): 64 KiB.
pub const FRAME_SIZE_MAX_BYTES_DEFAULT: usize = 64 * 1024;

const _: () = assert!(FRAME_HEADER_BYTES == 2 + 2 + 8);
const _: () = assert!(FRAME_SIZE_MAX_BYTES_DEFAULT <= u32::MAX as usize);

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the payload is (a [`crate::codec::proto::MessageType`] number).
    pub message_type: u16,
    /// Reserved for options such as compression; zero today.
    pub flags: u16,
    /// Chosen by the sender of a request; echoed in the reply.
    pub correlation_id: u64,
    /// The protobuf payload.
    pub payload: Bytes,
}

impl Frame {
    /// Bytes the frame takes on the wire.
    pub fn encoded_len(&self) -> usize {
        LENGTH_PREFIX_BYTES + FRAME_HEADER_BYTES + self.payload.len()
    }

    /// Appends the frame's bytes to `out`.
    ///
    /// # Panics
    /// If the payload is so large that the length does not fit 32 bits; a
    /// sender keeps payloads under its frame limit.
    pub fn encode(&self, out: &mut BytesMut) {
        let length = FRAME_HEADER_BYTES + self.payload.len();
        assert!(length <= u32::MAX as usize, "frame of {length} bytes");
        out.reserve(LENGTH_PREFIX_BYTES + length);
        out.put_u32(length as u32);
        out.put_u16(self.message_type);
        out.put_u16(self.flags);
        out.put_u64(self.correlation_id);
        out.put_slice(&self.payload);
    }
}

/// Why bytes are not a frame. Either closes the connection that sent them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The length cannot even hold the header.
    #[error("frame length {0} is shorter than the {FRAME_HEADER_BYTES}-byte header")]
    TooShort(u32),
    /// The length is over the limit.
    #[error("frame length {length} is over the limit of {limit} bytes")]
    TooLarge {
        /// The length the prefix announced.
        length: u32,
        /// The limit.
        limit: usize,
    },
}

/// Cuts frames out of a byte stream.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    frame_size_max: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(FRAME_SIZE_MAX_BYTES_DEFAULT)
    }
}

impl FrameDecoder {
    /// A decoder refusing frames whose length is over `frame_size_max`.
    ///
    /// # Panics
    /// If the limit cannot hold a header.
    pub fn new(frame_size_max: usize) -> Self {
        assert!(
            frame_size_max >= FRAME_HEADER_BYTES,
            "a frame limit must hold the header"
        );
        Self { frame_size_max }
    }

    /// The limit on a frame's length.
    pub fn frame_size_max(&self) -> usize {
        self.frame_size_max
    }

    /// Takes the next whole frame off the front of `buffer`. `Ok(None)`: more
    /// bytes are needed (nothing is taken); `Err`: the stream is not valid
    /// framing, and the connection must close (nothing is taken either).
    pub fn decode(&self, buffer: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(length) = self.peek_length(buffer)? else {
            return Ok(None);
        };
        let total = LENGTH_PREFIX_BYTES + length;
        if buffer.len() < total {
            // Room for the rest of this frame, and no more: the length was
            // checked against the limit, so this is bounded.
            buffer.reserve(total - buffer.len());
            return Ok(None);
        }
        let mut bytes = buffer.split_to(total);
        bytes.advance(LENGTH_PREFIX_BYTES);
        let message_type = bytes.get_u16();
        let flags = bytes.get_u16();
        let correlation_id = bytes.get_u64();
        Ok(Some(Frame {
            message_type,
            flags,
            correlation_id,
            payload: bytes.freeze(),
        }))
    }

    /// The bytes the whole frame at the front of `buffer` takes (length
    /// prefix included), checked against the limit, once its prefix has
    /// arrived: `Ok(None)` until then. The caller may then use
    /// `buffer[LENGTH_PREFIX_BYTES..total]` in place, without a copy, once
    /// `total` bytes have arrived.
    pub fn frame_bytes(&self, buffer: &[u8]) -> Result<Option<usize>, FrameError> {
        Ok(self
            .peek_length(buffer)?
            .map(|length| LENGTH_PREFIX_BYTES + length))
    }

    /// The length of the frame at the front of `buffer`, checked, once its
    /// prefix has arrived.
    fn peek_length(&self, buffer: &[u8]) -> Result<Option<usize>, FrameError> {
        let Some(prefix) = buffer.get(..LENGTH_PREFIX_BYTES) else {
            return Ok(None);
        };
        let length = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        if (length as usize) < FRAME_HEADER_BYTES {
            return Err(FrameError::TooShort(length));
        }
        if length as usize > self.frame_size_max {
            return Err(FrameError::TooLarge {
                length,
                limit: self.frame_size_max,
            });
        }
        Ok(Some(length as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(message_type: u16, payload: &[u8]) -> Frame {
        Frame {
            message_type,
            flags: 0,
            correlation_id: 7,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    #[test]
    fn decodes_whole_frames_and_waits_for_partial_ones() {
        let decoder = FrameDecoder::default();
        let mut wire = BytesMut::new();
        frame(1, b"abc").encode(&mut wire);
        frame(2, b"").encode(&mut wire);
        let full = wire.clone();
        // Each case: how many bytes have arrived, and how many frames are whole.
        for (arrived, whole) in [(0, 0), (3, 0), (4, 0), (18, 0), (19, 1), (34, 1), (35, 2)] {
            let mut buffer = BytesMut::from(&full[..arrived]);
            let mut count = 0;
            while let Some(decoded) = decoder.decode(&mut buffer).unwrap() {
                assert_eq!(decoded.message_type as usize, count + 1);
                count += 1;
            }
            assert_eq!(count, whole, "after {arrived} bytes");
            assert_eq!(
                buffer.len(),
                arrived - [0, 19, 35][whole],
                "partial bytes stay buffered"
            );
        }
    }

    #[test]
    fn refuses_bad_lengths_before_buffering_the_body() {
        let decoder = FrameDecoder::new(100);
        // Each case: a length prefix and the error it must give.
        let cases = [
            (0u32, FrameError::TooShort(0)),
            (11, FrameError::TooShort(11)),
            (
                101,
                FrameError::TooLarge {
                    length: 101,
                    limit: 100,
                },
            ),
            (
                u32::MAX,
                FrameError::TooLarge {
                    length: u32::MAX,
                    limit: 100,
                },
            ),
        ];
        for (length, error) in cases {
            // Only the prefix has arrived: the verdict comes at once.
            let mut buffer = BytesMut::from(&length.to_be_bytes()[..]);
            assert_eq!(decoder.decode(&mut buffer), Err(error));
            assert!(
                buffer.capacity() < 100,
                "nothing reserved for a refused body"
            );
        }
        // The limit itself is allowed.
        let mut buffer = BytesMut::from(&100u32.to_be_bytes()[..]);
        assert_eq!(decoder.decode(&mut buffer), Ok(None));
    }

    proptest! {
        /// Frames survive encoding, whatever the chunks they arrive in.
        #[test]
        fn round_trip_in_any_chunks(
            frames in proptest::collection::vec((any::<u16>(), any::<u16>(), any::<u64>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..20),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let frames: Vec<Frame> = frames
                .into_iter()
                .map(|(message_type, flags, correlation_id, payload)| Frame { message_type, flags, correlation_id, payload: payload.into() })
                .collect();
            let mut wire = BytesMut::new();
            for f in &frames {
                f.encode(&mut wire);
            }
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
            points.push(wire.len());
            points.sort_unstable();
            let decoder = FrameDecoder::new(1024);
            let mut buffer = BytesMut::new();
            let mut decoded = Vec::new();
            let mut from = 0;
            for to in points {
                buffer.extend_from_slice(&wire[from..to]);
                from = to;
                while let Some(f) = decoder.decode(&mut buffer).unwrap() {
                    decoded.push(f);
                }
            }
            prop_assert_eq!(decoded, frames);
            prop_assert!(buffer.is_empty());
        }

        /// Arbitrary bytes never panic the decoder, and every byte is either
        /// taken as part of a frame or left in the buffer.
        #[test]
        fn arbitrary_input_never_panics(input in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let decoder = FrameDecoder::new(512);
            let mut buffer = BytesMut::from(&input[..]);
            let mut consumed = 0;
            while let Ok(Some(f)) = decoder.decode(&mut buffer) {
                consumed += f.encoded_len();
            }
            prop_assert_eq!(consumed + buffer.len(), input.len());
        }
    }
}
