//! One client connection's buffers: input cut into frames, output batched.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use super::per_ip::IpSlot;
use crate::broker::ConnId;
use crate::codec::websocket::{self, CloseCode, Ending, Handshake, Masks, Role};
use crate::codec::AnswerGate;

/// Free input space below which the buffer grows before a read.
const READ_SPACE_MIN_BYTES: usize = 1024;
/// The input buffer's first size: small, because most connections are idle
/// phones and a chat frame is a few hundred bytes; it doubles as needed.
const INPUT_INITIAL_BYTES: usize = 4 * 1024;
/// An input buffer that grew past this (a burst, a large frame) is given
/// back once it empties.
const INPUT_KEEP_BYTES: usize = 64 * 1024;
/// An output buffer that grew past this is given back once it empties, so a
/// burst does not pin memory for the connection's life.
const OUTPUT_KEEP_BYTES: usize = 64 * 1024;

/// A connection's allowance of frames under `frames_per_second_max`: a
/// token bucket that refills at `rate` frames a second and holds at most
/// one second's worth.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Allowance {
    frames: f64,
    refilled_at: Instant,
}

impl Allowance {
    /// A full allowance of `rate` frames.
    pub(crate) fn new(rate: u32, now: Instant) -> Self {
        Self {
            frames: f64::from(rate),
            refilled_at: now,
        }
    }

    /// Refills for the time since the last call; returns the whole frames
    /// the connection may publish now.
    pub(crate) fn available(&mut self, rate: u32, now: Instant) -> u64 {
        let rate = f64::from(rate);
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.frames = (self.frames + elapsed * rate).min(rate);
        self.refilled_at = now;
        self.frames as u64
    }

    /// Takes `frames` off (no more than [`available`](Self::available) said).
    pub(crate) fn spend(&mut self, frames: u64) {
        self.frames = (self.frames - frames as f64).max(0.0);
    }

    /// When reading should resume: once the allowance holds a hundredth of
    /// a second's frames (between 1 and 64), so a client held at its limit
    /// costs the I/O thread about a hundred wake-ups a second at most.
    pub(crate) fn resume_at(&self, rate: u32) -> Instant {
        let wanted = f64::from((rate / 100).clamp(1, 64));
        let missing = (wanted - self.frames).max(0.0);
        self.refilled_at + Duration::from_secs_f64(missing / f64::from(rate))
    }
}

/// Why a connection is being closed (logged, and told to the client where
/// it still can be).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The client closed its end.
    PeerClosed,
    /// Reading or writing failed.
    Io(String),
    /// The client's bytes are not valid framing.
    BadFraming(String),
    /// The client did not read its output and fell behind by more than the cap.
    SlowReader { pending_bytes: usize },
    /// Nothing arrived within the heartbeat timeout.
    HeartbeatTimeout,
    /// The broker asked for it (after a fatal protocol error).
    Broker,
    /// The server is stopping.
    Shutdown,
}

/// What a connection speaks.
#[derive(Debug)]
pub(crate) enum Transport {
    /// Nothing read yet (WebSocket is on): courier frames or an HTTP
    /// upgrade, as the first bytes will tell.
    Undecided,
    /// Courier frames straight over TCP.
    Tcp,
    /// An HTTP upgrade request is arriving; `raw` holds what came of it.
    Upgrading { raw: Vec<u8> },
    /// WebSocket frames carry the courier byte stream; `raw` holds bytes
    /// received and not yet decoded.
    WebSocket { raw: Vec<u8> },
}

