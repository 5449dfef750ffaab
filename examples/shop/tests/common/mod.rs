//! What the shop's integration tests share: a fresh database per test on each
//! backend, and a small deterministic random source for the shopping they do.

#![allow(dead_code)] // each test file uses a different part

use rewind_backend::Database;
use uuid::Uuid;

/// A fresh SQLite file, removed with the returned directory.
pub fn sqlite() -> (Database, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let database = format!("sqlite://{}", dir.path().join("shop.db").display()).parse().expect("sqlite URL");
    (database, dir)
}

/// A fresh schema in `TEST_DATABASE_URL`'s database, or `None` (with a notice)
/// when it is unset.
pub fn postgres(test: &str) -> Option<Database> {
    let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
        eprintln!("skipping {test}: TEST_DATABASE_URL is not set");
        return None;
    };
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{separator}schema=shop_{}", Uuid::new_v4().simple());
    Some(url.parse().expect("TEST_DATABASE_URL is a postgres:// URL"))
}

/// xorshift64*: the same shopping on every run, without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }

    /// True one time in `n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}
