//! Domain values to and from table rows: residents as columns (and as lines of COPY
//! text), the other records as JSONB beside their key columns.

use std::io::Write as _;

use chrono::NaiveDate;
use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use vrs_core::dose::DoseRecord;
use vrs_core::finding::FindingKind;
use vrs_core::ids::{AddresseeNumber, MunicipalityCode, PersonRef, PersonalNumberHash, VoucherNumber, VoucherRef};
use vrs_core::resident::{PersonalText, Resident, ResidentStatus, Sex};
use vrs_core::stats::AgeBand;
use vrs_core::{Error, Result};

use crate::error::{map, storage_message};

/// The columns of `residents` that make a [`Resident`], in the order [`resident`] reads them.
pub(crate) const RESIDENT_COLUMNS: &str = "municipality, addressee, voucher, name, name_kana, birth_date, sex, address, \
     previous_municipality, previous_voucher, personal_number_hash, status, status_date";

/// The staging table's columns, in the order [`copy_resident`] writes them.
pub(crate) const STAGING_COLUMNS: &str = "ord, municipality, addressee_len, addressee, voucher, name, name_kana, birth_date, sex, \
     address, previous_municipality, previous_voucher, personal_number_hash, status, status_date";

/// Every age band, in the order of its `smallint` code (the enum's order).
const AGE_BANDS: [AgeBand; 13] = [
    AgeBand::Age0To4,
    AgeBand::Age5To11,
    AgeBand::Age12To19,
    AgeBand::Age20To29,
    AgeBand::Age30To39,
    AgeBand::Age40To49,
    AgeBand::Age50To59,
    AgeBand::Age60To64,
    AgeBand::Age65To69,
    AgeBand::Age70To79,
    AgeBand::Age80To89,
    AgeBand::Age90Plus,
    AgeBand::Unknown,
];

/// An age band's code.
pub(crate) fn age_band_code(band: AgeBand) -> i16 {
    AGE_BANDS.iter().position(|b| *b == band).unwrap_or(AGE_BANDS.len() - 1) as i16
}

/// The age band of a code.
pub(crate) fn age_band(code: i16) -> Result<AgeBand> {
    usize::try_from(code).ok().and_then(|i| AGE_BANDS.get(i).copied()).ok_or_else(|| bad("age band", code))
}

/// A finding kind's code: its position in [`FindingKind::ALL`].
pub(crate) fn kind_code(kind: FindingKind) -> i16 {
    FindingKind::ALL.iter().position(|k| *k == kind).unwrap_or(usize::from(u8::MAX)) as i16
}

/// A sex's code: 1, 2 or 9.
pub(crate) fn sex_code(sex: Sex) -> i16 {
    i16::from(sex.code())
}

/// The sex of a code.
pub(crate) fn sex(code: i16) -> Result<Sex> {
    match code {
        1 => Ok(Sex::Male),
        2 => Ok(Sex::Female),
        9 => Ok(Sex::Unknown),
        other => Err(bad("sex", other)),
    }
}

fn status_code(status: ResidentStatus) -> u8 {
    match status {
        ResidentStatus::Active => 0,
        ResidentStatus::MovedOut => 1,
        ResidentStatus::Deceased => 2,
    }
}

fn status(code: i16) -> Result<ResidentStatus> {
    match code {
        0 => Ok(ResidentStatus::Active),
        1 => Ok(ResidentStatus::MovedOut),
        2 => Ok(ResidentStatus::Deceased),
        other => Err(bad("status", other)),
    }
}

fn bad(what: &str, value: impl std::fmt::Display) -> Error {
    storage_message(format!("a stored {what} does not decode: {value}"))
}

/// The municipality code as the `int4` key of its advisory locks.
pub(crate) fn municipality_number(m: &MunicipalityCode) -> i32 {
    m.as_str().parse().unwrap_or(0)
}

/// The length of an addressee number, its sort key's first part.
pub(crate) fn addressee_len(a: &AddresseeNumber) -> i16 {
    a.as_str().len() as i16
}

/// A column of a row, as a storage error when it does not decode.
pub(crate) fn col<'r, T>(row: &'r PgRow, name: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(name).map_err(|e| map("reading a stored row", e))
}

/// A JSONB record column, decoded.
pub(crate) fn record<T: DeserializeOwned>(row: &PgRow, name: &str) -> Result<T> {
    let Json(value) = col::<Json<T>>(row, name)?;
    Ok(value)
}

/// A dose row (`record`, `seq`): the record with the sequence number of its last write.
pub(crate) fn dose(row: &PgRow) -> Result<DoseRecord> {
    let mut d: DoseRecord = record(row, "record")?;
    let seq: i64 = col(row, "seq")?;
    d.seq = u64::try_from(seq).map_err(|_| bad("sequence number", seq))?;
    Ok(d)
}

fn parsed<T>(what: &str, r: Result<T>) -> Result<T> {
    r.map_err(|e| storage_message(format!("a stored {what} does not parse: {e}")))
}

