//! Ledger export (予防接種台帳向け出力) in the wide layout VRS published: one row per
//! person with at least one dose, 1 + 8·n columns — 個別宛名番号, then for each dose
//! number k = 1..n: 登録日時 (YYYYMMDDHHMMSS), 接種日 (YYYYMMDD), 券番号, 接種自治体コード,
//! 接種会場名, 接種医師名, ワクチンメーカー, ワクチンロット番号. Block k holds dose number k
//! (the earliest registered, when a duplicate awaits review); voided doses are left out.
//! Also the unmatched list (登録待ちリスト).

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Write};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::{ledger_timestamp, push_ledger_date, push_ledger_timestamp};
use crate::dose::DoseRecord;
use crate::ids::{DoseId, MunicipalityCode, PersonRef, VoucherNumber, VoucherRef};
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

/// One dose as the ledger export reads it: the current version's ledger columns and
/// what places the dose in a row and a block. [`StoreBackend::scan_ledger_doses`] yields
/// these. It deserializes from a [`DoseRecord`]'s serde representation (in any format),
/// reading only the newest version's details; a store decoding many at once uses a
/// [`LedgerBatch`], whose doses share one allocation for their texts.
#[derive(Clone)]
pub struct LedgerDose {
    /// The dose's id.
    pub id: DoseId,
    /// The voucher read (券番号; its municipality owns the dose).
    pub voucher: VoucherRef,
    /// When first registered (接種履歴登録日時).
    pub registered_at: DateTime<Utc>,
    /// The change sequence number of the dose's last write.
    pub seq: u64,
    /// Whether the newest version voids the dose.
    pub voided: bool,
    /// Dose number (接種回数) of the newest version.
    pub dose_number: u8,
    /// Date given (接種日).
    pub date_given: NaiveDate,
    /// Where the site is (接種自治体コード).
    pub administering_municipality: MunicipalityCode,
    /// The municipality of the resident the dose is matched to, if any.
    matched: Option<MunicipalityCode>,
    /// Texts, shared with the other doses of a batch.
    text: Arc<str>,
    /// Where this dose's matched addressee number, site name, doctor, maker and lot
    /// start and end in `text`, one after another.
    bounds: [u32; 6],
}

impl LedgerDose {
    fn text(&self, i: usize) -> &str {
        self.text.get(self.bounds[i] as usize..self.bounds[i + 1] as usize).unwrap_or_default()
    }

    /// The resident the dose is matched to (突合済み): municipality and addressee number.
    pub fn matched(&self) -> Option<(MunicipalityCode, &str)> {
        self.matched.map(|m| (m, self.text(0)))
    }
    /// 接種会場名.
    pub fn site_name(&self) -> &str {
        self.text(1)
    }
    /// 接種医師名.
    pub fn doctor(&self) -> &str {
        self.text(2)
    }
    /// ワクチンメーカー.
    pub fn maker(&self) -> &str {
        self.text(3)
    }
    /// ワクチンロット番号.
    pub fn lot(&self) -> &str {
        self.text(4)
    }

    fn key(&self) -> impl PartialEq + std::fmt::Debug + '_ {
        (
            (self.id, self.voucher, self.registered_at, self.seq, self.voided, self.dose_number, self.date_given),
            (self.administering_municipality, self.matched(), self.site_name(), self.doctor(), self.maker(), self.lot()),
        )
    }
}

impl PartialEq for LedgerDose {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for LedgerDose {}

impl std::fmt::Debug for LedgerDose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LedgerDose").field(&self.key()).finish()
    }
}

impl From<&DoseRecord> for LedgerDose {
    fn from(d: &DoseRecord) -> Self {
        let det = d.details();
        let texts =
            [d.matched.as_ref().map(|p| p.addressee.as_str()).unwrap_or_default(), &det.site_name, &det.doctor, &det.maker, &det.lot];
        let mut text = String::with_capacity(texts.iter().map(|t| t.len()).sum());
        let mut bounds = [0; 6];
        for (t, end) in texts.iter().zip(bounds.iter_mut().skip(1)) {
            text.push_str(t);
            *end = u32::try_from(text.len()).unwrap_or(u32::MAX);
        }
        Self {
            id: d.id,
            voucher: d.voucher,
            registered_at: d.registered_at,
            seq: d.seq,
            voided: d.is_voided(),
            dose_number: det.dose_number,
            date_given: det.date_given,
            administering_municipality: det.administering_municipality,
            matched: d.matched.as_ref().map(|p| p.municipality),
            text: Arc::from(text),
            bounds,
        }
    }
}

