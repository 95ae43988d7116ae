//! Columns as bytes, for a store that keeps a read-side copy of them (the redb store's dose
//! column segments): every buffer little-endian, one after another, behind a versioned
//! header. Decoding is length checks and bulk copies; input that is not what
//! [`DoseColumns::encode`] wrote (truncated, corrupt, of another version) is an error,
//! never a panic.
//!
//! Layout (`n` = rows): magic `VRSC`, version (1 byte), kind (1 byte: doses), `n` (u32),
//! then each column in field order:
//! - text: layout (1 byte: 0 contiguous, 1 views), validity, then `n + 1` offsets (i32) or
//!   `n` views (u128), then the byte buffer (u32 length, bytes);
//! - date: validity, `n` days (i32);
//! - numbers: `n` values of their width; flags: `n` bytes, each 0 or 1;
//! - validity: 0 (every row holds a value) or 1 followed by `n` flag bytes.

use std::ops::Range;

use super::{DateColumn, DoseColumns, INLINE_TEXT, Layout, TextColumn, Validity, long_bytes};
use crate::{Error, Result};

const MAGIC: &[u8; 4] = b"VRSC";
/// The layout version written; any other is refused (the store then rebuilds from rows).
const VERSION: u8 = 1;
const KIND_DOSES: u8 = 1;

fn corrupt(what: &str) -> Error {
    Error::Storage { message: format!("stored columns are unreadable: {what}"), source: None }
}

// ---- writing ------------------------------------------------------------------------------

fn put_u32(out: &mut Vec<u8>, v: usize) -> Result<()> {
    let v = u32::try_from(v).map_err(|_| corrupt("a buffer outgrew 4 GiB"))?;
    out.extend_from_slice(&v.to_le_bytes());
    Ok(())
}

fn put_flags(out: &mut Vec<u8>, flags: &[bool]) {
    out.extend(flags.iter().map(|&f| u8::from(f)));
}

fn put_validity(out: &mut Vec<u8>, v: &Validity) {
    match v.flags() {
        None => out.push(0),
        Some(flags) => {
            out.push(1);
            put_flags(out, flags);
        }
    }
}

macro_rules! put_numbers {
    ($out:expr, $values:expr) => {
        for v in $values {
            $out.extend_from_slice(&v.to_le_bytes());
        }
    };
}

impl TextColumn {
    fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        match &self.layout {
            Layout::Contiguous { offsets } => {
                out.push(0);
                put_validity(out, &self.validity);
                put_numbers!(out, offsets);
            }
            Layout::Views { views, .. } => {
                out.push(1);
                put_validity(out, &self.validity);
                put_numbers!(out, views);
            }
        }
        put_u32(out, self.bytes.len())?;
        out.extend_from_slice(&self.bytes);
        Ok(())
    }
}

impl DateColumn {
    fn encode(&self, out: &mut Vec<u8>) {
        put_validity(out, &self.validity);
        put_numbers!(out, &self.days);
    }
}

// ---- reading ------------------------------------------------------------------------------

