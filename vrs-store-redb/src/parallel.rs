//! Parallel chunk scans: per-chunk work over one key range (one municipality's keys of a
//! table) on a few worker threads that share one read snapshot, the results handed to a
//! consumer in key order with bounded memory.
//!
//! The range is cut into many more chunks than workers ([`Chunks`]), so that a skewed
//! distribution of keys only costs balance, never correctness. Workers claim chunks in
//! order, but never more than a bounded window ahead of the consumer: at most `window`
//! results wait for their turn, whatever the size of the range. Every worker reads the
//! same [`ReadOnlyTable`] of the same `ReadTransaction`, so a scan sees one snapshot, as a
//! sequential scan does.
//!
//! Used by the ledger export and meant for every other large scan of one municipality
//! (the Arrow dose and resident columns): the per-chunk work is generic (`T: Send`).

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use redb::{ReadOnlyTable, Value};
use vrs_core::{Error, Result};

use crate::ops::storage;
use crate::schema::{Bytes, prefix_end};

// Workers share the table (and so its transaction) by reference: it must be `Sync`.
const _: () = {
    const fn shared_across_threads<T: Send + Sync>() {}
    shared_across_threads::<redb::ReadTransaction>();
    shared_across_threads::<ReadOnlyTable<Bytes, Bytes>>();
};

/// Chunks a scan cuts a range into by default: many more than workers, so that a chunk of
/// dense keys delays the others little, and small enough that the results waiting in the
/// window stay a few MiB for a municipality of a million doses.
pub(crate) const CHUNKS: usize = 128;

/// How many workers a parallel scan runs: the machine's parallelism, at least 2 (so the
/// consumer's own work overlaps theirs) and at most 4 (the scans are bounded by memory
/// bandwidth and the consumer well before that).
pub(crate) fn workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 4)
}

/// A key range cut into consecutive chunks: chunk `i` holds the keys from `starts[i]`
/// (inclusive) to `starts[i + 1]`, the last one to `end` (exclusive; `None`: no bound).
/// Together they hold every key of the range exactly once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Chunks {
    starts: Vec<Vec<u8>>,
    end: Option<Vec<u8>>,
    /// Whether each chunk's range is handed to the work without its end ([`open`](Self::open)).
    open: bool,
}

