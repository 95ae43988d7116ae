//! Column scans: doses and residents decoded from their stored bytes straight into
//! [`DoseColumns`] / [`ResidentColumns`], a batch of rows at a time, for columnar
//! frontends (the Python bindings' Arrow tables). No record struct, no `String` per row.

use std::collections::BTreeSet;

use redb::{Database, ReadableTable, WriteTransaction};
use vrs_core::columns::{DoseColumns, ResidentColumns};
use vrs_core::ids::MunicipalityCode;
use vrs_core::store::DoseScan;
use vrs_core::{Error, Result};

use super::{abort, begin_read, begin_write, commit, each_stored_dose, open_read, open_write, prefixed, scan_floor, storage};
use crate::parallel::{self, Chunks, scan_chunks, scan_chunks_indexed};
use crate::schema::*;

/// Rows a chunk's columns start with room for: chunks hold a few thousand doses of a
/// municipality of a million, so room for a whole batch would be mostly waste.
const CHUNK_ROOM: usize = 1 << 13;

/// Sends a municipality's doses in the order `scan` asks for, as columns of at most `rows`
/// doses; returns the highest sequence number sent (or `after`, or 0), as
/// [`scan_doses`](super::scan_doses) does. A scan in voucher order decodes chunks of the
/// range on several threads from one read snapshot ([`parallel`]), each chunk into
/// columns of its own, sent in key order.
pub(crate) fn scan_dose_columns(
    db: &Database,
    m: &MunicipalityCode,
    scan: DoseScan,
    rows: usize,
    out: &async_channel::Sender<Vec<DoseColumns>>,
) -> Result<u64> {
    let rows = rows.max(1);
    let mut high = scan_floor(scan);
    if let DoseScan::ChangedSince { .. } = scan {
        // A delta reads through the sequence index, one lookup per dose: sequential.
        let mut columns = DoseColumns::with_capacity(rows.min(CHUNK_ROOM));
        // Sends full columns; `false` once the visitor stopped the scan.
        let send = |columns: &mut DoseColumns, high: &mut u64| -> bool {
            *high = (*high).max(columns.high_seq());
            let next = columns.empty_like();
            out.send_blocking(vec![std::mem::replace(columns, next)]).is_ok()
        };
        each_stored_dose(db, m, scan, |bytes| {
            columns.push_stored(&mut postcard::Deserializer::from_bytes(bytes)).map_err(storage("decoding a dose"))?;
            Ok(columns.len() < rows || send(&mut columns, &mut high))
        })?;
        if !columns.is_empty() {
            send(&mut columns, &mut high);
        }
        return Ok(high);
    }
    scan_by_voucher(db, m, rows, Sizes { segment_rows: SEGMENT_ROWS, refresh_bytes: REFRESH_BYTES }, out)
}

// ---- dose column segments -----------------------------------------------------------------
//
// A read-side cache of the columns, kept in `dose_segments` and built by this scan alone:
// a municipality's doses cut at voucher boundaries into ranges of some ten thousand doses,
// each stored as the columns the scan decoded (`DoseColumns::encode`) with the dose
// sequence number `W` of the read snapshot they were decoded in. Registrations never touch
// it: a segment is fresh in a snapshot iff no dose of its range was written after `W`
// (a write gives the dose a new sequence number, so `doses_by_seq` shows it) and no dose
// moved to another voucher since (the `dose_moves` count; a dose that left the range shows
// in no index of it). A scan decodes the fresh segments and the rest from the rows, then
// writes segments for what it decoded from rows: the first read after writes pays for the
// rebuild.

/// Doses a segment holds at least, but the last of a range rebuilt: large enough that a
/// segment is decoded in one bulk copy, small enough that a registration makes a read decode
/// few doses from rows again.
const SEGMENT_ROWS: usize = 1 << 15;
/// Doses per chunk that a stale range is cut into for the workers, about.
const STALE_CHUNK_ROWS: u64 = 1 << 13;
/// Encoded columns a scan holds before writing their segments (and the segments it holds
/// them for): bounds the memory a first read adds to the table it builds.
const REFRESH_BYTES: usize = 64 << 20;
const SEGMENT_MAGIC: &[u8; 4] = b"VRSS";
const SEGMENT_VERSION: u8 = 1;

/// How large segments are built, and how many encoded bytes a scan holds before writing.
#[derive(Clone, Copy)]
struct Sizes {
    segment_rows: usize,
    refresh_bytes: usize,
}

/// A segment's header: its range, when it was built, how many doses.
struct Segment {
    start: Vec<u8>,
    /// Exclusive; `None`: the end of the municipality's doses.
    end: Option<Vec<u8>>,
    built_at: u64,
    moves: u64,
    rows: u64,
}