/// The unread rest of an encoding.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if self.rest.len() < n {
            return Err(corrupt(&format!("{what} is cut short")));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn array<const W: usize>(&mut self, n: usize, what: &str) -> Result<&'a [[u8; W]]> {
        let bytes = self.take(n.checked_mul(W).ok_or_else(|| corrupt(what))?, what)?;
        // `take` gave exactly n · W bytes: no remainder.
        Ok(bytes.as_chunks::<W>().0)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(1, what)?[0][0])
    }

    fn u32(&mut self, what: &str) -> Result<usize> {
        Ok(u32::from_le_bytes(self.array::<4>(1, what)?[0]) as usize)
    }

    fn flags(&mut self, n: usize, what: &str) -> Result<Vec<bool>> {
        let bytes = self.take(n, what)?;
        if bytes.iter().any(|&b| b > 1) {
            return Err(corrupt(&format!("{what} holds a flag other than 0 or 1")));
        }
        Ok(bytes.iter().map(|&b| b == 1).collect())
    }

    fn validity(&mut self, n: usize, what: &str) -> Result<Validity> {
        match self.u8(what)? {
            0 => Ok(Validity(None)),
            1 => Ok(Validity(Some(self.flags(n, what)?))),
            _ => Err(corrupt(&format!("{what} has an unknown validity tag"))),
        }
    }

    fn text(&mut self, n: usize, what: &str) -> Result<TextColumn> {
        let tag = self.u8(what)?;
        let validity = self.validity(n, what)?;
        let layout = match tag {
            0 => {
                let count = n.checked_add(1).ok_or_else(|| corrupt(what))?;
                let offsets: Vec<i32> = self.array::<4>(count, what)?.iter().map(|b| i32::from_le_bytes(*b)).collect();
                Layout::Contiguous { offsets }
            }
            1 => Layout::Views { views: self.array::<16>(n, what)?.iter().map(|b| u128::from_le_bytes(*b)).collect(), recent: Vec::new() },
            _ => return Err(corrupt(&format!("{what} has an unknown text layout"))),
        };
        let len = self.u32(what)?;
        let bytes = self.take(len, what)?.to_vec();
        // What a consumer relies on (Arrow checks it again when it takes the buffers): every
        // value lies inside the byte buffer.
        match &layout {
            Layout::Contiguous { offsets } => {
                let ordered = offsets.first() == Some(&0) && offsets.windows(2).all(|w| w[0] <= w[1]);
                if !ordered || usize::try_from(offsets.last().copied().unwrap_or(0)).ok() != Some(bytes.len()) {
                    return Err(corrupt(&format!("{what} has offsets outside its bytes")));
                }
            }
            Layout::Views { views, .. } => {
                let fits = |&v: &u128| {
                    let len = (v as u32) as usize;
                    if len <= INLINE_TEXT {
                        v.checked_shr(32 + 8 * len as u32).unwrap_or(0) == 0
                    } else {
                        (v >> 64) as u32 == 0 && long_bytes(&bytes, v).is_some()
                    }
                };
                if !views.iter().all(fits) {
                    return Err(corrupt(&format!("{what} has a view outside its bytes")));
                }
            }
        }
        Ok(TextColumn { layout, bytes, validity })
    }

    fn date(&mut self, n: usize, what: &str) -> Result<DateColumn> {
        let validity = self.validity(n, what)?;
        let days = self.array::<4>(n, what)?.iter().map(|b| i32::from_le_bytes(*b)).collect();
        Ok(DateColumn { days, validity })
    }
}

