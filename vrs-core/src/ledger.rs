//! Ledger export (予防接種台帳向け出力) in the wide layout VRS published: one row per
//! person with at least one dose, 1 + 8·n columns — 個別宛名番号, then for each dose
//! number k = 1..n: 登録日時 (YYYYMMDDHHMMSS), 接種日 (YYYYMMDD), 券番号, 接種自治体コード,
//! 接種会場名, 接種医師名, ワクチンメーカー, ワクチンロット番号. Block k holds dose number k
//! (the earliest registered, when a duplicate awaits review); voided doses are left out.
//! Also the unmatched list (登録待ちリスト).

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::{ledger_timestamp, push_ledger_date, push_ledger_timestamp};
use crate::dose::DoseRecord;
use crate::ids::{DoseId, MunicipalityCode, PersonRef, VoucherNumber, VoucherRef};
use crate::reconcile::vouchers_of;
use crate::stats::StatsQuery;
use crate::store::{DoseScan, MovedIn, StoreBackend};
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

/// What the ledger reads of one stored dose, kept as stored (day numbers, seconds) so
/// that decoding converts nothing the export does not print.
#[derive(Clone, Debug)]
struct Parts {
    id: DoseId,
    voucher: VoucherRef,
    /// 接種履歴登録日時: whole seconds since 1970 (UTC) and nanoseconds, a valid instant.
    registered: (i64, u32),
    seq: u64,
    voided: bool,
    dose_number: u8,
    /// 接種日: days from 0001-01-01 (counted from 1), a valid date.
    date_given: i32,
    administering_municipality: MunicipalityCode,
    matched: Option<MunicipalityCode>,
    /// Where this dose's matched addressee number, site name, doctor, maker and lot
    /// start and end in the batch's text, one after another, each after the first
    /// preceded by a comma: the four columns of a row's block are one piece of the text.
    bounds: [u32; 6],
    /// Whether one of the site name, doctor, maker and lot is quoted in a row.
    quoted: bool,
}

/// One dose of a [`LedgerDoses`] batch as the ledger export reads it: the newest
/// version's ledger columns and what places the dose in a row and a block.
#[derive(Clone, Copy)]
pub struct LedgerDose<'a> {
    parts: &'a Parts,
    text: &'a [u8],
}

impl<'a> LedgerDose<'a> {
    fn bytes(&self, i: usize) -> &'a [u8] {
        // Each text after the addressee starts after its comma.
        let start = self.parts.bounds[i] as usize + usize::from(i > 0);
        self.text.get(start..self.parts.bounds[i + 1] as usize).unwrap_or_default()
    }

    /// `,site name,doctor,maker,lot`: the end of a row's block when none is quoted.
    fn columns(&self) -> &'a [u8] {
        self.text.get(self.parts.bounds[1] as usize..self.parts.bounds[5] as usize).unwrap_or_default()
    }

    fn text(&self, i: usize) -> &'a str {
        // The batch's text was checked as UTF-8, each field on character boundaries.
        std::str::from_utf8(self.bytes(i)).unwrap_or_default()
    }

    /// The dose's id.
    pub fn id(&self) -> DoseId {
        self.parts.id
    }
    /// The voucher read (券番号; its municipality owns the dose).
    pub fn voucher(&self) -> VoucherRef {
        self.parts.voucher
    }
    /// When first registered (接種履歴登録日時).
    pub fn registered_at(&self) -> DateTime<Utc> {
        let (secs, nanos) = self.parts.registered;
        DateTime::from_timestamp(secs, nanos).unwrap_or_default()
    }
    /// The change sequence number of the dose's last write.
    pub fn seq(&self) -> u64 {
        self.parts.seq
    }
    /// Whether the newest version voids the dose.
    pub fn voided(&self) -> bool {
        self.parts.voided
    }
    /// Dose number (接種回数) of the newest version.
    pub fn dose_number(&self) -> u8 {
        self.parts.dose_number
    }
    /// Date given (接種日).
    pub fn date_given(&self) -> NaiveDate {
        NaiveDate::from_num_days_from_ce_opt(self.parts.date_given).unwrap_or_default()
    }
    /// Where the site is (接種自治体コード).
    pub fn administering_municipality(&self) -> MunicipalityCode {
        self.parts.administering_municipality
    }
    /// The resident the dose is matched to (突合済み): municipality and addressee number.
    pub fn matched(&self) -> Option<(MunicipalityCode, &'a str)> {
        self.parts.matched.map(|m| (m, self.text(0)))
    }
    /// 接種会場名.
    pub fn site_name(&self) -> &'a str {
        self.text(1)
    }
    /// 接種医師名.
    pub fn doctor(&self) -> &'a str {
        self.text(2)
    }
    /// ワクチンメーカー.
    pub fn maker(&self) -> &'a str {
        self.text(3)
    }
    /// ワクチンロット番号.
    pub fn lot(&self) -> &'a str {
        self.text(4)
    }

    /// Whether the dose is matched to `person` (municipality, addressee number).
    fn matched_to(&self, person: (MunicipalityCode, &[u8])) -> bool {
        self.parts.matched == Some(person.0) && self.bytes(0) == person.1
    }

    fn key(&self) -> impl PartialEq + std::fmt::Debug + 'a {
        let p = self.parts;
        (
            (p.id, p.voucher, self.registered_at(), p.seq, p.voided, p.dose_number, self.date_given()),
            (p.administering_municipality, self.matched(), self.site_name(), self.doctor(), self.maker(), self.lot()),
        )
    }
}

impl PartialEq for LedgerDose<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for LedgerDose<'_> {}

impl std::fmt::Debug for LedgerDose<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LedgerDose").field(&self.key()).finish()
    }
}

/// A batch of ledger doses, in the order they were decoded, their texts in one buffer
/// checked as UTF-8 once. [`StoreBackend::scan_ledger_doses`] hands these over; a
/// [`LedgerBatch`] decodes them from stored records.
#[derive(Clone, Debug, Default)]
pub struct LedgerDoses {
    text: Vec<u8>,
    parts: Vec<Parts>,
}

impl LedgerDoses {
    /// The doses of `records` (each one's newest version), in order.
    pub fn from_records<'r>(records: impl IntoIterator<Item = &'r DoseRecord>) -> Self {
        let mut batch = LedgerBatch::default();
        for r in records {
            batch.push_record(r);
        }
        // Texts taken from `String`s are UTF-8: the check cannot fail.
        batch.take().unwrap_or_default()
    }

    /// How many doses the batch holds.
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// Whether the batch holds no dose.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The `i`-th dose.
    pub fn get(&self, i: usize) -> Option<LedgerDose<'_>> {
        self.parts.get(i).map(|parts| LedgerDose { parts, text: &self.text })
    }

    /// The doses in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = LedgerDose<'_>> + Clone + '_ {
        self.parts.iter().map(|parts| LedgerDose { parts, text: &self.text })
    }

    /// The doses at `range`, in order (empty where it is out of bounds).
    fn range(&self, range: std::ops::Range<usize>) -> impl Iterator<Item = LedgerDose<'_>> + Clone + '_ {
        self.parts.get(range).unwrap_or_default().iter().map(|parts| LedgerDose { parts, text: &self.text })
    }

    /// Appends a copy of `d` (from any batch).
    fn push_copy(&mut self, d: LedgerDose<'_>) {
        let texts = [d.bytes(0), d.bytes(1), d.bytes(2), d.bytes(3), d.bytes(4)];
        let (bounds, quoted) = push_texts(&mut self.text, &texts);
        self.parts.push(Parts { bounds, quoted, ..d.parts.clone() });
    }

    /// Moves every dose out (the batch is empty afterwards and keeps its buffers).
    fn clear(&mut self) {
        self.text.clear();
        self.parts.clear();
    }
}

/// Appends `texts` to `text`, each after the first behind a comma (see [`Parts::bounds`]),
/// returning where each starts (its comma) and the last ends, and whether a text after
/// the first is quoted in a row.
#[inline(always)]
fn push_texts(text: &mut Vec<u8>, texts: &[&[u8]; 5]) -> ([u32; 6], bool) {
    let mut bounds = [0usize; 6];
    bounds[0] = text.len();
    text.extend_from_slice(texts[0]);
    for i in 1..5 {
        bounds[i] = text.len();
        // A stand-in that no csv field is quoted for, so that the four texts are tested
        // in one piece (as fast as one text) before it becomes the comma.
        text.push(b'0');
        text.extend_from_slice(texts[i]);
    }
    bounds[5] = text.len();
    let quoted = needs_quotes(text.get(bounds[1]..).unwrap_or_default());
    for &comma in &bounds[1..5] {
        if let Some(b) = text.get_mut(comma) {
            *b = b',';
        }
    }
    (bounds.map(|b| u32::try_from(b).unwrap_or(u32::MAX)), quoted)
}

/// The last municipality code a field decoded, so that a column repeating one value (as
/// they do: the issuing municipality, the resident's, the site's) is checked once.
#[derive(Clone, Copy, Debug, Default)]
struct CodeMemo(Option<(u32, MunicipalityCode)>);

impl CodeMemo {
    fn code(&mut self, stored: u32) -> Result<MunicipalityCode> {
        match self.0 {
            Some((n, c)) if n == stored => Ok(c),
            _ => {
                let c = MunicipalityCode::from_number(u64::from(stored))?;
                self.0 = Some((stored, c));
                Ok(c)
            }
        }
    }
}

/// Decodes ledger doses one after another from stored [`DoseRecord`]s (their serde
/// representation, in any format) into a [`LedgerDoses`] batch: no allocation per dose,
/// no conversion of what the ledger does not print, texts checked as UTF-8 once per
/// batch, in [`take`](Self::take).
#[derive(Debug, Default)]
pub struct LedgerBatch {
    doses: LedgerDoses,
    /// The voucher's, the resident's and the site's municipality codes last decoded.
    codes: [CodeMemo; 3],
    /// The stored voucher number of the batch's last dose.
    last_voucher: Option<u64>,
}

