//! The tablet's outbox: every entry of the sync format ([`vrs_core::sync::SyncEntry`]) the
//! session records, in a small redb file of its own, written durably *before* the dose is
//! stored locally, so that a crash between the two loses nothing (the session replays pending
//! entries into the local store when it opens). Entries leave the outbox only when a server
//! reply gives them a final status; until then every batch carries them again, and the
//! server's idempotency makes the repeats harmless.
//!
//! Persistence only: which statuses are final, and how a batch is applied, is vrs-core's.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use vrs_core::sync::{EntryReply, SyncEntry, SyncReply};

use crate::error::VrsError;

/// Pending entries by sequence number: the entry's JSON.
const PENDING: TableDefinition<u64, &[u8]> = TableDefinition::new("pending");
/// Pending entries by entry id: their sequence number.
const BY_ENTRY: TableDefinition<&str, u64> = TableDefinition::new("pending_by_entry");
/// Acknowledged entries by sequence number: `{"entry": ..., "reply": ...}`.
const DONE: TableDefinition<u64, &[u8]> = TableDefinition::new("done");
/// Batches produced and not acknowledged yet: their entries' sequence numbers.
const BATCHES: TableDefinition<&str, &[u8]> = TableDefinition::new("batches");
/// Counters: `seq`, `batch`, `epoch` (when the outbox was created, in microseconds).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

fn storage(what: &'static str) -> impl Fn(redb::Error) -> VrsError {
    move |e| VrsError::storage(what, e)
}

fn store_err<E: Into<redb::Error>>(what: &'static str) -> impl Fn(E) -> VrsError {
    move |e| VrsError::storage(what, e.into())
}

/// The outbox file. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Outbox {
    db: Arc<Database>,
}

/// What acknowledging changed.
pub(crate) struct Acked {
    /// Entries still pending.
    pub pending: u64,
}

impl Outbox {
    /// Opens or creates the outbox at `path` (blocking).
    pub(crate) fn open(path: &Path, now_micros: u64) -> Result<Self, VrsError> {
        let db = Database::create(path).map_err(store_err::<redb::DatabaseError>("opening the outbox"))?;
        let tx = db.begin_write().map_err(store_err::<redb::TransactionError>("opening the outbox"))?;
        {
            tx.open_table(PENDING).map_err(store_err::<redb::TableError>("opening the outbox"))?;
            tx.open_table(BY_ENTRY).map_err(store_err::<redb::TableError>("opening the outbox"))?;
            tx.open_table(DONE).map_err(store_err::<redb::TableError>("opening the outbox"))?;
            tx.open_table(BATCHES).map_err(store_err::<redb::TableError>("opening the outbox"))?;
            let mut meta = tx.open_table(META).map_err(store_err::<redb::TableError>("opening the outbox"))?;
            let has_epoch = meta.get("epoch").map_err(store_err::<redb::StorageError>("opening the outbox"))?.is_some();
            if !has_epoch {
                meta.insert("epoch", now_micros).map_err(store_err::<redb::StorageError>("opening the outbox"))?;
            }
        }
        tx.commit().map_err(store_err::<redb::CommitError>("opening the outbox"))?;
        Ok(Self { db: Arc::new(db) })
    }

    fn write<T>(&self, what: &'static str, f: impl FnOnce(&redb::WriteTransaction) -> Result<T, redb::Error>) -> Result<T, VrsError> {
        let tx = self.db.begin_write().map_err(store_err::<redb::TransactionError>(what))?;
        let out = f(&tx).map_err(storage(what))?;
        tx.commit().map_err(store_err::<redb::CommitError>(what))?;
        Ok(out)
    }

    fn read<T>(&self, what: &'static str, f: impl FnOnce(&redb::ReadTransaction) -> Result<T, redb::Error>) -> Result<T, VrsError> {
        let tx = self.db.begin_read().map_err(store_err::<redb::TransactionError>(what))?;
        f(&tx).map_err(storage(what))
    }

    /// A fresh idempotency key for this tablet: `ACCOUNT.EPOCH.N`, unique across reinstalls
    /// (the epoch is the outbox's creation instant) and never reused.
    pub(crate) fn next_key(&self, account: &str) -> Result<String, VrsError> {
        self.write("making an idempotency key", |tx| {
            let mut meta = tx.open_table(META)?;
            let epoch = meta.get("epoch")?.map(|v| v.value()).unwrap_or(0);
            let n = meta.get("key")?.map(|v| v.value()).unwrap_or(0) + 1;
            meta.insert("key", n)?;
            Ok(format!("{account}.{epoch}.{n}"))
        })
    }

    /// Appends an entry durably; returns its sequence number.
    pub(crate) fn append(&self, entry: &SyncEntry) -> Result<u64, VrsError> {
        let json = serde_json::to_vec(entry).map_err(|e| VrsError::storage("writing the outbox", e))?;
        self.write("writing the outbox", |tx| {
            let mut meta = tx.open_table(META)?;
            let seq = meta.get("seq")?.map(|v| v.value()).unwrap_or(0) + 1;
            meta.insert("seq", seq)?;
            tx.open_table(PENDING)?.insert(seq, json.as_slice())?;
            tx.open_table(BY_ENTRY)?.insert(entry.entry_id.as_str(), seq)?;
            Ok(seq)
        })
    }

