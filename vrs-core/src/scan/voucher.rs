//! Reading a voucher (接種券) from camera OCR text or a scanner's payload.
//!
//! The voucher carries its data three ways: the 18-digit OCR line (券種 1 digit, 回数 1, the
//! issuing municipality's code 6, the voucher number 10), the NW-7 (Codabar) barcode with the
//! voucher number alone, and on later vouchers a QR code with the same 18 digits.
//!
//! What [`parse_voucher`] does with noisy text:
//! - full-width digits and letters become ASCII; spaces, tabs, hyphens (`-`, `‐`, `－`, `ー`, ...)
//!   and, when a line was wrapped, line breaks between digits are dropped;
//! - letters that OCR reads for digits are taken as those digits and reported
//!   ([`LetterFix`]): `O o D Q` → 0, `I l i |` → 1, `Z z` → 2, `S s` → 5, `B` → 8; at most three
//!   in a line, else the run is text, not a voucher line;
//! - the municipality code is checked with its check digit and the shipped list of real codes.
//!   A misread digit there (the 1/4/7 confusion of the field) is repaired only when exactly one
//!   single-digit change gives a code that is both valid and real, and the repair is reported
//!   ([`MunicipalityRepair`]); otherwise the reading is refused with the candidates by name;
//! - a code that reads valid and real but is one digit away from another real code that also
//!   passes the check digit (possible only when the check digit is 1, where the rule's `mod 10`
//!   folds two residues together) is accepted with those [`VoucherReading::alternatives`]
//!   listed, so the app can show the municipality's name for the operator to confirm;
//! - the 10-digit barcode alone is refused ([`ScanProblem::BarcodeOnly`]): it has no
//!   municipality or dose number.
//!
//! The voucher number has no check digit: one reading can never show a misread there. That is
//! what [`confirm_voucher`] is for: a second, independent reading of the same voucher (its
//! barcode or QR code) must agree before the app registers a dose with
//! [`Confidence::Confirmed`].
//!
//! ```
//! use vrs_core::scan::voucher::{parse_voucher, confirm_voucher, Agreement, Confidence};
//!
//! // Full-width digits, spaces and an O read for a 0.
//! let r = parse_voucher("１１ 131O16 000OO12345").unwrap();
//! assert_eq!(r.line.to_string(), "111310160000012345");
//! assert_eq!(r.municipality_name, "千代田区");
//! assert_eq!(r.letter_fixes.len(), 3);
//! assert_eq!(r.confidence, Confidence::Doubtful);
//!
//! // The barcode confirms the voucher number.
//! let c = confirm_voucher("11 131016 0000012345", "A0000012345B").unwrap();
//! assert_eq!((c.agreement, c.confidence), (Agreement::Agree, Confidence::Confirmed));
//! let c = confirm_voucher("11 131016 0000012345", "0000072345").unwrap();
//! assert_eq!(c.agreement, Agreement::Disagree);
//! assert_eq!(c.mismatches, vec![14]);
//! ```

use std::sync::OnceLock;

use serde::Serialize;

use crate::ids::{MunicipalityCode, OcrLine, VoucherNumber, VoucherRef};
use crate::scan::{MunicipalityCandidate, ScanProblem};
use crate::{Error, Result};

/// Letters taken for digits in one line at most; more make the run text, not a number.
const MAX_LETTERS: usize = 3;
/// Digits kept per run; a longer run is only counted.
const RUN_CAP: usize = 24;

/// How far the app may trust a reading, worst first (so `a < b` means `a` is less sure).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// Two readings of the voucher disagree: do not register; read both again.
    Contradicted,
    /// One reading that needed a fix (a letter taken for a digit, a repaired municipality
    /// digit) or whose municipality could be another one digit away: show the municipality's
    /// name and the digits to the operator, and confirm with a second reading.
    Doubtful,
    /// One clean reading: shape and municipality check out, but the voucher number has no
    /// check digit, so a misread there cannot be seen: confirm with a second reading.
    Probable,
    /// Two independent readings agree on every digit they share, and the municipality is
    /// certain: safe to register.
    Confirmed,
}

/// A letter that OCR produced where the line has a digit, and the digit taken for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LetterFix {
    /// Position in the 18 digits, 1-based.
    pub position: u8,
    /// The character read.
    pub read: char,
    /// The digit taken for it.
    pub digit: u8,
}