impl LedgerBatch {
    /// Decodes one stored dose record and adds it to the batch.
    pub fn push<'de, D: serde::Deserializer<'de>>(&mut self, d: D) -> std::result::Result<(), D::Error> {
        use serde::de::Error as _;
        let r = repr::Record::deserialize(d)?;
        let v = &r.versions.0;
        let det = &v.details;
        self.push_fields(Fields {
            id: r.id,
            voucher: (r.voucher.municipality.0, r.voucher.number.0),
            registered: (r.registered_at.0, r.registered_at.1),
            matched: r.matched.as_ref().map(|p| (p.municipality.0, &*p.addressee)),
            versions: [det.site_name.as_ref(), &det.doctor, &det.maker, &det.lot],
            dose_number: det.dose_number,
            date_given: det.date_given.0,
            administering_municipality: det.administering_municipality.0,
            voided: v.voided,
            seq: r.seq,
        })
        .map_err(D::Error::custom)
    }

    /// Decodes one dose record from the compact binary form the stores keep it in (its
    /// serde representation in [postcard](https://docs.rs/postcard): fields in order,
    /// integers as varints, texts length-first) and adds it to the batch. Reads what
    /// [`push`](Self::push) reads from a postcard deserializer, by hand: the same doses,
    /// the same errors (never a panic) for bytes that are not a record, at a fraction of
    /// the cost. Bytes after the record are not read.
    pub fn push_compact(&mut self, bytes: &[u8]) -> Result<()> {
        let fields = compact::record(&mut compact::Reader::new(bytes)).map_err(|e| *e)?;
        self.push_fields(fields)
    }

    // Inlined into both readers, so that their fields are not copied on the way.
    #[inline(always)]
    fn push_fields(&mut self, f: Fields<'_>) -> Result<()> {
        let addressee = match f.matched {
            Some((_, a)) => Some(repr::addressee(a)?),
            None => None,
        };
        let [voucher_code, matched_code, site_code] = &mut self.codes;
        // A voucher's doses come one after another: its number is converted once.
        let number = match self.doses.parts.last() {
            Some(p) if self.last_voucher == Some(f.voucher.1) => p.voucher.number,
            _ => VoucherNumber::from_number(f.voucher.1)?,
        };
        let voucher = VoucherRef { municipality: voucher_code.code(f.voucher.0)?, number };
        let matched = match f.matched {
            Some((m, _)) => Some(matched_code.code(m)?),
            None => None,
        };
        let administering_municipality = site_code.code(f.administering_municipality)?;
        let [site_name, doctor, maker, lot] = f.versions;
        let texts = [addressee.as_deref().unwrap_or_default(), site_name, doctor, maker, lot];
        let text = &mut self.doses.text;
        if text.len() + 4 + texts.iter().map(|t| t.len()).sum::<usize>() > u32::MAX as usize {
            return Err(Error::Storage { message: "a ledger batch's texts outgrew 4 GiB".into(), source: None });
        }
        let (bounds, quoted) = push_texts(text, &texts);
        self.doses.parts.push(Parts {
            id: f.id,
            voucher,
            registered: f.registered,
            seq: f.seq,
            voided: f.voided,
            dose_number: f.dose_number,
            date_given: f.date_given,
            administering_municipality,
            matched,
            bounds,
            quoted,
        });
        self.last_voucher = Some(f.voucher.1);
        Ok(())
    }

    /// Adds a dose record already decoded (its newest version).
    pub fn push_record(&mut self, d: &DoseRecord) {
        self.last_voucher = None;
        let det = d.details();
        let texts = [
            d.matched.as_ref().map(|p| p.addressee.as_str()).unwrap_or_default().as_bytes(),
            det.site_name.as_bytes(),
            det.doctor.as_bytes(),
            det.maker.as_bytes(),
            det.lot.as_bytes(),
        ];
        let (bounds, quoted) = push_texts(&mut self.doses.text, &texts);
        self.doses.parts.push(Parts {
            id: d.id,
            voucher: d.voucher,
            registered: (d.registered_at.timestamp(), d.registered_at.timestamp_subsec_nanos()),
            seq: d.seq,
            voided: d.is_voided(),
            dose_number: det.dose_number,
            date_given: det.date_given.num_days_from_ce(),
            administering_municipality: det.administering_municipality,
            matched: d.matched.as_ref().map(|p| p.municipality),
            bounds,
            quoted,
        });
    }

    /// How many doses the batch holds.
    pub fn len(&self) -> usize {
        self.doses.len()
    }

    /// Whether the batch holds no dose.
    pub fn is_empty(&self) -> bool {
        self.doses.is_empty()
    }

    /// Makes room for `doses` more doses with `text` more bytes of text, so that a batch
    /// whose size is known about grows once.
    pub fn reserve(&mut self, doses: usize, text: usize) {
        self.doses.parts.reserve(doses);
        self.doses.text.reserve(text);
    }

    /// The doses decoded since the last call, in order; the batch is empty afterwards.
    /// Fails when a stored text is not UTF-8.
    pub fn take(&mut self) -> Result<LedgerDoses> {
        self.check()?;
        let capacity = (self.doses.text.capacity(), self.doses.parts.capacity());
        let taken = std::mem::take(&mut self.doses);
        self.last_voucher = None;
        self.doses.text.reserve(capacity.0);
        self.doses.parts.reserve(capacity.1);
        Ok(taken)
    }

    /// The doses decoded since the last [`clear`](Self::clear), in order, checked as
    /// [`take`](Self::take) checks them but left in the batch: a scan that formats each
    /// chunk where it decodes it reuses the batch's buffers for the next chunk.
    pub fn checked(&mut self) -> Result<&LedgerDoses> {
        self.check()?;
        Ok(&self.doses)
    }

    /// Drops the doses decoded so far, keeping the buffers.
    pub fn clear(&mut self) {
        self.doses.clear();
        self.last_voucher = None;
    }

    /// Fails when a stored text is not UTF-8.
    fn check(&self) -> Result<()> {
        let not_utf8 = || Error::Storage { message: "a stored dose's text is not UTF-8".into(), source: None };
        let text = &self.doses.text;
        simdutf8::basic::from_utf8(text).map_err(|_| not_utf8())?;
        // Each field on its own: none starts with a continuation byte. The texts after a
        // dose's addressee start after an ASCII comma, which no character ends inside, and
        // its last text ends where the next dose's addressee starts (or the text ends).
        let starts = |b: u32| text.get(b as usize).is_none_or(|c| (*c as i8) >= -0x40);
        if !self.doses.parts.iter().all(|p| starts(p.bounds[0])) {
            return Err(not_utf8());
        }
        Ok(())
    }
}

