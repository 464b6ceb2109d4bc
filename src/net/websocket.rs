//! WebSocket on the client port, for browsers.
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
//! that is not masked, reserved bits, or a message over the limit close
//! the connection with the matching close code.
//!
//! The WebSocket framing itself comes from `tungstenite` (frame headers,
//! the accept key) and the HTTP request from `httparse`.

use std::io::Cursor;

use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// An upgrade request larger than this is refused.
pub(crate) const HANDSHAKE_BYTES_MAX: usize = 8 * 1024;

/// Whether the first bytes of a connection are an HTTP request.
pub(crate) fn is_http_request(first: &[u8]) -> bool {
    first.starts_with(b"GET ")
}

/// What an upgrade request came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Handshake {
    /// The request's headers have not all arrived.
    Incomplete,
    /// Send `response`; the request took the first `consumed` bytes.
    Accepted { response: Vec<u8>, consumed: usize },
    /// Send `response` and close.
    Refused { response: Vec<u8>, reason: String },
}

/// Reads an upgrade request from the bytes received so far.
pub(crate) fn handshake(bytes: &[u8]) -> Handshake {
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

/// Why the WebSocket ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The client sent a close (answered already).
    PeerClosed,
    /// The client broke the protocol (a close with this code and reason is
    /// queued already).
    Refused(String),
}

/// Decodes the whole WebSocket frames at the front of `raw`: the payloads
/// of binary messages go to `data`, unmasked; answers (pongs, a close) are
/// appended to `replies`. Returns the bytes used up, and why the WebSocket
/// ends if it does. A frame may carry at most `payload_max` bytes.
pub(crate) fn decode(
    raw: &mut [u8],
    payload_max: usize,
    mut data: impl FnMut(&[u8]),
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
                return (at, Some(refuse_frame(CloseCode::Protocol, reason, replies)));
            }
        };
        let header_len = cursor.position() as usize;
        if length > payload_max as u64 {
            let reason = format!("a WebSocket frame of {length} bytes is over {payload_max}");
            return (at, Some(refuse_frame(CloseCode::Size, reason, replies)));
        }
        let end = at + header_len + length as usize;
        if end > raw.len() {
            return (at, None);
        }
        let Some(mask) = header.mask else {
            let reason = "client frames must be masked".to_owned();
            return (at, Some(refuse_frame(CloseCode::Protocol, reason, replies)));
        };
        if header.rsv1 || header.rsv2 || header.rsv3 {
            let reason = "no extension was agreed: reserved bits must be zero".to_owned();
            return (at, Some(refuse_frame(CloseCode::Protocol, reason, replies)));
        }
        let payload = &mut raw[at + header_len..end];
        for (index, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[index % 4];
        }
        at = end;
        match header.opcode {
            OpCode::Data(Data::Binary) | OpCode::Data(Data::Continue) => data(payload),
            OpCode::Data(Data::Text) => {
                let reason = "send frames in binary messages, not text".to_owned();
                return (
                    at,
                    Some(refuse_frame(CloseCode::Unsupported, reason, replies)),
                );
            }
            OpCode::Control(Control::Ping) => {
                if !header.is_final || payload.len() > 125 {
                    let reason = "a ping must be one frame of at most 125 bytes".to_owned();
                    return (at, Some(refuse_frame(CloseCode::Protocol, reason, replies)));
                }
                control_frame(Control::Pong, payload, replies);
            }
            OpCode::Control(Control::Pong) => {}
            OpCode::Control(Control::Close) => {
                // Echo the status code, as the protocol asks.
                let code = payload.get(..2).unwrap_or(&[]);
                control_frame(Control::Close, code, replies);
                return (at, Some(Ending::PeerClosed));
            }
            OpCode::Data(Data::Reserved(_)) | OpCode::Control(Control::Reserved(_)) => {
                let reason = format!("unknown WebSocket opcode {:?}", header.opcode);
                return (at, Some(refuse_frame(CloseCode::Protocol, reason, replies)));
            }
        }
    }
}

/// Queues a close with `code` and `reason`, and says so.
fn refuse_frame(code: CloseCode, reason: String, replies: &mut Vec<u8>) -> Ending {
    close_frame(code, &reason, replies);
    Ending::Refused(reason)
}

/// Appends a close frame with `code` and `reason` (cut to fit a control
/// frame's 125 bytes).
pub(crate) fn close_frame(code: CloseCode, reason: &str, out: &mut Vec<u8>) {
    let mut payload = u16::from(code).to_be_bytes().to_vec();
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    control_frame(Control::Close, &payload, out);
}

fn control_frame(control: Control, payload: &[u8], out: &mut Vec<u8>) {
    frame_header(OpCode::Control(control), payload.len(), out);
    out.extend_from_slice(payload);
}

/// Appends the header of a server binary message of `len` bytes.
pub(crate) fn binary_header(len: usize, out: &mut Vec<u8>) {
    frame_header(OpCode::Data(Data::Binary), len, out);
}

fn frame_header(opcode: OpCode, len: usize, out: &mut Vec<u8>) {
    let header = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    // Writing to a Vec cannot fail.
    let _ = header.format(len as u64, out);
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
        let mut data = Vec::new();
        let mut replies = Vec::new();
        let (used, ending) = decode(&mut raw, 1024, |p| data.extend_from_slice(p), &mut replies);
        assert_eq!((used, ending), (whole, None));
        assert_eq!(data, b"hello world");
        let mut pong = Vec::new();
        control_frame(Control::Pong, b"p", &mut pong);
        assert_eq!(replies, pong);
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
                    control_frame(Control::Pong, b"hi", &mut expected_pongs);
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
                let (used, ending) =
                    decode(&mut raw, 4096, |p| data.extend_from_slice(p), &mut replies);
                proptest::prop_assert_eq!(ending, None);
                raw.drain(..used);
            }
            proptest::prop_assert!(raw.is_empty());
            proptest::prop_assert_eq!(data, stream);
            proptest::prop_assert_eq!(replies, expected_pongs);
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
            let mut replies = Vec::new();
            let (_, ending) = decode(&mut raw, 100, |_| {}, &mut replies);
            assert!(matches!(ending, Some(Ending::Refused(_))), "{ending:?}");
            // The close frame's payload starts with the code.
            let expected = u16::from(code).to_be_bytes();
            assert_eq!(&replies[2..4], &expected, "{code:?}");
        }
        let mut raw = client_frame(OpCode::Control(Control::Close), &1000u16.to_be_bytes());
        let mut replies = Vec::new();
        let (_, ending) = decode(&mut raw, 100, |_| {}, &mut replies);
        assert_eq!(ending, Some(Ending::PeerClosed));
        assert_eq!(&replies[2..4], &1000u16.to_be_bytes());
    }
}
