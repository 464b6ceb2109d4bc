//! What a power cut undoes: changes to a file's bytes and size, and
//! changes to the names in directories.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{CutReport, SECTOR_BYTES};

/// A change to a file, and what undoes it.
#[derive(Debug)]
pub(crate) enum FileUndo {
    /// `new_len` bytes were written at `offset` over `old` (shorter where
    /// the file ended): undone by writing `old` back.
    Bytes {
        offset: u64,
        old: Vec<u8>,
        new_len: usize,
    },
    /// The file's size changed from this one.
    Size(u64),
}

/// A change to a directory's names not yet durable.
#[derive(Debug)]
pub(crate) struct NameOp {
    /// The directories whose fsync it still waits for.
    pub(crate) dirs: Vec<PathBuf>,
    pub(crate) undo: NameUndo,
}

impl NameOp {
    pub(crate) fn new(mut dirs: Vec<PathBuf>, undo: NameUndo) -> Self {
        dirs.dedup();
        Self { dirs, undo }
    }
}

/// What undoes a change to names.
#[derive(Debug)]
pub(crate) enum NameUndo {
    /// A file or directory was made at this path.
    Created(PathBuf),
    /// What was at `path` was removed (it waits at `stash`).
    Removed { path: PathBuf, stash: PathBuf },
    /// `from` was renamed to `to`, replacing what now waits at `replaced`.
    Renamed {
        from: PathBuf,
        to: PathBuf,
        replaced: Option<PathBuf>,
    },
}

impl NameUndo {
    /// The name the change made (a rename's new name).
    pub(crate) fn name(&self) -> &Path {
        match self {
            NameUndo::Created(path) | NameUndo::Removed { path, .. } => path,
            NameUndo::Renamed { to, .. } => to,
        }
    }

    /// The change is durable: what waited in the stash goes.
    pub(crate) fn durable(self) {
        let stashed = match self {
            NameUndo::Removed { stash, .. } => Some(stash),
            NameUndo::Renamed { replaced, .. } => replaced,
            NameUndo::Created(_) => None,
        };
        if let Some(stash) = stashed {
            let _ = remove_any(&stash);
        }
    }

    /// The power was cut before the change was durable: undo it. A name
    /// a later change (undone already, or durable) moved is left as it is.
    pub(crate) fn revert(self) {
        match self {
            NameUndo::Created(path) => {
                let _ = remove_any(&path);
            }
            NameUndo::Removed { path, stash } => {
                let _ = fs::rename(stash, path);
            }
            NameUndo::Renamed { from, to, replaced } => {
                if fs::rename(&to, &from).is_ok() {
                    if let Some(replaced) = replaced {
                        let _ = fs::rename(replaced, &to);
                    }
                }
            }
        }
    }
}

fn remove_any(path: &Path) -> io::Result<()> {
    if fs::symlink_metadata(path)?.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

/// The bytes of `file` (of `length` bytes) that a write of `len` bytes at
/// `offset` overwrites.
pub(crate) fn old_bytes(file: &File, offset: u64, len: usize, length: u64) -> io::Result<Vec<u8>> {
    let end = (offset + len as u64).min(length);
    let mut old = vec![0; end.saturating_sub(offset) as usize];
    file.read_exact_at(&mut old, offset)?;
    Ok(old)
}

/// Undoes `changes` (oldest first) to the file at `path`, newest first.
/// With `tear_at`, the newest write is torn instead: a random number of
/// its whole sectors (from its start) stays, the rest is undone.
pub(crate) fn revert_file(
    path: &Path,
    changes: Vec<FileUndo>,
    tear_at: Option<u64>,
    report: &mut CutReport,
) {
    let Ok(file) = OpenOptions::new().write(true).open(path) else {
        return;
    };
    let mut tear_at = tear_at;
    // Where a torn write's kept part ends: the size it grew the file to
    // stays up to there.
    let mut torn_end = 0;
    for change in changes.into_iter().rev() {
        report.file_changes_undone += 1;
        match change {
            FileUndo::Size(size) => {
                let _ = file.set_len(size.max(std::mem::take(&mut torn_end)));
            }
            FileUndo::Bytes {
                offset,
                old,
                new_len,
            } => {
                report.bytes_undone += new_len as u64;
                // Only the newest write may be torn: the disk wrote the
                // start of it, in whole sectors, and lost the rest.
                let kept = match tear_at.take() {
                    Some(random) if new_len as u64 > SECTOR_BYTES => {
                        report.writes_torn += 1;
                        let sectors = new_len as u64 / SECTOR_BYTES;
                        (random % (sectors + 1) * SECTOR_BYTES) as usize
                    }
                    _ => 0,
                };
                if kept < old.len() {
                    let _ = file.write_all_at(&old[kept..], offset + kept as u64);
                }
                torn_end = if kept > 0 { offset + kept as u64 } else { 0 };
            }
        }
    }
}

/// The next number of a splitmix64 sequence.
pub(crate) fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