/// What the ledger reads of a stored record, as stored (codes and voucher numbers as
/// numbers, the newest version's texts borrowed), whichever decoder read it; instants and
/// day numbers already checked.
struct Fields<'a> {
    id: DoseId,
    /// Municipality code and voucher number.
    voucher: (u32, u64),
    registered: (i64, u32),
    /// Municipality code and addressee number.
    matched: Option<(u32, &'a [u8])>,
    /// Site name, doctor, maker and lot.
    versions: [&'a [u8]; 4],
    dose_number: u8,
    date_given: i32,
    administering_municipality: u32,
    voided: bool,
    seq: u64,
}

/// Whether an instant (seconds since 1970, nanoseconds) is one chrono can hold.
fn valid_instant(secs: i64, nanos: u32) -> bool {
    // Years 1 to 9999 without leap seconds are valid without asking chrono.
    const SAFE: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;
    (SAFE.contains(&secs) && nanos < 1_000_000_000) || DateTime::<Utc>::from_timestamp(secs, nanos).is_some()
}

/// Whether a day number (from 0001-01-01, counted from 1) is a date chrono can hold.
fn valid_day(days: i32) -> bool {
    // Years 1 to 9999 are valid without asking chrono.
    (1..=3_652_059).contains(&days) || NaiveDate::from_num_days_from_ce_opt(days).is_some()
}

/// A hand-written reader of [`repr`] in postcard's encoding (see
/// [`LedgerBatch::push_compact`]): the fields of [`DoseRecord`] in order, skipping what
/// the ledger does not show. postcard writes a `u8` as its byte, a `bool` and an
/// `Option`'s tag as one byte 0 or 1, other integers as LEB128 varints (signed ones
/// zigzagged first) of at most 5 (32-bit) or 10 (64-bit) bytes, strings, bytes and
/// sequences length-first. `repr`'s tests hold it to the serde path.
mod compact {
    use super::{Fields, valid_day, valid_instant};
    use crate::Error;
    use crate::ids::DoseId;

    /// What each read answers, its error boxed: an [`Error`] is many words, and a `Result`
    /// holding one is moved through memory (a call of `memcpy`) at each read, failed or
    /// not; boxed, most reads' results are two words, returned in registers.
    pub(super) type Result<T> = std::result::Result<T, Box<Error>>;

    pub(super) struct Reader<'a> {
        bytes: &'a [u8],
        at: usize,
    }

    impl<'a> Reader<'a> {
        pub(super) fn new(bytes: &'a [u8]) -> Self {
            Self { bytes, at: 0 }
        }

        #[cold]
        #[inline(never)]
        fn bad(&self, what: &str) -> Box<Error> {
            Box::new(Error::Storage { message: format!("decoding a stored dose: {what} at byte {}", self.at), source: None })
        }

        #[inline(always)]
        fn byte(&mut self) -> Result<u8> {
            match self.bytes.get(self.at) {
                Some(&b) => {
                    self.at += 1;
                    Ok(b)
                }
                None => Err(self.bad("record ends early")),
            }
        }

        /// A varint of at most `MAX` bytes whose last byte is at most `LAST`.
        #[inline(always)]
        fn varint<const MAX: usize, const LAST: u8>(&mut self) -> Result<u64> {
            // Most are one byte (lengths, small numbers): no loop for them.
            match self.bytes.get(self.at) {
                Some(&b) if b < 0x80 => {
                    self.at += 1;
                    Ok(u64::from(b))
                }
                _ => self.long_varint::<MAX, LAST>(),
            }
        }

        fn long_varint<const MAX: usize, const LAST: u8>(&mut self) -> Result<u64> {
            // Away from the record's end (all but its last few fields), the bytes the varint
            // may take are an array of `MAX`: the loop, of a length known here, unrolls,
            // with no test of the record's end per byte.
            if let Some(w) = self.bytes.get(self.at..self.at + MAX).and_then(|w| <&[u8; MAX]>::try_from(w).ok()) {
                let mut out = 0u64;
                for (i, &b) in w.iter().enumerate() {
                    out |= u64::from(b & 0x7f) << (7 * i);
                    if b < 0x80 {
                        if i == MAX - 1 && b > LAST {
                            return Err(self.bad("varint out of range"));
                        }
                        self.at += i + 1;
                        return Ok(out);
                    }
                }
                return Err(self.bad("varint too long"));
            }
            let (max, last) = (MAX, LAST);
            let rest = self.bytes.get(self.at..).unwrap_or_default();
            let mut out = 0u64;
            for (i, &b) in rest.iter().take(max).enumerate() {
                out |= u64::from(b & 0x7f) << (7 * i);
                if b < 0x80 {
                    if i == max - 1 && b > last {
                        return Err(self.bad("varint out of range"));
                    }
                    self.at += i + 1;
                    return Ok(out);
                }
            }
            Err(self.bad(if rest.len() < max { "record ends early" } else { "varint too long" }))
        }

        #[inline(always)]
        fn u32(&mut self) -> Result<u32> {
            // Five bytes hold 35 bits: the last may carry 4.
            self.varint::<5, 0x0f>().map(|v| v as u32)
        }

        #[inline(always)]
        fn u64(&mut self) -> Result<u64> {
            self.varint::<10, 0x01>()
        }

        #[inline(always)]
        fn i32(&mut self) -> Result<i32> {
            let v = self.u32()?;
            Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
        }

        #[inline(always)]
        fn i64(&mut self) -> Result<i64> {
            let v = self.u64()?;
            Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
        }

        #[inline(always)]
        fn bool(&mut self) -> Result<bool> {
            match self.byte()? {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(self.bad("bad bool")),
            }
        }

        /// An `Option`'s tag: whether a value follows.
        #[inline(always)]
        fn some(&mut self) -> Result<bool> {
            match self.byte()? {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(self.bad("bad option tag")),
            }
        }

        /// A length, within what is left of the record.
        #[inline(always)]
        fn len(&mut self) -> Result<usize> {
            let n = self.u64()?;
            usize::try_from(n).ok().filter(|n| *n <= self.bytes.len() - self.at).ok_or_else(|| self.bad("length beyond the record"))
        }

        #[inline(always)]
        fn bytes(&mut self) -> Result<&'a [u8]> {
            let n = self.len()?;
            let b = &self.bytes[self.at..self.at + n];
            self.at += n;
            Ok(b)
        }

        #[inline(always)]
        fn skip_bytes(&mut self) -> Result<()> {
            let n = self.len()?;
            self.at += n;
            Ok(())
        }

        fn instant(&mut self) -> Result<(i64, u32)> {
            let (secs, nanos) = (self.i64()?, self.u32()?);
            if !valid_instant(secs, nanos) {
                return Err(self.bad(&format!("timestamp {secs}.{nanos:09} out of range")));
            }
            Ok((secs, nanos))
        }

        fn day(&mut self) -> Result<i32> {
            let days = self.i32()?;
            if !valid_day(days) {
                return Err(self.bad(&format!("day number {days} out of range")));
            }
            Ok(days)
        }
    }

    /// The newest version's fields the ledger shows: site name, doctor, maker, lot, then
    /// dose number, date given, administering municipality and whether it is void.
    type Version<'a> = ([&'a [u8]; 4], u8, i32, u32, bool);

    fn version<'a>(r: &mut Reader<'a>) -> Result<Version<'a>> {
        r.u32()?; // version
        let dose_number = r.byte()?;
        let date_given = r.day()?;
        let administering = r.u32()?;
        r.skip_bytes()?; // site
        let (site_name, doctor) = (r.bytes()?, r.bytes()?);
        r.skip_bytes()?; // product
        let (maker, lot) = (r.bytes()?, r.bytes()?);
        if r.some()? {
            r.day()?; // lot expiry
        }
        let voided = r.bool()?;
        r.instant()?; // recorded at
        r.skip_bytes()?; // recorded by
        if r.some()? {
            r.skip_bytes()?; // reason
        }
        Ok(([site_name, doctor, maker, lot], dose_number, date_given, administering, voided))
    }

    #[inline(always)]
    pub(super) fn record<'a>(r: &mut Reader<'a>) -> Result<Fields<'a>> {
        let id = r.bytes()?;
        let id = DoseId::from_bytes(<[u8; 16]>::try_from(id).map_err(|_| r.bad("a dose id is not 16 bytes"))?);
        r.skip_bytes()?; // idempotency key
        let voucher = (r.u32()?, r.u64()?);
        r.byte()?; // ticket kind
        let registered = r.instant()?;
        r.skip_bytes()?; // registered by
        let matched = if r.some()? { Some((r.u32()?, r.bytes()?)) } else { None };
        let versions = r.len()?;
        let mut newest = None;
        for _ in 0..versions {
            newest = Some(version(r)?);
        }
        let (texts, dose_number, date_given, administering_municipality, voided) =
            newest.ok_or_else(|| r.bad("a dose has at least one version"))?;
        r.u32()?; // revision
        let seq = r.u64()?;
        Ok(Fields { id, voucher, registered, matched, versions: texts, dose_number, date_given, administering_municipality, voided, seq })
    }
}

/// [`DoseRecord`]'s serde representation, field for field in the same order (so that it
/// reads the same bytes in formats without field names), borrowing its text and skipping
/// what the ledger does not show. `LedgerDose`'s tests hold it to `DoseRecord`.
pub(crate) mod repr {
    use std::borrow::Cow;
    use std::fmt;

    use chrono::Datelike;
    use serde::Deserialize;
    use serde::de::{Deserializer, Error, SeqAccess, Visitor};

    use crate::ids::{AddresseeNumber, DoseId, MunicipalityCode, VoucherNumber};

    #[derive(Deserialize)]
    pub(super) struct Record<'a> {
        pub id: DoseId,
        #[serde(rename = "idempotency_key")]
        _idempotency_key: SkipStr,
        pub voucher: Voucher,
        #[serde(rename = "ticket_kind")]
        _ticket_kind: u8,
        pub registered_at: Instant,
        #[serde(rename = "registered_by")]
        _registered_by: SkipStr,
        #[serde(borrow)]
        pub matched: Option<Person<'a>>,
        #[serde(borrow)]
        pub versions: Newest<Version<'a>>,
        #[serde(rename = "revision")]
        _revision: u32,
        pub seq: u64,
    }

    #[derive(Deserialize)]
    pub(super) struct Voucher {
        pub municipality: Code,
        pub number: Number,
    }

    /// A voucher number as binary formats store it (its ten digits read as a number),
    /// turned into digits by the batch, once per voucher ([`super::LedgerBatch::push`]).
    pub(super) struct Number(pub u64);

    impl<'de> Deserialize<'de> for Number {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            if d.is_human_readable() {
                let v = VoucherNumber::deserialize(d)?;
                Ok(Number(v.as_str().bytes().fold(0, |n, b| n * 10 + u64::from(b - b'0'))))
            } else {
                u64::deserialize(d).map(Number)
            }
        }
    }

    #[derive(Deserialize)]
    pub(super) struct Person<'a> {
        pub municipality: Code,
        #[serde(borrow)]
        pub addressee: Cow<'a, [u8]>,
    }

    #[derive(Deserialize)]
    pub(super) struct Version<'a> {
        #[serde(rename = "version")]
        _version: u32,
        #[serde(borrow)]
        pub details: Details<'a>,
        pub voided: bool,
        #[serde(rename = "recorded_at")]
        _recorded_at: Instant,
        #[serde(rename = "recorded_by")]
        _recorded_by: SkipStr,
        #[serde(rename = "reason")]
        _reason: Option<SkipStr>,
    }

    #[derive(Deserialize)]
    pub(super) struct Details<'a> {
        pub dose_number: u8,
        pub date_given: Day,
        pub administering_municipality: Code,
        #[serde(rename = "site")]
        _site: SkipStr,
        #[serde(borrow)]
        pub site_name: Cow<'a, [u8]>,
        #[serde(borrow)]
        pub doctor: Cow<'a, [u8]>,
        #[serde(rename = "product")]
        _product: SkipStr,
        #[serde(borrow)]
        pub maker: Cow<'a, [u8]>,
        #[serde(borrow)]
        pub lot: Cow<'a, [u8]>,
        #[serde(rename = "lot_expiry", default)]
        _lot_expiry: Option<Day>,
    }

    /// A municipality code as binary formats store it (its six digits read as a number),
    /// checked by the batch ([`super::CodeMemo`]) rather than here.
    pub(super) struct Code(pub u32);

    impl<'de> Deserialize<'de> for Code {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            if d.is_human_readable() {
                let c = MunicipalityCode::deserialize(d)?;
                Ok(Code(c.as_str().bytes().fold(0, |n, b| n * 10 + u32::from(b - b'0'))))
            } else {
                u32::deserialize(d).map(Code)
            }
        }
    }

    /// An instant as [`crate::clock::serde_instant`] stores it: whole seconds since 1970
    /// and nanoseconds, checked to be one chrono can hold.
    pub(super) struct Instant(pub i64, pub u32);

    impl<'de> Deserialize<'de> for Instant {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            if d.is_human_readable() {
                let at = crate::clock::serde_instant::deserialize(d)?;
                return Ok(Instant(at.timestamp(), at.timestamp_subsec_nanos()));
            }
            let (secs, nanos) = <(i64, u32)>::deserialize(d)?;
            if !super::valid_instant(secs, nanos) {
                return Err(D::Error::custom(format!("timestamp {secs}.{nanos:09} is out of range")));
            }
            Ok(Instant(secs, nanos))
        }
    }

    /// A date as [`crate::clock::serde_date`] stores it: its day number from 0001-01-01
    /// (counted from 1), checked to be one chrono can hold.
    pub(super) struct Day(pub i32);

    impl<'de> Deserialize<'de> for Day {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            if d.is_human_readable() {
                return crate::clock::serde_date::deserialize(d).map(|day| Day(day.num_days_from_ce()));
            }
            let days = i32::deserialize(d)?;
            if !super::valid_day(days) {
                return Err(D::Error::custom(format!("day number {days} is out of range")));
            }
            Ok(Day(days))
        }
    }

    /// An addressee number as [`AddresseeNumber`] would keep it, borrowed when it is
    /// already in that form (as stored).
    pub(super) fn addressee<'a>(text: &'a [u8]) -> crate::Result<Cow<'a, [u8]>> {
        if (1..=15).contains(&text.len()) && text.iter().all(|b| b.is_ascii_digit()) {
            Ok(Cow::Borrowed(text))
        } else {
            let t = std::str::from_utf8(text).map_err(|e| crate::Error::storage("reading a stored addressee number", e))?;
            AddresseeNumber::parse(t).map(|a| Cow::Owned(a.as_str().as_bytes().to_vec()))
        }
    }

    /// A string read and dropped, borrowed or not, never copied nor checked (read as its
    /// bytes, which is how binary formats store a string anyway).
    pub(super) struct SkipStr;

    impl<'de> Deserialize<'de> for SkipStr {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = SkipStr;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a string")
                }
                fn visit_str<E: Error>(self, _: &str) -> Result<SkipStr, E> {
                    Ok(SkipStr)
                }
                fn visit_bytes<E: Error>(self, _: &[u8]) -> Result<SkipStr, E> {
                    Ok(SkipStr)
                }
            }
            d.deserialize_bytes(V)
        }
    }

    /// The newest (last) of a dose's versions; the others are read and dropped. Generic
    /// over the version's projection, so that `columns::repr` reads versions the same way.
    pub(crate) struct Newest<T>(pub T);

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Newest<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<T>(std::marker::PhantomData<T>);
            impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
                type Value = Newest<T>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a dose's versions")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Newest<T>, A::Error> {
                    let mut newest = None;
                    while let Some(v) = seq.next_element::<T>()? {
                        newest = Some(v);
                    }
                    newest.map(Newest).ok_or_else(|| A::Error::custom("a dose has at least one version"))
                }
            }
            d.deserialize_seq(V(std::marker::PhantomData))
        }
    }
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

    /// Writes whole UTF-8 text (no character cut at its end), encoding it as asked.
    fn write_text(&mut self, text: &[u8]) -> io::Result<()> {
        match self.encoding {
            OutputEncoding::Utf8 => self.out.write_all(text),
            OutputEncoding::ShiftJis if self.carry.is_empty() => {
                let text =
                    simdutf8::basic::from_utf8(text).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "export text is not UTF-8"))?;
                self.encode(text, false)
            }
            OutputEncoding::ShiftJis => self.write_all(text),
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
        self.encode(valid, false)?;
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

