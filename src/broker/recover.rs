//! Recovery: the state as of a new run, rebuilt from the data directory.
//!
//! [`recover`] opens the journal (cutting a torn tail) and the SQLite
//! projection, loads the newest snapshot that matches them, replays the
//! journal after it, appends the new run's start marker, writes a snapshot
//! there if replay was long, and under a message retention deletes the
//! segments nothing needs. It starts no thread: `Broker::open` wires what
//! it returns into the pipeline, and the compactor and the tests replay
//! with the same functions.

use crate::broker::ids::RecordSeq;
use std::path::Path;

use super::compactor::{self, Base, CompactorSettings};
use super::delivery::{Delivery, DeliveryConfig};
use super::event::{self, decode_record, encode_record, Command, Journaled, Outbox};
use super::logic::{Logic, LogicConfig, RULES_VERSION};
use super::snapshot;
use super::stages;
use super::store::Store;
use super::{BrokerConfig, BrokerError, ConnId, OpenReport, RECORD_START};
use crate::codec::journal_proto::Started;
use crate::journal::{Journal, JournalConfig};

/// What [`recover`] rebuilt, ready to be wired into the pipeline.
pub(crate) struct Recovered {
    pub(crate) journal: Journal,
    pub(crate) store: Store,
    pub(crate) logic: Logic,
    pub(crate) delivery: Delivery,
    pub(crate) report: OpenReport,
    /// The compactor's settings and the snapshot it starts from, when it
    /// runs (snapshots on, under a message retention).
    pub(crate) compactor: Option<(CompactorSettings, Option<Base>)>,
}

/// The configurations of logic and the inboxes for a new run.
pub(crate) fn state_configs(config: &BrokerConfig) -> (LogicConfig, DeliveryConfig) {
    let logic = LogicConfig {
        frame_size_max: config.frame_size_max_bytes,
        heartbeat_interval_ms: config.heartbeat_interval_ms,
        heartbeat_interval_ms_max: config.heartbeat_interval_ms_max,
        open_messaging: config.open_messaging,
        group_members_max: config.group_members_max,
        rules_version: RULES_VERSION,
    };
    let delivery = DeliveryConfig {
        frame_size_max: config.frame_size_max_bytes,
        dedup_window: config.dedup_window,
        sync_limit_max: config.sync_limit_max,
        message_retention_ms: config.message_retention_s * 1000,
        rules_version: RULES_VERSION,
    };
    (logic, delivery)
}

/// Rebuilds the state from `config.data_dir` (see the module docs).
pub(crate) fn recover(config: &BrokerConfig) -> Result<Recovered, BrokerError> {
    make_data_dir(&config.data_dir)?;
    let journal_config = JournalConfig {
        segment_size_bytes: config.segment_size_mb << 20,
        durability: config.journal_durability(),
        create_dir: true,
        recycled_segments_max: config.segments_kept_for_reuse,
        ..JournalConfig::default()
    };
    let mut journal = Journal::open(config.data_dir.join("journal"), journal_config)?;
    let mut store = Store::open(&config.data_dir.join("courier.db"))?;
    let (logic_config, delivery_config) = state_configs(config);
    let store_behind = journal
        .next_sequence()
        .saturating_sub(store.applied_until());
    let snapshots_dir = config.data_dir.join("snapshots");
    let loaded = if config.snapshots {
        load_snapshot(
            &snapshots_dir,
            &journal,
            &store,
            &logic_config,
            &delivery_config,
        )
    } else {
        None
    };
    check_history(&journal, &store, &snapshots_dir, loaded.is_some())?;
    let (mut logic, mut delivery, snapshot_loaded) = match loaded {
        Some((sequence, logic, delivery)) => (logic, delivery, Some(sequence)),
        None => (
            Logic::new(logic_config),
            Delivery::new(delivery_config, journal.reader()),
            None,
        ),
    };
    let records_replayed = replay(
        &journal,
        snapshot_loaded,
        &mut logic,
        &mut delivery,
        &mut store,
    )?;
    let start = start_run(config, &mut journal, &mut logic, &mut delivery, &mut store)?;
    let snapshot_written = (config.snapshots && records_replayed >= config.snapshot_min_records)
        .then(|| {
            // Not ahead of what SQLite has made durable: after a power cut
            // SQLite would be behind the snapshot, and the next start could
            // not use it (it would replay the whole journal instead).
            match store.make_durable() {
                Ok(()) => write_snapshot(&snapshots_dir, start, &logic, &delivery),
                Err(error) => {
                    tracing::warn!(%error, "no snapshot: SQLite cannot be made durable");
                    None
                }
            }
        })
        .flatten();
    // The newest snapshot now on disk: the one written, else the one loaded.
    let snapshot_on_disk = match (snapshot_written, snapshot_loaded) {
        (Some(sequence), _) => Some((sequence, start.position.segment)),
        (None, Some(sequence)) => Some((
            sequence,
            journal
                .reader()
                .cursor_at_sequence(sequence)?
                .position()
                .segment,
        )),
        (None, None) => None,
    };
    let segments_deleted = match snapshot_on_disk {
        Some((_, segment)) if config.message_retention_s > 0 => {
            delete_unneeded_segments(&mut journal, &mut store, &delivery, segment)?
        }
        _ => 0,
    };
    let compactor = compactor_plan(config, &snapshots_dir, snapshot_on_disk, &delivery);
    let report = OpenReport {
        snapshot_loaded,
        records_replayed,
        snapshot_written,
        users: logic.user_count(),
        torn_bytes_truncated: journal.recovery().truncated_bytes,
        store_records_caught_up: store_behind,
        segments_deleted,
    };
    Ok(Recovered {
        journal,
        store,
        logic,
        delivery,
        report,
        compactor,
    })
}

