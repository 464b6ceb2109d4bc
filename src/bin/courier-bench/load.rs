//! One load connection, driven without blocking from a mio loop.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

use anyhow::{bail, Context};
use courier::client::Client;
use courier::codec::proto::MessageType;
use courier::codec::websocket::{self, Masks, Role};
use courier::codec::{FrameDecoder, FRAME_HEADER_BYTES, LENGTH_PREFIX_BYTES};
use mio::net::TcpStream;

/// A logged-in connection of the load.
pub struct Conn {
    pub stream: TcpStream,
    input: Vec<u8>,
    input_start: usize,
    input_end: usize,
    pub output: Vec<u8>,
    written: usize,
    /// For a sender: whom it sends to.
    pub recipient: Option<String>,
    /// For a sender: the due times of messages in flight, oldest first
    /// (acknowledgements come back in order on a connection).
    pub in_flight: VecDeque<u64>,
    /// Over a WebSocket: its framing state.
    websocket: Option<LoadWebSocket>,
}

/// A load connection's WebSocket: received bytes not yet decoded, the
/// masks for what it sends, and how much of `output` is framed already
/// (what scenarios append after that is framed at the next flush, all of it
/// in one binary message).
struct LoadWebSocket {
    raw: Vec<u8>,
    masks: Masks,
    framed_until: usize,
}

/// Bytes a WebSocket connection reads at a time.
const WEBSOCKET_READ_BYTES: usize = 64 * 1024;

impl Conn {
    /// Takes over a logged-in client's socket.
    pub fn from_client(client: Client, recipient: Option<String>) -> anyhow::Result<Self> {
        let websocket = client.is_websocket().then(|| LoadWebSocket {
            raw: Vec::new(),
            masks: Masks::new(Role::Client),
            framed_until: 0,
        });
        let mut conn = Self::from_stream(client.into_stream()?, recipient)?;
        conn.websocket = websocket;
        Ok(conn)
    }

