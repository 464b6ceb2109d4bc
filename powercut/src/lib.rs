//! A filesystem that forgets what was never made durable: courier's
//! power-loss harness, in the spirit of Jepsen's LazyFS.
//!
//! [`mount`] serves a directory (the backing directory) at a mount point
//! through FUSE. Every change passes straight through to the backing
//! directory, and is also remembered as not yet durable until what POSIX
//! says makes it durable:
//!
//! - a write, a truncation or a preallocation of a file, until an `fsync`
//!   or `fdatasync` of that file (an `msync` of a mapping reaches the
//!   filesystem as one, after the kernel writes the dirty pages back);
//! - a file or directory created, removed or renamed, until an `fsync` of
//!   the directory holding the name (both directories, for a rename).
//!
//! [`Mounted::cut`] is the power cut: the filesystem stops answering (every
//! later request fails with `EIO`), every change not yet durable is undone
//! in the backing directory, newest first (the newest write of a file
//! optionally torn at a 512-byte sector boundary instead), and the
//! filesystem is unmounted. What is left in the backing directory is what a
//! disk would hold after the power came back.
//!
//! The model is the strict one: a real filesystem often keeps more (ext4
//! commits metadata every few seconds), never less. A program that
//! survives this model survives the disk's.
//!
//! Mounting needs `/dev/fuse` and either root or the `fusermount3` helper
//! (Debian's `fuse3` package).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

mod undo;

use undo::{FileUndo, NameOp, NameUndo};

/// Attributes are not cached by the kernel: sizes change under mappings.
const TTL: Duration = Duration::ZERO;
/// The sector a torn write is cut at.
pub const SECTOR_BYTES: u64 = 512;

/// A mounted filesystem.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    state: Arc<Mutex<State>>,
}

/// What a power cut undid.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CutReport {
    /// Writes, truncations and preallocations undone.
    pub file_changes_undone: u64,
    /// Bytes those writes had written.
    pub bytes_undone: u64,
    /// Files whose newest write was torn rather than undone whole.
    pub writes_torn: u64,
    /// Names created, removed or renamed that were undone.
    pub names_undone: u64,
    /// Those names, as they were undone (a rename by its new name).
    pub undone_names: Vec<PathBuf>,
}

/// Counts of what the filesystem saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub writes: u64,
    pub file_syncs: u64,
    pub directory_syncs: u64,
}

/// Serves `backing` at `mountpoint` (both existing directories); `stash`
/// is an empty directory outside both, where removed and replaced files
/// wait until their removal is durable.
pub fn mount(backing: &Path, mountpoint: &Path, stash: &Path) -> io::Result<Mounted> {
    let state = Arc::new(Mutex::new(State::new(
        fs::canonicalize(backing)?,
        fs::canonicalize(stash)?,
    )));
    let filesystem = PowerCutFs {
        state: Arc::clone(&state),
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName("courier-powercut".into()),
        MountOption::Subtype("powercut".into()),
        MountOption::DefaultPermissions,
    ];
    let session = fuser::Session::new(filesystem, mountpoint, &config)?.spawn()?;
    Ok(Mounted {
        session: Some(session),
        state,
    })
}

impl Mounted {
    /// Cuts the power: no request is answered any more, everything not
    /// durable is undone in the backing directory (with `tear`, a seed:
    /// each file's newest write torn at a sector boundary it picks), and
    /// the filesystem is unmounted. Whatever still has a file open on it
    /// gets errors from now on.
    pub fn cut(mut self, tear: Option<u64>) -> CutReport {
        let report = lock(&self.state).cut(tear);
        // Unmounts (lazily: a file still open keeps nothing alive).
        drop(self.session.take());
        report
    }

    /// Unmounts with nothing undone: a clean shutdown.
    pub fn unmount(mut self) {
        drop(self.session.take());
    }

    pub fn counts(&self) -> Counts {
        lock(&self.state).counts
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Everything the filesystem knows.
struct State {
    backing: PathBuf,
    stash: PathBuf,
    /// Inode number to the absolute path of what it names now (in the
    /// backing directory, or in the stash once removed).
    nodes: HashMap<u64, PathBuf>,
    by_path: HashMap<PathBuf, u64>,
    next_ino: u64,
    /// Open files by handle.
    handles: HashMap<u64, File>,
    next_handle: u64,
    /// Per inode: its changes not yet durable, oldest first.
    file_undo: HashMap<u64, Vec<FileUndo>>,
    /// Namespace changes not yet durable, oldest first.
    names: Vec<NameOp>,
    next_stash: u64,
    /// The power is off: nothing more is done.
    cut: bool,
    counts: Counts,
}

impl State {
    fn new(backing: PathBuf, stash: PathBuf) -> Self {
        let mut state = Self {
            backing: backing.clone(),
            stash,
            nodes: HashMap::new(),
            by_path: HashMap::new(),
            next_ino: 2,
            handles: HashMap::new(),
            next_handle: 1,
            file_undo: HashMap::new(),
            names: Vec::new(),
            next_stash: 0,
            cut: false,
            counts: Counts::default(),
        };
        state.nodes.insert(1, backing.clone());
        state.by_path.insert(backing, 1);
        state
    }

    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        self.nodes.get(&ino.0).cloned().ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.path(parent)?.join(name))
    }