/// A repaired digit of the municipality code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MunicipalityRepair {
    /// The code as read.
    pub read_code: String,
    /// Position in the 18 digits, 1-based (3 to 8 are the municipality code).
    pub position: u8,
    /// The digit read there.
    pub read: u8,
    /// The digit that makes the only valid real code.
    pub repaired: u8,
}

/// A voucher read from one source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VoucherReading {
    /// The 18 digits as understood (after fixes and repair): ticket kind, dose number, voucher.
    #[serde(serialize_with = "as_digits")]
    pub line: OcrLine,
    /// The issuing municipality's name (団体名), to show the operator.
    pub municipality_name: &'static str,
    /// Its prefecture (都道府県名).
    pub prefecture_name: &'static str,
    /// Letters taken for digits.
    pub letter_fixes: Vec<LetterFix>,
    /// The municipality digit repaired, if one was.
    pub repair: Option<MunicipalityRepair>,
    /// Other real municipalities one misread digit away whose codes also pass the check digit:
    /// when not empty, have the operator confirm the municipality by name.
    pub alternatives: Vec<MunicipalityCandidate>,
    /// How far to trust it.
    pub confidence: Confidence,
}

impl VoucherReading {
    /// The 18 digits as understood.
    pub fn digits(&self) -> String {
        self.line.to_string()
    }

    /// `true` when nothing was fixed or repaired and no other municipality is one digit away.
    pub fn is_clean(&self) -> bool {
        self.letter_fixes.is_empty() && self.repair.is_none() && self.alternatives.is_empty()
    }
}

/// What the second reading of [`confirm_voucher`] was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecondSource {
    /// The NW-7 barcode: the 10-digit voucher number.
    Barcode,
    /// The QR code: the 18 digits of the line.
    QrCode,
}

/// Whether two readings of a voucher agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Agreement {
    /// Every digit both readings carry is the same.
    Agree,
    /// At least one digit differs: see [`VoucherConfirmation::mismatches`].
    Disagree,
    /// Only one usable reading: nothing was cross-checked.
    OnlyOneReading,
}

/// The answer of [`confirm_voucher`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VoucherConfirmation {
    /// Agree, disagree, or only one reading.
    pub agreement: Agreement,
    /// How far to trust [`VoucherConfirmation::reading`].
    pub confidence: Confidence,
    /// The voucher as read: from the OCR text, or from the QR code when the OCR text was
    /// unusable.
    pub reading: VoucherReading,
    /// What the second reading was, when there was a usable one.
    pub second_source: Option<SecondSource>,
    /// The second reading's digits.
    pub second_digits: Option<String>,
    /// Positions (1-based, in the 18-digit line) where the readings differ.
    pub mismatches: Vec<u8>,
}

fn as_digits<S: serde::Serializer>(line: &OcrLine, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(line)
}

// ---- normalisation and candidate runs ---------------------------------------------------

fn confusable(c: char) -> Option<u8> {
    match c {
        'O' | 'o' | 'D' | 'Q' => Some(0),
        'I' | 'l' | 'i' | '|' => Some(1),
        'Z' | 'z' => Some(2),
        'S' | 's' => Some(5),
        'B' => Some(8),
        _ => None,
    }
}

fn separator(c: char) -> bool {
    matches!(c, ' ' | '\t' | '-' | '_' | '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{30FC}' | '\u{3000}')
}

/// Full-width ASCII (U+FF01..U+FF5E) as ASCII.
fn halfwidth(c: char) -> char {
    match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        _ => c,
    }
}

/// One maximal run of digits and digit-like letters.
#[derive(Clone, Copy)]
struct Run {
    digits: [u8; RUN_CAP],
    len: usize,
    real: usize,
    letters: [(u8, char); MAX_LETTERS + 1],
    n_letters: usize,
}

impl Run {
    const EMPTY: Run = Run { digits: [0; RUN_CAP], len: 0, real: 0, letters: [(0, ' '); MAX_LETTERS + 1], n_letters: 0 };

    fn push_digit(&mut self, d: u8) {
        if self.len < RUN_CAP {
            self.digits[self.len] = d;
        }
        self.len += 1;
        self.real += 1;
    }