/// Makes the data directory, saying so plainly if a file is in the way
/// (which would otherwise read as "File exists").
fn make_data_dir(path: &Path) -> Result<(), BrokerError> {
    let in_the_way = std::fs::metadata(path).is_ok_and(|m| !m.is_dir());
    let made = if in_the_way {
        Err(std::io::ErrorKind::NotADirectory.into())
    } else {
        crate::journal::create_dir_durably(path)
    };
    made.map_err(|error| BrokerError::DataDir {
        path: path.to_path_buf(),
        error,
    })
}

/// Appends and applies the new run's start marker: replay of later runs
/// drops this run's predecessors' connections there, so connection ids
/// never collide across runs, and applies this run's settings to the
/// records after it.
fn start_run(
    config: &BrokerConfig,
    journal: &mut Journal,
    logic: &mut Logic,
    delivery: &mut Delivery,
    store: &mut Store,
) -> Result<Journaled, BrokerError> {
    let run_settings = Started {
        frame_size_max_bytes: config.frame_size_max_bytes as u32,
        open_messaging: config.open_messaging,
        group_members_max: config.group_members_max as u32,
        dedup_window: config.dedup_window as u32,
        message_retention_ms: config.message_retention_s * 1000,
        rules_version: RULES_VERSION,
    };
    let run_settings_bytes = prost::Message::encode_to_vec(&run_settings);
    let mut payload = Vec::new();
    encode_record(ConnId(0), &run_settings_bytes, &mut payload);
    let timestamp_ns = config.clock.wall_ns();
    let start = journal.append(RECORD_START, timestamp_ns, &payload)?;
    journal.flush()?;
    let journaled = Journaled {
        sequence: RecordSeq(start.sequence),
        position: start.position,
        timestamp_ns,
    };
    let mut started = Outbox::default();
    let command = Command::Start(Some(run_settings));
    logic.apply(
        ConnId(0),
        &command,
        &run_settings_bytes,
        Some(journaled),
        0,
        &mut started,
    );
    stages::carry_out(
        delivery,
        ConnId(0),
        &started,
        &run_settings_bytes,
        Some(journaled),
        &mut Outbox::default(),
    );
    store.note(RecordSeq(start.sequence), &[]);
    store.commit_all()?;
    Ok(journaled)
}

/// Writes a snapshot at the start marker; its sequence, or `None` (with a
/// warning) if it could not be written: a snapshot only saves time at the
/// next start, and failing to write one is no reason to refuse to serve.
fn write_snapshot(dir: &Path, start: Journaled, logic: &Logic, delivery: &Delivery) -> Option<u64> {
    let point = snapshot::SnapshotPoint {
        sequence: start.sequence.0,
        timestamp_ns: start.timestamp_ns,
    };
    let encode = |body: &mut snapshot::Encoder<_>| {
        logic.encode(body);
        delivery.encode(body);
    };
    match snapshot::write(dir, point, encode) {
        Ok(_) => Some(start.sequence.0),
        Err(error) => {
            tracing::warn!(%error, dir = %dir.display(), "cannot write a snapshot");
            None
        }
    }
}