/// Whether a csv field holding `text` (or any part of it) is quoted: it holds a comma, a
/// quote, CR or LF.
fn needs_quotes(text: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // The four bytes are all below b'0', and most text has no byte below it (digits,
    // letters, kana and kanji are above): eight bytes at a time are tested for one (a
    // byte below n makes `(w - n·ONES) & !w & HIGH` non-zero, for n up to 0x80), and only
    // text holding one is tested byte by byte.
    let mut words = text.chunks_exact(8);
    let mut low = false;
    for w in &mut words {
        let w = u64::from_ne_bytes(w.try_into().unwrap_or_default());
        low |= w.wrapping_sub(ONES * u64::from(b'0')) & !w & HIGH != 0;
    }
    low |= words.remainder().iter().any(|&b| b < b'0');
    low && text.iter().any(|&b| matches!(b, b',' | b'"' | b'\r' | b'\n'))
}

/// Appends `field` to `out` as the csv crate's default writer does (the ledger's format
/// since the first export): quoted, with quotes doubled, when it holds a comma, a quote,
/// CR or LF, as is otherwise. The tests hold it to the csv crate.
fn push_csv_field(out: &mut Vec<u8>, field: &[u8]) {
    if !needs_quotes(field) {
        out.extend_from_slice(field);
        return;
    }
    out.push(b'"');
    for (i, part) in field.split(|b| *b == b'"').enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\"\"");
        }
        out.extend_from_slice(part);
    }
    out.push(b'"');
}

/// The two ASCII digits of each number below 100.
const PAIRS: [[u8; 2]; 100] = {
    let mut t = [[0u8; 2]; 100];
    let mut i = 0;
    while i < 100 {
        t[i] = [b'0' + (i / 10) as u8, b'0' + (i % 10) as u8];
        i += 1;
    }
    t
};

/// `YYYYMMDD` of the day `days` after 1970-01-01 (proleptic Gregorian, H. Hinnant's
/// `civil_from_days`), or `None` when its year is outside 0–9999, which chrono writes its
/// own way.
fn ymd(days: i64) -> Option<[u8; 8]> {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as usize;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as usize;
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let year = year as usize;
    let mut out = [0u8; 8];
    for (i, pair) in [year / 100, year % 100, month, day].into_iter().enumerate() {
        out[2 * i..2 * i + 2].copy_from_slice(&PAIRS[pair % 100]);
    }
    Some(out)
}

/// Days a [`DayDigits`] remembers: a ledger's doses were registered and given on a few
/// hundred days at most, and a row's doses on days weeks apart.
const REMEMBERED_DAYS: usize = 256;

/// The `YYYYMMDD` of days written before, each in the slot of its day number modulo
/// [`REMEMBERED_DAYS`]: most doses write the digits of a day written before.
#[derive(Clone, Debug)]
struct DayDigits(Box<[Option<RememberedDay>; REMEMBERED_DAYS]>);

/// A day number and its digits (`None`: chrono writes that day).
type RememberedDay = (i64, Option<[u8; 8]>);

impl Default for DayDigits {
    fn default() -> Self {
        Self(Box::new([None; REMEMBERED_DAYS]))
    }
}

impl DayDigits {
    /// Appends [`ymd`] of `days` (a day number from 1970-01-01), or appends nothing and
    /// answers `false`.
    #[inline]
    fn put(&mut self, out: &mut Vec<u8>, days: i64) -> bool {
        self.digits(days).map(|d| out.extend_from_slice(&d)).is_some()
    }

    /// [`ymd`] of `days` (a day number from 1970-01-01).
    #[inline]
    fn digits(&mut self, days: i64) -> Option<[u8; 8]> {
        let slot = &mut self.0[days.rem_euclid(REMEMBERED_DAYS as i64) as usize];
        match *slot {
            Some((day, digits)) if day == days => digits,
            _ => {
                let digits = ymd(days);
                *slot = Some((days, digits));
                digits
            }
        }
    }
}

/// The days written by a row writer's two date columns (both day numbers from 1970).
type Dates = DayDigits;

/// Appends 接種日 of a day number (from 0001-01-01, counted from 1): the text of
/// [`push_ledger_date`], without building a date first.
fn put_date(out: &mut Vec<u8>, memo: &mut DayDigits, days_from_ce: i32) {
    if !memo.put(out, i64::from(days_from_ce) - i64::from(crate::columns::EPOCH_DAYS_FROM_CE)) {
        let mut s = String::new();
        push_ledger_date(&mut s, NaiveDate::from_num_days_from_ce_opt(days_from_ce).unwrap_or_default());
        out.extend_from_slice(s.as_bytes());
    }
}

/// Appends 接種履歴登録日時 of an instant (seconds since 1970 and nanoseconds): the text of
/// [`push_ledger_timestamp`] (Japan time), without building a date and time first.
fn put_timestamp(out: &mut Vec<u8>, memo: &mut DayDigits, (secs, nanos): (i64, u32)) {
    if let Some(digits) = timestamp_digits(memo, (secs, nanos)) {
        out.extend_from_slice(&digits);
    } else {
        let mut s = String::new();
        push_ledger_timestamp(&mut s, DateTime::from_timestamp(secs, nanos).unwrap_or_default());
        out.extend_from_slice(s.as_bytes());
    }
}

/// The 14 digits [`put_timestamp`] writes for an instant, when its day takes
/// [`DayDigits`]' digits; `None` otherwise, and for leap seconds (nanoseconds past 1e9),
/// which take chrono's formatter, as they do there.
#[inline]
fn timestamp_digits(memo: &mut DayDigits, (secs, nanos): (i64, u32)) -> Option<[u8; 14]> {
    if nanos >= 1_000_000_000 {
        return None;
    }
    let local = secs.saturating_add(9 * 3600);
    let day = memo.digits(local.div_euclid(86_400))?;
    let second = local.rem_euclid(86_400) as usize;
    let mut digits = [0u8; 14];
    digits[..8].copy_from_slice(&day);
    digits[8..10].copy_from_slice(&PAIRS[second / 3600 % 100]);
    digits[10..12].copy_from_slice(&PAIRS[second / 60 % 60]);
    digits[12..].copy_from_slice(&PAIRS[second % 60]);
    Some(digits)
}

/// `,登録日時,接種日,券番号,接種自治体コード` of a dose, the first four columns of its
/// block, as one piece of known length (written with one copy rather than nine), when
/// both dates take [`DayDigits`]' digits; `None` otherwise (chrono then writes them).
#[inline]
fn block_head(dates: &mut DayDigits, p: &Parts) -> Option<[u8; 42]> {
    let registered = timestamp_digits(dates, p.registered)?;
    let given = dates.digits(i64::from(p.date_given) - i64::from(crate::columns::EPOCH_DAYS_FROM_CE))?;
    let mut head = [b','; 42];
    head[1..15].copy_from_slice(&registered);
    head[16..24].copy_from_slice(&given);
    head[25..35].copy_from_slice(p.voucher.number.digits());
    head[36..42].copy_from_slice(p.administering_municipality.digits());
    Some(head)
}

