//! Dates as municipal files write them (ISO, slashes, YYYYMMDD, kanji, era dates). The first
//! four bytes also make a date of their own; the rest is text for `parse_date`.
//!
//! Properties: a date that parses formats in its era (kanji and letter forms) and in the
//! Gregorian forms, and each of those parses back to the same date; any date from the Meiji
//! era to 2099 does the same.
#![no_main]

use chrono::{Datelike, Days, NaiveDate};
use libfuzzer_sys::fuzz_target;
use vrs_core::era::{Era, format_era, format_era_letter, parse_date};

fn round_trips(date: NaiveDate) {
    let mut forms = vec![format_era(date), format_era_letter(date)];
    if (0..=9999).contains(&date.year()) {
        forms.push(date.format("%Y-%m-%d").to_string());
        forms.push(date.format("%Y/%m/%d").to_string());
        forms.push(date.format("%Y%m%d").to_string());
    }
    for text in forms {
        let back = parse_date(&text).unwrap_or_else(|e| panic!("{date} written {text:?} does not parse: {e}"));
        assert_eq!(back, date, "{text:?}");
    }
    if let Some(era) = Era::of(date) {
        assert!(era.contains(date));
        // Era years of three digits (令和100年, 2118, on) are written as Gregorian dates.
        let year = date.year() - era.gregorian_year(1) + 1;
        assert_eq!(format_era(date).starts_with(era.kanji()), year <= 99, "{date}");
    }
}

fuzz_target!(|data: &[u8]| {
    if let [a, b, c, d, ..] = data {
        // A day between 1868-01-25 (Meiji) and 2099-12-31.
        let meiji = NaiveDate::from_ymd_opt(1868, 1, 25).unwrap();
        let span = (NaiveDate::from_ymd_opt(2099, 12, 31).unwrap() - meiji).num_days() as u64 + 1;
        round_trips(meiji + Days::new(u64::from(u32::from_le_bytes([*a, *b, *c, *d])) % span));
    }
    let text = String::from_utf8_lossy(data.get(4..).unwrap_or_default());
    if let Ok(date) = parse_date(&text) {
        round_trips(date);
    }
});
