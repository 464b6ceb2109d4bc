//! The session on a fake clock: bytes in, frames and bytes out, no socket
//! and no sleeping.

use super::*;
use crate::codec::proto;
use crate::codec::websocket::{client_binary, client_key, client_request};

/// A publisher that keeps what it is given, with room for `room` frames
/// (then `Full`) and the connection's id checked.
#[derive(Default)]
struct Frames {
    got: Vec<Vec<u8>>,
    room: Option<usize>,
}

impl Frames {
    fn fits(&self, more: usize) -> bool {
        self.room.is_none_or(|room| self.got.len() + more <= room)
    }

    /// The messages published, decoded.
    fn messages(&self) -> Vec<Message> {
        self.got
            .iter()
            .map(|frame| {
                let message_type = u16::from_be_bytes([frame[0], frame[1]]);
                let payload = &frame[crate::codec::FRAME_HEADER_BYTES..];
                Message::decode_parts(message_type, payload).unwrap()
            })
            .collect()
    }
}

impl Publish for Frames {
    fn frames(
        &mut self,
        conn: ConnId,
        buffer: &[u8],
        ranges: &[Range<usize>],
    ) -> Result<(), TryPublishError> {
        assert_eq!(conn, ID);
        if !self.fits(ranges.len()) {
            return Err(TryPublishError::Full);
        }
        self.got
            .extend(ranges.iter().map(|range| buffer[range.clone()].to_vec()));
        Ok(())
    }

    fn frame(&mut self, conn: ConnId, frame: &[u8]) -> Result<(), TryPublishError> {
        let whole = std::iter::once(0..frame.len()).collect::<Vec<_>>();
        self.frames(conn, frame, &whole)
    }
}

const ID: ConnId = ConnId(7);

fn limits(frames_per_second: u32) -> Limits {
    Limits {
        frames_per_second,
        output_cap_bytes: 1024,
        heartbeat_timeout: Duration::from_secs(30),
        heartbeat_interval_ms: (10_000, 600_000),
    }
}

/// A session, the frame decoder and the time it starts at.
fn session(frames_per_second: u32, websocket: bool) -> (Session, FrameDecoder, Instant) {
    let start = Instant::now();
    let session = Session::new(ID, limits(frames_per_second), websocket, start);
    (session, FrameDecoder::new(64 * 1024), start)
}

fn frame(message: &Message, correlation_id: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    message.encode_frame(correlation_id, &mut bytes);
    bytes
}

fn pings(range: Range<u64>) -> Vec<u8> {
    range
        .flat_map(|nonce| {
            frame(
                &Message::Ping(proto::Ping {
                    nonce,
                    ..Default::default()
                }),
                nonce,
            )
        })
        .collect()
}

/// Feeds `bytes` to the session as one read at `now`.
fn feed(session: &mut Session, bytes: &[u8], now: Instant) {
    let mut at = 0;
    while at < bytes.len() {
        let space = session.read_space();
        let n = space.len().min(bytes.len() - at);
        space[..n].copy_from_slice(&bytes[at..at + n]);
        session.received(n, now);
        at += n;
    }
    session.settle_transport(64 * 1024 + LENGTH_PREFIX_BYTES);
}

fn publish(
    session: &mut Session,
    decoder: &FrameDecoder,
    frames: &mut Frames,
    now: Instant,
) -> Published {
    let mut count = 0;
    session.publish(decoder, frames, &mut Vec::new(), &mut count, now)
}

#[test]
fn an_allowance_starts_full_refills_with_time_and_holds_one_second() {
    let start = Instant::now();
    let mut allowance = Allowance::new(100, start);
    assert_eq!(allowance.available(100, start), 100);
    allowance.spend(100);
    assert_eq!(allowance.available(100, start), 0);
    // A tenth of a second later: ten more frames.
    let later = start + Duration::from_millis(100);
    assert_eq!(allowance.available(100, later), 10);
    // Idle for a minute: still one second's worth, no more.
    let much_later = later + Duration::from_secs(60);
    assert_eq!(allowance.available(100, much_later), 100);
}

#[test]
fn reading_resumes_once_a_hundredth_of_a_second_has_refilled() {
    let start = Instant::now();
    let mut slow = Allowance::new(100, start);
    slow.spend(100);
    // 100 frames/s: one frame, after 10 ms.
    let near = |at: Instant, expected: Duration| {
        let got = at - start;
        assert!(got.abs_diff(expected) < Duration::from_micros(1), "{got:?}");
    };
    near(slow.resume_at(100), Duration::from_millis(10));
    let mut fast = Allowance::new(100_000, start);
    fast.spend(100_000);
    // 100,000 frames/s: 64 frames (the cap), after 640 µs.
    near(fast.resume_at(100_000), Duration::from_micros(640));
    // An allowance with frames left resumes at once.
    let full = Allowance::new(100, start);
    assert_eq!(full.resume_at(100), start);
}

