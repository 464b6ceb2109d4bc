//! An I/O thread: a mio loop that reads frames into the inbound ring and
//! writes what its outbound ring holds, batched per connection.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use rustc_hash::FxHashMap as HashMap;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::broker::Clock;

use super::accept::{Acceptor, Listening, Warning};
use super::conn::{numbering, Connection, ReadOutcome};
use super::per_ip::{IpSlot, PerIp};
use super::session::{CloseReason, Delivered, Limits, Published, Session, FRAMES_PER_BATCH_MAX};
use super::stats::{Counters, Tally};
use super::{Control, FrameBatch, Outbound, ServerConfig};
use crate::broker::{BrokerDriver, ConnId, Ingress};
use crate::codec::{FrameDecoder, LENGTH_PREFIX_BYTES};
use crate::ringbuffer::{Poller, TryPublishError};

pub(crate) const WAKE: Token = Token(usize::MAX);
pub(crate) const LISTENER_TOKEN: Token = Token(usize::MAX - 1);
/// Outbound events handled per pass before the loop looks at sockets again.
const OUTBOUND_BATCH_MAX: usize = 1024;
/// Read calls per connection per pass, so one busy client cannot starve others.
const READS_PER_PASS_MAX: usize = 4;
/// Batches the inline placement's driver takes through the stages per pass
/// before the loop looks at sockets again.
const PIPELINE_RUNS_PER_PASS: usize = 8;
/// Bytes of frame scratch an inline I/O thread keeps between passes; a
/// burst beyond it (a post to a large group) is let go afterwards.
const LOCAL_SCRATCH_KEEP_BYTES: usize = 1 << 20;
/// mio events per poll.
const EVENTS_MAX: usize = 1024;
/// How long a stopping thread keeps trying to write what it still holds.
const SHUTDOWN_WRITE_GRACE: Duration = Duration::from_secs(2);

/// A connection event that the ring had no room for yet.
enum Pending {
    Connected(ConnId, Option<std::net::IpAddr>),
    Disconnected(ConnId),
}

/// An accepted connection and its place under `connections_per_ip_max`.
pub(crate) type Accepted = (TcpStream, Option<IpSlot>);

/// A thread's sibling, for handing accepted sockets over.
pub(crate) struct Sibling {
    pub(crate) sockets: Sender<Accepted>,
    pub(crate) waker: Arc<Waker>,
}

pub(crate) struct IoThread {
    pub(crate) index: u16,
    pub(crate) poll: Poll,
    pub(crate) listener: Option<TcpListener>,
    /// Thread 0 hands accepted sockets round-robin to these (itself too).
    pub(crate) siblings: Vec<Sibling>,
    pub(crate) handoff: Receiver<Accepted>,
    /// Connections by client address, under `connections_per_ip_max` (the
    /// listening thread's, when there is a limit).
    pub(crate) per_ip: Option<Arc<PerIp>>,
    pub(crate) outbound: Poller<Outbound>,
    /// Under the inline placement (first thread only): the broker's stages,
    /// run here after each read, and where their frames for this thread's
    /// connections come out.
    pub(crate) driver: Option<BrokerDriver>,
    pub(crate) local: Option<Arc<std::sync::Mutex<FrameBatch>>>,
    pub(crate) ingress: Option<Ingress>,
    pub(crate) control: Arc<Control>,
    pub(crate) config: ServerConfig,
    pub(crate) stopped_reading: Sender<u16>,
    pub(crate) counters: Arc<Counters>,
}