/// A connection and its buffers.
///
/// # Invariants
/// - `input[input_start..input_end]` holds bytes read and not yet published;
///   `input[input_end..]` is free space (the buffer is never shrunk by
///   `truncate`, so reads do not re-zero it).
/// - `output[written..]` holds bytes queued and not yet written.
pub(crate) struct Connection {
    pub(crate) id: ConnId,
    pub(crate) stream: TcpStream,
    input: Vec<u8>,
    input_start: usize,
    input_end: usize,
    pub(crate) output: Vec<u8>,
    pub(crate) written: usize,
    pub(crate) last_input: Instant,
    /// Close once the output is written (the broker asked, or framing failed).
    pub(crate) closing: Option<CloseReason>,
    /// Whether the connection is on the dirty list already.
    pub(crate) dirty: bool,
    /// Whether the connection is on the list to read next pass already.
    pub(crate) unread: bool,
    /// The client sent EOF; no more reads.
    pub(crate) read_closed: bool,
    /// The poller reported the peer's half-close: read until end of stream
    /// rather than stopping at a short read.
    pub(crate) peer_closing: bool,
    /// Frames it may still send now, under `frames_per_second_max`.
    pub(crate) allowance: Allowance,
    /// It sent faster than its allowance: its socket is not read until then.
    pub(crate) paused_until: Option<Instant>,
    pub(crate) transport: Transport,
    /// Its place under `connections_per_ip_max`, given back when the
    /// connection is dropped.
    pub(crate) ip_slot: Option<IpSlot>,
    /// Closed while a Register or Login it sent awaits its answer: nothing
    /// after it is published (or read) until then, so replies keep request
    /// order.
    pub(crate) gate: AnswerGate,
}

/// How the server numbers its connections: the I/O thread's index in the
/// top 16 bits of a [`ConnId`], so the egress knows which thread's
/// outbound ring a frame goes to, and that thread's counter below them.
pub(crate) mod numbering {
    use crate::broker::ConnId;

    const THREAD_SHIFT: u32 = 48;
    const COUNTER_MASK: u64 = (1 << THREAD_SHIFT) - 1;

    /// The id of the `counter`-th connection of I/O thread `thread_index`.
    ///
    /// # Panics
    /// If `counter` does not fit 48 bits.
    pub(crate) fn conn_id(thread_index: u16, counter: u64) -> ConnId {
        assert!(counter <= COUNTER_MASK, "connection counter overflow");
        ConnId((u64::from(thread_index) << THREAD_SHIFT) | counter)
    }

    /// The I/O thread of an id made by [`conn_id`].
    pub(crate) fn thread_of(conn: ConnId) -> u16 {
        (conn.0 >> THREAD_SHIFT) as u16
    }

    /// The thread's own counter in an id made by [`conn_id`].
    pub(crate) fn counter_of(conn: ConnId) -> u64 {
        conn.0 & COUNTER_MASK
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn an_id_carries_its_thread_and_counter() {
            // Each case: a thread index and a counter.
            for (thread, counter) in [(0, 0), (1, 7), (u16::MAX, COUNTER_MASK)] {
                let id = conn_id(thread, counter);
                assert_eq!((thread_of(id), counter_of(id)), (thread, counter));
            }
        }

        #[test]
        #[should_panic(expected = "overflow")]
        fn a_counter_over_48_bits_is_refused() {
            conn_id(0, 1 << 48);
        }
    }
}

/// What a read pass found.
pub(crate) enum ReadOutcome {
    /// The socket has no more bytes now.
    Drained,
    /// The socket may have more; the pass stopped to be fair to others.
    More,
    /// The peer closed its end (or reading failed).
    Closed(CloseReason),
}

impl Connection {
    pub(crate) fn new(
        id: ConnId,
        stream: TcpStream,
        frames_per_second: u32,
        websocket: bool,
        now: Instant,
    ) -> Self {
        Self {
            id,
            stream,
            input: Vec::new(),
            input_start: 0,
            input_end: 0,
            output: Vec::new(),
            written: 0,
            last_input: now,
            closing: None,
            dirty: false,
            unread: false,
            read_closed: false,
            peer_closing: false,
            allowance: Allowance::new(frames_per_second, now),
            paused_until: None,
            transport: if websocket {
                Transport::Undecided
            } else {
                Transport::Tcp
            },
            ip_slot: None,
            gate: AnswerGate::default(),
        }
    }

    /// Unread input.
    pub(crate) fn pending_input(&self) -> &[u8] {
        &self.input[self.input_start..self.input_end]
    }

    /// Marks `bytes` of input as taken.
    pub(crate) fn consume_input(&mut self, bytes: usize) {
        self.input_start += bytes;
        debug_assert!(self.input_start <= self.input_end);
        if self.input_start == self.input_end {
            self.input_start = 0;
            self.input_end = 0;
            if self.input.len() > INPUT_KEEP_BYTES {
                self.input = Vec::new();
            }
        }
    }

