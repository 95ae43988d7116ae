//! The synchronous side: every redb transaction of the store. These functions block and
//! run on the `blocking` thread pool, never on an async executor's threads.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, PoisonError, mpsc};

use redb::{
    CursorError, Database, Durability, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, Table, TableDefinition,
    TableHandle, Value, WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use vrs_core::access::TabletAccount;
use vrs_core::credentials::SecretHash;
use vrs_core::dose::DoseRecord;
use vrs_core::finding::Finding;
use vrs_core::ids::{DoseId, MunicipalityCode};
use vrs_core::ledger::{LedgerBatch, LedgerDoses, LedgerFormat, LedgerRows};
use vrs_core::reconcile::vouchers_of;
use vrs_core::resident::Resident;
use vrs_core::stats::{StatsKey, StatsQuery, StatsRow, restated as restated_deltas, restates_statistics};
use vrs_core::store::{
    Applied, AuditEvent, ChangeSet, DoseScan, ImportApplied, MovedIn, PersonContext, PersonQuery, ResidentSource, person_vouchers,
    voucher_resident,
};
use vrs_core::{Error, Result};

use crate::parallel::{self, Chunks, scan_chunks, scan_chunks_indexed};
use crate::schema::*;

mod columns;
use columns::count_resident_imports;
pub(crate) use columns::{scan_dose_columns, scan_resident_columns};

/// Residents pulled from an import source at a time.
pub(crate) const IMPORT_BATCH: usize = 8192;
/// Records sent from a scan's read transaction to the visitor at a time.
pub(crate) const SCAN_CHUNK: usize = 1024;
/// Ledger doses (small, and read by the million) sent at a time.
pub(crate) const LEDGER_SCAN_CHUNK: usize = 1024;

/// Maps a redb (or postcard) error into [`Error::Storage`], saying what was being done.
pub(crate) fn storage<E: std::error::Error + Send + Sync + 'static>(what: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::storage(what, e)
}

fn conflict(what: String) -> Error {
    Error::Conflict { what }
}

fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    // Sized for a dose record at once: growing from empty reallocated it several times.
    postcard::to_extend(value, Vec::with_capacity(512)).map_err(storage(what))
}

fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(storage(what))
}

fn begin_read(db: &Database) -> Result<ReadTransaction> {
    db.begin_read().map_err(storage("starting a read transaction"))
}

/// A write transaction with redb's default durability, `Durability::Immediate`: its
/// commit returns once the data is on disk.
fn begin_write(db: &Database) -> Result<WriteTransaction> {
    db.begin_write().map_err(storage("starting a write transaction"))
}

/// A write transaction committing with `durability`: `Immediate` for every store but one
/// opened for a bulk load, whose commits are made durable later by [`persist`].
fn begin_write_with(db: &Database, durability: Durability) -> Result<WriteTransaction> {
    let mut txn = begin_write(db)?;
    if !matches!(durability, Durability::Immediate) {
        txn.set_durability(durability).map_err(storage("setting a write transaction's durability"))?;
    }
    Ok(txn)
}

/// One durable commit, which makes every non-durable commit before it durable too.
pub(crate) fn persist(db: &Database) -> Result<()> {
    commit(begin_write(db)?)
}

fn commit(txn: WriteTransaction) -> Result<()> {
    txn.commit().map_err(storage("committing a write transaction"))
}

/// Rolls back a write transaction after an error, keeping that error.
fn abort<T>(txn: WriteTransaction, error: Error) -> Result<T> {
    // An abort that fails leaves nothing committed either; the first error is the one to report.
    let _ = txn.abort();
    Err(error)
}

fn open_read<K: redb::Key + 'static, V: Value + 'static>(txn: &ReadTransaction, def: TableDefinition<K, V>) -> Result<ReadOnlyTable<K, V>> {
    txn.open_table(def).map_err(|e| Error::storage(format!("opening table {}", def.name()), e))
}

fn open_write<'t, K: redb::Key + 'static, V: Value + 'static>(
    txn: &'t WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<Table<'t, K, V>> {
    txn.open_table(def).map_err(|e| Error::storage(format!("opening table {}", def.name()), e))
}

/// Every key of `table` that starts with `prefix`, in order.
fn prefixed<'t, V, T>(table: &'t T, prefix: &[u8]) -> Result<redb::Range<'t, Bytes, V>>
where
    V: Value + 'static,
    T: ReadableTable<Bytes, V>,
{
    let end = prefix_end(prefix);
    let range = match end.as_deref() {
        Some(end) => table.range::<&[u8]>(prefix..end),
        None => table.range::<&[u8]>(prefix..),
    };
    range.map_err(storage("scanning a range"))
}

/// Creates every table and checks (or writes) the layout version.
pub(crate) fn init(db: &Database) -> Result<()> {
    let txn = begin_write(db)?;
    match init_tables(&txn) {
        Ok(()) => commit(txn),
        Err(e) => abort(txn, e),
    }
}

fn init_tables(txn: &WriteTransaction) -> Result<()> {
    open_write(txn, RESIDENTS)?;
    open_write(txn, RESIDENT_COLUMNS)?;
    open_write(txn, VOUCHERS)?;
    open_write(txn, PREVIOUS_VOUCHERS)?;
    open_write(txn, MOVED_IN)?;
    open_write(txn, DOSES)?;
    open_write(txn, DOSE_IDS)?;
    open_write(txn, DOSES_BY_SEQ)?;
    // Added in layout 4 without a version change (a cache): opening an older file creates it.
    open_write(txn, DOSE_SEGMENTS)?;
    open_write(txn, UNMATCHED)?;
    open_write(txn, DOSES_BY_SITE)?;
    open_write(txn, FINDINGS)?;
    open_write(txn, FINDINGS_BY_MUNICIPALITY)?;
    open_write(txn, ACCOUNTS)?;
    open_write(txn, ACCOUNTS_BY_MUNICIPALITY)?;
    // Added after layout 3 without a version change: opening an older file creates it.
    open_write(txn, ACCOUNT_SECRETS)?;
    open_write(txn, COUNTERS)?;
    open_write(txn, AUDIT)?;
    let mut meta = open_write(txn, META)?;
    let version = meta.get(META_SCHEMA).map_err(storage("reading the layout version"))?.map(|g| g.value());
    match version {
        None => {
            meta.insert(META_SCHEMA, SCHEMA_VERSION).map_err(storage("writing the layout version"))?;
            Ok(())
        }
        Some(SCHEMA_VERSION) => Ok(()),
        Some(old @ UPGRADABLE_SCHEMA_VERSION..SCHEMA_VERSION) => {
            // Indexes of rows the file already holds: rebuilt here, in the transaction
            // that writes the new version (`resident_columns` starts empty: the first
            // column reads build it).
            drop(meta);
            if old == UPGRADABLE_SCHEMA_VERSION {
                rebuild_site_index(txn)?;
            }
            rebuild_moved_in(txn)?;
            open_write(txn, META)?.insert(META_SCHEMA, SCHEMA_VERSION).map_err(storage("writing the layout version"))?;
            Ok(())
        }
        Some(other) => Err(Error::Storage {
            message: format!("the file has store layout version {other}; this build reads version {SCHEMA_VERSION}"),
            source: None,
        }),
    }
}

/// The upgrade from layout 4: `doses_by_site` keyed again, with each dose's sequence
/// number before its id. Part of the opening transaction, so a crash leaves the file at
/// version 4 and the next open upgrades it again. Holds the keys (about 45 bytes a dose)
/// in memory to write them in order.
fn rebuild_site_index(txn: &WriteTransaction) -> Result<()> {
    let mut keys = Vec::new();
    {
        let doses = open_write(txn, DOSES)?;
        for entry in doses.iter().map_err(storage("reading the doses to upgrade the site index"))? {
            let (k, v) = entry.map_err(storage("reading the doses to upgrade the site index"))?;
            if !is_dose_key(k.value()) {
                continue;
            }
            let dose: DoseRecord = decode("decoding a dose to upgrade the site index", v.value())?;
            keys.push(site_key(&dose.details().site, dose.registered_on_jst(), dose.seq, &dose.id));
        }
    }
    keys.sort_unstable();
    let mut by_site = open_write(txn, DOSES_BY_SITE)?;
    by_site.retain(|_, _| false).map_err(storage("clearing the site index to upgrade it"))?;
    for k in &keys {
        by_site.insert(k.as_slice(), ()).map_err(storage("writing the upgraded site index"))?;
    }
    Ok(())
}

