//! Resident uploads (CSV, UTF-8 or Shift_JIS, detected or told). The first byte chooses the
//! encoding told (auto, UTF-8, Shift_JIS); the rest is the file, read with bad rows skipped.
//!
//! Properties: the rows handed out are the rows counted valid; the good rows written back
//! as CSV (every column but the personal number, which is only kept as a hash) import again,
//! all of them, equal; and so does the same file encoded in Shift_JIS.
#![no_main]

use encoding_rs::SHIFT_JIS;
use libfuzzer_sys::fuzz_target;
use vrs_core::ids::MunicipalityCode;
use vrs_core::import::{ImportOptions, ImportReport, InputEncoding, ResidentCsvSource};
use vrs_core::resident::Resident;
use vrs_core::store::ResidentSource;

const HEADER: [&str; 12] = [
    "municipality_code",
    "addressee_number",
    "voucher_number",
    "name",
    "name_kana",
    "birth_date",
    "sex",
    "address",
    "previous_municipality_code",
    "previous_voucher_number",
    "status",
    "status_date",
];

/// Reads a whole upload; `None` when the file is refused before any row.
fn import(bytes: &[u8], encoding: InputEncoding, skip_invalid: bool) -> Option<(Vec<Resident>, ImportReport, bool)> {
    let mut options = ImportOptions::new(MunicipalityCode::parse("131016").unwrap());
    options.encoding = encoding;
    options.skip_invalid = skip_invalid;
    options.personal_number_secret = b"fuzz secret".to_vec();
    let mut source = ResidentCsvSource::new(bytes, options).ok()?;
    let mut all = Vec::new();
    loop {
        match source.next_batch(7) {
            Ok(Some(batch)) => all.extend(batch),
            Ok(None) => break,
            Err(_) => return None,
        }
    }
    let commit = source.may_commit();
    let report = (Box::new(source) as Box<dyn ResidentSource>).into_report();
    Some((all, report, commit))
}

fn date(d: Option<chrono::NaiveDate>) -> String {
    d.map(|d| d.format("%Y-%m-%d").to_string()).unwrap_or_default()
}

/// The residents as an upload in the English layout, as a municipal system would write them.
fn write_back(residents: &[Resident]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(HEADER).unwrap();
    for r in residents {
        let (pm, pv) = match &r.previous {
            Some(p) => (p.municipality.as_str().to_owned(), p.number.as_str().to_owned()),
            None => (String::new(), String::new()),
        };
        w.write_record([
            r.person.municipality.as_str(),
            r.person.addressee.as_str(),
            r.voucher.as_str(),
            r.name.as_str(),
            r.name_kana.as_str(),
            &date(Some(r.birth_date)),
            &r.sex.code().to_string(),
            r.address.as_ref().map_or("", |a| a.as_str()),
            &pm,
            &pv,
            r.status.as_str(),
            &date(r.status_date),
        ])
        .unwrap();
    }
    String::from_utf8(w.into_inner().unwrap()).unwrap()
}

fn reimport_equal(bytes: &[u8], encoding: InputEncoding, expected: &[Resident], written: &str) {
    let (again, report, commit) =
        import(bytes, encoding, false).unwrap_or_else(|| panic!("written back, the file is refused ({encoding:?}):\n{written}"));
    assert!(report.errors.is_empty(), "written back ({encoding:?}), rows are refused: {:?}\n{written}", report.errors);
    assert!(commit);
    assert_eq!(again.len(), expected.len());
    for (a, b) in again.iter().zip(expected) {
        assert!(a == b, "row differs after writing back ({encoding:?}):\n{a:?}\n{b:?}\n{written}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, file)) = data.split_first() else { return };
    let encoding = match mode % 3 {
        0 => InputEncoding::Auto,
        1 => InputEncoding::Utf8,
        _ => InputEncoding::ShiftJis,
    };
    let Some((residents, report, commit)) = import(file, encoding, true) else { return };
    assert_eq!(report.rows_valid as usize, residents.len(), "{report:?}");
    assert!(report.rows_valid <= report.rows_read);
    assert!(report.errors.iter().all(|e| e.line >= 1));
    if !commit || residents.is_empty() {
        return;
    }
    // The personal number is kept only as its hash: it cannot be written back.
    let expected: Vec<Resident> = residents.into_iter().map(|r| Resident { personal_number_hash: None, ..r }).collect();
    let written = write_back(&expected);
    reimport_equal(written.as_bytes(), InputEncoding::Utf8, &expected, &written);
    reimport_equal(written.as_bytes(), InputEncoding::Auto, &expected, &written);
    let (sjis, _, unmappable) = SHIFT_JIS.encode(&written);
    // Only text Shift_JIS carries both ways (some characters decode to another look-alike).
    if !unmappable && SHIFT_JIS.decode_without_bom_handling(&sjis).0 == written {
        reimport_equal(&sjis, InputEncoding::ShiftJis, &expected, &written);
    }
});
