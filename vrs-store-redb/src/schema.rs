//! Every table of the store, declared once, and the byte layouts of their keys.
//!
//! Keys are built by hand so that they sort the way the store scans them. Every key that
//! belongs to a municipality starts with its six ASCII digits, so the layout could be
//! partitioned by municipality. Values are postcard-encoded domain types.
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `residents` | m(6) · addressee | [`Resident`] |
//! | `resident_columns` | m(6) · segment number(4, big-endian) | the import count it was built at (8) · [`ResidentColumns`] segments |
//! | `vouchers` | m(6) · voucher(10) | addressee (length byte · digits) |
//! | `previous_vouchers` | prev m(6) · prev voucher(10) · m(6) · addressee | () |
//! | `moved_in_vouchers` | m(6) · addressee | voucher(10) · prev m(6) · prev voucher(10) |
//! | `doses` | m(6) · voucher(10) · dose id(16) | [`DoseRecord`] |
//! | `doses` (slots) | m(6) · voucher(10) · dose number(1) | dose id(16) |
//! | `dose_ids` | dose id(16) | m(6) · voucher(10) |
//! | `doses_by_seq` | m(6) · seq(8, big-endian) | `doses` key(32) |
//! | `dose_segments` | the segment's first `doses` key (from m(6)) | a read cache of its doses as columns (see `ops::columns`) |
//! | `unmatched` | m(6) · dose id(16) | () |
//! | `doses_by_site` | site id length(1) · site id · JST date(4) · seq(8, big-endian) · dose id(16) | () |
//! | `findings` | dose id(16) · kind(1) | [`Finding`] |
//! | `findings_by_municipality` | m(6) · open flag(1: 0 open, 1 closed) · dose id(16) · kind(1) | () |
//! | `accounts` | account id | [`TabletAccount`] |
//! | `accounts_by_municipality` | m(6) · account id | () |
//! | `account_secrets` | account id | [`SecretHash`] (the Argon2id PHC string, never the secret) |
//! | `counters` | m(6) · postcard([`StatsKey`]) | count (i64) |
//! | `audit` | m(6) · seq(8, big-endian) | [`AuditEvent`] |
//! | `meta` | name | u64 |
//!
//! An addressee is written as one length byte then its digits, so that within a
//! municipality shorter (smaller) numbers sort first and no number is a prefix of another.
//!
//! Doses are stored in voucher order, so that a municipality's ledger and a person's
//! doses are read as ranges of neighbouring pages; `dose_ids` finds a dose by its id.
//! The slots (which dose holds each dose number of a voucher, the guard against racing
//! registrations) live in the `doses` table beside that voucher's doses, told apart by
//! their shorter key ([`is_dose_key`]): a registration then writes the page it writes its
//! dose to, not one more page of a table of its own (layout version 4).
//!
//! `moved_in_vouchers` lists a municipality's moved-in residents with the vouchers a ledger
//! export looks up for them (the one held here, the previous one), so that the export reads
//! one short range instead of getting and decoding each resident (layout version 6: it
//! replaced `moved_in`, whose value was empty; opening a version 4 or 5 file builds it from
//! the residents).
//!
//! `resident_columns` is a read-side cache of `residents` for reading a municipality's
//! residents as columns (the Python bindings' Arrow tables): its residents in `residents`
//! key order, decoded with length checks and bulk copies instead of a decode per resident.
//! Residents change only through an import, which counts itself per municipality in
//! `meta`; a column read finding no segments built at the current count decodes the rows
//! and then writes the municipality's segments in one transaction (see `ops::columns`).
//!
//! A site's doses of a day are kept in the order they were written (the dose's sequence
//! number before its id), so that a batch of registrations appends to the day's last page
//! instead of dirtying every page of the day at random, as id order did (layout version 5:
//! opening a version 4 file rebuilds `doses_by_site`).
//!
//! [`Resident`]: vrs_core::resident::Resident
//! [`ResidentColumns`]: vrs_core::columns::ResidentColumns
//! [`DoseRecord`]: vrs_core::dose::DoseRecord
//! [`Finding`]: vrs_core::finding::Finding
//! [`TabletAccount`]: vrs_core::access::TabletAccount
//! [`SecretHash`]: vrs_core::credentials::SecretHash
//! [`StatsKey`]: vrs_core::stats::StatsKey
//! [`AuditEvent`]: vrs_core::store::AuditEvent

