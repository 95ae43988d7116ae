//! Reading a vaccine vial's label: a GS1 element string (the DataMatrix or DataBar symbol a
//! scanner decodes) or the maker's sticker text (ロット番号 / 有効期限 as camera OCR reads it).
//!
//! GS1: the application identifiers (AI) 01 GTIN-14, 17 expiry `YYMMDD` (day `00` meaning the
//! month's last day), 10 lot, 21 serial, and the other common ones (00, 02, 11–16, 20, 22, 30,
//! 37, 240, 241, 250, 251, 400, 7003 expiry with time) are read, in the bracketed human-readable
//! form `(01)04987...(17)220131(10)FA5765` or as the raw string, with or without a symbology
//! identifier (`]d2`, `]C1`, `]Q3`, `]e0`) and with the FNC1 separator as the GS control
//! character, `␝`, or written `<GS>` / `[GS]` / `{GS}` / `<FNC1>`. A raw string without any
//! separator is ambiguous after a variable-length field: when the product is known, the lot is
//! cut where it fits the product's lot pattern, and a note says so.
//!
//! Sticker text: the lot after ロット番号 / ロット / 製造番号 / Lot (No.), else the first word
//! that fits a catalogue lot pattern; the expiry after 有効期限 / 使用期限 / EXP / Expiry / Use by
//! as `2021.08.31`, `2021-08-31`, `2021/8/31`, `2021年8月31日`, `20210831`, `2021.08` (the month's
//! last day), `31 AUG 2021`, `AUG 2021`, or an era date (`R3.8.31`, `令和3年8月31日`); the product
//! by its Japanese name (the longest one written), else by maker (`ファイザー`) or by the first
//! part of its code as an English word (`Pfizer`, `Moderna`), narrowed by the lot pattern and by
//! the products in use on the dose date.
//!
//! The product comes from the [`Catalogue`]: GS1 labels through [`Product::gtins`].
//! Given the dose date, a lot that expired before it is the finding
//! [`FindingKind::ExpiredLot`]; a lot that fits no pattern of the product is
//! [`FindingKind::LotImplausible`]. The registration then carries the expiry
//! ([`crate::dose::DoseRegistration::lot_expiry`]) so that reconciliation raises the same
//! finding on the stored dose.
//!
//! ```
//! use chrono::NaiveDate;
//! use vrs_core::scan::label::{parse_vaccine_label, LabelSource};
//! use vrs_core::vaccine::Catalogue;
//!
//! let on = NaiveDate::from_ymd_opt(2021, 9, 1);
//! let label = parse_vaccine_label("コミナティ筋注 ロット番号: FA5765 有効期限 2021.08.31", Catalogue::builtin(), on).unwrap();
//! assert_eq!(label.source, LabelSource::Text);
//! assert_eq!(label.product.as_ref().map(|p| p.as_str()), Some("pfizer"));
//! assert_eq!(label.lot, "FA5765");
//! assert_eq!(label.expiry, NaiveDate::from_ymd_opt(2021, 8, 31));
//! assert_eq!(label.findings[0].kind.as_str(), "expired_lot");
//! ```
//!
//! [`Product::gtins`]: crate::vaccine::Product::gtins

use chrono::{Datelike, NaiveDate};
use serde::Serialize;

use crate::finding::{FindingKind, Severity};
use crate::scan::ScanProblem;
use crate::text::to_halfwidth;
use crate::vaccine::{Catalogue, MAX_LOT_LEN, ProductCode};
use crate::{Error, Result};

/// The GS separator (FNC1 in the data).
const GS: char = '\u{1d}';

/// Whether `gtin` is a GTIN-14: 14 ASCII digits whose last is the GS1 check digit (weights 3
/// and 1 alternating from the right of the first 13).
pub fn gtin_is_valid(gtin: &str) -> bool {
    let b = gtin.as_bytes();
    if b.len() != 14 || !b.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = b[..13].iter().rev().enumerate().map(|(i, d)| u32::from(d - b'0') * if i % 2 == 0 { 3 } else { 1 }).sum();
    (10 - sum % 10) % 10 == u32::from(b[13] - b'0')
}

