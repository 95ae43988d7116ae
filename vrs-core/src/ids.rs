//! Validated identifiers. Each is checked on construction, so an invalid value
//! cannot be represented once parsed.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::text::{all_digits, to_halfwidth};
use crate::{Error, Result};

fn invalid(field: &'static str, value: &str, reason: impl Into<String>) -> Error {
    Error::Invalid { field, value: value.chars().take(64).collect(), reason: reason.into() }
}

macro_rules! serde_via_str {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                <$t>::parse(&s).map_err(serde::de::Error::custom)
            }
        }
        str_traits!($t);
    };
}

macro_rules! str_traits {
    ($t:ty) => {
        impl FromStr for $t {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                <$t>::parse(s)
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// Serde for a fixed-width digit code: its text in human-readable formats, its value as a
/// number in binary ones (a store's values), which skips text normalisation on reading.
macro_rules! serde_via_number {
    ($t:ty, $n:ty, $serialize:ident, $from_number:ident) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                if s.is_human_readable() { s.serialize_str(self.as_str()) } else { s.$serialize(digits_value(&self.0) as $n) }
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                    <$t>::parse(&s).map_err(serde::de::Error::custom)
                } else {
                    <$t>::$from_number(<$n>::deserialize(d)?.into()).map_err(serde::de::Error::custom)
                }
            }
        }
        str_traits!($t);
    };
}

/// The value of a string of ASCII digits.
fn digits_value(digits: &[u8]) -> u64 {
    digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d.wrapping_sub(b'0')))
}

/// `value` as `N` ASCII digits with leading zeros, or `None` when it has more digits.
fn value_digits<const N: usize>(mut value: u64) -> Option<[u8; N]> {
    let mut b = [b'0'; N];
    // Two digits per division of the (64-bit) value: half the steps of one at a time
    // (the export converts a stored voucher number for each voucher it writes).
    for pair in b.rchunks_mut(2) {
        let two = (value % 100) as u8;
        value /= 100;
        match pair {
            [tens, ones] => (*tens, *ones) = (b'0' + two / 10, b'0' + two % 10),
            [ones] => {
                // An odd N: the first digit alone, the other of the pair still in value.
                *ones = b'0' + two % 10;
                value = value * 10 + u64::from(two / 10);
            }
            _ => {}
        }
    }
    (value == 0).then_some(b)
}

/// Municipality code (全国地方公共団体コード): five digits and a check digit.
///
/// With the first five digits d1..d5, s = 6·d1 + 5·d2 + 4·d3 + 3·d4 + 2·d5 and the
/// check digit is (11 − s mod 11) mod 10. The first two digits are the prefecture (01–47).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct MunicipalityCode([u8; 6]);

impl MunicipalityCode {
    /// Parses six digits (full-width accepted) and verifies the prefecture and check digit.
    /// Existence in the shipped list is a separate question: see [`MunicipalityCode::name`].
    pub fn parse(text: &str) -> Result<Self> {
        let norm = to_halfwidth(text.trim());
        let s = norm.as_ref();
        if s.len() != 6 || !all_digits(s) {
            return Err(invalid("municipality_code", text, "must be exactly 6 digits"));
        }
        let b: [u8; 6] = s.as_bytes().try_into().map_err(|_| invalid("municipality_code", text, "must be exactly 6 digits"))?;
        Self::from_digits(b, text)
    }

    /// The code whose six digits, read as a number, are `value` (as a store keeps it).
    pub fn from_number(value: u64) -> Result<Self> {
        match value_digits::<6>(value) {
            Some(b) => Self::from_digits(b, ""),
            None => Err(invalid("municipality_code", &value.to_string(), "must be exactly 6 digits")),
        }
    }