/// The upgrade from layouts 4 and 5: the keys-only `moved_in` index replaced by
/// `moved_in_vouchers`, its values read from the residents it names. Part of the opening
/// transaction, as [`rebuild_site_index`] is.
fn rebuild_moved_in(txn: &WriteTransaction) -> Result<()> {
    let mut keys = Vec::new();
    {
        let old = open_write(txn, OLD_MOVED_IN)?;
        for entry in old.iter().map_err(storage("reading the moved-in index to upgrade it"))? {
            keys.push(entry.map_err(storage("reading the moved-in index to upgrade it"))?.0.value().to_vec());
        }
    }
    {
        let residents = open_write(txn, RESIDENTS)?;
        let mut moved_in = open_write(txn, MOVED_IN)?;
        for k in &keys {
            let value = get_resident(&residents, k)?.and_then(|r| r.previous.map(|p| moved_in_value(&r.voucher, &p)));
            if let Some(v) = value {
                moved_in.insert(k.as_slice(), &v).map_err(storage("writing the upgraded moved-in index"))?;
            }
        }
    }
    txn.delete_table(OLD_MOVED_IN).map_err(storage("removing the old moved-in index"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Residents

fn get_resident<T: ReadableTable<Bytes, Bytes>>(table: &T, key: &[u8]) -> Result<Option<Resident>> {
    match table.get(key).map_err(storage("reading a resident"))? {
        Some(g) => Ok(Some(decode("decoding a resident", g.value())?)),
        None => Ok(None),
    }
}

/// One resident by its `residents` key.
pub(crate) fn resident(db: &Database, key: &[u8]) -> Result<Option<Resident>> {
    let txn = begin_read(db)?;
    let residents = open_read(&txn, RESIDENTS)?;
    get_resident(&residents, key)
}

/// The resident holding a voucher.
pub(crate) fn resident_by_voucher(db: &Database, voucher: [u8; VOUCHER_KEY]) -> Result<Option<Resident>> {
    let txn = begin_read(db)?;
    holder_of(&open_read(&txn, VOUCHERS)?, &open_read(&txn, RESIDENTS)?, &voucher)
}

fn holder_of<V, R>(vouchers: &V, residents: &R, voucher: &[u8; VOUCHER_KEY]) -> Result<Option<Resident>>
where
    V: ReadableTable<Bytes, Bytes>,
    R: ReadableTable<Bytes, Bytes>,
{
    let Some(addressee) = vouchers.get(voucher.as_slice()).map_err(storage("reading the voucher index"))?.map(|g| g.value().to_vec())
    else {
        return Ok(None);
    };
    let mut key = Vec::with_capacity(M + addressee.len());
    key.extend_from_slice(&voucher[..M]);
    key.extend_from_slice(&addressee);
    get_resident(residents, &key)
}

/// Residents whose index keys (in `index`, under `prefix`) end with their `residents` key.
fn residents_via<V: Value + 'static>(db: &Database, index: TableDefinition<Bytes, V>, prefix: &[u8], skip: usize) -> Result<Vec<Resident>> {
    let txn = begin_read(db)?;
    residents_under(&open_read(&txn, index)?, &open_read(&txn, RESIDENTS)?, prefix, skip)
}

fn residents_under<V, I, R>(index: &I, residents: &R, prefix: &[u8], skip: usize) -> Result<Vec<Resident>>
where
    V: Value + 'static,
    I: ReadableTable<Bytes, V>,
    R: ReadableTable<Bytes, Bytes>,
{
    let mut out = Vec::new();
    for entry in prefixed(index, prefix)? {
        let (k, _) = entry.map_err(storage("scanning a resident index"))?;
        let key = k.value();
        if let Some(r) = get_resident(residents, key.get(skip..).unwrap_or_default())? {
            out.push(r);
        }
    }
    Ok(out)
}

/// Residents naming a voucher as their previous one.
pub(crate) fn residents_by_previous_voucher(db: &Database, voucher: [u8; VOUCHER_KEY]) -> Result<Vec<Resident>> {
    residents_via(db, PREVIOUS_VOUCHERS, &voucher, VOUCHER_KEY)
}

/// Residents of a municipality who moved in: chunks of the index are read, and their residents decoded, on the
/// parallel scan from one snapshot ([`parallel`]).
pub(crate) fn moved_in_residents(db: &Database, m: &MunicipalityCode) -> Result<Vec<Resident>> {
    let txn = begin_read(db)?;
    let index = open_read(&txn, MOVED_IN)?;
    let residents = open_read(&txn, RESIDENTS)?;
    let chunks = Chunks::by_addressee(&index, &muni(m), parallel::CHUNKS)?;
    let mut out = Vec::new();
    scan_chunks(
        &index,
        &chunks,
        parallel::workers(),
        |range| {
            let mut found = Vec::new();
            for entry in range {
                let (k, _) = entry.map_err(storage("scanning a resident index"))?;
                found.extend(get_resident(&residents, k.value())?);
            }
            Ok(found)
        },
        |found| {
            out.extend(found);
            Ok(true)
        },
    )?;
    Ok(out)
}

/// What a ledger export needs of a municipality's moved-in residents, in addressee order:
/// read from the index alone (one short range), before the export's scan can start.
pub(crate) fn moved_in_vouchers(db: &Database, m: &MunicipalityCode) -> Result<Vec<MovedIn>> {
    let txn = begin_read(db)?;
    let index = open_read(&txn, MOVED_IN)?;
    let mut out = Vec::new();
    for entry in prefixed(&index, &muni(m))? {
        let (k, v) = entry.map_err(storage("scanning the moved-in index"))?;
        out.push(moved_in_entry(k.value(), v.value())?);
    }
    Ok(out)
}

/// Sends a municipality's residents in addressee order, in chunks.
pub(crate) fn scan_residents(db: &Database, m: &MunicipalityCode, out: &async_channel::Sender<Vec<Resident>>) -> Result<()> {
    let txn = begin_read(db)?;
    let residents = open_read(&txn, RESIDENTS)?;
    let mut chunk = Vec::with_capacity(SCAN_CHUNK);
    for entry in prefixed(&residents, &muni(m))? {
        let (_, v) = entry.map_err(storage("scanning residents"))?;
        chunk.push(decode("decoding a resident", v.value())?);
        if chunk.len() == SCAN_CHUNK && out.send_blocking(std::mem::replace(&mut chunk, Vec::with_capacity(SCAN_CHUNK))).is_err() {
            // The visitor stopped the scan.
            return Ok(());
        }
    }
    if !chunk.is_empty() {
        let _ = out.send_blocking(chunk);
    }
    Ok(())
}

/// A change of the voucher index found while importing: `+1` to add (municipality,
/// voucher) → addressee, `-1` to remove it. Applied in key order once every row is in.
type VoucherOp = ([u8; VOUCHER_KEY], Addressee, i8);

/// Applies an import in one write transaction: a second thread pulls batches from the
/// source (parsing) while this one writes them.
pub(crate) fn import_residents(
    db: &Database,
    durability: Durability,
    mut source: Box<dyn ResidentSource>,
) -> Result<(Box<dyn ResidentSource>, ImportApplied)> {
    let txn = begin_write_with(db, durability)?;
    let loaded = std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<Result<Vec<Resident>>>(2);
        let src = &mut source;
        let producer = scope.spawn(move || {
            loop {
                match src.next_batch(IMPORT_BATCH) {
                    Ok(Some(batch)) => {
                        if tx.send(Ok(batch)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        let loaded = load_residents(&txn, rx);
        if let Err(panic) = producer.join() {
            std::panic::resume_unwind(panic);
        }
        loaded
    });
    let (inserted, replaced, touched) = match loaded {
        Ok(counts) => counts,
        Err(e) => return abort(txn, e),
    };
    if source.may_commit() {
        // In the import's transaction: the column segments of what it touched are stale
        // from its commit on (the next column read rebuilds them).
        if let Err(e) = count_resident_imports(&txn, &touched) {
            return abort(txn, e);
        }
        commit(txn)?;
        Ok((source, ImportApplied { inserted, replaced, committed: true }))
    } else {
        txn.abort().map_err(storage("rolling back an import"))?;
        Ok((source, ImportApplied { inserted: 0, replaced: 0, committed: false }))
    }
}

/// Writes every resident received, then the voucher index in key order. Returns
/// (inserted, replaced, the municipalities of the residents written).
fn load_residents(
    txn: &WriteTransaction,
    batches: mpsc::Receiver<Result<Vec<Resident>>>,
) -> Result<(u64, u64, std::collections::BTreeSet<[u8; M]>)> {
    let mut touched = std::collections::BTreeSet::new();
    let mut residents = open_write(txn, RESIDENTS)?;
    let mut previous = open_write(txn, PREVIOUS_VOUCHERS)?;
    let mut moved_in = open_write(txn, MOVED_IN)?;
    let mut voucher_ops: Vec<VoucherOp> = Vec::new();
    let mut restated: Vec<(Resident, Resident)> = Vec::new();
    let (mut inserted, mut replaced) = (0u64, 0u64);
    let rows = batches.into_iter().flat_map(|batch| match batch {
        Ok(rows) => Either::Rows(rows.into_iter().map(Ok)),
        Err(e) => Either::Error(std::iter::once(Err(e))),
    });
    write_runs(
        &mut residents,
        rows,
        |r: &Resident, key, value| {
            key.clear();
            key.extend_from_slice(&muni(&r.person.municipality));
            key.extend_from_slice(addressee_bytes(&addressee(&r.person.addressee)));
            encode_into("encoding a resident", r, value)
        },
        |r, key, old| {
            let a = addressee(&r.person.addressee);
            if touched.last() != Some(&muni(&r.person.municipality)) {
                touched.insert(muni(&r.person.municipality));
            }
            match old {
                None => {
                    inserted += 1;
                    voucher_ops.push((voucher_key(&r.voucher_ref()), a, 1));
                }
                Some(old) => {
                    replaced += 1;
                    let old: Resident = decode("decoding a replaced resident", old)?;
                    if old.voucher != r.voucher {
                        voucher_ops.push((voucher_key(&old.voucher_ref()), a, -1));
                        voucher_ops.push((voucher_key(&r.voucher_ref()), a, 1));
                    }
                    if let Some(p) = &old.previous {
                        previous.remove(previous_key(p, key).as_slice()).map_err(storage("removing a previous-voucher entry"))?;
                        moved_in.remove(key).map_err(storage("removing a moved-in entry"))?;
                    }
                    if restates_statistics(&old, &r) {
                        restated.push((old, r.clone()));
                    }
                }
            }
            if let Some(p) = &r.previous {
                previous.insert(previous_key(p, key).as_slice(), ()).map_err(storage("writing a previous-voucher entry"))?;
                moved_in.insert(key, &moved_in_value(&r.voucher, p)).map_err(storage("writing a moved-in entry"))?;
            }
            Ok(())
        },
    )?;
    drop((residents, previous, moved_in));
    apply_voucher_ops(txn, voucher_ops)?;
    restate_counters(txn, &restated)?;
    Ok((inserted, replaced, touched))
}

/// Moves the doses of residents whose sex or birth date an upload changed to their new
/// statistics groups, in the import's own transaction (rare: corrections of the register).
fn restate_counters(txn: &WriteTransaction, restated: &[(Resident, Resident)]) -> Result<()> {
    if restated.is_empty() {
        return Ok(());
    }
    let doses = open_write(txn, DOSES)?;
    let mut changes = BTreeMap::new();
    for (old, new) in restated {
        let mut vouchers = vouchers_of(old);
        vouchers.extend(vouchers_of(new));
        vouchers.sort();
        vouchers.dedup();
        let mut held = Vec::new();
        for v in &vouchers {
            held.extend(voucher_doses(&doses, &voucher_key(v))?);
        }
        for (k, delta) in restated_deltas(old, new, &held) {
            *changes.entry(counter_key(&k)?).or_insert(0i64) += delta;
        }
    }
    drop(doses);
    let mut counters = open_write(txn, COUNTERS)?;
    for (k, delta) in changes {
        add_to_counter(&mut counters, &k, delta)?;
    }
    Ok(())
}

/// Two iterators as one.
enum Either<A, B> {
    Rows(A),
    Error(B),
}

impl<T, A: Iterator<Item = T>, B: Iterator<Item = T>> Iterator for Either<A, B> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        match self {
            Either::Rows(a) => a.next(),
            Either::Error(b) => b.next(),
        }
    }
}

/// Applies the voucher index changes of an import in ascending key order (redb takes
/// ascending keys much faster than random ones). Each (voucher, addressee) pair nets its
/// changes: an entry added and removed again within the import is never written, and a
/// removal only removes an entry that still names that addressee. Removals go first, so
/// a voucher handed from one resident to another ends up with the new holder.
fn apply_voucher_ops(txn: &WriteTransaction, mut ops: Vec<VoucherOp>) -> Result<()> {
    ops.sort_unstable();
    let mut net: Vec<(VoucherOp, i64)> = Vec::with_capacity(ops.len());
    for op in ops {
        match net.last_mut() {
            Some((last, n)) if last.0 == op.0 && last.1 == op.1 => *n += i64::from(op.2),
            _ => net.push((op, i64::from(op.2))),
        }
    }
    let mut vouchers = open_write(txn, VOUCHERS)?;
    let mut given_up: Vec<[u8; VOUCHER_KEY]> = Vec::new();
    for ((key, a, _), _) in net.iter().filter(|(_, n)| *n < 0) {
        let current = vouchers.get(key.as_slice()).map_err(storage("reading the voucher index"))?.map(|g| g.value() == addressee_bytes(a));
        if current == Some(true) {
            vouchers.remove(key.as_slice()).map_err(storage("removing from the voucher index"))?;
            given_up.push(*key);
        }
    }
    let adds = net.into_iter().filter(|(_, n)| *n > 0).map(|(op, _)| Ok(op));
    write_runs(
        &mut vouchers,
        adds,
        |(k, a, _), key, value| {
            key.clear();
            key.extend_from_slice(k);
            value.clear();
            value.extend_from_slice(addressee_bytes(a));
            Ok(())
        },
        |_, _, _| Ok(()),
    )?;
    let mut unheld = Vec::new();
    for key in given_up {
        if vouchers.get(key.as_slice()).map_err(storage("reading the voucher index"))?.is_none() {
            unheld.push(key);
        }
    }
    if !unheld.is_empty() {
        hold_again(txn, &mut vouchers, &unheld)?;
    }
    Ok(())
}

/// Vouchers given up by the resident the index named may still be held by another resident
/// (an upload gave one to a second resident without taking it from the first): the index
/// names that one again (the highest addressee, if several). Found by scanning the
/// municipalities concerned, which happens only for vouchers given up and left without a
/// holder by the import.
fn hold_again(txn: &WriteTransaction, vouchers: &mut Table<'_, Bytes, Bytes>, unheld: &[[u8; VOUCHER_KEY]]) -> Result<()> {
    let wanted: std::collections::HashSet<&[u8; VOUCHER_KEY]> = unheld.iter().collect();
    let mut municipalities: Vec<&[u8]> = unheld.iter().map(|k| &k[..M]).collect();
    municipalities.sort_unstable();
    municipalities.dedup();
    let residents = open_write(txn, RESIDENTS)?;
    let mut holders: std::collections::BTreeMap<[u8; VOUCHER_KEY], Vec<u8>> = std::collections::BTreeMap::new();
    for m in municipalities {
        for entry in prefixed(&residents, m)? {
            let (k, v) = entry.map_err(storage("scanning residents"))?;
            let r: Resident = decode("decoding a resident", v.value())?;
            let key = voucher_key(&r.voucher_ref());
            if wanted.contains(&key) {
                // Key order: a later resident (higher addressee) replaces an earlier one.
                holders.insert(key, k.value().get(M..).unwrap_or_default().to_vec());
            }
        }
    }
    for (key, a) in holders {
        vouchers.insert(key.as_slice(), a.as_slice()).map_err(storage("writing the voucher index"))?;
    }
    Ok(())
}

/// Serializes into a reused buffer.
fn encode_into<T: Serialize>(what: &'static str, value: &T, buf: &mut Vec<u8>) -> Result<()> {
    let mut out = std::mem::take(buf);
    out.clear();
    *buf = postcard::to_extend(value, out).map_err(storage(what))?;
    Ok(())
}

/// When [`write_runs`] and [`insert_sorted`] try a cursor. A cursor costs a seek and a
/// close: a run of one insert does not pay for it (a slot and its dose, side by side among
/// existing keys, make such runs), so after each short run the next keys go in plainly,
/// twice as many each time (up to 4,096); a run of two or more starts over.
struct CursorBackoff {
    plain_left: usize,
    backoff: usize,
}

impl Default for CursorBackoff {
    fn default() -> Self {
        Self { plain_left: 0, backoff: 1 }
    }
}

impl CursorBackoff {
    /// Whether the key just inserted is followed by a plain insert rather than a cursor.
    fn plain(&mut self) -> bool {
        let plain = self.plain_left > 0;
        self.plain_left = self.plain_left.saturating_sub(1);
        plain
    }

    /// After a cursor wrote `run` keys.
    fn ran(&mut self, run: usize) {
        if run < 2 {
            self.plain_left = self.backoff;
            self.backoff = (self.backoff * 2).min(4096);
        } else {
            self.backoff = 1;
        }
    }
}

/// Writes `items` in the order given, each an insert-or-replace. Runs of new keys that
/// ascend go through a redb cursor, which packs them into full pages several times
/// faster than single inserts; a key out of order or already present takes a plain
/// insert (and, after a run that took none, the next few do too, so that an upload in
/// random order does not pay for a cursor per row). `entry` builds an item's key and
/// value; `written` is told each item with its key and the value it replaced.
fn write_runs<T>(
    table: &mut Table<'_, Bytes, Bytes>,
    mut items: impl Iterator<Item = Result<T>>,
    mut entry: impl FnMut(&T, &mut Vec<u8>, &mut Vec<u8>) -> Result<()>,
    mut written: impl FnMut(T, &[u8], Option<&[u8]>) -> Result<()>,
) -> Result<()> {
    let (mut key, mut value) = (Vec::with_capacity(64), Vec::with_capacity(512));
    let mut pending: Option<T> = None;
    let mut backoff = CursorBackoff::default();
    loop {
        let item = match pending.take() {
            Some(item) => item,
            None => match items.next() {
                Some(item) => item?,
                None => return Ok(()),
            },
        };
        entry(&item, &mut key, &mut value)?;
        {
            let old = table.insert(key.as_slice(), value.as_slice()).map_err(storage("writing an entry"))?;
            written(item, &key, old.as_ref().map(|g| g.value()))?;
        }
        if backoff.plain() {
            continue;
        }
        let mut run = 0usize;
        let mut cursor = table.lower_bound_mut(Bound::Excluded(key.as_slice())).map_err(storage("positioning a cursor"))?;
        let mut failed = None;
        for item in items.by_ref() {
            let item = match item {
                Ok(item) => item,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            entry(&item, &mut key, &mut value)?;
            match cursor.insert_before(key.as_slice(), value.as_slice()) {
                Ok(()) => {
                    run += 1;
                    written(item, &key, None)?;
                }
                Err(CursorError::UnorderedKey) => {
                    pending = Some(item);
                    break;
                }
                Err(e) => return Err(Error::storage("writing through a cursor", e)),
            }
        }
        cursor.close().map_err(storage("writing through a cursor"))?;
        if let Some(e) = failed {
            return Err(e);
        }
        backoff.ran(run);
    }
}

/// Inserts `items`, sorted by key, into any table: runs of new keys go through a cursor
/// like [`write_runs`] (with its back-off for keys landing among existing ones);
/// `replaced` is told each key whose insert replaced an entry.
fn insert_sorted<'k, 'v, K, V, KB, VB>(
    table: &mut Table<'_, K, V>,
    items: impl IntoIterator<Item = (KB, VB)>,
    what: &'static str,
    mut replaced: impl FnMut(&KB) -> Result<()>,
) -> Result<()>
where
    K: redb::Key + 'static,
    V: Value + 'static,
    KB: std::borrow::Borrow<K::SelfType<'k>>,
    VB: std::borrow::Borrow<V::SelfType<'v>>,
{
    let mut items = items.into_iter().peekable();
    let mut backoff = CursorBackoff::default();
    while let Some((key, value)) = items.next() {
        if table.insert(key.borrow(), value.borrow()).map_err(storage(what))?.is_some() {
            replaced(&key)?;
        }
        if backoff.plain() {
            continue;
        }
        let mut run = 0usize;
        let mut cursor = table.lower_bound_mut(Bound::Excluded(key.borrow())).map_err(storage(what))?;
        while let Some((k, v)) = items.peek() {
            match cursor.insert_before(k.borrow(), v.borrow()) {
                Ok(()) => {
                    run += 1;
                    items.next();
                }
                Err(CursorError::UnorderedKey) => break,
                Err(e) => return Err(Error::storage(what, e)),
            }
        }
        cursor.close().map_err(storage(what))?;
        backoff.ran(run);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Doses

/// The `doses` key of a dose, found by its id.
fn dose_key_of<T: ReadableTable<&'static [u8; 16], &'static [u8; VOUCHER_KEY]>>(ids: &T, id: &[u8; 16]) -> Result<Option<[u8; DOSE_KEY]>> {
    Ok(ids.get(id).map_err(storage("reading the dose id index"))?.map(|g| dose_key(g.value(), id)))
}

/// The dose stored under a `doses` key, decoded as `D`.
fn get_dose_at<D: DeserializeOwned, T: ReadableTable<Bytes, Bytes>>(doses: &T, key: &[u8]) -> Result<Option<D>> {
    match doses.get(key).map_err(storage("reading a dose"))? {
        Some(g) => Ok(Some(decode("decoding a dose", g.value())?)),
        None => Ok(None),
    }
}

/// A dose by its id.
fn get_dose<D, T, I>(doses: &T, ids: &I, id: &[u8; 16]) -> Result<Option<D>>
where
    D: DeserializeOwned,
    T: ReadableTable<Bytes, Bytes>,
    I: ReadableTable<&'static [u8; 16], &'static [u8; VOUCHER_KEY]>,
{
    match dose_key_of(ids, id)? {
        Some(key) => get_dose_at(doses, &key),
        None => Ok(None),
    }
}

/// The 16-byte dose id at the end of an index key.
fn id_suffix(key: &[u8]) -> [u8; 16] {
    let mut id = [0u8; 16];
    if key.len() >= 16 {
        id.copy_from_slice(&key[key.len() - 16..]);
    }
    id
}

/// One dose.
pub(crate) fn dose(db: &Database, id: &DoseId) -> Result<Option<DoseRecord>> {
    let txn = begin_read(db)?;
    get_dose(&open_read(&txn, DOSES)?, &open_read(&txn, DOSE_IDS)?, id.as_bytes())
}

/// The doses registered with a voucher, by id.
pub(crate) fn doses_by_voucher(db: &Database, voucher: &[u8; VOUCHER_KEY]) -> Result<Vec<DoseRecord>> {
    let txn = begin_read(db)?;
    voucher_doses(&open_read(&txn, DOSES)?, voucher)
}

/// The doses registered with each voucher, in one read transaction.
pub(crate) fn doses_by_vouchers(db: &Database, vouchers: &[[u8; VOUCHER_KEY]]) -> Result<Vec<Vec<DoseRecord>>> {
    let txn = begin_read(db)?;
    let doses = open_read(&txn, DOSES)?;
    // A ledger export asks for every moved-in resident's previous vouchers at once, and
    // most of them (other municipalities' vouchers) have no dose in this store. Taken in
    // key order, one seek finds the first stored key after a voucher's doses: no voucher
    // between the two has a dose, and none of them needs a seek of its own.
    let mut order: Vec<usize> = (0..vouchers.len()).collect();
    order.sort_unstable_by_key(|&i| vouchers[i]);
    let mut out = vec![Vec::new(); vouchers.len()];
    // The first stored key after the doses of the voucher sought last (`Some(None)`: no
    // key after them; `None`: no seek yet).
    let mut next: Option<Option<Vec<u8>>> = None;
    let mut last: Option<usize> = None;
    for i in order {
        let v = &vouchers[i];
        if let Some(j) = last
            && vouchers[j] == *v
        {
            out[i] = out[j].clone();
            continue;
        }
        last = Some(i);
        let none = match &next {
            Some(None) => true,
            Some(Some(k)) => k.as_slice() > v.as_slice() && !k.starts_with(v),
            None => false,
        };
        if none {
            continue;
        }
        next = Some(None);
        for entry in doses.range::<&[u8]>(v.as_slice()..).map_err(storage("scanning a voucher's doses"))? {
            let (k, value) = entry.map_err(storage("scanning a voucher's doses"))?;
            if !k.value().starts_with(v) {
                next = Some(Some(k.value().to_vec()));
                break;
            }
            if is_dose_key(k.value()) {
                out[i].push(decode("decoding a dose", value.value())?);
            }
        }
    }
    Ok(out)
}

fn voucher_doses<T: ReadableTable<Bytes, Bytes>>(doses: &T, voucher: &[u8; VOUCHER_KEY]) -> Result<Vec<DoseRecord>> {
    let mut out = Vec::new();
    for entry in prefixed(doses, voucher)? {
        let (k, v) = entry.map_err(storage("scanning a voucher's doses"))?;
        if is_dose_key(k.value()) {
            out.push(decode("decoding a dose", v.value())?);
        }
    }
    Ok(out)
}

/// The doses whose ids end the keys of `index` under `prefix`, in key order.
pub(crate) fn doses_via(db: &Database, index: TableDefinition<Bytes, ()>, prefix: &[u8]) -> Result<Vec<DoseRecord>> {
    let txn = begin_read(db)?;
    let index = open_read(&txn, index)?;
    let doses = open_read(&txn, DOSES)?;
    let ids = open_read(&txn, DOSE_IDS)?;
    let mut out = Vec::new();
    for entry in prefixed(&index, prefix)? {
        let (k, _) = entry.map_err(storage("scanning a dose index"))?;
        if let Some(d) = get_dose(&doses, &ids, &id_suffix(k.value()))? {
            out.push(d);
        }
    }
    Ok(out)
}

/// Hands the stored bytes of a municipality's doses, in the order `scan` asks for, from
/// one read snapshot, to `visit` until it answers `false`: the one traversal behind every
/// dose scan (records, ledger projections, columns), so each skips the slots stored beside
/// the doses (layout v4) the same way.
pub(crate) fn each_stored_dose(
    db: &Database,
    m: &MunicipalityCode,
    scan: DoseScan,
    mut visit: impl FnMut(&[u8]) -> Result<bool>,
) -> Result<()> {
    let txn = begin_read(db)?;
    let doses = open_read(&txn, DOSES)?;
    match scan {
        DoseScan::ByVoucher => {
            for entry in prefixed(&doses, &muni(m))? {
                let (k, v) = entry.map_err(storage("scanning doses by voucher"))?;
                if is_dose_key(k.value()) && !visit(v.value())? {
                    return Ok(());
                }
            }
        }
        DoseScan::ChangedSince { after } => {
            let Some(first) = after.checked_add(1) else { return Ok(()) };
            let start = seq_key(m, first);
            let end = prefix_end(&muni(m)).unwrap_or_default();
            let index = open_read(&txn, DOSES_BY_SEQ)?;
            for entry in index.range::<&[u8]>(start.as_slice()..end.as_slice()).map_err(storage("scanning doses by sequence"))? {
                let (_, key) = entry.map_err(storage("scanning doses by sequence"))?;
                if let Some(v) = doses.get(key.value().as_slice()).map_err(storage("reading a dose"))?
                    && !visit(v.value())?
                {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// The cursor a scan returns when it sends nothing newer: `after`, or 0.
pub(crate) fn scan_floor(scan: DoseScan) -> u64 {
    match scan {
        DoseScan::ByVoucher => 0,
        DoseScan::ChangedSince { after } => after,
    }
}

/// Sends a municipality's doses in the order `scan` asks for, in chunks; returns the
/// highest sequence number sent (or `after`, or 0).
pub(crate) fn scan_doses(db: &Database, m: &MunicipalityCode, scan: DoseScan, out: &async_channel::Sender<Vec<DoseRecord>>) -> Result<u64> {
    let mut chunk = Vec::with_capacity(SCAN_CHUNK);
    let mut high = scan_floor(scan);
    each_stored_dose(db, m, scan, |bytes| {
        let d: DoseRecord = decode("decoding a dose", bytes)?;
        high = high.max(d.seq);
        chunk.push(d);
        Ok(chunk.len() < SCAN_CHUNK || out.send_blocking(std::mem::replace(&mut chunk, Vec::with_capacity(SCAN_CHUNK))).is_ok())
    })?;
    if !chunk.is_empty() {
        let _ = out.send_blocking(chunk);
    }
    Ok(high)
}

/// Runs `work` over chunks of whole vouchers of municipality `m`'s stored doses (their
/// record bytes, slot keys left out) on the parallel scan, one read snapshot
/// ([`parallel`]); `consume` takes the results in voucher order and stops the scan by
/// answering `false`.
pub(crate) fn scan_dose_chunks<T: Send>(
    db: &Database,
    m: &MunicipalityCode,
    work: impl Fn(&mut dyn Iterator<Item = Result<redb::AccessGuard<'static, Bytes>>>) -> Result<T> + Sync,
    consume: impl FnMut(T) -> Result<bool>,
) -> Result<()> {
    let txn = begin_read(db)?;
    let doses = open_read(&txn, DOSES)?;
    // Open chunks: the keys are read here anyway, and tested against the chunk's end for
    // less than redb would (see `key_below`).
    let chunks = Chunks::by_digits(&doses, &muni(m), VOUCHER_KEY - M, parallel::CHUNKS)?.open();
    scan_chunks_indexed(
        &doses,
        &chunks,
        parallel::workers(),
        |i, range| {
            let below = key_below(chunks.chunk_end(i));
            let mut records = range
                .map_while(|entry| match entry {
                    Ok((k, v)) => {
                        let k = k.value();
                        below(k).then(|| is_dose_key(k).then_some(Ok(v)))
                    }
                    Err(e) => Some(Some(Err(storage("scanning doses by voucher")(e)))),
                })
                .flatten();
            work(&mut records)
        },
        consume,
    )
}

/// Whether a key is below `end` (exclusive; `None`: no bound). An end of at most 16 bytes
/// is tested against a key of at least 16 (every `doses` key) as two 16-byte big-endian
/// numbers, one comparison without a call: the key's first 16 bytes are below the end
/// padded with zeros exactly when the key is below the end.
fn key_below(end: Option<&[u8]>) -> impl Fn(&[u8]) -> bool + '_ {
    let padded = end.filter(|e| e.len() <= 16).map(|e| {
        let mut p = [0u8; 16];
        p[..e.len()].copy_from_slice(e);
        u128::from_be_bytes(p)
    });
    move |key: &[u8]| match (end, padded, key.first_chunk::<16>()) {
        (None, ..) => true,
        (Some(_), Some(p), Some(k)) => u128::from_be_bytes(*k) < p,
        (Some(e), ..) => key < e,
    }
}

/// Sends a municipality's doses in voucher order as the ledger reads them, decoded
/// straight from the stored records in batches, chunks of the range decoded in parallel
/// from one read snapshot ([`parallel`]); returns the highest sequence number sent.
pub(crate) fn scan_ledger_doses(db: &Database, m: &MunicipalityCode, out: &async_channel::Sender<Vec<LedgerDoses>>) -> Result<u64> {
    let mut high = 0u64;
    scan_dose_chunks(
        db,
        m,
        |records| {
            let mut batches = Vec::new();
            let mut batch = LedgerBatch::default();
            for record in records {
                batch.push_compact(record?.value())?;
                if batch.len() >= LEDGER_SCAN_CHUNK {
                    batches.push(batch.take()?);
                }
            }
            if !batch.is_empty() {
                batches.push(batch.take()?);
            }
            Ok(batches)
        },
        |batches| {
            high = batches.iter().flat_map(LedgerDoses::iter).fold(high, |h, d| h.max(d.seq()));
            // `false` once the visitor stopped the scan.
            Ok(batches.is_empty() || out.send_blocking(batches).is_ok())
        },
    )?;
    Ok(high)
}

/// Formats a municipality's full ledger export: chunks of whole vouchers decoded and
/// formatted in parallel from one read snapshot ([`parallel`]), the rows sent in voucher
/// order; returns the highest sequence number seen.
pub(crate) fn scan_ledger_rows(
    db: &Database,
    m: &MunicipalityCode,
    format: &LedgerFormat,
    out: &async_channel::Sender<Vec<LedgerRows>>,
) -> Result<u64> {
    let mut high = 0u64;
    // Each chunk decodes into a batch left by an earlier chunk, so that the workers reuse
    // a few batches' buffers rather than allocate (and fault in) a MiB or two per chunk.
    let batches = Mutex::new(Vec::<LedgerBatch>::new());
    let spare = || batches.lock().unwrap_or_else(PoisonError::into_inner).pop();
    scan_dose_chunks(
        db,
        m,
        |records| {
            let mut batch = spare().unwrap_or_else(|| {
                let mut b = LedgerBatch::default();
                // About a chunk of a municipality of a million doses, so that it grows once or twice.
                b.reserve(8192, 8192 * 64);
                b
            });
            batch.clear();
            let rows = (|| {
                for record in records {
                    batch.push_compact(record?.value())?;
                }
                // A chunk holds whole vouchers: its rows are final.
                let doses = batch.checked()?;
                let high = doses.iter().fold(0, |h, d| h.max(d.seq()));
                Ok((format.rows(doses)?, high))
            })();
            batches.lock().unwrap_or_else(PoisonError::into_inner).push(batch);
            rows
        },
        |(rows, chunk_high)| {
            high = high.max(chunk_high);
            // `false` once the visitor stopped the scan.
            Ok(rows.is_empty() || out.send_blocking(vec![rows]).is_ok())
        },
    )?;
    Ok(high)
}

/// The tables a person context reads, opened once for many queries.
struct ContextTables {
    doses: ReadOnlyTable<Bytes, Bytes>,
    ids: ReadOnlyTable<&'static [u8; 16], &'static [u8; VOUCHER_KEY]>,
    vouchers: ReadOnlyTable<Bytes, Bytes>,
    previous: ReadOnlyTable<Bytes, ()>,
    residents: ReadOnlyTable<Bytes, Bytes>,
    findings: ReadOnlyTable<Bytes, Bytes>,
}

/// Below this many queries, [`person_contexts`] reads on one thread: a second thread's
/// start (tens of microseconds) would cost more than it saves.
const CONTEXTS_PER_THREAD: usize = 32;

/// Person contexts for many queries in one read transaction: the reads of
/// [`vrs_core::store::read_person_context`], from one snapshot. A batch's queries are
/// split between this thread and a second one sharing the transaction: each query is a
/// few descents of trees too large for the cache to hold them hot, so the reads of a
/// batch of registrations cost about half the time on two cores.
pub(crate) fn person_contexts(db: &Database, queries: &[PersonQuery]) -> Result<Vec<PersonContext>> {
    let txn = begin_read(db)?;
    let t = ContextTables {
        doses: open_read(&txn, DOSES)?,
        ids: open_read(&txn, DOSE_IDS)?,
        vouchers: open_read(&txn, VOUCHERS)?,
        previous: open_read(&txn, PREVIOUS_VOUCHERS)?,
        residents: open_read(&txn, RESIDENTS)?,
        findings: open_read(&txn, FINDINGS)?,
    };
    // Read in voucher order (the leading key of `doses`, `vouchers` and, through the
    // municipality, `residents`): consecutive descents then share their upper pages, and
    // the two threads below each take one half of the key space rather than racing for
    // the same pages (a cache hit in redb writes to the page's shared counters).
    let mut keyed: Vec<([u8; VOUCHER_KEY], usize)> = queries.iter().enumerate().map(|(i, q)| (voucher_key(&q.voucher), i)).collect();
    keyed.sort_unstable();
    let order: Vec<usize> = keyed.into_iter().map(|(_, i)| i).collect();
    let read = |part: &[usize]| part.iter().map(|&i| person_context(&t, &queries[i])).collect::<Result<Vec<_>>>();
    let sorted = if queries.len() < 2 * CONTEXTS_PER_THREAD {
        read(&order)?
    } else {
        let (first, second) = order.split_at(order.len() / 2);
        std::thread::scope(|scope| {
            // A thread that cannot be started leaves the reads to this one.
            let Ok(helper) = std::thread::Builder::new().name("vrs-contexts".into()).spawn_scoped(scope, || read(second)) else {
                return read(&order);
            };
            let mine = read(first);
            let theirs = match helper.join() {
                Ok(theirs) => theirs,
                // A panic there is raised here, as it would have been on one thread.
                Err(panic) => std::panic::resume_unwind(panic),
            };
            let mut out = mine?;
            out.extend(theirs?);
            Ok(out)
        })?
    };
    // Back in the order asked.
    let mut out: Vec<Option<PersonContext>> = (0..queries.len()).map(|_| None).collect();
    for (i, context) in order.into_iter().zip(sorted) {
        out[i] = Some(context);
    }
    Ok(out.into_iter().flatten().collect())
}

fn person_context(t: &ContextTables, q: &PersonQuery) -> Result<PersonContext> {
    if let Some(id) = q.dose
        && let Some(dose) = get_dose(&t.doses, &t.ids, id.as_bytes())?
    {
        let findings = dose_findings(&t.findings, &id)?;
        return Ok(PersonContext { existing: Some((dose, findings)), ..PersonContext::default() });
    }
    let key = voucher_key(&q.voucher);
    let holder = holder_of(&t.vouchers, &t.residents, &key)?;
    let naming_it = if holder.is_some() { Vec::new() } else { residents_under(&t.previous, &t.residents, &key, VOUCHER_KEY)? };
    let resident = voucher_resident(holder, naming_it);
    let mut doses = Vec::new();
    for v in person_vouchers(resident.as_ref(), q.voucher) {
        doses.push((v, voucher_doses(&t.doses, &voucher_key(&v))?));
    }
    let mut findings = Vec::new();
    for id in PersonContext::dose_ids(&doses) {
        findings.push((id, dose_findings(&t.findings, &id)?));
    }
    Ok(PersonContext { existing: None, resident, doses, findings })
}

// ---------------------------------------------------------------------------------------
// Findings, accounts, statistics, audit

fn findings_by_key<T: ReadableTable<Bytes, Bytes>>(findings: &T, key: &[u8], out: &mut Vec<Finding>) -> Result<()> {
    if let Some(g) = findings.get(key).map_err(storage("reading a finding"))? {
        out.push(decode("decoding a finding", g.value())?);
    }
    Ok(())
}

/// A municipality's findings (open only, or all: open first).
pub(crate) fn findings(db: &Database, m: &MunicipalityCode, open_only: bool) -> Result<Vec<Finding>> {
    let txn = begin_read(db)?;
    let index = open_read(&txn, FINDINGS_BY_MUNICIPALITY)?;
    let findings = open_read(&txn, FINDINGS)?;
    let mut prefix = muni(m).to_vec();
    if open_only {
        prefix.push(open_flag(true));
    }
    let mut out = Vec::new();
    for entry in prefixed(&index, &prefix)? {
        let (k, _) = entry.map_err(storage("scanning findings"))?;
        findings_by_key(&findings, k.value().get(M + 1..).unwrap_or_default(), &mut out)?;
    }
    Ok(out)
}

/// The findings about one dose.
pub(crate) fn findings_for_dose(db: &Database, id: &DoseId) -> Result<Vec<Finding>> {
    let txn = begin_read(db)?;
    dose_findings(&open_read(&txn, FINDINGS)?, id)
}

fn dose_findings<F: ReadableTable<Bytes, Bytes>>(findings: &F, id: &DoseId) -> Result<Vec<Finding>> {
    let mut out = Vec::new();
    for entry in prefixed(findings, id.as_bytes())? {
        let (_, v) = entry.map_err(storage("scanning findings"))?;
        out.push(decode("decoding a finding", v.value())?);
    }
    Ok(out)
}

fn get_account<T: ReadableTable<&'static str, Bytes>>(accounts: &T, id: &str) -> Result<Option<TabletAccount>> {
    match accounts.get(id).map_err(storage("reading an account"))? {
        Some(g) => Ok(Some(decode("decoding an account", g.value())?)),
        None => Ok(None),
    }
}

/// One tablet account.
pub(crate) fn account(db: &Database, id: &str) -> Result<Option<TabletAccount>> {
    let txn = begin_read(db)?;
    let accounts = open_read(&txn, ACCOUNTS)?;
    get_account(&accounts, id)
}

/// The hash of a tablet account's secret.
pub(crate) fn account_secret(db: &Database, id: &str) -> Result<Option<SecretHash>> {
    let txn = begin_read(db)?;
    let secrets = open_read(&txn, ACCOUNT_SECRETS)?;
    match secrets.get(id).map_err(storage("reading an account secret hash"))? {
        Some(g) => Ok(Some(decode("decoding an account secret hash", g.value())?)),
        None => Ok(None),
    }
}

/// The tablet accounts of a municipality's sites, by account id.
pub(crate) fn accounts(db: &Database, m: &MunicipalityCode) -> Result<Vec<TabletAccount>> {
    let txn = begin_read(db)?;
    let index = open_read(&txn, ACCOUNTS_BY_MUNICIPALITY)?;
    let accounts = open_read(&txn, ACCOUNTS)?;
    let mut out = Vec::new();
    for entry in prefixed(&index, &muni(m))? {
        let (k, _) = entry.map_err(storage("scanning accounts"))?;
        let id = std::str::from_utf8(k.value().get(M..).unwrap_or_default()).map_err(storage("decoding an account id"))?;
        if let Some(a) = get_account(&accounts, id)? {
            out.push(a);
        }
    }
    Ok(out)
}

/// The `counters` key of a statistics group: its municipality, then the whole key.
fn counter_key(key: &StatsKey) -> Result<Vec<u8>> {
    let mut k = muni(&key.municipality).to_vec();
    k.extend_from_slice(&encode("encoding a statistics key", key)?);
    Ok(k)
}

/// Adds `delta` to one counter; a counter that reaches zero is removed.
fn add_to_counter(counters: &mut Table<'_, Bytes, i64>, k: &[u8], delta: i64) -> Result<()> {
    if delta == 0 {
        return Ok(());
    }
    let current = counters.get(k).map_err(storage("reading a counter"))?.map(|g| g.value()).unwrap_or(0);
    let Some(next) = current.checked_add(delta) else {
        return Err(Error::Storage { message: "a statistics counter overflowed".into(), source: None });
    };
    if next == 0 {
        counters.remove(k).map_err(storage("removing a counter"))?;
    } else {
        counters.insert(k, next).map_err(storage("writing a counter"))?;
    }
    Ok(())
}

/// Counters in the range a query names, sorted by group.
pub(crate) fn statistics(db: &Database, query: StatsQuery) -> Result<Vec<StatsRow>> {
    let prefix = match query {
        StatsQuery::National => Vec::new(),
        StatsQuery::Prefecture(p) => format!("{p:02}").into_bytes(),
        StatsQuery::Municipality(m) => muni(&m).to_vec(),
    };
    let txn = begin_read(db)?;
    let counters = open_read(&txn, COUNTERS)?;
    let mut out = Vec::new();
    for entry in prefixed(&counters, &prefix)? {
        let (k, v) = entry.map_err(storage("scanning statistics"))?;
        let Ok(count) = u64::try_from(v.value()) else { continue };
        if count == 0 {
            continue;
        }
        let key: StatsKey = decode("decoding a statistics key", k.value().get(M..).unwrap_or_default())?;
        out.push(StatsRow { key, count });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// A municipality's audit trail, oldest first.
pub(crate) fn audit(db: &Database, m: &MunicipalityCode) -> Result<Vec<AuditEvent>> {
    let txn = begin_read(db)?;
    let audit = open_read(&txn, AUDIT)?;
    let mut out = Vec::new();
    for entry in prefixed(&audit, &muni(m))? {
        let (_, v) = entry.map_err(storage("scanning the audit trail"))?;
        out.push(decode("decoding an audit event", v.value())?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Applying change sets

/// Every table a change set writes, opened once per transaction.
struct Writer<'t> {
    doses: Table<'t, Bytes, Bytes>,
    ids: Table<'t, &'static [u8; 16], &'static [u8; VOUCHER_KEY]>,
    by_seq: Table<'t, Bytes, &'static [u8; DOSE_KEY]>,
    unmatched: Table<'t, Bytes, ()>,
    by_site: Table<'t, Bytes, ()>,
    findings: Table<'t, Bytes, Bytes>,
    findings_index: Table<'t, Bytes, ()>,
    accounts: Table<'t, &'static str, Bytes>,
    accounts_index: Table<'t, Bytes, ()>,
    account_secrets: Table<'t, &'static str, Bytes>,
    counters: Table<'t, Bytes, i64>,
    audit: Table<'t, Bytes, Bytes>,
    /// The last dose sequence number given.
    seq: u64,
    /// Each dose write with the number it took, for the caller.
    written: Vec<(DoseId, u64)>,
    /// The last audit sequence number given.
    audit_seq: u64,
    /// Counter changes summed over every change set, encoded and written once per key at
    /// the end (a batch of registrations mostly moves the same few counters: encoding
    /// each dose's keys cost more than summing them).
    counter_deltas: BTreeMap<StatsKey, i64>,
    /// Whether a stored dose moved to another voucher (never on a registration).
    moved: bool,
    /// A reused buffer for encoding values.
    buf: Vec<u8>,
    /// New doses' rows, their id index entries and their `doses_by_site` keys, written in
    /// key order once the change sets are read (or before an update reads the tables): a
    /// batch's registrations then touch each page once, in order, and runs of new keys
    /// fill pages through a cursor.
    new_rows: Vec<([u8; DOSE_KEY], Vec<u8>)>,
    new_ids: Vec<([u8; 16], [u8; VOUCHER_KEY])>,
    new_sites: Vec<Vec<u8>>,
    /// Slot claims held back the same way and written among the new rows of `doses` (a
    /// slot sorts beside its voucher's doses): claimed one by one before, each slot cut
    /// the new rows' ascending runs, so a batch of fresh vouchers paid a tree descent per
    /// key instead of filling pages through one cursor.
    new_slots: Vec<([u8; SLOT_KEY], [u8; 16])>,
    /// New doses' `doses_by_seq` entries and the audit events, held back too: their keys
    /// ascend, so they are written through cursors.
    new_seqs: Vec<([u8; M + 8], [u8; DOSE_KEY])>,
    new_audit: Vec<([u8; M + 8], Vec<u8>)>,
}

/// Applies change sets in one write transaction (durable unless the store was opened for a
/// bulk load); nothing is written when a guard fails. Reports the highest sequence number
/// given (or the last one given before, when no dose was written) and each dose write's.
pub(crate) fn apply(db: &Database, durability: Durability, changes: Vec<ChangeSet>) -> Result<Applied> {
    let txn = begin_write_with(db, durability)?;
    match apply_in(&txn, changes) {
        Ok(applied) => {
            commit(txn)?;
            Ok(applied)
        }
        Err(e) => abort(txn, e),
    }
}

fn apply_in(txn: &WriteTransaction, changes: Vec<ChangeSet>) -> Result<Applied> {
    let mut meta = open_write(txn, META)?;
    let seq = meta.get(META_DOSE_SEQ).map_err(storage("reading the sequence number"))?.map(|g| g.value()).unwrap_or(0);
    let audit_seq = meta.get(META_AUDIT_SEQ).map_err(storage("reading the audit sequence number"))?.map(|g| g.value()).unwrap_or(0);
    let mut w = Writer {
        doses: open_write(txn, DOSES)?,
        ids: open_write(txn, DOSE_IDS)?,
        by_seq: open_write(txn, DOSES_BY_SEQ)?,
        unmatched: open_write(txn, UNMATCHED)?,
        by_site: open_write(txn, DOSES_BY_SITE)?,
        findings: open_write(txn, FINDINGS)?,
        findings_index: open_write(txn, FINDINGS_BY_MUNICIPALITY)?,
        accounts: open_write(txn, ACCOUNTS)?,
        accounts_index: open_write(txn, ACCOUNTS_BY_MUNICIPALITY)?,
        account_secrets: open_write(txn, ACCOUNT_SECRETS)?,
        counters: open_write(txn, COUNTERS)?,
        audit: open_write(txn, AUDIT)?,
        seq,
        written: Vec::new(),
        audit_seq,
        counter_deltas: BTreeMap::new(),
        moved: false,
        buf: Vec::with_capacity(512),
        new_rows: Vec::new(),
        new_ids: Vec::new(),
        new_sites: Vec::new(),
        new_slots: Vec::new(),
        new_seqs: Vec::new(),
        new_audit: Vec::new(),
    };
    for change in changes {
        w.apply(change)?;
    }
    w.write_new_doses()?;
    w.write_counters()?;
    if w.seq != seq {
        meta.insert(META_DOSE_SEQ, w.seq).map_err(storage("writing the sequence number"))?;
    }
    if w.moved {
        // Column segments read no index that shows a dose leaving their range: this count does.
        let moves = meta.get(META_DOSE_MOVES).map_err(storage("reading the dose move count"))?.map(|g| g.value()).unwrap_or(0);
        meta.insert(META_DOSE_MOVES, moves.wrapping_add(1)).map_err(storage("writing the dose move count"))?;
    }
    if w.audit_seq != audit_seq {
        meta.insert(META_AUDIT_SEQ, w.audit_seq).map_err(storage("writing the audit sequence number"))?;
    }
    Ok(Applied { seq: w.seq, doses: w.written })
}

impl Writer<'_> {
    fn apply(&mut self, change: ChangeSet) -> Result<()> {
        let ChangeSet { new_doses, updated_doses, claim_slots, release_slots, findings, counters, accounts, audit, account_secrets } =
            change;
        for mut dose in new_doses {
            // Written with the id index, which tells whether the id was taken (its insert
            // returns the entry it replaced; a conflict aborts the whole transaction, so
            // nothing is overwritten), by `write_new_doses`.
            self.write_dose(None, &mut dose)?;
        }
        // What is held back is written before anything that reads or removes rows of
        // `doses`, so that every change set sees the ones before it.
        if !updated_doses.is_empty() || !release_slots.is_empty() {
            self.write_new_doses()?;
        }
        for mut dose in updated_doses {
            let Some(stored) = get_dose::<DoseRecord, _, _>(&self.doses, &self.ids, dose.id.as_bytes())? else {
                return Err(conflict(format!("dose {} to update does not exist", dose.id)));
            };
            if dose.revision.checked_sub(1) != Some(stored.revision) {
                return Err(conflict(format!(
                    "dose {} changed meanwhile: stored revision {}, the update is revision {}",
                    dose.id, stored.revision, dose.revision
                )));
            }
            self.write_dose(Some(&stored), &mut dose)?;
        }
        for (slot, id) in release_slots {
            let key = slot_key(&slot.voucher, slot.dose_number);
            let held = self.doses.get(key.as_slice()).map_err(storage("reading a slot"))?.map(|g| g.value() == id.as_bytes());
            if held == Some(true) {
                self.doses.remove(key.as_slice()).map_err(storage("releasing a slot"))?;
            }
        }
        for (slot, id) in claim_slots {
            // Claimed by `write_new_doses`, by inserting: what the insert replaced says
            // whether another dose held the slot.
            self.new_slots.push((slot_key(&slot.voucher, slot.dose_number), *id.as_bytes()));
        }
        for finding in findings {
            self.write_finding(&finding)?;
        }
        for (key, delta) in counters {
            if delta != 0 {
                *self.counter_deltas.entry(key).or_default() += delta;
            }
        }
        for account in accounts {
            self.write_account(&account)?;
        }
        for secret in account_secrets {
            let value = encode("encoding an account secret hash", &secret)?;
            self.account_secrets.insert(secret.account.as_str(), value.as_slice()).map_err(storage("writing an account secret hash"))?;
        }
        for event in audit {
            self.audit_seq = self.audit_seq.checked_add(1).ok_or_else(|| exhausted("audit"))?;
            self.new_audit.push((seq_key(&event.municipality, self.audit_seq), encode("encoding an audit event", &event)?));
        }
        Ok(())
    }

    /// Stores a dose record with a fresh sequence number and moves its index entries.
    fn write_dose(&mut self, stored: Option<&DoseRecord>, dose: &mut DoseRecord) -> Result<()> {
        let voucher = voucher_key(&dose.voucher);
        let key = dose_key(&voucher, dose.id.as_bytes());
        if let Some(old) = stored {
            if old.voucher != dose.voucher {
                self.moved = true;
                self.doses.remove(dose_key(&voucher_key(&old.voucher), old.id.as_bytes()).as_slice()).map_err(storage("moving a dose"))?;
            }
            self.by_seq.remove(seq_key(&old.owner(), old.seq).as_slice()).map_err(storage("moving a dose index entry"))?;
            self.unmatched.remove(unmatched_key(&old.owner(), &old.id).as_slice()).map_err(storage("moving a dose index entry"))?;
            self.by_site
                .remove(site_key(&old.details().site, old.registered_on_jst(), old.seq, &old.id).as_slice())
                .map_err(storage("moving a dose index entry"))?;
        }
        self.seq = self.seq.checked_add(1).ok_or_else(|| exhausted("dose"))?;
        dose.seq = self.seq;
        let id = dose.id;
        self.written.push((id, self.seq));
        let site = site_key(&dose.details().site, dose.registered_on_jst(), dose.seq, &id);
        if stored.is_none() {
            self.new_rows.push((key, encode("encoding a dose", &*dose)?));
            self.new_ids.push((*id.as_bytes(), voucher));
            self.new_sites.push(site);
        } else {
            encode_into("encoding a dose", &*dose, &mut self.buf)?;
            self.doses.insert(key.as_slice(), self.buf.as_slice()).map_err(storage("writing a dose"))?;
            if stored.is_some_and(|old| old.voucher != dose.voucher) {
                self.ids.insert(id.as_bytes(), &voucher).map_err(storage("writing the dose id index"))?;
            }
            self.by_site.insert(site.as_slice(), ()).map_err(storage("writing a dose index entry"))?;
        }
        if stored.is_none() {
            self.new_seqs.push((seq_key(&dose.owner(), dose.seq), key));
        } else {
            self.by_seq.insert(seq_key(&dose.owner(), dose.seq).as_slice(), &key).map_err(storage("writing a dose index entry"))?;
        }
        if dose.matched.is_none() {
            self.unmatched.insert(unmatched_key(&dose.owner(), &id).as_slice(), ()).map_err(storage("writing a dose index entry"))?;
        }
        Ok(())
    }

    /// Writes the new doses held back by [`write_dose`](Self::write_dose), each table in
    /// key order; fails with a conflict when an id was taken.
    fn write_new_doses(&mut self) -> Result<()> {
        let mut ids = std::mem::take(&mut self.new_ids);
        ids.sort_unstable();
        insert_sorted(&mut self.ids, ids.iter().map(|(id, voucher)| (id, voucher)), "writing the dose id index", |id| {
            Err(conflict(format!("dose {} already exists", DoseId::from_bytes(**id))))
        })?;
        let mut sites = std::mem::take(&mut self.new_sites);
        sites.sort_unstable();
        insert_sorted(&mut self.by_site, sites.iter().map(|k| (k.as_slice(), ())), "writing a dose index entry", |_| Ok(()))?;
        // Sequence numbers were given in order, so these are sorted within each municipality.
        let mut seqs = std::mem::take(&mut self.new_seqs);
        seqs.sort_unstable();
        insert_sorted(&mut self.by_seq, seqs.iter().map(|(k, v)| (k.as_slice(), v)), "writing a dose index entry", |_| Ok(()))?;
        let mut audit = std::mem::take(&mut self.new_audit);
        audit.sort_unstable_by_key(|e| e.0);
        insert_sorted(&mut self.audit, audit.iter().map(|(k, v)| (k.as_slice(), v.as_slice())), "writing the audit trail", |_| Ok(()))?;
        let rows = std::mem::take(&mut self.new_rows).into_iter().map(|(k, v)| DosesRow::Dose(k, v));
        let slots = std::mem::take(&mut self.new_slots).into_iter().map(|(k, id)| DosesRow::Slot(k, id));
        let mut all: Vec<DosesRow> = rows.chain(slots).collect();
        // Stable: two claims of one slot keep their order, so the second meets the first.
        all.sort_by(|a, b| a.key().cmp(b.key()));
        write_runs(
            &mut self.doses,
            all.into_iter().map(Ok),
            |row, key, value| {
                key.clear();
                key.extend_from_slice(row.key());
                value.clear();
                value.extend_from_slice(match row {
                    DosesRow::Dose(_, v) => v,
                    DosesRow::Slot(_, id) => id,
                });
                Ok(())
            },
            |row, key, old| match (row, old) {
                // A claim replacing another dose's claim: a conflict, which aborts the
                // whole transaction, so nothing is overwritten.
                (DosesRow::Slot(_, id), Some(held)) if id_suffix(held) != id => {
                    let voucher = String::from_utf8_lossy(key.get(M..VOUCHER_KEY).unwrap_or_default()).into_owned();
                    Err(conflict(format!(
                        "dose {} of voucher {}-{voucher} is already held by dose {}",
                        key.get(VOUCHER_KEY).copied().unwrap_or_default(),
                        String::from_utf8_lossy(key.get(..M).unwrap_or_default()),
                        DoseId::from_bytes(id_suffix(held))
                    )))
                }
                _ => Ok(()),
            },
        )
    }

    fn write_finding(&mut self, f: &Finding) -> Result<()> {
        let key = finding_key(&f.dose, f.kind);
        let value = encode("encoding a finding", f)?;
        let old: Option<Finding> = match self.findings.insert(key.as_slice(), value.as_slice()).map_err(storage("writing a finding"))? {
            Some(g) => Some(decode("decoding a replaced finding", g.value())?),
            None => None,
        };
        if let Some(o) = old {
            self.findings_index
                .remove(finding_index_key(&o.municipality, o.open, &o.dose, o.kind).as_slice())
                .map_err(storage("moving a finding index entry"))?;
        }
        self.findings_index
            .insert(finding_index_key(&f.municipality, f.open, &f.dose, f.kind).as_slice(), ())
            .map_err(storage("writing a finding index entry"))?;
        Ok(())
    }

    /// Writes the summed counter changes, each counter once.
    fn write_counters(&mut self) -> Result<()> {
        let mut deltas = Vec::with_capacity(self.counter_deltas.len());
        for (key, delta) in std::mem::take(&mut self.counter_deltas) {
            deltas.push((counter_key(&key)?, delta));
        }
        // In key order, as before the keys were encoded here.
        deltas.sort_unstable();
        for (k, delta) in deltas {
            add_to_counter(&mut self.counters, &k, delta)?;
        }
        Ok(())
    }

    fn write_account(&mut self, a: &TabletAccount) -> Result<()> {
        let value = encode("encoding an account", a)?;
        let old: Option<TabletAccount> =
            match self.accounts.insert(a.id.as_str(), value.as_slice()).map_err(storage("writing an account"))? {
                Some(g) => Some(decode("decoding a replaced account", g.value())?),
                None => None,
            };
        if let Some(o) = old {
            self.accounts_index
                .remove(account_index_key(&o.site.municipality, o.id.as_str()).as_slice())
                .map_err(storage("moving an account index entry"))?;
        }
        self.accounts_index
            .insert(account_index_key(&a.site.municipality, a.id.as_str()).as_slice(), ())
            .map_err(storage("writing an account index entry"))?;
        Ok(())
    }
}

/// A row of `doses` written by [`Writer::write_new_doses`] with its key: a new dose's
/// encoded record, or the id of the dose claiming a slot.
enum DosesRow {
    Dose([u8; DOSE_KEY], Vec<u8>),
    Slot([u8; SLOT_KEY], [u8; 16]),
}

impl DosesRow {
    fn key(&self) -> &[u8] {
        match self {
            DosesRow::Dose(k, _) => k,
            DosesRow::Slot(k, _) => k,
        }
    }
}

fn exhausted(what: &str) -> Error {
    Error::Storage { message: format!("the {what} sequence numbers are exhausted"), source: None }
}

#[cfg(test)]
mod tests {
    use vrs_core::columns::ResidentColumns;
    use vrs_core::testing::{TestSource, code, resident};

    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use vrs_core::ids::SiteId;

    #[test]
    fn key_below_answers_as_the_byte_order_does() {
        // Ends and keys around each other: equal, one byte off at each place, prefixes of
        // each other, bytes 0x00 and 0xff (the padding and its neighbour), all lengths 0 to 33.
        let base: Vec<u8> = (0u8..33).map(|i| b'0' + i % 10).collect();
        let mut texts: Vec<Vec<u8>> = Vec::new();
        for len in 0..=base.len() {
            let t = base[..len].to_vec();
            texts.push(t.clone());
            for at in 0..len {
                for b in [0x00, 0x01, t[at] - 1, t[at] + 1, 0xfe, 0xff] {
                    let mut u = t.clone();
                    u[at] = b;
                    texts.push(u);
                }
            }
        }
        for end in &texts {
            let below = key_below(Some(end));
            for key in &texts {
                assert_eq!(below(key), key.as_slice() < end.as_slice(), "key {key:?} end {end:?}");
            }
        }
        assert!(key_below(None)(&base));
    }

    /// A municipality's resident columns as one-resident batches: the segment scan's and the
    /// row decode's, comparable whatever their batches.
    fn resident_columns(db: &Database, m: &str, from_rows: bool) -> Vec<ResidentColumns> {
        let (tx, rx) = async_channel::unbounded();
        if from_rows {
            columns::scan_resident_rows(&begin_read(db).unwrap(), &code(m), 1 << 16, 0, &tx, false).unwrap();
        } else {
            scan_resident_columns(db, &code(m), 1 << 16, &tx).unwrap();
        }
        drop(tx);
        let mut out = Vec::new();
        while let Ok(batches) = rx.try_recv() {
            for b in batches {
                out.extend(b.split(1).unwrap());
            }
        }
        out
    }

    /// The stored segment values of `m`, in key order.
    fn segments(db: &Database, m: &str) -> Vec<Vec<u8>> {
        let txn = begin_read(db).unwrap();
        let t = txn.open_table(RESIDENT_COLUMNS).unwrap();
        prefixed(&t, m.as_bytes()).unwrap().map(|e| e.unwrap().1.value().to_vec()).collect()
    }

    /// Reads `m`'s columns from the segments path and checks them against the rows.
    fn read_matches_rows(db: &Database, m: &str) -> usize {
        let from_rows = resident_columns(db, m, true);
        assert_eq!(resident_columns(db, m, false), from_rows, "{m}");
        from_rows.len()
    }

    #[test]
    fn resident_segments_are_built_by_a_read_and_go_stale_with_an_import() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segments.redb");
        // More than one segment value of residents.
        let n = 5 * RESIDENT_SEGMENT_ROWS + 10;
        {
            let db = Database::create(&path).unwrap();
            init(&db).unwrap();
            let many: Vec<_> = (1..=n).map(|i| resident("131016", &i.to_string(), &format!("{i:010}"))).collect();
            import_residents(&db, Durability::Immediate, TestSource::new(many, 4096, true)).unwrap();
            let few: Vec<_> = (1..=3).map(|i| resident("131024", &i.to_string(), &format!("{i:010}"))).collect();
            import_residents(&db, Durability::Immediate, TestSource::new(few, 2, true)).unwrap();
            assert!(segments(&db, "131016").is_empty(), "an import writes no segments");
            assert_eq!(read_matches_rows(&db, "131016"), n);
            let built = segments(&db, "131016");
            assert!(built.len() > 1, "a read builds them, several values: {:?}", built.iter().map(Vec::len).collect::<Vec<_>>());
            assert!(built.iter().all(|v| v.len() <= RESIDENT_SEGMENT_BYTES && v[..8] == 1u64.to_le_bytes()));
            assert_eq!(read_matches_rows(&db, "131016"), n);
            assert_eq!(segments(&db, "131016"), built, "a read of fresh segments leaves them");
            assert_eq!(read_matches_rows(&db, "131024"), 3);
            assert_eq!(read_matches_rows(&db, "011002"), 0);
            assert!(segments(&db, "011002").is_empty());

            // A re-upload of some: 131016's segments are stale, 131024's are not.
            let small = segments(&db, "131024");
            let mut again: Vec<_> = (1..=5).map(|i| resident("131016", &i.to_string(), &format!("{:010}", i + n))).collect();
            again.push(resident("131016", &(n + 1).to_string(), "9999999999"));
            import_residents(&db, Durability::Immediate, TestSource::new(again, 2, true)).unwrap();
            assert_eq!(segments(&db, "131016"), built, "still there, but stale");
            assert_eq!(read_matches_rows(&db, "131016"), n + 1);
            let rebuilt = segments(&db, "131016");
            assert!(rebuilt.iter().all(|v| v[..8] == 2u64.to_le_bytes()));
            assert_eq!(segments(&db, "131024"), small);

            // Segments decoded before an import that then commits are not written.
            let stale = vec![vec![1u8; 16]];
            columns::write_resident_segments(&db, b"131016", 1, stale).unwrap();
            assert_eq!(segments(&db, "131016"), rebuilt);

            // Made a version 4 file: no segments, no import counts.
            let txn = db.begin_write().unwrap();
            txn.delete_table(RESIDENT_COLUMNS).unwrap();
            for m in ["131016", "131024"] {
                txn.open_table(META).unwrap().remove(columns::resident_imports_key(m.as_bytes().try_into().unwrap()).as_str()).unwrap();
            }
            txn.open_table(META).unwrap().insert(META_SCHEMA, UPGRADABLE_SCHEMA_VERSION).unwrap();
            txn.commit().unwrap();
        }
        let db = Database::open(&path).unwrap();
        init(&db).unwrap();
        let version = begin_read(&db).unwrap().open_table(META).unwrap().get(META_SCHEMA).unwrap().map(|g| g.value());
        assert_eq!(version, Some(SCHEMA_VERSION));
        assert_eq!(read_matches_rows(&db, "131016"), n + 1);
        assert!(!segments(&db, "131016").is_empty(), "the first read builds them");
        assert_eq!(read_matches_rows(&db, "131016"), n + 1);
    }

    /// Replaces stored segment value `n` of `m`.
    fn put_segment(db: &Database, m: &str, n: u32, value: &[u8]) {
        let txn = db.begin_write().unwrap();
        txn.open_table(RESIDENT_COLUMNS).unwrap().insert(segment_key(m.as_bytes().try_into().unwrap(), n).as_slice(), value).unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn a_resident_segment_that_does_not_decode_is_read_from_rows_and_rebuilt() {
        let db = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()).unwrap();
        init(&db).unwrap();
        let n = 5 * RESIDENT_SEGMENT_ROWS + 10;
        let many: Vec<_> = (1..=n).map(|i| resident("131016", &i.to_string(), &format!("{i:010}"))).collect();
        import_residents(&db, Durability::Immediate, TestSource::new(many, 4096, true)).unwrap();
        assert_eq!(read_matches_rows(&db, "131016"), n);
        let built = segments(&db, "131016");
        assert!(built.len() >= 2, "{} values", built.len());
        // A damaged value after the first (residents before it were sent from the segments),
        // the first one's body, a value cut short, and a value of another format.
        let damaged = |v: &[u8]| {
            let mut d = v.to_vec();
            d[v.len() / 2] ^= 0xff;
            d.truncate(v.len() - 3);
            d
        };
        let mut other_format = built[1].clone();
        other_format[8 + 4] = 99;
        for (n, value) in [(1, damaged(&built[1])), (0, damaged(&built[0])), (1, built[1][..9].to_vec()), (1, other_format)] {
            put_segment(&db, "131016", n, &value);
            assert_eq!(read_matches_rows(&db, "131016"), 5 * RESIDENT_SEGMENT_ROWS + 10, "value {n}");
            assert_eq!(segments(&db, "131016"), built, "value {n} rewritten");
        }
    }

    /// An in-memory redb file whose writes fail while `fail` is set (a full disk, say).
    #[derive(Debug)]
    pub(in crate::ops) struct FailingWrites {
        inner: redb::backends::InMemoryBackend,
        fail: Arc<AtomicBool>,
    }

    impl FailingWrites {
        /// An empty file, and the switch that makes its writes fail.
        pub(in crate::ops) fn new() -> (Self, Arc<AtomicBool>) {
            let fail = Arc::new(AtomicBool::new(false));
            (Self { inner: redb::backends::InMemoryBackend::new(), fail: Arc::clone(&fail) }, fail)
        }

        fn check(&self) -> std::result::Result<(), std::io::Error> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("no space left (test)"));
            }
            Ok(())
        }
    }

    impl redb::StorageBackend for FailingWrites {
        fn len(&self) -> std::result::Result<u64, std::io::Error> {
            self.inner.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> std::result::Result<(), std::io::Error> {
            self.inner.read(offset, out)
        }
        fn set_len(&self, len: u64) -> std::result::Result<(), std::io::Error> {
            self.check()?;
            self.inner.set_len(len)
        }
        fn sync_data(&self) -> std::result::Result<(), std::io::Error> {
            self.check()?;
            self.inner.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::result::Result<(), std::io::Error> {
            self.check()?;
            self.inner.write(offset, data)
        }
    }

    #[test]
    fn a_resident_read_whose_cache_write_fails_still_succeeds() {
        let (backend, fail) = FailingWrites::new();
        let db = Database::builder().create_with_backend(backend).unwrap();
        init(&db).unwrap();
        let n = 2 * RESIDENT_SEGMENT_ROWS + 10;
        let many: Vec<_> = (1..=n).map(|i| resident("131016", &i.to_string(), &format!("{i:010}"))).collect();
        import_residents(&db, Durability::Immediate, TestSource::new(many, 4096, true)).unwrap();
        fail.store(true, Ordering::SeqCst);
        // The segments' write fails: the read still hands over every resident.
        assert_eq!(read_matches_rows(&db, "131016"), n);
        assert!(segments(&db, "131016").is_empty(), "nothing written");
        assert_eq!(read_matches_rows(&db, "131016"), n);
    }

    #[test]
    fn a_file_of_another_layout_is_refused_with_its_version() {
        let dir = tempfile::tempdir().unwrap();
        for version in [UPGRADABLE_SCHEMA_VERSION - 1, SCHEMA_VERSION + 1] {
            let path = dir.path().join(format!("v{version}.redb"));
            {
                let db = Database::create(&path).unwrap();
                let txn = db.begin_write().unwrap();
                txn.open_table(META).unwrap().insert(META_SCHEMA, version).unwrap();
                txn.commit().unwrap();
            }
            let message = crate::RedbStore::open(&path).unwrap_err().to_string();
            let old = format!("layout version {version}");
            assert!(message.contains(&old) && message.contains(&format!("reads version {SCHEMA_VERSION}")), "{message}");
        }
    }

    fn site_index_keys(db: &Database) -> Vec<Vec<u8>> {
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(DOSES_BY_SITE).unwrap();
        t.iter().unwrap().map(|e| e.unwrap().0.value().to_vec()).collect()
    }

    #[test]
    fn a_layout_4_file_is_upgraded_with_its_site_index_in_write_order() {
        use vrs_core::testing::{day, dose, new_doses, voucher};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v4.redb");
        let first = dose("upgrade-1", voucher("131016", "0000000001"), 1, "2021-06-01T01:00:00Z", "venue-1");
        let second = dose("upgrade-2", voucher("131016", "0000000002"), 1, "2021-06-01T02:00:00Z", "venue-1");
        let elsewhere = dose("upgrade-3", voucher("131016", "0000000003"), 1, "2021-06-01T03:00:00Z", "venue-10");
        let written = {
            let db = Database::create(&path).unwrap();
            init(&db).unwrap();
            apply(&db, Durability::Immediate, vec![new_doses(vec![first.clone(), second.clone(), elsewhere.clone()])]).unwrap();
            let written = site_index_keys(&db);
            // Layout 4 as it was: the site's day, then the dose id; no sequence number.
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(DOSES_BY_SITE).unwrap();
                t.retain(|_, _| false).unwrap();
                for k in &written {
                    let (head, id) = k.split_at(k.len() - 16);
                    let mut old = head[..head.len() - 8].to_vec();
                    old.extend_from_slice(id);
                    t.insert(old.as_slice(), ()).unwrap();
                }
                txn.open_table(META).unwrap().insert(META_SCHEMA, UPGRADABLE_SCHEMA_VERSION).unwrap();
            }
            txn.commit().unwrap();
            written
        };
        assert_eq!(written.len(), 3);
        drop(crate::RedbStore::open(&path).unwrap());
        let db = Database::open(&path).unwrap();
        assert_eq!(db.begin_read().unwrap().open_table(META).unwrap().get(META_SCHEMA).unwrap().unwrap().value(), SCHEMA_VERSION);
        assert_eq!(site_index_keys(&db), written, "the upgrade writes the keys this layout writes");
        let ids = |site: &str| {
            let prefix = site_day_prefix(&SiteId::parse(site).unwrap(), day("2021-06-01"));
            doses_via(&db, DOSES_BY_SITE, &prefix).unwrap().into_iter().map(|d| d.id).collect::<Vec<_>>()
        };
        assert_eq!(ids("venue-1"), vec![first.id, second.id], "in the order they were written");
        assert_eq!(ids("venue-10"), vec![elsewhere.id]);
    }

    #[test]
    fn a_layout_5_file_is_upgraded_with_its_moved_in_index_built_from_the_residents() {
        use vrs_core::testing::{moved_in, voucher};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v5.redb");
        let residents = vec![
            moved_in("131016", "1", "0000000001", voucher("011002", "0000000101")),
            resident("131016", "2", "0000000002"),
            moved_in("131016", "10", "0000000010", voucher("271004", "0000000110")),
            moved_in("011002", "7", "0000000007", voucher("131016", "0000000002")),
        ];
        let written = {
            let db = Database::create(&path).unwrap();
            init(&db).unwrap();
            import_residents(&db, Durability::Immediate, TestSource::new(residents.clone(), 2, true)).unwrap();
            let written = (moved_in_vouchers(&db, &code("131016")).unwrap(), moved_in_vouchers(&db, &code("011002")).unwrap());
            // Layout 5 as it was: `moved_in` with the same keys and no values.
            let txn = db.begin_write().unwrap();
            {
                let keys: Vec<Vec<u8>> = txn.open_table(MOVED_IN).unwrap().iter().unwrap().map(|e| e.unwrap().0.value().to_vec()).collect();
                assert_eq!(keys.len(), 3);
                let mut old = txn.open_table(OLD_MOVED_IN).unwrap();
                for k in &keys {
                    old.insert(k.as_slice(), ()).unwrap();
                }
                txn.open_table(META).unwrap().insert(META_SCHEMA, 5).unwrap();
            }
            assert!(txn.delete_table(MOVED_IN).unwrap());
            txn.commit().unwrap();
            written
        };
        let from = |rs: &[Resident], m: &str| {
            rs.iter().filter(|r| r.previous.is_some() && r.person.municipality == code(m)).map(MovedIn::of).collect::<Vec<_>>()
        };
        assert_eq!(written, (from(&residents, "131016"), from(&residents, "011002")), "what an import writes");
        drop(crate::RedbStore::open(&path).unwrap());
        let db = Database::open(&path).unwrap();
        assert_eq!(db.begin_read().unwrap().open_table(META).unwrap().get(META_SCHEMA).unwrap().unwrap().value(), SCHEMA_VERSION);
        assert_eq!((moved_in_vouchers(&db, &code("131016")).unwrap(), moved_in_vouchers(&db, &code("011002")).unwrap()), written);
        let tables: Vec<String> = db.begin_read().unwrap().list_tables().unwrap().map(|t| t.name().to_string()).collect();
        assert!(!tables.iter().any(|t| t == "moved_in"), "the old index is gone: {tables:?}");
    }

    #[test]
    fn a_site_day_lists_its_doses_in_write_order_and_an_update_moves_its_entry() {
        use vrs_core::testing::{day, dose, new_doses, next_revision, updated_doses, voucher};
        let db = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()).unwrap();
        init(&db).unwrap();
        // Ids in the opposite order of registration: the listing follows the registrations.
        let mut doses: Vec<DoseRecord> = (0..20)
            .map(|i| dose(&format!("order-{i}"), voucher("131016", &format!("{:010}", i + 1)), 1, "2021-06-01T01:00:00Z", "venue-1"))
            .collect();
        doses.sort_by(|a, b| b.id.as_bytes().cmp(a.id.as_bytes()));
        for d in &doses {
            apply(&db, Durability::Immediate, vec![new_doses(vec![d.clone()])]).unwrap();
        }
        let prefix = site_day_prefix(&SiteId::parse("venue-1").unwrap(), day("2021-06-01"));
        let listed = doses_via(&db, DOSES_BY_SITE, &prefix).unwrap();
        assert_eq!(listed.iter().map(|d| d.id).collect::<Vec<_>>(), doses.iter().map(|d| d.id).collect::<Vec<_>>());
        // A correction gives the dose a new sequence number: it is listed once, last.
        let corrected = next_revision(&listed[0], |d| d.versions[0].details.lot = "FA0001".into());
        apply(&db, Durability::Immediate, vec![updated_doses(vec![corrected])]).unwrap();
        let after = doses_via(&db, DOSES_BY_SITE, &prefix).unwrap();
        assert_eq!(after.len(), doses.len());
        assert_eq!(after.last().map(|d| d.id), Some(doses[0].id));
        assert_eq!(site_index_keys(&db).len(), doses.len());
    }
}