use chrono::{Datelike, NaiveDate};
use redb::TableDefinition;
use vrs_core::finding::FindingKind;
use vrs_core::ids::{AddresseeNumber, DoseId, MunicipalityCode, PersonRef, SiteId, VoucherNumber, VoucherRef};
use vrs_core::store::MovedIn;

/// Byte-ordered keys of any length.
pub(crate) type Bytes = &'static [u8];

pub(crate) const RESIDENTS: TableDefinition<Bytes, Bytes> = TableDefinition::new("residents");
pub(crate) const RESIDENT_COLUMNS: TableDefinition<Bytes, Bytes> = TableDefinition::new("resident_columns");
pub(crate) const VOUCHERS: TableDefinition<Bytes, Bytes> = TableDefinition::new("vouchers");
pub(crate) const PREVIOUS_VOUCHERS: TableDefinition<Bytes, ()> = TableDefinition::new("previous_vouchers");
pub(crate) const MOVED_IN: TableDefinition<Bytes, &[u8; MOVED_IN_VALUE]> = TableDefinition::new("moved_in_vouchers");
/// The moved-in index of layouts 4 and 5 (keys only), which the upgrade to 6 replaces.
pub(crate) const OLD_MOVED_IN: TableDefinition<Bytes, ()> = TableDefinition::new("moved_in");
pub(crate) const DOSES: TableDefinition<Bytes, Bytes> = TableDefinition::new("doses");
pub(crate) const DOSE_IDS: TableDefinition<&[u8; 16], &[u8; VOUCHER_KEY]> = TableDefinition::new("dose_ids");
pub(crate) const DOSES_BY_SEQ: TableDefinition<Bytes, &[u8; DOSE_KEY]> = TableDefinition::new("doses_by_seq");
/// A read-side cache of the dose columns, rebuilt by the column scan (see `ops::columns`).
pub(crate) const DOSE_SEGMENTS: TableDefinition<Bytes, Bytes> = TableDefinition::new("dose_segments");
pub(crate) const UNMATCHED: TableDefinition<Bytes, ()> = TableDefinition::new("unmatched");
pub(crate) const DOSES_BY_SITE: TableDefinition<Bytes, ()> = TableDefinition::new("doses_by_site");
pub(crate) const FINDINGS: TableDefinition<Bytes, Bytes> = TableDefinition::new("findings");
pub(crate) const FINDINGS_BY_MUNICIPALITY: TableDefinition<Bytes, ()> = TableDefinition::new("findings_by_municipality");
pub(crate) const ACCOUNTS: TableDefinition<&str, Bytes> = TableDefinition::new("accounts");
pub(crate) const ACCOUNTS_BY_MUNICIPALITY: TableDefinition<Bytes, ()> = TableDefinition::new("accounts_by_municipality");
pub(crate) const ACCOUNT_SECRETS: TableDefinition<&str, Bytes> = TableDefinition::new("account_secrets");
pub(crate) const COUNTERS: TableDefinition<Bytes, i64> = TableDefinition::new("counters");
pub(crate) const AUDIT: TableDefinition<Bytes, Bytes> = TableDefinition::new("audit");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// `meta` entry: the layout version of this file.
pub(crate) const META_SCHEMA: &str = "schema";
/// `meta` entry: the last change sequence number given to a dose record.
pub(crate) const META_DOSE_SEQ: &str = "seq";
/// `meta` entry: how many times a stored dose moved to another voucher (which no
/// `doses_by_seq` entry of the range it left shows): a dose column segment built at another
/// count is stale.
pub(crate) const META_DOSE_MOVES: &str = "dose_moves";
/// `meta` entry: the last sequence number given to an audit event.
pub(crate) const META_AUDIT_SEQ: &str = "audit_seq";
/// The layout version written by this code.
pub(crate) const SCHEMA_VERSION: u64 = 6;
/// The oldest layout this code upgrades when it opens it: version 4, whose `doses_by_site`
/// keys had no sequence number; versions 4 and 5 kept the moved-in index without values.
pub(crate) const UPGRADABLE_SCHEMA_VERSION: u64 = 4;

