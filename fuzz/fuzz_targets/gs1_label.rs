//! GS1 element strings built from structured input (GTIN, expiry, lot, serial), written in
//! the forms scanners deliver: bracketed human-readable text, and raw data with the FNC1
//! separator as GS, `<GS>` or `]d2` symbology prefix.
//!
//! Property: every form reads back exactly the GTIN, expiry, lot and serial written.
#![no_main]

use arbitrary::Arbitrary;
use chrono::NaiveDate;
use libfuzzer_sys::fuzz_target;
use vrs_core::scan::label::{LabelSource, end_of_month, parse_vaccine_label};
use vrs_core::vaccine::Catalogue;

#[derive(Debug, Arbitrary)]
struct Label {
    gtin13: u64,
    /// Years since 2000, month, day (0: the month's last day, as GS1 writes it).
    year: u8,
    month: u8,
    day: u8,
    lot: Vec<u8>,
    serial: Option<Vec<u8>>,
    /// Which form: bracketed, raw with GS, raw with `<GS>` and a symbology identifier.
    form: u8,
    /// Expiry and lot order.
    lot_first: bool,
}

const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn alnum(bytes: &[u8], max: usize) -> String {
    bytes.iter().take(max).map(|b| char::from(ALNUM[usize::from(*b) % ALNUM.len()])).collect()
}

fn gtin(first13: u64) -> String {
    let first13 = format!("{:013}", first13 % 10_000_000_000_000);
    let sum: u32 = first13.bytes().rev().enumerate().map(|(i, d)| u32::from(d - b'0') * if i % 2 == 0 { 3 } else { 1 }).sum();
    format!("{first13}{}", (10 - sum % 10) % 10)
}

fuzz_target!(|l: Label| {
    let (y, m, d) = (u32::from(l.year % 100), u32::from(l.month % 12) + 1, u32::from(l.day % 32));
    let expiry = match d {
        0 => end_of_month(NaiveDate::from_ymd_opt(2000 + y as i32, m, 1).unwrap()),
        _ => match NaiveDate::from_ymd_opt(2000 + y as i32, m, d) {
            Some(date) => date,
            None => return,
        },
    };
    let lot = alnum(&l.lot, 20);
    if lot.is_empty() {
        return;
    }
    let serial = l.serial.as_deref().map(|s| alnum(s, 20)).filter(|s| !s.is_empty());
    let gtin = gtin(l.gtin13);
    let exp = format!("{y:02}{m:02}{d:02}");
    let text = match l.form % 3 {
        0 => {
            let mut t = format!("(01){gtin}");
            if l.lot_first {
                t += &format!("(10){lot}(17){exp}");
            } else {
                t += &format!("(17){exp}(10){lot}");
            }
            if let Some(s) = &serial {
                t += &format!("(21){s}");
            }
            t
        }
        form => {
            let gs = if form == 1 { "\u{1d}" } else { "<GS>" };
            let mut t = if form == 1 { format!("01{gtin}") } else { format!("]d201{gtin}") };
            if l.lot_first {
                t += &format!("10{lot}{gs}17{exp}");
            } else {
                t += &format!("17{exp}10{lot}");
            }
            if let Some(s) = &serial {
                t += &format!("{gs}21{s}");
            }
            t
        }
    };
    let label = parse_vaccine_label(&text, Catalogue::builtin(), None).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    assert_eq!(label.source, LabelSource::Gs1, "{text:?}");
    assert_eq!(label.gtin.as_deref(), Some(gtin.as_str()), "{text:?}");
    assert_eq!(label.lot, lot, "{text:?}");
    assert_eq!(label.expiry, Some(expiry), "{text:?}");
    assert_eq!(label.serial, serial, "{text:?}");
});
