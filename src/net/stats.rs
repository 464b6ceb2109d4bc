//! The network layer's counters, for operators: what `courier serve` logs
//! every `stats_interval_s`, and what [`super::ServerHandle::stats`]
//! returns to an embedding program.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::broker::{BrokerWatch, Census};

/// Counters shared by the I/O threads. Each thread adds its [`Tally`] once
/// per loop pass, so a counter costs no atomic operation per frame.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    connections_accepted: AtomicU64,
    connections_refused: AtomicU64,
    connections_closed: AtomicU64,
    closed_slow_reader: AtomicU64,
    closed_heartbeat_timeout: AtomicU64,
    closed_bad_framing: AtomicU64,
    reads_paused: AtomicU64,
    frames_in: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

/// One I/O thread's counts since it last added them to [`Counters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) connections_accepted: u64,
    pub(crate) connections_refused: u64,
    pub(crate) connections_closed: u64,
    pub(crate) closed_slow_reader: u64,
    pub(crate) closed_heartbeat_timeout: u64,
    pub(crate) closed_bad_framing: u64,
    pub(crate) reads_paused: u64,
    pub(crate) frames_in: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
}

impl Tally {
    /// Adds the counts to `counters` (Relaxed: they order nothing) and
    /// starts again from zero.
    pub(crate) fn flush(&mut self, counters: &Counters) {
        if *self == Tally::default() {
            return;
        }
        let pairs = [
            (&counters.connections_accepted, self.connections_accepted),
            (&counters.connections_refused, self.connections_refused),
            (&counters.connections_closed, self.connections_closed),
            (&counters.closed_slow_reader, self.closed_slow_reader),
            (
                &counters.closed_heartbeat_timeout,
                self.closed_heartbeat_timeout,
            ),
            (&counters.closed_bad_framing, self.closed_bad_framing),
            (&counters.reads_paused, self.reads_paused),
            (&counters.frames_in, self.frames_in),
            (&counters.bytes_in, self.bytes_in),
            (&counters.bytes_out, self.bytes_out),
        ];
        for (counter, count) in pairs {
            if count != 0 {
                counter.fetch_add(count, Ordering::Relaxed);
            }
        }
        *self = Tally::default();
    }
}

/// A reading of the server's counters, each since the server started.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ServerStats {
    /// Connections open now.
    pub connections_open: u64,
    /// Connections accepted.
    pub connections_accepted: u64,
    /// Connections refused at `connections_max`.
    pub connections_refused: u64,
    /// Connections closed because their unsent output passed the cap.
    pub closed_slow_reader: u64,
    /// Connections closed because nothing arrived for the heartbeat timeout.
    pub closed_heartbeat_timeout: u64,
    /// Connections closed for bytes that are not framing.
    pub closed_bad_framing: u64,
    /// Times a connection's reading was paused because it sent frames
    /// faster than `frames_per_second_max`.
    pub reads_paused: u64,
    /// Frames read from clients and handed to the broker.
    pub frames_in: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// Journal records written (the next journal sequence).
    pub journal_records: u64,
    /// Registered accounts.
    pub users_registered: u64,
    /// Users with at least one device logged in.
    pub users_online: u64,
    /// Users who sent anything (a ping included) in the last minute.
    pub users_active: u64,
    /// Devices logged in (from login to logout or the connection's close).
    pub devices_online: u64,
    /// Messages held in memory (see `message_retention_s`).
    pub messages_held: u64,
    /// Inbox entries held in memory.
    pub inbox_entries: u64,
    /// Bytes of the journal's files (0 if they could not be listed).
    pub journal_bytes: u64,
    /// Bytes free on the data directory's file system (0 if unknown).
    pub disk_free_bytes: u64,
    /// Snapshots taken while serving (under a message retention).
    pub snapshots_taken: u64,
    /// Journal segments deleted under a message retention, at the start
    /// and while serving.
    pub journal_segments_deleted: u64,
    /// Password logins that failed (wrong password, or no such user).
    pub logins_failed: u64,
    /// Logins refused at once: the account name failed too often lately.
    pub logins_refused_account: u64,
    /// Logins refused at once: the client address failed too often lately.
    pub logins_refused_address: u64,
    /// Logins and registrations refused at once: the address had as many
    /// password checks under way as it may.
    pub logins_refused_busy: u64,
    /// Log lines that could not be written (their reader gone), since the
    /// process started.
    pub log_lines_dropped: u64,
}

impl Counters {
    /// Reads the counters, and the broker's figures through `broker`.
    pub(crate) fn read_with(&self, broker: &BrokerWatch) -> ServerStats {
        let mut stats = self.read(broker.journal_records(), broker.census());
        (stats.snapshots_taken, stats.journal_segments_deleted) = broker.compaction();
        let logins = broker.logins();
        stats.logins_failed = logins.failed;
        stats.logins_refused_account = logins.refused_account;
        stats.logins_refused_address = logins.refused_address;
        stats.logins_refused_busy = logins.refused_busy;
        match broker.disk_usage() {
            Ok(disk) => {
                stats.journal_bytes = disk.journal_bytes;
                stats.disk_free_bytes = disk.free_bytes;
            }
            Err(error) => tracing::warn!(%error, "cannot read the data directory's disk usage"),
        }
        stats
    }

    /// Reads the counters; `journal_records` and the census come from the
    /// broker.
    pub(crate) fn read(&self, journal_records: u64, census: Census) -> ServerStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let accepted = get(&self.connections_accepted);
        ServerStats {
            connections_open: accepted.saturating_sub(get(&self.connections_closed)),
            connections_accepted: accepted,
            connections_refused: get(&self.connections_refused),
            closed_slow_reader: get(&self.closed_slow_reader),
            closed_heartbeat_timeout: get(&self.closed_heartbeat_timeout),
            closed_bad_framing: get(&self.closed_bad_framing),
            reads_paused: get(&self.reads_paused),
            frames_in: get(&self.frames_in),
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
            journal_records,
            users_registered: census.users_registered,
            users_online: census.users_online,
            users_active: census.users_active,
            devices_online: census.devices_online,
            messages_held: census.messages_held,
            inbox_entries: census.inbox_entries,
            journal_bytes: 0,
            disk_free_bytes: 0,
            snapshots_taken: 0,
            journal_segments_deleted: 0,
            logins_failed: 0,
            logins_refused_account: 0,
            logins_refused_address: 0,
            logins_refused_busy: 0,
            log_lines_dropped: super::log_lines_dropped(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_add_up_and_start_again() {
        let counters = Counters::default();
        let mut tally = Tally {
            connections_accepted: 3,
            connections_closed: 1,
            frames_in: 10,
            bytes_out: 7,
            ..Tally::default()
        };
        tally.flush(&counters);
        assert_eq!(tally, Tally::default());
        tally.frames_in = 5;
        tally.flush(&counters);
        let stats = counters.read(42, Census::default());
        assert_eq!(
            (
                stats.connections_open,
                stats.frames_in,
                stats.bytes_out,
                stats.journal_records
            ),
            (2, 15, 7, 42)
        );
    }
}
