//! A hostile environment gets clear errors and nothing written past what is
//! valid.

mod util;

use std::io::Write;

use courier_journal::{format, Durability, Journal, JournalConfig, JournalError};

#[test]
fn a_missing_directory_is_made_or_refused_as_configured() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("a/b/journal");
    let refuse = JournalConfig {
        create_dir: false,
        ..util::small(Durability::Batch)
    };
    match Journal::open(&dir, refuse) {
        Err(JournalError::MissingDirectory(path)) => assert_eq!(path, dir),
        Err(other) => panic!("expected MissingDirectory, got {other}"),
        Ok(_) => panic!("opened a missing directory"),
    }
    let journal = Journal::open(&dir, util::small(Durability::Batch)).unwrap();
    assert_eq!(journal.recovery().segments, 1);
}

#[test]
fn a_file_where_the_directory_should_be_is_refused() {
    let parent = tempfile::tempdir().unwrap();
    let path = parent.path().join("journal");
    std::fs::write(&path, b"not a directory").unwrap();
    let error = Journal::open(&path, util::small(Durability::Batch))
        .err()
        .expect("refused");
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
}

#[test]
fn a_file_that_is_not_a_journal_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{:020}.segment", 0));
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&[7u8; 8192])
        .unwrap();
    match Journal::open(dir.path(), util::small(Durability::Batch)) {
        Err(JournalError::NotAJournal(named)) => assert_eq!(named, path),
        Err(other) => panic!("expected NotAJournal, got {other}"),
        Ok(_) => panic!("opened garbage as a journal"),
    }
    // Nothing was written to it.
    assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 8192]);
}

#[test]
fn a_journal_of_another_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Journal::open(dir.path(), util::small(Durability::Batch)).unwrap());
    let path = dir.path().join(format!("{:020}.segment", 0));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&(format::FORMAT_VERSION + 1).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    match Journal::open(dir.path(), util::small(Durability::Batch)) {
        Err(JournalError::UnsupportedVersion {
            found, supported, ..
        }) => {
            assert_eq!(
                (found, supported),
                (format::FORMAT_VERSION + 1, format::FORMAT_VERSION)
            );
        }
        Err(other) => panic!("expected UnsupportedVersion, got {other}"),
        Ok(_) => panic!("opened a journal of another version"),
    }
}

#[test]
fn a_record_larger_than_a_segment_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), util::small(Durability::Batch)).unwrap();
    journal.append(1, 1, b"before").unwrap();
    let end = journal.end_position();
    match journal.append(1, 2, &vec![0u8; 8192]) {
        Err(JournalError::RecordTooLarge {
            segment_size_bytes: 4096,
            ..
        }) => {}
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    assert_eq!(journal.end_position(), end);
    assert_eq!(journal.append(1, 3, b"after").unwrap().sequence, 1);
}