impl DoseColumns {
    /// Appends these columns' encoding (see the module docs) to `out`. Fails only when a
    /// buffer outgrew 4 GiB.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(KIND_DOSES);
        put_u32(out, self.len())?;
        self.dose_id.encode(out)?;
        self.municipality.encode(out)?;
        self.voucher_number.encode(out)?;
        out.extend_from_slice(&self.ticket_kind);
        out.extend_from_slice(&self.dose_number);
        self.date_given.encode(out);
        put_numbers!(out, &self.registered_at);
        self.registered_by.encode(out)?;
        self.administering_municipality.encode(out)?;
        self.site_id.encode(out)?;
        self.site_name.encode(out)?;
        self.doctor.encode(out)?;
        self.product.encode(out)?;
        self.maker.encode(out)?;
        self.lot.encode(out)?;
        self.lot_expiry.encode(out);
        self.resident_municipality.encode(out)?;
        self.addressee_number.encode(out)?;
        put_flags(out, &self.voided);
        put_numbers!(out, &self.version);
        put_numbers!(out, &self.updated_at);
        put_numbers!(out, &self.seq);
        Ok(())
    }

    /// Reads columns written by [`encode`](Self::encode) from the start of `bytes`; returns
    /// them and the bytes after them. An error when `bytes` do not start with such an
    /// encoding (of this version), in full.
    pub fn decode(bytes: &[u8]) -> Result<(Self, &[u8])> {
        let mut r = Reader { rest: bytes };
        if r.take(4, "the header")? != MAGIC {
            return Err(corrupt("not a columns encoding"));
        }
        let version = r.u8("the header")?;
        if version != VERSION {
            return Err(corrupt(&format!("layout version {version}, this build reads {VERSION}")));
        }
        if r.u8("the header")? != KIND_DOSES {
            return Err(corrupt("not dose columns"));
        }
        let n = r.u32("the header")?;
        let c = DoseColumns {
            dose_id: r.text(n, "dose_id")?,
            municipality: r.text(n, "municipality")?,
            voucher_number: r.text(n, "voucher_number")?,
            ticket_kind: r.take(n, "ticket_kind")?.to_vec(),
            dose_number: r.take(n, "dose_number")?.to_vec(),
            date_given: r.date(n, "date_given")?,
            registered_at: r.array::<8>(n, "registered_at")?.iter().map(|b| i64::from_le_bytes(*b)).collect(),
            registered_by: r.text(n, "registered_by")?,
            administering_municipality: r.text(n, "administering_municipality")?,
            site_id: r.text(n, "site_id")?,
            site_name: r.text(n, "site_name")?,
            doctor: r.text(n, "doctor")?,
            product: r.text(n, "product")?,
            maker: r.text(n, "maker")?,
            lot: r.text(n, "lot")?,
            lot_expiry: r.date(n, "lot_expiry")?,
            resident_municipality: r.text(n, "resident_municipality")?,
            addressee_number: r.text(n, "addressee_number")?,
            voided: r.flags(n, "voided")?,
            version: r.array::<4>(n, "version")?.iter().map(|b| u32::from_le_bytes(*b)).collect(),
            updated_at: r.array::<8>(n, "updated_at")?.iter().map(|b| i64::from_le_bytes(*b)).collect(),
            seq: r.array::<8>(n, "seq")?.iter().map(|b| u64::from_le_bytes(*b)).collect(),
        };
        Ok((c, r.rest))
    }

    /// A copy of rows `range` (clamped to the rows there are), built as a scan that had
    /// pushed just those rows would have built it: for handing over stored columns in
    /// smaller batches.
    pub fn rows(&self, range: Range<usize>) -> Result<Self> {
        // Clamped: the columns are public, a caller may have made them of unequal lengths.
        let range = range.start.min(self.len())..range.end.min(self.len());
        let mut c = DoseColumns::with_capacity(range.len());
        for i in range {
            c.dose_id.push_from(&self.dose_id, i)?;
            c.municipality.push_from(&self.municipality, i)?;
            c.voucher_number.push_from(&self.voucher_number, i)?;
            c.ticket_kind.push(self.ticket_kind.get(i).copied().unwrap_or_default());
            c.dose_number.push(self.dose_number.get(i).copied().unwrap_or_default());
            c.date_given.push_from(&self.date_given, i);
            c.registered_at.push(self.registered_at.get(i).copied().unwrap_or_default());
            c.registered_by.push_from(&self.registered_by, i)?;
            c.administering_municipality.push_from(&self.administering_municipality, i)?;
            c.site_id.push_from(&self.site_id, i)?;
            c.site_name.push_from(&self.site_name, i)?;
            c.doctor.push_from(&self.doctor, i)?;
            c.product.push_from(&self.product, i)?;
            c.maker.push_from(&self.maker, i)?;
            c.lot.push_from(&self.lot, i)?;
            c.lot_expiry.push_from(&self.lot_expiry, i);
            c.resident_municipality.push_from(&self.resident_municipality, i)?;
            c.addressee_number.push_from(&self.addressee_number, i)?;
            c.voided.push(self.voided.get(i).copied().unwrap_or_default());
            c.version.push(self.version.get(i).copied().unwrap_or_default());
            c.updated_at.push(self.updated_at.get(i).copied().unwrap_or_default());
            c.seq.push(self.seq.get(i).copied().unwrap_or_default());
        }
        Ok(c)
    }
}