    /// The inode number of `path`, given one if it has none.
    fn ino_of(&mut self, path: &Path) -> u64 {
        if let Some(&ino) = self.by_path.get(path) {
            return ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, path.to_owned());
        self.by_path.insert(path.to_owned(), ino);
        ino
    }

    fn attr(&mut self, path: &Path) -> Result<FileAttr, Errno> {
        let metadata = fs::symlink_metadata(path)?;
        let ino = self.ino_of(path);
        Ok(attr_of(ino, &metadata))
    }

    /// Moves the names at and under `from` to `to`.
    fn moved(&mut self, from: &Path, to: &Path) {
        let moved: Vec<(PathBuf, u64)> = self
            .by_path
            .iter()
            .filter(|(path, _)| path.starts_with(from))
            .map(|(path, &ino)| (path.clone(), ino))
            .collect();
        for (path, ino) in moved {
            self.by_path.remove(&path);
            let rest = path.strip_prefix(from).expect("filtered by prefix");
            // (Joining an empty rest would add a trailing slash.)
            let new = if rest.as_os_str().is_empty() {
                to.to_owned()
            } else {
                to.join(rest)
            };
            self.by_path.insert(new.clone(), ino);
            self.nodes.insert(ino, new);
        }
    }

    /// A fresh path in the stash.
    fn stash_path(&mut self) -> PathBuf {
        self.next_stash += 1;
        self.stash.join(format!("{}", self.next_stash))
    }

    fn remember(&mut self, ino: u64, change: FileUndo) {
        self.file_undo.entry(ino).or_default().push(change);
    }

    fn write(&mut self, ino: u64, handle: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let file = self.handles.get(&handle).ok_or(Errno::EBADF)?;
        let length = file.metadata()?.len();
        let old = undo::old_bytes(file, offset, data.len(), length)?;
        file.write_all_at(data, offset)?;
        if offset + data.len() as u64 > length {
            self.remember(ino, FileUndo::Size(length));
        }
        self.remember(
            ino,
            FileUndo::Bytes {
                offset,
                old,
                new_len: data.len(),
            },
        );
        self.counts.writes += 1;
        Ok(data.len() as u32)
    }

    fn truncate(&mut self, ino: u64, path: &Path, size: u64) -> Result<(), Errno> {
        let file = OpenOptions::new().write(true).read(true).open(path)?;
        let length = file.metadata()?.len();
        if size < length {
            let tail = undo::old_bytes(&file, size, (length - size) as usize, length)?;
            self.remember(
                ino,
                FileUndo::Bytes {
                    offset: size,
                    old: tail,
                    new_len: 0,
                },
            );
        }
        self.remember(ino, FileUndo::Size(length));
        file.set_len(size)?;
        Ok(())
    }

    /// Makes `ino`'s changes durable.
    fn sync_file(&mut self, ino: u64) {
        self.file_undo.remove(&ino);
        self.counts.file_syncs += 1;
    }

    /// Makes the names in directory `ino` durable.
    fn sync_directory(&mut self, ino: u64) -> Result<(), Errno> {
        let dir = self.path(INodeNo(ino))?;
        let mut kept = Vec::new();
        for mut op in std::mem::take(&mut self.names) {
            op.dirs.retain(|d| *d != dir);
            if op.dirs.is_empty() {
                op.undo.durable();
            } else {
                kept.push(op);
            }
        }
        self.names = kept;
        self.counts.directory_syncs += 1;
        Ok(())
    }

    fn cut(&mut self, tear: Option<u64>) -> CutReport {
        self.cut = true;
        self.handles.clear();
        let mut report = CutReport::default();
        let mut seed = tear;
        let mut files: Vec<(u64, Vec<FileUndo>)> = self.file_undo.drain().collect();
        files.sort_by_key(|(ino, _)| *ino);
        for (ino, changes) in files {
            let Some(path) = self.nodes.get(&ino) else {
                continue;
            };
            let tear_at = seed.as_mut().map(undo::next_random);
            undo::revert_file(path, changes, tear_at, &mut report);
        }
        for op in std::mem::take(&mut self.names).into_iter().rev() {
            let name = op.undo.name().to_owned();
            let name = name.strip_prefix(&self.backing).unwrap_or(&name).to_owned();
            report.undone_names.push(name);
            op.undo.revert();
            report.names_undone += 1;
        }
        report
    }
}