    fn push_letter(&mut self, c: char, d: u8) {
        if self.n_letters <= MAX_LETTERS && self.len < RUN_CAP {
            self.letters[self.n_letters] = (self.len as u8, c);
        }
        self.n_letters += 1;
        if self.len < RUN_CAP {
            self.digits[self.len] = d;
        }
        self.len += 1;
    }

    fn is_letter(&self, at: usize) -> bool {
        self.letters[..self.n_letters.min(MAX_LETTERS + 1)].iter().any(|(p, _)| usize::from(*p) == at)
    }

    /// Drops digit-like letters at either end until the run is 18 (or 10) long, if it can be.
    fn trimmed(&self) -> Option<Run> {
        if self.len > RUN_CAP || self.n_letters > MAX_LETTERS + 1 {
            return None;
        }
        let lead = (0..self.len).take_while(|&i| self.is_letter(i)).count();
        let trail = (0..self.len).rev().take_while(|&i| self.is_letter(i)).count();
        for want in [18, 10] {
            for a in 0..=lead.min(self.len) {
                for b in 0..=trail.min(self.len - a) {
                    if self.len - a - b == want {
                        return Some(self.cut(a, self.len - b));
                    }
                }
            }
        }
        None
    }

    fn cut(&self, from: usize, to: usize) -> Run {
        let mut r = Run::EMPTY;
        for i in from..to {
            let d = self.digits[i];
            match self.letters[..self.n_letters.min(MAX_LETTERS + 1)].iter().find(|(p, _)| usize::from(*p) == i) {
                Some((_, c)) => r.push_letter(*c, d),
                None => r.push_digit(d),
            }
        }
        r
    }

    fn ascii(&self) -> [u8; RUN_CAP] {
        let mut out = [b'0'; RUN_CAP];
        for (o, d) in out.iter_mut().zip(&self.digits[..self.len.min(RUN_CAP)]) {
            *o = b'0' + d;
        }
        out
    }
}

/// What a pass over the text found.
#[derive(Default)]
struct Found {
    line: Option<Run>,
    distinct_lines: usize,
    barcode: Option<Run>,
    longest: usize,
}

impl Found {
    fn finish(&mut self, run: &Run) {
        if run.real == 0 {
            return;
        }
        let candidate = if run.len == 18 || run.len == 10 { Some(*run) } else { run.trimmed() };
        match candidate {
            Some(r) if r.n_letters <= MAX_LETTERS && r.len == 18 => match &self.line {
                Some(l) if l.digits[..18] == r.digits[..18] => {}
                Some(_) => self.distinct_lines += 1,
                None => {
                    self.line = Some(r);
                    self.distinct_lines = 1;
                }
            },
            Some(r) if r.n_letters <= MAX_LETTERS && r.len == 10 => {
                if self.barcode.is_none() {
                    self.barcode = Some(r);
                }
            }
            _ => self.longest = self.longest.max(run.real),
        }
    }
}

fn scan(text: &str, join_lines: bool) -> Found {
    let mut found = Found::default();
    let mut run = Run::EMPTY;
    for c in text.chars() {
        let c = halfwidth(c);
        if let Some(d) = c.to_digit(10) {
            run.push_digit(d as u8);
        } else if let Some(d) = confusable(c) {
            run.push_letter(c, d);
        } else if separator(c) || (join_lines && (c == '\n' || c == '\r')) {
            continue;
        } else {
            found.finish(&run);
            run = Run::EMPTY;
        }
    }
    found.finish(&run);
    found
}

/// A Codabar payload as a scanner gives it: a start letter A–D, the digits, a stop letter.
fn codabar_digits(text: &str) -> Option<String> {
    let t = text.trim();
    let first = t.chars().next()?;
    let last = t.chars().next_back()?;
    let start_stop = |c: char| matches!(halfwidth(c), 'A'..='D' | 'a'..='d');
    if t.chars().count() < 3 || !start_stop(first) || !start_stop(last) {
        return None;
    }
    let inner: String = t[first.len_utf8()..t.len() - last.len_utf8()].chars().map(halfwidth).filter(|c| !separator(*c)).collect();
    (inner.len() == 10 && inner.bytes().all(|b| b.is_ascii_digit())).then_some(inner)
}

