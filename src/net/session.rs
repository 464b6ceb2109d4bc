//! One client connection's protocol, without I/O: a state machine fed the
//! bytes its socket gave and the time, which yields the frames to publish
//! and the bytes to write. It tells plain TCP from a WebSocket upgrade,
//! answers the upgrade, unwraps WebSocket frames, cuts courier frames,
//! holds a connection to its frame allowance and its heartbeat timeout,
//! keeps replies in request order (the answer gate) and caps the output
//! a slow reader may leave unread. The mio loop (`io.rs`) only moves
//! bytes between it and the socket.
//!
//! # Invariants
//! - `input[input_start..input_end]` holds bytes received and not yet
//!   published; `input[input_end..]` is free space (the buffer is never
//!   shrunk by `truncate`, so reads do not re-zero it).
//! - `output[written..]` holds bytes queued and not yet written.
//! - Nothing is published while the gate waits for an answer, while the
//!   session is paused, or once it is closing.

use std::ops::Range;
use std::time::{Duration, Instant};

use crate::broker::{ConnId, Ingress};
use crate::codec::websocket::{self, CloseCode, Ending, Handshake, Masks, Role};
use crate::codec::LENGTH_PREFIX_BYTES;
use crate::codec::{accepted_heartbeat_interval, declared_heartbeat_interval};
use crate::codec::{proto::ErrorCode, AnswerGate, FrameDecoder, FrameError, Message};
use crate::ringbuffer::TryPublishError;

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
/// Frames published with one claim at most.
pub(crate) const FRAMES_PER_BATCH_MAX: usize = 64;

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
enum Transport {
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

/// The limits a session holds its client to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Frames a second it may send (0: no limit).
    pub(crate) frames_per_second: u32,
    /// Output it may leave unread before it is cut off.
    pub(crate) output_cap_bytes: usize,
    /// Silence after which it is closed, unless it declares an interval.
    pub(crate) heartbeat_timeout: Duration,
    /// The shortest and longest interval a `Ping` may declare (ms): the
    /// one `HelloOk` suggests, and `heartbeat_interval_ms_max`.
    pub(crate) heartbeat_interval_ms: (u32, u32),
}

/// Where a session's frames go: the broker's ingress, or a test's list.
pub(crate) trait Publish {
    /// Publishes every frame in `ranges` of `buffer` (no length prefix), or
    /// none: `Full` if they do not all fit.
    fn frames(
        &mut self,
        conn: ConnId,
        buffer: &[u8],
        ranges: &[Range<usize>],
    ) -> Result<(), TryPublishError>;

    /// Publishes one frame.
    fn frame(&mut self, conn: ConnId, frame: &[u8]) -> Result<(), TryPublishError>;
}

impl Publish for Ingress {
    fn frames(
        &mut self,
        conn: ConnId,
        buffer: &[u8],
        ranges: &[Range<usize>],
    ) -> Result<(), TryPublishError> {
        self.try_frames_in(conn, buffer, ranges)
    }

    fn frame(&mut self, conn: ConnId, frame: &[u8]) -> Result<(), TryPublishError> {
        self.try_frame(conn, frame)
    }
}

/// What [`Session::publish`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Published {
    /// Every whole frame received is published.
    All,
    /// The ring is full (or the broker stopped): try again later.
    Full,
    /// A Register or Login was published: the rest waits for its answer.
    Held,
    /// The allowance ran out with input left: the session is paused until
    /// [`Session::paused_until`].
    Throttled,
    /// The bytes are not valid framing: an error frame is queued and the
    /// session closes once it is written.
    Bad,
    /// Nothing may be published now (paused, or waiting for an answer).
    Waiting,
}

/// What [`Session::deliver`] did with a frame from the broker.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Delivered {
    /// Queued for writing.
    Queued,
    /// Queued, and it was the answer the gate waited for: read the
    /// connection again.
    Answered,
    /// Over the output cap: the session must be closed as a slow reader.
    Slow,
}