impl<'de> Deserialize<'de> for LedgerDose {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let mut batch = LedgerBatch::default();
        batch.push(d)?;
        batch.take().map_err(serde::de::Error::custom)?.pop().ok_or_else(|| serde::de::Error::custom("no dose decoded"))
    }
}

/// A dose of a [`LedgerBatch`] before its texts are shared.
#[derive(Debug)]
struct Parts {
    id: DoseId,
    voucher: VoucherRef,
    registered_at: DateTime<Utc>,
    seq: u64,
    voided: bool,
    dose_number: u8,
    date_given: NaiveDate,
    administering_municipality: MunicipalityCode,
    matched: Option<MunicipalityCode>,
    bounds: [u32; 6],
}

/// Ledger doses decoded one after another from stored [`DoseRecord`]s (their serde
/// representation, in any format), their texts kept in one allocation that the batch's
/// doses share: decoding a municipality's ledger costs no allocation per dose. The texts
/// are checked as UTF-8 once per batch, in [`take`](Self::take).
#[derive(Debug, Default)]
pub struct LedgerBatch {
    text: Vec<u8>,
    parts: Vec<Parts>,
}

impl LedgerBatch {
    /// Decodes one stored dose record and adds it to the batch.
    pub fn push<'de, D: serde::Deserializer<'de>>(&mut self, d: D) -> std::result::Result<(), D::Error> {
        let r = repr::Record::deserialize(d)?;
        let v = &r.versions.0;
        let addressee = match &r.matched {
            Some(p) => Some(repr::addressee(&p.addressee).map_err(serde::de::Error::custom)?),
            None => None,
        };
        let det = &v.details;
        let texts = [addressee.as_deref().unwrap_or_default(), &det.site_name, &det.doctor, &det.maker, &det.lot];
        if self.text.len() + texts.iter().map(|t| t.len()).sum::<usize>() > u32::MAX as usize {
            return Err(serde::de::Error::custom("a ledger batch's texts outgrew 4 GiB"));
        }
        let mut bounds = [0u32; 6];
        for (i, t) in texts.iter().enumerate() {
            bounds[i] = self.text.len() as u32;
            self.text.extend_from_slice(t);
        }
        bounds[5] = self.text.len() as u32;
        self.parts.push(Parts {
            id: r.id,
            voucher: r.voucher,
            registered_at: r.registered_at,
            seq: r.seq,
            voided: v.voided,
            dose_number: det.dose_number,
            date_given: det.date_given,
            administering_municipality: det.administering_municipality,
            matched: r.matched.as_ref().map(|p| p.municipality),
            bounds,
        });
        Ok(())
    }

    /// How many doses the batch holds.
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// Whether the batch holds no dose.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The doses decoded since the last call, in order; the batch is empty afterwards (and
    /// keeps its buffers). Fails when a stored text is not UTF-8.
    pub fn take(&mut self) -> Result<Vec<LedgerDose>> {
        let text = std::str::from_utf8(&self.text).map_err(|e| Error::storage("reading a stored dose's text", e))?;
        if !self.parts.iter().all(|p| p.bounds.iter().all(|b| text.is_char_boundary(*b as usize))) {
            return Err(Error::Storage { message: "a stored dose's text is not UTF-8".into(), source: None });
        }
        let shared: Arc<str> = Arc::from(text);
        let doses = self
            .parts
            .drain(..)
            .map(|p| LedgerDose {
                id: p.id,
                voucher: p.voucher,
                registered_at: p.registered_at,
                seq: p.seq,
                voided: p.voided,
                dose_number: p.dose_number,
                date_given: p.date_given,
                administering_municipality: p.administering_municipality,
                matched: p.matched,
                text: Arc::clone(&shared),
                bounds: p.bounds,
            })
            .collect();
        self.text.clear();
        Ok(doses)
    }
}

/// [`DoseRecord`]'s serde representation, field for field in the same order (so that it
/// reads the same bytes in formats without field names), borrowing its text and skipping
/// what the ledger does not show. `LedgerDose`'s tests hold it to `DoseRecord`.
mod repr {
    use std::borrow::Cow;
    use std::fmt;

    use chrono::{DateTime, NaiveDate, Utc};
    use serde::Deserialize;
    use serde::de::{Deserializer, Error, SeqAccess, Visitor};

    use crate::ids::{AddresseeNumber, DoseId, MunicipalityCode, VoucherRef};