/// Where a label reading came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelSource {
    /// A GS1 element string (DataMatrix, DataBar, or its bracketed human-readable text).
    Gs1,
    /// The maker's sticker or printed text.
    Text,
}

/// A finding the label already shows for the dose date.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LabelFinding {
    /// What it is ([`FindingKind::ExpiredLot`] or [`FindingKind::LotImplausible`]).
    pub kind: FindingKind,
    /// Its severity.
    pub severity: Severity,
    /// Plain words.
    pub detail: String,
}

/// What a vaccine label says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VaccineLabel {
    /// GS1 or sticker text.
    pub source: LabelSource,
    /// The GTIN-14 (AI 01), when the label is GS1.
    pub gtin: Option<String>,
    /// The product, when exactly one catalogue product fits.
    pub product: Option<ProductCode>,
    /// The maker as the ledger writes it (ワクチンメーカー), when the product or every candidate
    /// has the same one.
    pub maker: Option<String>,
    /// The products that fit when more than one does (empty when `product` is known).
    pub candidates: Vec<ProductCode>,
    /// The lot number (ロット番号), half-width.
    pub lot: String,
    /// The expiry date (有効期限), when the label gives one.
    pub expiry: Option<NaiveDate>,
    /// The serial number (AI 21), when there is one.
    pub serial: Option<String>,
    /// Findings for the dose date (expired lot, implausible lot).
    pub findings: Vec<LabelFinding>,
    /// How the reading was reached where it was not plain (a split guessed, a GTIN not in the
    /// catalogue, ...).
    pub notes: Vec<String>,
}

fn malformed(detail: impl Into<String>) -> Error {
    ScanProblem::MalformedGs1 { detail: detail.into() }.into()
}

// ---- GS1 ------------------------------------------------------------------------------------

/// The length of an AI's data: fixed, or variable (ended by a separator or the data's end).
#[derive(Clone, Copy)]
enum AiLength {
    Fixed(usize),
    Variable,
}

fn ai_length(ai: &str) -> Option<AiLength> {
    use AiLength::*;
    Some(match ai {
        "00" => Fixed(18),
        "01" | "02" => Fixed(14),
        "11" | "12" | "13" | "15" | "16" | "17" => Fixed(6),
        "20" => Fixed(2),
        "7003" => Fixed(10),
        "10" | "21" | "22" | "30" | "37" | "240" | "241" | "250" | "251" | "400" => Variable,
        _ => return None,
    })
}

/// Splits a raw element string (separators already turned into [`GS`]) into (AI, data).
fn raw_elements(data: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix(GS) {
            rest = r;
            continue;
        }
        let (ai, len) = [2usize, 3, 4]
            .iter()
            .filter_map(|&n| rest.get(..n).filter(|p| p.bytes().all(|b| b.is_ascii_digit())).and_then(|p| Some((p, ai_length(p)?))))
            .next()
            .ok_or_else(|| malformed(format!("no known application identifier at {:?}", rest.chars().take(6).collect::<String>())))?;
        rest = &rest[ai.len()..];
        let value = match len {
            AiLength::Fixed(n) => {
                let v = rest.get(..n).ok_or_else(|| malformed(format!("AI {ai} needs {n} characters")))?;
                rest = &rest[n..];
                v
            }
            AiLength::Variable => {
                let end = rest.find(GS).unwrap_or(rest.len());
                let v = &rest[..end];
                rest = &rest[end..];
                v
            }
        };
        out.push((ai.to_owned(), value.to_owned()));
    }
    Ok(out)
}

