//! Typed messages: a frame's type number and protobuf payload, decoded.

use bytes::Bytes;
use prost::Message as _;
use thiserror::Error;

use super::proto::{self, ErrorCode, MessageType};
use super::{Frame, FRAME_HEADER_BYTES, LENGTH_PREFIX_BYTES};

/// The protocol version this build speaks (sent in `Hello`).
pub const PROTOCOL_VERSION: u32 = 1;

/// Why a frame is not a message this build understands. The connection gets
/// an `Error` frame with [`MessageError::code`]; the server goes on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MessageError {
    /// The type number is not one this build knows.
    #[error("unknown message type {0}")]
    UnknownType(u16),
    /// The payload is not valid protobuf for its type.
    #[error("malformed {message_type:?} payload: {reason}")]
    Malformed {
        /// The frame's type.
        message_type: MessageType,
        /// What the protobuf decoder said.
        reason: String,
    },
}

impl MessageError {
    /// The stable code to send back in an `Error` frame.
    pub fn code(&self) -> ErrorCode {
        match self {
            MessageError::UnknownType(_) => ErrorCode::UnknownMessageType,
            MessageError::Malformed { .. } => ErrorCode::MalformedFrame,
        }
    }
}

macro_rules! messages {
    ($($variant:ident),* $(,)?) => {
        /// Every message of the protocol.
        #[derive(Debug, Clone, PartialEq)]
        #[allow(missing_docs)] // each variant is the proto message of its name
        pub enum Message {
            $($variant(proto::$variant),)*
        }

        impl Message {
            /// The type number its frames carry.
            pub fn message_type(&self) -> MessageType {
                match self {
                    $(Message::$variant(_) => MessageType::$variant,)*
                }
            }

            fn encode_payload(&self) -> Vec<u8> {
                match self {
                    $(Message::$variant(inner) => inner.encode_to_vec(),)*
                }
            }

            /// Appends the whole frame (length prefix, header, payload) to
            /// `out`, reusing its capacity.
            pub fn encode_frame(&self, correlation_id: u64, out: &mut Vec<u8>) {
                if let Message::SendAck(ack) = self {
                    return encode_send_ack_frame(ack, correlation_id, out);
                }
                let payload_len = match self {
                    $(Message::$variant(inner) => inner.encoded_len(),)*
                };
                let length = FRAME_HEADER_BYTES + payload_len;
                assert!(length <= u32::MAX as usize, "frame of {length} bytes");
                out.reserve(LENGTH_PREFIX_BYTES + length);
                out.extend_from_slice(&(length as u32).to_be_bytes());
                out.extend_from_slice(&(self.message_type() as u16).to_be_bytes());
                out.extend_from_slice(&0u16.to_be_bytes());
                out.extend_from_slice(&correlation_id.to_be_bytes());
                // Encoding into a Vec cannot fail: it grows as needed.
                match self {
                    $(Message::$variant(inner) => inner.encode_raw(out),)*
                }
            }

            /// Decodes a frame's payload by its type.
            pub fn decode(frame: &Frame) -> Result<Self, MessageError> {
                Self::decode_parts(frame.message_type, &frame.payload)
            }

            /// Decodes a payload of type number `message_type`.
            pub fn decode_parts(message_type: u16, payload: &[u8]) -> Result<Self, MessageError> {
                let type_number = message_type;
                let message_type = MessageType::try_from(i32::from(type_number))
                    .map_err(|_| MessageError::UnknownType(type_number))?;
                let malformed = |error: prost::DecodeError| MessageError::Malformed {
                    message_type,
                    reason: error.to_string(),
                };
                match message_type {
                    $(MessageType::$variant => proto::$variant::decode(payload)
                        .map(Message::$variant)
                        .map_err(malformed),)*
                    MessageType::Unspecified => Err(MessageError::UnknownType(type_number)),
                }
            }
        }
    };
}

messages!(
    Hello,
    HelloOk,
    Ping,
    Pong,
    Error,
    Register,
    RegisterOk,
    Login,
    LoginOk,
    Logout,
    Send,
    SendAck,
    Deliver,
    Sync,
    SyncBatch,
    Notify,
    ContactRequest,
    ContactAccept,
    ContactDecline,
    ContactRemove,
    ContactBlock,
    ContactOk,
    ContactSync,
    ContactList,
    ContactChanged,
    MarkRead,
    ReadState,
    GroupCreate,
    GroupInvite,
    GroupJoin,
    GroupLeave,
    GroupRemove,
    GroupRename,
    GroupOk,
    GroupMembers,
    GroupInfo,
    GroupListRequest,
    GroupList,
    GroupChanged,
);

