//! The filesystem mounted for real (it needs `/dev/fuse` and root or
//! `fusermount3`; without them a test says so and passes, except under
//! CI, where it fails).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    mounted: Mounted,
    /// Where programs see the files.
    mnt: PathBuf,
    /// What the disk holds.
    backing: PathBuf,
}

fn mounted() -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let [backing, mnt, stash] = ["backing", "mnt", "stash"].map(|d| dir.path().join(d));
    for d in [&backing, &mnt, &stash] {
        fs::create_dir(d).unwrap();
    }
    match mount(&backing, &mnt, &stash) {
        Ok(mounted) => Some(Fixture {
            _dir: dir,
            mounted,
            mnt,
            backing,
        }),
        Err(error) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipped: cannot mount a FUSE filesystem here ({error})");
            None
        }
        Err(error) => panic!("cannot mount a FUSE filesystem under CI: {error}"),
    }
}

/// Syncs the directory `dir` (through the mount).
fn sync_dir(dir: &std::path::Path) {
    File::open(dir).unwrap().sync_all().unwrap();
}

#[test]
fn a_synced_write_survives_the_cut_and_an_unsynced_one_does_not() {
    let Some(f) = mounted() else { return };
    let mut file = File::create(f.mnt.join("log")).unwrap();
    sync_dir(&f.mnt);
    file.write_all(b"durable").unwrap();
    file.sync_data().unwrap();
    file.write_all(b" and lost").unwrap();
    file.write_at(b"D", 0).unwrap();
    drop(file);
    let report = f.mounted.cut(None);
    assert_eq!(fs::read(f.backing.join("log")).unwrap(), b"durable");
    assert_eq!(report.bytes_undone, 10);
}

#[test]
fn a_new_file_needs_its_directory_synced_and_a_removal_too() {
    let Some(f) = mounted() else { return };
    fs::write(f.backing.join("old"), b"was here").unwrap();
    let mut kept = File::create(f.mnt.join("kept")).unwrap();
    kept.write_all(b"k").unwrap();
    kept.sync_all().unwrap();
    sync_dir(&f.mnt);
    let mut lost = File::create(f.mnt.join("lost")).unwrap();
    lost.write_all(b"l").unwrap();
    // The file's data is durable, its name is not.
    lost.sync_all().unwrap();
    fs::remove_file(f.mnt.join("old")).unwrap();
    fs::create_dir(f.mnt.join("dir")).unwrap();
    assert!(!f.mnt.join("old").exists());
    f.mounted.cut(None);
    let mut names: Vec<_> = fs::read_dir(&f.backing)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["kept", "old"]);
    assert_eq!(fs::read(f.backing.join("old")).unwrap(), b"was here");
}

#[test]
fn a_rename_over_a_file_is_undone_whole_until_the_directory_is_synced() {
    let Some(f) = mounted() else { return };
    fs::write(f.backing.join("current"), b"v1").unwrap();
    fs::write(f.mnt.join("next"), b"v2").unwrap();
    File::open(f.mnt.join("next")).unwrap().sync_all().unwrap();
    sync_dir(&f.mnt);
    fs::rename(f.mnt.join("next"), f.mnt.join("current")).unwrap();
    assert_eq!(fs::read(f.mnt.join("current")).unwrap(), b"v2");
    f.mounted.cut(None);
    assert_eq!(fs::read(f.backing.join("current")).unwrap(), b"v1");
    assert_eq!(fs::read(f.backing.join("next")).unwrap(), b"v2");
}

#[test]
fn a_synced_rename_replaces_for_good() {
    let Some(f) = mounted() else { return };
    fs::write(f.backing.join("current"), b"v1").unwrap();
    fs::write(f.mnt.join("next"), b"v2").unwrap();
    File::open(f.mnt.join("next")).unwrap().sync_all().unwrap();
    fs::rename(f.mnt.join("next"), f.mnt.join("current")).unwrap();
    sync_dir(&f.mnt);
    f.mounted.cut(None);
    assert_eq!(fs::read(f.backing.join("current")).unwrap(), b"v2");
    assert!(!f.backing.join("next").exists());
}

#[test]
fn truncations_and_preallocations_are_undone_and_a_write_may_tear_at_a_sector() {
    let Some(f) = mounted() else { return };
    fs::write(f.backing.join("data"), vec![1u8; 4096]).unwrap();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(f.mnt.join("data"))
        .unwrap();
    file.set_len(100).unwrap();
    file.set_len(8192).unwrap();
    file.write_all_at(&[2u8; 2048], 1024).unwrap();
    assert_eq!(file.metadata().unwrap().len(), 8192);
    drop(file);
    let report = f.mounted.cut(Some(7));
    let data = fs::read(f.backing.join("data")).unwrap();
    assert_eq!(data.len(), 4096, "the size came back");
    // The newest write kept a whole number of its sectors, from its start.
    let kept = data[1024..3072].iter().take_while(|&&b| b == 2).count();
    assert_eq!(kept % SECTOR_BYTES as usize, 0);
    assert!(data[1024 + kept..].iter().all(|&b| b == 1));
    assert!(data[..1024].iter().all(|&b| b == 1));
    assert_eq!(report.writes_torn, 1);
}

#[test]
fn after_the_cut_nothing_is_served() {
    let Some(f) = mounted() else { return };
    let mut file = File::create(f.mnt.join("open")).unwrap();
    let state = Arc::clone(&f.mounted.state);
    lock(&state).cut(None);
    assert!(file.write_all(b"x").and_then(|_| file.sync_all()).is_err());
    assert!(fs::read_dir(&f.mnt).is_err());
    drop(file);
    f.mounted.unmount();
}
