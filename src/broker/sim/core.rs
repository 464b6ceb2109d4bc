//! The broker core as the simulation drives it: decode, journal, logic,
//! the inboxes and an inline auth worker, on one thread with a simulated
//! clock, reopened from its journal as `Broker::open` does.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use prost::Message as _;

use crate::broker::auth::{dummy_hash, AuthConfig, AuthJob, InlineWorker};
use crate::broker::delivery::{Delivery, DeliveryConfig};
use crate::broker::event::{
    decode_inbound, encode_record, Command, Journaled, Origin, Out, Outbox,
};
use crate::broker::ids::{ConnId, RecordSeq};
use crate::broker::logic::{Logic, LogicConfig, RULES_VERSION};
use crate::broker::recover::apply_records;
use crate::broker::stages::carry_out;
use crate::broker::RECORD_START;
use crate::codec::journal_proto::Started;
use crate::codec::{Message, FRAME_HEADER_BYTES, LENGTH_PREFIX_BYTES};
use crate::journal::{Durability, Journal, JournalConfig};

/// splitmix64: the simulation's one source of randomness, from the seed.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(super) fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// The broker core, with no threads and no sockets.
pub(super) struct Core {
    pub(super) journal: Journal,
    pub(super) logic: Logic,
    pub(super) delivery: Delivery,
    /// The auth jobs logic left, for the inline worker.
    pub(super) jobs: VecDeque<AuthJob>,
    pub(super) worker: InlineWorker,
    pub(super) clock_ns: u64,
}

pub(super) fn configs() -> (LogicConfig, DeliveryConfig) {
    let logic = LogicConfig {
        frame_size_max: 64 * 1024,
        heartbeat_interval_ms: 1000,
        heartbeat_interval_ms_max: 60_000,
        open_messaging: true,
        group_members_max: 8,
        rules_version: RULES_VERSION,
    };
    let delivery = DeliveryConfig {
        frame_size_max: 64 * 1024,
        dedup_window: 4096,
        sync_limit_max: 7,
        message_retention_ms: 0,
        rules_version: RULES_VERSION,
    };
    (logic, delivery)
}

impl Core {
    /// Opens the journal in `dir` (recovering what is there), replays it
    /// and appends a start marker: what `Broker::open` does.
    pub(super) fn open(dir: &Path, clock_ns: u64) -> Self {
        let config = JournalConfig {
            segment_size_bytes: 64 * 1024,
            durability: Durability::None,
            create_dir: true,
            ..JournalConfig::default()
        };
        let journal = Journal::open(dir.join("journal"), config).expect("the journal opens");
        let (logic_config, delivery_config) = configs();
        let mut logic = Logic::new(logic_config.clone());
        let mut delivery = Delivery::new(delivery_config.clone(), journal.reader());
        let mut cursor = journal.reader().cursor_at_start();
        apply_records(&mut cursor, None, &mut logic, &mut delivery, |_, _| {
            Ok(true)
        })
        .expect("the journal replays");
        let auth = AuthConfig::insecure_fast();
        logic.set_auth(dummy_hash(&auth), Arc::default(), 0);
        let mut core = Self {
            journal,
            logic,
            delivery,
            jobs: VecDeque::new(),
            worker: InlineWorker::new(&auth),
            clock_ns,
        };
        let started = Started {
            frame_size_max_bytes: logic_config.frame_size_max as u32,
            open_messaging: logic_config.open_messaging,
            group_members_max: logic_config.group_members_max as u32,
            dedup_window: delivery_config.dedup_window as u32,
            message_retention_ms: 0,
            rules_version: RULES_VERSION,
        };
        let body = started.encode_to_vec();
        let frames = core.apply(ConnId(0), Command::Start(Some(started)), &body);
        assert!(frames.is_empty(), "a start answers nobody");
        core
    }

    /// One event through decode, journal, logic and the inboxes, then
    /// whatever auth jobs it left; the frames and closes it made.
    pub(super) fn event(&mut self, conn: ConnId, origin: Origin, body: &[u8]) -> Vec<Out2> {
        let mut frames = self.apply(conn, decode_inbound(origin, body), body);
        while let Some(job) = self.jobs.pop_front() {
            if let Some((conn, origin, body)) = self.worker.run(job) {
                frames.extend(self.apply(conn, decode_inbound(origin, &body), &body));
            }
        }
        frames
    }

    pub(super) fn apply(&mut self, conn: ConnId, command: Command, body: &[u8]) -> Vec<Out2> {
        let journaled = match command {
            Command::Start(_) => Some(RECORD_START),
            _ => command.record_type(),
        }
        .map(|record_type| {
            let mut payload = Vec::new();
            encode_record(conn, body, &mut payload);
            self.clock_ns += 1_000_000;
            let appended = self
                .journal
                .append(record_type, self.clock_ns, &payload)
                .expect("the journal appends");
            Journaled {
                sequence: RecordSeq(appended.sequence),
                position: appended.position,
                timestamp_ns: self.clock_ns,
            }
        });
        let mut logic_out = Outbox::default();
        let now_ms = self.clock_ns / 1_000_000;
        self.logic
            .apply(conn, &command, body, journaled, now_ms, &mut logic_out);
        self.jobs.extend(logic_out.auth.drain(..));
        let mut fan_out = Outbox::default();
        carry_out(
            &mut self.delivery,
            conn,
            &logic_out,
            body,
            journaled,
            &mut fan_out,
        );
        // The fan-out stage sends logic's frames first, then its own.
        logic_out
            .iter()
            .chain(fan_out.iter())
            .map(Out2::from)
            .collect()
    }

    pub(super) fn check_invariants(&self) {
        self.logic.check_invariants();
        self.delivery.check_invariants();
    }
}

/// A frame or close the core made, decoded.
pub(super) enum Out2 {
    Frame(ConnId, u64, Message),
    Close(ConnId),
}

impl From<Out<'_>> for Out2 {
    fn from(out: Out<'_>) -> Self {
        match out {
            Out::Frame(conn, bytes) | Out::Compressible(conn, bytes) => {
                let header = &bytes[LENGTH_PREFIX_BYTES..LENGTH_PREFIX_BYTES + FRAME_HEADER_BYTES];
                let message_type = u16::from_be_bytes([header[0], header[1]]);
                let correlation_id = u64::from_be_bytes(header[4..12].try_into().unwrap());
                let payload = &bytes[LENGTH_PREFIX_BYTES + FRAME_HEADER_BYTES..];
                let message = Message::decode_parts(message_type, payload)
                    .expect("the core sends valid frames");
                Out2::Frame(conn, correlation_id, message)
            }
            Out::Close(conn) => Out2::Close(conn),
        }
    }
}
