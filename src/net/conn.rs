//! One client connection's buffers: input cut into frames, output batched.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use crate::broker::ConnId;

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
    /// The client sent EOF; no more reads.
    pub(crate) read_closed: bool,
    /// The poller reported the peer's half-close: read until end of stream
    /// rather than stopping at a short read.
    pub(crate) peer_closing: bool,
    /// Frames it may still send now, under `frames_per_second_max`.
    pub(crate) allowance: Allowance,
    /// It sent faster than its allowance: its socket is not read until then.
    pub(crate) paused_until: Option<Instant>,
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
    pub(crate) fn new(id: ConnId, stream: TcpStream, frames_per_second: u32, now: Instant) -> Self {
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
            read_closed: false,
            peer_closing: false,
            allowance: Allowance::new(frames_per_second, now),
            paused_until: None,
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
    pub(crate) fn read(&mut self, reads_max: usize, now: Instant) -> ReadOutcome {
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