    /// Makes room to read into: moves a partial frame to the front, and
    /// grows the buffer if little space is left (a large frame arriving).
    fn make_room(&mut self) {
        if self.input_start > 0 {
            self.input.copy_within(self.input_start..self.input_end, 0);
            self.input_end -= self.input_start;
            self.input_start = 0;
        }
        if self.input.len() - self.input_end < READ_SPACE_MIN_BYTES {
            let size = (self.input.len() * 2).max(INPUT_INITIAL_BYTES);
            self.input.resize(size, 0);
        }
    }

    /// Reads at most `reads_max` chunks, stopping early at would-block.
    /// Returns what it found and the bytes it read.
    pub(crate) fn read(&mut self, reads_max: usize, now: Instant) -> (ReadOutcome, usize) {
        if let Transport::Upgrading { raw } | Transport::WebSocket { raw } = &mut self.transport {
            let (outcome, bytes) = read_into(&mut self.stream, raw, reads_max, self.peer_closing);
            if bytes > 0 {
                self.last_input = now;
            }
            if matches!(outcome, ReadOutcome::Closed(_)) {
                self.read_closed = true;
            }
            return (outcome, bytes);
        }
        // Counted in pending bytes: reading may move them to the front.
        let before = self.pending_input().len();
        let outcome = self.read_input(reads_max, now);
        (outcome, self.pending_input().len() - before)
    }

    fn read_input(&mut self, reads_max: usize, now: Instant) -> ReadOutcome {
        for _ in 0..reads_max {
            self.make_room();
            let space = self.input.len() - self.input_end;
            let result = self.stream.read(&mut self.input[self.input_end..]);
            match result {
                Ok(0) => {
                    self.read_closed = true;
                    return ReadOutcome::Closed(CloseReason::PeerClosed);
                }
                Ok(n) => {
                    self.input_end += n;
                    self.last_input = now;
                    if n < space && !self.peer_closing {
                        // The socket had less than we asked for: it is
                        // drained, and new bytes will raise a new edge. This
                        // saves the read that would only say would-block.
                        return ReadOutcome::Drained;
                    }
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return ReadOutcome::Drained,
                    io::ErrorKind::Interrupted => continue,
                    _ => {
                        self.read_closed = true;
                        return ReadOutcome::Closed(CloseReason::Io(e.to_string()));
                    }
                },
            }
        }
        ReadOutcome::More
    }

    /// Settles what the connection speaks from what it sent so far: tells
    /// TCP from an upgrade, answers the upgrade, and decodes WebSocket
    /// frames into the input. Returns whether it queued output (the
    /// upgrade's answer, pongs, a close), which the caller must write.
    /// Protocol breaches and a client's close set `closing`.
    pub(crate) fn settle_transport(&mut self, payload_max: usize) -> bool {
        let mut queued = false;
        loop {
            match &mut self.transport {
                Transport::Tcp => return queued,
                Transport::Undecided => {
                    let input = self.pending_input();
                    if input.len() < 4 {
                        return queued;
                    }
                    if websocket::is_http_request(input) {
                        let raw = input.to_vec();
                        self.consume_input(raw.len());
                        self.transport = Transport::Upgrading { raw };
                    } else {
                        self.transport = Transport::Tcp;
                        return queued;
                    }
                }
                Transport::Upgrading { raw } => match websocket::handshake(raw) {
                    Handshake::Incomplete => return queued,
                    Handshake::Accepted { response, consumed } => {
                        raw.drain(..consumed);
                        let raw = std::mem::take(raw);
                        self.output.extend_from_slice(&response);
                        self.transport = Transport::WebSocket { raw };
                        queued = true;
                    }
                    Handshake::Refused { response, reason } => {
                        raw.clear();
                        self.output.extend_from_slice(&response);
                        self.closing.get_or_insert(CloseReason::BadFraming(reason));
                        return true;
                    }
                },
                Transport::WebSocket { raw } => {
                    let mut raw = std::mem::take(raw);
                    let before = self.output.len();
                    let mut input = InputParts {
                        bytes: &mut self.input,
                        start: &mut self.input_start,
                        end: &mut self.input_end,
                    };
                    let (used, ending) = websocket::decode(
                        &mut raw,
                        Role::Server,
                        payload_max,
                        |payload| input.append(payload),
                        &mut Masks::new(Role::Server),
                        &mut self.output,
                    );
                    raw.drain(..used);
                    if raw.is_empty() {
                        // Most connections are idle phones: hold no read
                        // buffer between reads (one allocation per read).
                        raw = Vec::new();
                    }
                    self.transport = Transport::WebSocket { raw };
                    match ending {
                        None => {}
                        Some(Ending::PeerClosed) => {
                            self.read_closed = true;
                            self.closing.get_or_insert(CloseReason::PeerClosed);
                        }
                        Some(Ending::Refused(reason)) => {
                            self.closing.get_or_insert(CloseReason::BadFraming(reason));
                        }
                    }
                    return queued || self.output.len() > before;
                }
            }
        }
    }

