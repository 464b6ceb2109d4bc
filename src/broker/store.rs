//! The SQLite projection: accounts, contacts and groups, for operators and
//! plain SQL.
//!
//! The store applies what logic projects in batched transactions, and each
//! transaction also records the sequence of the last journal record it
//! covers. At open, the broker replays the journal and hands the store only
//! what comes after that sequence, so catch-up after a crash is exact: no
//! account is missing and none is inserted twice.

use crate::broker::ids::RecordSeq;
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension};

use super::event::Projection;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[error("SQLite store {path}: {source}")]
pub struct StoreError {
    path: String,
    #[source]
    source: rusqlite::Error,
}

/// The projection database.
pub(crate) struct Store {
    connection: Connection,
    path: String,
    /// The journal sequence after which projections are still to apply.
    applied_until: u64,
    /// Changes queued for the next commit, with their journal sequences.
    pending: Vec<(u64, Projection)>,
    /// The newest journal sequence seen since the last commit.
    seen: Option<u64>,
    /// When the last commit was.
    written_at: Instant,
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS accounts (
        user_id       INTEGER PRIMARY KEY,
        name          TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        created_ms    INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS contacts (
        owner_id    INTEGER NOT NULL,
        contact_id  INTEGER NOT NULL,
        state       TEXT NOT NULL,
        version     INTEGER NOT NULL,
        PRIMARY KEY (owner_id, contact_id)
    );
    -- A dissolved group (its last member left) keeps its row, owner NULL.
    CREATE TABLE IF NOT EXISTS groups (
        group_id    INTEGER PRIMARY KEY,
        name        TEXT NOT NULL,
        owner_id    INTEGER
    );
    CREATE TABLE IF NOT EXISTS group_members (
        group_id    INTEGER NOT NULL,
        user_id     INTEGER NOT NULL,
        PRIMARY KEY (group_id, user_id)
    );
    CREATE TABLE IF NOT EXISTS projection (
        id                  INTEGER PRIMARY KEY CHECK (id = 1),
        applied_sequence    INTEGER NOT NULL
    );
";

/// Records without a change after which a commit records the applied
/// sequence anyway (see [`Store::commit`]).
pub(crate) const PROGRESS_RECORDS: u64 = 65_536;
/// The time after which it does so (a commit, in WAL mode, costs tens of
/// microseconds and no sync).
pub(crate) const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// A second connection to the database, for a thread other than the store
/// stage's: it learns how far the projection is durably applied.
pub(crate) struct Checkpointer {
    connection: Connection,
    path: String,
}

impl Checkpointer {
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        let display = path.display().to_string();
        let connection = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|connection| {
            connection.busy_timeout(std::time::Duration::from_millis(100))?;
            Ok(connection)
        })
        .map_err(|source| StoreError {
            path: display.clone(),
            source,
        })?;
        Ok(Self {
            connection,
            path: display,
        })
    }

    /// Journal records below the returned sequence are projected, and every
    /// commit that says so survives a power loss; `None` if a writer kept
    /// the checkpoint that makes it durable from completing (try later).
    /// Checkpoints passively: the store stage's commits never wait on it.
    pub(crate) fn durable_applied_until(&self) -> Result<Option<u64>, StoreError> {
        let fail = |source| StoreError {
            path: self.path.clone(),
            source,
        };
        let applied: Option<i64> = self
            .connection
            .query_row(
                "SELECT applied_sequence FROM projection WHERE id = 1",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(fail)?;
        // With every frame of the log in the database, SQLite has synced
        // the database file: each commit so far is durable, the one read
        // above included.
        let (busy, log, checkpointed): (i64, i64, i64) = self
            .connection
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .map_err(fail)?;
        Ok((busy == 0 && log == checkpointed).then(|| applied.map_or(0, |a| a as u64)))
    }
}

impl Store {
    /// Opens (or creates) the database at `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        let display = path.display().to_string();
        let fail = |source| StoreError {
            path: display.clone(),
            source,
        };
        let connection = Connection::open(path).map_err(fail)?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(fail)?;
        connection
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(fail)?;
        connection
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(fail)?;
        connection.execute_batch(SCHEMA).map_err(fail)?;
        let applied: Option<i64> = connection
            .query_row(
                "SELECT applied_sequence FROM projection WHERE id = 1",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(fail)?;
        Ok(Self {
            connection,
            path: display,
            // Stored as the count of records applied: sequence + 1.
            applied_until: applied.map_or(0, |a| a as u64),
            pending: Vec::new(),
            seen: None,
            written_at: Instant::now(),
        })
    }

