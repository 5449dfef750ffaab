//! What a power cut would take back from one file: its size and the content of
//! every page it had at its last fsync and has changed since.
//!
//! Writes go through to the backing file at once (so reads, mmap and every other
//! process see them, as the page cache would show them); before a write or a
//! truncation first changes a page that was durable, the page's durable bytes are
//! kept here. An fsync forgets them (the file as it is now is durable); a power cut
//! puts them back and cuts the file to its durable size. So the writes since the
//! last fsync are exactly what a cut drops, and nothing an fsync covered is lost.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The unit in which durable content is remembered.
const PAGE: u64 = 4096;

/// One file's changes since its last fsync.
#[derive(Debug)]
pub(crate) struct Unsynced {
    /// The file's size at its last fsync.
    durable_len: u64,
    /// Page number → the page's bytes at the last fsync (shorter than a page at the
    /// durable end of the file). Only pages below `durable_len` are kept: what lies
    /// beyond it goes when the file is cut back to that size.
    pages: HashMap<u64, Vec<u8>>,
}

impl Unsynced {
    /// Starts remembering `file`, whose current state is durable.
    pub(crate) fn new(file: &File) -> io::Result<Unsynced> {
        Ok(Unsynced { durable_len: file.metadata()?.len(), pages: HashMap::new() })
    }

    /// A file created since the last power cut: durable with nothing in it.
    pub(crate) fn empty() -> Unsynced {
        Unsynced { durable_len: 0, pages: HashMap::new() }
    }

    /// Keeps the durable bytes of every page that `[start, end)` touches and that
    /// has not changed since the last fsync. Called before that range of `file` is
    /// written or cut off.
    pub(crate) fn before_change(&mut self, file: &File, start: u64, end: u64) -> io::Result<()> {
        let end = end.min(self.durable_len);
        if start >= end {
            return Ok(());
        }
        for page in start / PAGE..end.div_ceil(PAGE) {
            if self.pages.contains_key(&page) {
                continue;
            }
            let offset = page * PAGE;
            let mut bytes = vec![0; (self.durable_len - offset).min(PAGE) as usize];
            // Every page below the durable size that has not changed is still in the
            // file (a truncation keeps what it cuts off here first).
            file.read_exact_at(&mut bytes, offset)?;
            self.pages.insert(page, bytes);
        }
        Ok(())
    }

    /// How many bytes a power cut would put back.
    pub(crate) fn bytes(&self) -> u64 {
        self.pages.values().map(|p| p.len() as u64).sum()
    }

    /// Puts `file` back as it was at its last fsync.
    pub(crate) fn restore(&self, file: &File) -> io::Result<()> {
        for (page, bytes) in &self.pages {
            file.write_all_at(bytes, page * PAGE)?;
        }
        file.set_len(self.durable_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(bytes: &[u8]) -> File {
        let file = tempfile::tempfile().expect("file");
        file.write_all_at(bytes, 0).expect("write");
        file
    }

    fn content(file: &File) -> Vec<u8> {
        let mut bytes = vec![0; file.metadata().expect("len").len() as usize];
        file.read_exact_at(&mut bytes, 0).expect("read");
        bytes
    }

    #[test]
    fn restore_undoes_overwrites_and_growth() {
        let durable: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let file = file_with(&durable);
        let mut unsynced = Unsynced::new(&file).expect("new");
        for (offset, len) in [(4090u64, 20usize), (9_990, 5_000), (0, 1)] {
            unsynced.before_change(&file, offset, offset + len as u64).expect("keep");
            file.write_all_at(&vec![0xee; len], offset).expect("write");
        }
        unsynced.restore(&file).expect("restore");
        assert_eq!(content(&file), durable);
    }

    #[test]
    fn restore_undoes_a_truncation_then_regrowth() {
        let durable = vec![7u8; 9_000];
        let file = file_with(&durable);
        let mut unsynced = Unsynced::new(&file).expect("new");
        unsynced.before_change(&file, 100, u64::MAX).expect("keep");
        file.set_len(100).expect("truncate");
        unsynced.before_change(&file, 100, 12_000).expect("keep");
        file.write_all_at(&[1; 11_900], 100).expect("write");
        unsynced.restore(&file).expect("restore");
        assert_eq!(content(&file), durable);
    }

    #[test]
    fn a_file_empty_at_its_last_fsync_comes_back_empty() {
        let file = file_with(&[]);
        let mut unsynced = Unsynced::empty();
        unsynced.before_change(&file, 0, 5).expect("keep");
        file.write_all_at(b"hello", 0).expect("write");
        assert_eq!(unsynced.bytes(), 0);
        unsynced.restore(&file).expect("restore");
        assert!(content(&file).is_empty());
    }
}
