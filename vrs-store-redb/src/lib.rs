//! The embedded vrs store: [`vrs_core::store::StoreBackend`] on [redb](https://docs.rs/redb).
//!
//! One file holds everything: residents, doses with every version, findings, tablet
//! accounts, statistics counters and the audit trail, each in tables whose keys lead with
//! the issuing municipality (the layout is described in the `schema` module). A change set
//! is applied in one durable write transaction, all or nothing.
//!
//! redb blocks, so every call runs on the [`blocking`] thread pool, never on the caller's
//! async executor: the store works under tokio, async-std, or a plain `block_on` from
//! Python or mobile bindings alike. Scans stream records to the visitor in chunks over a
//! bounded channel, so a municipality of millions is never held in memory at once. The
//! ledger export's scan decodes and formats chunks of whole vouchers on a few threads that
//! share one read snapshot, handing the rows on in voucher order (the `parallel` module).
//!
//! The dose columns of a full voucher-order scan
//! ([`scan_dose_columns`](vrs_core::store::StoreBackend::scan_dose_columns) without a
//! cursor, Python's `doses()`) are served from a read-side cache kept in the file: segments
//! of about 32k doses stored as columns, each valid while no dose of its range was written
//! after it was built. Registrations and imports never touch it; the first full read after
//! writes decodes the changed ranges from the dose records and stores their segments again
//! (the first read of a municipality builds them all, and costs several times a later
//! read). Deleting it loses nothing: the next read rebuilds it.
//!
//! A municipality's resident columns
//! ([`scan_resident_columns`](vrs_core::store::StoreBackend::scan_resident_columns),
//! Python's `residents()`) are cached the same way: an import counts itself per
//! municipality and writes no columns; the first column read after it decodes the resident
//! records and stores the municipality's segments, valid until its next import.
//!
//! ```
//! # fn main() -> vrs_core::Result<()> {
//! use vrs_store_redb::RedbStore;
//!
//! let dir = tempfile::tempdir().map_err(|e| vrs_core::Error::storage("temp dir", e))?;
//! let store = RedbStore::open(dir.path().join("vrs.redb"))?;
//! let store: vrs_core::store::DynStore = std::sync::Arc::new(store);
//! # let _ = store;
//! # Ok(())
//! # }
//! ```

mod ops;
mod parallel;
mod schema;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::NaiveDate;
use redb::{Database, Durability};
use vrs_core::access::TabletAccount;
use vrs_core::columns::{DoseColumns, ResidentColumns};
use vrs_core::dose::DoseRecord;
use vrs_core::finding::Finding;
use vrs_core::ids::{AccountId, DoseId, MunicipalityCode, PersonRef, SiteId, VoucherRef};
use vrs_core::ledger::{LedgerDoses, LedgerFormat, LedgerRows};
use vrs_core::resident::Resident;
use vrs_core::stats::{StatsQuery, StatsRow};
use vrs_core::store::{
    Applied, AuditEvent, ChangeSet, DoseScan, ImportApplied, MovedIn, PersonContext, PersonQuery, ResidentSource, StoreBackend, Visit,
};
use vrs_core::{Error, Result};

use crate::ops::storage;

/// Chunks of a scan that may wait in the channel while the visitor works.
const SCAN_CHANNEL: usize = 4;

/// redb's own default cache size, the least [`default_cache_bytes`] gives: 1 GiB.
pub const MIN_CACHE_BYTES: usize = 1 << 30;

/// The cache [`RedbStore::open`] gives a store file of `file_len` bytes: room for the whole
/// file and an eighth more (so that a full scan reads each page from the file once per
/// process), at least [`MIN_CACHE_BYTES`], at most half the machine's memory (Linux:
/// `MemTotal` of /proc/meminfo; elsewhere the cache stays at the minimum). The cache holds
/// only pages read or written, so a large bound costs nothing until they are.
pub fn default_cache_bytes(file_len: u64) -> usize {
    let want = usize::try_from(file_len.saturating_add(file_len / 8)).unwrap_or(usize::MAX);
    let half_memory = memory_bytes().map_or(MIN_CACHE_BYTES, |m| m / 2);
    want.min(half_memory).max(MIN_CACHE_BYTES)
}