/// The fields of a `Deliver`, borrowed: encoding it needs no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliverRef<'a> {
    /// Who sent the message.
    pub sender: &'a str,
    /// The server's id for the message.
    pub server_message_id: u64,
    /// Its sequence in the receiving user's inbox.
    pub inbox_sequence: u64,
    /// When it was journaled.
    pub timestamp_ms: u64,
    /// The body.
    pub body: &'a [u8],
    /// Whom it was sent to (empty for a group message).
    pub recipient: &'a str,
    /// The group it was posted to (0 for a 1:1 message).
    pub group_id: u64,
}

impl DeliverRef<'_> {
    fn payload_len(&self) -> usize {
        let bytes = |len: usize| {
            if len == 0 {
                0
            } else {
                Run::varint_field_len(len as u64) + len
            }
        };
        bytes(self.sender.len())
            + Run::varint_field_len(self.server_message_id)
            + Run::varint_field_len(self.inbox_sequence)
            + Run::varint_field_len(self.timestamp_ms)
            + bytes(self.body.len())
            + bytes(self.recipient.len())
            + Run::varint_field_len(self.group_id)
    }

    /// Appends a whole `Deliver` frame to `out`, as
    /// [`Message::encode_frame`] would encode the owned message.
    pub fn encode_frame(&self, correlation_id: u64, out: &mut Vec<u8>) {
        let length = FRAME_HEADER_BYTES + self.payload_len();
        assert!(length <= u32::MAX as usize, "frame of {length} bytes");
        out.reserve(LENGTH_PREFIX_BYTES + length);
        // The keys, lengths and numbers between the borrowed fields are put
        // together on the stack and copied in one piece each: a frame is
        // four such runs and three fields copied, not a growth check per
        // byte.
        let mut run = Run::frame_start(length, MessageType::Deliver, correlation_id);
        run.bytes_key(1, self.sender.len());
        run.flush_then(out, self.sender.as_bytes());
        run.varint_field(2, self.server_message_id);
        run.varint_field(3, self.inbox_sequence);
        run.varint_field(4, self.timestamp_ms);
        run.bytes_key(5, self.body.len());
        run.flush_then(out, self.body);
        run.bytes_key(6, self.recipient.len());
        run.flush_then(out, self.recipient.as_bytes());
        run.varint_field(7, self.group_id);
        run.flush_then(out, &[]);
    }
}

/// Appends a whole `SendAck` frame to `out`, as [`Message::encode_frame`]
/// would: the hot path's other frame, so it skips prost's general encoder.
fn encode_send_ack_frame(ack: &proto::SendAck, correlation_id: u64, out: &mut Vec<u8>) {
    let length = FRAME_HEADER_BYTES
        + Run::varint_field_len(ack.client_message_id)
        + Run::varint_field_len(ack.server_message_id)
        + Run::varint_field_len(ack.inbox_sequence);
    let mut run = Run::frame_start(length, MessageType::SendAck, correlation_id);
    run.varint_field(1, ack.client_message_id);
    run.varint_field(2, ack.server_message_id);
    run.varint_field(3, ack.inbox_sequence);
    run.flush_then(out, &[]);
}

/// Up to `RUN_BYTES` of a frame built on the stack before being copied out:
/// the frame's start, and the keys, lengths and numbers between its byte
/// fields. Field numbers here are all below 16, so each key is one byte.
struct Run {
    bytes: [u8; RUN_BYTES],
    len: usize,
}

/// The frame start (16 bytes) and three numeric fields and a length (11
/// bytes each at most) fit, with room to spare.
const RUN_BYTES: usize = 64;

