//! The errors the journal returns. Each names the file, segment or offset at
//! fault, so an operator can act on it.

use std::path::PathBuf;

use thiserror::Error;

/// What went wrong with a journal operation.
#[derive(Debug, Error)]
pub enum JournalError {
    /// The journal directory does not exist and the configuration says not to
    /// create it.
    #[error("journal directory {0} does not exist")]
    MissingDirectory(PathBuf),
    /// The journal directory or a file in it cannot be written.
    #[error("journal path {path} is not writable: {source}")]
    NotWritable {
        /// The path.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// No space left for a new segment. Nothing was written past the last
    /// valid record.
    #[error("no space left on the device for journal segment {path} ({bytes} bytes)")]
    DiskFull {
        /// The segment that could not be made.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// Another I/O failure.
    #[error("journal I/O on {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A file named like a segment that is not one.
    #[error("{0} is not a journal segment (wrong magic)")]
    NotAJournal(PathBuf),
    /// A segment written by another format version.
    #[error("{path} is journal format version {found}; this build reads version {supported}")]
    UnsupportedVersion {
        /// The segment.
        path: PathBuf,
        /// Its version.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// Damage that is not a torn tail: a record in the middle of the log, a
    /// segment header, or a missing segment.
    #[error("journal corrupt in segment {segment} at offset {offset}: {reason}")]
    Corrupt {
        /// The segment's id.
        segment: u64,
        /// The byte offset in the segment.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
    /// A record larger than a segment can hold.
    #[error("a record of {length} bytes does not fit a segment of {segment_size_bytes} bytes")]
    RecordTooLarge {
        /// The record's size, header included.
        length: u64,
        /// The configured segment size.
        segment_size_bytes: u64,
    },
    /// The position names no record: before the retained log, past its end,
    /// or not the start of a record.
    #[error("no record at segment {segment} offset {offset}: {reason}")]
    NoRecord {
        /// The segment's id.
        segment: u64,
        /// The byte offset.
        offset: u64,
        /// Why.
        reason: &'static str,
    },
    /// Another process (or another `Journal` in this one) has the journal
    /// open for appending: a journal has one appender.
    #[error("journal directory {path} is in use by {holder}; a journal has one appender")]
    InUse {
        /// The journal directory.
        path: PathBuf,
        /// Who holds it, as its lock file says ("process 1234").
        holder: String,
    },
    /// The configuration cannot work.
    #[error("invalid journal configuration: {0}")]
    Config(String),
}

impl JournalError {
    /// Classifies an I/O error on `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        match source.kind() {
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                JournalError::NotWritable { path, source }
            }
            _ => JournalError::Io { path, source },
        }
    }
}
