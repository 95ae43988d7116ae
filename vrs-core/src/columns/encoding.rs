//! Columns as bytes, for a store that keeps a read-side copy of them (the redb store's dose
//! column segments): every buffer little-endian, one after another, behind a versioned
//! header. Decoding is length checks and bulk copies; input that is not what
//! [`DoseColumns::encode`] wrote (truncated, corrupt, of another version) is an error,
//! never a panic.
//!
//! Layout (`n` = rows): magic `VRSC`, version (1 byte), kind (1 byte: doses), `n` (u32),
//! then each column in field order:
//! - text: layout (1 byte: 0 contiguous, 1 views), then `n + 1` offsets (i32) or `n` views
//!   (u128), the byte buffer (u32 length, bytes), then validity;
//! - date: `n` days (i32), then validity;
//! - numbers: `n` values of their width; flags: `n` bytes, each 0 or 1;
//! - validity: 0 (every row holds a value) or 1 followed by `n` flag bytes.

use std::ops::Range;

use super::{DateColumn, DoseColumns, SegmentReader, TextColumn, corrupt, put_len, put_words};
use crate::Result;

const MAGIC: &[u8; 4] = b"VRSC";
/// The layout version written; any other is refused (the store then rebuilds from rows).
/// Version 2: each text and date column's validity after its values, as resident
/// segments have it (the shared column encoding of `columns.rs`).
const VERSION: u8 = 2;
const KIND_DOSES: u8 = 1;

/// Appends `flags` as one byte each.
fn put_flags(out: &mut Vec<u8>, flags: &[bool]) {
    out.extend(flags.iter().map(|&f| u8::from(f)));
}

impl SegmentReader<'_> {
    /// `n` flags written by [`put_flags`].
    fn flags(&mut self, n: usize, what: &str) -> Result<Vec<bool>> {
        let bytes = self.take(n, what)?;
        if bytes.iter().any(|&b| b > 1) {
            return Err(corrupt(&format!("{what} holds a flag other than 0 or 1")));
        }
        Ok(bytes.iter().map(|&b| b == 1).collect())
    }
}

impl DoseColumns {
    /// Appends these columns' encoding (see the module docs) to `out`. Fails only when a
    /// buffer outgrew 4 GiB.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(KIND_DOSES);
        put_len(out, self.len())?;
        self.dose_id.encode(out)?;
        self.municipality.encode(out)?;
        self.voucher_number.encode(out)?;
        out.extend_from_slice(&self.ticket_kind);
        out.extend_from_slice(&self.dose_number);
        self.date_given.encode(out);
        put_words(out, &self.registered_at, i64::to_le_bytes);
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
        put_words(out, &self.version, u32::to_le_bytes);
        put_words(out, &self.updated_at, i64::to_le_bytes);
        put_words(out, &self.seq, u64::to_le_bytes);
        Ok(())
    }

    /// Reads columns written by [`encode`](Self::encode) from the start of `bytes`; returns
    /// them and the bytes after them. An error when `bytes` do not start with such an
    /// encoding (of this version), in full.
    pub fn decode(bytes: &[u8]) -> Result<(Self, &[u8])> {
        let mut r = SegmentReader(bytes);
        if r.take(4, "the header")? != MAGIC {
            return Err(corrupt("not a columns encoding"));
        }
        let version = r.byte("the header")?;
        if version != VERSION {
            return Err(corrupt(&format!("layout version {version}, this build reads {VERSION}")));
        }
        if r.byte("the header")? != KIND_DOSES {
            return Err(corrupt("not dose columns"));
        }
        let n = r.len("the header")?;
        let c = DoseColumns {
            dose_id: TextColumn::decode(&mut r, n, "dose_id")?,
            municipality: TextColumn::decode(&mut r, n, "municipality")?,
            voucher_number: TextColumn::decode(&mut r, n, "voucher_number")?,
            ticket_kind: r.take(n, "ticket_kind")?.to_vec(),
            dose_number: r.take(n, "dose_number")?.to_vec(),
            date_given: DateColumn::decode(&mut r, n, "date_given")?,
            registered_at: r.words(n, "registered_at", i64::from_le_bytes)?,
            registered_by: TextColumn::decode(&mut r, n, "registered_by")?,
            administering_municipality: TextColumn::decode(&mut r, n, "administering_municipality")?,
            site_id: TextColumn::decode(&mut r, n, "site_id")?,
            site_name: TextColumn::decode(&mut r, n, "site_name")?,
            doctor: TextColumn::decode(&mut r, n, "doctor")?,
            product: TextColumn::decode(&mut r, n, "product")?,
            maker: TextColumn::decode(&mut r, n, "maker")?,
            lot: TextColumn::decode(&mut r, n, "lot")?,
            lot_expiry: DateColumn::decode(&mut r, n, "lot_expiry")?,
            resident_municipality: TextColumn::decode(&mut r, n, "resident_municipality")?,
            addressee_number: TextColumn::decode(&mut r, n, "addressee_number")?,
            voided: r.flags(n, "voided")?,
            version: r.words(n, "version", u32::from_le_bytes)?,
            updated_at: r.words(n, "updated_at", i64::from_le_bytes)?,
            seq: r.words(n, "seq", u64::from_le_bytes)?,
        };
        Ok((c, r.0))
    }

    /// A copy of rows `range` (clamped to the rows there are), built as a scan that had
    /// pushed just those rows would have built it: for handing over stored columns in
    /// smaller batches.
    pub fn rows(&self, range: Range<usize>) -> Result<Self> {
        // Clamped: the columns are public, a caller may have made them of unequal lengths.
        let range = range.start.min(self.len())..range.end.min(self.len());
        let fixed = |v: &[u8]| v.get(range.clone()).map(<[u8]>::to_vec).unwrap_or_default();
        Ok(DoseColumns {
            dose_id: self.dose_id.slice(range.clone())?,
            municipality: self.municipality.slice(range.clone())?,
            voucher_number: self.voucher_number.slice(range.clone())?,
            ticket_kind: fixed(&self.ticket_kind),
            dose_number: fixed(&self.dose_number),
            date_given: self.date_given.slice(range.clone()),
            registered_at: self.registered_at.get(range.clone()).map(<[i64]>::to_vec).unwrap_or_default(),
            registered_by: self.registered_by.slice(range.clone())?,
            administering_municipality: self.administering_municipality.slice(range.clone())?,
            site_id: self.site_id.slice(range.clone())?,
            site_name: self.site_name.slice(range.clone())?,
            doctor: self.doctor.slice(range.clone())?,
            product: self.product.slice(range.clone())?,
            maker: self.maker.slice(range.clone())?,
            lot: self.lot.slice(range.clone())?,
            lot_expiry: self.lot_expiry.slice(range.clone()),
            resident_municipality: self.resident_municipality.slice(range.clone())?,
            addressee_number: self.addressee_number.slice(range.clone())?,
            voided: self.voided.get(range.clone()).map(<[bool]>::to_vec).unwrap_or_default(),
            version: self.version.get(range.clone()).map(<[u32]>::to_vec).unwrap_or_default(),
            updated_at: self.updated_at.get(range.clone()).map(<[i64]>::to_vec).unwrap_or_default(),
            seq: self.seq.get(range).map(<[u64]>::to_vec).unwrap_or_default(),
        })
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