impl Run {
    /// A run holding a frame's length prefix and header.
    fn frame_start(length: usize, message_type: MessageType, correlation_id: u64) -> Self {
        let mut run = Run {
            bytes: [0; RUN_BYTES],
            len: LENGTH_PREFIX_BYTES + FRAME_HEADER_BYTES,
        };
        run.bytes[..4].copy_from_slice(&(length as u32).to_be_bytes());
        run.bytes[4..6].copy_from_slice(&(message_type as u16).to_be_bytes());
        // Bytes 6..8, the flags, stay zero.
        run.bytes[8..16].copy_from_slice(&correlation_id.to_be_bytes());
        run
    }

    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.bytes[self.len] = value as u8 | 0x80;
            self.len += 1;
            value >>= 7;
        }
        self.bytes[self.len] = value as u8;
        self.len += 1;
    }

    /// The bytes [`Run::varint_field`] writes for `value` (a one-byte key,
    /// then the varint); also a byte field's key and length for a non-empty
    /// one of `value` bytes.
    fn varint_field_len(value: u64) -> usize {
        if value == 0 {
            0
        } else {
            1 + prost::encoding::encoded_len_varint(value)
        }
    }

    /// A varint field, left out when zero as proto3 does.
    fn varint_field(&mut self, field: u8, value: u64) {
        if value != 0 {
            self.varint(u64::from(field << 3));
            self.varint(value);
        }
    }

    /// The key and length of a byte field, left out when empty; its bytes
    /// follow through [`Run::flush_then`].
    fn bytes_key(&mut self, field: u8, len: usize) {
        if len != 0 {
            self.varint(u64::from(field << 3 | 2));
            self.varint(len as u64);
        }
    }

    /// Copies the run, then `bytes`, to `out`, and starts a new run.
    fn flush_then(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        // The whole buffer, then cut back: a copy of a known length is a
        // few vector moves in line, where one of the run's own length is a
        // call to `memcpy`, which costs more than these few bytes.
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        out.truncate(start + self.len);
        out.extend_from_slice(bytes);
        self.len = 0;
    }
}

impl Message {
    /// The message as a frame with `correlation_id`.
    pub fn to_frame(&self, correlation_id: u64) -> Frame {
        Frame {
            message_type: self.message_type() as u16,
            flags: 0,
            correlation_id,
            payload: Bytes::from(self.encode_payload()),
        }
    }