/// One connection's protocol state.
pub(crate) struct Session {
    pub(crate) id: ConnId,
    limits: Limits,
    input: Vec<u8>,
    input_start: usize,
    input_end: usize,
    output: Vec<u8>,
    written: usize,
    /// Where the bytes of the read under way land in the transport's raw
    /// buffer (WebSocket, upgrade).
    raw_filled: usize,
    last_input: Instant,
    /// Silence after which it is closed: the server's timeout, or three
    /// of the intervals the client declared, if longer.
    timeout: Duration,
    /// Close once the output is written (the broker asked, or framing failed).
    pub(crate) closing: Option<CloseReason>,
    /// The client sent EOF; no more reads.
    pub(crate) read_closed: bool,
    allowance: Allowance,
    /// It sent faster than its allowance: not read until then.
    paused_until: Option<Instant>,
    transport: Transport,
    /// Closed while a Register or Login it sent awaits its answer: nothing
    /// after it is published until then, so replies keep request order.
    gate: AnswerGate,
}

impl Session {
    pub(crate) fn new(id: ConnId, limits: Limits, websocket: bool, now: Instant) -> Self {
        Self {
            id,
            limits,
            input: Vec::new(),
            input_start: 0,
            input_end: 0,
            output: Vec::new(),
            written: 0,
            raw_filled: 0,
            last_input: now,
            timeout: limits.heartbeat_timeout,
            closing: None,
            read_closed: false,
            allowance: Allowance::new(limits.frames_per_second, now),
            paused_until: None,
            transport: if websocket {
                Transport::Undecided
            } else {
                Transport::Tcp
            },
            gate: AnswerGate::default(),
        }
    }

    /// Whether it may be read (and published from) now: not closing,
    /// paused or waiting for an answer.
    pub(crate) fn readable(&self) -> bool {
        self.closing.is_none() && self.paused_until.is_none() && self.gate.is_open()
    }

    /// When a paused session may be read again.
    pub(crate) fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    /// Ends a pause (its time has come).
    pub(crate) fn resume(&mut self) {
        self.paused_until = None;
    }