/// The state of a running I/O thread.
struct Loop {
    thread: IoThread,
    decoder: FrameDecoder,
    conns: HashMap<u64, Connection>,
    next_counter: u64,
    dirty: Vec<u64>,
    /// Connections with input that the full ring could not take yet, or
    /// that stopped reading early to be fair; read again next pass.
    unread: VecDeque<u64>,
    /// Connections whose reading is paused (they sent faster than
    /// `frames_per_second_max`), by when to read them again.
    paused: BinaryHeap<Reverse<(Instant, u64)>>,
    pending: VecDeque<Pending>,
    reading: bool,
    outbound_done: bool,
    next_heartbeat_check: Instant,
    /// Where time comes from (heartbeats, the frame allowance, pauses).
    clock: Clock,
    /// Scratch for the frame ranges of one publish.
    ranges: Vec<std::ops::Range<usize>>,
    /// Frames taken from the inline driver's fan-out, swapped with the
    /// shared batch so both keep their buffers.
    local_scratch: FrameBatch,
    /// Counts since the last pass, added to the shared counters once a pass.
    tally: Tally,
    /// Accepting, on the listening thread.
    acceptor: Acceptor,
    /// Connections refused under `connections_max`.
    full_warning: Warning,
}

impl IoThread {
    pub(crate) fn run(self) {
        let frame_size_max = self.config.broker.frame_size_max_bytes;
        let clock = self.config.broker.clock.clone();
        let listening = self.listener.is_some();
        let mut state = Loop {
            thread: self,
            decoder: FrameDecoder::new(frame_size_max),
            conns: HashMap::default(),
            next_counter: 0,
            dirty: Vec::new(),
            unread: VecDeque::new(),
            paused: BinaryHeap::new(),
            pending: VecDeque::new(),
            reading: true,
            outbound_done: false,
            next_heartbeat_check: clock.now(),
            clock,
            ranges: Vec::with_capacity(FRAMES_PER_BATCH_MAX),
            local_scratch: FrameBatch::default(),
            tally: Tally::default(),
            acceptor: Acceptor::new(listening),
            full_warning: Warning::default(),
        };
        state.run();
    }
}

impl Loop {
    fn run(&mut self) {
        let mut events = Events::with_capacity(EVENTS_MAX);
        loop {
            let now = self.clock.now();
            self.drain_outbound();
            self.run_pipeline();
            self.publish_pending();
            self.resume_paused(now);
            if self.reading && self.pending.is_empty() {
                self.read_unread(now);
            }
            self.write_dirty();
            if self.reading && self.thread.control.stop_reading.load(Ordering::Acquire) {
                self.stop_reading();
            }
            if self.outbound_done {
                self.finish();
                return;
            }
            if self.reading && now >= self.next_heartbeat_check {
                self.check_heartbeats(now);
            }
            if self.acceptor.retry_at().is_some_and(|at| now >= at) {
                self.accept(now);
            }
            self.tally.flush(&self.thread.counters);
            let timeout = self.timeout(now);
            let may_sleep = match &self.thread.driver {
                // Only this thread's driver feeds it frames, so the
                // outbound ring has nothing to wake it for (the stop
                // wakes it directly).
                Some(driver) => driver.prepare_wait(),
                None => self.thread.outbound.prepare_wait(),
            };
            let timeout = if may_sleep {
                timeout
            } else {
                Some(Duration::ZERO)
            };
            if let Err(error) = self.thread.poll.poll(&mut events, timeout) {
                if error.kind() != io::ErrorKind::Interrupted {
                    // The poll instance itself failed: nothing this thread
                    // can serve any more. Stop reading; the server stops.
                    tracing::error!(thread = self.thread.index, %error, "poll failed");
                    self.thread
                        .control
                        .stop_reading
                        .store(true, Ordering::Release);
                }
                continue;
            }
            if let Some(driver) = &self.thread.driver {
                // What this thread reads next must not wake itself.
                driver.end_wait();
            }
            let now = self.clock.now();
            for event in events.iter() {
                match event.token() {
                    WAKE => self.take_handoffs(now),
                    LISTENER_TOKEN => self.accept(now),
                    Token(counter) => {
                        let counter = counter as u64;
                        if event.is_read_closed() {
                            // The peer's FIN may have come with the last
                            // data: read to the end, not just until short.
                            if let Some(conn) = self.conns.get_mut(&counter) {
                                conn.peer_closing = true;
                            }
                        }
                        if event.is_readable() || event.is_read_closed() {
                            self.read(counter, now);
                        }
                        if event.is_writable() {
                            self.mark_dirty(counter);
                        }
                    }
                }
            }
        }
    }