// ---- municipality repair --------------------------------------------------------------------

/// The shipped list indexed for reading: a slot per five leading digits (the sixth is their
/// check digit), so that "is this a real code" is an array look-up, and for every real code
/// the other real codes one digit away, precomputed.
struct Index {
    /// `slot[first five digits]`: 1 + the entry's position, or 0 for no real municipality.
    slot: Vec<u16>,
    entries: Vec<Entry>,
}

struct Entry {
    code: MunicipalityCode,
    neighbours: Vec<MunicipalityCode>,
}

fn first_five(b: &[u8; 6]) -> usize {
    b[..5].iter().fold(0usize, |n, d| n * 10 + usize::from(d - b'0'))
}

/// The code if `b` passes the prefecture and check digit rules.
fn valid(b: &[u8; 6]) -> bool {
    let pref = (b[0] - b'0') * 10 + (b[1] - b'0');
    (1..=47).contains(&pref) && MunicipalityCode::check_digit(b) == b[5] - b'0'
}

impl Index {
    fn get() -> &'static Index {
        static INDEX: OnceLock<Index> = OnceLock::new();
        INDEX.get_or_init(|| {
            let all = crate::municipalities::all();
            let mut slot = vec![0u16; 100_000];
            for (i, m) in all.iter().enumerate() {
                let b: [u8; 6] = m.code.as_str().as_bytes().try_into().unwrap_or([b'0'; 6]);
                slot[first_five(&b)] = u16::try_from(i + 1).unwrap_or(0);
            }
            let mut index = Index { slot, entries: Vec::with_capacity(all.len()) };
            let neighbours: Vec<Vec<MunicipalityCode>> = all
                .iter()
                .map(|m| {
                    let b: [u8; 6] = m.code.as_str().as_bytes().try_into().unwrap_or([b'0'; 6]);
                    index.known_neighbours(&b)
                })
                .collect();
            index.entries = all.iter().zip(neighbours).map(|(m, neighbours)| Entry { code: m.code, neighbours }).collect();
            index
        })
    }

    /// The real municipality with exactly these digits.
    fn known(&self, b: &[u8; 6]) -> Option<MunicipalityCode> {
        if !b.iter().all(u8::is_ascii_digit) || !valid(b) {
            return None;
        }
        let at = usize::from(self.slot[first_five(b)]);
        let code = if self.entries.is_empty() {
            // While the index itself is being built: every slotted code is real.
            std::str::from_utf8(b).ok().and_then(|s| MunicipalityCode::parse(s).ok())
        } else {
            self.entries.get(at.checked_sub(1)?).map(|e| e.code)
        };
        (at > 0).then_some(code).flatten()
    }

    /// Real municipalities whose code differs from `read` in exactly one digit. Only the
    /// changes that keep the check digit valid are looked up.
    fn known_neighbours(&self, read: &[u8; 6]) -> Vec<MunicipalityCode> {
        let mut out = Vec::new();
        for pos in 0..6 {
            for d in b'0'..=b'9' {
                if d == read[pos] {
                    continue;
                }
                let mut b = *read;
                b[pos] = d;
                if let Some(code) = self.known(&b) {
                    out.push(code);
                }
            }
        }
        out
    }

    fn neighbours_of(&self, b: &[u8; 6]) -> &[MunicipalityCode] {
        let at = usize::from(self.slot[first_five(b)]);
        at.checked_sub(1).and_then(|i| self.entries.get(i)).map(|e| e.neighbours.as_slice()).unwrap_or(&[])
    }
}

fn candidates(codes: &[MunicipalityCode]) -> Vec<MunicipalityCandidate> {
    codes.iter().filter_map(|c| MunicipalityCandidate::of(*c)).collect()
}

/// A digit repaired: its position in the code (0-based), the digit read, the digit repaired.
type Repair = (usize, u8, u8);

