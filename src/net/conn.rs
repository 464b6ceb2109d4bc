//! One client connection's buffers: input cut into frames, output batched.

use std::io::{self, Read, Write};
use std::time::Instant;

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
    pub(crate) fn new(id: ConnId, stream: TcpStream, now: Instant) -> Self {
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
