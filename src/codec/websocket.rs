//! WebSocket framing for the client port, without sockets: the server's
//! side of the upgrade and the client's, and frames in both directions.
//!
//! A connection whose first bytes are `GET ` is an HTTP request (read as a
//! frame length those bytes would be over a gigabyte, above any frame limit,
//! so nothing a TCP client sends is taken for one). If it asks for a
//! WebSocket upgrade, the server switches protocols; anything else gets
//! `400 Bad Request` and is closed.
//!
//! After the upgrade the client's binary messages carry the same byte
//! stream a TCP client sends: frames with their length prefixes, in any
//! split (a message may hold several frames, or part of one). Each frame
//! the server sends travels in a binary message of its own. Pings are
//! answered with pongs and a close with a close; a text message, a frame
//! masked the wrong way, reserved bits, or a message over the limit close
//! the connection with the matching close code.
//!
//! The WebSocket framing itself comes from `tungstenite` (frame headers,
//! the accept key) and the HTTP parsing from `httparse`.

use std::io::Cursor;

pub use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// An upgrade request or answer larger than this is refused.
pub const HANDSHAKE_BYTES_MAX: usize = 8 * 1024;

/// The largest frame a client accepts from a server: room for the largest
/// courier frame a server may be configured to send (16 MiB).
pub const CLIENT_PAYLOAD_BYTES_MAX: usize = 32 << 20;

/// Which end of the WebSocket this side is: a client masks what it sends,
/// a server does not, and each side refuses frames the other end should
/// not send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The server: client frames must be masked.
    Server,
    /// The client: server frames must not be, and its own are.
    Client,
}

/// Whether the first bytes of a connection are an HTTP request.
pub fn is_http_request(first: &[u8]) -> bool {
    first.starts_with(b"GET ")
}

/// What an upgrade request came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Handshake {
    /// The request's headers have not all arrived.
    Incomplete,
    /// Send `response`; the request took the first `consumed` bytes.
    Accepted {
        /// The `101 Switching Protocols` answer.
        response: Vec<u8>,
        /// The bytes of the request.
        consumed: usize,
    },
    /// Send `response` and close.
    Refused {
        /// The `400 Bad Request` answer.
        response: Vec<u8>,
        /// Why, for the log.
        reason: String,
    },
}

/// The server's side: reads an upgrade request from the bytes received so
/// far.
pub fn handshake(bytes: &[u8]) -> Handshake {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let consumed = match request.parse(bytes) {
        Ok(httparse::Status::Complete(consumed)) => consumed,
        Ok(httparse::Status::Partial) if bytes.len() <= HANDSHAKE_BYTES_MAX => {
            return Handshake::Incomplete
        }
        Ok(httparse::Status::Partial) => {
            return refuse("the request headers are over 8 KiB");
        }
        Err(error) => return refuse(&format!("not an HTTP request: {error}")),
    };
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|value| {
            value
                .split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return refuse("this port speaks courier frames over TCP or over a WebSocket upgrade");
    }
    if header("sec-websocket-version") != Some("13") {
        return refuse("only WebSocket version 13 is supported");
    }
    let Some(key) = header("sec-websocket-key") else {
        return refuse("the upgrade has no Sec-WebSocket-Key");
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    Handshake::Accepted {
        response: response.into_bytes(),
        consumed,
    }
}

fn refuse(reason: &str) -> Handshake {
    let body = format!("{reason}\n");
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    Handshake::Refused {
        response: response.into_bytes(),
        reason: reason.to_owned(),
    }
}

/// The client's side: a fresh `Sec-WebSocket-Key`.
pub fn client_key() -> String {
    tungstenite::handshake::client::generate_key()
}

/// The client's side: the upgrade request for `host` (as in the `Host`
/// header) with `key`.
pub fn client_request(host: &str, key: &str) -> Vec<u8> {
    format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// The client's side: checks the server's answer to the upgrade sent with
/// `key`. `Ok(None)` until its headers have all arrived; then the bytes it
/// took (what follows is WebSocket frames).
pub fn client_response(bytes: &[u8], key: &str) -> Result<Option<usize>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let consumed = match response.parse(bytes) {
        Ok(httparse::Status::Complete(consumed)) => consumed,
        Ok(httparse::Status::Partial) if bytes.len() <= HANDSHAKE_BYTES_MAX => return Ok(None),
        Ok(httparse::Status::Partial) => return Err("the answer's headers are over 8 KiB".into()),
        Err(error) => return Err(format!("not an HTTP answer: {error}")),
    };
    if response.code != Some(101) {
        return Err(format!(
            "the server answered {} {}",
            response.code.unwrap_or(0),
            response.reason.unwrap_or("")
        ));
    }
    let accept = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|h| h.value);
    let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
    if accept != Some(expected.as_bytes()) {
        return Err("the server's Sec-WebSocket-Accept does not match the key".into());
    }
    Ok(Some(consumed))
}