    #[derive(Deserialize)]
    pub(super) struct Record<'a> {
        pub id: DoseId,
        #[serde(rename = "idempotency_key")]
        _idempotency_key: SkipStr,
        pub voucher: VoucherRef,
        #[serde(rename = "ticket_kind")]
        _ticket_kind: u8,
        #[serde(with = "crate::clock::serde_instant")]
        pub registered_at: DateTime<Utc>,
        #[serde(rename = "registered_by")]
        _registered_by: SkipStr,
        #[serde(borrow)]
        pub matched: Option<Person<'a>>,
        #[serde(borrow)]
        pub versions: Newest<'a>,
        #[serde(rename = "revision")]
        _revision: u32,
        pub seq: u64,
    }

    #[derive(Deserialize)]
    pub(super) struct Person<'a> {
        pub municipality: MunicipalityCode,
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
        #[serde(rename = "recorded_at", with = "crate::clock::serde_instant")]
        _recorded_at: DateTime<Utc>,
        #[serde(rename = "recorded_by")]
        _recorded_by: SkipStr,
        #[serde(rename = "reason")]
        _reason: Option<SkipStr>,
    }

    #[derive(Deserialize)]
    pub(super) struct Details<'a> {
        pub dose_number: u8,
        #[serde(with = "crate::clock::serde_date")]
        pub date_given: NaiveDate,
        pub administering_municipality: MunicipalityCode,
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
        #[serde(rename = "lot_expiry", default, with = "crate::clock::serde_date::option")]
        _lot_expiry: Option<NaiveDate>,
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

    /// The newest (last) of a dose's versions; the others are read and dropped.
    pub(super) struct Newest<'a>(pub Version<'a>);

    impl<'de: 'a, 'a> Deserialize<'de> for Newest<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<'a>(std::marker::PhantomData<Version<'a>>);
            impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
                type Value = Newest<'a>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a dose's versions")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Newest<'a>, A::Error> {
                    let mut newest = None;
                    while let Some(v) = seq.next_element::<Version<'a>>()? {
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

    /// Writes whole text (no character cut at its end), encoding it as asked.
    fn write_text(&mut self, text: &str) -> io::Result<()> {
        match self.encoding {
            OutputEncoding::Utf8 => self.out.write_all(text.as_bytes()),
            OutputEncoding::ShiftJis if self.carry.is_empty() => self.encode(text, false),
            OutputEncoding::ShiftJis => self.write_all(text.as_bytes()),
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

/// Appends `field` to `out` as the csv crate's default writer does (the ledger's format
/// since the first export): quoted, with quotes doubled, when it holds a comma, a quote,
/// CR or LF, as is otherwise. The tests hold it to the csv crate.
fn push_csv_field(out: &mut String, field: &str) {
    if !field.bytes().any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n')) {
        out.push_str(field);
        return;
    }
    out.push('"');
    for (i, part) in field.split('"').enumerate() {
        if i > 0 {
            out.push_str("\"\"");
        }
        out.push_str(part);
    }
    out.push('"');
}

/// Writes the ledger's CSV rows into a text buffer, handed to the output (encoded) in
/// large pieces.
struct RowWriter<'a> {
    out: Encoded<'a>,
    buf: String,
    /// For each block k (at `k - 1`): the registration (time, id) and position among the
    /// row's doses of the dose chosen for it.
    chosen: Vec<Option<(DateTime<Utc>, DoseId, usize)>>,
    rows: u64,
    doses: u64,
}

/// Output is handed on in pieces of about this size.
const ROW_BUFFER: usize = 256 * 1024;

impl<'a> RowWriter<'a> {
    fn new(out: &'a mut (dyn Write + Send), encoding: OutputEncoding, n: usize, with_header: bool) -> Result<Self> {
        let mut w = Self {
            out: Encoded::new(out, encoding),
            buf: String::with_capacity(ROW_BUFFER + 4096),
            chosen: vec![None; n],
            rows: 0,
            doses: 0,
        };
        if with_header {
            for (i, h) in header(n).iter().enumerate() {
                if i > 0 {
                    w.buf.push(',');
                }
                push_csv_field(&mut w.buf, h);
            }
            w.buf.push('\n');
        }
        Ok(w)
    }

