//! The FUSE side: a passthrough to a backing directory that keeps, per file, what
//! a power cut would take back (`unsynced.rs`), and answers fsync with EIO or
//! writes with ENOSPC while told to.
//!
//! What is modelled: file contents and sizes since each file's last fsync (or
//! fdatasync: the kernel sends both as FUSE_FSYNC), and the names of files created
//! since the last fsync of their directory (a cut removes them). What is not:
//! unlinks and renames are durable at once, and metadata other than the size
//! (mode, times) is whatever the backing file says. Attributes and entries are
//! never cached by the kernel (TTL 0), and files are opened without `direct_io`,
//! so SQLite can mmap them; the kernel's page cache is dropped by remounting at
//! each cut (`FaultFs::power_cut`).
//!
//! An fsync answered EIO makes nothing durable and forgets nothing: a later fsync
//! that succeeds covers those writes. Real kernels may instead drop the pages and
//! report success next time, which is why a store must stop trusting its file
//! after one failure rather than retry; the tests check that it does. A full disk
//! refuses every write, overwrites included, which is harsher than a real one.
//!
//! One lock guards everything: the file system serves tests, not throughput.

use crate::unsynced::Unsynced;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nothing is cached by the kernel: every size it uses is asked for.
const TTL: Duration = Duration::ZERO;

/// What the test switches and counts, read on every operation.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub(crate) fail_fsync: AtomicBool,
    pub(crate) disk_full: AtomicBool,
    pub(crate) fsyncs: AtomicU64,
    pub(crate) failed_fsyncs: AtomicU64,
    pub(crate) refused_writes: AtomicU64,
}

/// The file system's state, shared by the mounted session and the test's handle;
/// it outlives a session, so a remount after a cut finds the same files.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) faults: Faults,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    backing: PathBuf,
    /// Inode → path below `backing` (empty for the root). A removed file keeps its
    /// entry while the kernel may still use its open handles.
    paths: HashMap<u64, PathBuf>,
    inodes: HashMap<PathBuf, u64>,
    next_inode: u64,
    handles: HashMap<u64, (u64, File)>,
    next_handle: u64,
    /// Inode → what a cut would take back from it.
    unsynced: HashMap<u64, Unsynced>,
    /// Files created since their directory's last fsync.
    fresh: HashSet<PathBuf>,
}

/// What one power cut took back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cut {
    /// Files whose content or size went back to their last fsync.
    pub files_rewound: usize,
    /// Bytes of durable content put back over unsynced writes.
    pub bytes_restored: u64,
    /// Files removed because their directory was not fsynced since they were made
    /// (paths below the mount point).
    pub files_removed: Vec<PathBuf>,
}