/// Appends one person's row to `buf`, answering how many doses it holds, or `None` (and
/// appends nothing) when the person has no active dose. Block k (of `chosen.len()`) holds
/// the person's active dose number k, the earliest registered (then lowest id) when there
/// are several; dose numbers beyond the blocks are left out. `chosen` is scratch space.
fn push_row<'d>(
    buf: &mut Vec<u8>,
    chosen: &mut [Option<Chosen>],
    dates: &mut Dates,
    addressee: &[u8],
    doses: impl Iterator<Item = LedgerDose<'d>> + Clone,
) -> Result<Option<u64>> {
    chosen.iter_mut().for_each(|c| *c = None);
    let mut active = false;
    for (i, d) in doses.clone().enumerate().filter(|(_, d)| !d.parts.voided) {
        active = true;
        let k = usize::from(d.parts.dose_number);
        let Some(slot) = k.checked_sub(1).and_then(|k| chosen.get_mut(k)) else { continue };
        match slot {
            Some((at, id, _)) if (*at, *id) <= (d.parts.registered, d.parts.id) => {}
            _ => *slot = Some((d.parts.registered, d.parts.id, i)),
        }
    }
    if !active {
        return Ok(None);
    }
    let mut n = 0;
    push_csv_field(buf, addressee);
    for chosen in chosen.iter() {
        let Some((_, _, i)) = chosen else {
            buf.extend_from_slice(b",,,,,,,,");
            continue;
        };
        let Some(d) = doses.clone().nth(*i) else {
            return Err(io_error("a chosen dose went missing"));
        };
        let p = d.parts;
        if let Some(head) = block_head(dates, p) {
            buf.extend_from_slice(&head);
        } else {
            buf.push(b',');
            put_timestamp(buf, dates, p.registered);
            buf.push(b',');
            put_date(buf, dates, p.date_given);
            buf.push(b',');
            buf.extend_from_slice(p.voucher.number.digits());
            buf.push(b',');
            buf.extend_from_slice(p.administering_municipality.digits());
        }
        // Site name, doctor, maker, lot: tested once, when decoded; rarely quoted, and then
        // the four are one copy of the batch's text.
        if p.quoted {
            for text in 1..5 {
                buf.push(b',');
                push_csv_field(buf, d.bytes(text));
            }
        } else {
            buf.extend_from_slice(d.columns());
        }
        n += 1;
    }
    buf.push(b'\n');
    Ok(Some(n))
}

/// Writes the ledger's CSV rows into a byte buffer, handed to the output (encoded) in
/// large pieces.
struct RowWriter<'a> {
    out: Encoded<'a>,
    buf: Vec<u8>,
    /// For each block k (at `k - 1`): the registration (instant, id) and position among
    /// the row's doses of the dose chosen for it.
    chosen: Vec<Option<Chosen>>,
    dates: Dates,
    rows: u64,
    doses: u64,
}

/// A dose chosen for a block: its registration (seconds, nanoseconds), id and position
/// among the row's doses.
type Chosen = ((i64, u32), DoseId, usize);

/// Output is handed on in pieces of about this size.
const ROW_BUFFER: usize = 256 * 1024;

impl<'a> RowWriter<'a> {
    fn new(out: &'a mut (dyn Write + Send), encoding: OutputEncoding, n: usize, with_header: bool) -> Result<Self> {
        let mut w = Self {
            out: Encoded::new(out, encoding),
            buf: Vec::with_capacity(ROW_BUFFER + 4096),
            chosen: vec![None; n],
            dates: Dates::default(),
            rows: 0,
            doses: 0,
        };
        if with_header {
            for (i, h) in header(n).iter().enumerate() {
                if i > 0 {
                    w.buf.push(b',');
                }
                push_csv_field(&mut w.buf, h.as_bytes());
            }
            w.buf.push(b'\n');
        }
        Ok(w)
    }

    /// Writes one person's row (see [`push_row`]).
    fn row<'d>(&mut self, addressee: &[u8], doses: impl Iterator<Item = LedgerDose<'d>> + Clone) -> Result<()> {
        if let Some(n) = push_row(&mut self.buf, &mut self.chosen, &mut self.dates, addressee, doses)? {
            self.rows += 1;
            self.doses += n;
        }
        if self.buf.len() >= ROW_BUFFER {
            self.out.write_text(&self.buf).map_err(io_error)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Writes rows formatted elsewhere ([`LedgerFormat`]), already encoded, after the rows
    /// written so far.
    fn write_rows(&mut self, rows: &LedgerRows) -> Result<()> {
        self.out.write_text(&self.buf).map_err(io_error)?;
        self.buf.clear();
        self.out.out.write_all(&rows.bytes).map_err(io_error)?;
        self.rows += rows.rows;
        self.doses += rows.doses;
        Ok(())
    }

    fn finish(mut self) -> Result<(u64, u64)> {
        self.out.write_text(&self.buf).map_err(io_error)?;
        self.out.finish().map_err(io_error)?;
        Ok((self.rows, self.doses))
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
    // doses were matched to at the previous municipality.
    // Only the previous voucher, when another municipality's, can hold doses from
    // elsewhere (the one held here is this municipality's).
    let moved_in = store.moved_in_vouchers(municipality).await?;
    let (from, previous): (Vec<&MovedIn>, Vec<VoucherRef>) =
        moved_in.iter().filter_map(|r| r.previous.filter(|p| p.municipality != municipality).map(|p| (r, p))).unzip();
    let found = store.doses_by_vouchers(&previous).await?;
    let mut extras: Extras = HashMap::new();
    for (r, records) in from.into_iter().zip(found) {
        if !records.is_empty() {
            extras.insert(r.voucher, (r.person.clone(), LedgerDoses::from_records(&records)));
        }
    }
    let stats_max = store.statistics(StatsQuery::Municipality(municipality)).await?.iter().map(|r| r.key.dose_number).max().unwrap_or(0);
    let extras_max = extras.values().flat_map(|(_, ds)| ds.iter().map(|d| d.dose_number())).max().unwrap_or(0);
    let n = usize::from(stats_max.max(extras_max));

    match options.since {
        None => export_full(store, municipality, options, out, n, extras).await,
        Some(after) => export_delta(store, municipality, options, out, n, after).await,
    }
}

/// Moved-in residents' doses registered under their previous vouchers, by the voucher
/// they hold here.
type Extras = HashMap<VoucherNumber, (PersonRef, LedgerDoses)>;

/// A dose seen for a shorter while (to chain doses of two batches).
fn shorter<'s, 'l: 's>(d: LedgerDose<'l>) -> LedgerDose<'s> {
    d
}

/// What formatting a full export's rows needs besides the doses: shared, read only, by
/// the threads of a store that formats chunks of the ledger in parallel
/// ([`StoreBackend::scan_ledger_rows`]).
#[derive(Debug)]
pub struct LedgerFormat {
    municipality: MunicipalityCode,
    encoding: OutputEncoding,
    /// Dose blocks per row.
    blocks: usize,
    extras: Extras,
    /// Buffers of rows already written ([`recycle`](Self::recycle)), for the next rows:
    /// a chunk's rows take about a MiB, which the allocator would otherwise map, fault in
    /// and free again for each of a million-dose export's chunks.
    spare: Mutex<Vec<Vec<u8>>>,
}

/// Row buffers a [`LedgerFormat`] keeps for reuse: about as many as a parallel scan has
/// chunks in flight.
const SPARE_ROW_BUFFERS: usize = 16;

/// Rows of a full export formatted from the doses of whole vouchers, encoded as asked,
/// with what they hold; the export writes them as they are, in voucher order.
#[derive(Clone, Debug, Default)]
pub struct LedgerRows {
    bytes: Vec<u8>,
    rows: u64,
    doses: u64,
    /// The moved-in residents' doses these rows took (by the voucher they hold here).
    used: Vec<VoucherNumber>,
}

impl LedgerRows {
    /// The rows' bytes, encoded.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// How many rows.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Whether there is nothing to hand on: no row, and no moved-in resident's doses taken.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty() && self.used.is_empty()
    }
}

impl LedgerFormat {
    /// Formats the rows of `doses`, which must hold every dose of each of its vouchers, in
    /// voucher order (as [`StoreBackend::scan_ledger_doses`] hands them over); the rows
    /// come out as the export writes them. Pure: a store may call it on any thread.
    pub fn rows(&self, doses: &LedgerDoses) -> Result<LedgerRows> {
        let mut b = self.builder();
        b.out.bytes = self.spare_buffer();
        // About the bytes a dose takes in a row (a block and its share of the addressee).
        b.out.bytes.reserve(doses.len() * 128);
        let mut start = 0;
        while start < doses.len() {
            let end = group_end(doses, start);
            b.group(doses.range(start..end))?;
            start = end;
        }
        b.take()
    }

    /// Hands the buffer of rows already written back, for the rows formatted next.
    pub fn recycle(&self, rows: LedgerRows) {
        self.give_back(rows.bytes);
    }

    fn give_back(&self, mut bytes: Vec<u8>) {
        bytes.clear();
        let mut spare = self.spare.lock().unwrap_or_else(PoisonError::into_inner);
        if spare.len() < SPARE_ROW_BUFFERS && bytes.capacity() > 0 {
            spare.push(bytes);
        }
    }

    /// An empty buffer, recycled when there is one.
    fn spare_buffer(&self) -> Vec<u8> {
        self.spare.lock().unwrap_or_else(PoisonError::into_inner).pop().unwrap_or_default()
    }

    /// A builder that formats batches in voucher order which may cut a voucher's doses
    /// in two (as a sequential scan hands them over).
    pub fn builder(&self) -> LedgerRowBuilder<'_> {
        LedgerRowBuilder {
            format: self,
            out: LedgerRows::default(),
            chosen: vec![None; self.blocks],
            dates: Dates::default(),
            carry: LedgerDoses::default(),
        }
    }

    /// The moved-in residents with no dose under this municipality's vouchers (their
    /// doses not `used` by any rows), in person order: the export's last rows.
    fn unused<'a>(&'a self, used: &std::collections::HashSet<VoucherNumber>) -> Vec<&'a (PersonRef, LedgerDoses)> {
        let mut rest: Vec<_> = self.extras.iter().filter(|(v, _)| !used.contains(*v)).map(|(_, x)| x).collect();
        rest.sort_by(|a, b| a.0.cmp(&b.0));
        rest
    }
}