impl Chunks {
    /// Cuts the keys of `table` that start with `prefix` into about `n` chunks, reading only
    /// the range's first and last key. Each chunk after the first starts at `prefix`
    /// followed by `width` decimal digits, the digits space between the first and the last
    /// key's cut evenly. A chunk start of that length never falls inside a group of keys
    /// sharing those digits: for the `doses` table, `width` 10 after a municipality keeps all
    /// the doses of a voucher, and its slot keys, in one chunk. No chunk when the range is
    /// empty; one when the keys do not hold digits there.
    pub(crate) fn by_digits<V: Value + 'static>(table: &ReadOnlyTable<Bytes, V>, prefix: &[u8], width: usize, n: usize) -> Result<Self> {
        let end = prefix_end(prefix);
        let mut range = match end.as_deref() {
            Some(end) => table.range::<&[u8]>(prefix..end),
            None => table.range::<&[u8]>(prefix..),
        }
        .map_err(storage("cutting a range into chunks"))?;
        let cut = storage("cutting a range into chunks");
        let digits = |k: redb::AccessGuard<'_, Bytes>| decimal(k.value().get(prefix.len()..prefix.len() + width));
        let Some((first, _)) = range.next().transpose().map_err(cut)? else {
            return Ok(Self::from_starts(Vec::new(), end));
        };
        let first = digits(first);
        let last = match range.next_back().transpose().map_err(storage("cutting a range into chunks"))? {
            Some((k, _)) => digits(k),
            None => first,
        };
        let mut starts = vec![prefix.to_vec()];
        cut_between(&mut starts, prefix, first, last, width, n);
        Ok(Self::from_starts(starts, end))
    }

    /// Cuts the keys of `table` from `start` (inclusive) to `end` (exclusive; `None`: no
    /// bound) into about `n` chunks as [`by_digits`](Self::by_digits) does within `prefix`
    /// (which `start` and every key of the range begin with): the first chunk starts at
    /// `start`, the others at `prefix` and `width` digits strictly above the digits of
    /// `start`'s first key. One chunk (from `start`) when the range is empty.
    pub(crate) fn between<V: Value + 'static>(
        table: &ReadOnlyTable<Bytes, V>,
        prefix: &[u8],
        start: &[u8],
        end: Option<&[u8]>,
        width: usize,
        n: usize,
    ) -> Result<Self> {
        let cut = || storage("cutting a range into chunks");
        let mut range = match end {
            Some(end) => table.range::<&[u8]>(start..end),
            None => table.range::<&[u8]>(start..),
        }
        .map_err(cut())?;
        let digits = |k: redb::AccessGuard<'_, Bytes>| decimal(k.value().get(prefix.len()..prefix.len() + width));
        let mut starts = vec![start.to_vec()];
        if let Some((first, _)) = range.next().transpose().map_err(cut())? {
            let first = digits(first);
            let last = range.next_back().transpose().map_err(cut())?.map_or(first, |(k, _)| digits(k));
            cut_between(&mut starts, prefix, first, last, width, n);
        }
        Ok(Self::from_starts(starts, end.map(<[u8]>::to_vec)))
    }

    /// Chunks starting at `starts` (ascending), the last one running to `end`, each handed
    /// to the work with its end (every constructor comes here; only [`open`](Self::open)
    /// drops the ends).
    pub(crate) fn from_starts(starts: Vec<Vec<u8>>, end: Option<Vec<u8>>) -> Self {
        Self { starts, end, open: false }
    }

    /// Where each chunk starts, in order.
    pub(crate) fn starts(&self) -> &[Vec<u8>] {
        &self.starts
    }

    /// Where the last chunk ends (`None`: no bound).
    pub(crate) fn end(&self) -> Option<&[u8]> {
        self.end.as_deref()
    }

    /// Cuts the `residents` (or `moved_in`) keys of municipality `m`, m · length byte ·
    /// addressee digits, into about `n` chunks per addressee length present (the keys of
    /// each length are a run of their own, in the order of their lengths): within each
    /// run, as [`by_digits`](Self::by_digits) does with the length as the width. Reads the
    /// first and last key of the range and of each length between theirs.
    pub(crate) fn by_addressee<V: Value + 'static>(table: &ReadOnlyTable<Bytes, V>, m: &[u8], n: usize) -> Result<Self> {
        let end = prefix_end(m);
        let cut = || storage("cutting a range into chunks");
        let mut range = match end.as_deref() {
            Some(end) => table.range::<&[u8]>(m..end),
            None => table.range::<&[u8]>(m..),
        }
        .map_err(cut())?;
        let length = |k: redb::AccessGuard<'_, Bytes>| k.value().get(m.len()).copied();
        let Some(first) = range.next().transpose().map_err(cut())?.and_then(|(k, _)| length(k)) else {
            return Ok(Self::from_starts(Vec::new(), end));
        };
        let last = range.next_back().transpose().map_err(cut())?.and_then(|(k, _)| length(k)).unwrap_or(first);
        let mut starts = Vec::new();
        for len in first..=last.max(first) {
            let mut prefix = m.to_vec();
            prefix.push(len);
            let run = Self::by_digits(table, &prefix, usize::from(len), n)?;
            starts.extend(run.starts);
        }
        Ok(Self::from_starts(starts, end))
    }

    /// One chunk per key of `table` that starts with `prefix`, for tables whose every
    /// value is a large piece of work (the `resident_columns` segments).
    pub(crate) fn by_key<V: Value + 'static>(table: &ReadOnlyTable<Bytes, V>, prefix: &[u8]) -> Result<Self> {
        let end = prefix_end(prefix);
        let range = match end.as_deref() {
            Some(end) => table.range::<&[u8]>(prefix..end),
            None => table.range::<&[u8]>(prefix..),
        }
        .map_err(storage("cutting a range into chunks"))?;
        let starts = range
            .map(|e| e.map(|(k, _)| k.value().to_vec()).map_err(storage("cutting a range into chunks")))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::from_starts(starts, end))
    }

    /// The same chunks, each handed to the work as a range without an end: the work stops
    /// at [`chunk_end`](Self::chunk_end) itself. redb compares every key of a range with
    /// its end (a call of `memcmp`); a work that reads the keys anyway can test them for
    /// less.
    pub(crate) fn open(self) -> Self {
        Self { open: true, ..self }
    }

    /// Where chunk `i` ends (exclusive; `None`: no bound).
    pub(crate) fn chunk_end(&self, i: usize) -> Option<&[u8]> {
        self.starts.get(i + 1).or(self.end.as_ref()).map(Vec::as_slice)
    }

    /// How many chunks.
    pub(crate) fn len(&self) -> usize {
        self.starts.len()
    }

    /// The keys of chunk `i` in `table`, in order (and the keys after it, when [`open`](Self::open)).
    fn range<V: Value + 'static>(&self, table: &ReadOnlyTable<Bytes, V>, i: usize) -> Result<redb::Range<'static, Bytes, V>> {
        let start = self.starts.get(i).map(Vec::as_slice).unwrap_or_default();
        match self.chunk_end(i).filter(|_| !self.open) {
            Some(end) => table.range::<&[u8]>(start..end),
            None => table.range::<&[u8]>(start..),
        }
        .map_err(storage("scanning a chunk of a range"))
    }
}