    /// Checks the prefecture and check digit of six ASCII digits (`text` as given, for errors).
    fn from_digits(b: [u8; 6], text: &str) -> Result<Self> {
        let error = |reason| {
            let text = if text.is_empty() { std::str::from_utf8(&b).unwrap_or_default() } else { text };
            Err(invalid("municipality_code", text, reason))
        };
        let pref = (b[0] - b'0') * 10 + (b[1] - b'0');
        if !(1..=47).contains(&pref) {
            return error("prefecture (first two digits) must be 01-47");
        }
        if Self::check_digit(&b) != b[5] - b'0' {
            return error("check digit does not match");
        }
        Ok(Self(b))
    }

    /// The check digit for the first five ASCII digits of `b`.
    pub fn check_digit(b: &[u8]) -> u8 {
        let s: u32 = b.iter().take(5).zip([6u32, 5, 4, 3, 2]).map(|(d, w)| u32::from(d - b'0') * w).sum();
        ((11 - s % 11) % 10) as u8
    }

    /// The code as six ASCII digits.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("000000")
    }

    /// The six ASCII digits, as bytes of a known length (a writer copies them without a
    /// UTF-8 check or a call).
    pub(crate) fn digits(&self) -> &[u8; 6] {
        &self.0
    }

    /// The prefecture number, 1–47.
    pub fn prefecture(&self) -> u8 {
        (self.0[0] - b'0') * 10 + (self.0[1] - b'0')
    }

    /// The prefecture as two digits, e.g. `"01"`.
    pub fn prefecture_code(&self) -> &str {
        &self.as_str()[..2]
    }

    /// Whether the code is in the shipped list of real municipalities.
    pub fn is_known(&self) -> bool {
        crate::municipalities::lookup(*self).is_some()
    }

    /// The municipality's name from the shipped list, if it is there.
    pub fn name(&self) -> Option<&'static str> {
        crate::municipalities::lookup(*self).map(|m| m.name)
    }
}
serde_via_number!(MunicipalityCode, u32, serialize_u32, from_number);

/// Voucher number (券番号): exactly 10 digits, no check digit. Whether a number was
/// issued is known only from the residents upload.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct VoucherNumber([u8; 10]);

impl VoucherNumber {
    /// Parses 10 digits (full-width accepted).
    pub fn parse(text: &str) -> Result<Self> {
        let norm = to_halfwidth(text.trim());
        let s = norm.as_ref();
        if s.len() != 10 || !all_digits(s) {
            return Err(invalid("voucher_number", text, "must be exactly 10 digits"));
        }
        let mut b = [0u8; 10];
        b.copy_from_slice(s.as_bytes());
        Ok(Self(b))
    }

    /// The voucher number whose ten digits, read as a number, are `value` (as a store keeps it).
    pub fn from_number(value: u64) -> Result<Self> {
        value_digits::<10>(value).map(Self).ok_or_else(|| invalid("voucher_number", &value.to_string(), "must be exactly 10 digits"))
    }
    /// The number as ten ASCII digits.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("0000000000")
    }

    /// The ten ASCII digits, as bytes of a known length (a writer copies them without a
    /// UTF-8 check or a call).
    pub(crate) fn digits(&self) -> &[u8; 10] {
        &self.0
    }
}
serde_via_number!(VoucherNumber, u64, serialize_u64, from_number);

/// A voucher: the issuing municipality and its voucher number. A dose belongs to the
/// municipality that issued the voucher it was registered with.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct VoucherRef {
    /// Issuing municipality (発行自治体).
    pub municipality: MunicipalityCode,
    /// Voucher number (券番号).
    pub number: VoucherNumber,
}

impl fmt::Display for VoucherRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.municipality, self.number)
    }
}

/// The 18-digit OCR line printed on a voucher: ticket kind (券種, 1 digit), dose number
/// (回数, 1 digit), issuing municipality code (6) and voucher number (10).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct OcrLine {
    /// Ticket kind (券種).
    pub ticket_kind: u8,
    /// Dose number printed on the voucher (回数).
    pub dose_number: u8,
    /// The issuing voucher.
    pub voucher: VoucherRef,
}