    /// Journal records below this sequence are already projected.
    pub(crate) fn applied_until(&self) -> u64 {
        self.applied_until
    }

    /// Notes a journal record (and its projection, if any) for the next
    /// commit. Records already projected are skipped.
    pub(crate) fn note(&mut self, sequence: RecordSeq, projections: &[Projection]) {
        let RecordSeq(sequence) = sequence;
        if sequence < self.applied_until {
            return;
        }
        for projection in projections {
            self.pending.push((sequence, projection.clone()));
        }
        self.seen = Some(sequence);
    }

    /// Commits what was noted, if any change is among it: one transaction
    /// with the changes and the new applied sequence. A batch without
    /// changes commits nothing (a later commit's sequence covers it) until
    /// [`PROGRESS_RECORDS`] records or [`PROGRESS_EVERY`] went by without
    /// one: the recorded sequence then moves on alone, so that the
    /// compactor, which snapshots only what the projection has applied,
    /// does not fall behind while accounts, contacts and groups stay
    /// unchanged.
    pub(crate) fn commit(&mut self) -> Result<(), StoreError> {
        let unrecorded = self.seen.map_or(0, |seen| seen + 1 - self.applied_until);
        let due = unrecorded >= PROGRESS_RECORDS
            || (unrecorded > 0 && self.written_at.elapsed() >= PROGRESS_EVERY);
        if self.pending.is_empty() && !due {
            return Ok(());
        }
        self.write()
    }

    /// Makes every commit so far survive a power loss (with WAL and
    /// `synchronous = NORMAL` the last ones may not): a full checkpoint
    /// syncs the log and the database. Before journal records the
    /// projection came from are deleted.
    pub(crate) fn make_durable(&mut self) -> Result<(), StoreError> {
        let fail = |source| StoreError {
            path: self.path.clone(),
            source,
        };
        let (busy, _, _): (i64, i64, i64) = self
            .connection
            .query_row("PRAGMA wal_checkpoint(FULL)", [], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .map_err(fail)?;
        if busy != 0 {
            return Err(fail(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                Some("the checkpoint was blocked by another connection".into()),
            )));
        }
        Ok(())
    }

    /// Commits what was noted and records the newest sequence seen even
    /// without changes: at a clean stop, so the next start knows the
    /// projection is not behind.
    pub(crate) fn commit_all(&mut self) -> Result<(), StoreError> {
        if self.seen.is_none() {
            return Ok(());
        }
        self.write()
    }

    fn write(&mut self) -> Result<(), StoreError> {
        let seen = self.seen.expect("a record was seen");
        let fail = |source| StoreError {
            path: self.path.clone(),
            source,
        };
        let transaction = self.connection.transaction().map_err(fail)?;
        for (_, projection) in &self.pending {
            project(&transaction, projection).map_err(fail)?;
        }
        transaction
            .execute(
                "INSERT INTO projection (id, applied_sequence) VALUES (1, ?1)
                 ON CONFLICT (id) DO UPDATE SET applied_sequence = excluded.applied_sequence",
                params![(seen + 1) as i64],
            )
            .map_err(fail)?;
        transaction.commit().map_err(fail)?;
        self.applied_until = seen + 1;
        self.written_at = Instant::now();
        self.pending.clear();
        self.seen = None;
        Ok(())
    }
}

/// Writes one change into the tables (statements are prepared once per
/// connection and cached).
fn project(
    transaction: &rusqlite::Transaction<'_>,
    projection: &Projection,
) -> rusqlite::Result<()> {
    let statement = |sql| transaction.prepare_cached(sql);
    match projection {
        Projection::Account {
            user_id,
            name,
            password_hash,
            created_ms,
        } => statement(
            "INSERT INTO accounts (user_id, name, password_hash, created_ms)
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            user_id.0 as i64,
            name,
            password_hash,
            *created_ms as i64
        ]),
        Projection::Contact {
            owner,
            contact,
            state,
            version,
        } => statement(
            "INSERT INTO contacts (owner_id, contact_id, state, version)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (owner_id, contact_id)
             DO UPDATE SET state = excluded.state, version = excluded.version",
        )?
        .execute(params![
            owner.0 as i64,
            contact.0 as i64,
            state.as_str_name(),
            *version as i64
        ]),
        Projection::Group { group, name, owner } => statement(
            "INSERT INTO groups (group_id, name, owner_id) VALUES (?1, ?2, ?3)
             ON CONFLICT (group_id)
             DO UPDATE SET name = excluded.name, owner_id = excluded.owner_id",
        )?
        .execute(params![group.0 as i64, name, owner.map(|o| o.0 as i64)]),
        Projection::Member {
            group,
            user,
            member: true,
        } => statement("INSERT OR IGNORE INTO group_members (group_id, user_id) VALUES (?1, ?2)")?
            .execute(params![group.0 as i64, user.0 as i64]),
        Projection::Member {
            group,
            user,
            member: false,
        } => statement("DELETE FROM group_members WHERE group_id = ?1 AND user_id = ?2")?
            .execute(params![group.0 as i64, user.0 as i64]),
    }
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::ids::UserId;