/// Appends to `starts` the starts of about `n - 1` more chunks: `prefix` followed by
/// `width` digits spread evenly above `first` up to `last` (the digits of the range's first
/// and last key).
fn cut_between(starts: &mut Vec<Vec<u8>>, prefix: &[u8], first: Option<u64>, last: Option<u64>, width: usize, n: usize) {
    if let (Some(lo), Some(hi)) = (first, last)
        && hi > lo
    {
        let span = u128::from(hi - lo) + 1;
        let n = n.max(1) as u128;
        let mut previous = lo;
        for j in 1..n {
            // Below `hi`, which is below 10^width: it has `width` digits at most.
            let b = lo + (span * j / n) as u64;
            if b > previous {
                let mut start = prefix.to_vec();
                start.extend_from_slice(format!("{b:0width$}").as_bytes());
                starts.push(start);
                previous = b;
            }
        }
    }
}

/// The number written by `digits`, when they are all ASCII digits (at most 19).
fn decimal(digits: Option<&[u8]>) -> Option<u64> {
    let d = digits.filter(|d| d.len() <= 19 && d.iter().all(u8::is_ascii_digit))?;
    Some(d.iter().fold(0, |n, b| n * 10 + u64::from(b - b'0')))
}

/// What the workers and the consumer share.
struct State<T> {
    /// The next chunk a worker may claim.
    next: usize,
    /// Chunks the consumer has taken (all below this).
    taken: usize,
    /// Finished chunks waiting for the consumer, by index.
    ready: BTreeMap<usize, T>,
    /// The first error a worker met.
    failed: Option<Error>,
    /// Set when the scan ends early (consumer stopped, or an error): workers claim no more.
    stop: bool,
    /// Workers still running.
    running: usize,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    changed: Condvar,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A worker that panicked holding the lock changed nothing half-way worth refusing.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State<T>>) -> MutexGuard<'a, State<T>> {
        self.changed.wait(guard).unwrap_or_else(PoisonError::into_inner)
    }
}

/// Marks a worker's end (even by a panic), so the consumer never waits for it in vain.
struct WorkerExit<'a, T>(&'a Shared<T>);

impl<T> Drop for WorkerExit<'_, T> {
    fn drop(&mut self) {
        self.0.lock().running -= 1;
        self.0.changed.notify_all();
    }
}

/// Tells the workers to claim no more chunks once the consumer returns, however it does.
struct ConsumerExit<'a, T>(&'a Shared<T>);

impl<T> Drop for ConsumerExit<'_, T> {
    fn drop(&mut self) {
        self.0.lock().stop = true;
        self.0.changed.notify_all();
    }
}

