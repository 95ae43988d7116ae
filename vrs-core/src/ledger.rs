//! Ledger export (予防接種台帳向け出力) in the wide layout VRS published: one row per
//! person with at least one dose, 1 + 8·n columns — 個別宛名番号, then for each dose
//! number k = 1..n: 登録日時 (YYYYMMDDHHMMSS), 接種日 (YYYYMMDD), 券番号, 接種自治体コード,
//! 接種会場名, 接種医師名, ワクチンメーカー, ワクチンロット番号. Block k holds dose number k
//! (the earliest registered, when a duplicate awaits review); voided doses are left out.
//! Also the unmatched list (登録待ちリスト).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use crate::clock::ledger_timestamp;
use crate::dose::DoseRecord;
use crate::ids::{MunicipalityCode, PersonRef, VoucherNumber, VoucherRef};
use crate::reconcile::vouchers_of;
use crate::stats::StatsQuery;
use crate::store::{DoseScan, StoreBackend};
use crate::{Error, Result};

/// Character encoding of an export.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputEncoding {
    /// UTF-8 (the default).
    #[default]
    Utf8,
    /// Shift_JIS (CP932), as many municipal ledger systems still read.
    ShiftJis,
}

/// Options of a ledger export.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerOptions {
    /// Output encoding.
    pub encoding: OutputEncoding,
    /// Only persons with a dose written after this cursor (returned by the previous export).
    pub since: Option<u64>,
    /// Leave out the header row.
    pub no_header: bool,
}

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerExport {
    /// Person rows written.
    pub rows: u64,
    /// Doses written in those rows.
    pub doses: u64,
    /// Dose blocks per row (n).
    pub blocks: usize,
    /// Cursor for the next delta export.
    pub cursor: u64,
}

/// A writer that encodes UTF-8 text to Shift_JIS in a streaming way; an unmappable
/// character is an error, never a silent replacement.
struct Encoded<'a> {
    out: &'a mut (dyn Write + Send),
    encoding: OutputEncoding,
    encoder: encoding_rs::Encoder,
    carry: Vec<u8>,
    buf: Vec<u8>,
}

impl<'a> Encoded<'a> {
    fn new(out: &'a mut (dyn Write + Send), encoding: OutputEncoding) -> Self {
        Self { out, encoding, encoder: encoding_rs::SHIFT_JIS.new_encoder(), carry: Vec::new(), buf: vec![0; 64 * 1024] }
    }

    fn encode(&mut self, text: &str, last: bool) -> io::Result<()> {
        let mut input = text;
        loop {
            let (result, read, written) = self.encoder.encode_from_utf8_without_replacement(input, &mut self.buf, last);
            self.out.write_all(&self.buf[..written])?;
            input = &input[read..];
            match result {
                encoding_rs::EncoderResult::InputEmpty => return Ok(()),
                encoding_rs::EncoderResult::OutputFull => continue,
                encoding_rs::EncoderResult::Unmappable(c) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("character U+{:04X} cannot be written in Shift_JIS", c as u32),
                    ));
                }
            }
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.encoding == OutputEncoding::ShiftJis {
            if !self.carry.is_empty() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "export ended inside a UTF-8 character"));
            }
            self.encode("", true)?;
        }
        self.out.flush()
    }
}

impl Write for Encoded<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.encoding == OutputEncoding::Utf8 {
            return self.out.write(data);
        }
        // The csv writer may cut a multi-byte character between two writes: keep the
        // incomplete tail for the next call.
        let mut joined;
        let bytes: &[u8] = if self.carry.is_empty() {
            data
        } else {
            joined = std::mem::take(&mut self.carry);
            joined.extend_from_slice(data);
            &joined
        };
        let valid = match std::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) if e.error_len().is_none() => {
                let (head, tail) = bytes.split_at(e.valid_up_to());
                self.carry = tail.to_vec();
                std::str::from_utf8(head).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            }
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        };
        let valid = valid.to_owned();
        self.encode(&valid, false)?;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn io_error(e: impl std::fmt::Display) -> Error {
    Error::Invalid { field: "export", value: String::new(), reason: e.to_string() }
}

fn csv_error(e: csv::Error) -> Error {
    io_error(e)
}

/// The header row for `n` dose blocks.
pub fn header(n: usize) -> Vec<String> {
    let mut h = Vec::with_capacity(1 + 8 * n);
    h.push("個別宛名番号".to_owned());
    for k in 1..=n {
        for col in [
            "接種履歴登録日時",
            "接種日",
            "券番号",
            "接種自治体コード",
            "接種会場名",
            "接種医師名",
            "ワクチンメーカー",
            "ワクチンロット番号",
        ] {
            h.push(format!("{k}回目{col}"));
        }
    }
    h
}