#[test]
fn bad_configurations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Each case: a configuration that cannot work.
    let cases = [
        JournalConfig {
            segment_size_bytes: 100,
            ..JournalConfig::default()
        },
        JournalConfig {
            segment_size_bytes: 4099,
            ..JournalConfig::default()
        },
        JournalConfig {
            segment_size_bytes: 1 << 33,
            ..JournalConfig::default()
        },
        JournalConfig {
            durability: Durability::Interval(std::time::Duration::ZERO),
            ..JournalConfig::default()
        },
    ];
    for config in cases {
        match Journal::open(dir.path(), config.clone()) {
            Err(JournalError::Config(_)) => {}
            other => panic!("{config:?} gave {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn a_half_made_segment_from_a_crash_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    drop(Journal::open(dir.path(), util::small(Durability::Batch)).unwrap());
    // Segment 7, not 1: the reopened journal starts making segment 1's file
    // in the background at once, under that very name.
    let half_made = dir.path().join(format!("{:020}.segment.tmp", 7));
    std::fs::write(&half_made, [0u8; 100]).unwrap();
    let journal = Journal::open(dir.path(), util::small(Durability::Batch)).unwrap();
    assert_eq!(journal.recovery().removed_temporaries, 1);
    assert!(!half_made.exists());
}

/// Mounts a tmpfs with `options` on `path`; false where this machine does
/// not allow it (no root, or no mount rights in this container).
#[cfg(target_os = "linux")]
fn mount_tmpfs(path: &std::path::Path, options: &str) -> bool {
    std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", options, "tmpfs"])
        .arg(path)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A full disk, on a real small tmpfs where this machine lets the test mount
/// one (root with mount rights, as in CI); elsewhere it reports why it could
/// not run and checks the error mapping on the largest file the disk refuses.
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_is_an_error_not_a_crash() {
    let mount = tempfile::tempdir().unwrap();
    let mounted = mount_tmpfs(mount.path(), "size=64k");
    let (dir, segment_size_bytes) = if mounted {
        (mount.path().to_owned(), 1 << 20)
    } else {
        eprintln!("could not mount a small tmpfs; asking for more than the disk has instead");
        (mount.path().to_owned(), (u32::MAX as u64) & !7)
    };
    let config = JournalConfig {
        segment_size_bytes,
        ..JournalConfig::default()
    };
    let outcome = Journal::open(&dir, config);
    let full = matches!(outcome, Err(JournalError::DiskFull { .. }));
    if mounted {
        let _ = std::process::Command::new("umount")
            .arg(mount.path())
            .status();
        assert!(full, "expected DiskFull, got {:?}", outcome.map(|_| ()));
    } else if !full {
        // A disk with 4 GiB free takes the segment; the test then only
        // checks that nothing half-made is left behind.
        drop(outcome);
    }
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().to_string_lossy().ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "a failed segment leaves no temporary file"
    );
}

/// A read-only directory: a read-only tmpfs where this machine lets the test
/// mount one (root ignores permission bits, so chmod cannot make one); as a
/// user without mount rights, a directory without write permission.
#[cfg(target_os = "linux")]
#[test]
fn a_read_only_directory_is_refused_clearly() {
    use std::os::unix::fs::PermissionsExt;
    let mount = tempfile::tempdir().unwrap();
    let mounted = mount_tmpfs(mount.path(), "ro,size=64k");
    let dir = mount.path().to_owned();
    if !mounted {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    let outcome = Journal::open(&dir, util::small(Durability::Batch));
    if mounted {
        let _ = std::process::Command::new("umount")
            .arg(mount.path())
            .status();
    } else {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let running_as_root_without_mount = !mounted && euid_is_root();
    if running_as_root_without_mount {
        // Root writes through 0o555 and may not mount here: nothing can make
        // the directory read-only, so there is nothing to check.
        eprintln!("running as root without mount rights: no read-only directory to test");
        return;
    }
    match outcome {
        Err(JournalError::NotWritable { path, .. }) => {
            assert!(
                path.starts_with(&dir),
                "the error names the path: {}",
                path.display()
            )
        }
        Err(other) => panic!("expected NotWritable, got {other}"),
        Ok(_) => panic!("opened a journal in a read-only directory"),
    }
}

#[cfg(target_os = "linux")]
fn euid_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

#[test]
fn a_newest_segment_whose_header_never_reached_the_disk_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), util::small(Durability::Batch)).unwrap();
    util::append_pattern(&mut journal, 0, 30);
    let next_id = journal.end_position().segment + 1;
    drop(journal);
    // What a power loss right after a roll's rename can leave behind.
    let path = dir.path().join(format!("{next_id:020}.segment"));
    std::fs::write(&path, vec![0u8; 4096]).unwrap();
    let journal = Journal::open(dir.path(), util::small(Durability::Batch)).unwrap();
    assert_eq!(journal.recovery().removed_temporaries, 1);
    assert!(!path.exists());
    assert_eq!(util::expect_pattern(&journal), 30);
}

#[test]
fn a_newest_segment_still_headed_as_the_retired_file_it_reused_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), util::small(Durability::Batch)).unwrap();
    util::append_pattern(&mut journal, 0, 80);
    let next_id = journal.end_position().segment + 1;
    assert!(next_id > 2, "segment 1 is in the middle");
    drop(journal);
    // A power loss right after a roll into a reused file can leave the old
    // segment's header and records under the new name.
    let path = dir.path().join(format!("{next_id:020}.segment"));
    std::fs::copy(dir.path().join(format!("{:020}.segment", 0)), &path).unwrap();
    let journal = Journal::open(dir.path(), util::small(Durability::Batch)).unwrap();
    assert_eq!(journal.recovery().removed_temporaries, 1);
    assert!(!path.exists());
    assert_eq!(util::expect_pattern(&journal), 80);
    drop(journal);
    // Anywhere but the newest, such a file is an error, never dropped.
    let middle = dir.path().join(format!("{:020}.segment", 1));
    std::fs::copy(dir.path().join(format!("{:020}.segment", 0)), &middle).unwrap();
    match Journal::open(dir.path(), util::small(Durability::Batch)) {
        Err(JournalError::Corrupt { segment: 1, .. }) => {}
        other => panic!(
            "expected corruption in segment 1, got {:?}",
            other.map(|_| ())
        ),
    }
}

#[test]
fn a_journal_has_one_appender_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), util::small(Durability::Batch)).unwrap();
    util::append_pattern(&mut journal, 0, 10);
    // A second appender would recover (cut) what the first is writing.
    match Journal::open(dir.path(), util::small(Durability::Batch)) {
        Err(JournalError::InUse { path, holder }) => {
            assert_eq!(path, dir.path());
            assert_eq!(holder, format!("process {}", std::process::id()));
        }
        Err(other) => panic!("expected InUse, got {other}"),
        Ok(_) => panic!("a second appender opened the journal"),
    }
    // Readers are not appenders: inspecting a live journal still works.
    let segments = courier_journal::inspect(dir.path()).unwrap();
    assert_eq!(segments.iter().map(|s| s.records).sum::<u64>(), 10);
    // Closed, the journal opens again.
    drop(journal);
    let journal = Journal::open(dir.path(), util::small(Durability::Batch)).unwrap();
    assert_eq!(util::expect_pattern(&journal), 10);
}