/// Splits the bracketed form `(01)...(17)...` into (AI, data).
fn bracketed_elements(data: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = data.trim();
    while !rest.is_empty() {
        let r =
            rest.strip_prefix('(').ok_or_else(|| malformed(format!("expected '(' at {:?}", rest.chars().take(6).collect::<String>())))?;
        let close = r.find(')').ok_or_else(|| malformed("an AI's ')' is missing"))?;
        let ai = r[..close].trim();
        if ai_length(ai).is_none() {
            return Err(malformed(format!("unknown application identifier ({ai})")));
        }
        let r = &r[close + 1..];
        let end = r.find('(').unwrap_or(r.len());
        let value: String = r[..end].chars().filter(|c| !c.is_whitespace() && *c != GS).collect();
        out.push((ai.to_owned(), value));
        rest = r[end..].trim_start();
    }
    Ok(out)
}

/// The data of a GS1 scan with its symbology identifier dropped and every way of writing
/// the separator turned into [`GS`]; `None` when the text is not GS1.
fn gs1_data(text: &str) -> Option<String> {
    let mut s = text.trim().to_owned();
    for marker in ["<GS>", "[GS]", "{GS}", "<FNC1>", "[FNC1]", "{FNC1}", "\u{241D}"] {
        if s.contains(marker) {
            s = s.replace(marker, "\u{1d}");
        }
    }
    let s = match s.as_bytes() {
        [b']', c, d, ..] if c.is_ascii_alphabetic() && d.is_ascii_digit() => s[3..].to_owned(),
        _ => s,
    };
    let s = s.trim_start_matches(GS).trim().to_owned();
    let bracketed = s.starts_with('(') && s[1..].find(')').is_some_and(|i| ai_length(&s[1..1 + i]).is_some());
    let raw = s.len() >= 16 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == 0x1d || b == b'-') && ai_length(&s[..2]).is_some();
    (bracketed || raw).then_some(s)
}

/// `YYMMDD` as GS1 writes dates; day `00` is the month's last day. Years are 2000–2099.
fn gs1_date(text: &str) -> Option<NaiveDate> {
    let b = text.as_bytes();
    if b.len() < 6 || !b[..6].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = |i: usize| u32::from(b[i] - b'0') * 10 + u32::from(b[i + 1] - b'0');
    let (y, m, d) = (2000 + n(0) as i32, n(2), n(4));
    if d == 0 { last_day(y, m) } else { NaiveDate::from_ymd_opt(y, m, d) }
}

fn last_day(y: i32, m: u32) -> Option<NaiveDate> {
    let first_next = if m == 12 { NaiveDate::from_ymd_opt(y + 1, 1, 1) } else { NaiveDate::from_ymd_opt(y, m + 1, 1) };
    NaiveDate::from_ymd_opt(y, m, 1).and(first_next).and_then(|d| d.pred_opt())
}

struct Fields {
    gtin: Option<String>,
    lot: Option<String>,
    expiry: Option<NaiveDate>,
    serial: Option<String>,
}

fn fields(elements: &[(String, String)]) -> Result<Fields> {
    let mut f = Fields { gtin: None, lot: None, expiry: None, serial: None };
    for (ai, value) in elements {
        match ai.as_str() {
            "01" => {
                if !gtin_is_valid(value) {
                    return Err(ScanProblem::BadGtin { gtin: value.clone() }.into());
                }
                f.gtin = Some(value.clone());
            }
            "17" | "7003" => {
                f.expiry = Some(gs1_date(value).ok_or_else(|| ScanProblem::BadExpiry { text: value.clone() })?);
            }
            "10" => f.lot = Some(value.clone()),
            "21" => f.serial = Some(value.clone()),
            _ => {}
        }
    }
    Ok(f)
}