    /// Removes a pending entry (its local registration was refused: nothing to sync).
    pub(crate) fn remove(&self, seq: u64, entry_id: &str) -> Result<(), VrsError> {
        self.write("writing the outbox", |tx| {
            tx.open_table(PENDING)?.remove(seq)?;
            let mut by_entry = tx.open_table(BY_ENTRY)?;
            if by_entry.get(entry_id)?.map(|v| v.value()) == Some(seq) {
                by_entry.remove(entry_id)?;
            }
            Ok(())
        })
    }

    /// Whether an entry id is pending or was acknowledged.
    pub(crate) fn known(&self, entry_id: &str) -> Result<bool, VrsError> {
        let pending = self.read("reading the outbox", |tx| Ok(tx.open_table(BY_ENTRY)?.get(entry_id)?.is_some()))?;
        if pending {
            return Ok(true);
        }
        // Acknowledged entries are kept by sequence number; a linear look is fine for the
        // rare case this answers (an app re-using its own idempotency key).
        let needle = format!("\"entry_id\":{}", serde_json::to_string(entry_id).unwrap_or_default());
        self.read("reading the outbox", |tx| {
            let done = tx.open_table(DONE)?;
            for row in done.iter()? {
                let (_, v) = row?;
                if std::str::from_utf8(v.value()).is_ok_and(|s| s.contains(&needle)) {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    /// Up to `max` pending entries, oldest first (`max` 0 means all).
    pub(crate) fn pending(&self, max: u32) -> Result<Vec<(u64, SyncEntry)>, VrsError> {
        let rows = self.read("reading the outbox", |tx| {
            let table = tx.open_table(PENDING)?;
            let mut rows = Vec::new();
            for row in table.iter()? {
                let (k, v) = row?;
                rows.push((k.value(), v.value().to_vec()));
                if max > 0 && rows.len() >= max as usize {
                    break;
                }
            }
            Ok(rows)
        })?;
        rows.into_iter()
            .map(|(seq, json)| {
                serde_json::from_slice(&json).map(|e| (seq, e)).map_err(|e| VrsError::storage("reading the outbox (damaged entry)", e))
            })
            .collect()
    }

    /// How many entries are pending.
    pub(crate) fn pending_count(&self) -> Result<u64, VrsError> {
        self.read("reading the outbox", |tx| Ok(tx.open_table(PENDING)?.len()?))
    }

    /// The idempotency keys of the doses with a pending entry.
    pub(crate) fn pending_doses(&self) -> Result<HashSet<String>, VrsError> {
        Ok(self.pending(0)?.into_iter().map(|(_, e)| e.dose_key().as_str().to_owned()).collect())
    }

    /// Records a produced batch and returns its id (`ACCOUNT.bN`).
    pub(crate) fn record_batch(&self, account: &str, seqs: &[u64]) -> Result<String, VrsError> {
        let json = serde_json::to_vec(seqs).map_err(|e| VrsError::storage("writing the outbox", e))?;
        self.write("writing the outbox", |tx| {
            let mut meta = tx.open_table(META)?;
            let n = meta.get("batch")?.map(|v| v.value()).unwrap_or(0) + 1;
            meta.insert("batch", n)?;
            let id = format!("{account}.b{n}");
            tx.open_table(BATCHES)?.insert(id.as_str(), json.as_slice())?;
            Ok(id)
        })
    }

    /// Applies a server reply in one commit: entries with a final status move to the
    /// acknowledged table; `retry` ones stay pending. Entries the reply names that are not
    /// pending (already acknowledged) are ignored.
    pub(crate) fn acknowledge(&self, reply: &SyncReply) -> Result<Acked, VrsError> {
        let finals: Vec<&EntryReply> = reply.entries.iter().filter(|e| e.status.is_final()).collect();
        let replies: Vec<(String, Vec<u8>)> = finals
            .iter()
            .map(|e| serde_json::to_vec(e).map(|j| (e.entry_id.clone(), j)))
            .collect::<Result<_, _>>()
            .map_err(|e| VrsError::storage("writing the outbox", e))?;
        let batch_id = reply.batch_id.clone();
        self.write("acknowledging a batch", move |tx| {
            let mut pending = tx.open_table(PENDING)?;
            let mut by_entry = tx.open_table(BY_ENTRY)?;
            let mut done = tx.open_table(DONE)?;
            for (entry_id, reply_json) in &replies {
                let Some(seq) = by_entry.remove(entry_id.as_str())?.map(|v| v.value()) else { continue };
                let entry = pending.remove(seq)?.map(|v| v.value().to_vec()).unwrap_or_default();
                let mut record = Vec::with_capacity(entry.len() + reply_json.len() + 20);
                record.extend_from_slice(b"{\"entry\":");
                record.extend_from_slice(if entry.is_empty() { b"null" } else { &entry });
                record.extend_from_slice(b",\"reply\":");
                record.extend_from_slice(reply_json);
                record.push(b'}');
                done.insert(seq, record.as_slice())?;
            }
            tx.open_table(BATCHES)?.remove(batch_id.as_str())?;
            Ok(Acked { pending: pending.len()? })
        })
    }
}