    /// An `Error` message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Message::Error(proto::Error {
            code: code as i32,
            message: message.into(),
            retry_after_ms: 0,
        })
    }

    /// A `TOO_MANY_ATTEMPTS` error that says when to try again.
    pub fn retry_after(retry_after_ms: u32, message: impl Into<String>) -> Self {
        Message::Error(proto::Error {
            code: ErrorCode::TooManyAttempts as i32,
            message: message.into(),
            retry_after_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The test vectors docs/PROTOCOL.md prints, byte for byte.
    #[test]
    fn the_documented_test_vectors_encode_as_printed() {
        let hex = |message: &Message, correlation_id: u64| {
            let mut bytes = Vec::new();
            message.encode_frame(correlation_id, &mut bytes);
            bytes
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        // Each case: a message, its correlation id, and its frame.
        let cases = [
            (
                Message::Ping(proto::Ping {
                    nonce: 1,
                    ..Default::default()
                }),
                7,
                "00 00 00 0e 00 03 00 00 00 00 00 00 00 00 00 07 08 01",
            ),
            (
                Message::Send(proto::Send {
                    recipient: "bo".into(),
                    client_message_id: 1,
                    body: b"hi".to_vec(),
                    group_id: 0,
                }),
                2,
                "00 00 00 16 00 14 00 00 00 00 00 00 00 00 00 02 \
                 0a 02 62 6f 10 01 1a 02 68 69",
            ),
        ];
        for (message, correlation_id, frame) in cases {
            let expected = frame.split_whitespace().collect::<Vec<_>>().join(" ");
            assert_eq!(hex(&message, correlation_id), expected, "{message:?}");
        }
    }

    #[test]
    fn every_type_round_trips_through_a_frame() {
        let samples = vec![
            Message::Hello(proto::Hello {
                protocol_version: PROTOCOL_VERSION,
                client_name: "test".into(),
            }),
            Message::Ping(proto::Ping {
                nonce: 9,
                ..Default::default()
            }),
            Message::Login(proto::Login {
                user: "ana".into(),
                secret: Some(proto::login::Secret::Token("t0k".into())),
                device_id: "phone".into(),
                delivery_mode: proto::DeliveryMode::PushNotice as i32,
                accept_compression: Vec::new(),
            }),
            Message::Logout(proto::Logout {}),
            Message::Send(proto::Send {
                recipient: "bo".into(),
                client_message_id: 3,
                body: b"hi".to_vec(),
                group_id: 0,
            }),
            Message::GroupCreate(proto::GroupCreate {
                name: "family".into(),
                members: vec!["bo".into()],
            }),
            Message::SyncBatch(proto::SyncBatch {
                messages: vec![proto::Deliver {
                    sender: "ana".into(),
                    server_message_id: 1,
                    inbox_sequence: 2,
                    timestamp_ms: 3,
                    body: b"x".to_vec(),
                    recipient: String::new(),
                    group_id: 4,
                }],
                head_sequence: 2,
                more: false,
            }),
            Message::error(ErrorCode::NotLoggedIn, "log in first"),
        ];
        for message in samples {
            let mut encoded = Vec::new();
            message.encode_frame(42, &mut encoded);
            let mut wire = bytes::BytesMut::new();
            message.to_frame(42).encode(&mut wire);
            assert_eq!(encoded, &wire[..], "both encoders agree");
            let frame = message.to_frame(42);
            assert_eq!(frame.correlation_id, 42);
            assert_eq!(Message::decode(&frame), Ok(message));
        }
    }

    #[test]
    fn unknown_and_malformed_frames_are_errors_with_codes() {
        // Each case: a type number, a payload, and the code the sender gets.
        let cases: [(u16, &[u8], ErrorCode); 3] = [
            (999, b"", ErrorCode::UnknownMessageType),
            (0, b"", ErrorCode::UnknownMessageType),
            // Field 1 as a length-delimited field that runs past the end.
            (
                MessageType::Send as u16,
                &[0x0a, 0x05, b'a'],
                ErrorCode::MalformedFrame,
            ),
        ];
        for (message_type, payload, code) in cases {
            let frame = Frame {
                message_type,
                flags: 0,
                correlation_id: 1,
                payload: Bytes::copy_from_slice(payload),
            };
            let error = Message::decode(&frame).unwrap_err();
            assert_eq!(error.code(), code, "{error}");
        }
    }

    /// A field value: zero (which proto3 leaves out) as often as not, else
    /// of any bit length alike, so every varint length is tried.
    fn number() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0),
            (any::<u64>(), 0..64u32).prop_map(|(value, shift)| value >> shift)
        ]
    }

    proptest! {
        /// Whatever a client sends, decoding returns a message or an error.
        #[test]
        fn arbitrary_payloads_never_panic(message_type in any::<u16>(), payload in proptest::collection::vec(any::<u8>(), 0..200)) {
            let frame = Frame { message_type, flags: 0, correlation_id: 0, payload: payload.into() };
            match Message::decode(&frame) {
                // A decoded message is of the frame's type...
                Ok(message) => prop_assert_eq!(message.message_type() as u16, message_type),
                // ...and an unknown type is reported as such.
                Err(MessageError::UnknownType(t)) => prop_assert_eq!(t, message_type),
                Err(MessageError::Malformed { message_type: t, .. }) => prop_assert_eq!(t as u16, message_type),
            }
        }

        /// The borrowed Deliver encoder writes what prost writes.
        #[test]
        fn deliver_ref_encodes_like_prost(sender in ".{0,20}", recipient in ".{0,20}", ids in (number(), number(), number()), body in proptest::collection::vec(any::<u8>(), 0..300), correlation in any::<u64>(), group_id in number()) {
            let borrowed = DeliverRef { sender: &sender, server_message_id: ids.0, inbox_sequence: ids.1, timestamp_ms: ids.2, body: &body, recipient: &recipient, group_id };
            let owned = Message::Deliver(proto::Deliver { sender: sender.clone(), server_message_id: ids.0, inbox_sequence: ids.1, timestamp_ms: ids.2, body: body.clone(), recipient: recipient.clone(), group_id });
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            borrowed.encode_frame(correlation, &mut ours);
            owned.encode_frame(correlation, &mut theirs);
            prop_assert_eq!(ours, theirs);
        }

        /// The `SendAck` fast path writes what prost writes.
        #[test]
        fn send_acks_encode_like_prost(ids in (number(), number(), number()), correlation in any::<u64>()) {
            let ack = proto::SendAck { client_message_id: ids.0, server_message_id: ids.1, inbox_sequence: ids.2 };
            let mut ours = vec![7];
            Message::SendAck(ack).encode_frame(correlation, &mut ours);
            let payload = ack.encode_to_vec();
            let mut theirs = vec![7];
            theirs.extend_from_slice(&((FRAME_HEADER_BYTES + payload.len()) as u32).to_be_bytes());
            theirs.extend_from_slice(&(MessageType::SendAck as u16).to_be_bytes());
            theirs.extend_from_slice(&[0, 0]);
            theirs.extend_from_slice(&correlation.to_be_bytes());
            theirs.extend_from_slice(&payload);
            prop_assert_eq!(ours, theirs);
        }

        #[test]
        fn sends_round_trip(recipient in ".{0,40}", id in any::<u64>(), body in proptest::collection::vec(any::<u8>(), 0..500)) {
            let message = Message::Send(proto::Send { recipient, client_message_id: id, body, group_id: id / 2 });
            prop_assert_eq!(Message::decode(&message.to_frame(id)), Ok(message));
        }
    }
}