/// A resident row ([`RESIDENT_COLUMNS`]).
pub(crate) fn resident(row: &PgRow) -> Result<Resident> {
    let municipality = parsed("municipality code", MunicipalityCode::parse(&col::<String>(row, "municipality")?))?;
    let addressee = parsed("addressee number", AddresseeNumber::parse(&col::<String>(row, "addressee")?))?;
    let voucher = parsed("voucher number", VoucherNumber::parse(&col::<String>(row, "voucher")?))?;
    let previous = match (col::<Option<String>>(row, "previous_municipality")?, col::<Option<String>>(row, "previous_voucher")?) {
        (Some(m), Some(v)) => Some(VoucherRef {
            municipality: parsed("previous municipality code", MunicipalityCode::parse(&m))?,
            number: parsed("previous voucher number", VoucherNumber::parse(&v))?,
        }),
        _ => None,
    };
    let personal_number_hash = match col::<Option<Vec<u8>>>(row, "personal_number_hash")? {
        Some(bytes) => {
            Some(PersonalNumberHash(<[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| bad("personal number hash length", bytes.len()))?))
        }
        None => None,
    };
    Ok(Resident {
        person: PersonRef { municipality, addressee },
        voucher,
        name: PersonalText(col(row, "name")?),
        name_kana: PersonalText(col(row, "name_kana")?),
        birth_date: col(row, "birth_date")?,
        sex: sex(col(row, "sex")?)?,
        address: col::<Option<String>>(row, "address")?.map(PersonalText),
        previous,
        personal_number_hash,
        status: status(col(row, "status")?)?,
        status_date: col(row, "status_date")?,
    })
}

/// Refuses text PostgreSQL cannot store: a NUL character. The core's parsers refuse it
/// before it gets here; this is the store's own last check, so that a resident built in
/// code fails as clearly as a bad upload instead of as a server error.
pub(crate) fn storable(field: &'static str, personal: bool, text: &str) -> Result<()> {
    if text.contains('\0') {
        let value = if personal { "(redacted)".to_owned() } else { text.replace('\0', "\\0").chars().take(64).collect() };
        return Err(Error::Invalid { field, value, reason: "contains a NUL byte, which PostgreSQL text cannot hold".into() });
    }
    Ok(())
}

/// Appends `text` to a line of COPY text, escaping what the format requires.
fn copy_text(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    if !bytes.iter().any(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r')) {
        out.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

const NULL: &[u8] = b"\\N";

fn copy_date(out: &mut Vec<u8>, d: NaiveDate) {
    // `write!` into a Vec cannot fail.
    let _ = write!(out, "{}", d.format("%Y-%m-%d"));
}

/// Appends one resident as a line of COPY text in [`STAGING_COLUMNS`] order; refuses
/// text with a NUL character.
pub(crate) fn copy_resident(out: &mut Vec<u8>, ord: i64, r: &Resident) -> Result<()> {
    storable("name", true, r.name.as_str())?;
    storable("name_kana", true, r.name_kana.as_str())?;
    if let Some(a) = &r.address {
        storable("address", true, a.as_str())?;
    }
    let _ = write!(out, "{ord}\t{}\t{}\t", r.person.municipality, addressee_len(&r.person.addressee));
    out.extend_from_slice(r.person.addressee.as_str().as_bytes());
    out.push(b'\t');
    out.extend_from_slice(r.voucher.as_str().as_bytes());
    out.push(b'\t');
    copy_text(out, r.name.as_str());
    out.push(b'\t');
    copy_text(out, r.name_kana.as_str());
    out.push(b'\t');
    copy_date(out, r.birth_date);
    let _ = write!(out, "\t{}\t", sex_code(r.sex));
    match &r.address {
        Some(a) => copy_text(out, a.as_str()),
        None => out.extend_from_slice(NULL),
    }
    out.push(b'\t');
    match &r.previous {
        Some(p) => {
            out.extend_from_slice(p.municipality.as_str().as_bytes());
            out.push(b'\t');
            out.extend_from_slice(p.number.as_str().as_bytes());
        }
        None => {
            out.extend_from_slice(NULL);
            out.push(b'\t');
            out.extend_from_slice(NULL);
        }
    }
    out.push(b'\t');
    match &r.personal_number_hash {
        Some(h) => {
            out.extend_from_slice(b"\\\\x");
            for b in h.0 {
                let _ = write!(out, "{b:02x}");
            }
        }
        None => out.extend_from_slice(NULL),
    }
    let _ = write!(out, "\t{}\t", status_code(r.status));
    match r.status_date {
        Some(d) => copy_date(out, d),
        None => out.extend_from_slice(NULL),
    }
    out.push(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_the_format_needs() {
        let mut out = Vec::new();
        copy_text(&mut out, "a\\b\tc\nd\re\\.");
        assert_eq!(out, b"a\\\\b\\tc\\nd\\re\\\\.");
        let mut plain = Vec::new();
        copy_text(&mut plain, "髙橋 𠮷子");
        assert_eq!(plain, "髙橋 𠮷子".as_bytes());
    }

    #[test]
    fn codes_round_trip() {
        for band in AGE_BANDS {
            assert_eq!(age_band(age_band_code(band)).ok(), Some(band));
        }
        for s in [Sex::Male, Sex::Female, Sex::Unknown] {
            assert_eq!(sex(sex_code(s)).ok(), Some(s));
        }
        for st in [ResidentStatus::Active, ResidentStatus::MovedOut, ResidentStatus::Deceased] {
            assert_eq!(status(i16::from(status_code(st))).ok(), Some(st));
        }
        let codes: std::collections::HashSet<i16> = FindingKind::ALL.iter().map(|k| kind_code(*k)).collect();
        assert_eq!(codes.len(), FindingKind::ALL.len());
    }

    #[test]
    fn nul_is_refused_and_personal_text_redacted() {
        match storable("name", true, "山本\0") {
            Err(Error::Invalid { field, value, .. }) => {
                assert_eq!(field, "name");
                assert_eq!(value, "(redacted)");
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
        assert!(storable("doctor", false, "佐藤").is_ok());
    }
}