impl TextColumn {
    /// Appends value `row` of `other` (a missing value when it is missing or unreadable).
    fn push_from(&mut self, other: &TextColumn, row: usize) -> Result<()> {
        if !other.validity.is_valid(row) {
            self.push_null();
            return Ok(());
        }
        match &other.layout {
            Layout::Contiguous { offsets } => {
                let at = |i: usize| offsets.get(i).and_then(|&o| usize::try_from(o).ok());
                match at(row).zip(at(row + 1)).and_then(|(s, e)| other.bytes.get(s..e)) {
                    Some(v) => self.push_bytes(v),
                    None => {
                        self.push_null();
                        Ok(())
                    }
                }
            }
            Layout::Views { views, .. } => {
                let Some(&view) = views.get(row) else {
                    return {
                        self.push_null();
                        Ok(())
                    };
                };
                let len = (view as u32) as usize;
                if len <= INLINE_TEXT {
                    let b = view.to_le_bytes();
                    self.push_bytes(&b[4..4 + len])
                } else {
                    match long_bytes(&other.bytes, view) {
                        Some(v) => self.push_bytes(v),
                        None => {
                            self.push_null();
                            Ok(())
                        }
                    }
                }
            }
        }
    }
}

impl DateColumn {
    /// Appends value `row` of `other`.
    fn push_from(&mut self, other: &DateColumn, row: usize) {
        let valid = other.validity.is_valid(row);
        self.push(other.days.get(row).copied().filter(|_| valid));
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// One dose's values as the tests generate them.
    type RowData = (Option<String>, String, Option<String>, Option<i32>, u64, bool);

    /// Columns holding `rows`: texts both short and long, repeated and missing, in both layouts.
    fn columns_of(rows: &[RowData]) -> DoseColumns {
        let mut c = DoseColumns::with_capacity(2);
        for (text, shared, maybe, day, number, flag) in rows {
            c.dose_id.push(&format!("{number:032x}")).unwrap();
            c.municipality.push("131016").unwrap();
            c.voucher_number.push(&format!("{:010}", number % 10_000_000_000)).unwrap();
            c.ticket_kind.push(1);
            c.dose_number.push(*number as u8);
            c.date_given.push(Some(day.unwrap_or(18_000)));
            c.registered_at.push(*number as i64);
            c.registered_by.push(shared).unwrap();
            c.administering_municipality.push("131016").unwrap();
            c.site_id.push(shared).unwrap();
            c.site_name.push(&format!("{shared}{shared}")).unwrap();
            c.doctor.push_option(maybe.as_deref()).unwrap();
            c.product.push("pfizer").unwrap();
            c.maker.push("ファイザー").unwrap();
            c.lot.push_option(text.as_deref()).unwrap();
            c.lot_expiry.push(*day);
            c.resident_municipality.push_option(maybe.as_ref().map(|_| "131016")).unwrap();
            c.addressee_number.push_option(text.as_deref()).unwrap();
            c.voided.push(*flag);
            c.version.push(*number as u32);
            c.updated_at.push(-(*number as i64));
            c.seq.push(*number);
        }
        c
    }

    fn sample() -> DoseColumns {
        let long = "接種会場 千代田区役所 第二会議室".to_string();
        columns_of(&[
            (Some("FA5765".into()), long.clone(), None, Some(19_000), 7, false),
            (None, long.clone(), Some("医師 太郎".into()), None, 8, true),
            (Some("a lot longer than twelve".into()), "short".into(), Some(long), Some(-3), u64::MAX, false),
        ])
    }

    fn encoded(c: &DoseColumns) -> Vec<u8> {
        let mut out = Vec::new();
        c.encode(&mut out).unwrap();
        out
    }

    #[test]
    fn columns_come_back_with_the_bytes_after_them() {
        let c = sample();
        let mut bytes = encoded(&c);
        let len = bytes.len();
        sample().encode(&mut bytes).unwrap();
        let (first, rest) = DoseColumns::decode(&bytes).unwrap();
        assert_eq!(first, c);
        assert_eq!(rest.len(), len);
        let (second, rest) = DoseColumns::decode(rest).unwrap();
        assert_eq!(second, c);
        assert!(rest.is_empty());
        let empty = DoseColumns::default();
        assert_eq!(DoseColumns::decode(&encoded(&empty)).unwrap().0, empty);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = encoded(&sample());
        for n in 0..bytes.len() {
            let e = DoseColumns::decode(&bytes[..n]).unwrap_err();
            assert!(e.to_string().contains("unreadable"), "{n}: {e}");
        }
    }

    #[test]
    fn another_version_or_kind_is_refused() {
        let mut bytes = encoded(&sample());
        bytes[4] = VERSION + 1;
        assert!(DoseColumns::decode(&bytes).unwrap_err().to_string().contains("layout version"));
        let mut bytes = encoded(&sample());
        bytes[5] = 9;
        assert!(DoseColumns::decode(&bytes).is_err());
        let mut bytes = encoded(&sample());
        bytes[0] = b'X';
        assert!(DoseColumns::decode(&bytes).is_err());
    }

    #[test]
    fn every_changed_byte_decodes_or_fails_without_a_panic() {
        let bytes = encoded(&sample());
        for i in 0..bytes.len() {
            for x in [0x01, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= x;
                if let Ok((c, _)) = DoseColumns::decode(&b) {
                    // Whatever decodes is usable: every value within its buffer.
                    for row in 0..c.len() {
                        let _ = (c.dose_id.get(row), c.site_name.get(row), c.lot.get(row), c.doctor.get(row));
                    }
                    let _ = c.rows(0..c.len()).unwrap();
                }
            }
        }
    }

    #[test]
    fn a_view_outside_its_bytes_is_an_error() {
        let c = sample();
        let mut bytes = encoded(&c);
        // The long site name of row 0 points at offset 0 of site_name's bytes; find its view
        // and move the offset past the end.
        let TextParts::Views { views, .. } = c.site_name.clone().into_parts() else { panic!("views") };
        let view = views[0].to_le_bytes();
        let at = bytes.windows(16).position(|w| w == view).unwrap();
        bytes[at + 12] = 0xff;
        assert!(DoseColumns::decode(&bytes).unwrap_err().to_string().contains("outside"));
    }

    use super::super::TextParts;

    fn row_strategy() -> impl Strategy<Value = RowData> {
        (
            proptest::option::of(".{0,20}"),
            prop_oneof!["[a-z]{0,4}", Just("繰り返される長い会場の名前".to_string())],
            proptest::option::of(".{0,16}"),
            proptest::option::of(any::<i32>()),
            any::<u64>(),
            any::<bool>(),
        )
    }

    proptest! {
        #[test]
        fn columns_round_trip(rows in proptest::collection::vec(row_strategy(), 0..30)) {
            let c = columns_of(&rows);
            let bytes = encoded(&c);
            let (back, rest) = DoseColumns::decode(&bytes).unwrap();
            prop_assert_eq!(&back, &c);
            prop_assert!(rest.is_empty());
        }

        #[test]
        fn some_rows_are_those_rows_pushed(rows in proptest::collection::vec(row_strategy(), 0..30), a in 0usize..35, b in 0usize..35) {
            let (a, b) = (a.min(b), a.max(b));
            let c = columns_of(&rows);
            let expected = columns_of(&rows[a.min(rows.len())..b.min(rows.len())]);
            prop_assert_eq!(&c.rows(a..b).unwrap(), &expected);
            // Also from decoded columns.
            let (back, _) = DoseColumns::decode(&encoded(&c)).unwrap();
            prop_assert_eq!(&back.rows(a..b).unwrap(), &expected);
        }

        #[test]
        fn random_bytes_are_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), header: bool) {
            let mut b = if header { b"VRSC\x01\x01".to_vec() } else { Vec::new() };
            b.extend_from_slice(&bytes);
            let _ = DoseColumns::decode(&b);
        }
    }
}
