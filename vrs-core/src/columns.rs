//! Doses and residents read column by column, for frontends that hand out columnar data
//! (the Python bindings' Arrow tables): a store decodes its stored records straight into
//! these columns, a batch of rows at a time, with no per-row allocation, and a frontend
//! takes the column buffers over as they are.
//!
//! The layouts are the ones Arrow shares with other columnar engines, so that taking them
//! over costs no copy:
//! - a text column is a vector of 16-byte views over one byte buffer (the "German string"
//!   layout of Umbra, Arrow's `string_view`, polars' own): a value of at most
//!   [`INLINE_TEXT`] bytes lives inside its view; a longer one is stored once in the byte
//!   buffer and its view holds its length, first four bytes and offset;
//! - a date is a day number counted from 1970-01-01, an instant microseconds since
//!   1970-01-01T00:00:00Z;
//! - a missing value (for nullable columns) is a `false` in the column's validity.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde::de::{Deserializer, Error as _, Visitor};

use crate::dose::DoseRecord;
use crate::ids::{DoseId, PersonalNumberHash};
use crate::resident::{Resident, ResidentStatus, Sex};
use crate::{Error, Result};

mod encoding;

/// Values of at most this many bytes live inside their view.
pub const INLINE_TEXT: usize = 12;

/// How many recent long values a [`TextColumn::shared`] column compares a new value with.
const RECENT: usize = 8;

/// 1970-01-01 as a day number counted from 0001-01-01 (chrono's `num_days_from_ce`).
pub(crate) const EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// Which rows of a nullable column hold a value; absent while every row does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Validity(Option<Vec<bool>>);

impl Validity {
    /// Records that the next row holds a value (nothing to do while every row does).
    #[inline]
    fn push_valid(&mut self) {
        if let Some(v) = &mut self.0 {
            v.push(true);
        }
    }

    /// Records whether row `row` (the column's length before the push) holds a value.
    fn push(&mut self, row: usize, valid: bool) {
        match &mut self.0 {
            Some(v) => v.push(valid),
            None if valid => {}
            None => {
                let mut v = Vec::with_capacity(row.next_power_of_two());
                v.resize(row, true);
                v.push(false);
                self.0 = Some(v);
            }
        }
    }

    /// One flag per row (`false`: missing), or `None` when no row is missing.
    pub fn flags(&self) -> Option<&[bool]> {
        self.0.as_deref()
    }

    /// Whether row `row` holds a value.
    pub fn is_valid(&self, row: usize) -> bool {
        self.0.as_ref().is_none_or(|v| v.get(row).copied().unwrap_or(false))
    }

    /// The flags, taken out (see [`flags`](Self::flags)).
    pub fn into_flags(self) -> Option<Vec<bool>> {
        self.0
    }

    /// Appends `other`'s `other_len` rows after this one's `len`.
    fn append(&mut self, len: usize, other: &Validity, other_len: usize) {
        if self.0.is_none() && other.0.is_none() {
            return;
        }
        let flags = self.0.get_or_insert_with(|| vec![true; len]);
        match &other.0 {
            Some(o) => flags.extend_from_slice(o),
            None => flags.resize(len + other_len, true),
        }
    }
}

/// A column of text values, in one of Arrow's two string layouts (see the module docs):
///
/// - *contiguous* ([`with_capacity`](Self::with_capacity)), for values that are mostly
///   distinct (ids, codes, names, addresses): every value's bytes one after another with their
///   offsets (Arrow's `string`). A consumer checks the UTF-8 of the whole buffer in one pass
///   and builds the views from the offsets, instead of checking each view's bytes in a call
///   of its own (which cost a quarter of a residents read);
/// - *views* ([`shared`](Self::shared)), for values that repeat (site, doctor, maker, lot):
///   16-byte views, a long value equal to one of the last few stored sharing their bytes.
///
/// Texts decoded from a store's bytes ([`DoseColumns::push_stored`],
/// [`ResidentColumns::push_stored`]) are taken as stored, without checking their UTF-8
/// here: the store wrote them from Rust strings, and the consumer checks them once when it
/// takes them as text (Arrow's `StringArray::try_new` / `StringViewArray::try_new` do;
/// [`get`](Self::get) gives `None` for bytes that are not UTF-8), rather than twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextColumn {
    layout: Layout,
    bytes: Vec<u8>,
    validity: Validity,
}

#[derive(Clone, Debug)]
enum Layout {
    /// Value `i` is `bytes[offsets[i]..offsets[i + 1]]`; `offsets` starts with 0.
    Contiguous { offsets: Vec<i32> },
    /// One view per value; `recent` holds the views of the latest long values stored, which
    /// an equal value reuses instead of storing its bytes again.
    Views { views: Vec<u128>, recent: Vec<u128> },
}

