//! Accepting connections on the listening I/O thread: the limits per
//! address, the round-robin hand-over to the other threads, and what to do
//! when the process runs out of file descriptors.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;

use super::io::{Accepted, Sibling};
use super::per_ip::PerIp;
use super::stats::{Counters, Tally};

/// Out of descriptors with no spare to free: how soon to try accepting
/// again (the listener's readiness, edge-triggered, will not say so).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// A warning that may repeat with every connection is logged at most this
/// often, with how many times it happened meanwhile.
const WARNING_INTERVAL: Duration = Duration::from_secs(1);

/// The listening thread's accepting state.
pub(super) struct Acceptor {
    /// Connections accepted so far, which picks the thread of the next.
    accepted: usize,
    /// A descriptor (on /dev/null) held in reserve. Out of descriptors, it
    /// is closed to accept a waiting connection and close it at once, so
    /// clients are refused instead of left in the backlog unanswered; then
    /// it is opened again.
    spare_descriptor: Option<std::fs::File>,
    /// When to try accepting again after running out of descriptors with
    /// no spare left.
    retry_at: Option<Instant>,
    /// Connections refused for want of descriptors.
    descriptor_warning: Warning,
    /// Connections refused under `connections_per_ip_max`.
    per_ip_warning: Warning,
}

/// What the acceptor works with: the listener, the per-address limit and
/// the threads to hand connections to.
pub(super) struct Listening<'a> {
    pub(super) listener: &'a TcpListener,
    pub(super) per_ip: Option<&'a Arc<PerIp>>,
    pub(super) per_ip_max: usize,
    /// Every I/O thread, this one included (at `index`).
    pub(super) siblings: &'a [Sibling],
    pub(super) index: usize,
    pub(super) tally: &'a mut Tally,
    pub(super) counters: &'a Counters,
}

impl Acceptor {
    /// An acceptor; `listening` says whether this thread has the listener
    /// (only it holds a spare descriptor).
    pub(super) fn new(listening: bool) -> Self {
        Self {
            accepted: 0,
            spare_descriptor: if listening {
                open_spare_descriptor()
            } else {
                None
            },
            retry_at: None,
            descriptor_warning: Warning::default(),
            per_ip_warning: Warning::default(),
        }
    }

    /// When to call [`Acceptor::accept`] again without a readiness event.
    pub(super) fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Accepts every waiting connection: hands each to its thread in
    /// turn, and returns the ones that are this thread's to register.
    pub(super) fn accept(&mut self, at: &mut Listening<'_>, now: Instant) -> Vec<Accepted> {
        self.retry_at = None;
        let mut mine = Vec::new();
        loop {
            match at.listener.accept() {
                Ok((stream, peer)) => {
                    let slot = match at.per_ip {
                        Some(per_ip) => match per_ip.take(peer.ip()) {
                            Some(slot) => Some(slot),
                            None => {
                                // Counted (and published) before the close
                                // tells the client.
                                refused(at);
                                drop(stream);
                                let limit = at.per_ip_max;
                                self.per_ip_warning.warn(now, |refused| {
                                    tracing::warn!(
                                        peer = %peer.ip(),
                                        limit,
                                        refused,
                                        "connection refused: its address is at connections_per_ip_max"
                                    )
                                });
                                continue;
                            }
                        },
                        None => None,
                    };
                    let sibling = self.accepted % at.siblings.len().max(1);
                    self.accepted += 1;
                    if sibling == at.index || at.siblings.is_empty() {
                        mine.push((stream, slot));
                    } else {
                        let target = &at.siblings[sibling];
                        // A sibling gone means the server is stopping; the
                        // socket is dropped (closed).
                        if target.sockets.send((stream, slot)).is_ok() {
                            let _ = target.waker.wake();
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return mine,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Out of descriptors (which Linux reports even when no
                // connection is waiting).
                Err(error) if out_of_descriptors(&error) => match self.refuse(at) {
                    Refusal::Refused => self.warn_out_of_descriptors(now, &error, 1),
                    Refusal::NoneWaiting => return mine,
                    Refusal::NoSpare => {
                        self.warn_out_of_descriptors(now, &error, 0);
                        // Try again soon: the listener will not report the
                        // connections already waiting again.
                        self.retry_at = Some(now + ACCEPT_RETRY);
                        return mine;
                    }
                },
                Err(error) => {
                    // The listener stays, and the next readiness event
                    // tries again.
                    tracing::warn!(%error, "accept failed");
                    return mine;
                }
            }
        }
    }

    /// Out of descriptors: frees the spare, accepts one waiting connection
    /// and closes it at once, and takes the spare back.
    fn refuse(&mut self, at: &mut Listening<'_>) -> Refusal {
        let Some(spare) = self.spare_descriptor.take() else {
            self.spare_descriptor = open_spare_descriptor();
            return Refusal::NoSpare;
        };
        drop(spare);
        let refusal = match at.listener.accept() {
            Ok((refused_stream, _)) => {
                // Counted where the metrics read it before the close tells
                // the client, so no reading after the refusal misses it.
                refused(at);
                // Dropped: closed at once, so the client learns now.
                drop(refused_stream);
                Refusal::Refused
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Refusal::NoneWaiting,
            // Taken by another thread between the close and the accept.
            Err(_) => Refusal::NoSpare,
        };
        self.spare_descriptor = open_spare_descriptor();
        refusal
    }

    fn warn_out_of_descriptors(&mut self, now: Instant, error: &io::Error, refused: u64) {
        self.descriptor_warning
            .warn_counting(now, refused, |refused| {
                tracing::warn!(
                    %error,
                    refused,
                    "out of file descriptors: refusing new connections until some close \
                     (raise the open files limit with ulimit -n or LimitNOFILE=)"
                )
            });
    }
}

/// Counts a refused connection where the metrics read it.
fn refused(at: &mut Listening<'_>) {
    at.tally.connections_refused += 1;
    at.tally.flush(at.counters);
}

/// A warning logged at most once per [`WARNING_INTERVAL`], with the count
/// of what it stands for since it was last logged.
#[derive(Default)]
pub(super) struct Warning {
    last: Option<Instant>,
    count: u64,
}

impl Warning {
    /// Adds `count` and logs through `log` (given the count since the last
    /// log) unless it logged less than an interval ago.
    pub(super) fn warn_counting(&mut self, now: Instant, count: u64, log: impl FnOnce(u64)) {
        self.count += count;
        if self
            .last
            .is_some_and(|at| now.duration_since(at) < WARNING_INTERVAL)
        {
            return;
        }
        self.last = Some(now);
        log(std::mem::take(&mut self.count));
    }

    /// Counts one and logs as [`warn_counting`](Self::warn_counting).
    pub(super) fn warn(&mut self, now: Instant, log: impl FnOnce(u64)) {
        self.warn_counting(now, 1, log);
    }
}

/// What [`Acceptor::refuse`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Accepted a waiting connection and closed it.
    Refused,
    /// Nothing was waiting.
    NoneWaiting,
    /// No spare descriptor to free for it.
    NoSpare,
}

/// Whether `error` says the process or the system has no descriptor left.
fn out_of_descriptors(error: &io::Error) -> bool {
    matches!(
        rustix::io::Errno::from_io_error(error),
        Some(rustix::io::Errno::MFILE | rustix::io::Errno::NFILE)
    )
}

/// A descriptor to hold in reserve; none if even that cannot be had.
fn open_spare_descriptor() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}