/// The filesystem the kernel talks to.
struct PowerCutFs {
    state: Arc<Mutex<State>>,
}

impl PowerCutFs {
    /// Runs `work` on the state unless the power is cut.
    fn with<T>(&self, work: impl FnOnce(&mut State) -> Result<T, Errno>) -> Result<T, Errno> {
        let mut state = lock(&self.state);
        if state.cut {
            return Err(Errno::EIO);
        }
        work(&mut state)
    }
}

fn attr_of(ino: u64, metadata: &fs::Metadata) -> FileAttr {
    let time = |seconds: i64, nanos: i64| {
        UNIX_EPOCH + Duration::new(seconds.max(0) as u64, nanos.clamp(0, 999_999_999) as u32)
    };
    let kind = if metadata.is_dir() {
        FileType::Directory
    } else if metadata.file_type().is_symlink() {
        FileType::Symlink
    } else {
        FileType::RegularFile
    };
    FileAttr {
        ino: INodeNo(ino),
        size: metadata.len(),
        blocks: metadata.blocks(),
        atime: time(metadata.atime(), metadata.atime_nsec()),
        mtime: time(metadata.mtime(), metadata.mtime_nsec()),
        ctime: time(metadata.ctime(), metadata.ctime_nsec()),
        crtime: SystemTime::UNIX_EPOCH,
        kind,
        perm: (metadata.mode() & 0o7777) as u16,
        nlink: metadata.nlink() as u32,
        uid: metadata.uid(),
        gid: metadata.gid(),
        rdev: metadata.rdev() as u32,
        blksize: 4096,
        flags: 0,
    }
}

/// Opens `path` as the kernel's `flags` ask (creation aside).
fn open_as(path: &Path, flags: i32, create: Option<u32>) -> io::Result<File> {
    let access = flags & rustix::fs::OFlags::ACCMODE.bits() as i32;
    let mut options = OpenOptions::new();
    // Always readable: the kernel reads pages of a write-only file to
    // fill the parts of a page a write does not cover.
    options
        .read(true)
        .write(access != rustix::fs::OFlags::RDONLY.bits() as i32);
    if let Some(mode) = create {
        options.create_new(true).mode(mode);
    }
    options.open(path)
}