// `recent` only speeds up pushes: two columns holding the same views are equal.
impl PartialEq for Layout {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Layout::Contiguous { offsets: a }, Layout::Contiguous { offsets: b }) => a == b,
            (Layout::Views { views: a, .. }, Layout::Views { views: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl Eq for Layout {}

impl Default for TextColumn {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

/// A [`TextColumn`]'s buffers, taken out in its layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TextParts {
    /// Value `i` is `bytes[offsets[i]..offsets[i + 1]]` (Arrow's `string`); `offsets` has
    /// one entry more than there are values and starts with 0.
    Contiguous {
        /// Offsets into `bytes`.
        offsets: Vec<i32>,
        /// Every value's bytes, one after another.
        bytes: Vec<u8>,
        /// Which rows hold a value.
        validity: Validity,
    },
    /// 16-byte views over `bytes` (Arrow's `string_view`, buffer index 0).
    Views {
        /// One view per value (a missing value's view is 0).
        views: Vec<u128>,
        /// The bytes that long values point into.
        bytes: Vec<u8>,
        /// Which rows hold a value.
        validity: Validity,
    },
}

/// The error of a batch whose text outgrew Arrow's 32-bit offsets.
fn too_long() -> Error {
    Error::Storage { message: "a text column outgrew 2 GiB in one batch".into(), source: None }
}

impl TextColumn {
    /// An empty contiguous column with room for `rows` values.
    pub fn with_capacity(rows: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Self { layout: Layout::Contiguous { offsets }, bytes: Vec::new(), validity: Validity::default() }
    }

    /// An empty column of views for values that repeat (a site, a doctor, a maker): a long
    /// value equal to one of the last few stored shares their bytes.
    pub fn shared(rows: usize) -> Self {
        Self {
            layout: Layout::Views { views: Vec::with_capacity(rows), recent: Vec::with_capacity(RECENT) },
            bytes: Vec::new(),
            validity: Validity::default(),
        }
    }

    /// An empty column of views for short values, mostly of at most [`INLINE_TEXT`] bytes
    /// (codes: a municipality, a voucher number, a sex letter): each lives inside its view,
    /// so that a consumer takes the views as they are (Arrow's `string_view`) instead of
    /// building one per value from offsets. Same layout as [`shared`](Self::shared).
    pub fn codes(rows: usize) -> Self {
        Self::shared(rows)
    }

    /// Number of values (missing ones included).
    pub fn len(&self) -> usize {
        match &self.layout {
            Layout::Contiguous { offsets } => offsets.len().saturating_sub(1),
            Layout::Views { views, .. } => views.len(),
        }
    }

    /// Whether the column has no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An empty column shaped like this one: same layout, room for as many values and
    /// bytes, so that the next batch of a scan grows no buffer.
    pub fn empty_like(&self) -> Self {
        let layout = match &self.layout {
            Layout::Contiguous { offsets } => {
                let mut next = Vec::with_capacity(offsets.capacity());
                next.push(0);
                Layout::Contiguous { offsets: next }
            }
            Layout::Views { views, .. } => {
                Layout::Views { views: Vec::with_capacity(views.capacity()), recent: Vec::with_capacity(RECENT) }
            }
        };
        Self { layout, bytes: Vec::with_capacity(self.bytes.len() + self.bytes.len() / 8), validity: Validity::default() }
    }

    /// Appends a value.
    pub fn push(&mut self, value: &str) -> Result<()> {
        self.push_bytes(value.as_bytes())
    }

    /// Appends every value of `other`, leaving the column as pushing them one by one would:
    /// contiguous columns in bulk (their bytes, then their offsets moved along), views value by
    /// value (so that repeated long values still share their bytes), or in bulk when every
    /// one is inline.
    fn append(&mut self, other: &TextColumn) -> Result<()> {
        let (len, other_len) = (self.len(), other.len());
        match (&mut self.layout, &other.layout) {
            (Layout::Contiguous { offsets }, Layout::Contiguous { offsets: more }) => {
                let base = i32::try_from(self.bytes.len()).map_err(|_| too_long())?;
                let last = more.last().copied().unwrap_or(0);
                base.checked_add(last).ok_or_else(too_long)?;
                offsets.extend(more.iter().skip(1).map(|&o| o + base));
                self.bytes.extend_from_slice(&other.bytes);
                self.validity.append(len, &other.validity, other_len);
                Ok(())
            }
            // Views that are all inline (codes) point into no bytes: taken in bulk, as pushing
            // them would leave them.
            (Layout::Views { views, .. }, Layout::Views { views: more, .. }) if other.bytes.is_empty() => {
                views.extend_from_slice(more);
                self.validity.append(len, &other.validity, other_len);
                Ok(())
            }
            _ => {
                for row in 0..other_len {
                    self.push_row_of(other, row)?;
                }
                Ok(())
            }
        }
    }

    /// Appends a text as its bytes: UTF-8 from a `&str`, or a stored text as stored (see
    /// [`DoseColumns::push_stored`]).
    fn push_bytes(&mut self, value: &[u8]) -> Result<()> {
        match &mut self.layout {
            Layout::Contiguous { offsets } => {
                self.bytes.extend_from_slice(value);
                offsets.push(i32::try_from(self.bytes.len()).map_err(|_| too_long())?);
            }
            Layout::Views { views, recent } => {
                let v = if value.len() <= INLINE_TEXT { inline_view(value) } else { view_of(&mut self.bytes, recent, value)? };
                views.push(v);
            }
        }
        self.validity.push_valid();
        Ok(())
    }

    /// Appends a code of `N` ASCII digits (a municipality or voucher number), copied as a
    /// fixed number of bytes rather than by a call for a few bytes.
    fn push_digits<const N: usize>(&mut self, digits: &[u8; N]) -> Result<()> {
        match &mut self.layout {
            Layout::Contiguous { offsets } => {
                self.bytes.extend_from_slice(digits);
                offsets.push(i32::try_from(self.bytes.len()).map_err(|_| too_long())?);
                self.validity.push_valid();
                Ok(())
            }
            Layout::Views { views, .. } if N <= INLINE_TEXT => {
                views.push(inline_view(digits));
                self.validity.push_valid();
                Ok(())
            }
            _ => self.push_bytes(digits),
        }
    }

    /// Appends a code of `N` digits, or a missing value.
    fn push_digits_option<const N: usize>(&mut self, digits: Option<&[u8; N]>) -> Result<()> {
        match digits {
            Some(d) => self.push_digits(d),
            None => {
                self.push_null();
                Ok(())
            }
        }
    }

    /// Appends a text's bytes, or a missing value.
    fn push_bytes_option(&mut self, value: Option<&[u8]>) -> Result<()> {
        match value {
            Some(v) => self.push_bytes(v),
            None => {
                self.push_null();
                Ok(())
            }
        }
    }

    /// Appends a missing value.
    pub fn push_null(&mut self) {
        let row = self.len();
        match &mut self.layout {
            // The bytes only grow, and were in range at the last push: the offset fits.
            Layout::Contiguous { offsets } => offsets.push(offsets.last().copied().unwrap_or(0)),
            Layout::Views { views, .. } => views.push(0),
        }
        self.validity.push(row, false);
    }

    /// Appends a value or a missing value.
    pub fn push_option(&mut self, value: Option<&str>) -> Result<()> {
        match value {
            Some(v) => self.push(v),
            None => {
                self.push_null();
                Ok(())
            }
        }
    }

    /// Value `row` (copied out), or `None` when it is missing, out of range or not UTF-8.
    pub fn get(&self, row: usize) -> Option<String> {
        if row >= self.len() || !self.validity.is_valid(row) {
            return None;
        }
        let bytes = match &self.layout {
            Layout::Contiguous { offsets } => {
                let (start, end) = (usize::try_from(offsets[row]).ok()?, usize::try_from(offsets[row + 1]).ok()?);
                self.bytes.get(start..end)?.to_vec()
            }
            Layout::Views { views, .. } => {
                let view = views[row];
                let len = (view as u32) as usize;
                if len <= INLINE_TEXT { view.to_le_bytes()[4..4 + len].to_vec() } else { long_bytes(&self.bytes, view)?.to_vec() }
            }
        };
        String::from_utf8(bytes).ok()
    }

    /// The bytes of the values (contiguous), or of the long values (views).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Which rows hold a value.
    pub fn validity(&self) -> &Validity {
        &self.validity
    }

    /// The buffers, taken out in the column's layout.
    pub fn into_parts(self) -> TextParts {
        match self.layout {
            Layout::Contiguous { offsets } => TextParts::Contiguous { offsets, bytes: self.bytes, validity: self.validity },
            Layout::Views { views, .. } => TextParts::Views { views, bytes: self.bytes, validity: self.validity },
        }
    }
}

/// The view of a value of at most [`INLINE_TEXT`] bytes: its length and the bytes, zero
/// padded. Built in registers from two fixed-size loads that overlap where the value is
/// shorter than both (8 + 4 bytes, 4 + 4, or three single bytes; overlapping bytes are
/// equal, so or-ing them is exact). Copying into a byte array and reading it back as a
/// `u128` (a byte loop, which the compiler turns into a `memcpy` call, or small copies)
/// stalls on store-to-load forwarding: ~75% of `push_bytes`, itself ~11% of a doses read.
#[inline]
fn inline_view(value: &[u8]) -> u128 {
    let len = value.len();
    debug_assert!(len <= INLINE_TEXT);
    // Byte i of the value is byte 4 + i of the view, i.e. bits 8 * (4 + i) on.
    let at = |byte: usize| 8 * (4 + byte as u32);
    let bytes = match (value.first_chunk::<8>(), value.first_chunk::<4>(), value.last_chunk::<4>()) {
        (Some(head), _, Some(tail)) => {
            u128::from(u64::from_le_bytes(*head)) << at(0) | u128::from(u32::from_le_bytes(*tail)) << at(len - 4)
        }
        (None, Some(head), Some(tail)) => {
            u128::from(u32::from_le_bytes(*head)) << at(0) | u128::from(u32::from_le_bytes(*tail)) << at(len - 4)
        }
        _ => value.iter().enumerate().fold(0, |v, (i, &c)| v | u128::from(c) << at(i)),
    };
    len as u128 | bytes
}

/// The view of `value`, storing its bytes in `bytes` when it is long and not among `recent`.
/// Built in registers like [`inline_view`] (a stack array read back stalls).
fn view_of(bytes: &mut Vec<u8>, recent: &mut Vec<u128>, value: &[u8]) -> Result<u128> {
    let len = u32::try_from(value.len()).map_err(|_| too_long())?;
    let Some(prefix) = value.first_chunk::<4>().filter(|_| value.len() > INLINE_TEXT) else {
        return Ok(inline_view(value));
    };
    let head = u128::from(len) | u128::from(u32::from_le_bytes(*prefix)) << 32;
    for &v in recent.iter().rev() {
        if v & u64::MAX as u128 == head && long_bytes(bytes, v) == Some(value) {
            return Ok(v);
        }
    }
    // Views hold 32-bit offsets; Arrow's readers of a batch's offsets take them as i32.
    let offset = i32::try_from(bytes.len()).map_err(|_| too_long())?;
    i32::try_from(bytes.len() + value.len()).map_err(|_| too_long())?;
    bytes.extend_from_slice(value);
    // Buffer index 0 (bits 64..96): a column has one byte buffer.
    let v = head | u128::from(offset as u32) << 96;
    if recent.len() == RECENT {
        recent.remove(0);
    }
    recent.push(v);
    Ok(v)
}

/// The bytes a long value's view points at.
fn long_bytes(bytes: &[u8], view: u128) -> Option<&[u8]> {
    let len = (view as u32) as usize;
    let offset = ((view >> 96) as u32) as usize;
    bytes.get(offset..offset + len)
}

/// A column of dates as day numbers counted from 1970-01-01 (Arrow's `date32`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DateColumn {
    days: Vec<i32>,
    validity: Validity,
}

impl DateColumn {
    /// An empty column with room for `rows` values.
    pub fn with_capacity(rows: usize) -> Self {
        Self { days: Vec::with_capacity(rows), validity: Validity::default() }
    }

    /// An empty column with room for as many values as this one.
    pub fn empty_like(&self) -> Self {
        Self::with_capacity(self.days.capacity())
    }

    /// Appends a day number, or a missing value.
    pub fn push(&mut self, days: Option<i32>) {
        match days {
            Some(_) => self.validity.push_valid(),
            None => self.validity.push(self.days.len(), false),
        }
        self.days.push(days.unwrap_or(0));
    }

    /// Number of values (missing ones included).
    pub fn len(&self) -> usize {
        self.days.len()
    }

    /// Whether the column has no value.
    pub fn is_empty(&self) -> bool {
        self.days.is_empty()
    }

    /// The day numbers (0 where missing).
    pub fn days(&self) -> &[i32] {
        &self.days
    }

    /// Which rows hold a value.
    pub fn validity(&self) -> &Validity {
        &self.validity
    }

    /// The day numbers and the validity, taken out.
    pub fn into_parts(self) -> (Vec<i32>, Validity) {
        (self.days, self.validity)
    }
}

/// A date as a day number counted from 1970-01-01.
pub fn epoch_days(date: NaiveDate) -> i32 {
    chrono::Datelike::num_days_from_ce(&date) - EPOCH_DAYS_FROM_CE
}

/// An instant as microseconds since 1970-01-01T00:00:00Z.
pub fn epoch_micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// Two-digit groups "00" to "99", for writing numbers without a division per digit.
const PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// `value` as `N` ASCII digits with leading zeros, or `None` when it has more digits.
fn number_digits<const N: usize>(mut value: u64) -> Option<[u8; N]> {
    let mut b = [b'0'; N];
    let mut i = N;
    while i >= 2 && value > 0 {
        let p = (value % 100) as usize * 2;
        b[i - 2] = PAIRS[p];
        b[i - 1] = PAIRS[p + 1];
        value /= 100;
        i -= 2;
    }
    if i == 1 && value > 0 {
        b[0] = b'0' + (value % 10) as u8;
        value /= 10;
    }
    (value == 0).then_some(b)
}

/// The ASCII digits of a code held by a domain type (a municipality or voucher number,
/// exactly `N` digits by construction).
fn code_digits<const N: usize>(code: &str) -> [u8; N] {
    <[u8; N]>::try_from(code.as_bytes()).unwrap_or([b'0'; N])
}

/// A dose id as its 32 lowercase hex digits, as `DoseId`'s `Display` writes them.
fn hex_id(id: &[u8; 16]) -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, b) in id.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    out
}

