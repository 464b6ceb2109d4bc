//! One client connection's socket and its session: the socket is read
//! into the session's buffers and written from them; everything the bytes
//! mean is the session's (`session.rs`).

use std::io::{self, Read, Write};
use std::time::Instant;

use mio::net::TcpStream;

use super::per_ip::IpSlot;
use super::session::{CloseReason, Session};

/// A connection: its socket, its session, and the loop's marks on it.
pub(crate) struct Connection {
    pub(crate) stream: TcpStream,
    pub(crate) session: Session,
    /// Whether the connection is on the dirty list already.
    pub(crate) dirty: bool,
    /// Whether the connection is on the list to read next pass already.
    pub(crate) unread: bool,
    /// The poller reported the peer's half-close: read until end of stream
    /// rather than stopping at a short read.
    pub(crate) peer_closing: bool,
    /// Its place under `connections_per_ip_max`, given back when the
    /// connection is dropped.
    pub(crate) ip_slot: Option<IpSlot>,
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
    pub(crate) fn new(stream: TcpStream, session: Session) -> Self {
        Self {
            stream,
            session,
            dirty: false,
            unread: false,
            peer_closing: false,
            ip_slot: None,
        }
    }

    /// Reads at most `reads_max` chunks into the session, stopping early at
    /// would-block. Returns what it found and the bytes it read.
    pub(crate) fn read(&mut self, reads_max: usize, now: Instant) -> (ReadOutcome, usize) {
        let mut total = 0;
        for _ in 0..reads_max {
            let space = self.session.read_space();
            let chunk = space.len();
            let result = self.stream.read(space);
            let got = *result.as_ref().unwrap_or(&0);
            self.session.received(got, now);
            total += got;
            match result {
                Ok(0) => {
                    self.session.read_ended();
                    return (ReadOutcome::Closed(CloseReason::PeerClosed), total);
                }
                // The socket had less than we asked for: it is drained,
                // and new bytes will raise a new edge. This saves the read
                // that would only say would-block.
                Ok(n) if n < chunk && !self.peer_closing => return (ReadOutcome::Drained, total),
                Ok(_) => {}
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return (ReadOutcome::Drained, total),
                    io::ErrorKind::Interrupted => continue,
                    _ => {
                        self.session.read_ended();
                        let reason = CloseReason::Io(e.to_string());
                        return (ReadOutcome::Closed(reason), total);
                    }
                },
            }
        }
        (ReadOutcome::More, total)
    }

    /// Writes what the session has queued, until done or the socket is
    /// full; the bytes written. Errors mean the connection is dead.
    pub(crate) fn write(&mut self) -> io::Result<usize> {
        let mut total = 0;
        while !self.session.unwritten().is_empty() {
            match self.stream.write(self.session.unwritten()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.session.wrote(n);
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }
}
