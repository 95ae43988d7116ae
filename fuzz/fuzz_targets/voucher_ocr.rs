//! OCR/QR text of a voucher: `parse_voucher` on the first part of the input, and
//! `confirm_voucher` with the part after the first NUL as the second reading.
//!
//! Properties: a reading prints back as 18 digits that parse as an OCR line and read again
//! to the same line; its municipality is known and named; a repaired municipality is a
//! known code differing from the code read in exactly the one digit reported; confidence
//! follows the fixes; a confirmation agrees exactly when no shared digit differs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vrs_core::ids::{MunicipalityCode, OcrLine};
use vrs_core::scan::voucher::{Agreement, Confidence, SecondSource, VoucherReading, confirm_voucher, parse_voucher};

fn check_reading(r: &VoucherReading) {
    let digits = r.digits();
    assert_eq!(digits.len(), 18, "{digits:?}");
    assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{digits:?}");
    assert_eq!(OcrLine::parse(&digits).expect("printed digits parse as an OCR line"), r.line);
    let m = r.line.voucher.municipality;
    assert!(m.is_known(), "{m} is not a real municipality");
    assert_eq!(m.name(), Some(r.municipality_name));
    assert!(r.letter_fixes.len() <= 3);
    for fix in &r.letter_fixes {
        assert!((1..=18).contains(&fix.position));
        let printed = digits.as_bytes()[usize::from(fix.position) - 1];
        // A letter taken for a digit and then repaired: the repair starts from that digit.
        match &r.repair {
            Some(rep) if rep.position == fix.position => assert_eq!(rep.read, fix.digit, "{r:?}"),
            _ => assert_eq!(printed, b'0' + fix.digit, "{r:?}"),
        }
    }
    if let Some(rep) = &r.repair {
        assert!((3..=8).contains(&rep.position), "{rep:?}");
        let read = rep.read_code.as_bytes();
        let fixed = m.as_str().as_bytes();
        assert_eq!(read.len(), 6);
        let differ: Vec<usize> = (0..6).filter(|&i| read[i] != fixed[i]).collect();
        assert_eq!(differ, vec![usize::from(rep.position) - 3], "{rep:?} vs {m}");
        assert_eq!(read[differ[0]], b'0' + rep.read);
        assert_eq!(fixed[differ[0]], b'0' + rep.repaired);
        // What was read was not itself a real code: else there was nothing to repair.
        assert!(MunicipalityCode::parse(&rep.read_code).map_or(true, |c| !c.is_known()), "{rep:?}");
    }
    for alt in &r.alternatives {
        assert!(alt.code.is_known() && alt.code != m);
        let differ = alt.code.as_str().bytes().zip(m.as_str().bytes()).filter(|(a, b)| a != b).count();
        assert_eq!(differ, 1, "alternative {} to {m}", alt.code);
    }
    let expected = if r.is_clean() { Confidence::Probable } else { Confidence::Doubtful };
    assert_eq!(r.confidence, expected, "{r:?}");
    // The printed digits read again give the same line (a repaired code is now real).
    let again = parse_voucher(&digits).expect("printed digits read again");
    assert_eq!(again.line, r.line);
    assert!(again.letter_fixes.is_empty() && again.repair.is_none());
}

fuzz_target!(|data: &[u8]| {
    let (first, second) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[data.len()..]),
    };
    let (first, second) = (String::from_utf8_lossy(first), String::from_utf8_lossy(second));
    if let Ok(r) = parse_voucher(&first) {
        check_reading(&r);
    }
    if let Ok(c) = confirm_voucher(&first, &second) {
        check_reading(&c.reading);
        let line = c.reading.digits();
        match c.agreement {
            Agreement::Agree | Agreement::Disagree => {
                let second = c.second_digits.as_deref().expect("second digits");
                let offset = match c.second_source {
                    Some(SecondSource::Barcode) => 8,
                    Some(SecondSource::QrCode) => 0,
                    None => panic!("agreement without a second source"),
                };
                assert_eq!(second.len(), 18 - offset);
                let differ: Vec<u8> = line.as_bytes()[offset..]
                    .iter()
                    .zip(second.as_bytes())
                    .enumerate()
                    .filter(|(_, (a, b))| a != b)
                    .map(|(i, _)| (offset + i + 1) as u8)
                    .collect();
                assert_eq!(c.mismatches, differ);
                assert_eq!(c.agreement == Agreement::Agree, differ.is_empty());
                if c.agreement == Agreement::Disagree {
                    assert_eq!(c.confidence, Confidence::Contradicted);
                }
            }
            Agreement::OnlyOneReading => {
                assert!(c.mismatches.is_empty());
                assert_ne!(c.confidence, Confidence::Confirmed);
            }
        }
        if c.confidence == Confidence::Confirmed {
            assert_eq!(c.agreement, Agreement::Agree);
        }
    }
});