    fn timeout(&self, now: Instant) -> Option<Duration> {
        if !self.pending.is_empty() || (!self.unread.is_empty() && self.reading) {
            // Waiting for room in the ring, which frees no fd: look again soon.
            return Some(Duration::from_millis(1));
        }
        if self.conns.is_empty() || !self.reading {
            return if self.reading {
                None
            } else {
                Some(Duration::from_millis(50))
            };
        }
        let mut wake = self.next_heartbeat_check;
        if let Some(Reverse((resume, _))) = self.paused.peek() {
            wake = wake.min(*resume);
        }
        if let Some(retry) = self.acceptor.retry_at() {
            wake = wake.min(retry);
        }
        Some(wake.saturating_duration_since(now))
    }

    /// Queues the paused connections that are due to be read again.
    fn resume_paused(&mut self, now: Instant) {
        while let Some(&Reverse((resume, counter))) = self.paused.peek() {
            if resume > now {
                return;
            }
            self.paused.pop();
            if let Some(conn) = self.conns.get_mut(&counter) {
                conn.session.resume();
                self.queue_unread(counter);
            }
        }
    }

    /// Accepts what is waiting, and registers this thread's share.
    fn accept(&mut self, now: Instant) {
        let Some(listener) = &self.thread.listener else {
            return;
        };
        let mut listening = Listening {
            listener,
            per_ip: self.thread.per_ip.as_ref(),
            per_ip_max: self.thread.config.connections_per_ip_max,
            siblings: &self.thread.siblings,
            index: usize::from(self.thread.index),
            tally: &mut self.tally,
            counters: &self.thread.counters,
        };
        for accepted in self.acceptor.accept(&mut listening, now) {
            self.register(accepted, now);
        }
    }

    fn take_handoffs(&mut self, now: Instant) {
        while let Ok(accepted) = self.thread.handoff.try_recv() {
            self.register(accepted, now);
        }
    }