/// Resolves the municipality digits: accepted as read, repaired, or refused.
fn resolve_municipality(read: &[u8; 6]) -> Result<(MunicipalityCode, Option<Repair>, Vec<MunicipalityCandidate>)> {
    let index = Index::get();
    if let Some(code) = index.known(read) {
        let near = index.neighbours_of(read);
        let alternatives = if near.is_empty() { Vec::new() } else { candidates(near) };
        return Ok((code, None, alternatives));
    }
    let near = index.known_neighbours(read);
    if let [only] = near.as_slice() {
        let b = only.as_str().as_bytes();
        let pos = (0..6).find(|&i| b[i] != read[i]).unwrap_or(0);
        return Ok((*only, Some((pos, read[pos] - b'0', b[pos] - b'0')), Vec::new()));
    }
    let read_text = String::from_utf8_lossy(read).into_owned();
    let problem = if valid(read) {
        ScanProblem::UnknownMunicipality { code: read_text, candidates: candidates(&near) }
    } else {
        ScanProblem::BadMunicipalityCode { read: read_text, candidates: candidates(&near) }
    };
    Err(problem.into())
}

fn reading_from(run: &Run) -> Result<VoucherReading> {
    let digits = run.ascii();
    let mut code = [0u8; 6];
    code.copy_from_slice(&digits[2..8]);
    let (municipality, repair, alternatives) = resolve_municipality(&code)?;
    let number_text = std::str::from_utf8(&digits[8..18]).map_err(|_| Error::Unreadable(ScanProblem::NothingRead))?;
    let number = VoucherNumber::parse(number_text)?;
    let line = OcrLine { ticket_kind: run.digits[0], dose_number: run.digits[1], voucher: VoucherRef { municipality, number } };
    let letter_fixes: Vec<LetterFix> = run.letters[..run.n_letters.min(MAX_LETTERS)]
        .iter()
        .map(|&(p, c)| LetterFix { position: p + 1, read: c, digit: run.digits[usize::from(p)] })
        .collect();
    let repair = repair.map(|(pos, read, repaired)| MunicipalityRepair {
        read_code: String::from_utf8_lossy(&code).into_owned(),
        position: pos as u8 + 3,
        read,
        repaired,
    });
    let (name, prefecture) = crate::municipalities::lookup(municipality).map(|m| (m.name, m.prefecture)).unwrap_or(("", ""));
    let mut reading = VoucherReading {
        line,
        municipality_name: name,
        prefecture_name: prefecture,
        letter_fixes,
        repair,
        alternatives,
        confidence: Confidence::Probable,
    };
    if !reading.is_clean() {
        reading.confidence = Confidence::Doubtful;
    }
    Ok(reading)
}

/// Reads a voucher's 18-digit line from camera OCR text or a QR code's payload (see the
/// [module documentation](self) for what is tolerated and repaired).
///
/// Refused with [`Error::Unreadable`]: nothing read, the 10-digit barcode alone, a wrong number
/// of digits, several different lines, a municipality code that cannot be repaired to exactly
/// one real municipality.
pub fn parse_voucher(text: &str) -> Result<VoucherReading> {
    if let Some(digits) = codabar_digits(text) {
        return Err(ScanProblem::BarcodeOnly { voucher_number: digits }.into());
    }
    let mut found = scan(text, false);
    if found.line.is_none() && text.contains(['\n', '\r']) {
        let joined = scan(text, true);
        if joined.line.is_some() {
            found = joined;
        }
    }
    if found.distinct_lines > 1 {
        return Err(ScanProblem::SeveralVouchers { count: found.distinct_lines }.into());
    }
    if let Some(run) = &found.line {
        return reading_from(run);
    }
    if let Some(run) = &found.barcode {
        let digits = run.ascii();
        return Err(ScanProblem::BarcodeOnly { voucher_number: String::from_utf8_lossy(&digits[..10]).into_owned() }.into());
    }
    if found.longest > 0 {
        return Err(ScanProblem::WrongDigitCount { found: found.longest }.into());
    }
    Err(ScanProblem::NothingRead.into())
}

/// A machine-decoded second reading: the barcode's 10 digits (Codabar start/stop letters
/// dropped) or the QR code's 18.
fn second_reading(text: &str) -> Option<(SecondSource, String)> {
    if let Some(digits) = codabar_digits(text) {
        return Some((SecondSource::Barcode, digits));
    }
    let digits: String = text.chars().map(halfwidth).filter(|c| !separator(*c) && !c.is_whitespace()).collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match digits.len() {
        10 => Some((SecondSource::Barcode, digits)),
        18 => Some((SecondSource::QrCode, digits)),
        _ => None,
    }
}