    /// Writes one person's row. Block k holds the person's active dose number k, the
    /// earliest registered (then lowest id) when there are several; dose numbers beyond
    /// the blocks are left out. A person with no active dose has no row.
    fn row<'d>(&mut self, addressee: &str, doses: impl Iterator<Item = &'d LedgerDose> + Clone) -> Result<()> {
        self.chosen.iter_mut().for_each(|c| *c = None);
        let mut active = false;
        for (i, d) in doses.clone().enumerate().filter(|(_, d)| !d.voided) {
            active = true;
            let k = usize::from(d.dose_number);
            let Some(slot) = k.checked_sub(1).and_then(|k| self.chosen.get_mut(k)) else { continue };
            match slot {
                Some((at, id, _)) if (*at, *id) <= (d.registered_at, d.id) => {}
                _ => *slot = Some((d.registered_at, d.id, i)),
            }
        }
        if !active {
            return Ok(());
        }
        let buf = &mut self.buf;
        push_csv_field(buf, addressee);
        for chosen in &self.chosen {
            let Some((_, _, i)) = chosen else {
                buf.push_str(",,,,,,,,");
                continue;
            };
            let Some(d) = doses.clone().nth(*i) else {
                return Err(io_error("a chosen dose went missing"));
            };
            buf.push(',');
            push_ledger_timestamp(buf, d.registered_at);
            buf.push(',');
            push_ledger_date(buf, d.date_given);
            buf.push(',');
            buf.push_str(d.voucher.number.as_str());
            buf.push(',');
            buf.push_str(d.administering_municipality.as_str());
            for text in [d.site_name(), d.doctor(), d.maker(), d.lot()] {
                buf.push(',');
                push_csv_field(buf, text);
            }
            self.doses += 1;
        }
        buf.push('\n');
        self.rows += 1;
        if self.buf.len() >= ROW_BUFFER {
            self.out.write_text(&self.buf).map_err(io_error)?;
            self.buf.clear();
        }
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
    let moved_in = store.moved_in_residents(municipality).await?;
    let elsewhere: Vec<Vec<VoucherRef>> =
        moved_in.iter().map(|r| vouchers_of(r).into_iter().filter(|v| v.municipality != municipality).collect()).collect();
    let mut found = store.doses_by_vouchers(&elsewhere.concat()).await?.into_iter();
    let mut extras: Extras = HashMap::new();
    for (r, vouchers) in moved_in.iter().zip(&elsewhere) {
        let doses: Vec<LedgerDose> = found.by_ref().take(vouchers.len()).flatten().map(|d| LedgerDose::from(&d)).collect();
        if !doses.is_empty() {
            extras.insert(r.voucher, (r.person.clone(), doses));
        }
    }
    let stats_max = store.statistics(StatsQuery::Municipality(municipality)).await?.iter().map(|r| r.key.dose_number).max().unwrap_or(0);
    let extras_max = extras.values().flat_map(|(_, ds)| ds.iter().map(|d| d.dose_number)).max().unwrap_or(0);
    let n = usize::from(stats_max.max(extras_max));

    match options.since {
        None => export_full(store, municipality, options, out, n, extras).await,
        Some(after) => export_delta(store, municipality, options, out, n, after).await,
    }
}

/// Moved-in residents' doses registered under their previous vouchers, by the voucher
/// they hold here.
type Extras = HashMap<VoucherNumber, (PersonRef, Vec<LedgerDose>)>;

/// Writes the row of the person holding the voucher of `group` (the doses registered
/// under one voucher of the municipality), with the doses that followed them here.
fn flush_group(group: &mut Vec<LedgerDose>, w: &mut RowWriter<'_>, extras: &mut Extras, municipality: MunicipalityCode) -> Result<()> {
    let Some(first) = group.first() else { return Ok(()) };
    let extra = if extras.is_empty() { None } else { extras.remove(&first.voucher.number) };
    let person = group.iter().find_map(|d| d.matched().filter(|(m, _)| *m == municipality));
    if let Some(p) = person {
        let own = group.iter().filter(|d| d.matched() == Some(p));
        match &extra {
            Some((_, more)) => w.row(p.1, own.chain(more.iter()))?,
            None => w.row(p.1, own)?,
        }
    } else if let Some((p, more)) = &extra {
        w.row(p.addressee.as_str(), more.iter())?;
    }
    group.clear();
    Ok(())
}