/// Physical memory, from /proc/meminfo (Linux); `None` where it cannot be read.
fn memory_bytes() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: usize = info.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// The redb store. Cheap to clone (the database is shared); `Send + Sync`.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    /// How this handle's write transactions commit (see [`RedbStore::open_for_bulk_load`]).
    durability: Durability,
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens the store in the file at `path`, creating it when missing (its parent
    /// directory must exist). Blocks while redb opens (and, after a crash, repairs) the
    /// file: from async code, call it inside `blocking::unblock` or `spawn_blocking`.
    ///
    /// Fails with [`Error::Storage`] when the file is not a redb database, is held open by
    /// another process, or was written by an incompatible version of this store.
    ///
    /// The read cache is sized by [`default_cache_bytes`] for the file as it is now; use
    /// [`open_with_cache`](Self::open_with_cache) to choose it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let len = std::fs::metadata(path.as_ref()).map_or(0, |m| m.len());
        Self::open_with_cache(path, default_cache_bytes(len))
    }

    /// Opens the store as [`open`](Self::open) does, with a cache of `cache_bytes` (redb's
    /// page cache, for reads and pending writes). A full scan of a store larger than its
    /// cache reads every page from the file again (a copy through the kernel and an
    /// eviction per page): the Arrow read of 10M doses from a 6.7 GB file read 1.97 GB
    /// from it and took 1.3× the CPU with redb's 1 GiB default, nothing and 1× with the
    /// default here.
    pub fn open_with_cache(path: impl AsRef<Path>, cache_bytes: usize) -> Result<Self> {
        let db = Database::builder().set_cache_size(cache_bytes).create(path.as_ref()).map_err(storage("opening the store file"))?;
        Self::from_database(db)
    }

    /// Opens the store at `path` for loading a large amount of data, as [`open`](Self::open)
    /// does, except that this handle's writes commit without waiting for the disk: each
    /// commit is visible to readers at once but durable only after [`persist`](Self::persist).
    /// A crash before that loses every commit since the last durable one (never the file:
    /// redb reopens at its last durable commit). Seeding benchmarks and first loads use it
    /// to avoid one disk flush per bulk commit; call `persist` when the load is done.
    pub fn open_for_bulk_load(path: impl AsRef<Path>) -> Result<Self> {
        let mut store = Self::open(path)?;
        store.durability = Durability::None;
        Ok(store)
    }

    /// Makes every commit made so far durable: one durable (empty) commit, which in redb
    /// also persists the non-durable commits before it. Blocks; a no-op in effect for a
    /// store opened with [`open`](Self::open), whose commits are durable already.
    pub fn persist(&self) -> Result<()> {
        ops::persist(&self.db)
    }

    /// A fresh, empty store in memory (for tests, demos and tablets that sync elsewhere).
    pub fn in_memory() -> Result<Self> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(storage("creating an in-memory store"))?;
        Self::from_database(db)
    }

    fn from_database(db: Database) -> Result<Self> {
        ops::init(&db)?;
        Ok(Self { db: Arc::new(db), durability: Durability::Immediate })
    }

    /// Runs redb's integrity check (every page's checksum and the allocator state),
    /// repairing what it can. Returns `Ok(true)` when the file was intact, `Ok(false)` when
    /// it had to be repaired. Blocks; needs the only handle on the store (no clone alive,
    /// no call in flight), else fails with [`Error::Storage`].
    pub fn check_integrity(&mut self) -> Result<bool> {
        let Some(db) = Arc::get_mut(&mut self.db) else {
            return Err(Error::Storage {
                message: "checking integrity needs the only handle on the store (drop its clones first)".into(),
                source: None,
            });
        };
        db.check_integrity().map_err(storage("checking the store's integrity"))
    }

    /// Runs `f` on the blocking thread pool with the database.
    async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        blocking::unblock(move || f(&db)).await
    }

    /// Runs `produce` on the blocking thread pool, handing every chunk it sends to `visit`
    /// here. A visitor error closes the channel, which stops the producer, and is returned.
    async fn stream<T, R, F>(&self, produce: F, visit: Visit<'_, T>) -> Result<R>
    where
        T: Send + 'static,
        R: Send + 'static,
        F: FnOnce(&Database, &async_channel::Sender<Vec<T>>) -> Result<R> + Send + 'static,
    {
        let (tx, rx) = async_channel::bounded::<Vec<T>>(SCAN_CHANNEL);
        let db = Arc::clone(&self.db);
        let task = blocking::unblock(move || produce(&db, &tx));
        let mut stopped = None;
        'chunks: while let Ok(chunk) = rx.recv().await {
            for item in chunk {
                if let Err(e) = visit(item) {
                    stopped = Some(e);
                    break 'chunks;
                }
            }
        }
        drop(rx);
        // Wait for the producer to end, so its read transaction is closed when we return.
        let produced = task.await;
        match stopped {
            Some(e) => Err(e),
            None => produced,
        }
    }
}