    fn account(id: u64, name: &str) -> Projection {
        Projection::Account {
            user_id: UserId(id),
            name: name.into(),
            password_hash: "h".into(),
            created_ms: 5,
        }
    }

    fn count(path: &Path) -> i64 {
        let connection = Connection::open(path).unwrap();
        connection
            .query_row("SELECT count(*) FROM accounts", [], |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn catch_up_skips_what_was_committed() {
        let (_dir, path, mut store) = fresh();
        store.note(RecordSeq(0), &[]);
        store.note(RecordSeq(1), &[account(1, "ana")]);
        store.note(RecordSeq(2), &[]);
        store.commit().unwrap();
        store.note(RecordSeq(3), &[account(2, "bo")]);
        // Not committed: a crash here loses it from SQLite, not the journal.
        drop(store);
        assert_eq!(count(&path), 1);

        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.applied_until(), 3);
        // Replay offers everything again; only sequence 3 on is new.
        for (sequence, projection) in [(1, account(1, "ana")), (3, account(2, "bo"))] {
            store.note(RecordSeq(sequence), &[projection]);
        }
        store.commit().unwrap();
        assert_eq!(count(&path), 2);
        assert_eq!(store.applied_until(), 4);
    }

    #[test]
    fn a_long_run_without_changes_records_its_progress() {
        let (_dir, path, mut store) = fresh();
        store.note(RecordSeq(0), &[account(1, "ana")]);
        store.commit().unwrap();
        assert_eq!(store.applied_until(), 1);
        // The count decides here, not the time.
        store.written_at = far_future();
        for sequence in 1..PROGRESS_RECORDS {
            store.note(RecordSeq(sequence), &[]);
            store.commit().unwrap();
        }
        assert_eq!(store.applied_until(), 1, "not yet");
        store.note(RecordSeq(PROGRESS_RECORDS), &[]);
        store.commit().unwrap();
        assert_eq!(store.applied_until(), PROGRESS_RECORDS + 1);
        // Another connection learns it, made durable.
        let checkpointer = Checkpointer::open(&path).unwrap();
        assert_eq!(
            checkpointer.durable_applied_until().unwrap(),
            Some(PROGRESS_RECORDS + 1)
        );
    }

    /// A new database in a directory of its own (kept while the first
    /// value lives), its path, and the store on it.
    fn fresh() -> (tempfile::TempDir, std::path::PathBuf, Store) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("courier.db");
        let store = Store::open(&path).unwrap();
        (dir, path, store)
    }

    /// An instant that no test reaches: `elapsed` from it is zero.
    fn far_future() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[test]
    fn a_quiet_second_records_its_progress() {
        let (_dir, _, mut store) = fresh();
        store.written_at = far_future();
        store.note(RecordSeq(0), &[]);
        store.commit().unwrap();
        assert_eq!(store.applied_until(), 0, "not yet");
        store.written_at = Instant::now() - PROGRESS_EVERY;
        store.commit().unwrap();
        assert_eq!(store.applied_until(), 1);
    }

    #[test]
    fn a_checkpointer_sees_each_commit() {
        let (_dir, path, mut store) = fresh();
        let checkpointer = Checkpointer::open(&path).unwrap();
        assert_eq!(checkpointer.durable_applied_until().unwrap(), Some(0));
        for (sequence, name) in [(3, "ana"), (9, "bo")] {
            store.note(RecordSeq(sequence), &[account(sequence, name)]);
            store.commit().unwrap();
            assert_eq!(
                checkpointer.durable_applied_until().unwrap(),
                Some(sequence + 1)
            );
        }
    }

    #[test]
    fn a_batch_without_changes_writes_nothing_until_the_stop() {
        let (_dir, path, mut store) = fresh();
        store.written_at = far_future();
        store.note(RecordSeq(0), &[]);
        store.commit().unwrap();
        assert_eq!(store.applied_until(), 0);
        store.note(RecordSeq(1), &[]);
        store.commit_all().unwrap();
        assert_eq!(store.applied_until(), 2);
        drop(store);
        assert_eq!(Store::open(&path).unwrap().applied_until(), 2);
    }
}