    fn register(&mut self, (mut stream, ip_slot): Accepted, now: Instant) {
        if !self.reading {
            return;
        }
        if self.conns.len() >= self.thread.config.connections_max {
            let limit = self.thread.config.connections_max;
            self.full_warning.warn(now, |refused| {
                tracing::warn!(limit, refused, "connection refused: at connections_max")
            });
            // Counted (and published) before the close tells the client.
            self.tally.connections_refused += 1;
            self.tally.flush(&self.thread.counters);
            drop(stream);
            return;
        }
        let counter = self.next_counter;
        self.next_counter += 1;
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "set_nodelay failed");
        }
        let registered = self.thread.poll.registry().register(
            &mut stream,
            Token(counter as usize),
            Interest::READABLE | Interest::WRITABLE,
        );
        if let Err(error) = registered {
            tracing::warn!(%error, "registering a connection failed");
            return;
        }
        let id = numbering::conn_id(self.thread.index, counter);
        let ip = stream.peer_addr().ok().map(|address| address.ip());
        let config = &self.thread.config;
        let limits = Limits {
            frames_per_second: config.frames_per_second_max,
            output_cap_bytes: config.output_cap_bytes,
            heartbeat_timeout: Duration::from_millis(config.heartbeat_timeout_ms),
            heartbeat_interval_ms: (
                config.broker.heartbeat_interval_ms,
                config.broker.heartbeat_interval_ms_max,
            ),
        };
        let session = Session::new(id, limits, config.websocket, now);
        let mut conn = Connection::new(stream, session);
        conn.ip_slot = ip_slot;
        self.conns.insert(counter, conn);
        self.tally.connections_accepted += 1;
        self.pending.push_back(Pending::Connected(id, ip));
        self.publish_pending();
        // Bytes may have arrived with the connection; edge-triggered
        // readiness would not say so again.
        self.queue_unread(counter);
    }

    /// Publishes queued connection events; stops at the first that does not fit.
    fn publish_pending(&mut self) {
        let Some(ingress) = &mut self.thread.ingress else {
            self.pending.clear();
            return;
        };
        while let Some(pending) = self.pending.front() {
            let result = match *pending {
                Pending::Connected(id, Some(ip)) => ingress.try_connected_from(id, ip),
                Pending::Connected(id, None) => ingress.try_connected(id),
                Pending::Disconnected(id) => ingress.try_disconnected(id),
            };
            match result {
                Ok(()) => {
                    self.pending.pop_front();
                }
                Err(TryPublishError::Full) => return,
                Err(TryPublishError::Halted(_)) => {
                    self.pending.clear();
                    return;
                }
            }
        }
    }

    /// Queues a connection to be read on the next pass, once.
    fn queue_unread(&mut self, counter: u64) {
        if let Some(conn) = self.conns.get_mut(&counter) {
            if !conn.unread {
                conn.unread = true;
                self.unread.push_back(counter);
            }
        }
    }

    fn read_unread(&mut self, now: Instant) {
        for _ in 0..self.unread.len() {
            let Some(counter) = self.unread.pop_front() else {
                return;
            };
            if let Some(conn) = self.conns.get_mut(&counter) {
                conn.unread = false;
            }
            self.read(counter, now);
            if !self.pending.is_empty() {
                return;
            }
        }
    }

    /// Publishes the whole frames a connection has (as many as its
    /// allowance lets it), then reads more.
    fn read(&mut self, counter: u64, now: Instant) {
        if !self.reading {
            return;
        }
        if !self.pending.is_empty() {
            // Its Connected (or an earlier event) must go first.
            self.queue_unread(counter);
            return;
        }
        let Some(conn) = self.conns.get_mut(&counter) else {
            return;
        };
        if !conn.session.readable() {
            // A paused connection is read again from `resume_paused`, one
            // awaiting an answer once it goes out (`Deliveries::deliver`).
            return;
        }
        let mut publish = |conn: &mut Connection| {
            let Some(ingress) = &mut self.thread.ingress else {
                return Published::Full;
            };
            let frames_in = &mut self.tally.frames_in;
            let ranges = &mut self.ranges;
            conn.session
                .publish(&self.decoder, ingress, ranges, frames_in, now)
        };
        match publish(conn) {
            Published::All => {}
            Published::Held | Published::Waiting => return,
            Published::Full => return self.queue_unread(counter),
            Published::Throttled => return self.paused(counter),
            Published::Bad => return self.mark_dirty(counter),
        }
        if conn.session.read_closed {
            return self.close(counter, CloseReason::PeerClosed);
        }
        let (outcome, bytes) = conn.read(READS_PER_PASS_MAX, now);
        // A WebSocket frame carries at most one frame of the largest size
        // (or several smaller ones).
        let payload_max = self.decoder.frame_size_max() + LENGTH_PREFIX_BYTES;
        // A refused upgrade or an ended WebSocket sets `closing`: the answer
        // is written, then the connection closes, and nothing more is read.
        let queued = conn.session.settle_transport(payload_max);
        let published = publish(conn);
        self.tally.bytes_in += bytes as u64;
        if queued {
            self.mark_dirty(counter);
        }
        match (published, outcome) {
            (Published::Bad, _) => self.mark_dirty(counter),
            (Published::Throttled, ReadOutcome::Closed(reason)) => {
                // The client is gone: what it sent before going stays
                // unpublished, as for any connection that closes.
                self.close(counter, reason)
            }
            (Published::Throttled, _) => self.paused(counter),
            (Published::Held | Published::Waiting, ReadOutcome::Closed(reason)) => {
                self.close(counter, reason)
            }
            (Published::Held | Published::Waiting, _) => {}
            (Published::Full, _) | (Published::All, ReadOutcome::More) => {
                self.queue_unread(counter);
            }
            (Published::All, ReadOutcome::Drained) => {}
            (Published::All, ReadOutcome::Closed(reason)) => self.close(counter, reason),
        }
    }

    /// The connection sent more than its allowance and its session paused
    /// it: read it again when the pause ends.
    fn paused(&mut self, counter: u64) {
        let Some(conn) = self.conns.get(&counter) else {
            return;
        };
        if let Some(resume) = conn.session.paused_until() {
            self.paused.push(Reverse((resume, counter)));
            self.tally.reads_paused += 1;
        }
    }

    fn mark_dirty(&mut self, counter: u64) {
        if let Some(conn) = self.conns.get_mut(&counter) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(counter);
            }
        }
    }

    fn drain_outbound(&mut self) {
        let mut out = Deliveries {
            conns: &mut self.conns,
            dirty: &mut self.dirty,
            slow: Vec::new(),
            answered: Vec::new(),
        };
        let result = self
            .thread
            .outbound
            .poll(OUTBOUND_BATCH_MAX, |event, _, _| {
                out.deliver(event.conn, event.close, &event.frame)
            });
        if result.is_err() {
            self.outbound_done = true;
        }
        let (slow, answered) = (out.slow, out.answered);
        self.after_deliveries(slow, answered);
    }

    /// Under the inline placement: takes batches through the broker's
    /// stages on this thread and queues the frames they make.
    fn run_pipeline(&mut self) {
        for _ in 0..PIPELINE_RUNS_PER_PASS {
            let Some(driver) = &mut self.thread.driver else {
                return;
            };
            let outcome = driver.run();
            self.take_local();
            match outcome {
                Ok(true) => {}
                Ok(false) => return,
                Err(_) => {
                    // The broker has stopped (shut down, or a stage
                    // failed): the driver has finished.
                    self.thread.driver = None;
                    return;
                }
            }
        }
    }

    /// Queues the frames the inline driver's fan-out made for this thread.
    fn take_local(&mut self) {
        let Some(local) = &self.thread.local else {
            return;
        };
        {
            let mut batch = local.lock().unwrap_or_else(PoisonError::into_inner);
            if batch.frames.is_empty() {
                return;
            }
            std::mem::swap(&mut *batch, &mut self.local_scratch);
        }
        let mut out = Deliveries {
            conns: &mut self.conns,
            dirty: &mut self.dirty,
            slow: Vec::new(),
            answered: Vec::new(),
        };
        let batch = &mut self.local_scratch;
        for (conn, close, range) in &batch.frames {
            out.deliver(*conn, *close, &batch.bytes[range.clone()]);
        }
        batch.clear();
        if batch.bytes.capacity() > LOCAL_SCRATCH_KEEP_BYTES {
            batch.bytes.shrink_to(LOCAL_SCRATCH_KEEP_BYTES);
            batch.frames.shrink_to(LOCAL_SCRATCH_KEEP_BYTES / 64);
        }
        let (slow, answered) = (out.slow, out.answered);
        self.after_deliveries(slow, answered);
    }

    /// What queuing the broker's frames left to do: close the connections
    /// over their output cap, and read again those whose awaited answer
    /// went out.
    fn after_deliveries(&mut self, slow: Vec<u64>, answered: Vec<u64>) {
        self.close_slow(slow);
        for counter in answered {
            self.queue_unread(counter);
        }
    }

    /// Closes the connections that fell further behind than their cap.
    fn close_slow(&mut self, slow: Vec<u64>) {
        for counter in slow {
            let pending_bytes = self
                .conns
                .get(&counter)
                .map_or(0, |conn| conn.session.unwritten().len());
            self.close(counter, CloseReason::SlowReader { pending_bytes });
        }
    }

    fn write_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for counter in dirty.drain(..) {
            let Some(conn) = self.conns.get_mut(&counter) else {
                continue;
            };
            conn.dirty = false;
            match conn.write() {
                Ok(bytes) => self.tally.bytes_out += bytes as u64,
                Err(error) => {
                    self.close(counter, CloseReason::Io(error.to_string()));
                    continue;
                }
            }
            if conn.session.unwritten().is_empty() {
                if let Some(reason) = conn.session.closing.clone() {
                    self.close(counter, reason);
                }
            }
        }
        self.dirty = dirty;
    }

    fn check_heartbeats(&mut self, now: Instant) {
        let timeout = Duration::from_millis(self.thread.config.heartbeat_timeout_ms);
        let expired: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, conn)| conn.session.silent_too_long(now))
            .map(|(&counter, _)| counter)
            .collect();
        for counter in expired {
            self.close(counter, CloseReason::HeartbeatTimeout);
        }
        self.next_heartbeat_check = now + (timeout / 4).max(Duration::from_millis(10));
    }

    fn close(&mut self, counter: u64, reason: CloseReason) {
        let Some(mut conn) = self.conns.remove(&counter) else {
            return;
        };
        self.tally.connections_closed += 1;
        match reason {
            CloseReason::SlowReader { .. } => self.tally.closed_slow_reader += 1,
            CloseReason::HeartbeatTimeout => self.tally.closed_heartbeat_timeout += 1,
            CloseReason::BadFraming(_) => self.tally.closed_bad_framing += 1,
            _ => {}
        }
        match &reason {
            CloseReason::PeerClosed | CloseReason::Shutdown => {
                tracing::debug!(conn = %conn.session.id, ?reason, "connection closed")
            }
            _ => tracing::info!(conn = %conn.session.id, ?reason, "connection closed"),
        }
        let _ = self.thread.poll.registry().deregister(&mut conn.stream);
        self.pending
            .push_back(Pending::Disconnected(conn.session.id));
        self.publish_pending();
    }

    /// Stops accepting and reading; tells the server once this thread will
    /// publish nothing more.
    fn stop_reading(&mut self) {
        self.reading = false;
        if let Some(mut listener) = self.thread.listener.take() {
            let _ = self.thread.poll.registry().deregister(&mut listener);
        }
        self.unread.clear();
        self.pending.clear();
        self.thread.ingress = None;
        let _ = self.thread.stopped_reading.send(self.thread.index);
    }

    /// The broker has stopped and everything it sent is queued: write it
    /// out, for a short while at most, and close every connection.
    fn finish(&mut self) {
        let deadline = Instant::now() + SHUTDOWN_WRITE_GRACE;
        let mut events = Events::with_capacity(EVENTS_MAX);
        loop {
            let mut waiting = false;
            for conn in self.conns.values_mut() {
                if conn.write().is_ok() && !conn.session.unwritten().is_empty() {
                    waiting = true;
                }
            }
            let now = Instant::now();
            if !waiting || now >= deadline {
                break;
            }
            let _ = self.thread.poll.poll(
                &mut events,
                Some((deadline - now).min(Duration::from_millis(10))),
            );
        }
        let counters: Vec<u64> = self.conns.keys().copied().collect();
        for counter in counters {
            self.close(counter, CloseReason::Shutdown);
        }
    }
}

/// Where the broker's frames for this thread's connections are queued.
struct Deliveries<'a> {
    conns: &'a mut HashMap<u64, Connection>,
    dirty: &'a mut Vec<u64>,
    /// Connections over their output cap, to be closed.
    slow: Vec<u64>,
    /// Connections whose awaited answer went out: read them again.
    answered: Vec<u64>,
}

impl Deliveries<'_> {
    /// Queues one frame (or a close) for `id`, if it is still connected.
    fn deliver(&mut self, id: ConnId, close: bool, frame: &[u8]) {
        let counter = numbering::counter_of(id);
        let Some(conn) = self.conns.get_mut(&counter) else {
            return; // gone already
        };
        if conn.session.id != id {
            return;
        }
        match conn.session.deliver(close, frame) {
            Delivered::Queued => {}
            Delivered::Answered => self.answered.push(counter),
            Delivered::Slow => {
                if !self.slow.contains(&counter) {
                    self.slow.push(counter);
                }
                return;
            }
        }
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(counter);
        }
    }
}