/// Why the WebSocket ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The other end sent a close (answered already).
    PeerClosed,
    /// The other end broke the protocol (a close with the matching code and
    /// this reason is queued already).
    Refused(String),
}

/// Decodes the whole WebSocket frames at the front of `raw` as `role`
/// receives them: the payloads of binary messages go to `data` (unmasked);
/// answers (pongs, a close) are appended to `replies`, ready to send, masked
/// with `masks`. Returns the bytes used up, and why the WebSocket ends if
/// it does. A frame may carry at most `payload_max` bytes.
pub fn decode(
    raw: &mut [u8],
    role: Role,
    payload_max: usize,
    mut data: impl FnMut(&[u8]),
    masks: &mut Masks,
    replies: &mut Vec<u8>,
) -> (usize, Option<Ending>) {
    let mut at = 0;
    loop {
        let mut cursor = Cursor::new(&raw[at..]);
        let (header, length) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return (at, None),
            Err(error) => {
                let reason = format!("bad WebSocket frame: {error}");
                return (at, Some(end(CloseCode::Protocol, reason, masks, replies)));
            }
        };
        let header_len = cursor.position() as usize;
        if length > payload_max as u64 {
            let reason = format!("a WebSocket frame of {length} bytes is over {payload_max}");
            return (at, Some(end(CloseCode::Size, reason, masks, replies)));
        }
        // Within `raw` or not there yet; a length near 2^64 cannot wrap.
        let frame_end = match usize::try_from(length)
            .ok()
            .and_then(|length| (at + header_len).checked_add(length))
        {
            Some(frame_end) if frame_end <= raw.len() => frame_end,
            _ => return (at, None),
        };
        if let Some(reason) = breach(role, &header) {
            return (
                at,
                Some(end(CloseCode::Protocol, reason.into(), masks, replies)),
            );
        }
        let payload = &mut raw[at + header_len..frame_end];
        if let Some(mask) = header.mask {
            apply_mask(payload, mask);
        }
        at = frame_end;
        let (code, reason) = match header.opcode {
            OpCode::Data(Data::Binary) | OpCode::Data(Data::Continue) => {
                data(payload);
                continue;
            }
            OpCode::Control(Control::Pong) => continue,
            OpCode::Control(Control::Ping) if header.is_final && payload.len() <= 125 => {
                frame(
                    OpCode::Control(Control::Pong),
                    payload,
                    masks.next_mask(),
                    replies,
                );
                continue;
            }
            OpCode::Control(Control::Close) => {
                // Echo the status code, as the protocol asks.
                let code = payload.get(..2).unwrap_or(&[]);
                frame(
                    OpCode::Control(Control::Close),
                    code,
                    masks.next_mask(),
                    replies,
                );
                return (at, Some(Ending::PeerClosed));
            }
            refused => refusal(refused),
        };
        return (at, Some(end(code, reason, masks, replies)));
    }
}

/// What breaks the rules in a frame's header, if anything: masking the
/// wrong way for `role`, or reserved bits with no extension agreed.
fn breach(role: Role, header: &FrameHeader) -> Option<&'static str> {
    match (role, header.mask) {
        (Role::Server, None) => Some("client frames must be masked"),
        (Role::Client, Some(_)) => Some("server frames must not be masked"),
        _ if header.rsv1 || header.rsv2 || header.rsv3 => {
            Some("no extension was agreed: reserved bits must be zero")
        }
        _ => None,
    }
}

/// The close code and reason for a frame of `opcode` this side refuses:
/// text, a fragmented or long ping, an unknown opcode.
fn refusal(opcode: OpCode) -> (CloseCode, String) {
    match opcode {
        OpCode::Data(Data::Text) => (
            CloseCode::Unsupported,
            "send frames in binary messages, not text".to_owned(),
        ),
        OpCode::Control(Control::Ping) => (
            CloseCode::Protocol,
            "a ping must be one frame of at most 125 bytes".to_owned(),
        ),
        other => (
            CloseCode::Protocol,
            format!("unknown WebSocket opcode {other:?}"),
        ),
    }
}

