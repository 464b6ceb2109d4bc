//! Heartbeat intervals a client declares: what the server accepts, read
//! alike by the logic that answers the `Ping` and by the network layer that
//! holds the connection to it.

use prost::Message as _;

use super::proto::{self, MessageType};
use super::FRAME_HEADER_BYTES;

/// The interval a `Ping` declaring `declared` ms is held to: 0 when it
/// declares none, otherwise `declared` brought within `shortest` (the
/// interval `HelloOk` suggests) and `longest`.
pub fn accepted_heartbeat_interval(declared: u32, shortest: u32, longest: u32) -> u32 {
    if declared == 0 {
        0
    } else {
        declared.clamp(shortest, longest.max(shortest))
    }
}

/// The interval a frame (header and payload, no length prefix) declares,
/// if it is a `Ping` that declares one. Anything else, a malformed `Ping`
/// included (logic answers that one with an error), declares nothing.
pub fn declared_heartbeat_interval(frame: &[u8]) -> Option<u32> {
    let header = frame.get(..FRAME_HEADER_BYTES)?;
    if u16::from_be_bytes([header[0], header[1]]) != MessageType::Ping as u16 {
        return None;
    }
    let ping = proto::Ping::decode(&frame[FRAME_HEADER_BYTES..]).ok()?;
    (ping.interval_ms != 0).then_some(ping.interval_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Message, LENGTH_PREFIX_BYTES};

    #[test]
    fn a_declared_interval_is_held_within_the_range() {
        assert_eq!(accepted_heartbeat_interval(0, 30_000, 600_000), 0);
        assert_eq!(accepted_heartbeat_interval(5, 30_000, 600_000), 30_000);
        assert_eq!(
            accepted_heartbeat_interval(210_000, 30_000, 600_000),
            210_000
        );
        assert_eq!(
            accepted_heartbeat_interval(u32::MAX, 30_000, 600_000),
            600_000
        );
    }

    #[test]
    fn only_a_ping_that_declares_an_interval_declares_one() {
        let frame = |message: &Message| {
            let mut bytes = Vec::new();
            message.encode_frame(3, &mut bytes);
            bytes.split_off(LENGTH_PREFIX_BYTES)
        };
        let declaring = Message::Ping(proto::Ping {
            nonce: 1,
            interval_ms: 210_000,
        });
        let plain = Message::Ping(proto::Ping {
            nonce: 1,
            interval_ms: 0,
        });
        let pong = Message::Pong(proto::Pong {
            nonce: 1,
            interval_ms: 210_000,
        });
        assert_eq!(
            declared_heartbeat_interval(&frame(&declaring)),
            Some(210_000)
        );
        assert_eq!(declared_heartbeat_interval(&frame(&plain)), None);
        assert_eq!(declared_heartbeat_interval(&frame(&pong)), None);
        let mut broken = frame(&declaring);
        broken.push(0xff);
        assert_eq!(declared_heartbeat_interval(&broken), None);
        assert_eq!(declared_heartbeat_interval(&[0; 3]), None);
    }
}