    /// Whether nothing has arrived for longer than the heartbeat timeout.
    pub(crate) fn silent_too_long(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_input) > self.timeout
    }

    /// Space to read the socket into, at least `INPUT_INITIAL_BYTES`
    /// (so an idle connection's buffer stays small); [`Session::received`]
    /// says how much of it was filled.
    pub(crate) fn read_space(&mut self) -> &mut [u8] {
        if matches!(self.transport, Transport::Undecided | Transport::Tcp) {
            self.make_room();
            return &mut self.input[self.input_end..];
        }
        let (Transport::Upgrading { raw } | Transport::WebSocket { raw }) = &mut self.transport
        else {
            unreachable!("matched above");
        };
        let len = raw.len();
        let chunk = (raw.capacity() - len).max(INPUT_INITIAL_BYTES);
        raw.resize(len + chunk, 0);
        self.raw_filled = len;
        &mut raw[len..]
    }

    /// `bytes` of the last [`Session::read_space`] were filled at `now`
    /// (0 when the read found nothing, failed or met the end: it must
    /// follow every [`Session::read_space`]).
    pub(crate) fn received(&mut self, bytes: usize, now: Instant) {
        match &mut self.transport {
            Transport::Upgrading { raw } | Transport::WebSocket { raw } => {
                raw.truncate(self.raw_filled + bytes);
            }
            Transport::Undecided | Transport::Tcp => self.input_end += bytes,
        }
        if bytes > 0 {
            self.last_input = now;
        }
    }

    /// The client closed its end (or reading failed).
    pub(crate) fn read_ended(&mut self) {
        self.read_closed = true;
    }

    /// Unread input.
    fn pending_input(&self) -> &[u8] {
        &self.input[self.input_start..self.input_end]
    }

    /// Marks `bytes` of input as taken.
    fn consume_input(&mut self, bytes: usize) {
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
                Transport::WebSocket { .. } => return self.unwrap_websocket(payload_max) || queued,
            }
        }
    }

    /// Decodes the WebSocket frames received into the input; whether it
    /// queued output (pongs, a close).
    fn unwrap_websocket(&mut self, payload_max: usize) -> bool {
        let Transport::WebSocket { raw } = &mut self.transport else {
            return false;
        };
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
            // Most connections are idle phones: hold no read buffer
            // between reads (one allocation per read).
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
        self.output.len() > before
    }

    /// Whether the connection speaks WebSocket.
    pub(crate) fn is_websocket(&self) -> bool {
        matches!(self.transport, Transport::WebSocket { .. })
    }

    /// Publishes the whole frames received, in place, in batches: as many
    /// as the allowance holds (which it takes them off), up to a Register
    /// or Login (whose answer the rest waits for). `ranges` is scratch;
    /// `frames_in` counts what was published.
    pub(crate) fn publish(
        &mut self,
        decoder: &FrameDecoder,
        publisher: &mut impl Publish,
        ranges: &mut Vec<Range<usize>>,
        frames_in: &mut u64,
        now: Instant,
    ) -> Published {
        // What arrived before a close (a WebSocket close frame after a
        // message) is still published.
        if self.paused_until.is_some() || !self.gate.is_open() {
            return Published::Waiting;
        }
        let rate = self.limits.frames_per_second;
        let mut budget = match rate {
            0 => u64::MAX,
            rate => self.allowance.available(rate, now),
        };
        let start_budget = budget;
        let published = self.publish_within(decoder, publisher, ranges, frames_in, &mut budget);
        if rate > 0 {
            self.allowance.spend(start_budget - budget);
        }
        match published {
            Published::Throttled => {
                self.paused_until = Some(self.allowance.resume_at(rate));
                Published::Throttled
            }
            Published::Bad => Published::Bad,
            other => other,
        }
    }

    /// [`Session::publish`] with a budget of frames, which it counts down.
    fn publish_within(
        &mut self,
        decoder: &FrameDecoder,
        publisher: &mut impl Publish,
        ranges: &mut Vec<Range<usize>>,
        frames_in: &mut u64,
        budget: &mut u64,
    ) -> Published {
        loop {
            if *budget == 0 {
                return if self.pending_input().is_empty() {
                    Published::All
                } else {
                    Published::Throttled
                };
            }
            let batch_max = (*budget).min(FRAMES_PER_BATCH_MAX as u64) as usize;
            let (offset, held, bad) = cut_frames(decoder, self.pending_input(), batch_max, ranges);
            if ranges.is_empty() {
                return match bad {
                    Some(error) => self.refuse_framing(&error),
                    None => Published::All,
                };
            }
            let batch_full = ranges.len() == batch_max;
            self.hold_to_declared_interval(ranges);
            let input = &self.input[self.input_start..self.input_end];
            match publisher.frames(self.id, input, ranges) {
                Ok(()) => {
                    *frames_in += ranges.len() as u64;
                    *budget -= ranges.len() as u64;
                    self.consume_input(offset);
                }
                Err(TryPublishError::Full) => {
                    // Not room for all: publish what fits, one by one.
                    let mut taken = 0;
                    for range in ranges.iter() {
                        if publisher.frame(self.id, &input[range.clone()]).is_err() {
                            break;
                        }
                        *frames_in += 1;
                        *budget -= 1;
                        taken = range.end;
                    }
                    self.consume_input(taken);
                    if taken < offset {
                        return Published::Full;
                    }
                }
                Err(TryPublishError::Halted(_)) => return Published::Full,
            }
            if let Some(correlation_id) = held {
                self.gate.wait_for(correlation_id);
                return Published::Held;
            }
            if let Some(error) = bad {
                return self.refuse_framing(&error);
            }
            if !batch_full {
                return Published::All;
            }
        }
    }

    /// Holds the session to the heartbeat interval the last `Ping` among
    /// `ranges` declares, if one does: three such intervals of silence, or
    /// the server's timeout if longer.
    fn hold_to_declared_interval(&mut self, ranges: &[Range<usize>]) {
        let input = &self.input[self.input_start..self.input_end];
        let declared = ranges
            .iter()
            .rev()
            .find_map(|range| declared_heartbeat_interval(&input[range.clone()]));
        if let Some(declared) = declared {
            let (shortest, longest) = self.limits.heartbeat_interval_ms;
            let accepted = accepted_heartbeat_interval(declared, shortest, longest);
            let intervals = Duration::from_millis(3 * u64::from(accepted));
            self.timeout = self.limits.heartbeat_timeout.max(intervals);
        }
    }

    /// Answers bad framing with an error frame, then closes once it is
    /// written.
    fn refuse_framing(&mut self, error: &FrameError) -> Published {
        let code = match error {
            FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            FrameError::TooShort(_) => ErrorCode::MalformedFrame,
        };
        let mut frame = Vec::new();
        Message::error(code, error.to_string()).encode_frame(0, &mut frame);
        self.queue_frame(&frame);
        self.close_after_output(CloseReason::BadFraming(error.to_string()));
        Published::Bad
    }

    /// Takes a frame (or a close) from the broker.
    pub(crate) fn deliver(&mut self, close: bool, frame: &[u8]) -> Delivered {
        if close {
            self.close_after_output(CloseReason::Broker);
            return Delivered::Queued;
        }
        if self.unwritten().len() + frame.len() > self.limits.output_cap_bytes {
            return Delivered::Slow;
        }
        self.queue_frame(frame);
        if self.gate.answered(frame) {
            Delivered::Answered
        } else {
            Delivered::Queued
        }
    }

    /// Queues one outbound frame (length prefix included); over WebSocket,
    /// in a binary message of its own.
    fn queue_frame(&mut self, frame: &[u8]) {
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
    pub(crate) fn unwritten(&self) -> &[u8] {
        &self.output[self.written..]
    }

    /// `bytes` of [`Session::unwritten`] were written.
    pub(crate) fn wrote(&mut self, bytes: usize) {
        self.written += bytes;
        debug_assert!(self.written <= self.output.len());
        if self.written == self.output.len() {
            self.output.clear();
            self.written = 0;
            if self.output.capacity() > OUTPUT_KEEP_BYTES {
                self.output = Vec::new();
            }
        }
    }
}

/// Cuts up to `batch_max` whole frames from `input` into `ranges` (each
/// without its length prefix), stopping after a frame that needs an
/// answer. Returns the bytes they take, that frame's correlation id, and
/// the framing error that stopped the cut, if one did.
fn cut_frames(
    decoder: &FrameDecoder,
    input: &[u8],
    batch_max: usize,
    ranges: &mut Vec<Range<usize>>,
) -> (usize, Option<u64>, Option<FrameError>) {
    ranges.clear();
    let mut offset = 0;
    let mut held = None;
    while ranges.len() < batch_max && held.is_none() {
        match decoder.frame_bytes(&input[offset..]) {
            Ok(Some(total)) if offset + total <= input.len() => {
                let range = offset + LENGTH_PREFIX_BYTES..offset + total;
                held = AnswerGate::needs_answer(&input[range.clone()]);
                ranges.push(range);
                offset += total;
            }
            Ok(_) => break,
            Err(error) => return (offset, held, Some(error)),
        }
    }
    (offset, held, None)
}

/// The input buffer's fields, borrowed apart from the rest of the
/// session so that WebSocket payloads are decoded straight into it.
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

#[cfg(test)]
mod tests;
