//! The file system's own promises, through the kernel: what a cut keeps and drops,
//! fsync and fdatasync both count, EIO and ENOSPC on command. (SQLite on the mount
//! is tested from child processes, in rewind-sqlite's and the bank's `power_loss`.) Skipped, saying so,
//! only where /dev/fuse is missing.

use rewind_faultfs::FaultFs;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::FileExt;

fn mounted() -> Option<FaultFs> {
    if !FaultFs::available() {
        eprintln!("SKIPPED: /dev/fuse is missing, so the fault-injecting file system cannot be mounted");
        return None;
    }
    Some(FaultFs::mount().expect("mount"))
}

fn read(path: &std::path::Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    File::open(path).expect("open").read_to_end(&mut bytes).expect("read");
    bytes
}

#[test]
fn a_cut_keeps_what_was_synced_and_drops_the_rest() {
    let Some(mut fs) = mounted() else { return };
    let path = fs.path().join("file");
    {
        let mut file = File::create(&path).expect("create");
        file.write_all(b"durable").expect("write");
        file.sync_data().expect("fdatasync");
        File::open(fs.path()).expect("dir").sync_all().expect("fsync dir");
        file.write_all(b" and then some").expect("write");
        file.write_all_at(b"D", 0).expect("overwrite");
    }
    assert_eq!(read(&path), b"Durable and then some");
    let cut = fs.power_cut().expect("cut");
    assert_eq!(read(&path), b"durable", "{cut:?}");
    assert_eq!(cut.files_rewound, 1);
}

#[test]
fn fsync_makes_a_truncation_durable_and_a_cut_undoes_an_unsynced_one() {
    let Some(mut fs) = mounted() else { return };
    let path = fs.path().join("file");
    let mut file = File::create(&path).expect("create");
    file.write_all(&[1; 10_000]).expect("write");
    file.sync_all().expect("fsync");
    File::open(fs.path()).expect("dir").sync_all().expect("fsync dir");
    file.set_len(10).expect("truncate");
    file.write_all_at(&[2; 5], 8).expect("write");
    drop(file);
    fs.power_cut().expect("cut");
    assert_eq!(read(&path), vec![1; 10_000]);
}

#[test]
fn a_file_whose_directory_was_never_synced_is_gone_after_a_cut() {
    let Some(mut fs) = mounted() else { return };
    let path = fs.path().join("new");
    let mut file = File::create(&path).expect("create");
    file.write_all(b"x").expect("write");
    file.sync_all().expect("fsync");
    drop(file);
    let cut = fs.power_cut().expect("cut");
    assert!(!path.exists(), "{cut:?}");
    assert_eq!(cut.files_removed, vec![std::path::PathBuf::from("new")]);
}

#[test]
fn fsync_fails_with_eio_and_writes_with_enospc_on_command() {
    let Some(fs) = mounted() else { return };
    let mut file =
        OpenOptions::new().create_new(true).read(true).write(true).open(fs.path().join("f")).expect("create");
    file.write_all(b"abc").expect("write");
    fs.fail_fsync(true);
    assert_eq!(file.sync_data().expect_err("fdatasync fails").raw_os_error(), Some(5));
    fs.fail_fsync(false);
    file.sync_data().expect("fdatasync again");
    fs.disk_full(true);
    let error = file.write_all(b"more").expect_err("no space");
    assert_eq!(error.kind(), ErrorKind::StorageFull);
    fs.disk_full(false);
    file.write_all(b"more").expect("space again");
    assert_eq!((fs.failed_fsyncs(), fs.refused_writes() >= 1, fs.fsyncs()), (1, true, 1));
}
