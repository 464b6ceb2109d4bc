//! Keeping a connection's replies in request order across password checks.
//!
//! A `Register` or a password `Login` is answered after an argon2 check on
//! an auth worker, while the commands behind it would be answered at once:
//! a `Login` then a `Send`, pipelined, would see the `Send` refused as
//! `NOT_LOGGED_IN` before the `LoginOk`. So whoever feeds a connection's
//! frames to the broker holds the frames behind a `Register` or `Login`
//! until its answer (`RegisterOk`, `LoginOk` or an `Error` with its
//! correlation id) goes back to the client. [`AnswerGate`] is that rule
//! without sockets; courier's server keeps one per connection, and a
//! gateway that embeds the broker should too. Holding costs the held
//! client only: its later bytes wait in its own buffer (and the socket),
//! one check at a time.

use super::frame::{FRAME_HEADER_BYTES, LENGTH_PREFIX_BYTES};
use super::proto::MessageType;

/// Whether a connection's next frame may go to the broker now. See the
/// module docs.
///
/// # Invariants
/// - While `awaiting` is set, the connection has exactly one `Register` or
///   `Login` with that correlation id unanswered, and nothing after it has
///   been passed on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AnswerGate {
    awaiting: Option<u64>,
}

impl AnswerGate {
    /// Whether frames may be passed on now.
    pub fn is_open(&self) -> bool {
        self.awaiting.is_none()
    }

    /// The correlation id a frame (header and payload, no length prefix)
    /// waits for an answer under, if it is a `Register` or a `Login`.
    pub fn needs_answer(frame: &[u8]) -> Option<u64> {
        let header = frame.get(..FRAME_HEADER_BYTES)?;
        let message_type = u16::from_be_bytes([header[0], header[1]]);
        let held = [MessageType::Register, MessageType::Login];
        if !held.iter().any(|&t| t as u16 == message_type) {
            return None;
        }
        Some(u64::from_be_bytes(
            header[4..12].try_into().expect("8 bytes"),
        ))
    }

    /// A frame was passed on: after a `Register` or `Login` the gate
    /// closes until its answer.
    pub fn passed(&mut self, frame: &[u8]) {
        if let Some(correlation_id) = Self::needs_answer(frame) {
            self.wait_for(correlation_id);
        }
    }

    /// A `Register` or `Login` with `correlation_id` was passed on (as
    /// [`AnswerGate::needs_answer`] found): the gate closes until its answer.
    pub fn wait_for(&mut self, correlation_id: u64) {
        debug_assert!(self.is_open(), "nothing is passed on while closed");
        self.awaiting = Some(correlation_id);
    }

    /// A frame (with its length prefix) goes to the client; true if it is
    /// the awaited answer, which opens the gate again.
    pub fn answered(&mut self, frame: &[u8]) -> bool {
        let Some(awaiting) = self.awaiting else {
            return false;
        };
        let Some(header) = frame.get(LENGTH_PREFIX_BYTES..LENGTH_PREFIX_BYTES + FRAME_HEADER_BYTES)
        else {
            return false;
        };
        let message_type = u16::from_be_bytes([header[0], header[1]]);
        let answers = [
            MessageType::RegisterOk,
            MessageType::LoginOk,
            MessageType::Error,
        ];
        let correlation_id = u64::from_be_bytes(header[4..12].try_into().expect("8 bytes"));
        if correlation_id != awaiting || !answers.iter().any(|&t| t as u16 == message_type) {
            return false;
        }
        self.awaiting = None;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::proto;
    use crate::codec::Message;

    fn frame(message: &Message, correlation_id: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        message.encode_frame(correlation_id, &mut bytes);
        bytes
    }

    #[test]
    fn a_login_closes_the_gate_until_its_own_answer() {
        let login = Message::Login(proto::Login {
            user: "ana".into(),
            ..proto::Login::default()
        });
        let mut gate = AnswerGate::default();
        gate.passed(
            &frame(
                &Message::Ping(proto::Ping {
                    nonce: 1,
                    ..Default::default()
                }),
                1,
            )[LENGTH_PREFIX_BYTES..],
        );
        assert!(gate.is_open(), "a ping needs no answer first");
        gate.passed(&frame(&login, 7)[LENGTH_PREFIX_BYTES..]);
        assert!(!gate.is_open());
        // Each case: a frame to the client, and whether it opens the gate.
        let ok = Message::LoginOk(proto::LoginOk::default());
        let error = Message::error(proto::ErrorCode::BadCredentials, "no");
        let cases = [
            (
                frame(
                    &Message::Pong(proto::Pong {
                        nonce: 1,
                        ..Default::default()
                    }),
                    7,
                ),
                false,
            ), // not an answer
            (frame(&ok, 6), false), // another request's
            (vec![0, 0], false),    // not a frame
            (frame(&error, 7), true),
        ];
        for (bytes, opens) in cases {
            assert_eq!(gate.answered(&bytes), opens, "{bytes:?}");
        }
        assert!(gate.is_open());
        let register = Message::Register(proto::Register::default());
        gate.passed(&frame(&register, 8)[LENGTH_PREFIX_BYTES..]);
        assert!(gate.answered(&frame(
            &Message::RegisterOk(proto::RegisterOk::default()),
            8
        )));
    }
}