    /// Whether the connection speaks WebSocket.
    pub(crate) fn is_websocket(&self) -> bool {
        matches!(self.transport, Transport::WebSocket { .. })
    }

    /// Queues one outbound frame (length prefix included); over WebSocket,
    /// in a binary message of its own.
    pub(crate) fn queue_frame(&mut self, frame: &[u8]) {
        if self.is_websocket() {
            websocket::binary_header(frame.len(), &mut self.output);
        }
        self.output.extend_from_slice(frame);
    }

    /// Closes once the output is written; over WebSocket, says so with a
    /// close frame first.
    pub(crate) fn close_after_output(&mut self, reason: CloseReason) {
        if self.closing.is_some() {
            return;
        }
        if self.is_websocket() {
            let (code, text) = match &reason {
                CloseReason::BadFraming(_) => (CloseCode::Protocol, "bad framing"),
                CloseReason::Shutdown => (CloseCode::Away, "the server is stopping"),
                _ => (CloseCode::Policy, "closed by the server"),
            };
            websocket::close_frame(code, text, None, &mut self.output);
        }
        self.closing = Some(reason);
    }

    /// Bytes queued and not yet written.
    pub(crate) fn pending_output(&self) -> usize {
        self.output.len() - self.written
    }

    /// Writes what is queued, until done or the socket is full. Errors mean
    /// the connection is dead.
    pub(crate) fn write(&mut self) -> io::Result<()> {
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.written == self.output.len() {
            self.output.clear();
            self.written = 0;
            if self.output.capacity() > OUTPUT_KEEP_BYTES {
                self.output = Vec::new();
            }
        }
        Ok(())
    }
}

/// The input buffer's fields, borrowed apart from the rest of the
/// connection so that WebSocket payloads are decoded straight into it.
struct InputParts<'a> {
    bytes: &'a mut Vec<u8>,
    start: &'a mut usize,
    end: &'a mut usize,
}

impl InputParts<'_> {
    /// Appends decoded bytes after the unread input.
    fn append(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if *self.start > 0 {
            self.bytes.copy_within(*self.start..*self.end, 0);
            *self.end -= *self.start;
            *self.start = 0;
        }
        let end = *self.end + data.len();
        if self.bytes.len() < end {
            self.bytes
                .resize(end.max(INPUT_INITIAL_BYTES).next_power_of_two(), 0);
        }
        self.bytes[*self.end..end].copy_from_slice(data);
        *self.end = end;
    }
}

/// Reads at most `reads_max` chunks into the end of `buffer`: into the
/// space it has, and at least `INPUT_INITIAL_BYTES` (so an idle
/// connection's buffer stays small, as for TCP).
fn read_into(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    reads_max: usize,
    peer_closing: bool,
) -> (ReadOutcome, usize) {
    let mut total = 0;
    for _ in 0..reads_max {
        let len = buffer.len();
        let chunk = (buffer.capacity() - len).max(INPUT_INITIAL_BYTES);
        buffer.resize(len + chunk, 0);
        let result = stream.read(&mut buffer[len..]);
        match result {
            Ok(0) => {
                buffer.truncate(len);
                return (ReadOutcome::Closed(CloseReason::PeerClosed), total);
            }
            Ok(n) => {
                buffer.truncate(len + n);
                total += n;
                if n < chunk && !peer_closing {
                    return (ReadOutcome::Drained, total);
                }
            }
            Err(e) => {
                buffer.truncate(len);
                match e.kind() {
                    io::ErrorKind::WouldBlock => return (ReadOutcome::Drained, total),
                    io::ErrorKind::Interrupted => continue,
                    _ => return (ReadOutcome::Closed(CloseReason::Io(e.to_string())), total),
                }
            }
        }
    }
    (ReadOutcome::More, total)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