fn push_hex_id(column: &mut TextColumn, id: &[u8; 16]) -> Result<()> {
    column.push_bytes(&hex_id(id))
}

// ---- doses -------------------------------------------------------------------------------

/// A municipality's doses, one row per dose as it stands now (its newest version; voided
/// ones included, flagged). Filled by [`StoreBackend::scan_dose_columns`](crate::store::StoreBackend::scan_dose_columns).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DoseColumns {
    /// The dose id (32 hex digits).
    pub dose_id: TextColumn,
    /// The voucher's (owning) municipality.
    pub municipality: TextColumn,
    /// The voucher number (10 digits).
    pub voucher_number: TextColumn,
    /// Ticket kind (券種).
    pub ticket_kind: Vec<u8>,
    /// Dose number.
    pub dose_number: Vec<u8>,
    /// Date given.
    pub date_given: DateColumn,
    /// First registered (µs since the epoch).
    pub registered_at: Vec<i64>,
    /// The account that registered it.
    pub registered_by: TextColumn,
    /// Where the site is.
    pub administering_municipality: TextColumn,
    /// Site id.
    pub site_id: TextColumn,
    /// Site name.
    pub site_name: TextColumn,
    /// Doctor.
    pub doctor: TextColumn,
    /// Product code.
    pub product: TextColumn,
    /// Maker.
    pub maker: TextColumn,
    /// Lot number.
    pub lot: TextColumn,
    /// Lot expiry, when known.
    pub lot_expiry: DateColumn,
    /// Municipality of the matched resident (missing when unmatched).
    pub resident_municipality: TextColumn,
    /// Addressee number of the matched resident (missing when unmatched).
    pub addressee_number: TextColumn,
    /// Whether the newest version voids the dose.
    pub voided: Vec<bool>,
    /// The newest version's number.
    pub version: Vec<u32>,
    /// When the newest version was written (µs since the epoch).
    pub updated_at: Vec<i64>,
    /// Change sequence number of the dose's last write.
    pub seq: Vec<u64>,
}

impl DoseColumns {
    /// Empty columns with room for `rows` doses.
    pub fn with_capacity(rows: usize) -> Self {
        Self {
            dose_id: TextColumn::with_capacity(rows),
            municipality: TextColumn::with_capacity(rows),
            voucher_number: TextColumn::with_capacity(rows),
            ticket_kind: Vec::with_capacity(rows),
            dose_number: Vec::with_capacity(rows),
            date_given: DateColumn::with_capacity(rows),
            registered_at: Vec::with_capacity(rows),
            registered_by: TextColumn::shared(rows),
            administering_municipality: TextColumn::with_capacity(rows),
            site_id: TextColumn::shared(rows),
            site_name: TextColumn::shared(rows),
            doctor: TextColumn::shared(rows),
            product: TextColumn::shared(rows),
            maker: TextColumn::shared(rows),
            lot: TextColumn::shared(rows),
            lot_expiry: DateColumn::with_capacity(rows),
            resident_municipality: TextColumn::with_capacity(rows),
            addressee_number: TextColumn::with_capacity(rows),
            voided: Vec::with_capacity(rows),
            version: Vec::with_capacity(rows),
            updated_at: Vec::with_capacity(rows),
            seq: Vec::with_capacity(rows),
        }
    }

    /// Empty columns shaped like these (see [`TextColumn::empty_like`]): a scan's next batch.
    pub fn empty_like(&self) -> Self {
        Self {
            dose_id: self.dose_id.empty_like(),
            municipality: self.municipality.empty_like(),
            voucher_number: self.voucher_number.empty_like(),
            ticket_kind: Vec::with_capacity(self.ticket_kind.capacity()),
            dose_number: Vec::with_capacity(self.dose_number.capacity()),
            date_given: self.date_given.empty_like(),
            registered_at: Vec::with_capacity(self.registered_at.capacity()),
            registered_by: self.registered_by.empty_like(),
            administering_municipality: self.administering_municipality.empty_like(),
            site_id: self.site_id.empty_like(),
            site_name: self.site_name.empty_like(),
            doctor: self.doctor.empty_like(),
            product: self.product.empty_like(),
            maker: self.maker.empty_like(),
            lot: self.lot.empty_like(),
            lot_expiry: self.lot_expiry.empty_like(),
            resident_municipality: self.resident_municipality.empty_like(),
            addressee_number: self.addressee_number.empty_like(),
            voided: Vec::with_capacity(self.voided.capacity()),
            version: Vec::with_capacity(self.version.capacity()),
            updated_at: Vec::with_capacity(self.updated_at.capacity()),
            seq: Vec::with_capacity(self.seq.capacity()),
        }
    }

    /// Number of doses.
    pub fn len(&self) -> usize {
        self.seq.len()
    }

    /// Whether there is no dose.
    pub fn is_empty(&self) -> bool {
        self.seq.is_empty()
    }

    /// The highest change sequence number among the rows (0 when empty).
    pub fn high_seq(&self) -> u64 {
        self.seq.iter().copied().max().unwrap_or(0)
    }

    /// Appends a dose record.
    pub fn push_record(&mut self, r: &DoseRecord) -> Result<()> {
        let v = r.current();
        let d = &v.details;
        self.push_row(Row {
            id: r.id.as_bytes(),
            voucher: (code_digits(r.voucher.municipality.as_str()), code_digits(r.voucher.number.as_str())),
            ticket_kind: r.ticket_kind,
            registered_at: epoch_micros(r.registered_at),
            registered_by: r.registered_by.as_str().as_bytes(),
            matched: r.matched.as_ref().map(|p| (code_digits(p.municipality.as_str()), p.addressee.as_str().as_bytes())),
            version: v.version,
            voided: v.voided,
            updated_at: epoch_micros(v.recorded_at),
            dose_number: d.dose_number,
            date_given: epoch_days(d.date_given),
            administering_municipality: code_digits(d.administering_municipality.as_str()),
            site: d.site.as_str().as_bytes(),
            site_name: d.site_name.as_bytes(),
            doctor: d.doctor.as_bytes(),
            product: d.product.as_str().as_bytes(),
            maker: d.maker.as_bytes(),
            lot: d.lot.as_bytes(),
            lot_expiry: d.lot_expiry.map(epoch_days),
            seq: r.seq,
        })
    }

    /// Decodes one stored dose record (a [`DoseRecord`]'s serde representation, in any
    /// format) and appends it, reading its texts in place: no allocation per dose.
    pub fn push_stored<'de, D: Deserializer<'de>>(&mut self, d: D) -> std::result::Result<(), D::Error> {
        let r = repr::Record::deserialize(d)?;
        let v = &r.versions.0;
        let det = &v.details;
        self.push_row(Row {
            id: r.id.as_bytes(),
            voucher: (r.voucher.municipality.0, r.voucher.number.0),
            ticket_kind: r.ticket_kind,
            registered_at: r.registered_at.0,
            registered_by: r.registered_by.bytes(),
            matched: r.matched.as_ref().map(|p| (p.municipality.0, p.addressee.bytes())),
            version: v.version,
            voided: v.voided,
            updated_at: v.recorded_at.0,
            dose_number: det.dose_number,
            date_given: det.date_given.0,
            administering_municipality: det.administering_municipality.0,
            site: det.site.bytes(),
            site_name: det.site_name.bytes(),
            doctor: det.doctor.bytes(),
            product: det.product.bytes(),
            maker: det.maker.bytes(),
            lot: det.lot.bytes(),
            lot_expiry: det.lot_expiry.map(|d| d.0),
            seq: r.seq,
        })
        .map_err(D::Error::custom)
    }

    fn push_row(&mut self, r: Row<'_>) -> Result<()> {
        push_hex_id(&mut self.dose_id, r.id)?;
        self.municipality.push_digits(&r.voucher.0)?;
        self.voucher_number.push_digits(&r.voucher.1)?;
        self.ticket_kind.push(r.ticket_kind);
        self.dose_number.push(r.dose_number);
        self.date_given.push(Some(r.date_given));
        self.registered_at.push(r.registered_at);
        self.registered_by.push_bytes(r.registered_by)?;
        self.administering_municipality.push_digits(&r.administering_municipality)?;
        self.site_id.push_bytes(r.site)?;
        self.site_name.push_bytes(r.site_name)?;
        self.doctor.push_bytes(r.doctor)?;
        self.product.push_bytes(r.product)?;
        self.maker.push_bytes(r.maker)?;
        self.lot.push_bytes(r.lot)?;
        self.lot_expiry.push(r.lot_expiry);
        self.resident_municipality.push_digits_option(r.matched.as_ref().map(|(m, _)| m))?;
        self.addressee_number.push_bytes_option(r.matched.map(|(_, a)| a))?;
        self.voided.push(r.voided);
        self.version.push(r.version);
        self.updated_at.push(r.updated_at);
        self.seq.push(r.seq);
        Ok(())
    }
}