impl State {
    pub(crate) fn new(backing: PathBuf) -> Arc<State> {
        let mut inner = Inner {
            backing,
            paths: HashMap::new(),
            inodes: HashMap::new(),
            next_inode: 0,
            handles: HashMap::new(),
            next_handle: 1,
            unsynced: HashMap::new(),
            fresh: HashSet::new(),
        };
        inner.forget_inodes();
        Arc::new(State { faults: Faults::default(), inner: Mutex::new(inner) })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops every write since each file's last fsync and every file created since
    /// its directory's. Called while unmounted, so no handle is open.
    pub(crate) fn power_cut(&self) -> io::Result<Cut> {
        let mut inner = self.lock();
        let mut cut = Cut::default();
        let unsynced = std::mem::take(&mut inner.unsynced);
        for (inode, unsynced) in unsynced {
            let Some(path) = inner.linked(inode) else { continue };
            let file = OpenOptions::new().write(true).open(inner.backing.join(path))?;
            cut.bytes_restored += unsynced.bytes();
            unsynced.restore(&file)?;
            cut.files_rewound += 1;
        }
        for path in std::mem::take(&mut inner.fresh) {
            match std::fs::remove_file(inner.backing.join(&path)) {
                Ok(()) => cut.files_removed.push(path),
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
        inner.forget_inodes();
        Ok(cut)
    }
}

impl Inner {
    /// A new session knows no inode but the root.
    fn forget_inodes(&mut self) {
        self.paths.clear();
        self.inodes.clear();
        self.handles.clear();
        self.paths.insert(INodeNo::ROOT.0, PathBuf::new());
        self.inodes.insert(PathBuf::new(), INodeNo::ROOT.0);
        self.next_inode = INodeNo::ROOT.0 + 1;
    }

    fn path(&self, inode: INodeNo) -> Result<&Path, Errno> {
        self.paths.get(&inode.0).map(PathBuf::as_path).ok_or(Errno::ENOENT)
    }

    /// The path of `inode` if a name still leads to it.
    fn linked(&self, inode: u64) -> Option<PathBuf> {
        let path = self.paths.get(&inode)?;
        (self.inodes.get(path) == Some(&inode)).then(|| path.clone())
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.path(parent)?.join(name))
    }

    fn inode_of(&mut self, path: &Path) -> u64 {
        if let Some(inode) = self.inodes.get(path) {
            return *inode;
        }
        let inode = self.next_inode;
        self.next_inode += 1;
        self.paths.insert(inode, path.to_owned());
        self.inodes.insert(path.to_owned(), inode);
        inode
    }

    fn attr_of(&mut self, path: &Path) -> Result<FileAttr, Errno> {
        let metadata = std::fs::symlink_metadata(self.backing.join(path)).map_err(errno)?;
        let inode = self.inode_of(path);
        Ok(attr(inode, &metadata))
    }

    fn unlinked(&mut self, path: &Path) {
        if let Some(inode) = self.inodes.remove(path) {
            self.unsynced.remove(&inode);
        }
        self.fresh.remove(path);
    }

    fn handle(&self, handle: FileHandle) -> Result<(u64, &File), Errno> {
        self.handles.get(&handle.0).map(|(inode, file)| (*inode, file)).ok_or(Errno::EBADF)
    }

    fn add_handle(&mut self, inode: u64, file: File) -> FileHandle {
        let handle = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(handle, (inode, file));
        FileHandle(handle)
    }

    /// Remembers the durable bytes of `[start, end)` of `inode` before they change.
    fn before_change(&mut self, inode: u64, file: &File, start: u64, end: u64) -> Result<(), Errno> {
        let unsynced = match self.unsynced.entry(inode) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => entry.insert(Unsynced::new(file).map_err(errno)?),
        };
        unsynced.before_change(file, start, end).map_err(errno)
    }

    fn open_backing(&self, path: &Path) -> Result<File, Errno> {
        OpenOptions::new().read(true).write(true).open(self.backing.join(path)).map_err(errno)
    }

    fn set_size(&mut self, inode: INodeNo, handle: Option<FileHandle>, size: u64, full: bool) -> Result<(), Errno> {
        let file = match handle.and_then(|h| self.handles.get(&h.0)) {
            Some((_, file)) => file.try_clone().map_err(errno)?,
            None => self.open_backing(self.path(inode)?)?,
        };
        let current = file.metadata().map_err(errno)?.len();
        if size > current && full {
            return Err(Errno::ENOSPC);
        }
        self.before_change(inode.0, &file, size, u64::MAX)?;
        file.set_len(size).map_err(errno)
    }
}

/// The `Filesystem` the session serves; a new one per mount, on the same state.
pub(crate) struct FaultFilesystem(pub(crate) Arc<State>);

impl FaultFilesystem {
    fn faults(&self) -> &Faults {
        &self.0.faults
    }
}

impl Filesystem for FaultFilesystem {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut inner = self.0.lock();
        match inner.child(parent, name).and_then(|path| inner.attr_of(&path)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(error) => reply.error(error),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let mut inner = self.0.lock();
        let attr = match fh.map(|h| inner.handle(h)) {
            Some(Ok((inode, file))) => file.metadata().map(|m| attr(inode, &m)).map_err(errno),
            _ => inner.path(ino).map(Path::to_owned).and_then(|path| inner.attr_of(&path)),
        };
        match attr {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(error) => reply.error(error),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let full = self.faults().disk_full.load(Ordering::Acquire);
        let mut inner = self.0.lock();
        let result = (|| {
            let path = inner.path(ino)?.to_owned();
            if let Some(mode) = mode {
                let permissions = std::fs::Permissions::from_mode(mode & 0o7777);
                std::fs::set_permissions(inner.backing.join(&path), permissions).map_err(errno)?;
            }
            if let Some(size) = size {
                inner.set_size(ino, fh, size, full)?;
            }
            inner.attr_of(&path)
        })();
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(error) => {
                if error == Errno::ENOSPC {
                    self.faults().refused_writes.fetch_add(1, Ordering::AcqRel);
                }
                reply.error(error)
            }
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let mut inner = self.0.lock();
        let result = inner.child(parent, name).and_then(|path| {
            let full = inner.backing.join(&path);
            std::fs::create_dir(&full).map_err(errno)?;
            std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode & !umask & 0o7777)).map_err(errno)?;
            inner.attr_of(&path)
        });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(error) => reply.error(error),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut inner = self.0.lock();
        let result = inner.child(parent, name).and_then(|path| {
            std::fs::remove_file(inner.backing.join(&path)).map_err(errno)?;
            inner.unlinked(&path);
            Ok(())
        });
        reply_empty(reply, result);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut inner = self.0.lock();
        let result = inner.child(parent, name).and_then(|path| {
            std::fs::remove_dir(inner.backing.join(&path)).map_err(errno)?;
            inner.inodes.remove(&path);
            Ok(())
        });
        reply_empty(reply, result);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags != RenameFlags::empty() {
            return reply.error(Errno::EINVAL);
        }
        let mut inner = self.0.lock();
        let result = (|| {
            let (from, to) = (inner.child(parent, name)?, inner.child(newparent, newname)?);
            std::fs::rename(inner.backing.join(&from), inner.backing.join(&to)).map_err(errno)?;
            inner.unlinked(&to);
            let moved: Vec<(PathBuf, u64)> =
                inner.inodes.iter().filter(|(p, _)| p.starts_with(&from)).map(|(p, i)| (p.clone(), *i)).collect();
            for (old, inode) in moved {
                let new = to.join(old.strip_prefix(&from).unwrap_or(Path::new("")));
                inner.inodes.remove(&old);
                inner.inodes.insert(new.clone(), inode);
                inner.paths.insert(inode, new);
            }
            // A name the directory never made durable is no more durable under another.
            if inner.fresh.remove(&from) {
                inner.fresh.insert(to);
            }
            Ok(())
        })();
        reply_empty(reply, result);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // Opened read-write whatever was asked: the kernel writes mmapped pages back
        // through any handle of the file. O_TRUNC comes as a separate setattr.
        let mut inner = self.0.lock();
        let result = inner.path(ino).and_then(|path| inner.open_backing(path));
        match result {
            Ok(file) => reply.opened(inner.add_handle(ino.0, file), FopenFlags::empty()),
            Err(error) => reply.error(error),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut inner = self.0.lock();
        let result = (|| {
            let path = inner.child(parent, name)?;
            let mut options = OpenOptions::new();
            options.read(true).write(true).mode(mode & !umask & 0o7777);
            if flags & libc_flags::O_EXCL != 0 {
                options.create_new(true);
            } else {
                options.create(true);
            }
            let existed = inner.backing.join(&path).exists();
            let file = options.open(inner.backing.join(&path)).map_err(errno)?;
            let attr = inner.attr_of(&path)?;
            if !existed {
                inner.unsynced.insert(attr.ino.0, Unsynced::empty());
                inner.fresh.insert(path);
            }
            Ok((attr, inner.add_handle(attr.ino.0, file)))
        })();
        match result {
            Ok((attr, handle)) => reply.created(&TTL, &attr, Generation(0), handle, FopenFlags::empty()),
            Err(error) => reply.error(error),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let inner = self.0.lock();
        let result = inner.handle(fh).and_then(|(_, file)| read_at(file, offset, size as usize).map_err(errno));
        match result {
            Ok(bytes) => reply.data(&bytes),
            Err(error) => reply.error(error),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if self.faults().disk_full.load(Ordering::Acquire) {
            self.faults().refused_writes.fetch_add(1, Ordering::AcqRel);
            return reply.error(Errno::ENOSPC);
        }
        let mut inner = self.0.lock();
        let result = (|| {
            let (inode, file) = inner.handle(fh)?;
            let file = file.try_clone().map_err(errno)?;
            inner.before_change(inode, &file, offset, offset + data.len() as u64)?;
            file.write_all_at(data, offset).map_err(errno)
        })();
        match result {
            Ok(()) => reply.written(data.len() as u32),
            Err(error) => reply.error(error),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.0.lock().handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        if self.faults().fail_fsync.load(Ordering::Acquire) {
            self.faults().failed_fsyncs.fetch_add(1, Ordering::AcqRel);
            return reply.error(Errno::EIO);
        }
        self.faults().fsyncs.fetch_add(1, Ordering::AcqRel);
        // The backing file need not reach its disk: durability here is the model's.
        self.0.lock().unsynced.remove(&ino.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.0.lock().path(ino) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(error) => reply.error(error),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let mut inner = self.0.lock();
        let result = (|| {
            let path = inner.path(ino)?.to_owned();
            let mut entries = vec![(ino.0, FileType::Directory, ".".into()), (ino.0, FileType::Directory, "..".into())];
            for entry in std::fs::read_dir(inner.backing.join(&path)).map_err(errno)? {
                let entry = entry.map_err(errno)?;
                let kind = file_type(entry.file_type().map_err(errno)?);
                let inode = inner.inode_of(&path.join(entry.file_name()));
                entries.push((inode, kind, entry.file_name()));
            }
            Ok(entries)
        })();
        match result {
            Ok(entries) => {
                for (i, (inode, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(inode), i as u64 + 1, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(error) => reply.error(error),
        }
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        if self.faults().fail_fsync.load(Ordering::Acquire) {
            self.faults().failed_fsyncs.fetch_add(1, Ordering::AcqRel);
            return reply.error(Errno::EIO);
        }
        let mut inner = self.0.lock();
        let result = inner.path(ino).map(Path::to_owned).map(|directory| {
            inner.fresh.retain(|path| path.parent() != Some(directory.as_path()));
        });
        reply_empty(reply, result);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let free = if self.faults().disk_full.load(Ordering::Acquire) { 0 } else { 1 << 20 };
        reply.statfs(1 << 21, free, free, 1 << 20, 1 << 19, 4096, 255, 4096);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        // Unsupported (glibc's posix_fallocate then writes zeroes, which are modelled).
        reply.error(Errno::EOPNOTSUPP);
    }
}

/// The open flags this file system reads (from `<fcntl.h>`, Linux).
mod libc_flags {
    pub(super) const O_EXCL: i32 = 0o200;
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(error) => reply.error(error),
    }
}

fn errno(error: io::Error) -> Errno {
    error.raw_os_error().map_or(Errno::EIO, Errno::from_i32)
}

fn read_at(file: &File, offset: u64, size: usize) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0; size];
    let mut filled = 0;
    while filled < size {
        match file.read_at(&mut bytes[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    bytes.truncate(filled);
    Ok(bytes)
}

fn file_type(kind: std::fs::FileType) -> FileType {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        FileType::Directory
    } else if kind.is_symlink() {
        FileType::Symlink
    } else if kind.is_fifo() {
        FileType::NamedPipe
    } else if kind.is_socket() {
        FileType::Socket
    } else if kind.is_block_device() {
        FileType::BlockDevice
    } else if kind.is_char_device() {
        FileType::CharDevice
    } else {
        FileType::RegularFile
    }
}

fn time(seconds: i64, nanos: i64) -> SystemTime {
    let since = Duration::new(seconds.max(0) as u64, nanos.clamp(0, 999_999_999) as u32);
    UNIX_EPOCH + since
}

fn attr(inode: u64, metadata: &std::fs::Metadata) -> FileAttr {
    FileAttr {
        ino: INodeNo(inode),
        size: metadata.len(),
        blocks: metadata.blocks(),
        atime: time(metadata.atime(), metadata.atime_nsec()),
        mtime: time(metadata.mtime(), metadata.mtime_nsec()),
        ctime: time(metadata.ctime(), metadata.ctime_nsec()),
        crtime: time(metadata.ctime(), metadata.ctime_nsec()),
        kind: file_type(metadata.file_type()),
        perm: (metadata.mode() & 0o7777) as u16,
        nlink: metadata.nlink() as u32,
        uid: metadata.uid(),
        gid: metadata.gid(),
        rdev: metadata.rdev() as u32,
        blksize: 4096,
        flags: 0,
    }
}