/// Formats a full export's rows from batches of doses in voucher order, joining the
/// doses of a voucher that a batch boundary cut ([`LedgerFormat::builder`]).
#[derive(Debug)]
pub struct LedgerRowBuilder<'f> {
    format: &'f LedgerFormat,
    out: LedgerRows,
    chosen: Vec<Option<Chosen>>,
    dates: Dates,
    /// The doses of the voucher the last batch ended with: they may go on in the next.
    carry: LedgerDoses,
}

impl LedgerRowBuilder<'_> {
    /// Formats the next batch; hands over the rows formatted so far once they fill a
    /// buffer (the last voucher's doses wait for the next batch or [`finish`](Self::finish)).
    pub fn batch(&mut self, batch: &LedgerDoses) -> Result<Option<LedgerRows>> {
        let mut start = 0;
        if let Some(voucher) = self.carry.parts.first().map(|p| p.voucher) {
            if batch.parts.first().is_some_and(|p| p.voucher == voucher) {
                start = group_end(batch, 0);
            }
            batch.range(0..start).for_each(|d| self.carry.push_copy(d));
            if start == batch.len() {
                return Ok(None);
            }
            let carry = std::mem::take(&mut self.carry);
            self.group(carry.iter())?;
            self.carry = carry;
            self.carry.clear();
        }
        while start < batch.len() {
            let end = group_end(batch, start);
            if end == batch.len() {
                batch.range(start..end).for_each(|d| self.carry.push_copy(d));
            } else {
                self.group(batch.range(start..end))?;
            }
            start = end;
        }
        if self.out.bytes.len() >= ROW_BUFFER { self.take().map(Some) } else { Ok(None) }
    }

    /// The rows of the last voucher and any not handed over yet.
    pub fn finish(mut self) -> Result<LedgerRows> {
        let carry = std::mem::take(&mut self.carry);
        self.group(carry.iter())?;
        self.take()
    }

    /// Writes the row of the person holding the voucher of `group` (the doses registered
    /// under one voucher of the municipality), with the doses that followed them here.
    fn group<'d>(&mut self, group: impl Iterator<Item = LedgerDose<'d>> + Clone) -> Result<()> {
        let Some(first) = group.clone().next() else { return Ok(()) };
        let f = self.format;
        let extra = if f.extras.is_empty() { None } else { f.extras.get_key_value(&first.parts.voucher.number) };
        if let Some((v, _)) = extra {
            self.out.used.push(*v);
        }
        let person = group.clone().find(|d| d.parts.matched == Some(f.municipality)).map(|d| (f.municipality, d.bytes(0)));
        let buf = &mut self.out.bytes;
        let written = if let Some(p) = person {
            let own = group.filter(move |d| d.matched_to(p));
            match extra {
                Some((_, (_, more))) => push_row(buf, &mut self.chosen, &mut self.dates, p.1, own.map(shorter).chain(more.iter()))?,
                None => push_row(buf, &mut self.chosen, &mut self.dates, p.1, own)?,
            }
        } else if let Some((_, (p, more))) = extra {
            push_row(buf, &mut self.chosen, &mut self.dates, p.addressee.as_str().as_bytes(), more.iter())?
        } else {
            None
        };
        if let Some(n) = written {
            self.out.rows += 1;
            self.out.doses += n;
        }
        Ok(())
    }

    /// The rows formatted so far, encoded.
    fn take(&mut self) -> Result<LedgerRows> {
        let mut rows = std::mem::take(&mut self.out);
        if self.format.encoding == OutputEncoding::ShiftJis {
            let encoded = shift_jis(&rows.bytes, self.format.spare_buffer())?;
            let utf8 = std::mem::replace(&mut rows.bytes, encoded);
            self.format.give_back(utf8);
        }
        Ok(rows)
    }
}

/// Whole UTF-8 text in Shift_JIS; an unmappable character is an error (as [`Encoded`]
/// says it), never a silent replacement. Shift_JIS needs no state across pieces of text, so
/// pieces encoded apart join into the encoding of the whole.
fn shift_jis(text: &[u8], mut out: Vec<u8>) -> Result<Vec<u8>> {
    let text = simdutf8::basic::from_utf8(text).map_err(|_| io_error("export text is not UTF-8"))?;
    let mut encoder = encoding_rs::SHIFT_JIS.new_encoder();
    out.clear();
    out.reserve(encoder.max_buffer_length_from_utf8_without_replacement(text.len()).unwrap_or(text.len() * 2));
    let (result, _) = encoder.encode_from_utf8_to_vec_without_replacement(text, &mut out, true);
    match result {
        encoding_rs::EncoderResult::Unmappable(c) => Err(io_error(format!("character U+{:04X} cannot be written in Shift_JIS", c as u32))),
        _ => Ok(out),
    }
}

/// Where the doses of one voucher end in `batch`, from `start`.
fn group_end(batch: &LedgerDoses, start: usize) -> usize {
    let voucher = batch.parts.get(start).map(|p| p.voucher);
    start + batch.parts.get(start..).unwrap_or_default().iter().take_while(|p| Some(p.voucher) == voucher).count()
}