/// One dose's values, borrowed from a record or from stored bytes.
struct Row<'a> {
    id: &'a [u8; 16],
    /// The voucher's municipality and number, as digits.
    voucher: ([u8; 6], [u8; 10]),
    ticket_kind: u8,
    registered_at: i64,
    registered_by: &'a [u8],
    matched: Option<([u8; 6], &'a [u8])>,
    version: u32,
    voided: bool,
    updated_at: i64,
    dose_number: u8,
    date_given: i32,
    administering_municipality: [u8; 6],
    site: &'a [u8],
    site_name: &'a [u8],
    doctor: &'a [u8],
    product: &'a [u8],
    maker: &'a [u8],
    lot: &'a [u8],
    lot_expiry: Option<i32>,
    seq: u64,
}

// ---- residents ---------------------------------------------------------------------------

/// A municipality's residents, one row per resident; the personal-number hash is never
/// read out. Filled by [`StoreBackend::scan_resident_columns`](crate::store::StoreBackend::scan_resident_columns).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResidentColumns {
    /// Municipality.
    pub municipality: TextColumn,
    /// Addressee number (個別宛名番号), as uploaded.
    pub addressee_number: TextColumn,
    /// Voucher number.
    pub voucher_number: TextColumn,
    /// Name (氏名).
    pub name: TextColumn,
    /// Name in kana (氏名カナ).
    pub name_kana: TextColumn,
    /// Birth date.
    pub birth_date: DateColumn,
    /// Sex: M, F or U.
    pub sex: TextColumn,
    /// Address, when uploaded.
    pub address: TextColumn,
    /// Municipality moved in from, when known.
    pub previous_municipality: TextColumn,
    /// Voucher number of the municipality moved in from, when known.
    pub previous_voucher_number: TextColumn,
    /// Status: active, moved_out or deceased.
    pub status: TextColumn,
    /// Date the status changed, when not active.
    pub status_date: DateColumn,
}

impl ResidentColumns {
    /// Empty columns with room for `rows` residents.
    pub fn with_capacity(rows: usize) -> Self {
        Self {
            // Codes as views (see `TextColumn::codes`); names and addresses contiguous (the
            // consumer checks their UTF-8 in one pass over the bytes).
            municipality: TextColumn::codes(rows),
            addressee_number: TextColumn::codes(rows),
            voucher_number: TextColumn::codes(rows),
            name: TextColumn::with_capacity(rows),
            name_kana: TextColumn::with_capacity(rows),
            birth_date: DateColumn::with_capacity(rows),
            sex: TextColumn::codes(rows),
            address: TextColumn::with_capacity(rows),
            previous_municipality: TextColumn::codes(rows),
            previous_voucher_number: TextColumn::codes(rows),
            status: TextColumn::codes(rows),
            status_date: DateColumn::with_capacity(rows),
        }
    }

    /// Empty columns shaped like these (see [`TextColumn::empty_like`]): a scan's next batch.
    pub fn empty_like(&self) -> Self {
        Self {
            municipality: self.municipality.empty_like(),
            addressee_number: self.addressee_number.empty_like(),
            voucher_number: self.voucher_number.empty_like(),
            name: self.name.empty_like(),
            name_kana: self.name_kana.empty_like(),
            birth_date: self.birth_date.empty_like(),
            sex: self.sex.empty_like(),
            address: self.address.empty_like(),
            previous_municipality: self.previous_municipality.empty_like(),
            previous_voucher_number: self.previous_voucher_number.empty_like(),
            status: self.status.empty_like(),
            status_date: self.status_date.empty_like(),
        }
    }

    /// Number of residents.
    pub fn len(&self) -> usize {
        self.birth_date.len()
    }

    /// Whether there is no resident.
    pub fn is_empty(&self) -> bool {
        self.birth_date.is_empty()
    }

    /// Appends a resident.
    pub fn push_resident(&mut self, r: &Resident) -> Result<()> {
        self.push_row(ResidentRow {
            municipality: code_digits(r.person.municipality.as_str()),
            addressee: r.person.addressee.as_str().as_bytes(),
            voucher: code_digits(r.voucher.as_str()),
            name: r.name.as_str().as_bytes(),
            name_kana: r.name_kana.as_str().as_bytes(),
            birth_date: epoch_days(r.birth_date),
            sex: r.sex,
            address: r.address.as_ref().map(|a| a.as_str().as_bytes()),
            previous: r.previous.map(|v| (code_digits(v.municipality.as_str()), code_digits(v.number.as_str()))),
            status: r.status,
            status_date: r.status_date.map(epoch_days),
        })
    }

    /// Decodes one stored resident (a [`Resident`]'s serde representation, in any
    /// format) and appends it, reading its texts in place: no allocation per resident.
    pub fn push_stored<'de, D: Deserializer<'de>>(&mut self, d: D) -> std::result::Result<(), D::Error> {
        let r = repr::Resident::deserialize(d)?;
        self.push_row(ResidentRow {
            municipality: r.person.municipality.0,
            addressee: r.person.addressee.bytes(),
            voucher: r.voucher.0,
            name: r.name.bytes(),
            name_kana: r.name_kana.bytes(),
            birth_date: r.birth_date.0,
            sex: r.sex,
            address: r.address.as_ref().map(repr::Text::bytes),
            previous: r.previous.map(|v| (v.municipality.0, v.number.0)),
            status: r.status,
            status_date: r.status_date.map(|d| d.0),
        })
        .map_err(D::Error::custom)
    }

    fn push_row(&mut self, r: ResidentRow<'_>) -> Result<()> {
        self.municipality.push_digits(&r.municipality)?;
        self.addressee_number.push_bytes(r.addressee)?;
        self.voucher_number.push_digits(&r.voucher)?;
        self.name.push_bytes(r.name)?;
        self.name_kana.push_bytes(r.name_kana)?;
        self.birth_date.push(Some(r.birth_date));
        self.sex.push(r.sex.letter())?;
        self.address.push_bytes_option(r.address)?;
        self.previous_municipality.push_digits_option(r.previous.as_ref().map(|(m, _)| m))?;
        self.previous_voucher_number.push_digits_option(r.previous.as_ref().map(|(_, v)| v))?;
        self.status.push(r.status.as_str())?;
        self.status_date.push(r.status_date);
        Ok(())
    }
}

// ---- segments ------------------------------------------------------------------------------

/// The first bytes of a [`ResidentColumns`] segment: a tag, then the format version.
const SEGMENT_TAG: [u8; 4] = *b"vrsR";
/// The segment format written by [`ResidentColumns::encode_segment`]. Version 2: the code
/// columns (municipality, addressee and voucher numbers, sex, previous municipality and
/// voucher, status) as views. A store reads a segment of another version as stale.
const SEGMENT_VERSION: u8 = 2;
/// Layout bytes of a text column in a segment.
const CONTIGUOUS: u8 = 0;
const VIEWS: u8 = 1;

/// The error of stored columns that do not decode: a store's read-side copy is damaged.
fn corrupt(what: &str) -> Error {
    Error::Storage { message: format!("stored columns are unreadable: {what}"), source: None }
}

/// Appends `values` as little-endian `N`-byte words, in one pass the compiler vectorises.
fn put_words<T: Copy, const N: usize>(out: &mut Vec<u8>, values: &[T], le: impl Fn(T) -> [u8; N]) {
    let start = out.len();
    out.resize(start + values.len() * N, 0);
    for (dst, &v) in out[start..].chunks_exact_mut(N).zip(values) {
        dst.copy_from_slice(&le(v));
    }
}

fn put_len(out: &mut Vec<u8>, n: usize) -> Result<()> {
    out.extend_from_slice(&u32::try_from(n).map_err(|_| too_long())?.to_le_bytes());
    Ok(())
}

/// The bits past an inline value of each length (0 to [`INLINE_TEXT`] bytes) in its view;
/// none for a long value (the last entry).
const PADDING: [u128; INLINE_TEXT + 2] = {
    let mut masks = [0; INLINE_TEXT + 2];
    let mut len = 0;
    while len < INLINE_TEXT {
        masks[len] = u128::MAX << (32 + 8 * len);
        len += 1;
    }
    masks
};

/// Reads a segment front to back; every read checks the length left.
struct SegmentReader<'a>(&'a [u8]);

impl<'a> SegmentReader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.0.len() {
            return Err(corrupt(&format!("{what} runs past the end")));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn byte(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn len(&mut self, what: &str) -> Result<usize> {
        let b = self.take(4, what)?;
        let mut w = [0u8; 4];
        w.copy_from_slice(b);
        Ok(u32::from_le_bytes(w) as usize)
    }

    /// `n` little-endian `N`-byte words.
    fn words<T, const N: usize>(&mut self, n: usize, what: &str, le: impl Fn([u8; N]) -> T) -> Result<Vec<T>> {
        let bytes = self.take(n.checked_mul(N).ok_or_else(|| corrupt(what))?, what)?;
        let (words, _) = bytes.as_chunks::<N>();
        Ok(words.iter().map(|w| le(*w)).collect())
    }
}

impl Validity {
    fn encode(&self, out: &mut Vec<u8>) {
        match &self.0 {
            None => out.push(0),
            Some(flags) => {
                out.push(1);
                out.extend(flags.iter().map(|&f| u8::from(f)));
            }
        }
    }

    fn decode(r: &mut SegmentReader<'_>, rows: usize, what: &str) -> Result<Self> {
        match r.byte(what)? {
            0 => Ok(Self(None)),
            1 => {
                let flags = r.take(rows, what)?;
                if flags.iter().any(|&f| f > 1) {
                    return Err(corrupt(&format!("{what}: a validity flag is neither 0 nor 1")));
                }
                Ok(Self(Some(flags.iter().map(|&f| f == 1).collect())))
            }
            _ => Err(corrupt(&format!("{what}: unknown validity kind"))),
        }
    }