impl Filesystem for PowerCutFs {
    fn lookup(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.with(|state| {
            let path = state.child(parent, name)?;
            state.attr(&path)
        }) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(error) => reply.error(error),
        }
    }

    fn getattr(&self, _: &Request, ino: INodeNo, _: Option<FileHandle>, reply: ReplyAttr) {
        match self.with(|state| {
            let path = state.path(ino)?;
            Ok(attr_of(ino.0, &fs::symlink_metadata(path)?))
        }) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(error) => reply.error(error),
        }
    }

    fn setattr(
        &self,
        _: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.with(|state| {
            let path = state.path(ino)?;
            if let Some(size) = size {
                state.truncate(ino.0, &path, size)?;
            }
            if let Some(mode) = mode {
                fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777))?;
            }
            Ok(attr_of(ino.0, &fs::symlink_metadata(path)?))
        }) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(error) => reply.error(error),
        }
    }

    fn mkdir(
        &self,
        _: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        match self.with(|state| {
            let path = state.child(parent, name)?;
            fs::create_dir(&path)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode & !umask & 0o7777))?;
            let dir = state.path(parent)?;
            state
                .names
                .push(NameOp::new(vec![dir], NameUndo::Created(path.clone())));
            state.attr(&path)
        }) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(error) => reply.error(error),
        }
    }

    fn unlink(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, reply);
    }

    fn rmdir(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, reply);
    }

    fn rename(
        &self,
        _: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.with(|state| {
            let from = state.child(parent, name)?;
            let to = state.child(newparent, newname)?;
            // A file the rename replaces waits in the stash.
            let replaced = if fs::symlink_metadata(&to).is_ok_and(|m| !m.is_dir()) {
                let stash = state.stash_path();
                fs::rename(&to, &stash)?;
                state.moved(&to, &stash);
                Some(stash)
            } else {
                None
            };
            fs::rename(&from, &to)?;
            state.moved(&from, &to);
            let dirs = vec![state.path(parent)?, state.path(newparent)?];
            let undo = NameUndo::Renamed { from, to, replaced };
            state.names.push(NameOp::new(dirs, undo));
            Ok(())
        }) {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn open(&self, _: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.with(|state| {
            let file = open_as(&state.path(ino)?, flags.0, None)?;
            let handle = state.next_handle;
            state.next_handle += 1;
            state.handles.insert(handle, file);
            Ok(handle)
        }) {
            Ok(handle) => reply.opened(FileHandle(handle), FopenFlags::empty()),
            Err(error) => reply.error(error),
        }
    }

    fn read(
        &self,
        _: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.with(|state| {
            let file = state.handles.get(&fh.0).ok_or(Errno::EBADF)?;
            let mut buffer = vec![0; size as usize];
            let mut filled = 0;
            while filled < buffer.len() {
                match file.read_at(&mut buffer[filled..], offset + filled as u64)? {
                    0 => break,
                    n => filled += n,
                }
            }
            buffer.truncate(filled);
            Ok(buffer)
        }) {
            Ok(data) => reply.data(&data),
            Err(error) => reply.error(error),
        }
    }

    fn write(
        &self,
        _: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.with(|state| state.write(ino.0, fh.0, offset, data)) {
            Ok(written) => reply.written(written),
            Err(error) => reply.error(error),
        }
    }

    fn flush(&self, _: &Request, _: INodeNo, _: FileHandle, _: LockOwner, reply: ReplyEmpty) {
        // A close makes nothing durable.
        reply.ok();
    }

    fn release(
        &self,
        _: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.state).handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.with(|state| {
            state.sync_file(ino.0);
            Ok(())
        }) {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn readdir(
        &self,
        _: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = self.with(|state| {
            let dir = state.path(ino)?;
            let mut entries = vec![
                (ino.0, FileType::Directory, ".".into()),
                (ino.0, FileType::Directory, "..".into()),
            ];
            let mut names: Vec<_> = fs::read_dir(&dir)?.collect::<Result<_, _>>()?;
            names.sort_by_key(fs::DirEntry::file_name);
            for entry in names {
                let path = entry.path();
                let kind = if entry.file_type()?.is_dir() {
                    FileType::Directory
                } else {
                    FileType::RegularFile
                };
                entries.push((state.ino_of(&path), kind, entry.file_name()));
            }
            Ok(entries)
        });
        match entries {
            Ok(entries) => {
                for (index, (ino, kind, name)) in
                    entries.into_iter().enumerate().skip(offset as usize)
                {
                    if reply.add(INodeNo(ino), index as u64 + 1, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(error) => reply.error(error),
        }
    }

    fn fsyncdir(
        &self,
        _: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.with(|state| state.sync_directory(ino.0)) {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn statfs(&self, _: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let statvfs = |state: &mut State| {
            rustix::fs::statvfs(&state.backing).map_err(|e| Errno::from_i32(e.raw_os_error()))
        };
        match self.with(statvfs) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(error) => reply.error(error),
        }
    }

    fn access(&self, _: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // Permissions are the kernel's (default_permissions).
        reply.ok();
    }

    fn create(
        &self,
        _: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.with(|state| {
            let path = state.child(parent, name)?;
            let file = open_as(&path, flags, Some(mode & !umask & 0o7777))?;
            let dir = state.path(parent)?;
            state
                .names
                .push(NameOp::new(vec![dir], NameUndo::Created(path.clone())));
            let attr = state.attr(&path)?;
            let handle = state.next_handle;
            state.next_handle += 1;
            state.handles.insert(handle, file);
            Ok((attr, handle))
        }) {
            Ok((attr, handle)) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(handle),
                FopenFlags::empty(),
            ),
            Err(error) => reply.error(error),
        }
    }

    fn fallocate(
        &self,
        _: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match self.with(|state| {
            if mode != 0 {
                return Err(Errno::EOPNOTSUPP);
            }
            let file = state.handles.get(&fh.0).ok_or(Errno::EBADF)?;
            let size = file.metadata()?.len();
            rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), offset, length)
                .map_err(|e| Errno::from_i32(e.raw_os_error()))?;
            if offset + length > size {
                state.remember(ino.0, FileUndo::Size(size));
            }
            Ok(())
        }) {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }
}

impl PowerCutFs {
    /// Removes a file or an empty directory: it waits in the stash until
    /// the removal is durable.
    fn remove(&self, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.with(|state| {
            let path = state.child(parent, name)?;
            let is_dir = fs::symlink_metadata(&path)?.is_dir();
            if is_dir && fs::read_dir(&path)?.next().is_some() {
                return Err(Errno::ENOTEMPTY);
            }
            let stash = state.stash_path();
            fs::rename(&path, &stash)?;
            state.moved(&path, &stash);
            let dir = state.path(parent)?;
            let undo = NameUndo::Removed { path, stash };
            state.names.push(NameOp::new(vec![dir], undo));
            Ok(())
        }) {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }
}

#[cfg(test)]
mod tests;
