//! A `Send` read in place: the hot path's decoder.
//!
//! Every chat message arrives as a `Send`. Decoding it with prost allocates
//! a `String` for the recipient and a `Vec` for the body, and copies both;
//! this reader finds them where they lie in the frame and hands out ranges,
//! so decode, logic and the journal share the one copy in the ring slot. It
//! accepts exactly what prost accepts (a property test holds them to it).

use std::ops::Range;

/// Where a `Send`'s fields are within its payload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SendView {
    /// The recipient's name (valid UTF-8).
    pub recipient: Range<usize>,
    /// The client's message id.
    pub client_message_id: u64,
    /// The body.
    pub body: Range<usize>,
    /// The group of a group message (0 for a 1:1 message).
    pub group_id: u64,
}

/// Why a payload is not a valid `Send`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Send at byte {offset}: {reason}")]
pub struct SendViewError {
    /// Where in the payload.
    pub offset: usize,
    /// What is wrong.
    pub reason: &'static str,
}

/// Nesting of groups (a deprecated wire form) that prost also refuses past.
const GROUP_DEPTH_MAX: u32 = 100;

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn fail<T>(&self, reason: &'static str) -> Result<T, SendViewError> {
        Err(SendViewError {
            offset: self.at,
            reason,
        })
    }

    /// A varint; most here (keys, lengths, small numbers) are one byte.
    #[inline]
    fn varint(&mut self) -> Result<u64, SendViewError> {
        if let Some(&byte) = self.bytes.get(self.at) {
            if byte < 0x80 {
                self.at += 1;
                return Ok(u64::from(byte));
            }
        }
        self.varint_long()
    }

    #[inline(never)]
    fn varint_long(&mut self) -> Result<u64, SendViewError> {
        let mut value = 0u64;
        for index in 0..10 {
            let Some(&byte) = self.bytes.get(self.at) else {
                return self.fail("truncated varint");
            };
            self.at += 1;
            if index == 9 && byte > 1 {
                return self.fail("varint overflows 64 bits");
            }
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        self.fail("varint longer than 10 bytes")
    }

    fn length_delimited(&mut self) -> Result<Range<usize>, SendViewError> {
        let length = self.varint()?;
        let remaining = (self.bytes.len() - self.at) as u64;
        if length > remaining {
            return self.fail("length runs past the end");
        }
        let start = self.at;
        self.at += length as usize;
        Ok(start..self.at)
    }

    fn skip(&mut self, count: usize) -> Result<(), SendViewError> {
        if self.bytes.len() - self.at < count {
            return self.fail("truncated fixed-width field");
        }
        self.at += count;
        Ok(())
    }

    /// Reads a key; returns (field number, wire type).
    fn key(&mut self) -> Result<(u32, u8), SendViewError> {
        let key = self.varint()?;
        if key > u64::from(u32::MAX) {
            return self.fail("key overflows 32 bits");
        }
        let wire_type = (key & 7) as u8;
        if wire_type > 5 {
            return self.fail("unknown wire type");
        }
        let field = (key >> 3) as u32;
        if field == 0 {
            return self.fail("field number 0");
        }
        Ok((field, wire_type))
    }

    /// Skips a field of `wire_type` (after its key).
    fn skip_field(&mut self, field: u32, wire_type: u8, depth: u32) -> Result<(), SendViewError> {
        match wire_type {
            0 => self.varint().map(drop),
            1 => self.skip(8),
            2 => self.length_delimited().map(drop),
            5 => self.skip(4),
            3 => {
                if depth >= GROUP_DEPTH_MAX {
                    return self.fail("groups nested too deep");
                }
                loop {
                    if self.at == self.bytes.len() {
                        return self.fail("unterminated group");
                    }
                    let (inner, inner_type) = self.key()?;
                    if inner_type == 4 {
                        return if inner == field {
                            Ok(())
                        } else {
                            self.fail("mismatched end group")
                        };
                    }
                    self.skip_field(inner, inner_type, depth + 1)?;
                }
            }
            _ => self.fail("unexpected end group"),
        }
    }
}

impl SendView {
    /// Reads a `Send` payload.
    pub fn parse(payload: &[u8]) -> Result<Self, SendViewError> {
        let mut reader = Reader {
            bytes: payload,
            at: 0,
        };
        let mut view = SendView::default();
        while reader.at < payload.len() {
            let (field, wire_type) = reader.key()?;
            match (field, wire_type) {
                (1, 2) => {
                    let range = reader.length_delimited()?;
                    // A name is nearly always ASCII, which is checked a
                    // word at a time and is UTF-8.
                    let name = &payload[range.clone()];
                    if !name.is_ascii() && std::str::from_utf8(name).is_err() {
                        return reader.fail("recipient is not UTF-8");
                    }
                    view.recipient = range;
                }
                (2, 0) => view.client_message_id = reader.varint()?,
                (3, 2) => view.body = reader.length_delimited()?,
                (4, 0) => view.group_id = reader.varint()?,
                (1..=4, _) => return reader.fail("wrong wire type for a Send field"),
                _ => reader.skip_field(field, wire_type, 0)?,
            }
        }
        Ok(view)
    }