/// The blocks of one person: block k holds dose number k.
fn blocks<'a>(doses: impl IntoIterator<Item = &'a DoseRecord>) -> BTreeMap<u8, &'a DoseRecord> {
    let mut by_number: BTreeMap<u8, &DoseRecord> = BTreeMap::new();
    for d in doses.into_iter().filter(|d| !d.is_voided()) {
        let n = d.details().dose_number;
        match by_number.get(&n) {
            Some(existing) if (existing.registered_at, existing.id) <= (d.registered_at, d.id) => {}
            _ => {
                by_number.insert(n, d);
            }
        }
    }
    by_number
}

struct RowWriter<'a> {
    csv: csv::Writer<Encoded<'a>>,
    n: usize,
    record: Vec<String>,
    rows: u64,
    doses: u64,
}

impl<'a> RowWriter<'a> {
    fn new(out: &'a mut (dyn Write + Send), encoding: OutputEncoding, n: usize, with_header: bool) -> Result<Self> {
        let mut csv = csv::WriterBuilder::new().flexible(false).buffer_capacity(256 * 1024).from_writer(Encoded::new(out, encoding));
        if with_header {
            csv.write_record(header(n)).map_err(csv_error)?;
        }
        Ok(Self { csv, n, record: vec![String::new(); 1 + 8 * n], rows: 0, doses: 0 })
    }

    fn row<'d>(&mut self, addressee: &str, doses: impl IntoIterator<Item = &'d DoseRecord>) -> Result<()> {
        let blocks = blocks(doses);
        if blocks.is_empty() {
            return Ok(());
        }
        for f in self.record.iter_mut() {
            f.clear();
        }
        self.record[0].push_str(addressee);
        for (k, d) in blocks {
            let k = usize::from(k);
            if k == 0 || k > self.n {
                continue;
            }
            let det = d.details();
            let base = 1 + 8 * (k - 1);
            use std::fmt::Write as _;
            self.record[base].push_str(&ledger_timestamp(d.registered_at));
            let _ = write!(self.record[base + 1], "{}", det.date_given.format("%Y%m%d"));
            self.record[base + 2].push_str(d.voucher.number.as_str());
            self.record[base + 3].push_str(det.administering_municipality.as_str());
            self.record[base + 4].push_str(&det.site_name);
            self.record[base + 5].push_str(&det.doctor);
            self.record[base + 6].push_str(&det.maker);
            self.record[base + 7].push_str(&det.lot);
            self.doses += 1;
        }
        self.csv.write_record(&self.record).map_err(csv_error)?;
        self.rows += 1;
        Ok(())
    }

    fn finish(self) -> Result<(u64, u64)> {
        let (rows, doses) = (self.rows, self.doses);
        let mut inner = self.csv.into_inner().map_err(|e| io_error(e.error()))?;
        inner.finish().map_err(io_error)?;
        Ok((rows, doses))
    }
}

/// Exports a municipality's ledger from `store`: every row, or only the persons with a
/// dose written after `options.since`. Access is checked by the service, not here.
pub async fn export(
    store: &dyn StoreBackend,
    municipality: MunicipalityCode,
    options: &LedgerOptions,
    out: &mut (dyn Write + Send),
) -> Result<LedgerExport> {
    // Doses registered under a previous municipality's voucher follow the person here.
    // The previous voucher names the same person (転入), whichever resident record the
    // doses were matched to at the previous municipality. One read for all of them.
    let moved_in = store.moved_in_residents(municipality).await?;
    let elsewhere: Vec<Vec<VoucherRef>> =
        moved_in.iter().map(|r| vouchers_of(r).into_iter().filter(|v| v.municipality != municipality).collect()).collect();
    let mut found = store.doses_by_vouchers(&elsewhere.concat()).await?.into_iter();
    let mut extras: HashMap<VoucherNumber, (PersonRef, Vec<DoseRecord>)> = HashMap::new();
    for (r, vouchers) in moved_in.iter().zip(&elsewhere) {
        let doses: Vec<DoseRecord> = found.by_ref().take(vouchers.len()).flatten().collect();
        if !doses.is_empty() {
            extras.insert(r.voucher, (r.person.clone(), doses));
        }
    }
    let stats_max = store.statistics(StatsQuery::Municipality(municipality)).await?.iter().map(|r| r.key.dose_number).max().unwrap_or(0);
    let extras_max = extras.values().flat_map(|(_, ds)| ds.iter().map(|d| d.details().dose_number)).max().unwrap_or(0);
    let n = usize::from(stats_max.max(extras_max));

    match options.since {
        None => export_full(store, municipality, options, out, n, extras).await,
        Some(after) => export_delta(store, municipality, options, out, n, after).await,
    }
}