/// Queues a close with `code` and `reason`, and says so.
fn end(code: CloseCode, reason: String, masks: &mut Masks, replies: &mut Vec<u8>) -> Ending {
    close_frame(code, &reason, masks.next_mask(), replies);
    Ending::Refused(reason)
}

/// Appends a close frame with `code` and `reason` (cut to fit a control
/// frame's 125 bytes), masked with `mask` if given (a client's).
pub fn close_frame(code: CloseCode, reason: &str, mask: Option<[u8; 4]>, out: &mut Vec<u8>) {
    let mut payload = u16::from(code).to_be_bytes().to_vec();
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    frame(OpCode::Control(Control::Close), &payload, mask, out);
}

/// Appends the header of a server's binary message of `len` bytes (the
/// payload follows as it is).
pub fn binary_header(len: usize, out: &mut Vec<u8>) {
    let header = FrameHeader {
        opcode: OpCode::Data(Data::Binary),
        ..FrameHeader::default()
    };
    // Writing to a Vec cannot fail.
    let _ = header.format(len as u64, out);
}

/// Appends a client's binary message carrying `payload`, masked with
/// `mask` (which a client draws afresh for every frame: [`Masks`]).
pub fn client_binary(payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    frame(OpCode::Data(Data::Binary), payload, Some(mask), out);
}

fn frame(opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>, out: &mut Vec<u8>) {
    let header = FrameHeader {
        opcode,
        mask,
        ..FrameHeader::default()
    };
    // Writing to a Vec cannot fail.
    let _ = header.format(payload.len() as u64, out);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(mask) = mask {
        apply_mask(&mut out[start..], mask);
    }
}

/// XORs `bytes` with the repeating `mask`, eight bytes at a time.
fn apply_mask(bytes: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = bytes.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes(chunk.try_into().expect("8 bytes")) ^ wide;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    // The tail starts at a multiple of 8, so the mask lines up from byte 0.
    for (index, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[index % 4];
    }
}

/// The masks for the frames one side sends: a client's are fresh for every
/// frame, a server's are none.
#[derive(Debug, Clone)]
pub struct Masks {
    state: Option<u64>,
}

impl Masks {
    /// Masks for `role` (seeded from the system's randomness for a client).
    pub fn new(role: Role) -> Self {
        let state = match role {
            Role::Server => None,
            Role::Client => {
                let mut seed = [0u8; 8];
                // Without randomness the masks are still masks; they only
                // guard against proxies that misread the stream.
                let _ = getrandom::fill(&mut seed);
                Some(u64::from_le_bytes(seed) | 1)
            }
        };
        Self { state }
    }

    /// The next frame's mask: `None` for a server.
    pub fn next_mask(&mut self) -> Option<[u8; 4]> {
        let state = self.state.as_mut()?;
        // xorshift64: cheap, and fresh for every frame.
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        Some((*state as u32).to_le_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &str = "GET /chat HTTP/1.1\r\nHost: example\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    /// A client frame: masked, as browsers send them.
    fn client_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let header = FrameHeader {
            opcode,
            mask: Some(mask),
            ..FrameHeader::default()
        };
        let mut out = Vec::new();
        header.format(payload.len() as u64, &mut out).unwrap();
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    /// What one decoding pass makes of `raw`.
    #[derive(Debug)]
    struct Pass {
        used: usize,
        ending: Option<Ending>,
        data: Vec<u8>,
        replies: Vec<u8>,
    }

    fn pass(raw: &mut [u8], role: Role, payload_max: usize, masks: &mut Masks) -> Pass {
        let mut data = Vec::new();
        let mut replies = Vec::new();
        let (used, ending) = decode(
            raw,
            role,
            payload_max,
            |p| data.extend_from_slice(p),
            masks,
            &mut replies,
        );
        Pass {
            used,
            ending,
            data,
            replies,
        }
    }

    /// A pass of the server's decoder.
    fn serve(raw: &mut [u8], payload_max: usize) -> Pass {
        pass(
            raw,
            Role::Server,
            payload_max,
            &mut Masks::new(Role::Server),
        )
    }

    #[test]
    fn masking_eight_bytes_at_a_time_matches_the_byte_by_byte_rule() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in 0..40 {
            let original: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(37)).collect();
            let mut masked = original.clone();
            apply_mask(&mut masked, mask);
            let expected: Vec<u8> = original
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(masked, expected, "{len} bytes");
        }
    }