/// The compactor's settings and starting point, when it runs: snapshots
/// on, under a message retention, taken every some segments.
fn compactor_plan(
    config: &BrokerConfig,
    snapshots_dir: &Path,
    snapshot_on_disk: Option<(u64, u64)>,
    delivery: &Delivery,
) -> Option<(CompactorSettings, Option<Base>)> {
    if !config.snapshots || config.message_retention_s == 0 || config.snapshot_every_segments == 0 {
        return None;
    }
    let base = snapshot_on_disk.map(|(sequence, segment)| Base {
        sequence,
        segment,
        size_bytes: snapshot::list(snapshots_dir)
            .ok()
            .and_then(|found| found.into_iter().next())
            .and_then(|(_, path)| std::fs::metadata(path).ok())
            .map_or(0, |m| m.len()),
        // What the start deleted up to: this state holds the same
        // messages as that snapshot's, or fewer.
        needed: compactor::needed_from(delivery, segment),
        taken: std::time::Instant::now(),
    });
    let (logic_config, delivery_config) = state_configs(config);
    let settings = CompactorSettings {
        snapshots_dir: snapshots_dir.to_path_buf(),
        database: config.data_dir.join("courier.db"),
        logic_config,
        delivery_config,
        every_segments: config.snapshot_every_segments,
        segment_size_bytes: config.segment_size_mb << 20,
    };
    Some((settings, base))
}

/// Deletes the journal segments before both `snapshot_segment` (where the
/// snapshot stands in for the records) and the oldest message held (which
/// Sync reads its body from); returns how many. The SQLite projection is
/// made durable first: it, too, stands in for the deleted records.
fn delete_unneeded_segments(
    journal: &mut Journal,
    store: &mut Store,
    delivery: &Delivery,
    snapshot_segment: u64,
) -> Result<usize, BrokerError> {
    let needed = compactor::needed_from(delivery, snapshot_segment);
    store.make_durable()?;
    Ok(journal.delete_before(needed)?.len())
}

/// Refuses to start when the journal no longer begins at its first record
/// (message retention deleted old segments) and what stands in for those
/// records is missing: the SQLite projection must be past them, and the
/// state must come from a snapshot. Replaying the rest alone would build
/// state without the accounts, contacts and groups made before it.
fn check_history(
    journal: &Journal,
    store: &Store,
    snapshots_dir: &std::path::Path,
    snapshot_loaded: bool,
) -> Result<(), BrokerError> {
    let first = journal.first_sequence();
    if first == 0 {
        return Ok(());
    }
    let journal_dir = journal.dir().display();
    if store.applied_until() < first {
        return Err(BrokerError::History(format!(
            "the journal in {journal_dir} starts at record {first} (message retention deleted \
             the segments before it), but the SQLite projection has applied only the records \
             before {}: restore the data directory's courier.db, or start with an empty data \
             directory",
            store.applied_until()
        )));
    }
    if !snapshot_loaded {
        return Err(BrokerError::History(format!(
            "the journal in {journal_dir} starts at record {first} (message retention deleted \
             the segments before it), and no usable snapshot is in {} to stand in for them \
             (see the warnings above): restore the snapshot, or start with an empty data \
             directory",
            snapshots_dir.display()
        )));
    }
    Ok(())
}

/// The newest snapshot in `dir` that matches the journal and the store:
/// its record is in the journal, with the same time, and the SQLite
/// projection is past it. One that does not is skipped with a warning.
fn load_snapshot(
    dir: &std::path::Path,
    journal: &Journal,
    store: &Store,
    logic_config: &LogicConfig,
    delivery_config: &DeliveryConfig,
) -> Option<(u64, Logic, Delivery)> {
    let candidates = match snapshot::list(dir) {
        Ok(candidates) => candidates,
        Err(error) => {
            tracing::warn!(%error, dir = %dir.display(), "cannot list snapshots; replaying the whole journal");
            return None;
        }
    };
    for (_, path) in candidates {
        let loaded = read_snapshot(
            &path,
            &journal.reader(),
            logic_config,
            delivery_config,
            |point| check_snapshot_point(journal, store, point),
        );
        match loaded {
            Ok((point, logic, delivery)) => return Some((point.sequence, logic, delivery)),
            Err(error) => tracing::warn!(%error, path = %path.display(), "snapshot skipped"),
        }
    }
    None
}

