//! The pipeline's stages: decode → journal → flush → logic → (fan-out ∥ store).

use crate::broker::ids::RecordSeq;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::TrySendError;

use super::auth::AuthJob;
use super::clock::Clock;
use super::delivery::Delivery;
use super::event::{decode_inbound, encode_record, Inbound, Journaled, Out, Outbox};
use super::ids::ConnId;
use super::latency::LatencyRecorder;
use super::logic::{Census, Logic};
use super::store::Store;
use super::Egress;
use crate::codec::compress_frame;
use crate::journal::{Durability, Flusher, Journal};
use crate::ringbuffer::{Handler, MutHandler, Sequence};

/// Frame bytes to a typed command; resets what later stages fill.
pub(crate) struct Decode;

impl MutHandler<Inbound> for Decode {
    fn on_event(&mut self, event: &mut Inbound, _: Sequence, _: bool) {
        event.command = decode_inbound(event.origin, &event.body);
        event.journaled = None;
        event.outbox.clear();
    }
}

/// Appends every state-changing command to the journal. The flush stage
/// after it makes them durable.
pub(crate) struct JournalStage {
    pub(crate) journal: Journal,
    pub(crate) scratch: Vec<u8>,
    /// The time stamped on every record of the current batch: one clock
    /// read per batch, not per record.
    pub(crate) batch_timestamp_ns: Option<u64>,
    /// Where the stamps come from.
    pub(crate) clock: Clock,
    /// The journal's next sequence, published once per batch for
    /// [`super::Broker::journal_records`].
    pub(crate) records: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub(crate) latency: LatencyRecorder,
}