    /// The recipient, from the payload this view was parsed from.
    ///
    /// # Panics
    /// If `payload` is not the one parsed (the range is out of bounds or
    /// not UTF-8).
    pub fn recipient<'a>(&self, payload: &'a [u8]) -> &'a str {
        std::str::from_utf8(&payload[self.recipient.clone()]).expect("checked at parse")
    }

    /// The recipient's bytes (UTF-8, checked at parse), from the payload
    /// this view was parsed from.
    ///
    /// # Panics
    /// If `payload` is too short for the view's range.
    pub fn recipient_bytes<'a>(&self, payload: &'a [u8]) -> &'a [u8] {
        &payload[self.recipient.clone()]
    }

    /// The view with every range moved `by` bytes later: for a payload that
    /// sits inside a larger buffer.
    pub fn shifted(mut self, by: usize) -> Self {
        self.recipient = self.recipient.start + by..self.recipient.end + by;
        self.body = self.body.start + by..self.body.end + by;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::proto;
    use proptest::prelude::*;
    use prost::Message as _;

    fn check_agrees(payload: &[u8]) -> Result<(), TestCaseError> {
        let ours = SendView::parse(payload);
        let theirs = proto::Send::decode(payload);
        match (ours, theirs) {
            (Ok(view), Ok(send)) => {
                prop_assert_eq!(view.recipient(payload), send.recipient.as_str());
                prop_assert_eq!(view.recipient_bytes(payload), send.recipient.as_bytes());
                prop_assert_eq!(view.client_message_id, send.client_message_id);
                prop_assert_eq!(&payload[view.body.clone()], &send.body[..]);
                prop_assert_eq!(view.group_id, send.group_id);
            }
            (Err(_), Err(_)) => {}
            (ours, theirs) => {
                prop_assert!(false, "disagree on {payload:?}: {ours:?} vs {theirs:?}")
            }
        }
        Ok(())
    }

    #[test]
    fn reads_fields_in_any_order_and_skips_unknown_ones() {
        // recipient "bo", an unknown fixed32 field 9, id 300, body "hi",
        // then recipient again (the last one wins, as in protobuf).
        let payload = [
            0x0a, 2, b'b', b'o', 0x4d, 1, 2, 3, 4, 0x10, 0xac, 0x02, 0x1a, 2, b'h', b'i', 0x0a, 1,
            b'c',
        ];
        let view = SendView::parse(&payload).unwrap();
        assert_eq!(view.recipient(&payload), "c");
        assert_eq!(view.client_message_id, 300);
        assert_eq!(&payload[view.body.clone()], b"hi");
        check_agrees(&payload).unwrap();
    }

    #[test]
    fn refuses_what_prost_refuses() {
        // Each case: a payload prost refuses.
        let cases: [&[u8]; 6] = [
            &[0x0a, 5, b'a'], // a length past the end
            &[0x08, 1],       // recipient as a varint
            &[0x0a, 1, 0xff], // recipient not UTF-8
            &[0x00, 1],       // field number 0
            &[
                0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
            ], // overflow
            &[0x4b, 0x4c + 8], // a group ended by another field's end
        ];
        for payload in cases {
            assert!(SendView::parse(payload).is_err(), "{payload:?}");
            check_agrees(payload).unwrap();
        }
    }

    proptest! {
        /// Real Sends read the same either way.
        #[test]
        fn agrees_with_prost_on_sends(recipient in ".{0,30}", id in any::<u64>(), body in proptest::collection::vec(any::<u8>(), 0..200), group_id in any::<u64>()) {
            let payload = proto::Send { recipient, client_message_id: id, body, group_id }.encode_to_vec();
            check_agrees(&payload)?;
        }

        /// Arbitrary bytes: both accept or both refuse, and agree on values.
        #[test]
        fn agrees_with_prost_on_noise(payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            check_agrees(&payload)?;
        }

        /// Noise built from plausible keys, to reach deeper paths.
        #[test]
        fn agrees_with_prost_on_keyed_noise(parts in proptest::collection::vec((0u8..40, proptest::collection::vec(any::<u8>(), 0..6)), 0..8)) {
            let mut payload = Vec::new();
            for (key, bytes) in parts {
                payload.push(key);
                payload.extend(bytes);
            }
            check_agrees(&payload)?;
        }
    }
}