/// A raw string without separators lets the first variable-length field swallow the rest. With
/// the product known, cut it where the lot then fits the product's lot pattern.
fn split_unseparated(elements: &mut Vec<(String, String)>, catalogue: &Catalogue, product: &ProductCode) -> bool {
    let Some(at) = elements.iter().position(|(ai, _)| matches!(ai.as_str(), "10" | "21" | "22" | "240")) else { return false };
    let (ai, value) = elements[at].clone();
    for cut in 1..value.len() {
        let Ok(tail) = raw_elements(&value[cut..]) else { continue };
        if tail.is_empty() || tail.iter().any(|(t, _)| elements.iter().any(|(e, _)| e == t)) {
            continue;
        }
        let mut candidate = elements.clone();
        candidate[at] = (ai.clone(), value[..cut].to_owned());
        candidate.splice(at + 1..at + 1, tail);
        let lot_fits = candidate
            .iter()
            .find(|(a, _)| a == "10")
            .is_some_and(|(_, lot)| lot.len() <= MAX_LOT_LEN && catalogue.lot_plausible(product, lot));
        if lot_fits {
            *elements = candidate;
            return true;
        }
    }
    false
}

// ---- sticker text ---------------------------------------------------------------------------

const LOT_KEYS: [&str; 8] = ["ロット番号", "製造番号", "ロットno", "ロット", "lot no.", "lot no", "lot#", "lot"];
const EXPIRY_KEYS: [&str; 8] = ["有効期限", "使用期限", "expiry date", "expiry", "exp.", "exp", "use by", "use before"];
const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];

/// The text right after the first of `keys` found (lowercase ASCII search), with separators
/// skipped.
fn after_key<'a>(text: &'a str, lower: &str, keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|k| {
        let at = lower.find(k)?;
        let rest = &text[at + k.len()..];
        Some(rest.trim_start_matches([' ', ':', '：', '.', '#', '\t', '=', '】', ']', ')', '）']))
    })
}

fn lot_token(s: &str) -> Option<String> {
    let tok: String = s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    (!tok.is_empty() && tok.len() <= MAX_LOT_LEN && tok.bytes().any(|b| b.is_ascii_digit())).then_some(tok)
}

/// A date in the forms of the module documentation, from the start of `s`.
fn text_date(s: &str) -> Option<NaiveDate> {
    let s = s.trim();
    // Era dates (R3.8.31, 令和3年8月31日): the era module knows them.
    if s.starts_with(['令', '平', '昭', 'R', 'H', 'S', 'r', 'h', '㋿']) {
        let token: String = s.chars().take_while(|c| !c.is_whitespace()).collect();
        if let Ok(d) = crate::era::parse_date(&token) {
            return Some(d);
        }
    }
    // Numbers and month names, up to the first other word.
    let mut parts: Vec<(bool, u32, usize)> = Vec::new(); // (is month name, value, digit count)
    let lower = s.to_ascii_lowercase();
    let mut rest = lower.as_str();
    loop {
        rest = rest.trim_start_matches([' ', '.', '/', '-', '年', '月', '日', ',']);
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 {
            parts.push((false, rest[..digits].parse().ok()?, digits));
            rest = &rest[digits..];
        } else if let Some(m) = MONTHS.iter().position(|m| rest.starts_with(m)) {
            parts.push((true, m as u32 + 1, 0));
            rest = rest.trim_start_matches(|c: char| c.is_ascii_alphabetic());
        } else {
            break;
        }
        if parts.len() == 3 {
            break;
        }
    }
    let year = |v: u32, n: usize| (n == 4).then_some(v as i32);
    match parts.as_slice() {
        [(false, v, 8), ..] => NaiveDate::from_ymd_opt((v / 10000) as i32, v / 100 % 100, v % 100),
        [(false, y, 4), (false, m, _), (false, d, 1..=2)] => NaiveDate::from_ymd_opt(year(*y, 4)?, *m, *d),
        [(false, y, 4), (false, m, 1..=2), ..] => last_day(year(*y, 4)?, *m),
        [(false, y, 4), (true, m, _), (false, d, 1..=2)] => NaiveDate::from_ymd_opt(year(*y, 4)?, *m, *d),
        [(false, d, 1..=2), (true, m, _), (false, y, 4)] => NaiveDate::from_ymd_opt(year(*y, 4)?, *m, *d),
        [(true, m, _), (false, y, 4), ..] => last_day(year(*y, 4)?, *m),
        _ => None,
    }
}