/// Most residents per batch of a `resident_columns` segment: a few hundred KiB each, so
/// that several fill a segment value of [`RESIDENT_SEGMENT_BYTES`].
pub(crate) const RESIDENT_SEGMENT_ROWS: usize = 1 << 13;
/// Size a `resident_columns` value is kept under: redb stores a value larger than a page
/// in a run of pages a power of two long, so a value of 4.1 MiB would take 8; kept a little
/// below 4 MiB, values fill their pages. (The 1M-resident Python bench store: 64k-resident
/// values of ~9 MiB grew its blocks on disk by 194 MB; cut at this size, by 160 MB.)
pub(crate) const RESIDENT_SEGMENT_BYTES: usize = (4 << 20) - (64 << 10);

/// Length of a municipality code in a key.
pub(crate) const M: usize = 6;
/// Length of a `vouchers` key: municipality and voucher number.
pub(crate) const VOUCHER_KEY: usize = M + 10;
/// Length of a `moved_in_vouchers` value: the voucher number held here, the previous voucher key.
pub(crate) const MOVED_IN_VALUE: usize = 10 + VOUCHER_KEY;
/// Length of a `doses` key: voucher key and dose id.
pub(crate) const DOSE_KEY: usize = VOUCHER_KEY + 16;
/// Length of a slot's key in `doses`: voucher key and dose number.
pub(crate) const SLOT_KEY: usize = VOUCHER_KEY + 1;
/// An encoded addressee: one length byte and at most 15 digits.
pub(crate) type Addressee = [u8; 16];

/// The six ASCII digits of a municipality code.
pub(crate) fn muni(m: &MunicipalityCode) -> [u8; M] {
    let mut b = [0u8; M];
    b.copy_from_slice(m.as_str().as_bytes());
    b
}

/// A municipality and a voucher number: the `vouchers` key, and the prefix of every
/// per-voucher key.
pub(crate) fn voucher_key(v: &VoucherRef) -> [u8; VOUCHER_KEY] {
    let mut b = [0u8; VOUCHER_KEY];
    b[..M].copy_from_slice(v.municipality.as_str().as_bytes());
    b[M..].copy_from_slice(v.number.as_str().as_bytes());
    b
}

/// An addressee number as a length byte followed by its digits, padded with zeros to 16
/// bytes; the meaningful part is `[..1 + len]` (see [`addressee_bytes`]).
pub(crate) fn addressee(a: &AddresseeNumber) -> Addressee {
    let digits = a.as_str().as_bytes();
    let n = digits.len().min(15);
    let mut b = [0u8; 16];
    b[0] = n as u8;
    b[1..1 + n].copy_from_slice(&digits[..n]);
    b
}

/// The meaningful bytes of an encoded addressee.
pub(crate) fn addressee_bytes(a: &Addressee) -> &[u8] {
    let n = usize::from(a[0]).min(15);
    &a[..1 + n]
}

/// The `residents` (and `moved_in`) key of a person.
pub(crate) fn person_key(p: &PersonRef) -> Vec<u8> {
    let a = addressee(&p.addressee);
    let mut k = Vec::with_capacity(M + 16);
    k.extend_from_slice(&muni(&p.municipality));
    k.extend_from_slice(addressee_bytes(&a));
    k
}