async fn export_full(
    store: &dyn StoreBackend,
    municipality: MunicipalityCode,
    options: &LedgerOptions,
    out: &mut (dyn Write + Send),
    n: usize,
    extras: Extras,
) -> Result<LedgerExport> {
    let format = Arc::new(LedgerFormat { municipality, encoding: options.encoding, blocks: n, extras, spare: Mutex::default() });
    let mut w = RowWriter::new(out, options.encoding, n, !options.no_header)?;
    let mut used = std::collections::HashSet::new();
    let cursor = store
        .scan_ledger_rows(municipality, Arc::clone(&format), &mut |rows: LedgerRows| {
            used.extend(rows.used.iter().copied());
            w.write_rows(&rows)?;
            format.recycle(rows);
            Ok(())
        })
        .await?;
    for (p, doses) in format.unused(&used) {
        w.row(p.addressee.as_str().as_bytes(), doses.iter())?;
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
    let mut batch = LedgerBatch::default();
    for p in persons {
        let Some(r) = store.resident(&p).await? else { continue };
        for v in vouchers_of(&r) {
            let own = v == r.voucher_ref();
            for d in store.doses_by_voucher(v).await?.iter().filter(|d| !own || d.matched.as_ref() == Some(&p)) {
                batch.push_record(d);
            }
        }
        w.row(p.addressee.as_str().as_bytes(), batch.take()?.iter())?;
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
            &{
                let mut day = String::with_capacity(8);
                push_ledger_date(&mut day, det.date_given);
                day
            },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dose::{DoseDetails, DoseVersion};
    use crate::ids::{AccountId, AddresseeNumber, IdempotencyKey, SiteId};
    use crate::vaccine::ProductCode;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn code(s: &str) -> MunicipalityCode {
        MunicipalityCode::parse(s).unwrap()
    }

    fn record(key: &str, voucher: &str, dose_number: u8, registered_at: &str) -> DoseRecord {
        let details = DoseDetails {
            dose_number,
            date_given: NaiveDate::from_ymd_opt(2021, 6, 1).unwrap(),
            administering_municipality: code("271004"),
            site: SiteId::parse("venue-1").unwrap(),
            site_name: "千代田区民会館, \"本館\"".into(),
            doctor: "佐藤\n一郎".into(),
            product: ProductCode::new("pfizer"),
            maker: "ファイザー".into(),
            lot: "FA5765".into(),
            lot_expiry: None,
        };
        let key = IdempotencyKey::parse(key).unwrap();
        DoseRecord {
            id: DoseId::for_key(&key),
            idempotency_key: key,
            voucher: VoucherRef { municipality: code("131016"), number: VoucherNumber::parse(voucher).unwrap() },
            ticket_kind: 1,
            registered_at: at(registered_at),
            registered_by: AccountId::parse("tablet-1").unwrap(),
            matched: Some(PersonRef { municipality: code("131016"), addressee: AddresseeNumber::parse("00042").unwrap() }),
            versions: vec![DoseVersion {
                version: 1,
                details,
                voided: false,
                recorded_at: at(registered_at),
                recorded_by: "site venue-1".into(),
                reason: None,
            }],
            revision: 1,
            seq: 7,
        }
    }

    fn corrected(mut d: DoseRecord, change: impl FnOnce(&mut DoseVersion)) -> DoseRecord {
        let mut v = d.current().clone();
        v.version += 1;
        v.reason = Some("誤記".into());
        change(&mut v);
        d.versions.push(v);
        d.revision += 1;
        d
    }

    fn samples() -> Vec<DoseRecord> {
        let plain = record("a", "0000000001", 1, "2021-06-01T01:00:00.5Z");
        let unmatched = DoseRecord { matched: None, ..record("b", "0000000002", 2, "2021-06-01T01:00:00Z") };
        let fixed = corrected(plain.clone(), |v| {
            v.details.lot = "FA5766".into();
            v.details.dose_number = 3;
        });
        let voided = corrected(fixed.clone(), |v| v.voided = true);
        let expiring = corrected(plain.clone(), |v| v.details.lot_expiry = NaiveDate::from_ymd_opt(2021, 9, 30));
        vec![plain, unmatched, fixed, voided, expiring]
    }

    /// The batch `push` decodes from each of `stored` (one serialized record each).
    fn decoded(stored: &[Vec<u8>]) -> Result<LedgerDoses> {
        let mut batch = LedgerBatch::default();
        for bytes in stored {
            batch.push(&mut postcard::Deserializer::from_bytes(bytes)).map_err(|e| Error::storage("decoding", e))?;
        }
        batch.take()
    }

    #[test]
    fn ledger_dose_reads_a_dose_records_representation() {
        for d in samples() {
            let expected = LedgerDoses::from_records([&d]);
            let e = expected.get(0).unwrap();
            assert_eq!(e.matched().map(|m| m.1), d.matched.as_ref().map(|p| p.addressee.as_str()));
            assert_eq!((e.site_name(), e.doctor(), e.maker()), (&*d.details().site_name, &*d.details().doctor, "ファイザー"));
            assert_eq!((e.lot(), e.dose_number(), e.voided()), (&*d.details().lot, d.details().dose_number, d.is_voided()));
            assert_eq!((e.registered_at(), e.date_given(), e.seq(), e.id()), (d.registered_at, d.details().date_given, d.seq, d.id));
            // Human-readable (escaped strings are copied, not borrowed) and binary.
            let json = serde_json::to_string(&d).unwrap();
            let mut batch = LedgerBatch::default();
            batch.push(&mut serde_json::Deserializer::from_str(&json)).unwrap();
            assert_eq!(batch.take().unwrap().get(0), Some(e), "{json}");
            assert_eq!(decoded(&[postcard::to_stdvec(&d).unwrap()]).unwrap().get(0), Some(e));
        }
        // A stored text that is not UTF-8 (here: the site name's first byte) is an error.
        let mut bytes = postcard::to_stdvec(&samples()[0]).unwrap();
        let at = bytes.windows(3).position(|w| w == "千".as_bytes()).unwrap();
        bytes[at] = 0xff;
        assert!(postcard::from_bytes::<DoseRecord>(&bytes).is_err());
        assert!(decoded(&[bytes]).is_err());
        // So is a field cut inside a character that the next field completes: doctor
        // "\xE4" then maker "\xB8\x80ファイザー" are valid UTF-8 only together ("一ファイザー").
        let mut cut = samples()[0].clone();
        cut.versions[0].details.doctor = "D".into();
        cut.versions[0].details.maker = "MMファイザー".into();
        let mut bytes = postcard::to_stdvec(&cut).unwrap();
        let d = bytes.windows(2).position(|w| w == b"\x01D").unwrap() + 1;
        bytes[d] = 0xE4;
        let m = bytes.windows(2).position(|w| w == b"MM").unwrap();
        bytes[m..m + 2].copy_from_slice(&[0xB8, 0x80]);
        assert!(matches!(decoded(&[bytes]), Err(Error::Storage { .. })));
        let mut none = serde_json::to_value(&samples()[0]).unwrap();
        none["versions"] = serde_json::json!([]);
        let mut batch = LedgerBatch::default();
        assert!(batch.push(none).is_err(), "a record without versions");
        // Out-of-range stored values are errors, as they are for the records.
        for (field, value) in [("registered_at", serde_json::json!([i64::MAX, 0])), ("seq", serde_json::json!(-1))] {
            let mut v = serde_json::to_value(&samples()[0]).unwrap();
            v[field] = value;
            assert!(LedgerBatch::default().push(v).is_err(), "{field}");
        }
    }

    /// The batch `push_compact` decodes from each of `stored`.
    fn compact(stored: &[&[u8]]) -> Result<LedgerDoses> {
        let mut batch = LedgerBatch::default();
        for bytes in stored {
            batch.push_compact(bytes)?;
        }
        batch.take()
    }

    #[test]
    fn the_compact_reader_reads_what_serde_reads() {
        let mut records = samples();
        // Extremes of every varint the ledger reads.
        let mut big = record("big", "9999999999", 255, "9999-12-31T23:59:59.999999999Z");
        big.seq = u64::MAX;
        big.revision = u32::MAX;
        big.versions[0].version = u32::MAX;
        big.versions[0].details.date_given = NaiveDate::from_ymd_opt(1, 1, 1).unwrap();
        records.push(big);
        records.push(DoseRecord { registered_at: at("0001-01-01T00:00:00Z"), ..record("small", "0000000000", 0, "2021-06-01T00:00:00Z") });
        let all: Vec<Vec<u8>> = records.iter().map(|d| postcard::to_stdvec(d).unwrap()).collect();
        let refs: Vec<&[u8]> = all.iter().map(Vec::as_slice).collect();
        assert!(compact(&refs).unwrap().iter().eq(decoded(&all).unwrap().iter()));
        assert!(compact(&refs).unwrap().iter().eq(LedgerDoses::from_records(&records).iter()));
        // Every cut, and every byte changed to values that matter to varints, tags and
        // lengths: both readers fail, or both read the same dose.
        for bytes in &all {
            for cut in 0..bytes.len() {
                assert!(compact(&[&bytes[..cut]]).is_err(), "cut at {cut}");
            }
            for i in 0..bytes.len() {
                for v in [0, 1, 2, 0x0f, 0x10, 0x7f, 0x80, 0xff, bytes[i] ^ 1, bytes[i].wrapping_add(1), bytes[i].wrapping_sub(1)] {
                    let mut b = bytes.clone();
                    b[i] = v;
                    match (compact(&[&b]), decoded(std::slice::from_ref(&b))) {
                        (Ok(x), Ok(y)) => assert!(x.iter().eq(y.iter()), "byte {i} = {v:#x}"),
                        (Err(_), Err(_)) => {}
                        (x, y) => panic!("byte {i} = {v:#x}: compact {:?}, serde {:?}", x.map(|d| d.len()), y.map(|d| d.len())),
                    }
                }
            }
        }
    }

    #[test]
    fn a_batch_decodes_doses_in_order() {
        let stored: Vec<Vec<u8>> = samples().iter().map(|d| postcard::to_stdvec(d).unwrap()).collect();
        let mut batch = LedgerBatch::default();
        for round in 0..2 {
            for bytes in &stored {
                batch.push(&mut postcard::Deserializer::from_bytes(bytes)).unwrap();
            }
            assert_eq!(batch.len(), samples().len());
            let doses = batch.take().unwrap();
            assert!(batch.is_empty(), "round {round}");
            assert!(doses.iter().eq(LedgerDoses::from_records(&samples()).iter()));
        }
        // A bad record leaves the batch as it was.
        batch.push(&mut postcard::Deserializer::from_bytes(&stored[0])).unwrap();
        assert!(batch.push(&mut postcard::Deserializer::from_bytes(&[1, 2, 3])).is_err());
        assert!(batch.take().unwrap().iter().eq(LedgerDoses::from_records(&samples()[..1]).iter()));
    }

    proptest::proptest! {
        #[test]
        fn dates_and_times_are_written_as_chrono_writes_them(
            secs in proptest::prop_oneof![
                -62_135_596_800i64..=253_402_300_799,
                DateTime::<Utc>::MIN_UTC.timestamp()..=DateTime::<Utc>::MAX_UTC.timestamp(),
            ],
            nanos in proptest::prop_oneof![0u32..1_000_000_000, 1_000_000_000u32..2_000_000_000],
            days in proptest::prop_oneof![1i32..=3_652_059, NaiveDate::MIN.num_days_from_ce()..=NaiveDate::MAX.num_days_from_ce()],
        ) {
            // Each twice with one memo: the second write takes the remembered digits.
            let mut memo = DayDigits::default();
            if let Some(at) = DateTime::from_timestamp(secs, nanos) {
                let mut theirs = String::new();
                push_ledger_timestamp(&mut theirs, at);
                for _ in 0..2 {
                    let mut ours = Vec::new();
                    put_timestamp(&mut ours, &mut memo, (secs, nanos));
                    proptest::prop_assert_eq!(String::from_utf8(ours).unwrap(), theirs.clone());
                }
            }
            let mut theirs = String::new();
            push_ledger_date(&mut theirs, NaiveDate::from_num_days_from_ce_opt(days).unwrap());
            for _ in 0..2 {
                let mut ours = Vec::new();
                put_date(&mut ours, &mut memo, days);
                proptest::prop_assert_eq!(String::from_utf8(ours).unwrap(), theirs.clone());
            }
            if let Some(at) = DateTime::from_timestamp(secs, nanos) {
                let head = block_head_text(&mut memo, (secs, nanos), days);
                proptest::prop_assert!(head.is_none_or(|h| h == head_by_chrono(at, days)));
            }
        }
    }

    /// [`block_head`] of a dose registered at `registered`, given on day `days`, as text.
    fn block_head_text(memo: &mut DayDigits, registered: (i64, u32), days: i32) -> Option<String> {
        let parts = Parts {
            id: DoseId::from_bytes([7; 16]),
            voucher: VoucherRef { municipality: code("131016"), number: VoucherNumber::parse("0123456789").unwrap() },
            registered,
            seq: 1,
            voided: false,
            dose_number: 1,
            date_given: days,
            administering_municipality: code("011002"),
            matched: None,
            bounds: [0; 6],
            quoted: false,
        };
        block_head(memo, &parts).map(|h| String::from_utf8(h.to_vec()).unwrap())
    }

    /// The block head [`block_head_text`] asks for, written by chrono.
    fn head_by_chrono(at: DateTime<Utc>, days: i32) -> String {
        let mut date = String::new();
        push_ledger_date(&mut date, NaiveDate::from_num_days_from_ce_opt(days).unwrap());
        format!(",{},{date},0123456789,011002", ledger_timestamp(at))
    }

    #[test]
    fn dates_and_times_at_the_edges_are_written_as_chrono_writes_them() {
        let edges = [
            "0000-01-01T00:00:00Z",
            "0000-12-31T14:59:59Z",
            "0000-12-31T15:00:00Z",
            "1969-12-31T14:59:59Z",
            "1969-12-31T15:00:00Z",
            "2000-02-29T15:00:00Z",
            "2100-02-28T15:00:00Z",
            "9999-12-31T14:59:59Z",
            "9999-12-31T15:00:00Z",
            "2016-12-31T23:59:60.5Z",
        ];
        // One memo for all, each edge twice: days that change and repeat, in and out of range.
        let mut dates = Dates::default();
        for e in edges
            .iter()
            .map(|s| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc))
            .chain([DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC])
            .flat_map(|e| [e, e])
        {
            let mut ours = Vec::new();
            put_timestamp(&mut ours, &mut dates, (e.timestamp(), e.timestamp_subsec_nanos()));
            assert_eq!(String::from_utf8(ours).unwrap(), ledger_timestamp(e), "{e:?}");
            let mut ours = Vec::new();
            put_date(&mut ours, &mut dates, e.date_naive().num_days_from_ce());
            let mut theirs = String::new();
            push_ledger_date(&mut theirs, e.date_naive());
            assert_eq!(String::from_utf8(ours).unwrap(), theirs, "{e:?}");
            // The block head, where it takes the remembered digits, writes what chrono writes.
            let days = e.date_naive().num_days_from_ce();
            let head = block_head_text(&mut dates, (e.timestamp(), e.timestamp_subsec_nanos()), days);
            assert!(head.is_none_or(|h| h == head_by_chrono(e, days)), "{e:?}");
        }
        // And it takes them for a dose of these years.
        let e = DateTime::parse_from_rfc3339("2021-06-30T15:04:05Z").unwrap().with_timezone(&Utc);
        let head = block_head_text(&mut dates, (e.timestamp(), 0), e.date_naive().num_days_from_ce());
        assert_eq!(head.as_deref(), Some(",20210701000405,20210630,0123456789,011002"));
    }

    /// What the csv crate's default writer makes of `records`.
    fn csv_crate(records: &[Vec<String>]) -> String {
        let mut w = csv::WriterBuilder::new().flexible(true).from_writer(Vec::new());
        for r in records {
            w.write_record(r).unwrap();
        }
        String::from_utf8(w.into_inner().unwrap()).unwrap()
    }

    fn ours(records: &[Vec<String>]) -> String {
        let mut out = Vec::new();
        for r in records {
            for (i, f) in r.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_csv_field(&mut out, f.as_bytes());
            }
            out.push(b'\n');
        }
        String::from_utf8(out).unwrap()
    }

    proptest::proptest! {
        #[test]
        fn fields_are_written_as_the_csv_crate_writes_them(
            records in proptest::collection::vec(proptest::collection::vec("[a-z0-9 ,\"\r\n'\t;|#\\\\あ髙𠮷]{0,24}", 2..6), 0..6)
        ) {
            proptest::prop_assert_eq!(ours(&records), csv_crate(&records));
        }

        #[test]
        fn quoting_is_decided_as_byte_by_byte(
            text in proptest::collection::vec(proptest::prop_oneof![0u8..0x40, proptest::num::u8::ANY], 0..40)
        ) {
            let naive = text.iter().any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n'));
            proptest::prop_assert_eq!(needs_quotes(&text), naive);
        }
    }

    #[test]
    fn the_header_is_written_as_the_csv_crate_writes_it() {
        for n in 0..4 {
            let mut out = Vec::new();
            RowWriter::new(&mut out, OutputEncoding::Utf8, n, true).unwrap().finish().unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), csv_crate(&[header(n)]));
        }
    }

    fn export_rows(n: usize, rows: &[(&str, LedgerDoses)]) -> (String, u64, u64) {
        let mut out = Vec::new();
        let mut w = RowWriter::new(&mut out, OutputEncoding::Utf8, n, false).unwrap();
        for (addressee, doses) in rows {
            w.row(addressee.as_bytes(), doses.iter()).unwrap();
        }
        let (rows, doses) = w.finish().unwrap();
        (String::from_utf8(out).unwrap(), rows, doses)
    }

    #[test]
    fn rows_are_the_same_however_the_doses_are_batched() {
        let m = code("131016");
        let mut doses = Vec::new();
        for (i, voucher) in ["0000000001", "0000000002", "0000000003", "0000000004"].iter().enumerate() {
            for k in 0..=i {
                let mut d = record(&format!("{voucher}-{k}"), voucher, (k + 1) as u8, "2021-06-01T01:00:00Z");
                if i == 2 {
                    d.matched = None; // a voucher nobody here holds yet: no row
                } else if let Some(p) = d.matched.as_mut() {
                    p.addressee = AddresseeNumber::parse(&format!("{}", 40 + i)).unwrap();
                }
                doses.push(d);
            }
        }
        // A resident who moved in holds voucher 4 here, and one with no dose here.
        let moved = |addressee: &str, key: &str| {
            let person = PersonRef { municipality: m, addressee: AddresseeNumber::parse(addressee).unwrap() };
            (person, LedgerDoses::from_records([&record(key, "0000000009", 5, "2021-05-01T01:00:00Z")]))
        };
        let extras = || -> Extras {
            HashMap::from([
                (VoucherNumber::parse("0000000004").unwrap(), moved("43", "x")),
                (VoucherNumber::parse("0000000077").unwrap(), moved("7", "y")),
            ])
        };
        let all = LedgerDoses::from_records(&doses);
        let format = |encoding| LedgerFormat { municipality: m, encoding, blocks: 5, extras: extras(), spare: Mutex::default() };
        // The export's writing side: rows as they come, then the unused extras.
        let write = |format: &LedgerFormat, pieces: Vec<LedgerRows>| {
            let mut out = Vec::new();
            let mut w = RowWriter::new(&mut out, format.encoding, 5, true).unwrap();
            let mut used = std::collections::HashSet::new();
            for rows in &pieces {
                used.extend(rows.used.iter().copied());
                w.write_rows(rows).unwrap();
            }
            for (p, ds) in format.unused(&used) {
                w.row(p.addressee.as_str().as_bytes(), ds.iter()).unwrap();
            }
            let counts = w.finish().unwrap();
            (out, counts)
        };
        // Batches of any size, a voucher cut anywhere (a sequential scan).
        let batched = |format: &LedgerFormat, size: usize| {
            let mut b = format.builder();
            let mut pieces: Vec<LedgerRows> = doses.chunks(size).filter_map(|c| b.batch(&LedgerDoses::from_records(c)).unwrap()).collect();
            pieces.push(b.finish().unwrap());
            write(format, pieces)
        };
        // Chunks of whole vouchers formatted apart (a parallel scan).
        let chunked = |format: &LedgerFormat, vouchers: usize| {
            let mut groups: Vec<Vec<DoseRecord>> = Vec::new();
            for d in &doses {
                match groups.last_mut() {
                    Some(g) if g[0].voucher == d.voucher => g.push(d.clone()),
                    _ => groups.push(vec![d.clone()]),
                }
            }
            let pieces = groups.chunks(vouchers).map(|c| format.rows(&LedgerDoses::from_records(c.iter().flatten())).unwrap()).collect();
            write(format, pieces)
        };
        let utf8 = format(OutputEncoding::Utf8);
        let whole = batched(&utf8, all.len());
        let text = String::from_utf8(whole.0.clone()).unwrap();
        assert_eq!(whole.1, (4, 1 + 2 + 4 + 1 + 1), "{text}");
        // Rows 40, 41, 43 (with the dose from before the move, voucher 9), then 7.
        let text = &text[text.find('\n').unwrap()..];
        let starts: Vec<_> = text.match_indices("\n4").chain(text.match_indices("\n7")).map(|(i, _)| i).collect();
        assert!(text.starts_with("\n40,") && starts.len() == 4, "{text}");
        assert!(text[starts[2]..starts[3]].starts_with("\n43,") && text[starts[2]..starts[3]].contains("0000000009"), "{text}");
        for size in 1..all.len() {
            assert_eq!(batched(&utf8, size), whole, "batches of {size}");
        }
        for vouchers in 1..=4 {
            assert_eq!(chunked(&utf8, vouchers), whole, "chunks of {vouchers} vouchers");
        }
        // Shift_JIS: rows encoded apart, joined, are the whole text encoded.
        let sjis = format(OutputEncoding::ShiftJis);
        let (expected, _, _) = encoding_rs::SHIFT_JIS.encode(std::str::from_utf8(&whole.0).unwrap());
        for vouchers in 1..=4 {
            let (bytes, counts) = chunked(&sjis, vouchers);
            assert_eq!((bytes.as_slice(), counts), (&*expected, whole.1), "chunks of {vouchers} vouchers");
        }
        assert_eq!(batched(&sjis, 3).0, &*expected);
    }

    #[test]
    fn a_character_shift_jis_lacks_is_an_error() {
        assert_eq!(shift_jis("佐藤,\"a\"\n".as_bytes(), vec![b'x'; 3]).unwrap(), encoding_rs::SHIFT_JIS.encode("佐藤,\"a\"\n").0.as_ref());
        let e = shift_jis("佐藤😀".as_bytes(), vec![b'x']).unwrap_err();
        assert!(e.to_string().contains("U+1F600 cannot be written in Shift_JIS"), "{e}");
    }

    #[test]
    fn block_k_holds_the_earliest_active_dose_number_k() {
        let first = record("a", "0000000001", 1, "2021-06-01T01:00:00Z");
        let second = record("b", "0000000001", 2, "2021-06-22T01:00:00Z");
        // Same dose number 1, registered later: stays out. Same time: the lower id wins.
        let later = record("c", "0000000001", 1, "2021-06-02T01:00:00Z");
        let (tie_a, tie_b) = (record("t1", "0000000003", 1, "2021-06-01T01:00:00Z"), record("t2", "0000000003", 1, "2021-06-01T01:00:00Z"));
        let (low, high) = if tie_a.id < tie_b.id { (tie_a, tie_b) } else { (tie_b, tie_a) };
        let low_lot = corrected(low.clone(), |v| v.details.lot = "LOW".into());
        // An earlier but voided dose number 2 is left out; numbers 0 and 9 have no block.
        let voided = corrected(record("v", "0000000001", 2, "2021-06-01T00:00:00Z"), |v| v.voided = true);
        let zero = record("z", "0000000002", 0, "2021-06-01T01:00:00Z");
        let nine = record("n", "0000000002", 9, "2021-06-01T01:00:00Z");
        let l = |ds: &[&DoseRecord]| LedgerDoses::from_records(ds.iter().copied());
        let (csv, rows, doses) = export_rows(
            2,
            &[
                ("42", l(&[&later, &voided, &second, &first])),
                ("43", l(&[&zero, &nine])),
                ("44", l(&[&high, &low_lot])),
                ("45", l(&[&voided])),
                ("46", LedgerDoses::default()),
            ],
        );
        let texts = "271004,\"千代田区民会館, \"\"本館\"\"\",\"佐藤\n一郎\",ファイザー";
        assert_eq!(
            csv,
            format!(
                "42,20210601100000,20210601,0000000001,{texts},FA5765,20210622100000,20210601,0000000001,{texts},FA5765\n\
                 43,,,,,,,,,,,,,,,,\n\
                 44,20210601100000,20210601,0000000003,{texts},LOW,,,,,,,,\n"
            )
        );
        assert_eq!((rows, doses), (3, 3), "45 has only a voided dose and 46 none: no row");
    }
}