/// Products named in sticker text: the longest Japanese name written, else by maker, else by
/// the first part of the code as an English word.
fn products_named(text: &str, catalogue: &Catalogue) -> Vec<ProductCode> {
    let squeezed: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let name_of = |n: &str| to_halfwidth(n).chars().filter(|c| !c.is_whitespace()).collect::<String>();
    let by_name: Vec<(usize, ProductCode)> = catalogue
        .products()
        .filter_map(|p| {
            let n = name_of(&p.name);
            squeezed.contains(&n).then(|| (n.chars().count(), p.code.clone()))
        })
        .collect();
    if let Some(longest) = by_name.iter().map(|(n, _)| *n).max() {
        return by_name.into_iter().filter(|(n, _)| *n == longest).map(|(_, c)| c).collect();
    }
    let by_maker: Vec<ProductCode> =
        catalogue.products().filter(|p| squeezed.contains(&name_of(&p.maker))).map(|p| p.code.clone()).collect();
    if !by_maker.is_empty() {
        return by_maker;
    }
    let lower = text.to_ascii_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
    catalogue
        .products()
        .filter(|p| p.code.as_str().split('-').next().is_some_and(|first| words.contains(&first)))
        .map(|p| p.code.clone())
        .collect()
}

// ---- the reading ------------------------------------------------------------------------------

/// Reads a vaccine label (see the [module documentation](self)). `dose_date`, when given, is
/// the day the vaccine is given: an expiry before it is a finding, and products not in use on
/// that day are not candidates.
///
/// Refused with [`Error::Unreadable`]: no lot ([`ScanProblem::NoLot`]), a GTIN with a wrong
/// check digit, GS1 data that does not parse, an expiry that is not a date.
pub fn parse_vaccine_label(text: &str, catalogue: &Catalogue, dose_date: Option<NaiveDate>) -> Result<VaccineLabel> {
    let norm = to_halfwidth(text);
    let mut notes = Vec::new();
    let (source, gtin, mut candidates, lot, expiry, serial) = match gs1_data(&norm) {
        Some(data) => {
            let mut elements = if data.starts_with('(') { bracketed_elements(&data)? } else { raw_elements(&data)? };
            let mut f = fields(&elements)?;
            let by_gtin = f.gtin.as_deref().and_then(|g| catalogue.product_by_gtin(g)).map(|p| p.code.clone());
            if let Some(g) = &f.gtin
                && by_gtin.is_none()
            {
                notes.push(format!("GTIN {g} is not in the catalogue: the product was guessed from the lot"));
            }
            let unseparated = !data.starts_with('(') && !data.contains(GS);
            if unseparated && let Some(product) = &by_gtin {
                let lot_fits = f.lot.as_ref().is_some_and(|l| catalogue.lot_plausible(product, l));
                if !lot_fits && split_unseparated(&mut elements, catalogue, product) {
                    notes.push("no separator after a variable-length field: split where the lot fits the product's lot pattern".into());
                    f = fields(&elements)?;
                }
            }
            let candidates = match by_gtin {
                Some(p) => vec![p],
                None => catalogue.products().filter(|p| p.lot_pattern.is_some()).map(|p| p.code.clone()).collect(),
            };
            (LabelSource::Gs1, f.gtin, candidates, f.lot, f.expiry, f.serial)
        }
        None => {
            let lower = norm.to_ascii_lowercase();
            let lot = after_key(&norm, &lower, &LOT_KEYS).and_then(lot_token).or_else(|| {
                norm.split(|c: char| !c.is_ascii_alphanumeric())
                    .find(|w| !w.is_empty() && catalogue.products().any(|p| p.lot_pattern.is_some() && catalogue.lot_plausible(&p.code, w)))
                    .map(str::to_owned)
            });
            let expiry = match after_key(&norm, &lower, &EXPIRY_KEYS) {
                Some(rest) => {
                    let shown: String = rest.chars().take(20).collect();
                    Some(text_date(rest).ok_or_else(|| ScanProblem::BadExpiry { text: shown.trim().to_owned() })?)
                }
                None => None,
            };
            (LabelSource::Text, None, products_named(&norm, catalogue), lot, expiry, None)
        }
    };
    let lot = lot.filter(|l| !l.is_empty()).ok_or(ScanProblem::NoLot)?;
    if lot.chars().count() > MAX_LOT_LEN {
        notes.push(format!("the lot is {} characters, more than the ledger's {MAX_LOT_LEN}", lot.chars().count()));
    }
    // Narrow the candidates by the lot's pattern and the products in use on the day.
    if candidates.len() > 1 {
        let fitting: Vec<ProductCode> = candidates
            .iter()
            .filter(|c| catalogue.product(c.as_str()).is_some_and(|p| p.lot_pattern.is_some()) && catalogue.lot_plausible(c, &lot))
            .cloned()
            .collect();
        if !fitting.is_empty() {
            candidates = fitting;
        }
    }
    if let Some(day) = dose_date
        && candidates.len() > 1
    {
        let in_use: Vec<ProductCode> =
            candidates.iter().filter(|c| catalogue.product(c.as_str()).is_some_and(|p| p.available_on(day))).cloned().collect();
        if !in_use.is_empty() {
            candidates = in_use;
        }
    }
    let product = match candidates.as_slice() {
        [only] => Some(only.clone()),
        _ => None,
    };
    let makers: Vec<&str> = candidates.iter().filter_map(|c| catalogue.product(c.as_str())).map(|p| p.maker.as_str()).collect();
    let maker = makers.first().filter(|m| makers.iter().all(|x| x == *m)).map(|m| (*m).to_owned());
    if product.is_some() {
        candidates.clear();
    }
    let mut findings = Vec::new();
    if let (Some(day), Some(exp)) = (dose_date, expiry)
        && day > exp
    {
        findings.push(LabelFinding {
            kind: FindingKind::ExpiredLot,
            severity: FindingKind::ExpiredLot.severity(),
            detail: format!("lot {lot} expired on {exp}, before the dose on {day}"),
        });
    }
    if let Some(p) = &product
        && !catalogue.lot_plausible(p, &lot)
    {
        findings.push(LabelFinding {
            kind: FindingKind::LotImplausible,
            severity: FindingKind::LotImplausible.severity(),
            detail: format!("lot {lot:?} does not look like a lot of {p}"),
        });
    }
    Ok(VaccineLabel { source, gtin, product, maker, candidates, lot, expiry, serial, findings, notes })
}