async fn export_full(
    store: &dyn StoreBackend,
    municipality: MunicipalityCode,
    options: &LedgerOptions,
    out: &mut (dyn Write + Send),
    n: usize,
    mut extras: HashMap<VoucherNumber, (PersonRef, Vec<DoseRecord>)>,
) -> Result<LedgerExport> {
    let mut w = RowWriter::new(out, options.encoding, n, !options.no_header)?;
    let mut group: Vec<DoseRecord> = Vec::new();
    let flush = |group: &mut Vec<DoseRecord>,
                 w: &mut RowWriter<'_>,
                 extras: &mut HashMap<VoucherNumber, (PersonRef, Vec<DoseRecord>)>|
     -> Result<()> {
        let Some(first) = group.first() else { return Ok(()) };
        let extra = extras.remove(&first.voucher.number);
        let person = group.iter().find_map(|d| d.matched.clone().filter(|p| p.municipality == municipality));
        if let Some(p) = person {
            let own = group.iter().filter(|d| d.matched.as_ref() == Some(&p));
            match &extra {
                Some((_, more)) => w.row(p.addressee.as_str(), own.chain(more.iter()))?,
                None => w.row(p.addressee.as_str(), own)?,
            }
        } else if let Some((p, more)) = &extra {
            w.row(p.addressee.as_str(), more.iter())?;
        }
        group.clear();
        Ok(())
    };
    let cursor = store
        .scan_doses(municipality, DoseScan::ByVoucher, &mut |d: DoseRecord| {
            if group.first().is_some_and(|g| g.voucher != d.voucher) {
                flush(&mut group, &mut w, &mut extras)?;
            }
            group.push(d);
            Ok(())
        })
        .await?;
    flush(&mut group, &mut w, &mut extras)?;
    // Moved-in residents with no dose under this municipality's voucher.
    let mut rest: Vec<_> = extras.into_values().collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    for (p, doses) in rest {
        w.row(p.addressee.as_str(), doses.iter())?;
    }
    let (rows, doses) = w.finish()?;
    Ok(LedgerExport { rows, doses, blocks: n, cursor })
}

async fn export_delta(
    store: &dyn StoreBackend,
    municipality: MunicipalityCode,
    options: &LedgerOptions,
    out: &mut (dyn Write + Send),
    n: usize,
    after: u64,
) -> Result<LedgerExport> {
    let mut persons: BTreeSet<PersonRef> = BTreeSet::new();
    let cursor = store
        .scan_doses(municipality, DoseScan::ChangedSince { after }, &mut |d: DoseRecord| {
            if let Some(p) = d.matched.filter(|p| p.municipality == municipality) {
                persons.insert(p);
            }
            Ok(())
        })
        .await?;
    let mut w = RowWriter::new(out, options.encoding, n, !options.no_header)?;
    for p in persons {
        let Some(r) = store.resident(&p).await? else { continue };
        let mut doses = Vec::new();
        for v in vouchers_of(&r) {
            let own = v == r.voucher_ref();
            doses.extend(store.doses_by_voucher(v).await?.into_iter().filter(|d| !own || d.matched.as_ref() == Some(&p)));
        }
        w.row(p.addressee.as_str(), doses.iter())?;
    }
    let (rows, doses) = w.finish()?;
    Ok(LedgerExport { rows, doses, blocks: n, cursor: cursor.max(after) })
}

/// Writes the unmatched list (接種対象者登録待ちリスト): doses waiting for their resident.
pub fn write_unmatched(doses: &[DoseRecord], options: &LedgerOptions, out: &mut (dyn Write + Send)) -> Result<u64> {
    let mut csv = csv::WriterBuilder::new().from_writer(Encoded::new(out, options.encoding));
    if !options.no_header {
        csv.write_record([
            "発行自治体コード",
            "券番号",
            "接種回数",
            "接種日",
            "接種自治体コード",
            "接種会場名",
            "接種医師名",
            "ワクチンメーカー",
            "ワクチンロット番号",
            "接種履歴登録日時",
            "記録ID",
        ])
        .map_err(csv_error)?;
    }
    let mut n = 0;
    for d in doses.iter().filter(|d| !d.is_voided()) {
        let det = d.details();
        csv.write_record([
            d.voucher.municipality.as_str(),
            d.voucher.number.as_str(),
            &det.dose_number.to_string(),
            &det.date_given.format("%Y%m%d").to_string(),
            det.administering_municipality.as_str(),
            &det.site_name,
            &det.doctor,
            &det.maker,
            &det.lot,
            &ledger_timestamp(d.registered_at),
            &d.id.to_string(),
        ])
        .map_err(csv_error)?;
        n += 1;
    }
    let mut inner = csv.into_inner().map_err(|e| io_error(e.error()))?;
    inner.finish().map_err(io_error)?;
    Ok(n)
}