    /// Takes over a plain TCP socket that has done its handshake.
    pub fn from_stream(
        stream: std::net::TcpStream,
        recipient: Option<String>,
    ) -> anyhow::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Self {
            stream: TcpStream::from_std(stream),
            input: vec![0; 64 * 1024],
            input_start: 0,
            input_end: 0,
            output: Vec::new(),
            written: 0,
            recipient,
            in_flight: VecDeque::new(),
            websocket: None,
        })
    }

    /// Writes what is queued, until done or the socket is full.
    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(ws) = &mut self.websocket {
            if self.output.len() > ws.framed_until {
                let unframed = self.output.split_off(ws.framed_until);
                let mask = ws.masks.next_mask().expect("a client's masks");
                websocket::client_binary(&unframed, mask, &mut self.output);
                ws.framed_until = self.output.len();
            }
        }
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.output.clear();
        self.written = 0;
        if let Some(ws) = &mut self.websocket {
            ws.framed_until = 0;
        }
        Ok(())
    }

    /// Reads what the socket has, handing each whole frame (type and
    /// payload) to `handle`. Fails if the server closed the connection.
    pub fn receive(
        &mut self,
        decoder: &FrameDecoder,
        mut handle: impl FnMut(&mut VecDeque<u64>, MessageType, &[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        self.receive_units(|in_flight, input| {
            let total = match decoder.frame_bytes(input)? {
                Some(total) if total <= input.len() => total,
                _ => return Ok(None),
            };
            let frame = &input[LENGTH_PREFIX_BYTES..total];
            let message_type =
                MessageType::try_from(i32::from(u16::from_be_bytes([frame[0], frame[1]])))
                    .unwrap_or(MessageType::Unspecified);
            handle(in_flight, message_type, &frame[FRAME_HEADER_BYTES..])?;
            Ok(Some(total))
        })
    }

    /// Reads what the socket has and hands the bytes not yet taken to
    /// `take`, again and again: it handles one whole unit of the protocol
    /// at their start and says how many bytes that was, or `None` if the
    /// unit is not all there yet. Fails if the server closed the connection.
    pub fn receive_units(
        &mut self,
        mut take: impl FnMut(&mut VecDeque<u64>, &[u8]) -> anyhow::Result<Option<usize>>,
    ) -> anyhow::Result<()> {
        loop {
            if self.input_start > 0 {
                self.input.copy_within(self.input_start..self.input_end, 0);
                self.input_end -= self.input_start;
                self.input_start = 0;
            }
            let Some((n, space)) = self.fill()? else {
                return Ok(());
            };
            while let Some(used) = take(
                &mut self.in_flight,
                &self.input[self.input_start..self.input_end],
            )? {
                self.input_start += used;
            }
            if n < space {
                return Ok(());
            }
        }
    }

    /// Reads once into the input (through the WebSocket's framing if there
    /// is one); returns the bytes read and how many could have been, or
    /// `None` if the socket had none.
    fn fill(&mut self) -> anyhow::Result<Option<(usize, usize)>> {
        let Some(ws) = &mut self.websocket else {
            if self.input_end == self.input.len() {
                let size = self.input.len() * 2;
                self.input.resize(size, 0);
            }
            let space = self.input.len() - self.input_end;
            let n = match read_some(&mut self.stream, &mut self.input[self.input_end..])? {
                Some(n) => n,
                None => return Ok(None),
            };
            self.input_end += n;
            return Ok(Some((n, space)));
        };
        let len = ws.raw.len();
        ws.raw.resize(len + WEBSOCKET_READ_BYTES, 0);
        let read = read_some(&mut self.stream, &mut ws.raw[len..]);
        let n = match read {
            Ok(Some(n)) => n,
            Ok(None) | Err(_) => {
                ws.raw.truncate(len);
                return read.map(|_| None);
            }
        };
        ws.raw.truncate(len + n);
        let (input, input_end) = (&mut self.input, &mut self.input_end);
        let (used, ending) = websocket::decode(
            &mut ws.raw,
            Role::Client,
            websocket::CLIENT_PAYLOAD_BYTES_MAX,
            |data| {
                let end = *input_end + data.len();
                if input.len() < end {
                    input.resize(end.next_power_of_two(), 0);
                }
                input[*input_end..end].copy_from_slice(data);
                *input_end = end;
            },
            &mut ws.masks,
            // The server never pings; a close ends the run below.
            &mut Vec::new(),
        );
        ws.raw.drain(..used);
        if let Some(ending) = ending {
            bail!("the server ended a WebSocket: {ending:?}");
        }
        Ok(Some((n, WEBSOCKET_READ_BYTES)))
    }
}

/// Registers each connection with `poll` for reading and writing, its
/// index in `conns` as its token.
pub fn register(poll: &mio::Poll, conns: &mut [Conn]) -> io::Result<()> {
    for (index, conn) in conns.iter_mut().enumerate() {
        poll.registry().register(
            &mut conn.stream,
            mio::Token(index),
            mio::Interest::READABLE | mio::Interest::WRITABLE,
        )?;
    }
    Ok(())
}

/// One read: `Some(bytes)`, `None` if the socket has nothing now; an error
/// if the server closed the connection.
fn read_some(stream: &mut TcpStream, buffer: &mut [u8]) -> anyhow::Result<Option<usize>> {
    match stream.read(buffer) {
        Ok(0) => bail!("the server closed a connection"),
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Wakes a mio loop at a due time with microsecond precision. A poll
/// timeout has millisecond granularity (epoll), and an open-loop generator
/// that woke up to a millisecond late would charge its own lateness to the
/// server; a timerfd in the same poll does not.
pub struct Pacer {
    timer: timerfd::TimerFd,
}

impl Pacer {
    /// A pacer whose expiry is reported as `token` by `poll`.
    pub fn new(poll: &mio::Poll, token: mio::Token) -> io::Result<Self> {
        let timer = timerfd::TimerFd::new_custom(timerfd::ClockId::Monotonic, true, true)?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&timer);
        poll.registry().register(
            &mut mio::unix::SourceFd(&fd),
            token,
            mio::Interest::READABLE,
        )?;
        Ok(Self { timer })
    }

    /// Fires once, `wait` from now (at least a microsecond: zero would disarm).
    pub fn arm(&mut self, wait: std::time::Duration) {
        let wait = wait.max(std::time::Duration::from_micros(1));
        self.timer.set_state(
            timerfd::TimerState::Oneshot(wait),
            timerfd::SetTimeFlags::Default,
        );
    }

    /// Takes the expiry, so the next one raises a new event.
    pub fn clear(&self) {
        self.timer.read();
    }
}

/// Settles the oldest message in flight on a sender's connection when a
/// reply of `message_type` arrives: a SendAck records the latency from the
/// message's due time; an Error (a refused send) frees its place too and is
/// counted. Other types are not replies to a send and change nothing.
pub fn settle(
    in_flight: &mut VecDeque<u64>,
    message_type: MessageType,
    arrived_ns: u64,
    acks: &mut courier::bench::Latencies,
    errors: &mut u64,
) -> anyhow::Result<()> {
    match message_type {
        MessageType::SendAck => {
            let due = in_flight.pop_front().context("an unexpected SendAck")?;
            acks.record(due, arrived_ns);
        }
        MessageType::Error => {
            in_flight.pop_front();
            *errors += 1;
        }
        _ => {}
    }
    Ok(())
}

/// The inbox sequence (field 3) and body (field 5) of a `Deliver` payload,
/// found without decoding the rest: the load generator must cost far less
/// than the server it measures.
pub fn deliver_fields(mut payload: &[u8]) -> anyhow::Result<(u64, &[u8])> {
    use prost::encoding::{decode_key, decode_varint, WireType};
    let (mut sequence, mut body) = (0, None);
    while !payload.is_empty() {
        let (field, wire_type) = decode_key(&mut payload)?;
        match wire_type {
            WireType::Varint => {
                let value = decode_varint(&mut payload)?;
                if field == 3 {
                    sequence = value;
                }
            }
            WireType::LengthDelimited => {
                let length = decode_varint(&mut payload)? as usize;
                let value = payload.get(..length).context("a truncated Deliver")?;
                if field == 5 {
                    body = Some(value);
                }
                payload = &payload[length..];
            }
            WireType::SixtyFourBit => payload = payload.get(8..).context("truncated")?,
            WireType::ThirtyTwoBit => payload = payload.get(4..).context("truncated")?,
            WireType::StartGroup | WireType::EndGroup => bail!("a group in a Deliver"),
        }
    }
    Ok((sequence, body.context("a Deliver without a body")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier::codec::proto;
    use prost::Message as _;

    #[test]
    fn replies_settle_the_oldest_message_in_flight() {
        let mut in_flight: VecDeque<u64> = [10, 20, 30].into();
        let mut acks = courier::bench::Latencies::default();
        let mut errors = 0;
        // Each case: a reply type, then what is left in flight, acks, errors.
        let cases = [
            (MessageType::Deliver, vec![10, 20, 30], 0, 0),
            (MessageType::SendAck, vec![20, 30], 1, 0),
            (MessageType::Error, vec![30], 1, 1),
            (MessageType::SendAck, vec![], 2, 1),
        ];
        for (message_type, left, ack_count, error_count) in cases {
            settle(&mut in_flight, message_type, 100, &mut acks, &mut errors).unwrap();
            assert_eq!(Vec::from(in_flight.clone()), left, "{message_type:?}");
            assert_eq!((acks.count(), errors), (ack_count, error_count));
        }
        // An ack with nothing in flight is the server's mistake, reported.
        assert!(settle(
            &mut in_flight,
            MessageType::SendAck,
            100,
            &mut acks,
            &mut errors
        )
        .is_err());
    }

    #[test]
    fn deliver_fields_reads_what_prost_wrote() {
        let deliver = proto::Deliver {
            sender: "ana".into(),
            server_message_id: 9,
            inbox_sequence: 42,
            timestamp_ms: 1,
            body: b"0123456789abcdef".to_vec(),
            recipient: String::new(),
            group_id: 7,
        };
        let payload = deliver.encode_to_vec();
        let (sequence, body) = deliver_fields(&payload).unwrap();
        assert_eq!((sequence, body), (42, &b"0123456789abcdef"[..]));
        assert!(deliver_fields(&payload[..payload.len() - 3]).is_err());
    }
}