    #[test]
    fn an_upgrade_is_accepted_with_the_key_the_protocol_derives() {
        let mut bytes = UPGRADE.as_bytes().to_vec();
        bytes.extend_from_slice(b"\x82"); // the start of a first frame
        let Handshake::Accepted { response, consumed } = handshake(&bytes) else {
            panic!("refused")
        };
        assert_eq!(consumed, UPGRADE.len());
        let response = String::from_utf8(response).unwrap();
        assert!(response.starts_with("HTTP/1.1 101 "));
        // RFC 6455's own example key and answer.
        assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert_eq!(handshake(&UPGRADE.as_bytes()[..40]), Handshake::Incomplete);
    }

    #[test]
    fn requests_that_are_not_upgrades_are_refused_with_a_reason() {
        let plain = "GET / HTTP/1.1\r\nHost: example\r\n\r\n";
        let old = UPGRADE.replace("Version: 13", "Version: 8");
        let keyless = UPGRADE.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
        for (request, expected) in [
            (plain, "this port speaks"),
            (old.as_str(), "version 13"),
            (keyless.as_str(), "Sec-WebSocket-Key"),
            ("GET \x01\x02 nonsense\r\n\r\n", "not an HTTP request"),
        ] {
            let Handshake::Refused { response, reason } = handshake(request.as_bytes()) else {
                panic!("accepted {request:?}")
            };
            assert!(reason.contains(expected), "{reason}");
            assert!(String::from_utf8(response)
                .unwrap()
                .starts_with("HTTP/1.1 400 "));
        }
        let endless = format!("GET / HTTP/1.1\r\nX: {}", "y".repeat(HANDSHAKE_BYTES_MAX));
        assert!(matches!(
            handshake(endless.as_bytes()),
            Handshake::Refused { .. }
        ));
    }

    #[test]
    fn binary_payloads_are_unmasked_in_order_and_pings_answered() {
        let mut raw = client_frame(OpCode::Data(Data::Binary), b"hello ");
        raw.extend(client_frame(OpCode::Control(Control::Ping), b"p"));
        raw.extend(client_frame(OpCode::Data(Data::Continue), b"world"));
        let whole = raw.len();
        // Half a frame more: left for the next read.
        raw.extend(&client_frame(OpCode::Data(Data::Binary), b"later")[..4]);
        let got = serve(&mut raw, 1024);
        assert_eq!((got.used, got.ending), (whole, None));
        assert_eq!(got.data, b"hello world");
        let mut pong = Vec::new();
        frame(OpCode::Control(Control::Pong), b"p", None, &mut pong);
        assert_eq!(got.replies, pong);
    }