#[test]
fn frames_split_anywhere_are_published_whole_and_in_order() {
    let (mut session, decoder, start) = session(0, false);
    let bytes = pings(0..50);
    let mut frames = Frames::default();
    for chunk in bytes.chunks(7) {
        feed(&mut session, chunk, start);
        assert_eq!(
            publish(&mut session, &decoder, &mut frames, start),
            Published::All
        );
    }
    let nonces: Vec<u64> = frames
        .messages()
        .iter()
        .map(|m| match m {
            Message::Ping(ping) => ping.nonce,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(nonces, (0..50).collect::<Vec<_>>());
}

#[test]
fn a_flood_is_published_at_its_allowance_and_paused_between() {
    let (mut session, decoder, start) = session(100, false);
    let mut frames = Frames::default();
    feed(&mut session, &pings(0..250), start);
    assert_eq!(
        publish(&mut session, &decoder, &mut frames, start),
        Published::Throttled
    );
    assert_eq!(frames.got.len(), 100, "one second's allowance at once");
    let resume = session.paused_until().expect("paused");
    assert_eq!(resume - start, Duration::from_millis(10));
    assert!(!session.readable());
    assert_eq!(
        publish(&mut session, &decoder, &mut frames, resume),
        Published::Waiting
    );
    // Half a second later: fifty more.
    session.resume();
    let later = start + Duration::from_millis(500);
    publish(&mut session, &decoder, &mut frames, later);
    assert_eq!(frames.got.len(), 150);
    // Another second: the rest.
    session.resume();
    let end = later + Duration::from_secs(1);
    assert_eq!(
        publish(&mut session, &decoder, &mut frames, end),
        Published::All
    );
    assert_eq!(frames.got.len(), 250);
}

#[test]
fn a_full_ring_takes_what_fits_and_the_rest_waits() {
    let (mut session, decoder, start) = session(0, false);
    let mut frames = Frames {
        room: Some(3),
        ..Frames::default()
    };
    feed(&mut session, &pings(0..5), start);
    assert_eq!(
        publish(&mut session, &decoder, &mut frames, start),
        Published::Full
    );
    assert_eq!(frames.got.len(), 3);
    frames.room = None;
    assert_eq!(
        publish(&mut session, &decoder, &mut frames, start),
        Published::All
    );
    assert_eq!(frames.got.len(), 5);
}

#[test]
fn a_login_holds_what_follows_until_its_answer_goes_out() {
    let (mut session, decoder, start) = session(0, false);
    let login = Message::Login(proto::Login {
        user: "ana".into(),
        secret: Some(proto::login::Secret::Password("pw".into())),
        device_id: "phone".into(),
        delivery_mode: 0,
        accept_compression: Vec::new(),
    });
    let mut bytes = frame(&login, 9);
    bytes.extend(pings(1..3));
    let mut frames = Frames::default();
    feed(&mut session, &bytes, start);
    assert_eq!(
        publish(&mut session, &decoder, &mut frames, start),
        Published::Held
    );
    assert_eq!(frames.got.len(), 1);
    assert_eq!(
        publish(&mut session, &decoder, &mut frames, start),
        Published::Waiting
    );
    // Another answer does not open the gate; the login's does.
    let pong = frame(
        &Message::Pong(proto::Pong {
            nonce: 1,
            ..Default::default()
        }),
        1,
    );
    assert_eq!(session.deliver(false, &pong), Delivered::Queued);
    let error = frame(&Message::error(ErrorCode::BadCredentials, "no"), 9);
    assert_eq!(session.deliver(false, &error), Delivered::Answered);
    assert_eq!(
        publish(&mut session, &decoder, &mut frames, start),
        Published::All
    );
    assert_eq!(frames.got.len(), 3);
}

#[test]
fn bad_framing_is_answered_with_an_error_then_the_session_closes() {
    let (mut session, decoder, start) = session(0, false);
    let mut bytes = pings(0..1);
    bytes.extend_from_slice(&[0, 0, 0, 1, 0xff]); // a frame too short
    let mut frames = Frames::default();
    feed(&mut session, &bytes, start);
    assert_eq!(
        publish(&mut session, &decoder, &mut frames, start),
        Published::Bad
    );
    assert_eq!(frames.got.len(), 1, "what came before is published");
    assert!(matches!(session.closing, Some(CloseReason::BadFraming(_))));
    assert!(!session.unwritten().is_empty(), "the error frame is queued");
}

#[test]
fn a_slow_reader_is_cut_off_at_its_output_cap_and_written_bytes_free_room() {
    let (mut session, _, _) = session(0, false);
    let pong = frame(
        &Message::Pong(proto::Pong {
            nonce: 1,
            ..Default::default()
        }),
        1,
    );
    let fit = 1024 / pong.len();
    for _ in 0..fit {
        assert_eq!(session.deliver(false, &pong), Delivered::Queued);
    }
    assert_eq!(session.deliver(false, &pong), Delivered::Slow);
    // The client reads half: there is room again.
    session.wrote(pong.len() * (fit / 2));
    assert_eq!(session.deliver(false, &pong), Delivered::Queued);
    session.wrote(session.unwritten().len());
    assert!(session.unwritten().is_empty());
}

#[test]
fn silence_past_the_heartbeat_timeout_is_noticed_and_input_resets_it() {
    let (mut session, _, start) = session(0, false);
    let timeout = Duration::from_secs(30);
    assert!(!session.silent_too_long(start + timeout));
    assert!(session.silent_too_long(start + timeout + Duration::from_millis(1)));
    let later = start + Duration::from_secs(20);
    feed(&mut session, &pings(0..1), later);
    assert!(!session.silent_too_long(later + timeout));
    assert!(session.silent_too_long(later + timeout + Duration::from_millis(1)));
}

#[test]
fn a_websocket_upgrade_is_answered_and_its_messages_carry_frames() {
    let (mut session, decoder, start) = session(0, true);
    feed(
        &mut session,
        &client_request("localhost", &client_key()),
        start,
    );
    assert!(session.is_websocket());
    let answer = String::from_utf8_lossy(session.unwritten()).into_owned();
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    session.wrote(session.unwritten().len());
    // Three frames in two WebSocket messages, the second split in two.
    let bytes = pings(0..3);
    let mut wire = Vec::new();
    client_binary(&bytes[..10], [1, 2, 3, 4], &mut wire);
    client_binary(&bytes[10..], [5, 6, 7, 8], &mut wire);
    let mut frames = Frames::default();
    let (first, second) = wire.split_at(wire.len() - 3);
    feed(&mut session, first, start);
    publish(&mut session, &decoder, &mut frames, start);
    feed(&mut session, second, start);
    publish(&mut session, &decoder, &mut frames, start);
    assert_eq!(frames.got.len(), 3);
    // Replies go out as binary messages.
    let pong = frame(
        &Message::Pong(proto::Pong {
            nonce: 1,
            ..Default::default()
        }),
        1,
    );
    session.deliver(false, &pong);
    assert_eq!(session.unwritten()[0], 0x82, "a final binary frame");
    assert!(session.unwritten().ends_with(&pong));
}

#[test]
fn a_plain_request_that_is_not_an_upgrade_is_refused_and_closed() {
    let (mut session, _, start) = session(0, true);
    feed(&mut session, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", start);
    assert!(!session.is_websocket());
    assert!(matches!(session.closing, Some(CloseReason::BadFraming(_))));
    let answer = String::from_utf8_lossy(session.unwritten()).into_owned();
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
}

#[test]
fn a_declared_heartbeat_interval_stretches_the_timeout_within_its_bounds() {
    let (mut session, decoder, start) = session(0, false);
    let mut frames = Frames::default();
    let declare = |interval_ms| {
        let ping = proto::Ping {
            nonce: 1,
            interval_ms,
        };
        frame(&Message::Ping(ping), 1)
    };
    // Three intervals of 210 s: 630 s of silence allowed, not more.
    feed(&mut session, &declare(210_000), start);
    publish(&mut session, &decoder, &mut frames, start);
    assert!(!session.silent_too_long(start + Duration::from_secs(630)));
    assert!(session.silent_too_long(start + Duration::from_millis(630_001)));
    // Over the longest (600 s): held to it, 1,800 s.
    feed(&mut session, &declare(u32::MAX), start);
    publish(&mut session, &decoder, &mut frames, start);
    assert!(!session.silent_too_long(start + Duration::from_secs(1_800)));
    assert!(session.silent_too_long(start + Duration::from_millis(1_800_001)));
    // Shorter than the server's own timeout: the server's (30 s) stands.
    feed(&mut session, &declare(1), start);
    publish(&mut session, &decoder, &mut frames, start);
    assert!(!session.silent_too_long(start + Duration::from_secs(30)));
    assert!(session.silent_too_long(start + Duration::from_millis(30_001)));
    assert_eq!(frames.got.len(), 3, "the pings are published as ever");
}