impl Segment {
    fn value<'a>(&self, blocks: u32, encoded: impl Iterator<Item = &'a [u8]> + Clone) -> Result<Vec<u8>> {
        let end = self.end.as_deref().unwrap_or_default();
        let end_len =
            u16::try_from(end.len()).map_err(|_| Error::Storage { message: "a segment's end key is too long".into(), source: None })?;
        let mut v = Vec::with_capacity(64 + end.len() + encoded.clone().map(<[u8]>::len).sum::<usize>());
        v.extend_from_slice(SEGMENT_MAGIC);
        v.push(SEGMENT_VERSION);
        v.extend_from_slice(&self.built_at.to_le_bytes());
        v.extend_from_slice(&self.moves.to_le_bytes());
        v.extend_from_slice(&self.rows.to_le_bytes());
        v.extend_from_slice(&end_len.to_le_bytes());
        v.extend_from_slice(end);
        v.extend_from_slice(&blocks.to_le_bytes());
        encoded.for_each(|e| v.extend_from_slice(e));
        Ok(v)
    }

    /// The header of a stored segment and its blocks' count and bytes; `None` when the
    /// value is not one this build wrote (then the range is read from rows and rebuilt).
    fn parse(start: &[u8], value: &[u8]) -> Option<(Self, u32, usize)> {
        let mut at = 0usize;
        let mut take = |n: usize| {
            let b = value.get(at..at + n)?;
            at += n;
            Some(b)
        };
        if take(4)? != SEGMENT_MAGIC.as_slice() || take(1)? != [SEGMENT_VERSION].as_slice() {
            return None;
        }
        let u64_le = |b: &[u8]| b.try_into().ok().map(u64::from_le_bytes);
        let built_at = u64_le(take(8)?)?;
        let moves = u64_le(take(8)?)?;
        let rows = u64_le(take(8)?)?;
        let end_len = usize::from(u16::from_le_bytes(take(2)?.try_into().ok()?));
        let end = take(end_len)?.to_vec();
        let blocks = u32::from_le_bytes(take(4)?.try_into().ok()?);
        let end = (!end.is_empty()).then_some(end);
        if end.as_deref().is_some_and(|e| e <= start) {
            return None;
        }
        Some((Self { start: start.to_vec(), end, built_at, moves, rows }, blocks, at))
    }

    fn holds(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|e| key < e)
    }
}

/// What a chunk of the scan is read from.
#[derive(Clone, Copy)]
enum Source {
    /// A fresh segment (index into the segments read).
    Segment(usize),
    /// The dose rows.
    Rows,
}

/// A chunk's result: its batches, and when it was decoded from rows, its doses and their
/// blocks encoded for a segment.
struct ChunkColumns {
    batches: Vec<DoseColumns>,
    rebuilt: Option<(u64, u32, Vec<u8>)>,
}

/// The dose sequence number and move count of a snapshot.
fn counts(meta: &impl ReadableTable<&'static str, u64>) -> Result<(u64, u64)> {
    let get = |name| meta.get(name).map(|g| g.map(|g| g.value()).unwrap_or(0)).map_err(storage("reading the sequence numbers"));
    Ok((get(META_DOSE_SEQ)?, get(META_DOSE_MOVES)?))
}

/// The `doses` keys of municipality `m` written after `after`, from `doses_by_seq`.
fn written_after(
    by_seq: &impl ReadableTable<Bytes, &'static [u8; DOSE_KEY]>,
    m: &MunicipalityCode,
    after: u64,
) -> Result<Vec<(u64, [u8; DOSE_KEY])>> {
    let Some(first) = after.checked_add(1) else { return Ok(Vec::new()) };
    let start = seq_key(m, first);
    let end = prefix_end(&muni(m)).unwrap_or_default();
    let mut out = Vec::new();
    for entry in by_seq.range::<&[u8]>(start.as_slice()..end.as_slice()).map_err(storage("scanning doses by sequence"))? {
        let (k, key) = entry.map_err(storage("scanning doses by sequence"))?;
        let seq = k.value().get(M..).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes);
        out.push((seq, *key.value()));
    }
    Ok(out)
}

/// Columns `block` handed over in batches of at most `rows`.
fn in_batches(block: DoseColumns, rows: usize, batches: &mut Vec<DoseColumns>) -> Result<()> {
    if block.len() <= rows {
        if !block.is_empty() {
            batches.push(block);
        }
        return Ok(());
    }
    let mut at = 0;
    while at < block.len() {
        batches.push(block.rows(at..at + rows)?);
        at += rows;
    }
    Ok(())
}