/// The `moved_in_vouchers` value of a resident who moved in: the voucher they hold here
/// and their previous one.
pub(crate) fn moved_in_value(voucher: &VoucherNumber, previous: &VoucherRef) -> [u8; MOVED_IN_VALUE] {
    let mut b = [0u8; MOVED_IN_VALUE];
    b[..10].copy_from_slice(voucher.as_str().as_bytes());
    b[10..].copy_from_slice(&voucher_key(previous));
    b
}

/// A `moved_in_vouchers` entry read back.
pub(crate) fn moved_in_entry(key: &[u8], value: &[u8; MOVED_IN_VALUE]) -> vrs_core::Result<MovedIn> {
    let bad = || vrs_core::Error::Storage { message: "a moved-in index entry does not decode".into(), source: None };
    fn text(b: &[u8]) -> vrs_core::Result<&str> {
        std::str::from_utf8(b).map_err(|e| vrs_core::Error::storage("a moved-in index entry is not text", e))
    }
    let (m, a) = key.split_at_checked(M).ok_or_else(bad)?;
    let digits = a.get(1..1 + usize::from(*a.first().ok_or_else(bad)?)).ok_or_else(bad)?;
    let parsed = (|| {
        let municipality = MunicipalityCode::parse(text(m)?)?;
        Ok::<_, vrs_core::Error>(MovedIn {
            person: PersonRef { municipality, addressee: AddresseeNumber::parse(text(digits)?)? },
            voucher: VoucherNumber::parse(text(&value[..10])?)?,
            previous: Some(VoucherRef {
                municipality: MunicipalityCode::parse(text(&value[10..10 + M])?)?,
                number: VoucherNumber::parse(text(&value[10 + M..])?)?,
            }),
        })
    })();
    parsed.map_err(|e| vrs_core::Error::storage("decoding a moved-in index entry", e))
}

/// The `previous_vouchers` key: the previous voucher, then the person who names it.
pub(crate) fn previous_key(previous: &VoucherRef, person_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(VOUCHER_KEY + person_key.len());
    k.extend_from_slice(&voucher_key(previous));
    k.extend_from_slice(person_key);
    k
}

/// The `doses` key: the voucher (whose municipality owns the dose), then the dose id.
pub(crate) fn dose_key(voucher: &[u8; VOUCHER_KEY], id: &[u8; 16]) -> [u8; DOSE_KEY] {
    let mut k = [0u8; DOSE_KEY];
    k[..VOUCHER_KEY].copy_from_slice(voucher);
    k[VOUCHER_KEY..].copy_from_slice(id);
    k
}

