//! Vaccine label text as a scanner or camera gives it: GS1 element strings (bracketed or
//! raw, with any way of writing FNC1) and sticker text. The first two bytes choose the
//! dose date (or none); the rest is the label.
//!
//! Properties: a reading has a lot; a GS1 GTIN passes its check digit; the expired-lot
//! finding is there exactly when the dose date is after the expiry; a product named means
//! no other candidates and a maker; an implausible-lot finding only for a known product
//! whose lot fits none of its patterns.
#![no_main]

use chrono::{Days, NaiveDate};
use libfuzzer_sys::fuzz_target;
use vrs_core::finding::FindingKind;
use vrs_core::scan::label::{LabelSource, gtin_is_valid, parse_vaccine_label};
use vrs_core::vaccine::Catalogue;

fuzz_target!(|data: &[u8]| {
    let (day, text) = match data {
        [a, b, rest @ ..] => {
            let n = u16::from_le_bytes([*a, *b]);
            // 0: no dose date; else a day from 2020-06-01 on (about 180 years of them).
            let day = (n != 0).then(|| NaiveDate::from_ymd_opt(2020, 6, 1).unwrap() + Days::new(u64::from(n)));
            (day, String::from_utf8_lossy(rest))
        }
        _ => (None, String::from_utf8_lossy(data)),
    };
    let catalogue = Catalogue::builtin();
    let Ok(label) = parse_vaccine_label(&text, catalogue, day) else { return };
    assert!(!label.lot.is_empty());
    if let Some(g) = &label.gtin {
        assert_eq!(label.source, LabelSource::Gs1);
        assert!(gtin_is_valid(g), "{g}");
    }
    if label.source == LabelSource::Text {
        assert!(label.gtin.is_none() && label.serial.is_none());
    }
    let expired = label.findings.iter().filter(|f| f.kind == FindingKind::ExpiredLot).count();
    let should = matches!((day, label.expiry), (Some(d), Some(e)) if d > e);
    assert_eq!(expired, usize::from(should), "{label:?} on {day:?}");
    let implausible = label.findings.iter().filter(|f| f.kind == FindingKind::LotImplausible).count();
    match &label.product {
        Some(p) => {
            assert!(label.candidates.is_empty());
            let product = catalogue.product(p.as_str()).expect("a catalogue product");
            assert_eq!(label.maker.as_deref(), Some(product.maker.as_str()));
            assert_eq!(implausible, usize::from(!catalogue.lot_plausible(p, &label.lot)));
        }
        None => {
            assert_eq!(implausible, 0);
            assert!(label.candidates.len() != 1, "one candidate but no product: {label:?}");
        }
    }
    assert_eq!(label.findings.len(), expired + implausible);
});