/// Runs `work` over every chunk of `chunks` in `table` on `workers` threads (at least one)
/// that share the table, and hands each chunk's result to `consume` in chunk (key) order,
/// on the calling thread. At most `2 × workers` results wait for the consumer at a time.
///
/// `consume` answers `Ok(false)` to stop the scan: workers then claim no further chunk
/// (those already started finish and are dropped) and the scan returns `Ok(())`. The first
/// error of a worker (or of `consume`) stops the scan the same way and is returned. Returns
/// once every worker has ended.
pub(crate) fn scan_chunks<V, T, W, C>(table: &ReadOnlyTable<Bytes, V>, chunks: &Chunks, workers: usize, work: W, consume: C) -> Result<()>
where
    V: Value + 'static,
    ReadOnlyTable<Bytes, V>: Sync,
    T: Send,
    W: Fn(redb::Range<'static, Bytes, V>) -> Result<T> + Sync,
    C: FnMut(T) -> Result<bool>,
{
    scan_chunks_indexed(table, chunks, workers, |_, range| work(range), consume)
}

/// [`scan_chunks`], telling `work` which chunk (its index in `chunks`) it works on.
pub(crate) fn scan_chunks_indexed<V, T, W, C>(
    table: &ReadOnlyTable<Bytes, V>,
    chunks: &Chunks,
    workers: usize,
    work: W,
    mut consume: C,
) -> Result<()>
where
    V: Value + 'static,
    ReadOnlyTable<Bytes, V>: Sync,
    T: Send,
    W: Fn(usize, redb::Range<'static, Bytes, V>) -> Result<T> + Sync,
    C: FnMut(T) -> Result<bool>,
{
    let n = chunks.len();
    let workers = workers.clamp(1, n.max(1));
    let window = 2 * workers;
    let shared = Shared {
        state: Mutex::new(State { next: 0, taken: 0, ready: BTreeMap::new(), failed: None, stop: false, running: workers }),
        changed: Condvar::new(),
    };
    let (shared, work) = (&shared, &work);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(move || {
                let _exit = WorkerExit(shared);
                loop {
                    let i = {
                        let mut st = shared.lock();
                        while !st.stop && st.next < n && st.next >= st.taken + window {
                            st = shared.wait(st);
                        }
                        if st.stop || st.next >= n {
                            return;
                        }
                        st.next += 1;
                        st.next - 1
                    };
                    let result = chunks.range(table, i).and_then(|range| work(i, range));
                    let mut st = shared.lock();
                    match result {
                        Ok(t) => {
                            st.ready.insert(i, t);
                        }
                        Err(e) => {
                            st.failed.get_or_insert(e);
                            st.stop = true;
                        }
                    }
                    drop(st);
                    shared.changed.notify_all();
                }
            });
        }
        let _exit = ConsumerExit(shared);
        for i in 0..n {
            let t = {
                let mut st = shared.lock();
                loop {
                    if let Some(e) = st.failed.take() {
                        return Err(e);
                    }
                    if let Some(t) = st.ready.remove(&i) {
                        st.taken = i + 1;
                        break t;
                    }
                    if st.running == 0 {
                        // Only a panicking worker ends without handing its chunk over; the
                        // scope re-raises its panic when this returns.
                        return Err(Error::Storage { message: format!("a scan worker ended without chunk {i}"), source: None });
                    }
                    st = shared.wait(st);
                }
            };
            shared.changed.notify_all();
            if !consume(t)? {
                return Ok(());
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use redb::{Database, ReadableDatabase, TableDefinition};

    use super::*;

    const T: TableDefinition<Bytes, Bytes> = TableDefinition::new("t");

    /// A database whose table holds, for each voucher, `per` dose-like keys (m · voucher ·
    /// 2 bytes) and one slot-like key (m · voucher · 1 byte), plus keys of two neighbouring
    /// municipalities.
    fn db(m: &str, vouchers: &[u64], per: u8) -> Database {
        let db = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()).unwrap();
        let w = db.begin_write().unwrap();
        {
            let mut t = w.open_table(T).unwrap();
            for other in ["131008", "131024"] {
                t.insert(format!("{other}0000000001xx").as_bytes(), b"other".as_slice()).unwrap();
            }
            for v in vouchers {
                let voucher = format!("{m}{v:010}");
                t.insert(format!("{voucher}s").as_bytes(), b"slot".as_slice()).unwrap();
                for d in 0..per {
                    t.insert(format!("{voucher}d{d}").as_bytes(), voucher.as_bytes()).unwrap();
                }
            }
        }
        w.commit().unwrap();
        db
    }

    /// Every key of `m` in the order the scan handed them over, grouped by chunk.
    fn scan(db: &Database, m: &str, n: usize, workers: usize) -> Vec<Vec<Vec<u8>>> {
        let r = db.begin_read().unwrap();
        let t = r.open_table(T).unwrap();
        let chunks = Chunks::by_digits(&t, m.as_bytes(), 10, n).unwrap();
        let mut out = Vec::new();
        scan_chunks(
            &t,
            &chunks,
            workers,
            |range| range.map(|e| e.map(|(k, _)| k.value().to_vec()).map_err(storage("test"))).collect::<Result<Vec<_>>>(),
            |keys| {
                out.push(keys);
                Ok(true)
            },
        )
        .unwrap();
        out
    }

    fn sequential(db: &Database, m: &str) -> Vec<Vec<u8>> {
        let r = db.begin_read().unwrap();
        let t = r.open_table(T).unwrap();
        let end = prefix_end(m.as_bytes()).unwrap();
        t.range::<&[u8]>(m.as_bytes()..end.as_slice()).unwrap().map(|e| e.unwrap().0.value().to_vec()).collect()
    }

    #[test]
    fn every_key_once_in_order_and_vouchers_whole() {
        // Skewed: dense at the start, sparse after.
        let vouchers: Vec<u64> = (1..500).chain((1..100).map(|i| i * 97_003_301)).collect();
        let db = db("131016", &vouchers, 3);
        for workers in [1, 2, 4] {
            let chunks = scan(&db, "131016", 64, workers);
            assert!(chunks.len() > 8, "{} chunks", chunks.len());
            assert_eq!(chunks.concat(), sequential(&db, "131016"));
            // No voucher is cut between two chunks.
            let mut seen = std::collections::HashSet::new();
            for chunk in &chunks {
                let mut here: Vec<&[u8]> = chunk.iter().map(|k| &k[..16]).collect();
                here.dedup();
                for v in here {
                    assert!(seen.insert(v.to_vec()), "voucher {:?} in two chunks", String::from_utf8_lossy(v));
                }
            }
        }
    }

    #[test]
    fn addressees_of_several_lengths_each_once_in_order() {
        let db = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()).unwrap();
        let w = db.begin_write().unwrap();
        let mut keys = Vec::new();
        {
            let mut t = w.open_table(T).unwrap();
            t.insert(b"131008\x03999".as_slice(), b"other".as_slice()).unwrap();
            t.insert(b"131024\x01\x31".as_slice(), b"other".as_slice()).unwrap();
            for (len, count) in [(1u8, 10u64), (3, 700), (6, 2000)] {
                for i in 0..count {
                    let mut k = b"131016".to_vec();
                    k.push(len);
                    k.extend_from_slice(format!("{:0w$}", i * 7 % 10u64.pow(len.into()), w = usize::from(len)).as_bytes());
                    t.insert(k.as_slice(), b"resident".as_slice()).unwrap();
                    keys.push(k);
                }
            }
        }
        w.commit().unwrap();
        keys.sort();
        keys.dedup();
        let r = db.begin_read().unwrap();
        let t = r.open_table(T).unwrap();
        let chunks = Chunks::by_addressee(&t, b"131016", 16).unwrap();
        assert!(chunks.len() > 16, "{} chunks", chunks.len());
        let mut seen = Vec::new();
        scan_chunks(
            &t,
            &chunks,
            3,
            |range| range.map(|e| e.map(|(k, _)| k.value().to_vec()).map_err(storage("test"))).collect::<Result<Vec<_>>>(),
            |chunk| {
                seen.extend(chunk);
                Ok(true)
            },
        )
        .unwrap();
        assert_eq!(seen, keys);
        let empty = Chunks::by_addressee(&t, b"131032", 16).unwrap();
        assert_eq!(empty.len(), 0);
    }

    #[test]
    fn an_empty_range_has_no_chunk() {
        let db = db("131016", &[], 2);
        let r = db.begin_read().unwrap();
        let t = r.open_table(T).unwrap();
        assert_eq!(Chunks::by_digits(&t, b"131016", 10, 64).unwrap().len(), 0);
        assert!(scan(&db, "131016", 64, 2).is_empty());
    }

    #[test]
    fn one_voucher_is_one_chunk() {
        let db = db("131016", &[1234567890], 4);
        let chunks = scan(&db, "131016", 64, 2);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].len(), 5);
        assert_eq!(chunks.concat(), sequential(&db, "131016"));
    }

    #[test]
    fn keys_without_digits_make_one_chunk() {
        let db = db("131016", &[], 0);
        let r = db.begin_read().unwrap();
        let t = r.open_table(T).unwrap();
        let chunks = Chunks::by_digits(&t, b"13100", 10, 64).unwrap();
        assert_eq!(chunks.len(), 1);
    }

    #[test]
    fn a_stop_from_the_consumer_stops_the_workers() {
        let vouchers: Vec<u64> = (0..1000).collect();
        let db = db("131016", &vouchers, 1);
        let r = db.begin_read().unwrap();
        let t = r.open_table(T).unwrap();
        let chunks = Chunks::by_digits(&t, b"131016", 10, 200).unwrap();
        assert_eq!(chunks.len(), 200);
        let worked = AtomicUsize::new(0);
        let mut consumed = 0;
        scan_chunks(
            &t,
            &chunks,
            2,
            |range| {
                worked.fetch_add(1, Ordering::Relaxed);
                Ok(range.count())
            },
            |_| {
                consumed += 1;
                Ok(consumed < 3)
            },
        )
        .unwrap();
        assert_eq!(consumed, 3);
        // Claims run at most a window (2 × workers) ahead of what the consumer took.
        assert!(worked.load(Ordering::Relaxed) <= 3 + 4, "{} chunks worked", worked.load(Ordering::Relaxed));
    }

    #[test]
    fn an_error_in_a_worker_reaches_the_caller() {
        let vouchers: Vec<u64> = (0..1000).collect();
        let db = db("131016", &vouchers, 1);
        let r = db.begin_read().unwrap();
        let t = r.open_table(T).unwrap();
        let chunks = Chunks::by_digits(&t, b"131016", 10, 100).unwrap();
        let worked = AtomicUsize::new(0);
        let mut consumed = 0;
        let result = scan_chunks(
            &t,
            &chunks,
            2,
            |mut range| {
                worked.fetch_add(1, Ordering::Relaxed);
                let (k, _) = range.next().unwrap().unwrap();
                if k.value().starts_with(b"1310160000000500") {
                    return Err(Error::Storage { message: "chunk of voucher 500 is bad".into(), source: None });
                }
                Ok(())
            },
            |()| {
                consumed += 1;
                Ok(true)
            },
        );
        let e = result.unwrap_err();
        assert!(e.to_string().contains("voucher 500"), "{e}");
        assert!(consumed <= 50, "{consumed} chunks consumed");
        assert!(worked.load(Ordering::Relaxed) < 100);
    }

    #[test]
    fn an_error_of_the_consumer_is_returned() {
        let db = db("131016", &(0..100).collect::<Vec<_>>(), 1);
        let r = db.begin_read().unwrap();
        let t = r.open_table(T).unwrap();
        let chunks = Chunks::by_digits(&t, b"131016", 10, 10).unwrap();
        let result =
            scan_chunks(&t, &chunks, 2, |range| Ok(range.count()), |_| Err(Error::Storage { message: "full".into(), source: None }));
        assert!(result.unwrap_err().to_string().contains("full"));
    }
}