impl OcrLine {
    /// Parses the 18 digits; spaces, hyphens and full-width digits are tolerated, nothing
    /// else. The municipality's check digit is verified (existence is checked by the service).
    pub fn parse(text: &str) -> Result<Self> {
        let norm = to_halfwidth(text);
        let digits: String = norm.chars().filter(|c| !c.is_whitespace() && *c != '-').collect();
        if digits.len() != 18 || !all_digits(&digits) {
            return Err(invalid("ocr_line", text, "must be 18 digits: kind, dose number, municipality code (6), voucher number (10)"));
        }
        let b = digits.as_bytes();
        let municipality = MunicipalityCode::parse(&digits[2..8]).map_err(|e| match e {
            Error::Invalid { reason, .. } => invalid("ocr_line", text, format!("municipality code {}: {reason}", &digits[2..8])),
            other => other,
        })?;
        let number = VoucherNumber::parse(&digits[8..18])?;
        Ok(Self { ticket_kind: b[0] - b'0', dose_number: b[1] - b'0', voucher: VoucherRef { municipality, number } })
    }
}

impl fmt::Display for OcrLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}{}", self.ticket_kind, self.dose_number, self.voucher.municipality, self.voucher.number)
    }
}

/// Addressee number (個別宛名番号): the municipality's own person id, 1–15 ASCII digits,
/// kept exactly as uploaded (no zero padding added or removed).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct AddresseeNumber(String);

impl AddresseeNumber {
    /// Parses 1–15 digits (full-width accepted).
    pub fn parse(text: &str) -> Result<Self> {
        let norm = to_halfwidth(text.trim());
        let s = norm.as_ref();
        if s.is_empty() || s.len() > 15 || !all_digits(s) {
            return Err(invalid("addressee_number", text, "must be 1 to 15 digits"));
        }
        Ok(Self(s.to_owned()))
    }
    /// The digits as uploaded.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
serde_via_str!(AddresseeNumber);

/// A resident's identity: municipality and addressee number.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct PersonRef {
    /// The municipality that uploaded the resident.
    pub municipality: MunicipalityCode,
    /// The municipality's addressee number.
    pub addressee: AddresseeNumber,
}

impl fmt::Display for PersonRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.municipality, self.addressee)
    }
}

/// Personal number (個人番号, "My Number"): 12 digits, the last a check digit. Never
/// stored or logged in clear: only its [`PersonalNumberHash`] is kept.
#[derive(Clone, PartialEq, Eq)]
pub struct PersonalNumber([u8; 12]);

impl PersonalNumber {
    /// Parses and checks the check digit. The error never contains the number.
    pub fn parse(text: &str) -> Result<Self> {
        let norm = to_halfwidth(text.trim());
        let s = norm.as_ref();
        if s.len() != 12 || !all_digits(s) {
            return Err(Error::Invalid {
                field: "personal_number",
                value: "(redacted)".into(),
                reason: "must be exactly 12 digits".into(),
            });
        }
        let mut b = [0u8; 12];
        b.copy_from_slice(s.as_bytes());
        if Self::check_digit(&b[..11]) != b[11] - b'0' {
            return Err(Error::Invalid {
                field: "personal_number",
                value: "(redacted)".into(),
                reason: "check digit does not match".into(),
            });
        }
        Ok(Self(b))
    }

    /// Check digit of the first eleven digits: weights Q_n = n+1 (n ≤ 6) or n−5 (n ≥ 7),
    /// n counted from the right; r = Σ P_n·Q_n mod 11; check = 0 if r ≤ 1 else 11 − r.
    pub fn check_digit(first11: &[u8]) -> u8 {
        let sum: u32 = first11
            .iter()
            .rev()
            .enumerate()
            .map(|(i, d)| {
                let n = i as u32 + 1;
                let q = if n <= 6 { n + 1 } else { n - 5 };
                u32::from(d - b'0') * q
            })
            .sum();
        let r = sum % 11;
        if r <= 1 { 0 } else { (11 - r) as u8 }
    }