impl MutHandler<Inbound> for JournalStage {
    fn on_event(&mut self, event: &mut Inbound, _: Sequence, end_of_batch: bool) {
        self.latency.note(event.published_ns);
        if let Some(record_type) = event.command.record_type() {
            encode_record(event.conn, &event.body, &mut self.scratch);
            let clock = &self.clock;
            let timestamp_ns = *self
                .batch_timestamp_ns
                .get_or_insert_with(|| clock.wall_ns());
            match self
                .journal
                .append(record_type, timestamp_ns, &self.scratch)
            {
                Ok(appended) => {
                    event.journaled = Some(Journaled {
                        sequence: RecordSeq(appended.sequence),
                        position: appended.position,
                        timestamp_ns,
                    });
                }
                // A full disk or a failed segment: nothing after this can
                // be journaled, so nothing may be acknowledged.
                Err(error) => panic!("journal append failed, the broker stops: {error}"),
            }
        }
        if end_of_batch {
            self.latency.end_batch();
            self.batch_timestamp_ns = None;
            // Relaxed: a figure for operators, ordering nothing.
            self.records.store(
                self.journal.next_sequence(),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    }

    fn on_shutdown(&mut self) {
        // Whatever the durability, a clean stop leaves everything on disk.
        if let Err(error) = self.journal.flush() {
            panic!("journal flush failed, the broker stops: {error}");
        }
    }
}

/// Under batch durability, flushes the journal once per batch before logic
/// (and so any acknowledgement) sees the batch: group commit. A stage of
/// its own, so that with a thread of its own it waits for the disk while
/// the journal stage appends the next batch.
pub(crate) struct FlushStage {
    pub(crate) flusher: Flusher,
    pub(crate) durability: Durability,
    pub(crate) unflushed: bool,
    pub(crate) latency: LatencyRecorder,
    /// How long each group commit (msync) took.
    pub(crate) group_commits: std::sync::Arc<super::latency::StageLatency>,
}

impl FlushStage {
    fn flush(&mut self) {
        let started = super::latency::monotonic_ns();
        let flushed = self.flusher.flush();
        self.group_commits
            .record(super::latency::monotonic_ns().saturating_sub(started));
        if let Err(error) = flushed {
            // Nothing unjournaled may be acknowledged, and a failed flush
            // leaves durability unknown: stop rather than guess.
            panic!("journal flush failed, the broker stops: {error}");
        }
        self.unflushed = false;
    }
}

impl Handler<Inbound> for FlushStage {
    fn on_event(&mut self, event: &Inbound, _: Sequence, end_of_batch: bool) {
        self.latency.note(event.published_ns);
        if event.journaled.is_some() {
            self.unflushed = true;
        }
        if end_of_batch {
            if self.unflushed && self.durability == Durability::Batch {
                self.flush();
            }
            self.latency.end_batch();
        }
    }

    fn on_shutdown(&mut self) {
        if self.unflushed {
            self.flush();
        }
    }
}

/// The single writer of all chat state.
pub(crate) struct LogicStage {
    pub(crate) logic: Logic,
    /// Logic's census, published once per batch for [`super::Broker::census`].
    pub(crate) census: std::sync::Arc<CensusCell>,
    pub(crate) latency: LatencyRecorder,
    /// Where password work goes: the auth workers' queue.
    pub(crate) auth: crossbeam_channel::Sender<AuthJob>,
    /// Where logic's "now" comes from (the login limits read it), once
    /// per batch.
    pub(crate) clock: Clock,
    pub(crate) batch_now_ms: Option<u64>,
}

impl LogicStage {
    /// Hands the auth jobs logic left in `outbox` to the workers.
    fn submit_auth(&mut self, outbox: &mut Outbox) {
        for job in std::mem::take(&mut outbox.auth) {
            let (job, stopping) = match self.auth.try_send(job) {
                Ok(()) => continue,
                Err(TrySendError::Full(job)) => (job, false),
                Err(TrySendError::Disconnected(job)) => (job, true),
            };
            let (conn, correlation_id) = job.asker();
            self.logic
                .check_not_started(conn, correlation_id, stopping, outbox);
        }
    }
}

impl MutHandler<Inbound> for LogicStage {
    fn on_event(&mut self, event: &mut Inbound, _: Sequence, end_of_batch: bool) {
        self.latency.note(event.published_ns);
        self.logic.apply(
            event.conn,
            &event.command,
            &event.body,
            event.journaled,
            *self
                .batch_now_ms
                .get_or_insert_with(|| self.clock.monotonic_ms()),
            &mut event.outbox,
        );
        if !event.outbox.auth.is_empty() {
            self.submit_auth(&mut event.outbox);
        }
        if end_of_batch {
            self.batch_now_ms = None;
            self.census.store(self.logic.census());
            self.latency.end_batch();
        }
    }
}

/// The latest [`Census`], readable from any thread: its user counts from
/// logic, its message counts from the fan-out stage.
#[derive(Debug, Default)]
pub(crate) struct CensusCell {
    users_registered: AtomicU64,
    users_online: AtomicU64,
    users_active: AtomicU64,
    devices_online: AtomicU64,
    messages_held: AtomicU64,
    inbox_entries: AtomicU64,
}

impl CensusCell {
    /// Stores logic's user counts.
    pub(crate) fn store(&self, census: Census) {
        // Relaxed: three gauges for people, read together only loosely.
        self.users_registered
            .store(census.users_registered, Ordering::Relaxed);
        self.users_online
            .store(census.users_online, Ordering::Relaxed);
        self.users_active
            .store(census.users_active, Ordering::Relaxed);
        self.devices_online
            .store(census.devices_online, Ordering::Relaxed);
    }

    /// Stores the inboxes' message counts.
    pub(crate) fn store_held(&self, delivery: &Delivery) {
        let (messages, entries) = delivery.held();
        self.messages_held.store(messages, Ordering::Relaxed);
        self.inbox_entries.store(entries, Ordering::Relaxed);
    }

    pub(crate) fn load(&self) -> Census {
        Census {
            users_registered: self.users_registered.load(Ordering::Relaxed),
            users_online: self.users_online.load(Ordering::Relaxed),
            users_active: self.users_active.load(Ordering::Relaxed),
            devices_online: self.devices_online.load(Ordering::Relaxed),
            messages_held: self.messages_held.load(Ordering::Relaxed),
            inbox_entries: self.inbox_entries.load(Ordering::Relaxed),
        }
    }
}

/// Carries out logic's intents for one event on the inboxes; their frames
/// go to `out`.
pub(crate) fn carry_out(
    delivery: &mut Delivery,
    conn: ConnId,
    logic_out: &Outbox,
    body: &[u8],
    journaled: Option<Journaled>,
    out: &mut Outbox,
) {
    for intent in &logic_out.intents {
        delivery.apply(conn, intent, body, journaled, out);
    }
}

/// Owns the inboxes: carries out logic's intents (fan-out on write), and
/// hands every frame to the egress, compressing large ones for devices
/// that accept it, and flushing once per batch.
pub(crate) struct FanOut {
    pub(crate) egress: Box<dyn Egress>,
    pub(crate) delivery: Delivery,
    /// Where the message counts are published, once per batch.
    pub(crate) census: std::sync::Arc<CensusCell>,
    /// The frames the intents of one event produce.
    pub(crate) out: Outbox,
    pub(crate) scratch: Vec<u8>,
    pub(crate) latency: LatencyRecorder,
}

impl FanOut {
    fn send_all(egress: &mut dyn Egress, scratch: &mut Vec<u8>, outbox: &Outbox) {
        for out in outbox.iter() {
            match out {
                Out::Frame(conn, frame) => egress.send(conn, frame),
                Out::Compressible(conn, frame) => {
                    scratch.clear();
                    compress_frame(frame, scratch);
                    egress.send(conn, scratch);
                }
                Out::Close(conn) => egress.close(conn),
            }
        }
    }
}

impl Handler<Inbound> for FanOut {
    fn on_event(&mut self, event: &Inbound, _: Sequence, end_of_batch: bool) {
        self.latency.note(event.published_ns);
        Self::send_all(&mut *self.egress, &mut self.scratch, &event.outbox);
        if !event.outbox.intents.is_empty() {
            self.out.clear();
            carry_out(
                &mut self.delivery,
                event.conn,
                &event.outbox,
                &event.body,
                event.journaled,
                &mut self.out,
            );
            Self::send_all(&mut *self.egress, &mut self.scratch, &self.out);
        }
        if end_of_batch {
            self.egress.flush();
            self.census.store_held(&self.delivery);
            self.latency.end_batch();
        }
    }

    fn on_shutdown(&mut self) {
        self.egress.flush();
    }
}

/// Projects accounts into SQLite, one transaction per batch with changes.
pub(crate) struct StoreStage {
    pub(crate) store: Store,
}

impl StoreStage {
    fn commit(&mut self) {
        // The journal is the source of truth: a failed commit is retried
        // with the next batch, and replay at the next start catches up.
        if let Err(error) = self.store.commit() {
            tracing::error!(%error, "SQLite projection commit failed; retrying with the next batch");
        }
    }
}

impl Handler<Inbound> for StoreStage {
    fn on_event(&mut self, event: &Inbound, _: Sequence, end_of_batch: bool) {
        if let Some(journaled) = event.journaled {
            self.store
                .note(journaled.sequence, &event.outbox.projections);
        }
        if end_of_batch {
            self.commit();
        }
    }

    fn on_shutdown(&mut self) {
        // Record how far the projection got even if the last batches
        // changed nothing, so the next start does not offer them again.
        if let Err(error) = self.store.commit_all() {
            tracing::error!(%error, "SQLite projection commit failed at the stop");
        }
    }
}