/// Cross-checks two independent readings of one voucher: the OCR text, and the barcode's 10
/// digits or the QR code's 18 as the scanner decoded them (empty when there is none).
///
/// - Agree: every digit both carry is the same. [`Confidence::Confirmed`] when the
///   municipality is certain too (the QR code covers it; with the barcode, the OCR line's
///   municipality must have needed no repair and have no look-alike), else
///   [`Confidence::Probable`].
/// - Disagree: the differing positions are listed and the confidence is
///   [`Confidence::Contradicted`]; such a voucher is never reported as confirmed.
/// - Only one reading: the second text is empty or unusable; the OCR reading's own confidence
///   (never `Confirmed`). When the OCR text is unusable but the second is a QR code, the QR
///   code's reading is returned this way.
///
/// Errors: the OCR text's [`Error::Unreadable`] problem when there is no QR code to fall back on.
pub fn confirm_voucher(ocr_text: &str, second_text: &str) -> Result<VoucherConfirmation> {
    let second = second_reading(second_text);
    let first = match parse_voucher(ocr_text) {
        Ok(r) => r,
        Err(e) => match &second {
            Some((SecondSource::QrCode, digits)) => {
                let mut reading = parse_voucher(digits)?;
                reading.confidence = reading.confidence.min(Confidence::Probable);
                return Ok(VoucherConfirmation {
                    agreement: Agreement::OnlyOneReading,
                    confidence: reading.confidence,
                    reading,
                    second_source: Some(SecondSource::QrCode),
                    second_digits: Some(digits.clone()),
                    mismatches: Vec::new(),
                });
            }
            _ => return Err(e),
        },
    };
    let Some((source, digits)) = second else {
        return Ok(VoucherConfirmation {
            agreement: Agreement::OnlyOneReading,
            confidence: first.confidence,
            reading: first,
            second_source: None,
            second_digits: None,
            mismatches: Vec::new(),
        });
    };
    let line = first.digits();
    let (offset, compared) = match source {
        SecondSource::Barcode => (8usize, &line[8..]),
        SecondSource::QrCode => (0usize, &line[..]),
    };
    let mismatches: Vec<u8> =
        compared.bytes().zip(digits.bytes()).enumerate().filter(|(_, (a, b))| a != b).map(|(i, _)| (offset + i + 1) as u8).collect();
    let (agreement, confidence) = if !mismatches.is_empty() {
        (Agreement::Disagree, Confidence::Contradicted)
    } else if source == SecondSource::QrCode || (first.repair.is_none() && first.alternatives.is_empty()) {
        (Agreement::Agree, Confidence::Confirmed)
    } else {
        (Agreement::Agree, Confidence::Probable)
    };
    Ok(VoucherConfirmation { agreement, confidence, reading: first, second_source: Some(source), second_digits: Some(digits), mismatches })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn problem(r: Result<VoucherReading>) -> ScanProblem {
        match r {
            Err(Error::Unreadable(p)) => p,
            other => panic!("expected a scan problem, got {other:?}"),
        }
    }

    fn known_codes() -> Vec<String> {
        crate::municipalities::all().iter().map(|m| m.code.as_str().to_owned()).collect()
    }

    #[test]
    fn clean_line_in_every_usual_shape() {
        for text in [
            "111310160000012345",
            "11 131016 0000012345",
            "１１１３１０１６００００ ０１２３４５",
            "1-1-131016-0000012345\n",
            "接種券 11 131016 0000012345 千代田区",
            "11131016\n0000012345",
        ] {
            let r = parse_voucher(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(r.digits(), "111310160000012345", "{text:?}");
            assert_eq!(r.municipality_name, "千代田区");
            assert_eq!(r.confidence, Confidence::Probable, "{text:?}");
        }
    }

    #[test]
    fn letters_read_for_digits_are_fixed_and_reported() {
        let r = parse_voucher("1l 13IO16 0000012345").unwrap();
        assert_eq!(r.digits(), "111310160000012345");
        let fixes: Vec<(u8, char)> = r.letter_fixes.iter().map(|f| (f.position, f.read)).collect();
        assert_eq!(fixes, vec![(2, 'l'), (5, 'I'), (6, 'O')]);
        assert_eq!(r.confidence, Confidence::Doubtful);
        // More than three letters: text, not a line.
        assert!(matches!(problem(parse_voucher("1l 13IO16 OOOOO12345")), ScanProblem::WrongDigitCount { .. } | ScanProblem::NothingRead));
    }

    #[test]
    fn a_misread_municipality_digit_is_repaired_only_when_one_repair_is_real() {
        // 131016 千代田区 with its 4th digit (0) misread as 8: check digit fails.
        let r = parse_voucher("11 131816 0000012345").unwrap();
        assert_eq!(r.line.voucher.municipality.as_str(), "131016");
        let repair = r.repair.clone().unwrap();
        assert_eq!((repair.position, repair.read, repair.repaired), (6, 8, 0));
        assert_eq!(r.confidence, Confidence::Doubtful);
        // Every single-digit corruption of every real code: refused, repaired back, or flagged.
        let (mut repaired, mut refused, mut flagged) = (0, 0, 0);
        for code in known_codes() {
            for pos in 0..6 {
                for d in b'0'..=b'9' {
                    let mut b = code.clone().into_bytes();
                    if b[pos] == d {
                        continue;
                    }
                    b[pos] = d;
                    let text = format!("11{}0000012345", String::from_utf8(b).unwrap());
                    match parse_voucher(&text) {
                        Err(Error::Unreadable(ScanProblem::BadMunicipalityCode { candidates, .. }))
                        | Err(Error::Unreadable(ScanProblem::UnknownMunicipality { candidates, .. })) => {
                            assert!(candidates.iter().any(|c| c.code.as_str() == code), "{text}: {candidates:?}");
                            refused += 1;
                        }
                        Ok(r) if r.line.voucher.municipality.as_str() == code => {
                            assert!(r.repair.is_some());
                            repaired += 1;
                        }
                        Ok(r) => {
                            assert!(r.alternatives.iter().any(|c| c.code.as_str() == code), "{text}");
                            assert_eq!(r.confidence, Confidence::Doubtful);
                            flagged += 1;
                        }
                        Err(e) => panic!("{text}: {e}"),
                    }
                }
            }
        }
        assert!(repaired > 0 && refused > 0 && flagged > 0, "{repaired} {refused} {flagged}");
    }

    #[test]
    fn each_problem_is_named() {
        assert_eq!(problem(parse_voucher("")), ScanProblem::NothingRead);
        assert_eq!(problem(parse_voucher("接種券")), ScanProblem::NothingRead);
        assert_eq!(problem(parse_voucher("0000012345")), ScanProblem::BarcodeOnly { voucher_number: "0000012345".into() });
        assert_eq!(problem(parse_voucher("A0000012345B")), ScanProblem::BarcodeOnly { voucher_number: "0000012345".into() });
        assert_eq!(problem(parse_voucher("D0000012345D")), ScanProblem::BarcodeOnly { voucher_number: "0000012345".into() });
        assert_eq!(problem(parse_voucher("11131016000001234")), ScanProblem::WrongDigitCount { found: 17 });
        assert_eq!(problem(parse_voucher("111310160000012345\n111310160000099999")), ScanProblem::SeveralVouchers { count: 2 });
        // The same line twice is one voucher.
        assert!(parse_voucher("111310160000012345\n111310160000012345").is_ok());
        assert!(matches!(problem(parse_voucher("11 999999 0000012345")), ScanProblem::BadMunicipalityCode { .. }));
    }

    #[test]
    fn confirmations() {
        let line = "11 131016 0000012345";
        let c = confirm_voucher(line, "").unwrap();
        assert_eq!((c.agreement, c.confidence), (Agreement::OnlyOneReading, Confidence::Probable));
        let c = confirm_voucher(line, "0000012345").unwrap();
        assert_eq!((c.agreement, c.confidence, c.second_source), (Agreement::Agree, Confidence::Confirmed, Some(SecondSource::Barcode)));
        let c = confirm_voucher(line, "111310160000012345").unwrap();
        assert_eq!((c.agreement, c.confidence, c.second_source), (Agreement::Agree, Confidence::Confirmed, Some(SecondSource::QrCode)));
        let c = confirm_voucher(line, "111310160000012845").unwrap();
        assert_eq!((c.agreement, c.confidence, c.mismatches.clone()), (Agreement::Disagree, Confidence::Contradicted, vec![16]));
        // The OCR line unusable, the QR code alone.
        let c = confirm_voucher("?!", "111310160000012345").unwrap();
        assert_eq!((c.agreement, c.reading.digits().as_str()), (Agreement::OnlyOneReading, "111310160000012345"));
        // The barcode alone is not enough.
        assert!(matches!(confirm_voucher("", "A0000012345A"), Err(Error::Unreadable(ScanProblem::NothingRead))));
        // A repaired municipality confirmed by the barcode is still only probable; by the QR code, confirmed.
        let c = confirm_voucher("11 131816 0000012345", "0000012345").unwrap();
        assert_eq!((c.agreement, c.confidence), (Agreement::Agree, Confidence::Probable));
        let c = confirm_voucher("11 131816 0000012345", "111310160000012345").unwrap();
        assert_eq!((c.agreement, c.confidence), (Agreement::Agree, Confidence::Confirmed));
    }

    fn any_known_code() -> impl Strategy<Value = String> {
        let codes = known_codes();
        (0..codes.len()).prop_map(move |i| codes[i].clone())
    }

    proptest! {
        /// A valid line with one municipality digit changed is never taken for a different
        /// municipality without being flagged as repaired or uncertain.
        #[test]
        fn one_changed_municipality_digit_is_never_silently_another_municipality(
            code in any_known_code(), pos in 0usize..6, bump in 1u8..10, voucher in "[0-9]{10}", kind in 0u8..10, dose in 1u8..10,
        ) {
            let mut b = code.clone().into_bytes();
            b[pos] = b'0' + (b[pos] - b'0' + bump) % 10;
            let read = String::from_utf8(b).unwrap();
            let text = format!("{kind}{dose}{read}{voucher}");
            match parse_voucher(&text) {
                Ok(r) => {
                    prop_assert_eq!(r.line.voucher.number.as_str(), voucher.as_str());
                    if r.line.voucher.municipality.as_str() != code {
                        prop_assert!(r.repair.is_some() || !r.alternatives.is_empty(), "{} silently read as {}", code, r.line.voucher.municipality);
                        prop_assert!(r.confidence <= Confidence::Doubtful);
                    } else {
                        prop_assert!(r.repair.is_some());
                    }
                }
                Err(Error::Unreadable(_)) => {}
                Err(e) => prop_assert!(false, "unexpected error {}", e),
            }
        }

        /// Voucher digits that differ from the barcode's are reported as disagreeing, never
        /// confirmed; equal digits agree.
        #[test]
        fn differing_barcode_digits_never_confirm(
            code in any_known_code(), voucher in "[0-9]{10}", other in "[0-9]{10}", qr in any::<bool>(),
        ) {
            let line = format!("11{code}{voucher}");
            let second = if qr { format!("11{code}{other}") } else { other.clone() };
            let c = confirm_voucher(&line, &second).unwrap();
            if voucher == other {
                prop_assert_eq!(c.agreement, Agreement::Agree);
            } else {
                prop_assert_eq!(c.agreement, Agreement::Disagree);
                prop_assert_eq!(c.confidence, Confidence::Contradicted);
                prop_assert!(!c.mismatches.is_empty());
            }
        }

        /// Noise (spaces, full-width digits, line breaks) never changes the digits read, and no
        /// input makes the parser panic.
        #[test]
        fn noise_does_not_change_the_digits(code in any_known_code(), voucher in "[0-9]{10}", spaces in proptest::collection::vec(0usize..18, 0..5), wide in any::<bool>()) {
            let line = format!("11{code}{voucher}");
            let mut text = String::new();
            for (i, c) in line.chars().enumerate() {
                if spaces.contains(&i) { text.push(' '); }
                text.push(if wide { char::from_u32(c as u32 + 0xFEE0).unwrap() } else { c });
            }
            let r = parse_voucher(&text).unwrap();
            prop_assert_eq!(r.digits(), line);
        }

        #[test]
        fn never_panics(text in "\\PC{0,60}") {
            let _ = parse_voucher(&text);
            let _ = confirm_voucher(&text, &text);
        }
    }
}