    /// The keyed hash kept instead of the number (HMAC-SHA256 with the deployment secret).
    pub fn keyed_hash(&self, secret: &[u8]) -> PersonalNumberHash {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
            Ok(m) => m,
            Err(_) => unreachable_hmac(),
        };
        mac.update(&self.0);
        PersonalNumberHash(mac.finalize().into_bytes().into())
    }
}

#[cold]
fn unreachable_hmac() -> ! {
    // Hmac::new_from_slice only fails for fixed-size-key MACs, never for HMAC.
    panic!("HMAC rejected a key")
}

impl fmt::Debug for PersonalNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PersonalNumber(<redacted>)")
    }
}

/// Keyed hash of a personal number, for cross-municipality lookups.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PersonalNumberHash(pub [u8; 32]);

impl fmt::Debug for PersonalNumberHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PersonalNumberHash({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

fn parse_token(field: &'static str, text: &str, max: usize) -> Result<String> {
    let s = text.trim();
    if s.is_empty() || s.len() > max || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' || b == b':') {
        return Err(invalid(field, text, format!("must be 1 to {max} characters of A-Z, a-z, 0-9, '-', '_', '.', ':'")));
    }
    Ok(s.to_owned())
}

macro_rules! token_id {
    ($(#[$doc:meta])* $t:ident, $field:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
        pub struct $t(String);
        impl $t {
            /// Parses the identifier (ASCII letters, digits, `-_.:`).
            pub fn parse(text: &str) -> Result<Self> {
                parse_token($field, text, $max).map(Self)
            }
            /// The identifier's text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        serde_via_str!($t);
    };
}

token_id!(
    /// Vaccination site id (接種会場): a municipal venue code or a clinic's G-MIS ID.
    SiteId, "site_id", 32
);
token_id!(
    /// A tablet account issued to a site.
    AccountId, "account_id", 64
);
token_id!(
    /// Idempotency key of a registration: the same key registers at most one dose.
    IdempotencyKey, "idempotency_key", 128
);

/// A dose's id, derived from its idempotency key so that a retry names the same dose.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct DoseId([u8; 16]);

impl DoseId {
    /// The id of the dose registered under `key`.
    pub fn for_key(key: &IdempotencyKey) -> Self {
        let digest = Sha256::digest(key.as_str().as_bytes());
        let mut b = [0u8; 16];
        b.copy_from_slice(&digest[..16]);
        Self(b)
    }
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
    /// From raw bytes (as stored).
    pub fn from_bytes(b: [u8; 16]) -> Self {
        Self(b)
    }
    /// Parses the 32 hex digits printed by `Display`.
    pub fn parse(text: &str) -> Result<Self> {
        let s = text.trim();
        if s.len() != 32 {
            return Err(invalid("dose_id", text, "must be 32 hexadecimal digits"));
        }
        let mut b = [0u8; 16];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(chunk).map_err(|_| invalid("dose_id", text, "must be hexadecimal"))?;
            b[i] = u8::from_str_radix(hex, 16).map_err(|_| invalid("dose_id", text, "must be hexadecimal"))?;
        }
        Ok(Self(b))
    }
}

impl fmt::Display for DoseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// 32 hex digits in human-readable formats, the 16 bytes in binary ones.
impl Serialize for DoseId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if s.is_human_readable() { s.collect_str(self) } else { s.serialize_bytes(&self.0) }
    }
}
impl<'de> Deserialize<'de> for DoseId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            DoseId::parse(&s).map_err(serde::de::Error::custom)
        } else {
            d.deserialize_bytes(DoseIdBytes)
        }
    }
}

/// Reads a [`DoseId`] from its 16 bytes (or a sequence of them, for formats without bytes).
struct DoseIdBytes;