/// Reads the state in the snapshot at `path`, once `check` accepts its
/// point.
pub(super) fn read_snapshot(
    path: &std::path::Path,
    reader: &crate::journal::JournalReader,
    logic_config: &LogicConfig,
    delivery_config: &DeliveryConfig,
    check: impl FnOnce(snapshot::SnapshotPoint) -> Result<(), snapshot::SnapshotError>,
) -> Result<(snapshot::SnapshotPoint, Logic, Delivery), snapshot::SnapshotError> {
    let (point, mut input) = snapshot::open(path)?;
    check(point)?;
    let logic = Logic::decode(logic_config.clone(), &mut input)?;
    let delivery = Delivery::decode(delivery_config.clone(), reader.clone(), &mut input)?;
    input.finish()?;
    Ok((point, logic, delivery))
}

fn check_snapshot_point(
    journal: &Journal,
    store: &Store,
    point: snapshot::SnapshotPoint,
) -> Result<(), snapshot::SnapshotError> {
    let fail = |reason: String| snapshot::SnapshotError(reason);
    if point.sequence >= journal.next_sequence() {
        return Err(fail(format!(
            "it is at journal sequence {}, past the journal's end",
            point.sequence
        )));
    }
    if store.applied_until() <= point.sequence {
        return Err(fail("the SQLite projection is behind it".into()));
    }
    let record = journal
        .reader()
        .cursor_at_sequence(point.sequence)
        .and_then(|mut cursor| cursor.next())
        .map_err(|e| fail(format!("its journal record: {e}")))?
        .ok_or_else(|| fail("its journal record is missing".into()))?;
    if record.sequence() != point.sequence || record.timestamp_ns() != point.timestamp_ns {
        return Err(fail(format!(
            "journal record {} is not the record it was taken at",
            point.sequence
        )));
    }
    Ok(())
}

/// Applies the journal records after `after` (all of them for `None`) to
/// the state (logic, then the inboxes, as the stages do), and hands the
/// store what it has not projected yet. Returns how many were replayed.
pub(super) fn replay(
    journal: &Journal,
    after: Option<u64>,
    logic: &mut Logic,
    delivery: &mut Delivery,
    store: &mut Store,
) -> Result<u64, BrokerError> {
    let mut cursor = cursor_after(&journal.reader(), after)?;
    let mut count = 0u64;
    apply_records(
        &mut cursor,
        None,
        logic,
        delivery,
        |sequence, projections| {
            store.note(RecordSeq(sequence), projections);
            count += 1;
            if count.is_multiple_of(4096) {
                store.commit()?;
            }
            Ok(true)
        },
    )?;
    store.commit()?;
    Ok(count)
}

/// A cursor at the record after `after` (at the first record for `None`).
pub(super) fn cursor_after(
    reader: &crate::journal::JournalReader,
    after: Option<u64>,
) -> Result<crate::journal::Cursor, BrokerError> {
    Ok(match after {
        Some(sequence) => {
            let mut cursor = reader.cursor_at_sequence(sequence)?;
            match cursor.next()? {
                Some(record) if record.sequence() == sequence => {}
                _ => {
                    return Err(BrokerError::History(format!(
                        "journal record {sequence}, which a snapshot was taken at, is missing"
                    )))
                }
            }
            cursor
        }
        None => reader.cursor_at_start(),
    })
}

/// Applies the records from `cursor`, up to and including `until` (to the
/// journal's end for `None`), to the state, as the stages do; after each
/// one, `each(sequence, projections)` says whether to go on.
pub(super) fn apply_records(
    cursor: &mut crate::journal::Cursor,
    until: Option<u64>,
    logic: &mut Logic,
    delivery: &mut Delivery,
    mut each: impl FnMut(u64, &[event::Projection]) -> Result<bool, BrokerError>,
) -> Result<(), BrokerError> {
    // Replay keeps what the stages would change, not what they would send.
    let mut scratch = Outbox::muted();
    let mut discarded = Outbox::muted();
    while let Some(record) = cursor.next()? {
        let (conn, command) =
            decode_record(record.sequence(), record.record_type(), record.payload())?;
        let journaled = Journaled {
            sequence: RecordSeq(record.sequence()),
            position: record.position(),
            timestamp_ns: record.timestamp_ns(),
        };
        scratch.clear();
        let body = event::record_body(record.payload());
        logic.apply(conn, &command, body, Some(journaled), 0, &mut scratch);
        discarded.clear();
        stages::carry_out(
            delivery,
            conn,
            &scratch,
            body,
            Some(journaled),
            &mut discarded,
        );
        if !each(record.sequence(), &scratch.projections)?
            || until.is_some_and(|until| record.sequence() >= until)
        {
            break;
        }
    }
    Ok(())
}