    /// The flags of rows `range`, absent when all of them hold a value (as pushing them
    /// one by one leaves them).
    fn slice(&self, range: std::ops::Range<usize>) -> Self {
        Self(self.0.as_ref().and_then(|f| f.get(range)).filter(|f| f.contains(&false)).map(<[bool]>::to_vec))
    }
}

impl TextColumn {
    /// Rows `range` as a column of their own, in the same layout, as pushing them one by
    /// one would build it.
    fn slice(&self, range: std::ops::Range<usize>) -> Result<Self> {
        let mut out = match self.layout {
            Layout::Contiguous { .. } => Self::with_capacity(range.len()),
            Layout::Views { .. } => Self::shared(range.len()),
        };
        for row in range {
            out.push_row_of(self, row)?;
        }
        Ok(out)
    }

    /// Appends value `row` of `other` (missing when it is missing there).
    fn push_row_of(&mut self, other: &TextColumn, row: usize) -> Result<()> {
        let outside = || corrupt("a value outside its column");
        if !other.validity.is_valid(row) {
            self.push_null();
            return Ok(());
        }
        match &other.layout {
            Layout::Contiguous { offsets } => {
                let (start, end) = (offsets.get(row).ok_or_else(outside)?, offsets.get(row + 1).ok_or_else(outside)?);
                let (start, end) = (usize::try_from(*start).map_err(|_| outside())?, usize::try_from(*end).map_err(|_| outside())?);
                self.push_bytes(other.bytes.get(start..end).ok_or_else(outside)?)
            }
            Layout::Views { views, .. } => {
                let view = *views.get(row).ok_or_else(outside)?;
                let len = (view as u32) as usize;
                if len <= INLINE_TEXT {
                    self.push_bytes(&view.to_le_bytes()[4..4 + len])
                } else {
                    self.push_bytes(long_bytes(&other.bytes, view).ok_or_else(outside)?)
                }
            }
        }
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        match &self.layout {
            Layout::Contiguous { offsets } => {
                out.push(CONTIGUOUS);
                put_words(out, offsets, i32::to_le_bytes);
            }
            Layout::Views { views, .. } => {
                out.push(VIEWS);
                put_words(out, views, u128::to_le_bytes);
            }
        }
        put_len(out, self.bytes.len())?;
        out.extend_from_slice(&self.bytes);
        self.validity.encode(out);
        Ok(())
    }

    /// Decodes a column of `rows` values written by [`encode`](Self::encode), checking that
    /// every value lies inside the bytes (the UTF-8 is the consumer's to check, as for
    /// [`ResidentColumns::push_stored`]).
    fn decode(r: &mut SegmentReader<'_>, rows: usize, what: &str) -> Result<Self> {
        let layout = match r.byte(what)? {
            CONTIGUOUS => Layout::Contiguous { offsets: r.words(rows + 1, what, i32::from_le_bytes)? },
            VIEWS => Layout::Views { views: r.words(rows, what, u128::from_le_bytes)?, recent: Vec::new() },
            _ => return Err(corrupt(&format!("{what}: unknown text layout"))),
        };
        let n = r.len(what)?;
        if i32::try_from(n).is_err() {
            return Err(corrupt(&format!("{what}: more bytes than 32-bit offsets reach")));
        }
        let bytes = r.take(n, what)?.to_vec();
        let validity = Validity::decode(r, rows, what)?;
        let layout = match layout {
            Layout::Contiguous { offsets } => {
                let in_order = offsets.first() == Some(&0) && offsets.windows(2).all(|w| w[0] <= w[1]);
                if !in_order || offsets.last().copied() != i32::try_from(n).ok() {
                    return Err(corrupt(&format!("{what}: offsets out of order or past the bytes")));
                }
                Layout::Contiguous { offsets }
            }
            Layout::Views { views, .. } => {
                let outside = || corrupt(&format!("{what}: a view outside the bytes or not matching them"));
                let mut long = Vec::new();
                if bytes.is_empty() {
                    // Codes (most of a residents read's views): every value inline, zero past
                    // its bytes (Arrow checks it too). One pass without a branch, a mask by
                    // length; a long view (its mask is zero) points past the empty bytes.
                    let (padded, any_long) = views.iter().fold((0, false), |(padded, any_long), &v| {
                        let len = (v as u32) as usize;
                        (padded | v & PADDING[len.min(INLINE_TEXT + 1)], any_long | (len > INLINE_TEXT))
                    });
                    if padded != 0 || any_long {
                        return Err(outside());
                    }
                } else {
                    for &v in &views {
                        let len = (v as u32) as usize;
                        let fits = if len <= INLINE_TEXT {
                            v & PADDING[len] == 0
                        } else {
                            (v >> 64) as u32 == 0 && long_bytes(&bytes, v).is_some_and(|b| b[..4] == v.to_le_bytes()[4..8]) && {
                                long.push(v);
                                true
                            }
                        };
                        if !fits {
                            return Err(outside());
                        }
                    }
                }
                // The latest long values stored, as pushing them left them: a column
                // decoded and then pushed to shares bytes as the encoded one would.
                long.sort_unstable_by_key(|v| (v >> 96) as u32);
                long.dedup();
                let recent = long.split_off(long.len().saturating_sub(RECENT));
                Layout::Views { views, recent }
            }
        };
        Ok(Self { layout, bytes, validity })
    }
}

impl DateColumn {
    /// Appends every value of `other`.
    fn append(&mut self, other: &DateColumn) {
        self.validity.append(self.days.len(), &other.validity, other.days.len());
        self.days.extend_from_slice(&other.days);
    }

    fn slice(&self, range: std::ops::Range<usize>) -> Self {
        let validity = self.validity.slice(range.clone());
        Self { days: self.days.get(range).map(<[i32]>::to_vec).unwrap_or_default(), validity }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        put_words(out, &self.days, i32::to_le_bytes);
        self.validity.encode(out);
    }

    fn decode(r: &mut SegmentReader<'_>, rows: usize, what: &str) -> Result<Self> {
        let days = r.words(rows, what, i32::from_le_bytes)?;
        Ok(Self { days, validity: Validity::decode(r, rows, what)? })
    }
}

impl ResidentColumns {
    /// Appends these columns to `out` as one segment: a store keeps a municipality's
    /// residents as segments, read back by [`decode_segment`](Self::decode_segment) with
    /// length checks and bulk copies instead of a decode per resident. The layout: a tag
    /// and version, the row count (u32), then each column in field order as it is held
    /// (a text column's layout byte, offsets or views, byte count and bytes; a date
    /// column's day numbers; then the column's validity: 0, or 1 and a byte per row),
    /// numbers little-endian.
    pub fn encode_segment(&self, out: &mut Vec<u8>) -> Result<()> {
        let rows = self.len();
        if self.texts().iter().any(|c| c.len() != rows) || self.status_date.len() != rows {
            return Err(Error::Storage { message: "resident columns of different lengths".into(), source: None });
        }
        out.extend_from_slice(&SEGMENT_TAG);
        out.push(SEGMENT_VERSION);
        put_len(out, rows)?;
        self.municipality.encode(out)?;
        self.addressee_number.encode(out)?;
        self.voucher_number.encode(out)?;
        self.name.encode(out)?;
        self.name_kana.encode(out)?;
        self.birth_date.encode(out);
        self.sex.encode(out)?;
        self.address.encode(out)?;
        self.previous_municipality.encode(out)?;
        self.previous_voucher_number.encode(out)?;
        self.status.encode(out)?;
        self.status_date.encode(out);
        Ok(())
    }

    /// The length of the segment [`encode_segment`](Self::encode_segment) would write, in
    /// bytes (without writing it): a store cuts its segments by size.
    pub fn segment_len(&self) -> usize {
        let validity = |v: &Validity| 1 + v.flags().map_or(0, <[bool]>::len);
        let text = |c: &TextColumn| {
            let words = match &c.layout {
                Layout::Contiguous { offsets } => 4 * offsets.len(),
                Layout::Views { views, .. } => 16 * views.len(),
            };
            1 + words + 4 + c.bytes.len() + validity(&c.validity)
        };
        let date = |c: &DateColumn| 4 * c.days.len() + validity(&c.validity);
        SEGMENT_TAG.len() + 1 + 4 + self.texts().iter().map(|c| text(c)).sum::<usize>() + date(&self.birth_date) + date(&self.status_date)
    }

    /// Decodes a segment written by [`encode_segment`](Self::encode_segment). Truncated or
    /// damaged bytes are an [`Error::Storage`], never a panic.
    pub fn decode_segment(bytes: &[u8]) -> Result<Self> {
        let mut r = SegmentReader(bytes);
        let columns = Self::read_segment(&mut r)?;
        if !r.0.is_empty() {
            return Err(corrupt("bytes after the last column"));
        }
        Ok(columns)
    }

    /// Decodes segments written one after another by [`encode_segment`](Self::encode_segment)
    /// (a store may keep several in one value). Truncated or damaged bytes are an
    /// [`Error::Storage`], never a panic.
    pub fn decode_segments(bytes: &[u8]) -> Result<Vec<Self>> {
        let mut r = SegmentReader(bytes);
        let mut out = Vec::new();
        while !r.0.is_empty() {
            out.push(Self::read_segment(&mut r)?);
        }
        Ok(out)
    }