impl<'de> serde::de::Visitor<'de> for DoseIdBytes {
    type Value = DoseId;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the 16 bytes of a dose id")
    }
    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> std::result::Result<DoseId, E> {
        <[u8; 16]>::try_from(v).map(DoseId).map_err(|_| E::invalid_length(v.len(), &self))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<DoseId, A::Error> {
        let mut b = [0u8; 16];
        for (i, x) in b.iter_mut().enumerate() {
            *x = seq.next_element()?.ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
        }
        if seq.next_element::<u8>()?.is_some() {
            return Err(serde::de::Error::invalid_length(17, &self));
        }
        Ok(DoseId(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn listed_codes() -> Vec<String> {
        crate::municipalities::list_csv().lines().skip(1).map(|l| l[..6].to_owned()).collect()
    }

    #[test]
    fn every_listed_code_passes_and_single_digit_corruptions_are_caught_or_real() {
        let codes = listed_codes();
        assert_eq!(codes.len(), 1963);
        let known: std::collections::HashSet<&str> = codes.iter().map(String::as_str).collect();
        let (mut total, mut passed_check, mut another_real) = (0, 0, 0);
        for code in &codes {
            let parsed = MunicipalityCode::parse(code).unwrap();
            assert!(parsed.is_known());
            for pos in 0..6 {
                for d in b'0'..=b'9' {
                    let mut b = code.clone().into_bytes();
                    if b[pos] == d {
                        continue;
                    }
                    b[pos] = d;
                    let s = String::from_utf8(b).unwrap();
                    total += 1;
                    // Rejected by the check digit, or flagged as unknown by the list; the
                    // only corruptions nothing can see are those that are another real code.
                    if let Ok(c) = MunicipalityCode::parse(&s) {
                        passed_check += 1;
                        if c.is_known() {
                            assert!(known.contains(s.as_str()));
                            another_real += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(total, 1963 * 6 * 9);
        // The mod-11 check maps remainders 0 and 10 to the same digit, so some corruptions
        // pass it; the list then flags all but those that land on another real code.
        assert_eq!(passed_check, 1464);
        assert_eq!(another_real, 396);
    }

    #[test]
    fn check_digit_examples() {
        assert!(MunicipalityCode::parse("131016").is_ok());
        assert!(MunicipalityCode::parse("１３１０１６").is_ok());
        assert!(MunicipalityCode::parse("131017").is_err());
        assert!(MunicipalityCode::parse("481001").is_err());
        assert!(MunicipalityCode::parse("13101").is_err());
    }

    #[test]
    fn ocr_line_parses_and_prints_back() {
        let l = OcrLine::parse("1 2 131016 0000012345").unwrap();
        assert_eq!(l.ticket_kind, 1);
        assert_eq!(l.dose_number, 2);
        assert_eq!(l.voucher.municipality.as_str(), "131016");
        assert_eq!(l.voucher.number.as_str(), "0000012345");
        assert_eq!(l.to_string(), "121310160000012345");
        assert!(OcrLine::parse("121310170000012345").is_err(), "bad check digit");
        assert!(OcrLine::parse("12131016000001234").is_err(), "17 digits");
        assert!(OcrLine::parse("12131016000001234X").is_err());
    }

    #[test]
    fn personal_number_check_digit() {
        // 12345678901 -> weights from the right 2..7,2..6.
        let first = b"12345678901";
        let c = PersonalNumber::check_digit(first);
        let good = format!("12345678901{c}");
        assert!(PersonalNumber::parse(&good).is_ok());
        let bad = format!("12345678901{}", (c + 1) % 10);
        let err = PersonalNumber::parse(&bad).unwrap_err().to_string();
        assert!(!err.contains("12345678901"), "the number must not appear in errors: {err}");
        let p = PersonalNumber::parse(&good).unwrap();
        assert_eq!(format!("{p:?}"), "PersonalNumber(<redacted>)");
        assert_eq!(p.keyed_hash(b"k1"), p.keyed_hash(b"k1"));
        assert_ne!(p.keyed_hash(b"k1"), p.keyed_hash(b"k2"));
    }

    #[test]
    fn codes_and_ids_are_text_in_json_and_numbers_or_bytes_in_binary_formats() {
        let v =
            VoucherRef { municipality: MunicipalityCode::parse("011002").unwrap(), number: VoucherNumber::parse("0000012345").unwrap() };
        let id = DoseId::for_key(&IdempotencyKey::parse("k").unwrap());
        assert_eq!(serde_json::to_string(&v).unwrap(), r#"{"municipality":"011002","number":"0000012345"}"#);
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<DoseId>(&serde_json::to_string(&id).unwrap()).unwrap(), id);
        let bytes = postcard::to_stdvec(&(v, id)).unwrap();
        assert_eq!(bytes.len(), 2 + 2 + 17, "{bytes:?}");
        assert_eq!(postcard::from_bytes::<(VoucherRef, DoseId)>(&bytes).unwrap(), (v, id));
        let max = VoucherNumber::parse("9999999999").unwrap();
        assert_eq!(postcard::from_bytes::<VoucherNumber>(&postcard::to_stdvec(&max).unwrap()).unwrap(), max);
        // A number that is not a valid code is refused on reading, as text would be.
        assert!(postcard::from_bytes::<MunicipalityCode>(&postcard::to_stdvec(&131017u32).unwrap()).is_err(), "check digit");
        assert!(postcard::from_bytes::<MunicipalityCode>(&postcard::to_stdvec(&481001u32).unwrap()).is_err(), "prefecture");
        assert!(postcard::from_bytes::<MunicipalityCode>(&postcard::to_stdvec(&1_310_160u32).unwrap()).is_err(), "7 digits");
        assert!(postcard::from_bytes::<VoucherNumber>(&postcard::to_stdvec(&10_000_000_000u64).unwrap()).is_err(), "11 digits");
        assert!(postcard::from_bytes::<DoseId>(&postcard::to_stdvec(&[1u8; 15].as_slice()).unwrap()).is_err(), "15 bytes");
    }

    proptest! {
        #[test]
        fn ocr_parse_never_panics(s in "\\PC{0,40}") {
            let _ = OcrLine::parse(&s);
        }

        #[test]
        fn valid_ocr_lines_round_trip(kind in 0u8..10, dose in 0u8..10, idx in 0usize..1963, voucher in "[0-9]{10}") {
            let code = &listed_codes()[idx];
            let text = format!("{kind}{dose}{code}{voucher}");
            let line = OcrLine::parse(&text).unwrap();
            prop_assert_eq!(line.to_string(), text);
        }

        #[test]
        fn personal_number_single_digit_errors_detected(first in "[0-9]{11}", pos in 0usize..11, delta in 1u8..10) {
            let c = PersonalNumber::check_digit(first.as_bytes());
            let mut b = first.into_bytes();
            b[pos] = b'0' + (b[pos] - b'0' + delta) % 10;
            let s = format!("{}{c}", String::from_utf8(b).unwrap());
            // The weights are all non-zero mod 11, so a single changed digit changes r;
            // only the r ∈ {0,1} collapse to check digit 0 can hide it.
            let r_collision = PersonalNumber::parse(&s).is_ok();
            if r_collision { prop_assert_eq!(c, 0); }
        }

        #[test]
        fn value_digits_are_the_zero_padded_decimal(value in proptest::prop_oneof![0u64..100_000_000_000, proptest::num::u64::ANY]) {
            let padded = |n: usize| Some(format!("{value:0n$}")).filter(|t| t.len() == n);
            prop_assert_eq!(value_digits::<10>(value).map(|d| String::from_utf8(d.to_vec()).unwrap()), padded(10));
            prop_assert_eq!(value_digits::<6>(value).map(|d| String::from_utf8(d.to_vec()).unwrap()), padded(6));
            prop_assert_eq!(value_digits::<5>(value).map(|d| String::from_utf8(d.to_vec()).unwrap()), padded(5));
        }

        #[test]
        fn dose_id_display_round_trips(key in "[A-Za-z0-9_-]{1,60}") {
            let id = DoseId::for_key(&IdempotencyKey::parse(&key).unwrap());
            prop_assert_eq!(DoseId::parse(&id.to_string()).unwrap(), id);
        }
    }
}