/// The voucher-order column scan: fresh segments decoded, the rest decoded from rows, on
/// the parallel workers from one read snapshot; then the segments of what was decoded from
/// rows are written ([`refresh`]).
fn scan_by_voucher(
    db: &Database,
    m: &MunicipalityCode,
    rows: usize,
    sizes: Sizes,
    out: &async_channel::Sender<Vec<DoseColumns>>,
) -> Result<u64> {
    let Sizes { segment_rows, refresh_bytes } = sizes;
    let txn = begin_read(db)?;
    let doses = open_read(&txn, DOSES)?;
    let stored = open_read(&txn, DOSE_SEGMENTS)?;
    let (snapshot_seq, moves) = counts(&open_read(&txn, META)?)?;
    let prefix = muni(m);
    let m_end = prefix_end(&prefix);

    let mut segments = Vec::new();
    for entry in prefixed(&stored, &prefix)? {
        let (k, v) = entry.map_err(storage("reading the dose segments"))?;
        if let Some((segment, _, _)) = Segment::parse(k.value(), v.value()) {
            segments.push(segment);
        }
    }
    // Stale: built at another move count, or a dose of its range written after it was built.
    let mut fresh: Vec<bool> = segments.iter().map(|s| s.moves == moves && s.built_at <= snapshot_seq).collect();
    if let Some(oldest) = segments.iter().map(|s| s.built_at).min() {
        let index = open_read(&txn, DOSES_BY_SEQ)?;
        for (seq, key) in written_after(&index, m, oldest)? {
            let i = segments.partition_point(|s| s.start.as_slice() <= key.as_slice());
            if let Some(s) = i.checked_sub(1).and_then(|i| segments.get(i).map(|s| (i, s)))
                && s.1.holds(&key)
                && seq > s.1.built_at
            {
                fresh[s.0] = false;
            }
        }
    }

    // The range cut into fresh segments and ranges read from rows, in key order.
    let mut starts: Vec<Vec<u8>> = Vec::new();
    let mut sources: Vec<Source> = Vec::new();
    let any_fresh = fresh.iter().any(|&f| f);
    let mut cursor: Option<Vec<u8>> = Some(prefix.to_vec());
    let mut estimate = 0u64;
    let rows_between =
        |from: &[u8], to: Option<&[u8]>, estimate: u64, starts: &mut Vec<Vec<u8>>, sources: &mut Vec<Source>| -> Result<()> {
            let n = if any_fresh {
                usize::try_from(estimate / STALE_CHUNK_ROWS + 2).unwrap_or(parallel::CHUNKS).min(parallel::CHUNKS)
            } else {
                parallel::CHUNKS
            };
            let cut = Chunks::between(&doses, &prefix, from, to, VOUCHER_KEY - M, n)?;
            sources.extend(cut.starts().iter().map(|_| Source::Rows));
            starts.extend(cut.starts().iter().cloned());
            Ok(())
        };
    for (i, s) in segments.iter().enumerate() {
        let Some(at) = cursor.as_deref() else { break };
        if s.start.as_slice() < at {
            continue;
        }
        if !fresh[i] {
            estimate += s.rows;
            continue;
        }
        if s.start.as_slice() > at {
            rows_between(at, Some(&s.start), estimate, &mut starts, &mut sources)?;
        }
        estimate = 0;
        starts.push(s.start.clone());
        sources.push(Source::Segment(i));
        // A segment running to the end of the municipality's keys leaves nothing after it.
        cursor = s.end.clone().filter(|e| Some(e) != m_end.as_ref());
    }
    if let Some(at) = cursor.as_deref() {
        rows_between(at, m_end.as_deref(), estimate, &mut starts, &mut sources)?;
    }
    let chunks = Chunks::from_starts(starts, m_end.clone());

    let mut high = 0u64;
    // Chunks consumed but not yet written as segments: from chunk `pending_from` on.
    let mut pending: Vec<Option<(u64, u32, Vec<u8>)>> = Vec::new();
    let mut pending_from = 0usize;
    let mut pending_bytes = 0usize;
    let mut complete = true;
    let mut writing = true;
    scan_chunks_indexed(
        &doses,
        &chunks,
        parallel::workers(),
        |i, range| {
            let mut batches = Vec::new();
            if let Some(Source::Segment(s)) = sources.get(i) {
                let key = segments[*s].start.as_slice();
                let value = stored.get(key).map_err(storage("reading a dose segment"))?;
                let decoded = value.as_ref().and_then(|v| {
                    let (_, blocks, at) = Segment::parse(key, v.value())?;
                    let mut rest = v.value().get(at..)?;
                    let mut out = Vec::new();
                    for _ in 0..blocks {
                        let (block, next) = DoseColumns::decode(rest).ok()?;
                        out.push(block);
                        rest = next;
                    }
                    Some(out)
                });
                // A segment this build cannot read is read from rows below, and rebuilt.
                if let Some(blocks) = decoded {
                    for block in blocks {
                        in_batches(block, rows, &mut batches)?;
                    }
                    return Ok(ChunkColumns { batches, rebuilt: None });
                }
            }
            let mut columns = DoseColumns::with_capacity(rows.min(CHUNK_ROOM));
            for entry in range {
                let (k, v) = entry.map_err(storage("scanning doses by voucher"))?;
                if !is_dose_key(k.value()) {
                    continue;
                }
                columns.push_stored(&mut postcard::Deserializer::from_bytes(v.value())).map_err(storage("decoding a dose"))?;
                if columns.len() >= rows {
                    let next = columns.empty_like();
                    batches.push(std::mem::replace(&mut columns, next));
                }
            }
            if !columns.is_empty() {
                batches.push(columns);
            }
            let mut encoded = Vec::new();
            for b in &batches {
                b.encode(&mut encoded)?;
            }
            let count = batches.iter().map(|b| b.len() as u64).sum();
            Ok(ChunkColumns { rebuilt: Some((count, u32::try_from(batches.len()).unwrap_or(u32::MAX), encoded)), batches })
        },
        |chunk| {
            high = chunk.batches.iter().fold(high, |h, c| h.max(c.high_seq()));
            // Once a write failed, nothing more is kept for one.
            let rebuilt = chunk.rebuilt.filter(|_| writing);
            pending_bytes += rebuilt.as_ref().map_or(0, |r| r.2.len());
            pending.push(rebuilt);
            // `false` once the visitor stopped the scan.
            let sent = chunk.batches.is_empty() || out.send_blocking(chunk.batches).is_ok();
            complete &= sent;
            // The encoded columns wait for their write in memory: written every
            // `refresh_bytes` ([`REFRESH_BYTES`]), so that a scan of ten million doses does not hold a copy of them all.
            if sent && writing && pending_bytes >= refresh_bytes {
                let done = std::mem::take(&mut pending);
                let n = done.len();
                // The cache is not the read's to fail: the doses were sent whatever the write
                // does. A write that fails (a full disk, say) changes nothing, and the scan
                // writes no more.
                writing = refresh(db, m, &chunks, pending_from, done, segment_rows, snapshot_seq, moves).is_ok();
                pending_from += n;
                pending_bytes = 0;
            }
            Ok(sent)
        },
    )?;
    drop((doses, stored));
    drop(txn);
    if writing && complete && pending_from + pending.len() == chunks.len() && pending.iter().any(Option::is_some) {
        // As above: a failed cache write leaves the cache as it was, and the read stands.
        let _ = refresh(db, m, &chunks, pending_from, pending, segment_rows, snapshot_seq, moves);
    }
    Ok(high)
}