async fn export_full(
    store: &dyn StoreBackend,
    municipality: MunicipalityCode,
    options: &LedgerOptions,
    out: &mut (dyn Write + Send),
    n: usize,
    mut extras: Extras,
) -> Result<LedgerExport> {
    let mut w = RowWriter::new(out, options.encoding, n, !options.no_header)?;
    let mut group: Vec<LedgerDose> = Vec::new();
    let cursor = store
        .scan_ledger_doses(municipality, &mut |d: LedgerDose| {
            if group.first().is_some_and(|g| g.voucher != d.voucher) {
                flush_group(&mut group, &mut w, &mut extras, municipality)?;
            }
            group.push(d);
            Ok(())
        })
        .await?;
    flush_group(&mut group, &mut w, &mut extras, municipality)?;
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
            doses.extend(store.doses_by_voucher(v).await?.iter().filter(|d| !own || d.matched.as_ref() == Some(&p)).map(LedgerDose::from));
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

    #[test]
    fn ledger_dose_reads_a_dose_records_representation() {
        for d in samples() {
            let expected = LedgerDose::from(&d);
            assert_eq!(expected.matched().map(|m| m.1), d.matched.as_ref().map(|p| p.addressee.as_str()));
            assert_eq!(
                (expected.site_name(), expected.doctor(), expected.maker()),
                (&*d.details().site_name, &*d.details().doctor, "ファイザー")
            );
            assert_eq!(
                (expected.lot(), expected.dose_number, expected.voided),
                (&*d.details().lot, d.details().dose_number, d.is_voided())
            );
            // Human-readable (escaped strings are copied, not borrowed) and binary.
            let json = serde_json::to_string(&d).unwrap();
            assert_eq!(serde_json::from_str::<LedgerDose>(&json).unwrap(), expected, "{json}");
            let bytes = postcard::to_stdvec(&d).unwrap();
            assert_eq!(postcard::from_bytes::<LedgerDose>(&bytes).unwrap(), expected);
        }
        // A stored text that is not UTF-8 (here: the site name's first byte) is an error.
        let mut bytes = postcard::to_stdvec(&samples()[0]).unwrap();
        let at = bytes.windows(3).position(|w| w == "千".as_bytes()).unwrap();
        bytes[at] = 0xff;
        assert!(postcard::from_bytes::<DoseRecord>(&bytes).is_err());
        assert!(postcard::from_bytes::<LedgerDose>(&bytes).is_err());
        let mut none = serde_json::to_value(&samples()[0]).unwrap();
        none["versions"] = serde_json::json!([]);
        assert!(serde_json::from_value::<LedgerDose>(none).is_err(), "a record without versions");
    }

    #[test]
    fn a_batch_decodes_doses_in_order_sharing_their_texts() {
        let mut batch = LedgerBatch::default();
        for round in 0..2 {
            for d in samples() {
                batch.push(&mut postcard::Deserializer::from_bytes(&postcard::to_stdvec(&d).unwrap())).unwrap();
            }
            assert_eq!(batch.len(), samples().len());
            let doses = batch.take().unwrap();
            assert!(batch.is_empty(), "round {round}");
            assert_eq!(doses, samples().iter().map(LedgerDose::from).collect::<Vec<_>>());
            assert!(doses.windows(2).all(|w| Arc::ptr_eq(&w[0].text, &w[1].text)));
        }
        // A bad record leaves the batch as it was.
        batch.push(&mut postcard::Deserializer::from_bytes(&postcard::to_stdvec(&samples()[0]).unwrap())).unwrap();
        assert!(batch.push(&mut postcard::Deserializer::from_bytes(&[1, 2, 3])).is_err());
        assert_eq!(batch.take().unwrap(), vec![LedgerDose::from(&samples()[0])]);
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
        let mut out = String::new();
        for r in records {
            for (i, f) in r.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_csv_field(&mut out, f);
            }
            out.push('\n');
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn fields_are_written_as_the_csv_crate_writes_them(
            records in proptest::collection::vec(proptest::collection::vec("[a-z0-9 ,\"\r\n'\t;|#\\\\あ髙𠮷]{0,8}", 2..6), 0..6)
        ) {
            proptest::prop_assert_eq!(ours(&records), csv_crate(&records));
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

    fn export_rows(n: usize, rows: &[(&str, Vec<LedgerDose>)]) -> (String, u64, u64) {
        let mut out = Vec::new();
        let mut w = RowWriter::new(&mut out, OutputEncoding::Utf8, n, false).unwrap();
        for (addressee, doses) in rows {
            w.row(addressee, doses.iter()).unwrap();
        }
        let (rows, doses) = w.finish().unwrap();
        (String::from_utf8(out).unwrap(), rows, doses)
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
        let l = |ds: &[&DoseRecord]| ds.iter().map(|d| LedgerDose::from(*d)).collect::<Vec<_>>();
        let (csv, rows, doses) = export_rows(
            2,
            &[
                ("42", l(&[&later, &voided, &second, &first])),
                ("43", l(&[&zero, &nine])),
                ("44", l(&[&high, &low_lot])),
                ("45", l(&[&voided])),
                ("46", Vec::new()),
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