#[async_trait]
impl StoreBackend for RedbStore {
    async fn resident(&self, person: &PersonRef) -> Result<Option<Resident>> {
        let key = schema::person_key(person);
        self.run(move |db| ops::resident(db, &key)).await
    }

    async fn resident_by_voucher(&self, voucher: VoucherRef) -> Result<Option<Resident>> {
        let key = schema::voucher_key(&voucher);
        self.run(move |db| ops::resident_by_voucher(db, key)).await
    }

    async fn residents_by_previous_voucher(&self, voucher: VoucherRef) -> Result<Vec<Resident>> {
        let key = schema::voucher_key(&voucher);
        self.run(move |db| ops::residents_by_previous_voucher(db, key)).await
    }

    async fn moved_in_residents(&self, municipality: MunicipalityCode) -> Result<Vec<Resident>> {
        self.run(move |db| ops::moved_in_residents(db, &municipality)).await
    }

    async fn moved_in_vouchers(&self, municipality: MunicipalityCode) -> Result<Vec<MovedIn>> {
        self.run(move |db| ops::moved_in_vouchers(db, &municipality)).await
    }

    async fn scan_residents(&self, municipality: MunicipalityCode, visit: Visit<'_, Resident>) -> Result<()> {
        self.stream(move |db, out| ops::scan_residents(db, &municipality, out), visit).await
    }

    async fn import_residents(&self, source: Box<dyn ResidentSource>) -> Result<(Box<dyn ResidentSource>, ImportApplied)> {
        let durability = self.durability;
        self.run(move |db| ops::import_residents(db, durability, source)).await
    }

    async fn dose(&self, id: DoseId) -> Result<Option<DoseRecord>> {
        self.run(move |db| ops::dose(db, &id)).await
    }

    async fn doses_by_voucher(&self, voucher: VoucherRef) -> Result<Vec<DoseRecord>> {
        let prefix = schema::voucher_key(&voucher);
        self.run(move |db| ops::doses_by_voucher(db, &prefix)).await
    }

    async fn doses_by_vouchers(&self, vouchers: &[VoucherRef]) -> Result<Vec<Vec<DoseRecord>>> {
        let keys: Vec<_> = vouchers.iter().map(schema::voucher_key).collect();
        self.run(move |db| ops::doses_by_vouchers(db, &keys)).await
    }

    async fn unmatched_doses(&self, municipality: MunicipalityCode) -> Result<Vec<DoseRecord>> {
        let prefix = schema::muni(&municipality);
        self.run(move |db| ops::doses_via(db, schema::UNMATCHED, &prefix)).await
    }

    async fn doses_by_site(&self, site: &SiteId, day: NaiveDate) -> Result<Vec<DoseRecord>> {
        let prefix = schema::site_day_prefix(site, day);
        self.run(move |db| ops::doses_via(db, schema::DOSES_BY_SITE, &prefix)).await
    }