    /// Reads one segment from the front of `r`.
    fn read_segment(r: &mut SegmentReader<'_>) -> Result<Self> {
        if r.take(SEGMENT_TAG.len(), "the tag")? != SEGMENT_TAG {
            return Err(corrupt("not a resident segment"));
        }
        let version = r.byte("the version")?;
        if version != SEGMENT_VERSION {
            return Err(corrupt(&format!("format version {version}; this build reads {SEGMENT_VERSION}")));
        }
        let rows = r.len("the row count")?;
        let columns = Self {
            municipality: TextColumn::decode(r, rows, "municipality")?,
            addressee_number: TextColumn::decode(r, rows, "addressee_number")?,
            voucher_number: TextColumn::decode(r, rows, "voucher_number")?,
            name: TextColumn::decode(r, rows, "name")?,
            name_kana: TextColumn::decode(r, rows, "name_kana")?,
            birth_date: DateColumn::decode(r, rows, "birth_date")?,
            sex: TextColumn::decode(r, rows, "sex")?,
            address: TextColumn::decode(r, rows, "address")?,
            previous_municipality: TextColumn::decode(r, rows, "previous_municipality")?,
            previous_voucher_number: TextColumn::decode(r, rows, "previous_voucher_number")?,
            status: TextColumn::decode(r, rows, "status")?,
            status_date: DateColumn::decode(r, rows, "status_date")?,
        };
        Ok(columns)
    }

    /// Appends every resident of `other` after these, as pushing them one by one would
    /// leave the columns (in bulk: a store merges small batches into a segment with it).
    pub fn append(&mut self, other: &ResidentColumns) -> Result<()> {
        self.municipality.append(&other.municipality)?;
        self.addressee_number.append(&other.addressee_number)?;
        self.voucher_number.append(&other.voucher_number)?;
        self.name.append(&other.name)?;
        self.name_kana.append(&other.name_kana)?;
        self.birth_date.append(&other.birth_date);
        self.sex.append(&other.sex)?;
        self.address.append(&other.address)?;
        self.previous_municipality.append(&other.previous_municipality)?;
        self.previous_voucher_number.append(&other.previous_voucher_number)?;
        self.status.append(&other.status)?;
        self.status_date.append(&other.status_date);
        Ok(())
    }

    /// These columns cut into consecutive batches of at most `rows` residents (one batch,
    /// moved, when they hold no more), each as pushing its residents would build it.
    pub fn split(self, rows: usize) -> Result<Vec<Self>> {
        let rows = rows.max(1);
        let n = self.len();
        if n <= rows {
            return Ok(vec![self]);
        }
        (0..n).step_by(rows).map(|start| self.rows(start..(start + rows).min(n))).collect()
    }

    /// A copy of rows `range` (clamped to the rows there are), built as pushing just those
    /// residents would build it.
    pub fn rows(&self, range: std::ops::Range<usize>) -> Result<Self> {
        let range = range.start.min(self.len())..range.end.min(self.len());
        Ok(Self {
            municipality: self.municipality.slice(range.clone())?,
            addressee_number: self.addressee_number.slice(range.clone())?,
            voucher_number: self.voucher_number.slice(range.clone())?,
            name: self.name.slice(range.clone())?,
            name_kana: self.name_kana.slice(range.clone())?,
            birth_date: self.birth_date.slice(range.clone()),
            sex: self.sex.slice(range.clone())?,
            address: self.address.slice(range.clone())?,
            previous_municipality: self.previous_municipality.slice(range.clone())?,
            previous_voucher_number: self.previous_voucher_number.slice(range.clone())?,
            status: self.status.slice(range.clone())?,
            status_date: self.status_date.slice(range),
        })
    }

    fn texts(&self) -> [&TextColumn; 10] {
        [
            &self.municipality,
            &self.addressee_number,
            &self.voucher_number,
            &self.name,
            &self.name_kana,
            &self.sex,
            &self.address,
            &self.previous_municipality,
            &self.previous_voucher_number,
            &self.status,
        ]
    }
}

/// One resident's values, borrowed from a record or from stored bytes.
struct ResidentRow<'a> {
    municipality: [u8; 6],
    addressee: &'a [u8],
    voucher: [u8; 10],
    name: &'a [u8],
    name_kana: &'a [u8],
    birth_date: i32,
    sex: Sex,
    address: Option<&'a [u8]>,
    /// The previous municipality and voucher number, as digits.
    previous: Option<([u8; 6], [u8; 10])>,
    status: ResidentStatus,
    status_date: Option<i32>,
}

/// [`DoseRecord`]'s and [`Resident`]'s serde representations, field for field in the same
/// order (so that they read the same bytes in formats without field names), borrowing
/// their texts, dates as day numbers and instants as microseconds. The tests hold them to
/// the domain types: a field added to those must be added here too.
mod repr {
    use super::*;
    use crate::ledger::repr::Newest;