/// The month's last day for a `YYYY`/`MM` expiry, exposed for callers that read a month alone.
pub fn end_of_month(date: NaiveDate) -> NaiveDate {
    last_day(date.year(), date.month()).unwrap_or(date)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// GS1 reserves GTINs with prefix 952 for demonstrations: used here, never real products.
    fn gtin_with_check(first13: &str) -> String {
        let sum: u32 = first13.bytes().rev().enumerate().map(|(i, d)| u32::from(d - b'0') * if i % 2 == 0 { 3 } else { 1 }).sum();
        format!("{first13}{}", (10 - sum % 10) % 10)
    }

    fn catalogue() -> (Catalogue, String, String) {
        let pfizer = gtin_with_check("0952000000001");
        let moderna = gtin_with_check("0952000000002");
        let mut json: serde_json::Value = serde_json::from_str(crate::vaccine::BUILTIN_JSON).unwrap();
        for p in json["products"].as_array_mut().unwrap() {
            match p["code"].as_str().unwrap() {
                "pfizer" => p["gtins"] = serde_json::json!([pfizer.clone()]),
                "moderna" => p["gtins"] = serde_json::json!([moderna.clone()]),
                _ => {}
            }
        }
        (Catalogue::from_json(&json.to_string()).unwrap(), pfizer, moderna)
    }

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn problem(r: Result<VaccineLabel>) -> ScanProblem {
        match r {
            Err(Error::Unreadable(p)) => p,
            other => panic!("expected a scan problem, got {other:?}"),
        }
    }

    #[test]
    fn gs1_in_every_form() {
        let (cat, pfizer, _) = catalogue();
        for text in [
            format!("(01){pfizer}(17)211231(10)FA5765(21)SN0001"),
            format!("(01) {pfizer} (17) 211231 (10) FA5765 (21) SN0001"),
            format!("01{pfizer}17211231 10FA5765\u{1d}21SN0001"),
            format!("]d201{pfizer}1721123110FA5765\u{1d}21SN0001"),
            format!("\u{1d}01{pfizer}1721123110FA5765<GS>21SN0001"),
            format!("01{pfizer}1721123110FA5765[GS]21SN0001"),
            format!("01{pfizer}1721123121SN0001\u{1d}10FA5765"),
            // No separator at all: the lot is cut where it fits Pfizer's two letters and four digits.
            format!("01{pfizer}1721123110FA576521SN0001"),
        ] {
            let text = text.replace(' ', "");
            let l = parse_vaccine_label(&text, &cat, Some(date("2021-07-01"))).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(l.source, LabelSource::Gs1);
            assert_eq!(l.gtin.as_deref(), Some(pfizer.as_str()));
            assert_eq!(l.product.as_ref().map(ProductCode::as_str), Some("pfizer"), "{text:?}");
            assert_eq!(l.maker.as_deref(), Some("ファイザー"));
            assert_eq!(l.lot, "FA5765", "{text:?}");
            assert_eq!(l.serial.as_deref(), Some("SN0001"), "{text:?}");
            assert_eq!(l.expiry, Some(date("2021-12-31")));
            assert!(l.findings.is_empty(), "{:?}", l.findings);
        }
    }

    #[test]
    fn expired_lots_and_day_zero() {
        let (cat, _, moderna) = catalogue();
        let l = parse_vaccine_label(&format!("01{moderna}17210800103004734"), &cat, Some(date("2021-08-31"))).unwrap();
        assert_eq!(l.expiry, Some(date("2021-08-31")));
        assert_eq!(l.lot, "3004734");
        assert!(l.findings.is_empty());
        let l = parse_vaccine_label(&format!("01{moderna}17210800103004734"), &cat, Some(date("2021-09-01"))).unwrap();
        assert_eq!(l.findings.iter().map(|f| f.kind).collect::<Vec<_>>(), vec![FindingKind::ExpiredLot]);
        assert_eq!(l.findings[0].severity, Severity::MustFix);
        // Without a dose date, no finding is decided.
        assert!(parse_vaccine_label(&format!("01{moderna}17210800103004734"), &cat, None).unwrap().findings.is_empty());
    }

    #[test]
    fn unknown_gtin_falls_back_to_the_lot_pattern() {
        let (cat, _, _) = catalogue();
        let other = gtin_with_check("0952000000099");
        let l = parse_vaccine_label(&format!("(01){other}(17)211231(10)FA5765"), &cat, Some(date("2021-07-01"))).unwrap();
        assert_eq!(l.product.as_ref().map(ProductCode::as_str), Some("pfizer"), "only adult Pfizer was in use then: {l:?}");
        let l = parse_vaccine_label(&format!("(01){other}(17)231231(10)FA5765"), &cat, Some(date("2023-01-01"))).unwrap();
        assert_eq!(l.product, None);
        assert!(l.candidates.len() > 1);
        assert_eq!(l.maker.as_deref(), Some("ファイザー"), "every candidate is Pfizer's");
        assert!(!l.notes.is_empty());
    }

    #[test]
    fn sticker_text() {
        let cat = Catalogue::builtin();
        let cases = [
            ("コミナティ筋注 ロット番号：FA5765 有効期限：2021年8月31日", "pfizer", "FA5765", "2021-08-31"),
            ("ｽﾊﾟｲｸﾊﾞｯｸｽ 武田/モデルナ Lot No. 3004734 EXP 2021-07", "moderna", "3004734", "2021-07-31"),
            ("Moderna LOT: 3004734 Expiry: 31 JUL 2021", "moderna", "3004734", "2021-07-31"),
            ("ファイザー FA5765 使用期限 R3.8.31", "pfizer", "FA5765", "2021-08-31"),
            ("ＦＡ５７６５ ファイザー 有効期限 20210831", "pfizer", "FA5765", "2021-08-31"),
            ("Pfizer lot fa-5765x use by AUG 2021", "pfizer", "fa-5765x", "2021-08-31"),
        ];
        for (text, product, lot, expiry) in cases {
            let l = parse_vaccine_label(text, cat, Some(date("2021-07-01"))).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(l.source, LabelSource::Text);
            assert_eq!(l.product.as_ref().map(ProductCode::as_str), Some(product), "{text:?}: {l:?}");
            assert_eq!(l.lot, lot, "{text:?}");
            assert_eq!(l.expiry, Some(date(expiry)), "{text:?}");
        }
        let l = parse_vaccine_label("Pfizer lot fa-5765x", cat, Some(date("2021-07-01"))).unwrap();
        assert_eq!(l.findings.iter().map(|f| f.kind).collect::<Vec<_>>(), vec![FindingKind::LotImplausible]);
    }

    #[test]
    fn each_problem_is_named() {
        let (cat, pfizer, _) = catalogue();
        assert_eq!(problem(parse_vaccine_label("コミナティ筋注", &cat, None)), ScanProblem::NoLot);
        let mut bad = pfizer.clone();
        bad.replace_range(13..14, if pfizer.ends_with('0') { "1" } else { "0" });
        assert!(matches!(problem(parse_vaccine_label(&format!("(01){bad}(10)FA5765"), &cat, None)), ScanProblem::BadGtin { .. }));
        assert!(matches!(
            problem(parse_vaccine_label(&format!("(01){pfizer}(99)X(10)FA5765"), &cat, None)),
            ScanProblem::MalformedGs1 { .. }
        ));
        assert!(matches!(
            problem(parse_vaccine_label(&format!("(01){pfizer}(17)211399(10)FA5765"), &cat, None)),
            ScanProblem::BadExpiry { .. }
        ));
        assert!(matches!(problem(parse_vaccine_label("ロット FA5765 有効期限 いつか", &cat, None)), ScanProblem::BadExpiry { .. }));
    }

    #[test]
    fn gtin_check_digits() {
        assert!(gtin_is_valid(&gtin_with_check("0952000000001")));
        assert!(!gtin_is_valid("0952000000001"));
        assert!(!gtin_is_valid("09520000000010x"));
    }

    proptest! {
        /// Whatever the separators and order, the GS1 fields come back as written.
        #[test]
        fn gs1_round_trip(lot in "[A-Z]{2}[0-9]{4}", serial in "[A-Z0-9]{1,12}", y in 21u32..30, m in 1u32..13, sep in 0usize..4, lot_first in any::<bool>()) {
            let (cat, pfizer, _) = catalogue();
            let gs = ["\u{1d}", "<GS>", "[GS]", "\u{241D}"][sep];
            let (a, b) = (format!("10{lot}"), format!("21{serial}"));
            let (first, second) = if lot_first { (a, b) } else { (b, a) };
            let text = format!("01{pfizer}17{y:02}{m:02}00{first}{gs}{second}");
            let l = parse_vaccine_label(&text, &cat, None).unwrap();
            prop_assert_eq!(l.lot, lot);
            prop_assert_eq!(l.serial, Some(serial));
            prop_assert_eq!(l.expiry, last_day(2000 + y as i32, m));
            prop_assert_eq!(l.product.as_ref().map(ProductCode::as_str), Some("pfizer"));
        }

        #[test]
        fn never_panics(text in "\\PC{0,80}") {
            let _ = parse_vaccine_label(&text, Catalogue::builtin(), None);
        }
    }
}