    async fn scan_doses(&self, municipality: MunicipalityCode, scan: DoseScan, visit: Visit<'_, DoseRecord>) -> Result<u64> {
        self.stream(move |db, out| ops::scan_doses(db, &municipality, scan, out), visit).await
    }

    async fn scan_ledger_doses(&self, municipality: MunicipalityCode, visit: Visit<'_, LedgerDoses>) -> Result<u64> {
        self.stream(move |db, out| ops::scan_ledger_doses(db, &municipality, out), visit).await
    }

    async fn scan_ledger_rows(
        &self,
        municipality: MunicipalityCode,
        format: Arc<LedgerFormat>,
        visit: Visit<'_, LedgerRows>,
    ) -> Result<u64> {
        self.stream(move |db, out| ops::scan_ledger_rows(db, &municipality, &format, out), visit).await
    }

    async fn scan_dose_columns(
        &self,
        municipality: MunicipalityCode,
        scan: DoseScan,
        rows: usize,
        visit: Visit<'_, DoseColumns>,
    ) -> Result<u64> {
        self.stream(move |db, out| ops::scan_dose_columns(db, &municipality, scan, rows, out), visit).await
    }

    async fn scan_resident_columns(&self, municipality: MunicipalityCode, rows: usize, visit: Visit<'_, ResidentColumns>) -> Result<()> {
        self.stream(move |db, out| ops::scan_resident_columns(db, &municipality, rows, out), visit).await
    }

    async fn person_contexts(&self, queries: &[PersonQuery]) -> Result<Vec<PersonContext>> {
        let queries = queries.to_vec();
        self.run(move |db| ops::person_contexts(db, &queries)).await
    }

    async fn findings(&self, municipality: MunicipalityCode, open_only: bool) -> Result<Vec<Finding>> {
        self.run(move |db| ops::findings(db, &municipality, open_only)).await
    }

    async fn findings_for_dose(&self, dose: DoseId) -> Result<Vec<Finding>> {
        self.run(move |db| ops::findings_for_dose(db, &dose)).await
    }

    async fn account(&self, id: &AccountId) -> Result<Option<TabletAccount>> {
        let id = id.as_str().to_owned();
        self.run(move |db| ops::account(db, &id)).await
    }

    async fn accounts(&self, municipality: MunicipalityCode) -> Result<Vec<TabletAccount>> {
        self.run(move |db| ops::accounts(db, &municipality)).await
    }

    async fn account_secret(&self, id: &AccountId) -> Result<Option<vrs_core::credentials::SecretHash>> {
        let id = id.as_str().to_owned();
        self.run(move |db| ops::account_secret(db, &id)).await
    }

    async fn statistics(&self, query: StatsQuery) -> Result<Vec<StatsRow>> {
        self.run(move |db| ops::statistics(db, query)).await
    }

    async fn audit(&self, municipality: MunicipalityCode) -> Result<Vec<AuditEvent>> {
        self.run(move |db| ops::audit(db, &municipality)).await
    }

    async fn apply(&self, changes: Vec<ChangeSet>) -> Result<Applied> {
        let durability = self.durability;
        self.run(move |db| ops::apply(db, durability, changes)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cache_holds_the_file_within_bounds() {
        let gib = 1u64 << 30;
        assert_eq!(default_cache_bytes(0), MIN_CACHE_BYTES);
        assert_eq!(default_cache_bytes(gib / 2), MIN_CACHE_BYTES);
        let ceiling = memory_bytes().map_or(MIN_CACHE_BYTES, |m| (m / 2).max(MIN_CACHE_BYTES));
        for len in [2 * gib, 7 * gib, 1 << 50] {
            let cache = default_cache_bytes(len);
            assert!(cache >= MIN_CACHE_BYTES && cache <= ceiling, "{cache} for a file of {len}");
            assert!(cache as u64 >= (len + len / 8).min(ceiling as u64), "{cache} for a file of {len}");
        }
    }
}