    #[derive(Deserialize)]
    pub(super) struct Record<'a> {
        pub id: DoseId,
        #[serde(rename = "idempotency_key", borrow)]
        _idempotency_key: Text<'a>,
        pub voucher: Voucher,
        pub ticket_kind: u8,
        pub registered_at: Micros,
        #[serde(borrow)]
        pub registered_by: Text<'a>,
        #[serde(borrow)]
        pub matched: Option<Person<'a>>,
        #[serde(borrow)]
        pub versions: Newest<Version<'a>>,
        #[serde(rename = "revision")]
        _revision: u32,
        pub seq: u64,
    }

    #[derive(Deserialize)]
    pub(super) struct Person<'a> {
        pub municipality: Digits<6>,
        #[serde(borrow)]
        pub addressee: Text<'a>,
    }

    #[derive(Deserialize)]
    pub(super) struct Version<'a> {
        pub version: u32,
        #[serde(borrow)]
        pub details: Details<'a>,
        pub voided: bool,
        pub recorded_at: Micros,
        #[serde(rename = "recorded_by", borrow)]
        _recorded_by: Text<'a>,
        #[serde(rename = "reason", borrow)]
        _reason: Option<Text<'a>>,
    }

    #[derive(Deserialize)]
    pub(super) struct Details<'a> {
        pub dose_number: u8,
        pub date_given: Days,
        pub administering_municipality: Digits<6>,
        #[serde(borrow)]
        pub site: Text<'a>,
        #[serde(borrow)]
        pub site_name: Text<'a>,
        #[serde(borrow)]
        pub doctor: Text<'a>,
        #[serde(borrow)]
        pub product: Text<'a>,
        #[serde(borrow)]
        pub maker: Text<'a>,
        #[serde(borrow)]
        pub lot: Text<'a>,
        #[serde(default)]
        pub lot_expiry: Option<Days>,
    }

    #[derive(Deserialize)]
    pub(super) struct Resident<'a> {
        #[serde(borrow)]
        pub person: Person<'a>,
        pub voucher: Digits<10>,
        #[serde(borrow)]
        pub name: Text<'a>,
        #[serde(borrow)]
        pub name_kana: Text<'a>,
        pub birth_date: Days,
        pub sex: Sex,
        #[serde(borrow)]
        pub address: Option<Text<'a>>,
        pub previous: Option<Voucher>,
        #[serde(rename = "personal_number_hash")]
        _personal_number_hash: Option<PersonalNumberHash>,
        pub status: ResidentStatus,
        #[serde(default)]
        pub status_date: Option<Days>,
    }

    /// A [`VoucherRef`](crate::ids::VoucherRef) as digits.
    #[derive(Deserialize)]
    pub(super) struct Voucher {
        pub municipality: Digits<6>,
        pub number: Digits<10>,
    }

    /// A code of `N` digits ([`MunicipalityCode`](crate::ids::MunicipalityCode), [`VoucherNumber`](crate::ids::VoucherNumber)) as its ASCII digits,
    /// as stored: a number in binary formats, a string in readable ones. Read as digits
    /// only (the code was checked when it was written), which costs a column scan no
    /// check-digit sum and no UTF-8 check per row.
    #[derive(Clone, Copy)]
    pub(super) struct Digits<const N: usize>(pub [u8; N]);

    impl<'de, const N: usize> Deserialize<'de> for Digits<N> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            if d.is_human_readable() {
                let text = <Cow<'de, str>>::deserialize(d)?;
                <[u8; N]>::try_from(text.as_bytes())
                    .ok()
                    .filter(|b| b.iter().all(u8::is_ascii_digit))
                    .map(Digits)
                    .ok_or_else(|| D::Error::custom(format!("expected {N} digits")))
            } else {
                let value = u64::deserialize(d)?;
                number_digits(value).map(Digits).ok_or_else(|| D::Error::custom(format!("{value} has more than {N} digits")))
            }
        }
    }

    /// A stored text as its bytes, borrowed where the format allows, its UTF-8 not
    /// checked (see [`TextColumn`]): binary formats store a string as its bytes anyway.
    pub(super) struct Text<'a>(Cow<'a, [u8]>);

    impl Text<'_> {
        pub fn bytes(&self) -> &[u8] {
            &self.0
        }
    }

    impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Text<'de>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a string")
                }
                fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> std::result::Result<Text<'de>, E> {
                    Ok(Text(Cow::Borrowed(v)))
                }
                fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> std::result::Result<Text<'de>, E> {
                    Ok(Text(Cow::Borrowed(v.as_bytes())))
                }
                fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> std::result::Result<Text<'de>, E> {
                    Ok(Text(Cow::Owned(v.to_vec())))
                }
                fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Text<'de>, E> {
                    Ok(Text(Cow::Owned(v.as_bytes().to_vec())))
                }
            }
            d.deserialize_bytes(V)
        }
    }

    /// A date (as [`crate::clock::serde_date`] writes it) as a day number from 1970-01-01.
    #[derive(Clone, Copy)]
    pub(super) struct Days(pub i32);

    impl<'de> Deserialize<'de> for Days {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            if d.is_human_readable() {
                Ok(Days(epoch_days(NaiveDate::deserialize(d)?)))
            } else {
                let days = i32::deserialize(d)?;
                days.checked_sub(EPOCH_DAYS_FROM_CE).map(Days).ok_or_else(|| D::Error::custom(format!("day number {days} is out of range")))
            }
        }
    }

    /// An instant (as [`crate::clock::serde_instant`] writes it) as microseconds since the epoch.
    #[derive(Clone, Copy)]
    pub(super) struct Micros(pub i64);

    impl<'de> Deserialize<'de> for Micros {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            if d.is_human_readable() {
                Ok(Micros(epoch_micros(DateTime::<Utc>::deserialize(d)?)))
            } else {
                let (secs, nanos) = <(i64, u32)>::deserialize(d)?;
                secs.checked_mul(1_000_000)
                    .and_then(|us| us.checked_add(i64::from(nanos / 1000)))
                    .map(Micros)
                    .ok_or_else(|| D::Error::custom(format!("timestamp {secs}.{nanos:09} is out of range")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;
    use crate::dose::{DoseDetails, DoseVersion};
    use crate::ids::{AccountId, AddresseeNumber, IdempotencyKey, MunicipalityCode, PersonRef, SiteId, VoucherNumber, VoucherRef};
    use crate::resident::PersonalText;
    use crate::vaccine::ProductCode;

    fn code(s: &str) -> MunicipalityCode {
        MunicipalityCode::parse(s).unwrap()
    }

    fn details(lot_expiry: Option<NaiveDate>) -> DoseDetails {
        DoseDetails {
            dose_number: 2,
            date_given: NaiveDate::from_ymd_opt(2021, 7, 1).unwrap(),
            administering_municipality: code("131016"),
            site: SiteId::parse("venue-1").unwrap(),
            site_name: "千代田区民会館".into(),
            doctor: "医師 一郎".into(),
            product: ProductCode::new("pfizer"),
            maker: "ファイザー".into(),
            lot: "FA5765".into(),
            lot_expiry,
        }
    }

    fn dose(matched: bool) -> DoseRecord {
        let key = IdempotencyKey::parse("k-1").unwrap();
        let at = Utc.with_ymd_and_hms(2021, 7, 1, 9, 30, 0).unwrap() + chrono::Duration::microseconds(123_456);
        DoseRecord {
            id: DoseId::for_key(&key),
            idempotency_key: key,
            voucher: VoucherRef { municipality: code("131016"), number: VoucherNumber::parse("0000012345").unwrap() },
            ticket_kind: 1,
            registered_at: at,
            registered_by: AccountId::parse("tablet-1").unwrap(),
            matched: matched.then(|| PersonRef { municipality: code("131016"), addressee: AddresseeNumber::parse("000123").unwrap() }),
            versions: vec![
                DoseVersion {
                    version: 1,
                    details: details(None),
                    voided: false,
                    recorded_at: at,
                    recorded_by: "site".into(),
                    reason: None,
                },
                DoseVersion {
                    version: 2,
                    details: DoseDetails { doctor: "医師 二郎".into(), ..details(NaiveDate::from_ymd_opt(2021, 12, 31)) },
                    voided: true,
                    recorded_at: at + chrono::Duration::days(3),
                    recorded_by: "staff:131016".into(),
                    reason: Some("取消".into()),
                },
            ],
            revision: 3,
            seq: 42,
        }
    }

    fn resident(full: bool) -> Resident {
        Resident {
            person: PersonRef { municipality: code("131016"), addressee: AddresseeNumber::parse("0000000123").unwrap() },
            voucher: VoucherNumber::parse("0012345678").unwrap(),
            name: PersonalText("山田 太郎".into()),
            name_kana: PersonalText("ヤマダ タロウ".into()),
            birth_date: NaiveDate::from_ymd_opt(1950, 2, 3).unwrap(),
            sex: Sex::Male,
            address: full.then(|| PersonalText("東京都千代田区千代田1-1".into())),
            previous: full.then(|| VoucherRef { municipality: code("011002"), number: VoucherNumber::parse("9000000001").unwrap() }),
            personal_number_hash: full.then_some(PersonalNumberHash([7; 32])),
            status: if full { ResidentStatus::MovedOut } else { ResidentStatus::Active },
            status_date: full.then(|| NaiveDate::from_ymd_opt(2022, 4, 1).unwrap()),
        }
    }

    #[test]
    fn stored_doses_decode_as_their_records() {
        for matched in [true, false] {
            let d = dose(matched);
            let mut expected = DoseColumns::with_capacity(1);
            expected.push_record(&d).unwrap();

            let mut stored = DoseColumns::with_capacity(1);
            // Decoded as a store does, every byte read: a field added to the domain type
            // but not to `repr` would leave bytes behind.
            let bytes = postcard::to_stdvec(&d).unwrap();
            let mut de = postcard::Deserializer::from_bytes(&bytes);
            stored.push_stored(&mut de).unwrap();
            assert!(de.finalize().unwrap().is_empty(), "bytes left over: the column repr misses a field");
            assert_eq!(stored, expected);

            let mut json = DoseColumns::with_capacity(1);
            json.push_stored(&mut serde_json::Deserializer::from_str(&serde_json::to_string(&d).unwrap())).unwrap();
            assert_eq!(json, expected);
        }
    }

    #[test]
    fn dose_columns_hold_the_newest_version() {
        let d = dose(true);
        let mut c = DoseColumns::with_capacity(4);
        c.push_record(&d).unwrap();
        c.push_record(&dose(false)).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c.dose_id.get(0).unwrap(), d.id.to_string());
        assert_eq!(c.municipality.get(0).as_deref(), Some("131016"));
        assert_eq!(c.voucher_number.get(0).as_deref(), Some("0000012345"));
        assert_eq!(c.doctor.get(0).as_deref(), Some("医師 二郎"));
        assert_eq!(c.site_name.get(1).as_deref(), Some("千代田区民会館"));
        assert_eq!(c.addressee_number.get(0).as_deref(), Some("000123"));
        assert_eq!(c.addressee_number.get(1), None);
        assert_eq!(c.resident_municipality.get(1), None);
        assert_eq!(c.date_given.days()[0], 18_809); // 2021-07-01
        assert_eq!(c.lot_expiry.days()[0], 18_992); // 2021-12-31
        assert_eq!(c.registered_at[0], d.registered_at.timestamp_micros());
        assert_eq!(c.updated_at[0], d.current().recorded_at.timestamp_micros());
        assert_eq!((c.voided[0], c.version[0], c.seq[0], c.ticket_kind[0], c.dose_number[0]), (true, 2, 42, 1, 2));
        assert_eq!(c.high_seq(), 42);
        // The second row's long site name and maker share the first row's bytes.
        assert_eq!(c.site_name.bytes().len(), "千代田区民会館".len());
        assert_eq!(c.maker.bytes().len(), "ファイザー".len());
    }

    #[test]
    fn stored_residents_decode_as_their_records() {
        for full in [true, false] {
            let r = resident(full);
            let mut expected = ResidentColumns::with_capacity(1);
            expected.push_resident(&r).unwrap();
            assert_eq!(expected.addressee_number.get(0).as_deref(), Some("0000000123"));
            assert_eq!(expected.voucher_number.get(0).as_deref(), Some("0012345678"));
            assert_eq!(expected.previous_voucher_number.get(0).is_some(), full);
            assert_eq!(expected.status_date.validity().is_valid(0), full);
            assert_eq!(expected.birth_date.days()[0], -7272); // 1950-02-03

            let mut stored = ResidentColumns::with_capacity(1);
            // Decoded as a store does, every byte read: a field added to the domain type
            // but not to `repr` would leave bytes behind.
            let bytes = postcard::to_stdvec(&r).unwrap();
            let mut de = postcard::Deserializer::from_bytes(&bytes);
            stored.push_stored(&mut de).unwrap();
            assert!(de.finalize().unwrap().is_empty(), "bytes left over: the column repr misses a field");
            assert_eq!(stored, expected);

            let mut json = ResidentColumns::with_capacity(1);
            json.push_stored(&mut serde_json::Deserializer::from_str(&serde_json::to_string(&r).unwrap())).unwrap();
            assert_eq!(json, expected);
        }
    }

    #[test]
    fn inline_views_hold_the_length_and_the_bytes_zero_padded() {
        let text: Vec<u8> = (1..=INLINE_TEXT as u8).collect();
        for len in 0..=INLINE_TEXT {
            let mut expected = [0u8; 16];
            expected[..4].copy_from_slice(&(len as u32).to_le_bytes());
            expected[4..4 + len].copy_from_slice(&text[..len]);
            assert_eq!(inline_view(&text[..len]).to_le_bytes(), expected, "length {len}");
        }
    }

    #[test]
    fn epoch_numbers() {
        assert_eq!(epoch_days(NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()), 0);
        assert_eq!(epoch_days(NaiveDate::from_ymd_opt(1969, 12, 31).unwrap()), -1);
        assert_eq!(epoch_micros(Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 1).unwrap()), 1_000_000);
    }

    /// Residents with and without their optional values, names of any text.
    fn residents(texts: &[(String, Option<String>, bool)]) -> Vec<Resident> {
        texts
            .iter()
            .enumerate()
            .map(|(i, (name, address, full))| {
                let mut r = resident(*full);
                r.person.addressee = AddresseeNumber::parse(&format!("{:06}", i + 1)).unwrap();
                r.name = PersonalText(name.clone());
                r.address = address.clone().map(PersonalText);
                r
            })
            .collect()
    }

    fn pushed(residents: &[Resident]) -> ResidentColumns {
        let mut c = ResidentColumns::with_capacity(residents.len());
        residents.iter().for_each(|r| c.push_resident(r).unwrap());
        c
    }

    fn segment(c: &ResidentColumns) -> Vec<u8> {
        let mut out = Vec::new();
        c.encode_segment(&mut out).unwrap();
        out
    }

    #[test]
    fn every_truncated_segment_is_an_error() {
        let texts = [("山田 太郎".to_string(), Some("東京都千代田区千代田1-1".to_string()), true), ("x".into(), None, false)];
        let bytes = segment(&pushed(&residents(&texts)));
        for n in 0..bytes.len() {
            assert!(matches!(ResidentColumns::decode_segment(&bytes[..n]), Err(Error::Storage { .. })), "cut at {n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(ResidentColumns::decode_segment(&longer).is_err());
        assert_eq!(ResidentColumns::decode_segment(&bytes).unwrap(), pushed(&residents(&texts)));
    }

    #[test]
    fn an_inline_view_with_bytes_past_its_value_is_an_error() {
        let texts = [("山田 太郎".to_string(), Some("東京都千代田区千代田1-1".to_string()), true)];
        let bytes = segment(&pushed(&residents(&texts)));
        // The municipality's view (a 6-byte code) follows the tag, version, row count and
        // its layout byte; bytes 10..16 of the view lie past the value.
        let view = SEGMENT_TAG.len() + 1 + 4 + 1;
        assert_eq!(bytes[view], 6);
        for at in 10..16 {
            let mut damaged = bytes.clone();
            damaged[view + at] = b'1';
            assert!(matches!(ResidentColumns::decode_segment(&damaged), Err(Error::Storage { .. })), "byte {at}");
        }
    }

    #[test]
    fn appended_columns_are_the_pushed_ones() {
        let a = [("山田 太郎".to_string(), Some("東京都千代田区千代田1-1".to_string()), true), ("x".into(), None, false)];
        let b = [("佐藤 花子".to_string(), None, true), ("y".into(), Some("大阪".to_string()), false)];
        let all = residents(&a.iter().chain(&b).cloned().collect::<Vec<_>>());
        for (cut, end) in [(2, 4), (0, 4), (2, 2), (1, 3), (0, 0)] {
            let mut joined = pushed(&all[..cut]);
            joined.append(&pushed(&all[cut..end])).unwrap();
            assert_eq!(joined, pushed(&all[..end]), "{cut}..{end}");
        }
        let mut shared = TextColumn::shared(2);
        shared.push("接種会場 千代田区役所 第二会議室").unwrap();
        let mut more = TextColumn::shared(2);
        more.push("接種会場 千代田区役所 第二会議室").unwrap();
        more.push_null();
        more.push("short").unwrap();
        shared.append(&more).unwrap();
        let mut by_push = TextColumn::shared(4);
        by_push.push("接種会場 千代田区役所 第二会議室").unwrap();
        by_push.push("接種会場 千代田区役所 第二会議室").unwrap();
        by_push.push_null();
        by_push.push("short").unwrap();
        assert_eq!(shared, by_push);
    }

    #[test]
    fn segments_one_after_another_decode_in_order() {
        let first = pushed(&residents(&[("山田 太郎".to_string(), Some("東京都千代田区千代田1-1".to_string()), true)]));
        let second = pushed(&residents(&[("x".to_string(), None, false), ("佐藤 花子".to_string(), None, true)]));
        let mut bytes = segment(&first);
        let cut = bytes.len();
        bytes.extend(segment(&second));
        assert_eq!(ResidentColumns::decode_segments(&bytes).unwrap(), vec![first.clone(), second]);
        assert_eq!(ResidentColumns::decode_segments(&bytes[..cut]).unwrap(), vec![first]);
        assert_eq!(ResidentColumns::decode_segments(&[]).unwrap(), Vec::<ResidentColumns>::new());
        for n in cut + 1..bytes.len() {
            assert!(matches!(ResidentColumns::decode_segments(&bytes[..n]), Err(Error::Storage { .. })), "cut at {n}");
        }
    }

    #[test]
    fn segments_of_shared_columns_keep_their_views() {
        let mut c = TextColumn::shared(4);
        for v in [Some("千代田区民会館"), None, Some("short"), Some("千代田区民会館"), Some("another long value")] {
            c.push_option(v).unwrap();
        }
        let mut out = Vec::new();
        c.encode(&mut out).unwrap();
        let back = TextColumn::decode(&mut SegmentReader(&out), c.len(), "t").unwrap();
        assert_eq!(back, c);
        // A view pointing past the bytes is refused.
        let mut bad = out.clone();
        bad[1 + 15] = 0x7f; // the first view's offset, high byte
        assert!(TextColumn::decode(&mut SegmentReader(&bad), c.len(), "t").is_err());
    }

    #[test]
    fn empty_columns_make_a_segment() {
        let c = ResidentColumns::with_capacity(0);
        assert_eq!(ResidentColumns::decode_segment(&segment(&c)).unwrap(), c);
    }

    proptest! {
        #[test]
        fn segments_give_back_their_columns(
            texts in proptest::collection::vec((".{0,20}", proptest::option::of(".{0,30}"), any::<bool>()), 0..40),
            rows in 1usize..8,
        ) {
            let residents = residents(&texts);
            let columns = pushed(&residents);
            let bytes = segment(&columns);
            prop_assert_eq!(columns.segment_len(), bytes.len());
            let back = ResidentColumns::decode_segment(&bytes).unwrap();
            prop_assert_eq!(&back, &columns);
            // Split into batches, each is the batch its residents pushed would make.
            let batches = back.split(rows).unwrap();
            let expected: Vec<_> = residents.chunks(rows).map(pushed).collect();
            if residents.is_empty() {
                prop_assert_eq!(batches, vec![columns]);
            } else {
                prop_assert_eq!(batches, expected);
            }
        }

        #[test]
        fn damaged_segments_are_errors_not_panics(
            texts in proptest::collection::vec((".{0,8}", proptest::option::of(".{0,8}"), any::<bool>()), 0..6),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            noise in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut bytes = segment(&pushed(&residents(&texts)));
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            // Whatever it decodes to, it decodes without a panic and encodes again.
            if let Ok(c) = ResidentColumns::decode_segment(&bytes) {
                let mut again = Vec::new();
                c.encode_segment(&mut again).unwrap();
                let _ = c.split(3).unwrap();
            }
            let _ = ResidentColumns::decode_segment(&noise);
            let mut tagged = segment(&ResidentColumns::with_capacity(0))[..5].to_vec();
            tagged.extend_from_slice(&noise);
            let _ = ResidentColumns::decode_segment(&tagged);
        }

        #[test]
        fn numbers_as_digits(value: u64, small in 0u64..100_000_000) {
            for v in [value, small] {
                let six = number_digits::<6>(v);
                prop_assert_eq!(six.map(|d| String::from_utf8(d.to_vec()).unwrap()), (v < 1_000_000).then(|| format!("{v:06}")));
                let ten = number_digits::<10>(v);
                prop_assert_eq!(ten.map(|d| String::from_utf8(d.to_vec()).unwrap()), (v < 10_000_000_000).then(|| format!("{v:010}")));
                let fifteen = number_digits::<15>(v);
                prop_assert_eq!(fifteen.map(|d| String::from_utf8(d.to_vec()).unwrap()), (v < 10u64.pow(15)).then(|| format!("{v:015}")));
            }
        }

        #[test]
        fn text_columns_give_back_what_was_pushed(values in proptest::collection::vec(proptest::option::of(".{0,20}"), 0..40), shared: bool) {
            let mut c = if shared { TextColumn::shared(4) } else { TextColumn::with_capacity(4) };
            for v in &values {
                c.push_option(v.as_deref()).unwrap();
            }
            prop_assert_eq!(c.len(), values.len());
            for (i, v) in values.iter().enumerate() {
                prop_assert_eq!(c.get(i), v.clone());
            }
            match c.into_parts() {
                TextParts::Views { views, .. } => {
                    prop_assert!(shared);
                    for (view, v) in views.iter().zip(&values) {
                        let len = (*view as u32) as usize;
                        prop_assert_eq!(len, v.as_deref().map_or(0, str::len));
                        if len < INLINE_TEXT {
                            // Inline: the bytes after the value are zero (Arrow checks it).
                            prop_assert_eq!(view >> (32 + 8 * len as u32), 0);
                        } else if len > INLINE_TEXT {
                            prop_assert_eq!(&view.to_le_bytes()[4..8], &v.as_deref().unwrap_or_default().as_bytes()[..4]);
                        }
                    }
                }
                TextParts::Contiguous { offsets, bytes, .. } => {
                    prop_assert!(!shared);
                    prop_assert_eq!(offsets.len(), values.len() + 1);
                    prop_assert_eq!(offsets[0], 0);
                    // Every value's bytes one after another; a missing value takes none.
                    let all: String = values.iter().flatten().map(String::as_str).collect();
                    prop_assert_eq!(bytes, all.into_bytes());
                }
            }
        }
    }
}