/// Writes the segments of chunks a scan decoded from rows: `rebuilt` holds one entry per
/// chunk of `chunks` from chunk `first` on (`Some`: decoded from rows, its doses, blocks and
/// their encoding). In one write transaction: consecutive such chunks are grouped into
/// segments of at least `segment_rows` doses ([`SEGMENT_ROWS`]; the last of a run may hold
/// fewer), replacing every segment stored in their ranges. Checked in that transaction:
/// nothing is written when a dose moved since the snapshot, and a segment whose range holds
/// a dose written after the snapshot (`built_at`) is left out (its range is then read from
/// rows next time).
#[allow(clippy::too_many_arguments)]
fn refresh(
    db: &Database,
    m: &MunicipalityCode,
    chunks: &Chunks,
    first: usize,
    rebuilt: Vec<Option<(u64, u32, Vec<u8>)>>,
    segment_rows: usize,
    built_at: u64,
    moves: u64,
) -> Result<()> {
    let start_of = |i: usize| chunks.starts().get(i).cloned().unwrap_or_default();
    let end_of = |i: usize| chunks.starts().get(i + 1).map(Vec::as_slice).or(chunks.end()).map(<[u8]>::to_vec);
    // The new segments (runs of `rebuilt` indices, with their doses and blocks), and the
    // ranges they replace (runs of chunks read from rows).
    let mut groups: Vec<(std::ops::Range<usize>, u64, u32)> = Vec::new();
    let mut replaced: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    let mut open: Option<(std::ops::Range<usize>, u64, u32)> = None;
    for (j, chunk) in rebuilt.iter().enumerate() {
        let i = first + j;
        let Some((count, blocks, _)) = chunk else {
            groups.extend(open.take());
            continue;
        };
        match replaced.last_mut() {
            Some((_, end)) if end.as_deref() == Some(start_of(i).as_slice()) => *end = end_of(i),
            _ => replaced.push((start_of(i), end_of(i))),
        }
        let g = open.get_or_insert((j..j, 0, 0));
        g.0.end = j + 1;
        g.1 += count;
        g.2 = g.2.saturating_add(*blocks);
        if g.1 >= segment_rows as u64 {
            groups.extend(open.take());
        }
    }
    groups.extend(open.take());

    let txn = begin_write(db)?;
    let result = (|| -> Result<()> {
        let (_, now_moves) = counts(&open_write(&txn, META)?)?;
        if now_moves != moves {
            return Ok(());
        }
        let written = written_after(&open_write(&txn, DOSES_BY_SEQ)?, m, built_at)?;
        let mut table = open_write(&txn, DOSE_SEGMENTS)?;
        for (start, end) in &replaced {
            let old: Vec<Vec<u8>> = match end {
                Some(end) => table.range::<&[u8]>(start.as_slice()..end.as_slice()),
                None => table.range::<&[u8]>(start.as_slice()..),
            }
            .map_err(storage("reading the dose segments"))?
            .map(|e| e.map(|(k, _)| k.value().to_vec()).map_err(storage("reading the dose segments")))
            .collect::<Result<_>>()?;
            for k in old {
                table.remove(k.as_slice()).map_err(storage("removing a dose segment"))?;
            }
        }
        for (range, rows, blocks) in groups {
            let segment = Segment { start: start_of(first + range.start), end: end_of(first + range.end - 1), built_at, moves, rows };
            if written.iter().any(|(_, key)| segment.holds(key)) {
                continue;
            }
            // The encoded chunks copied once, behind the header.
            let parts = rebuilt[range].iter().flatten().map(|(_, _, bytes)| bytes.as_slice());
            let value = segment.value(blocks, parts)?;
            table.insert(segment.start.as_slice(), value.as_slice()).map_err(storage("writing a dose segment"))?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => commit(txn),
        Err(e) => abort(txn, e),
    }
}

// ---- resident column segments -------------------------------------------------------------
//
// A read-side cache of a municipality's residents as columns, kept in `resident_columns`
// and built by the column scan alone, as the dose segments are: the first read after an
// import decodes the rows and writes the segments, the next reads decode the segments
// (length checks and bulk copies). Residents change only through an import, which counts
// itself per municipality in `meta` (`resident_imports:<m>`); every segment's value starts
// with the count it was built at, and a municipality's segments are written all together
// in one write transaction, so they are fresh iff their count is the current one. An
// import thus writes one counter per municipality, not the segments.

/// The `meta` entry counting the imports that touched municipality `m`.
pub(super) fn resident_imports_key(m: &[u8; M]) -> String {
    format!("resident_imports:{}", String::from_utf8_lossy(m))
}

/// Counts an import of each municipality of `municipalities`, in the import's transaction:
/// their resident column segments are stale from its commit on.
pub(super) fn count_resident_imports(txn: &WriteTransaction, municipalities: &BTreeSet<[u8; M]>) -> Result<()> {
    let mut meta = open_write(txn, META)?;
    for m in municipalities {
        let n = resident_imports(&meta, m)?;
        meta.insert(resident_imports_key(m).as_str(), n + 1).map_err(storage("writing an import count"))?;
    }
    Ok(())
}

/// The import count of `m` in `meta`.
fn resident_imports(meta: &impl ReadableTable<&'static str, u64>, m: &[u8; M]) -> Result<u64> {
    Ok(meta.get(resident_imports_key(m).as_str()).map_err(storage("reading an import count"))?.map_or(0, |g| g.value()))
}

/// The import count a stored segment was built at (its first 8 bytes).
fn built_at(value: &[u8]) -> Option<u64> {
    value.first_chunk::<8>().map(|b| u64::from_le_bytes(*b))
}

/// Sends a municipality's residents in addressee order, as columns of at most `rows`: its
/// `resident_columns` segments when they are fresh, decoded on several threads from one
/// read snapshot ([`parallel`]) in key order; otherwise its rows decoded as
/// [`scan_resident_rows`] does, after which the segments are written from what was decoded
/// (when the visitor took every batch and no import came in between). A segment value that
/// does not decode (damaged, or of another format) is not an error: the residents from
/// where it starts are decoded from the rows, and the segments rebuilt, as for stale ones.
pub(crate) fn scan_resident_columns(
    db: &Database,
    m: &MunicipalityCode,
    rows: usize,
    out: &async_channel::Sender<Vec<ResidentColumns>>,
) -> Result<()> {
    let rows = rows.max(1);
    let prefix = muni(m);
    let txn = begin_read(db)?;
    let imports = resident_imports(&open_read(&txn, META)?, &prefix)?;
    let segments = open_read(&txn, RESIDENT_COLUMNS)?;
    let first = segments.get(segment_key(&prefix, 0).as_slice()).map_err(storage("reading resident column segments"))?;
    let fresh = first.as_ref().and_then(|v| built_at(v.value())) == Some(imports);
    drop(first);
    // From the rows when the segments are stale, or from where the first value that does not
    // decode starts (the residents before it were sent); the segments are then rebuilt.
    let mut from_rows = (!fresh).then_some(0usize);
    if fresh {
        let chunks = Chunks::by_key(&segments, &prefix)?;
        let mut sent = 0usize;
        scan_chunks(
            &segments,
            &chunks,
            parallel::workers(),
            |range| {
                let mut batches = Vec::new();
                for entry in range {
                    let (_, v) = entry.map_err(storage("scanning resident column segments"))?;
                    // `None`: a value this build cannot read (damaged, or of another format).
                    let Some(blocks) = v.value().get(8..).and_then(|b| ResidentColumns::decode_segments(b).ok()) else {
                        return Ok(None);
                    };
                    for block in blocks {
                        batches.extend(block.split(rows)?);
                    }
                }
                Ok(Some(batches))
            },
            |batches| {
                let Some(batches) = batches else {
                    from_rows = Some(sent);
                    return Ok(false);
                };
                sent += batches.iter().map(ResidentColumns::len).sum::<usize>();
                // `false` once the visitor stopped the scan.
                Ok(batches.is_empty() || out.send_blocking(batches).is_ok())
            },
        )?;
    }
    drop(segments);
    if let Some(skip) = from_rows {
        let built = scan_resident_rows(&txn, m, rows, skip, out, true)?;
        drop(txn);
        if let Some(encoded) = built {
            // The cache is not the read's to fail: the residents were sent, and a write that
            // fails (a full disk, say) leaves the segments as they were.
            let _ = write_resident_segments(db, &prefix, imports, encoded);
        }
    }
    Ok(())
}

/// Sends a municipality's residents as columns decoded from their rows, chunks of the range
/// decoded on several threads from the snapshot of `txn`, but for the first `skip` of them
/// (sent already). With `encode`, also returns them all encoded as segments of at most
/// [`RESIDENT_SEGMENT_ROWS`] residents, in key order, when the visitor took them all.
pub(super) fn scan_resident_rows(
    txn: &redb::ReadTransaction,
    m: &MunicipalityCode,
    rows: usize,
    skip: usize,
    out: &async_channel::Sender<Vec<ResidentColumns>>,
    encode: bool,
) -> Result<Option<Vec<Vec<u8>>>> {
    let residents = open_read(txn, RESIDENTS)?;
    let chunks = Chunks::by_addressee(&residents, &muni(m), parallel::CHUNKS)?;
    // Building segments, the columns are cut in pieces of their own size (small enough that
    // several fill a segment value, whatever batch size this read asked for), then split
    // into the batches asked for.
    let piece = if encode { RESIDENT_SEGMENT_ROWS } else { rows };
    let mut encoded = Vec::new();
    // Residents of short pieces not yet encoded, merged in key order.
    let mut short: Option<ResidentColumns> = None;
    let flush = |short: &mut Option<ResidentColumns>, encoded: &mut Vec<Vec<u8>>| -> Result<()> {
        if let Some(s) = short.take() {
            let mut bytes = Vec::new();
            s.encode_segment(&mut bytes)?;
            encoded.push(bytes);
        }
        Ok(())
    };
    let mut complete = true;
    let mut skipped = 0usize;
    scan_chunks(
        &residents,
        &chunks,
        parallel::workers(),
        |range| {
            let mut batches = Vec::new();
            let mut columns = ResidentColumns::with_capacity(piece.min(CHUNK_ROOM));
            for entry in range {
                let (_, v) = entry.map_err(storage("scanning residents"))?;
                columns.push_stored(&mut postcard::Deserializer::from_bytes(v.value())).map_err(storage("decoding a resident"))?;
                if columns.len() >= piece {
                    let next = columns.empty_like();
                    batches.push(std::mem::replace(&mut columns, next));
                }
            }
            if !columns.is_empty() {
                batches.push(columns);
            }
            // Full pieces are encoded here, on the workers; a chunk's last, short piece is
            // merged with its neighbours' on the consumer first (addressees of each length
            // are cut into chunks of their own, many of them small).
            let mut pieces = Vec::new();
            let mut tail = None;
            if encode {
                for b in &batches {
                    if b.len() >= piece {
                        let mut bytes = Vec::new();
                        b.encode_segment(&mut bytes)?;
                        pieces.push(bytes);
                    } else {
                        tail = Some(b.clone());
                    }
                }
                if rows < piece {
                    batches = batches.into_iter().map(|b| b.split(rows)).collect::<Result<Vec<_>>>()?.into_iter().flatten().collect();
                }
            }
            Ok((batches, pieces, tail))
        },
        |(batches, pieces, tail)| {
            if !pieces.is_empty() {
                flush(&mut short, &mut encoded)?;
                encoded.extend(pieces);
            }
            if let Some(t) = tail {
                if short.as_ref().is_some_and(|s| s.len() + t.len() > piece) {
                    flush(&mut short, &mut encoded)?;
                }
                match &mut short {
                    Some(s) => s.append(&t)?,
                    None => short = Some(t),
                }
            }
            // The residents sent already are left out.
            let mut batches = batches;
            if skipped < skip {
                let mut kept = Vec::with_capacity(batches.len());
                for b in batches {
                    let n = b.len();
                    let leave = (skip - skipped).min(n);
                    skipped += leave;
                    if leave == 0 {
                        kept.push(b);
                    } else if leave < n {
                        kept.push(b.rows(leave..n)?);
                    }
                }
                batches = kept;
            }
            // `false` once the visitor stopped the scan.
            let sent = batches.is_empty() || out.send_blocking(batches).is_ok();
            complete &= sent;
            Ok(sent)
        },
    )?;
    flush(&mut short, &mut encoded)?;
    Ok((encode && complete).then_some(encoded))
}

/// Writes municipality `m`'s segments from its encoded batches (in key order),
/// replacing those stored, in one write transaction, unless an import of `m` came after the
/// read they were decoded in (their count `imports` is no longer the current one). Batches
/// are put together in values of up to [`RESIDENT_SEGMENT_BYTES`]: redb keeps a large value
/// in a run of pages a power of two long, so values just under a power of two fill theirs.
pub(super) fn write_resident_segments(db: &Database, m: &[u8; M], imports: u64, encoded: Vec<Vec<u8>>) -> Result<()> {
    let txn = begin_write(db)?;
    let result = (|| -> Result<bool> {
        if resident_imports(&open_write(&txn, META)?, m)? != imports {
            return Ok(false);
        }
        let mut segments = open_write(&txn, RESIDENT_COLUMNS)?;
        let old = prefixed(&segments, m)?
            .map(|e| e.map(|(k, _)| k.value().to_vec()).map_err(storage("reading resident column segments")))
            .collect::<Result<Vec<_>>>()?;
        for k in old {
            segments.remove(k.as_slice()).map_err(storage("removing a resident column segment"))?;
        }
        let mut n = 0u32;
        let mut value: Vec<u8> = Vec::new();
        let mut put = |value: &mut Vec<u8>, n: &mut u32| -> Result<()> {
            segments.insert(segment_key(m, *n).as_slice(), value.as_slice()).map_err(storage("writing a resident column segment"))?;
            *n += 1;
            value.clear();
            Ok(())
        };
        for chunk in encoded {
            if value.len() > 8 && value.len() + chunk.len() > RESIDENT_SEGMENT_BYTES {
                put(&mut value, &mut n)?;
            }
            if value.is_empty() {
                value.extend_from_slice(&imports.to_le_bytes());
            }
            value.extend_from_slice(&chunk);
        }
        if !value.is_empty() {
            put(&mut value, &mut n)?;
        }
        Ok(true)
    })();
    match result {
        Ok(true) => commit(txn),
        Ok(false) => txn.abort().map_err(storage("leaving the resident column segments as they are")),
        Err(e) => abort(txn, e),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use redb::ReadableDatabase;
    use vrs_core::store::DynStore;
    use vrs_core::testing::*;

    use super::*;
    use crate::RedbStore;

    /// Doses per segment in these tests: a few hundred doses make many segments.
    const SMALL: usize = 16;

    fn read_with(db: &Database, m: &str, refresh_bytes: usize) -> Vec<DoseColumns> {
        let (tx, rx) = async_channel::unbounded();
        scan_by_voucher(db, &code(m), 1 << 16, Sizes { segment_rows: SMALL, refresh_bytes }, &tx).unwrap();
        drop(tx);
        std::iter::from_fn(|| rx.try_recv().ok()).flatten().collect()
    }

    /// A stored segment's start, end, doses and the sequence number it was built at.
    type Stored = (Vec<u8>, Option<Vec<u8>>, u64, u64);

    fn segments(db: &Database) -> Vec<Stored> {
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(DOSE_SEGMENTS).unwrap();
        t.iter()
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                let (s, _, _) = Segment::parse(k.value(), v.value())
                    .unwrap_or_else(|| panic!("{:?} {:?}", String::from_utf8_lossy(k.value()), &v.value()[..60.min(v.value().len())]));
                (s.start, s.end, s.rows, s.built_at)
            })
            .collect()
    }

    async fn check(store: &DynStore, db: &Database, m: &str) {
        check_with(store, db, m, usize::MAX).await;
    }

    async fn check_with(store: &DynStore, db: &Database, m: &str, refresh_bytes: usize) {
        let (records, _) = scanned_doses(store, m, vrs_core::store::DoseScan::ByVoucher).await;
        let rows = |batches: &[DoseColumns]| -> Vec<DoseColumns> {
            batches.iter().flat_map(|b| (0..b.len()).map(move |i| b.rows(i..i + 1).unwrap())).collect()
        };
        let expected: Vec<DoseColumns> = records
            .iter()
            .map(|d| {
                let mut c = DoseColumns::with_capacity(1);
                c.push_record(d).unwrap();
                c
            })
            .collect();
        assert_eq!(rows(&read_with(db, m, refresh_bytes)), expected);
    }

    /// Segments written as the scan goes (every chunk's worth of bytes) cover the range as
    /// those written at its end do.
    #[tokio::test]
    async fn segments_written_during_the_scan_cover_the_range() {
        let redb = RedbStore::in_memory().unwrap();
        let db = Arc::clone(&redb.db);
        let store: DynStore = Arc::new(redb);
        let doses =
            (0..300u64).map(|i| dose(&format!("d{i}"), voucher(CHIYODA, &number(i)), 1, "2021-06-01T01:00:00Z", "venue-1")).collect();
        store.apply(vec![new_doses(doses)]).await.unwrap();
        check_with(&store, &db, CHIYODA, 1).await;
        let built = segments(&db);
        assert!(built.len() >= 8, "{} segments", built.len());
        assert_eq!(built.iter().map(|s| s.2).sum::<u64>(), 300);
        assert_eq!(built[0].0, CHIYODA.as_bytes());
        assert!(built.windows(2).all(|w| w[0].1.as_deref() == Some(w[1].0.as_slice())));
        assert_eq!(built.last().unwrap().1, prefix_end(CHIYODA.as_bytes()));
        check_with(&store, &db, CHIYODA, 1).await;
        assert_eq!(segments(&db), built);
        store
            .apply(vec![new_doses(vec![dose("new", voucher(CHIYODA, &number(100)), 2, "2021-06-22T01:00:00Z", "venue-1")])])
            .await
            .unwrap();
        check_with(&store, &db, CHIYODA, 1).await;
        let after = segments(&db);
        assert_eq!(after.iter().map(|s| s.2).sum::<u64>(), 301);
        assert!(after.windows(2).all(|w| w[0].1.as_deref() == Some(w[1].0.as_slice())));
    }

    /// The dose segments are a cache: a read whose segment writes fail (a full disk, say)
    /// still hands over every dose, whether the write fails during the scan or after it.
    #[tokio::test]
    async fn a_dose_read_whose_cache_write_fails_still_succeeds() {
        let (backend, fail) = crate::ops::tests::FailingWrites::new();
        let redb = RedbStore::from_database(Database::builder().create_with_backend(backend).unwrap()).unwrap();
        let db = Arc::clone(&redb.db);
        let store: DynStore = Arc::new(redb);
        let doses =
            (0..300u64).map(|i| dose(&format!("d{i}"), voucher(CHIYODA, &number(i)), 1, "2021-06-01T01:00:00Z", "venue-1")).collect();
        store.apply(vec![new_doses(doses)]).await.unwrap();
        fail.store(true, std::sync::atomic::Ordering::SeqCst);
        // Written every chunk's worth of bytes: the first write, during the scan, fails.
        check_with(&store, &db, CHIYODA, 1).await;
        assert!(segments(&db).is_empty(), "nothing written");
        // Written once at the end of the scan: that write fails.
        check(&store, &db, CHIYODA).await;
        assert!(segments(&db).is_empty(), "nothing written");
    }

    fn number(i: u64) -> String {
        format!("{:010}", i * 48_611_003 % 10_000_000_000)
    }

    #[tokio::test]
    async fn only_the_segments_a_write_reached_are_rebuilt() {
        let redb = RedbStore::in_memory().unwrap();
        let db = Arc::clone(&redb.db);
        let store: DynStore = Arc::new(redb);
        let doses =
            (0..400u64).map(|i| dose(&format!("d{i}"), voucher(CHIYODA, &number(i)), 1, "2021-06-01T01:00:00Z", "venue-1")).collect();
        store.apply(vec![new_doses(doses)]).await.unwrap();
        assert!(segments(&db).is_empty(), "registrations build no segment");
        check(&store, &db, CHIYODA).await;
        let built = segments(&db);
        assert!(built.len() >= 8, "{} segments", built.len());
        assert_eq!(built.iter().map(|s| s.2).sum::<u64>(), 400);
        // Ranges follow each other from the municipality's first key to its end.
        assert_eq!(built[0].0, CHIYODA.as_bytes());
        assert!(built.windows(2).all(|w| w[0].1.as_deref() == Some(w[1].0.as_slice())));
        // The last runs to the end of the municipality's keys.
        assert_eq!(built.last().unwrap().1, prefix_end(CHIYODA.as_bytes()));
        // Fresh: read from the segments, none rebuilt.
        check(&store, &db, CHIYODA).await;
        assert_eq!(segments(&db), built);

        // One registration: only the segment of its voucher is rebuilt.
        let new = dose("new", voucher(CHIYODA, &number(200)), 2, "2021-06-22T01:00:00Z", "venue-1");
        store.apply(vec![new_doses(vec![new])]).await.unwrap();
        check(&store, &db, CHIYODA).await;
        let after = segments(&db);
        let stale: Vec<_> = built.iter().filter(|s| !after.contains(s)).collect();
        let rebuilt: Vec<_> = after.iter().filter(|s| !built.contains(s)).collect();
        assert_eq!(stale.len(), 1, "{stale:?}");
        // Rebuilt over the stale one's range (cut anew), with the new dose.
        assert_eq!(rebuilt.first().unwrap().0, stale[0].0);
        assert_eq!(rebuilt.last().unwrap().1, stale[0].1);
        assert_eq!(rebuilt.iter().map(|s| s.2).sum::<u64>(), stale[0].2 + 1);

        // Another municipality's registration leaves these fresh.
        store.apply(vec![new_doses(vec![dose("chuo", voucher(CHUO, "0000000001"), 1, "2021-06-01T01:00:00Z", "venue-1")])]).await.unwrap();
        check(&store, &db, CHIYODA).await;
        assert_eq!(segments(&db), after);

        // A dose moved to another voucher: every segment is rebuilt.
        let moved = next_revision(&store.dose(dose_id("d5")).await.unwrap().unwrap(), |d| d.voucher = voucher(CHUO, "0000000002"));
        store.apply(vec![updated_doses(vec![moved])]).await.unwrap();
        check(&store, &db, CHIYODA).await;
        let moved = segments(&db);
        assert!(moved.iter().all(|s| !after.contains(s)));
        assert_eq!(moved.iter().map(|s| s.2).sum::<u64>(), 400);

        // A segment this build cannot read is read from rows and rebuilt.
        let (victim, _, _, _) = moved[3].clone();
        let w = db.begin_write().unwrap();
        w.open_table(DOSE_SEGMENTS).unwrap().insert(victim.as_slice(), b"VRSS\x01 not a segment".as_slice()).unwrap();
        w.commit().unwrap();
        check(&store, &db, CHIYODA).await;
        let healed = segments(&db);
        assert_eq!(healed.iter().map(|s| s.2).sum::<u64>(), 400);
        assert!(healed.iter().any(|s| s.0 == victim));
    }
}
