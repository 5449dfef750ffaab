//! A fault-injecting file system for tests: power cuts and disk faults on demand.
//!
//! [`FaultFs::mount`] mounts a FUSE passthrough (the `fuser` crate, no libfuse) over
//! a fresh backing directory, served by a thread of the calling process. Anything
//! may use the mount point, including child processes: the file system, and the
//! writes it holds unsynced, outlive a `kill -9` of whatever wrote them. Then:
//!
//! * [`FaultFs::power_cut`] drops every write since each file's last fsync (and
//!   every file created since its directory's last fsync), as losing power would,
//!   and remounts, so nothing cached in the kernel survives either;
//! * [`FaultFs::fail_fsync`] makes fsync and fdatasync answer EIO;
//! * [`FaultFs::disk_full`] makes writes (and growing a file) answer ENOSPC.
//!
//! Never use files on the mount from the process that serves it, above all not
//! mmapped ones (SQLite's `-shm`): the kernel can wait for the server while it
//! holds the process's memory-map lock, which the server's own allocations need.
//! (Seen here: a thread's `munmap` waited for a write-back the server thread could
//! not serve, blocked in `mprotect`.) Run the code under test in a child process.
//!
//! What is and is not modelled is said in `fs.rs`. Layout: `unsynced.rs` keeps what
//! a cut takes back from one file, `fs.rs` serves FUSE requests, this file mounts.

#![warn(missing_docs)]

mod fs;
mod unsynced;

pub use fs::Cut;

use fs::{FaultFilesystem, State};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Why the file system could not be mounted, cut or unmounted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FaultFsError {
    /// The backing or mount directory could not be made.
    #[error("creating the backing and mount directories: {0}")]
    Directories(#[source] std::io::Error),
    /// The kernel refused the mount (no /dev/fuse, no permission).
    #[error("mounting the FUSE file system at {path}: {source}")]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file system could not be unmounted.
    #[error("unmounting {path} (is a file on it still open?): {source}")]
    Unmount {
        /// The mount point.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Undoing the writes since the last fsync failed.
    #[error("rewinding the backing files to their last fsync: {0}")]
    Rewind(#[source] std::io::Error),
}

/// A mounted fault-injecting file system; unmounted and removed on drop.
pub struct FaultFs {
    /// `None` only while a cut remounts.
    session: Option<fuser::BackgroundSession>,
    state: Arc<State>,
    mount_point: PathBuf,
    /// Holds the backing directory and the mount point; dropped after the session.
    _dirs: tempfile::TempDir,
}

impl FaultFs {
    /// Whether this machine can serve FUSE at all (`/dev/fuse` exists). Tests skip,
    /// saying so, only when it does not; a mount that fails where it does is an error.
    pub fn available() -> bool {
        Path::new("/dev/fuse").exists()
    }

    /// Mounts an empty file system on a fresh temporary directory.
    pub fn mount() -> Result<FaultFs, FaultFsError> {
        let dirs = tempfile::Builder::new().prefix("rewind-faultfs-").tempdir().map_err(FaultFsError::Directories)?;
        let (backing, mount_point) = (dirs.path().join("backing"), dirs.path().join("mnt"));
        for dir in [&backing, &mount_point] {
            std::fs::create_dir(dir).map_err(FaultFsError::Directories)?;
        }
        let state = State::new(backing);
        let session = Some(serve(&state, &mount_point)?);
        Ok(FaultFs { session, state, mount_point, _dirs: dirs })
    }

    /// Where the file system is mounted.
    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    /// While `on`, every fsync, fdatasync and directory fsync answers EIO and makes
    /// nothing durable.
    pub fn fail_fsync(&self, on: bool) {
        self.state.faults.fail_fsync.store(on, Ordering::Release);
    }

    /// While `on`, every write, and every truncation that grows a file, answers
    /// ENOSPC and changes nothing; `statfs` shows no free space.
    pub fn disk_full(&self, on: bool) {
        self.state.faults.disk_full.store(on, Ordering::Release);
    }

    /// Successful fsyncs (of files, directories left out) so far.
    pub fn fsyncs(&self) -> u64 {
        self.state.faults.fsyncs.load(Ordering::Acquire)
    }

    /// fsyncs answered with EIO so far.
    pub fn failed_fsyncs(&self) -> u64 {
        self.state.faults.failed_fsyncs.load(Ordering::Acquire)
    }

    /// Writes answered with ENOSPC so far.
    pub fn refused_writes(&self) -> u64 {
        self.state.faults.refused_writes.load(Ordering::Acquire)
    }

    /// Cuts the power: unmounts (which fails, changing nothing, while a file on the
    /// mount is open: stop or kill its users first), drops every write since each
    /// file's last fsync and every file created since its directory's, and mounts
    /// again at the same place with faults switched off.
    pub fn power_cut(&mut self) -> Result<Cut, FaultFsError> {
        if let Some(session) = self.session.take()
            && let Err(source) = session.umount_and_join()
            // The serving thread may end with ECONNABORTED when the kernel tears the
            // connection down under a request; once unmounted, that is the end it meant.
            && (source.kind() != std::io::ErrorKind::ConnectionAborted || is_mounted(&self.mount_point))
        {
            return Err(FaultFsError::Unmount { path: self.mount_point.clone(), source });
        }
        let cut = self.state.power_cut().map_err(FaultFsError::Rewind)?;
        self.fail_fsync(false);
        self.disk_full(false);
        self.session = Some(serve(&self.state, &self.mount_point)?);
        Ok(cut)
    }
}

impl Drop for FaultFs {
    fn drop(&mut self) {
        // Left mounted (a file on it still open), the directory goes stale once this
        // process exits; say so rather than hide it.
        if let Some(Err(error)) = self.session.take().map(fuser::BackgroundSession::umount_and_join) {
            eprintln!("rewind-faultfs: unmounting {} failed: {error}", self.mount_point.display());
        }
    }
}

/// Whether `path` is a mount point of this process's namespace now.
fn is_mounted(path: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else { return true };
    let path = path.to_string_lossy();
    mounts.lines().any(|line| line.split(' ').nth(1) == Some(path.as_ref()))
}

fn serve(state: &Arc<State>, mount_point: &Path) -> Result<fuser::BackgroundSession, FaultFsError> {
    let mut config = fuser::Config::default();
    config.mount_options = vec![fuser::MountOption::FSName("rewind-faultfs".into()), fuser::MountOption::RW];
    fuser::spawn_mount(FaultFilesystem(state.clone()), mount_point, &config)
        .map_err(|source| FaultFsError::Mount { path: mount_point.to_owned(), source })
}
