//! HL7 v2.5.1 `VXU^V04` messages per the CDC immunization implementation guide:
//! MSH, PID, ORC, RXA (CVX and MVX codes where they exist, lot in RXA-15, manufacturer in
//! RXA-17, RXA-4 the same as RXA-3), RXR. Delimiters in names and free text are escaped (`\F\ \S\ \T\ \R\ \E\`).

use chrono::{DateTime, Utc};

use crate::clock::jst;
use crate::dose::DoseRecord;
use crate::resident::{Resident, Sex};
use crate::vaccine::Catalogue;

/// Escapes the HL7 delimiters `| ^ & ~ \` in a text value; line breaks become spaces.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\E\\"),
            '|' => out.push_str("\\F\\"),
            '^' => out.push_str("\\S\\"),
            '&' => out.push_str("\\T\\"),
            '~' => out.push_str("\\R\\"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// One `VXU^V04` message for a dose (its current version); segments end with `\r`.
/// The action code (RXA-21) is `A` for a new record, `U` for a corrected one and `D` for
/// a voided one. `sending_facility` is the exporting municipality.
pub fn vxu(dose: &DoseRecord, resident: Option<&Resident>, catalogue: &Catalogue, now: DateTime<Utc>) -> String {
    let det = dose.details();
    let product = catalogue.product(det.product.as_str());
    let ts = now.with_timezone(&jst()).format("%Y%m%d%H%M%S%z");
    let version = dose.current().version;
    let control: String = format!("{}", dose.id).chars().take(16).chain(format!("v{version}").chars()).take(20).collect();
    let mut msg = String::new();
    msg.push_str(&format!(
        "MSH|^~\\&|VRS|{owner}|||{ts}||VXU^V04^VXU_V04|{control}|P|2.5.1|||ER|AL|||||Z22^CDCPHINVS\r",
        owner = dose.owner(),
    ));
    match resident {
        Some(r) => {
            let sex = match r.sex {
                Sex::Male => "M",
                Sex::Female => "F",
                Sex::Unknown => "U",
            };
            let mut names = format!("{}^^^^^^L^I", escape(r.name.as_str()));
            if !r.name_kana.as_str().is_empty() {
                names.push_str(&format!("~{}^^^^^^L^P", escape(r.name_kana.as_str())));
            }
            let address = r.address.as_ref().map(|a| escape(a.as_str())).unwrap_or_default();
            msg.push_str(&format!(
                "PID|1||{addressee}^^^VRS{m}^MR~{voucher}^^^VRS{m}^VN||{names}||{birth}|{sex}|||{address}\r",
                addressee = r.person.addressee.as_str(),
                m = r.person.municipality,
                voucher = r.voucher.as_str(),
                birth = r.birth_date.format("%Y%m%d"),
            ));
        }
        None => {
            // Unmatched: the voucher is all that is known of the person.
            msg.push_str(&format!(
                "PID|1||{voucher}^^^VRS{m}^VN||UNKNOWN^^^^^^U||||\r",
                voucher = dose.voucher.number.as_str(),
                m = dose.voucher.municipality,
            ));
        }
    }
    msg.push_str(&format!("ORC|RE||{}^VRS\r", dose.id));
    let vaccine = match product.and_then(|p| p.cvx) {
        Some(cvx) => format!("{cvx:03}^{}^CVX", escape(product.map_or("", |p| p.name.as_str()))),
        None => format!("{}^{}^99VRS", escape(det.product.as_str()), escape(product.map_or("", |p| p.name.as_str()))),
    };
    let maker = match product.and_then(|p| p.mvx.as_deref()) {
        Some(mvx) => format!("{mvx}^{}^MVX", escape(&det.maker)),
        None => format!("^{}", escape(&det.maker)),
    };
    let action = if dose.is_voided() {
        "D"
    } else if version > 1 {
        "U"
    } else {
        "A"
    };
    // RXA-4 (end of administration) is required in v2.5.1: the same instant as RXA-3.
    msg.push_str(&format!(
        "RXA|0|{number}|{date}|{date}|{vaccine}|999|||00^New immunization record^NIP001|^{doctor}|^^^{site}||||{lot}||{maker}|||CP|{action}\r",
        number = det.dose_number,
        date = det.date_given.format("%Y%m%d"),
        doctor = escape(&det.doctor),
        site = escape(&det.site_name),
        lot = escape(&det.lot),
    ));
    // Every product of the catalogue is given intramuscularly.
    msg.push_str("RXR|C28161^Intramuscular^NCIT\r");
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiters_are_escaped() {
        assert_eq!(escape(r"a|b^c&d~e\f"), r"a\F\b\S\c\T\d\R\e\E\f");
        assert_eq!(escape("x\r\ny"), "x  y");
    }
}