    proptest::proptest! {
        /// However a client cuts its byte stream into messages and frames,
        /// with pings between them, and however the socket delivers the
        /// bytes, the decoded stream is the stream sent and every ping is
        /// answered once.
        #[test]
        fn any_split_of_the_stream_decodes_to_the_stream(
            stream in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000),
            cuts in proptest::collection::vec(0usize..2000, 0..12),
            pings in proptest::collection::vec(proptest::prelude::any::<bool>(), 12),
            reads in proptest::collection::vec(1usize..300, 1..40),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(stream.len())).collect();
            cuts.push(0);
            cuts.push(stream.len());
            cuts.sort_unstable();
            let mut wire = Vec::new();
            let mut expected_pongs = Vec::new();
            for (index, piece) in cuts.windows(2).enumerate() {
                let opcode = if index % 2 == 0 { Data::Binary } else { Data::Continue };
                wire.extend(client_frame(OpCode::Data(opcode), &stream[piece[0]..piece[1]]));
                if pings.get(index).copied().unwrap_or(false) {
                    wire.extend(client_frame(OpCode::Control(Control::Ping), b"hi"));
                    frame(OpCode::Control(Control::Pong), b"hi", None, &mut expected_pongs);
                }
            }
            // Deliver the wire in reads of the given sizes (cycled).
            let mut raw = Vec::new();
            let mut data = Vec::new();
            let mut replies = Vec::new();
            let mut at = 0;
            for size in reads.iter().cycle() {
                if at == wire.len() {
                    break;
                }
                let end = (at + size).min(wire.len());
                raw.extend_from_slice(&wire[at..end]);
                at = end;
                let got = serve(&mut raw, 4096);
                proptest::prop_assert_eq!(got.ending, None);
                data.extend(got.data);
                replies.extend(got.replies);
                raw.drain(..got.used);
            }
            proptest::prop_assert!(raw.is_empty());
            proptest::prop_assert_eq!(data, stream);
            proptest::prop_assert_eq!(replies, expected_pongs);
        }
    }

    #[test]
    fn a_client_upgrades_reads_server_frames_and_masks_its_answers() {
        let key = client_key();
        let request = client_request("example:7420", &key);
        let Handshake::Accepted { response, consumed } = handshake(&request) else {
            panic!("the server refused the client's own request")
        };
        assert_eq!(consumed, request.len());
        assert_eq!(client_response(&response[..10], &key), Ok(None));
        assert_eq!(client_response(&response, &key), Ok(Some(response.len())));
        assert!(
            client_response(&response, &client_key()).is_err(),
            "another key"
        );

        // What the server sends: a binary message and a ping.
        let mut raw = Vec::new();
        binary_header(5, &mut raw);
        raw.extend_from_slice(b"hello");
        frame(OpCode::Control(Control::Ping), b"p", None, &mut raw);
        let mut masks = Masks::new(Role::Client);
        let mut got = pass(&mut raw, Role::Client, 100, &mut masks);
        assert_eq!(
            (got.used, got.ending, got.data.as_slice()),
            (raw.len(), None, &b"hello"[..])
        );
        // The pong is masked, and the server takes it as a pong.
        assert_ne!(got.replies[1] & 0x80, 0, "a client's pong is masked");
        assert_eq!(serve(&mut got.replies, 100).ending, None);

        // The client's own messages reach the server's decoder intact, and a
        // client refuses a masked frame from the server.
        let mut sent = Vec::new();
        client_binary(b"frames", masks.next_mask().unwrap(), &mut sent);
        assert_eq!(serve(&mut sent.clone(), 100).data, b"frames");
        let ending = pass(&mut sent, Role::Client, 100, &mut masks).ending;
        assert!(matches!(ending, Some(Ending::Refused(_))), "{ending:?}");
    }

    #[test]
    fn a_huge_length_is_refused_by_the_limit_and_never_wraps() {
        let mut raw = vec![0x82, 127];
        raw.extend_from_slice(&u64::MAX.to_be_bytes()[..]);
        raw[2] = 0x7f; // the protocol keeps the top bit clear
        for (role, payload_max) in [
            (Role::Client, usize::MAX),
            (Role::Client, CLIENT_PAYLOAD_BYTES_MAX),
        ] {
            let Pass {
                used, ending, data, ..
            } = pass(&mut raw.clone(), role, payload_max, &mut Masks::new(role));
            assert_eq!((used, data.len()), (0, 0));
            if payload_max == usize::MAX {
                assert_eq!(ending, None, "waits for bytes that never fit");
            } else {
                assert!(matches!(ending, Some(Ending::Refused(_))), "{ending:?}");
            }
        }
    }

    #[test]
    fn protocol_breaches_close_with_their_codes() {
        let unmasked = {
            let mut out = Vec::new();
            binary_header(3, &mut out);
            out.extend_from_slice(b"abc");
            out
        };
        let cases = [
            (
                client_frame(OpCode::Data(Data::Text), b"hi"),
                CloseCode::Unsupported,
            ),
            (unmasked, CloseCode::Protocol),
            (
                client_frame(OpCode::Data(Data::Binary), &[0; 200]),
                CloseCode::Size,
            ),
        ];
        for (mut raw, code) in cases {
            let got = serve(&mut raw, 100);
            assert!(matches!(got.ending, Some(Ending::Refused(_))), "{got:?}");
            // The close frame's payload starts with the code.
            let expected = u16::from(code).to_be_bytes();
            assert_eq!(&got.replies[2..4], &expected, "{code:?}");
        }
        let mut raw = client_frame(OpCode::Control(Control::Close), &1000u16.to_be_bytes());
        let got = serve(&mut raw, 100);
        assert_eq!(got.ending, Some(Ending::PeerClosed));
        assert_eq!(&got.replies[2..4], &1000u16.to_be_bytes());
    }
}