/// A municipality followed by a big-endian sequence number (`doses_by_seq`, `audit`).
pub(crate) fn seq_key(m: &MunicipalityCode, seq: u64) -> [u8; M + 8] {
    let mut k = [0u8; M + 8];
    k[..M].copy_from_slice(m.as_str().as_bytes());
    k[M..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The `unmatched` key.
pub(crate) fn unmatched_key(m: &MunicipalityCode, id: &DoseId) -> [u8; M + 16] {
    let mut k = [0u8; M + 16];
    k[..M].copy_from_slice(m.as_str().as_bytes());
    k[M..].copy_from_slice(id.as_bytes());
    k
}

/// A date as four bytes that sort in date order: year (u16, big-endian), month, day.
fn date_bytes(d: NaiveDate) -> [u8; 4] {
    let y = u16::try_from(d.year()).unwrap_or(0).to_be_bytes();
    [y[0], y[1], d.month() as u8, d.day() as u8]
}

/// The prefix of `doses_by_site` keys of one site on one JST day.
pub(crate) fn site_day_prefix(site: &SiteId, day: NaiveDate) -> Vec<u8> {
    let s = site.as_str().as_bytes();
    let n = s.len().min(255);
    let mut k = Vec::with_capacity(1 + n + 4 + 16);
    k.push(n as u8);
    k.extend_from_slice(&s[..n]);
    k.extend_from_slice(&date_bytes(day));
    k
}

/// The `doses_by_site` key: the site's day, then the dose's sequence number (the order
/// the doses were written in) and its id.
pub(crate) fn site_key(site: &SiteId, day: NaiveDate, seq: u64, id: &DoseId) -> Vec<u8> {
    let mut k = site_day_prefix(site, day);
    k.extend_from_slice(&seq.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

/// Whether a `doses` key is a dose's (the others are slots).
pub(crate) fn is_dose_key(key: &[u8]) -> bool {
    key.len() == DOSE_KEY
}

/// A slot's key in `doses`.
pub(crate) fn slot_key(v: &VoucherRef, dose_number: u8) -> [u8; SLOT_KEY] {
    let mut k = [0u8; SLOT_KEY];
    k[..VOUCHER_KEY].copy_from_slice(&voucher_key(v));
    k[VOUCHER_KEY] = dose_number;
    k
}

/// A finding kind as one byte: its position in [`FindingKind::ALL`].
fn kind_byte(kind: FindingKind) -> u8 {
    FindingKind::ALL.iter().position(|k| *k == kind).unwrap_or(usize::from(u8::MAX)) as u8
}

/// The `findings` key.
pub(crate) fn finding_key(id: &DoseId, kind: FindingKind) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[..16].copy_from_slice(id.as_bytes());
    k[16] = kind_byte(kind);
    k
}

/// The open flag of `findings_by_municipality`: open findings sort first.
pub(crate) fn open_flag(open: bool) -> u8 {
    if open { 0 } else { 1 }
}

/// The `findings_by_municipality` key.
pub(crate) fn finding_index_key(m: &MunicipalityCode, open: bool, id: &DoseId, kind: FindingKind) -> [u8; M + 1 + 17] {
    let mut k = [0u8; M + 1 + 17];
    k[..M].copy_from_slice(m.as_str().as_bytes());
    k[M] = open_flag(open);
    k[M + 1..].copy_from_slice(&finding_key(id, kind));
    k
}

/// The `accounts_by_municipality` key.
pub(crate) fn account_index_key(m: &MunicipalityCode, account: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(M + account.len());
    k.extend_from_slice(&muni(m));
    k.extend_from_slice(account.as_bytes());
    k
}

/// The `resident_columns` key of segment `n` of municipality `m` (six ASCII digits).
pub(crate) fn segment_key(m: &[u8; M], n: u32) -> [u8; M + 4] {
    let mut k = [0u8; M + 4];
    k[..M].copy_from_slice(m);
    k[M..].copy_from_slice(&n.to_be_bytes());
    k
}

/// The smallest key greater than every key starting with `prefix`, or `None` when there
/// is none (the prefix is all `0xff`).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addressees_sort_by_length_then_digits() {
        let m = MunicipalityCode::parse("131016").unwrap();
        let key = |a: &str| person_key(&PersonRef { municipality: m, addressee: AddresseeNumber::parse(a).unwrap() });
        assert!(key("9") < key("10"));
        assert!(key("10") < key("11"));
        assert!(key("99") < key("100"));
        assert_eq!(key("123").len(), 6 + 1 + 3);
    }

    #[test]
    fn dates_sort_in_order() {
        let d = |y, m, dd| date_bytes(NaiveDate::from_ymd_opt(y, m, dd).unwrap());
        assert!(d(2021, 6, 1) < d(2021, 6, 2));
        assert!(d(2021, 12, 31) < d(2022, 1, 1));
    }

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"13"), Some(b"14".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff]), None);
    }

    #[test]
    fn every_finding_kind_has_its_own_byte() {
        let bytes: std::collections::HashSet<u8> = FindingKind::ALL.iter().map(|k| kind_byte(*k)).collect();
        assert_eq!(bytes.len(), FindingKind::ALL.len());
    }
}
