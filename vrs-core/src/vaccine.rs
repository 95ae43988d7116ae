//! Vaccine products (ワクチン) and the schedule rules a dose is checked against:
//! intervals between doses (接種間隔) and ages on the day (接種対象年齢).
//!
//! Rules are data. [`Catalogue::builtin`] reads `data/vaccines.json`, shipped with the crate
//! ([`BUILTIN_JSON`]); a deployment may supply its own file to [`Catalogue::from_json`]. The code
//! here only evaluates rules generically and never names a product.
//!
//! # The catalogue file
//!
//! A JSON object with `"format": 1`, an optional `"note"`, and three lists. Every entry may carry
//! a `"note"` (free text, for debatable values); unknown fields are rejected so a typo is not
//! silently ignored. Dates are `YYYY-MM-DD`; a rule is in force on `[from, until)`, `until`
//! optional.
//!
//! - `products`: `code` (lowercase ASCII, digits, `-`), `name` (Japanese product name), `maker`
//!   (the ledger's ワクチンメーカー string, at most 20 characters), `family` (vaccine group used
//!   for duplicate detection), `cvx` (optional), `lot_pattern` (optional, see below), `gtins`
//!   (optional: the GS1 GTIN-14s of its packs, for reading vial labels),
//!   `primary_series_doses`, `available_from`.
//! - `age_rules`: `id`, `products`, `from`, `until`, `min_years`, `min_months`, `max_years`
//!   (all three optional). Rules of one product must not overlap in time.
//! - `interval_rules`: between dose *k* and dose *k*+1 of the same family. `id`; `dose` (the later
//!   dose's number) or `dose_from` (that number and every later one); `next` and `prev` (the
//!   products of the later and earlier dose; absent means any); `same_product` (optional:
//!   `true` only when both doses are of one product, `false` only for mixed products, 交互接種);
//!   exactly one of `min_clear_days` (N日以上の間隔: N whole days in between, so the earliest date
//!   is the earlier dose + N + 1) or `min_months` (the same day of the month N months later,
//!   the month's last day when that day does not exist); `from`; `until`.
//!
//! Every interval rule that applies is a minimum that must hold, so when several apply the latest
//! earliest date wins. Rules only set minimums: there is no upper limit, and a late dose never
//! restarts the series.
//!
//! # Lot patterns
//!
//! A tiny language, matched against the whole (trimmed) lot number: `A` is an ASCII uppercase
//! letter, `9` an ASCII digit, `*` any run of up to 20 characters, `\x` the character `x` itself,
//! and any other printable ASCII character stands for itself. Pfizer's `AA9999` accepts `FA5765`.
//!
//! ```
//! use chrono::NaiveDate;
//! use vrs_core::vaccine::{Catalogue, ProductCode};
//!
//! let catalogue = Catalogue::builtin();
//! let pfizer = ProductCode::new("pfizer");
//! let dose1 = NaiveDate::from_ymd_opt(2021, 6, 1).unwrap();
//! let on = NaiveDate::from_ymd_opt(2021, 6, 20).unwrap();
//! // 18 clear days: the 19th day after dose 1 is the first allowed.
//! assert_eq!(catalogue.earliest_next_dose(&pfizer, 1, dose1, &pfizer, 2, on), Some(on));
//! assert!(catalogue.lot_plausible(&pfizer, "FA5765"));
//! ```

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::OnceLock;

use chrono::{Datelike, Days, Months, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::Error;

/// The catalogue shipped with the crate (`data/vaccines.json`), for callers who want to start
/// their own file from it.
pub const BUILTIN_JSON: &str = include_str!("../data/vaccines.json");

/// Longest lot number (ロット番号) the ledger export can carry, in characters.
pub const MAX_LOT_LEN: usize = 20;

/// Longest maker string (ワクチンメーカー) the ledger export can carry, in characters.
const MAX_MAKER_LEN: usize = 20;

/// The only file format this module reads.
const FORMAT: u32 = 1;

/// A vaccine product's code in the catalogue, e.g. `pfizer`, `moderna`, `pfizer-5-11`.
///
/// Any text can be a code; whether it names a product is the catalogue's answer
/// ([`Catalogue::product`]), since a caller may load its own catalogue.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProductCode(String);

impl ProductCode {
    /// Wraps a code as written (no normalisation).
    pub fn new(code: impl Into<String>) -> Self {
        Self(code.into())
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProductCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ProductCode {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for ProductCode {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A vaccine product (ワクチン製品) as the catalogue describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Product {
    /// The catalogue code.
    pub code: ProductCode,
    /// Japanese product name (販売名), e.g. コミナティ筋注.
    pub name: String,
    /// Maker as written in the ledger (ワクチンメーカー), e.g. ファイザー, 武田/モデルナ.
    pub maker: String,
    /// Vaccine group: doses of one family count their dose numbers together and are compared
    /// for duplicates (`covid-19` for every product of the builtin file).
    pub family: String,
    /// CDC CVX code, used in FHIR and HL7 v2 exports; none for products CVX does not list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cvx: Option<u16>,
    /// CDC MVX manufacturer code (e.g. `PFR`), used in HL7 v2 RXA-17; none where MVX lists none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mvx: Option<String>,
    /// Plausible lot number shape, in the module's pattern language; none accepts any lot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lot_pattern: Option<String>,
    /// GS1 GTIN-14s printed on the product's packs (調剤包装単位 with a leading 0, 販売包装単位
    /// with 1), so that a scanned GS1 label (AI 01) names the product; 14 digits each with a
    /// valid check digit, unique in the catalogue. The builtin file ships none: a deployment
    /// lists the GTINs of the packs it receives.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gtins: Vec<String>,
    /// Doses in the primary series (初回接種); 0 for booster-only products.
    pub primary_series_doses: u8,
    /// First day the product was given in the programme.
    pub available_from: NaiveDate,
    /// Why a value is what it is, where it is debatable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Product {
    /// Whether the product was in use on `date`.
    pub fn available_on(&self, date: NaiveDate) -> bool {
        date >= self.available_from
    }
}

/// The age a product requires on the day of vaccination, returned when a person does not meet it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgeRequirement {
    /// The product checked.
    pub product: ProductCode,
    /// Minimum age: completed years…
    pub min_years: u32,
    /// …plus completed months (0 to 11).
    pub min_months: u32,
    /// Maximum age in completed years, inclusive (paediatric products).
    pub max_years: Option<u32>,
    /// First day of the rule that applied.
    pub in_force_from: NaiveDate,
    /// The rule's id in the catalogue.
    pub rule: String,
}

impl fmt::Display for AgeRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let min = describe_age(self.min_years, self.min_months);
        match self.max_years {
            Some(max) => write!(f, "{} is for people aged {min} to {} on the day of vaccination", self.product, describe_age(max, 0))?,
            None => write!(f, "{} is for people aged {min} or over on the day of vaccination", self.product)?,
        }
        write!(f, " (rule {} in force from {})", self.rule, self.in_force_from)
    }
}

impl std::error::Error for AgeRequirement {}

fn describe_age(years: u32, months: u32) -> String {
    let unit = |n: u32, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    match (years, months) {
        (y, 0) => unit(y, "year", "years"),
        (0, m) => unit(m, "month", "months"),
        (y, m) => format!("{} {}", unit(y, "year", "years"), unit(m, "month", "months")),
    }
}

/// Age in completed years on `on`, counted as Japanese law does (年齢計算ニ関スル法律 with
/// 民法143条): a year of age is reached on the day *before* the birthday, and someone born on
/// 29 February reaches it on 28 February in common years. Zero before birth.
pub fn age_in_years(birth: NaiveDate, on: NaiveDate) -> u32 {
    age_in_months(birth, on) / 12
}

/// Age in completed months on `on`, by the same convention as [`age_in_years`]: a month of age is
/// reached on the day before the monthly anniversary, or on the month's last day when the month
/// has no such day (born 31 January: one month old on 28 February). Zero before birth.
pub fn age_in_months(birth: NaiveDate, on: NaiveDate) -> u32 {
    // Ordinary counting on the following day gives the legal answer, including for the
    // anniversaries a month lacks: the day after a month's end is the 1st of the next month.
    let day = on.succ_opt().unwrap_or(on);
    if day <= birth {
        return 0;
    }
    let months = (i64::from(day.year()) - i64::from(birth.year())) * 12 + i64::from(day.month())
        - i64::from(birth.month())
        - i64::from(day.day() < birth.day());
    u32::try_from(months).unwrap_or(0)
}

/// [from, until) in which a rule applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Validity {
    from: NaiveDate,
    until: Option<NaiveDate>,
}

impl Validity {
    fn new(from: NaiveDate, until: Option<NaiveDate>) -> Result<Self, String> {
        match until {
            Some(until) if until <= from => Err(format!("until {until} is not after from {from}")),
            _ => Ok(Self { from, until }),
        }
    }

    fn contains(self, date: NaiveDate) -> bool {
        self.from <= date && self.until.is_none_or(|until| date < until)
    }

    fn overlaps(self, other: Self) -> bool {
        self.until.is_none_or(|until| other.from < until) && other.until.is_none_or(|until| self.from < until)
    }
}

/// One element of a lot pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LotToken {
    Letter,
    Digit,
    Any,
    Literal(char),
}

fn parse_lot_pattern(pattern: &str) -> Result<Vec<LotToken>, String> {
    let printable = |c: char| c.is_ascii_graphic();
    let mut tokens = Vec::new();
    let mut chars = pattern.chars().enumerate();
    while let Some((at, c)) = chars.next() {
        tokens.push(match c {
            'A' => LotToken::Letter,
            '9' => LotToken::Digit,
            '*' => LotToken::Any,
            '\\' => match chars.next() {
                Some((_, escaped)) if printable(escaped) => LotToken::Literal(escaped),
                _ => return Err(format!("'\\' at position {at} escapes nothing printable")),
            },
            c if printable(c) => LotToken::Literal(c),
            c => return Err(format!("character {c:?} at position {at} is not allowed")),
        });
    }
    let fixed = tokens.iter().filter(|t| **t != LotToken::Any).count();
    if tokens.is_empty() {
        Err("empty pattern".to_owned())
    } else if fixed > MAX_LOT_LEN {
        // Such a pattern could only match lots the ledger cannot hold.
        Err(format!("needs {fixed} characters, more than {MAX_LOT_LEN}"))
    } else {
        Ok(tokens)
    }
}

fn lot_matches(tokens: &[LotToken], text: &[char]) -> bool {
    match tokens.split_first() {
        None => text.is_empty(),
        Some((LotToken::Any, rest)) => {
            (0..=text.len().min(MAX_LOT_LEN)).any(|taken| text.get(taken..).is_some_and(|tail| lot_matches(rest, tail)))
        }
        Some((token, rest)) => text.split_first().is_some_and(|(&c, tail)| {
            let fits = match *token {
                LotToken::Letter => c.is_ascii_uppercase(),
                LotToken::Digit => c.is_ascii_digit(),
                LotToken::Literal(literal) => c == literal,
                LotToken::Any => false,
            };
            fits && lot_matches(rest, tail)
        }),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueFile {
    format: u32,
    #[serde(default)]
    #[allow(dead_code)] // documentation for readers of the file
    note: Option<String>,
    products: Vec<Product>,
    #[serde(default)]
    age_rules: Vec<AgeRuleFile>,
    #[serde(default)]
    interval_rules: Vec<IntervalRuleFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgeRuleFile {
    id: String,
    products: Vec<ProductCode>,
    from: NaiveDate,
    until: Option<NaiveDate>,
    #[serde(default)]
    min_years: u32,
    #[serde(default)]
    min_months: u32,
    max_years: Option<u32>,
    #[allow(dead_code)] // documentation for readers of the file
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IntervalRuleFile {
    id: String,
    dose: Option<u8>,
    dose_from: Option<u8>,
    prev: Option<Vec<ProductCode>>,
    next: Option<Vec<ProductCode>>,
    same_product: Option<bool>,
    min_clear_days: Option<u32>,
    min_months: Option<u32>,
    from: NaiveDate,
    until: Option<NaiveDate>,
    #[allow(dead_code)] // documentation for readers of the file
    note: Option<String>,
}

#[derive(Clone, Debug)]
struct AgeRule {
    id: String,
    products: Vec<ProductCode>,
    validity: Validity,
    /// Minimum age as total completed months.
    min_months: u32,
    max_years: Option<u32>,
}

impl AgeRule {
    fn requirement(&self, product: &ProductCode) -> AgeRequirement {
        AgeRequirement {
            product: product.clone(),
            min_years: self.min_months / 12,
            min_months: self.min_months % 12,
            max_years: self.max_years,
            in_force_from: self.validity.from,
            rule: self.id.clone(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Interval {
    ClearDays(u32),
    Months(u32),
}

impl Interval {
    fn earliest_after(self, date: NaiveDate) -> Option<NaiveDate> {
        match self {
            Self::ClearDays(days) => date.checked_add_days(Days::new(u64::from(days) + 1)),
            // chrono clamps to the month's last day, as the rule wants.
            Self::Months(months) => date.checked_add_months(Months::new(months)),
        }
    }
}

#[derive(Clone, Debug)]
struct IntervalRule {
    dose_from: u8,
    dose_to: Option<u8>,
    prev: Option<Vec<ProductCode>>,
    next: Option<Vec<ProductCode>>,
    same_product: Option<bool>,
    interval: Interval,
    validity: Validity,
}

impl IntervalRule {
    fn applies(&self, prev: &ProductCode, next: &ProductCode, number: u8, on: NaiveDate) -> bool {
        self.validity.contains(on)
            && number >= self.dose_from
            && self.dose_to.is_none_or(|to| number <= to)
            && self.next.as_ref().is_none_or(|codes| codes.contains(next))
            && self.prev.as_ref().is_none_or(|codes| codes.contains(prev))
            && self.same_product.is_none_or(|same| (prev == next) == same)
    }
}

/// The vaccine products and the schedule rules in force over time.
#[derive(Clone, Debug)]
pub struct Catalogue {
    products: Vec<Product>,
    /// Parsed lot patterns, by the product's position.
    lot_patterns: Vec<Option<Vec<LotToken>>>,
    by_code: HashMap<String, usize>,
    age_rules: Vec<AgeRule>,
    interval_rules: Vec<IntervalRule>,
}

impl Catalogue {
    /// The catalogue shipped with the crate ([`BUILTIN_JSON`]), parsed once.
    ///
    /// # Panics
    ///
    /// Only if the shipped file were invalid, which this module's tests rule out.
    pub fn builtin() -> &'static Catalogue {
        static BUILTIN: OnceLock<Catalogue> = OnceLock::new();
        BUILTIN.get_or_init(|| match Catalogue::from_json(BUILTIN_JSON) {
            Ok(catalogue) => catalogue,
            Err(err) => panic!("the builtin vaccine catalogue is invalid: {err}"),
        })
    }

    /// Reads and checks a catalogue file (format in the [module documentation](self)).
    ///
    /// Rejected with [`Error::Catalogue`]: malformed JSON or unknown fields, duplicate product
    /// codes or rule ids, rules naming unknown products or products of different families,
    /// `until` not after `from`, overlapping age rules of one product, malformed lot patterns.
    pub fn from_json(text: &str) -> crate::Result<Catalogue> {
        let file: CatalogueFile = serde_json::from_str(text).map_err(|err| catalogue_error(err.to_string()))?;
        if file.format != FORMAT {
            return Err(catalogue_error(format!("format {} is not supported (expected {FORMAT})", file.format)));
        }

        let mut by_code = HashMap::new();
        let mut lot_patterns = Vec::with_capacity(file.products.len());
        for (at, product) in file.products.iter().enumerate() {
            let place = format!("products[{at}] ({})", product.code);
            check_product(product).map_err(|why| catalogue_error(format!("{place}: {why}")))?;
            if by_code.insert(product.code.as_str().to_owned(), at).is_some() {
                return Err(catalogue_error(format!("{place}: duplicate code")));
            }
            for gtin in &product.gtins {
                if !crate::scan::label::gtin_is_valid(gtin) {
                    return Err(catalogue_error(format!("{place}: gtin {gtin:?} is not 14 digits with a valid GS1 check digit")));
                }
                if file.products[..at].iter().any(|other| other.gtins.contains(gtin)) {
                    return Err(catalogue_error(format!("{place}: gtin {gtin} is listed twice")));
                }
            }
            let pattern = product
                .lot_pattern
                .as_deref()
                .map(parse_lot_pattern)
                .transpose()
                .map_err(|why| catalogue_error(format!("{place}: lot_pattern: {why}")))?;
            lot_patterns.push(pattern);
        }
        let family =
            |code: &ProductCode| by_code.get(code.as_str()).and_then(|&at| file.products.get(at)).map(|product| product.family.as_str());
        // Every code a rule names must exist, and all of them share one family, because dose
        // numbers and intervals only make sense within a family.
        let check_codes = |codes: &[&ProductCode]| -> Result<(), String> {
            let mut families = HashSet::new();
            for code in codes {
                families.insert(family(code).ok_or_else(|| format!("unknown product {code}"))?);
            }
            match families.len() {
                0 | 1 => Ok(()),
                _ => Err("names products of different families".to_owned()),
            }
        };

        let mut ids = HashSet::new();
        let mut age_rules: Vec<AgeRule> = Vec::with_capacity(file.age_rules.len());
        for (at, rule) in file.age_rules.into_iter().enumerate() {
            let place = format!("age_rules[{at}] ({})", rule.id);
            let fail = |why: String| catalogue_error(format!("{place}: {why}"));
            if !ids.insert(rule.id.clone()) {
                return Err(fail("duplicate id".to_owned()));
            }
            if rule.products.is_empty() {
                return Err(fail("names no product".to_owned()));
            }
            check_codes(&rule.products.iter().collect::<Vec<_>>()).map_err(fail)?;
            let validity = Validity::new(rule.from, rule.until).map_err(fail)?;
            let min_months = rule
                .min_years
                .checked_mul(12)
                .and_then(|months| months.checked_add(rule.min_months))
                .ok_or_else(|| fail("minimum age out of range".to_owned()))?;
            if let Some(max) = rule.max_years
                && u64::from(max) * 12 + 11 < u64::from(min_months)
            {
                return Err(fail(format!("max_years {max} is below the minimum")));
            }
            let clash = age_rules
                .iter()
                .find(|other| other.validity.overlaps(validity) && other.products.iter().any(|code| rule.products.contains(code)));
            if let Some(other) = clash {
                return Err(fail(format!("overlaps {} for the same product", other.id)));
            }
            age_rules.push(AgeRule { id: rule.id, products: rule.products, validity, min_months, max_years: rule.max_years });
        }

        let mut interval_rules = Vec::with_capacity(file.interval_rules.len());
        for (at, rule) in file.interval_rules.into_iter().enumerate() {
            let place = format!("interval_rules[{at}] ({})", rule.id);
            let fail = |why: String| catalogue_error(format!("{place}: {why}"));
            if !ids.insert(rule.id.clone()) {
                return Err(fail("duplicate id".to_owned()));
            }
            let (dose_from, dose_to) = match (rule.dose, rule.dose_from) {
                (Some(dose), None) => (dose, Some(dose)),
                (None, Some(dose)) => (dose, None),
                _ => return Err(fail("give exactly one of dose and dose_from".to_owned())),
            };
            if dose_from < 2 {
                return Err(fail("the later dose of a pair is dose 2 or later".to_owned()));
            }
            let interval = match (rule.min_clear_days, rule.min_months) {
                (Some(days), None) => Interval::ClearDays(days),
                (None, Some(months)) => Interval::Months(months),
                _ => return Err(fail("give exactly one of min_clear_days and min_months".to_owned())),
            };
            for (field, codes) in [("prev", &rule.prev), ("next", &rule.next)] {
                if codes.as_ref().is_some_and(Vec::is_empty) {
                    return Err(fail(format!("{field} names no product")));
                }
            }
            let named: Vec<&ProductCode> = rule.prev.iter().chain(&rule.next).flatten().collect();
            check_codes(&named).map_err(fail)?;
            interval_rules.push(IntervalRule {
                dose_from,
                dose_to,
                prev: rule.prev,
                next: rule.next,
                same_product: rule.same_product,
                interval,
                validity: Validity::new(rule.from, rule.until).map_err(fail)?,
            });
        }

        Ok(Catalogue { products: file.products, lot_patterns, by_code, age_rules, interval_rules })
    }

    /// The product with this code, if the catalogue has it.
    pub fn product(&self, code: &str) -> Option<&Product> {
        self.by_code.get(code).and_then(|&at| self.products.get(at))
    }

    /// Every product, in file order.
    pub fn products(&self) -> impl Iterator<Item = &Product> {
        self.products.iter()
    }

    /// The product whose packs carry this GTIN-14 (see [`Product::gtins`]).
    pub fn product_by_gtin(&self, gtin: &str) -> Option<&Product> {
        self.products.iter().find(|product| product.gtins.iter().any(|g| g == gtin))
    }

    /// Earliest date dose `next_number` of product `next` may be given after dose `prev_number`
    /// of product `prev` given on `prev_date`, under the rules in force on `next_date`.
    ///
    /// None when no rule allows that dose number at that date at all: unknown products, products
    /// of different families, numbers that are not consecutive (`next_number` must be
    /// `prev_number + 1`), or no rule in force for that pair (e.g. dose 3 before 2021-12-01).
    pub fn earliest_next_dose(
        &self,
        prev: &ProductCode,
        prev_number: u8,
        prev_date: NaiveDate,
        next: &ProductCode,
        next_number: u8,
        next_date: NaiveDate,
    ) -> Option<NaiveDate> {
        let prev_family = &self.product(prev.as_str())?.family;
        let next_family = &self.product(next.as_str())?.family;
        if prev_family != next_family || prev_number.checked_add(1) != Some(next_number) {
            return None;
        }
        let mut earliest = None;
        for rule in self.interval_rules.iter().filter(|rule| rule.applies(prev, next, next_number, next_date)) {
            // A date past the calendar's end cannot be met: no allowed date.
            earliest = earliest.max(Some(rule.interval.earliest_after(prev_date)?));
        }
        earliest
    }

    /// Minimum (and for paediatric products maximum) age check on the day of vaccination,
    /// ages counted as Japanese law does ([`age_in_years`], [`age_in_months`]).
    ///
    /// The rule in force on `on` applies; before a product's first rule its first rule applies,
    /// after its last has ended the last one does. A product with no age rule (or unknown to the
    /// catalogue, which registration rejects earlier) has no requirement.
    pub fn check_age(&self, product: &ProductCode, birth_date: NaiveDate, on: NaiveDate) -> Result<(), AgeRequirement> {
        let rules: Vec<&AgeRule> = self.age_rules.iter().filter(|rule| rule.products.contains(product)).collect();
        let rule = rules
            .iter()
            .find(|rule| rule.validity.contains(on))
            .or_else(|| rules.iter().filter(|rule| rule.validity.from > on).min_by_key(|rule| rule.validity.from))
            .or_else(|| rules.iter().max_by_key(|rule| rule.validity.from));
        let Some(rule) = rule else {
            return Ok(());
        };
        let old_enough = age_in_months(birth_date, on) >= rule.min_months;
        let young_enough = rule.max_years.is_none_or(|max| age_in_years(birth_date, on) <= max);
        if old_enough && young_enough { Ok(()) } else { Err(rule.requirement(product)) }
    }

    /// Whether a lot number (ロット番号) looks plausible for the product: trimmed, non-empty, at
    /// most [`MAX_LOT_LEN`] characters, no control characters, and fitting the product's pattern
    /// when it has one. A mismatch is a warning for review, not a rejection. False for a product
    /// the catalogue does not know.
    pub fn lot_plausible(&self, product: &ProductCode, lot: &str) -> bool {
        let lot: Vec<char> = lot.trim().chars().collect();
        if lot.is_empty() || lot.len() > MAX_LOT_LEN || lot.iter().any(|c| c.is_control()) {
            return false;
        }
        match self.by_code.get(product.as_str()).map(|&at| self.lot_patterns.get(at)) {
            Some(Some(Some(tokens))) => lot_matches(tokens, &lot),
            Some(Some(None)) => true,
            _ => false,
        }
    }
}

fn catalogue_error(detail: String) -> Error {
    Error::Catalogue { detail }
}

fn check_product(product: &Product) -> Result<(), String> {
    let code = product.code.as_str();
    if code.is_empty() || !code.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        return Err("code must be lowercase ASCII letters, digits and '-'".to_owned());
    }
    for (field, value) in [("name", &product.name), ("maker", &product.maker), ("family", &product.family)] {
        if value.trim().is_empty() {
            return Err(format!("{field} is empty"));
        }
    }
    if product.maker.chars().count() > MAX_MAKER_LEN {
        return Err(format!("maker is longer than the ledger's {MAX_MAKER_LEN} characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn code(c: &str) -> ProductCode {
        ProductCode::new(c)
    }

    fn cat() -> &'static Catalogue {
        Catalogue::builtin()
    }

    /// Earliest dose 2 after dose 1 on `dose1`, asked on `on`.
    fn dose2(prev: &str, next: &str, dose1: NaiveDate, on: NaiveDate) -> Option<NaiveDate> {
        cat().earliest_next_dose(&code(prev), 1, dose1, &code(next), 2, on)
    }

    #[test]
    fn builtin_file_parses() {
        let catalogue = Catalogue::from_json(BUILTIN_JSON).unwrap();
        assert!(catalogue.products().count() >= 13);
        assert!(catalogue.products().all(|p| p.family == "covid-19"));
        // Every product has an age rule, so nothing escapes the age check.
        for product in catalogue.products() {
            assert!(catalogue.age_rules.iter().any(|r| r.products.contains(&product.code)), "{} has no age rule", product.code);
        }
    }

    #[test]
    fn products_carry_makers_and_cvx() {
        let expected = [
            ("pfizer", "ファイザー", Some(208)),
            ("moderna", "武田/モデルナ", Some(207)),
            ("astrazeneca", "アストラゼネカ", Some(210)),
            ("novavax", "武田 (Novavax)", Some(211)),
            ("pfizer-5-11", "ファイザー", Some(218)),
            ("pfizer-6m-4y", "ファイザー", Some(219)),
            ("pfizer-bivalent-ba1", "ファイザー", Some(300)),
            ("pfizer-bivalent-ba45", "ファイザー", Some(300)),
            ("moderna-bivalent-ba1", "武田/モデルナ", Some(229)),
            ("moderna-bivalent-ba45", "武田/モデルナ", Some(229)),
            ("pfizer-xbb", "ファイザー", Some(308)),
            ("moderna-xbb", "武田/モデルナ", Some(312)),
            ("daiichi-xbb", "第一三共", None),
        ];
        for (c, maker, cvx) in expected {
            let product = cat().product(c).unwrap();
            assert_eq!(product.maker, maker, "{c}");
            assert_eq!(product.cvx, cvx, "{c}");
        }
        assert_eq!(cat().product("pfizer-6m-4y").unwrap().primary_series_doses, 3);
        assert_eq!(cat().product("pfizer").unwrap().primary_series_doses, 2);
        assert!(cat().product("sputnik").is_none());
        assert_eq!(code("pfizer").to_string(), "pfizer");
    }

    #[test]
    fn product_code_is_a_json_string() {
        assert_eq!(serde_json::to_string(&code("moderna")).unwrap(), "\"moderna\"");
        let back: ProductCode = serde_json::from_str("\"pfizer-5-11\"").unwrap();
        assert_eq!(back.as_str(), "pfizer-5-11");
    }

    #[test]
    fn dose_2_minimum_clear_days_per_product() {
        let d1 = date(2022, 6, 1);
        let on = date(2022, 12, 1);
        for (product, clear_days) in [("pfizer", 18), ("moderna", 20), ("astrazeneca", 27), ("novavax", 20)] {
            assert_eq!(dose2(product, product, d1, on), Some(d1 + Days::new(clear_days + 1)), "{product}");
        }
    }

    #[test]
    fn pfizer_dose_2_day_18_is_too_early_and_day_19_is_allowed() {
        let d1 = date(2021, 6, 1);
        let earliest = dose2("pfizer", "pfizer", d1, date(2021, 6, 20)).unwrap();
        assert!(d1 + Days::new(18) < earliest);
        assert_eq!(earliest, d1 + Days::new(19));
    }

    #[test]
    fn mixed_products_need_27_clear_days() {
        let d1 = date(2021, 9, 1);
        let on = date(2021, 11, 1);
        assert_eq!(dose2("astrazeneca", "pfizer", d1, on), Some(d1 + Days::new(28)));
        assert_eq!(dose2("pfizer", "moderna", d1, on), Some(d1 + Days::new(28)));
    }

    #[test]
    fn late_dose_2_has_no_upper_limit() {
        let d1 = date(2021, 6, 1);
        assert_eq!(dose2("pfizer", "pfizer", d1, date(2023, 1, 1)), Some(d1 + Days::new(19)));
    }

    #[test]
    fn infant_primary_series_has_three_doses() {
        let p = code("pfizer-6m-4y");
        let d1 = date(2022, 11, 1);
        let on = date(2023, 3, 1);
        assert_eq!(cat().earliest_next_dose(&p, 1, d1, &p, 2, on), Some(date(2022, 11, 20)));
        let d2 = date(2022, 11, 22);
        // 8 weeks: 55 clear days, the 56th day after dose 2.
        assert_eq!(cat().earliest_next_dose(&p, 2, d2, &p, 3, on), Some(d2 + Days::new(56)));
    }

    #[test]
    fn dose_3_before_december_2021_has_no_rule() {
        let p = code("pfizer");
        let d2 = date(2021, 3, 1);
        assert_eq!(cat().earliest_next_dose(&p, 2, d2, &p, 3, date(2021, 11, 30)), None);
        assert!(cat().earliest_next_dose(&p, 2, d2, &p, 3, date(2021, 12, 1)).is_some());
    }

    #[test]
    fn booster_intervals_follow_the_dates() {
        let p = code("pfizer");
        let d2 = date(2021, 4, 20);
        let at = |on| cat().earliest_next_dose(&p, 2, d2, &p, 3, on);
        assert_eq!(at(date(2021, 12, 20)), Some(date(2021, 12, 20)), "8 months");
        assert_eq!(at(date(2022, 1, 15)), Some(date(2021, 11, 20)), "7 months");
        assert_eq!(at(date(2022, 3, 15)), Some(date(2021, 10, 20)), "6 months");

        let d3 = date(2022, 1, 10);
        let dose4 = |on| cat().earliest_next_dose(&p, 3, d3, &p, 4, on);
        assert_eq!(dose4(date(2022, 5, 24)), None, "no dose 4 before 2022-05-25");
        assert_eq!(dose4(date(2022, 6, 10)), Some(date(2022, 6, 10)), "5 months");
    }

    #[test]
    fn omicron_and_xbb_boosters_at_3_months() {
        let bivalent = code("pfizer-bivalent-ba45");
        let prev = date(2023, 1, 15);
        assert_eq!(cat().earliest_next_dose(&bivalent, 4, prev, &bivalent, 5, date(2023, 5, 1)), Some(date(2023, 4, 15)));
        // Month-end clamping: three months after 30 November is 28 February.
        assert_eq!(
            cat().earliest_next_dose(&code("pfizer"), 2, date(2022, 11, 30), &bivalent, 3, date(2023, 3, 1)),
            Some(date(2023, 2, 28))
        );
        let xbb = code("pfizer-xbb");
        assert_eq!(cat().earliest_next_dose(&bivalent, 5, date(2023, 7, 1), &xbb, 6, date(2023, 10, 2)), Some(date(2023, 10, 1)));
        assert_eq!(
            cat().earliest_next_dose(&bivalent, 5, date(2023, 7, 1), &xbb, 6, date(2023, 9, 19)),
            None,
            "XBB boosters start 2023-09-20"
        );
    }

    #[test]
    fn novavax_boosters_at_6_months() {
        let novavax = code("novavax");
        assert_eq!(cat().earliest_next_dose(&code("pfizer"), 3, date(2022, 6, 1), &novavax, 4, date(2023, 1, 10)), Some(date(2022, 12, 1)));
    }

    #[test]
    fn non_consecutive_numbers_and_unknown_products_have_no_rule() {
        let p = code("pfizer");
        let on = date(2022, 1, 1);
        assert_eq!(cat().earliest_next_dose(&p, 1, date(2021, 6, 1), &p, 3, on), None);
        assert_eq!(cat().earliest_next_dose(&p, 2, date(2021, 6, 1), &p, 2, on), None);
        assert_eq!(cat().earliest_next_dose(&code("x"), 1, date(2021, 6, 1), &p, 2, on), None);
    }

    #[test]
    fn age_counts_the_day_before_the_birthday() {
        let born = date(2000, 4, 2);
        assert_eq!(age_in_years(born, date(2021, 3, 31)), 20);
        assert_eq!(age_in_years(born, date(2021, 4, 1)), 21, "eve of the birthday");
        assert_eq!(age_in_years(born, date(2021, 4, 2)), 21, "birthday");
        // Born 1 April: a year older on 31 March (why they join the earlier school year).
        assert_eq!(age_in_years(date(2000, 4, 1), date(2021, 3, 31)), 21);
        assert_eq!(age_in_years(born, born), 0);
        assert_eq!(age_in_years(born, date(1999, 1, 1)), 0);
    }

    #[test]
    fn age_of_someone_born_on_29_february() {
        let born = date(2008, 2, 29);
        assert_eq!(age_in_years(born, date(2021, 2, 27)), 12);
        assert_eq!(age_in_years(born, date(2021, 2, 28)), 13);
        assert_eq!(age_in_years(born, date(2024, 2, 27)), 15);
        assert_eq!(age_in_years(born, date(2024, 2, 28)), 16);
    }

    #[test]
    fn age_in_months_at_month_ends() {
        let born = date(2021, 1, 31);
        assert_eq!(age_in_months(born, date(2021, 2, 27)), 0);
        assert_eq!(age_in_months(born, date(2021, 2, 28)), 1, "February has no 31st");
        assert_eq!(age_in_months(born, date(2021, 3, 29)), 1);
        assert_eq!(age_in_months(born, date(2021, 3, 30)), 2);
        assert_eq!(age_in_months(date(2022, 4, 24), date(2022, 10, 23)), 6);
        assert_eq!(age_in_months(date(2022, 4, 24), date(2022, 10, 22)), 5);
    }

    /// Birth date of someone who turns `years` (legally) on `on`.
    fn turning(years: i32, on: NaiveDate) -> NaiveDate {
        let birthday = on + Days::new(1);
        date(birthday.year() - years, birthday.month(), birthday.day())
    }

    #[test]
    fn pfizer_minimum_age_16_then_12_from_june_2021() {
        let p = code("pfizer");
        let may = date(2021, 5, 31);
        assert!(cat().check_age(&p, turning(16, may), may).is_ok());
        let err = cat().check_age(&p, turning(16, may) + Days::new(1), may).unwrap_err();
        assert_eq!((err.min_years, err.max_years, err.rule.as_str()), (16, None, "pfizer-16-and-over"));
        let june = date(2021, 6, 1);
        assert!(cat().check_age(&p, turning(12, june), june).is_ok());
        assert!(cat().check_age(&p, turning(12, june) + Days::new(1), june).is_err());
        assert!(cat().check_age(&p, turning(12, may), may).is_err());
        // Before the programme the first rule applies.
        assert_eq!(cat().check_age(&p, date(2010, 1, 1), date(2021, 1, 1)).unwrap_err().min_years, 16);
    }

    #[test]
    fn moderna_minimum_age_18_then_12_from_16_july_2021() {
        let m = code("moderna");
        let before = date(2021, 7, 15);
        assert!(cat().check_age(&m, turning(18, before), before).is_ok());
        assert!(cat().check_age(&m, turning(17, before), before).is_err());
        let after = date(2021, 7, 16);
        assert!(cat().check_age(&m, turning(12, after), after).is_ok());
        assert!(cat().check_age(&m, turning(11, after), after).is_err());
    }

    #[test]
    fn astrazeneca_40_and_novavax_18() {
        let on = date(2022, 8, 1);
        assert!(cat().check_age(&code("astrazeneca"), turning(40, on), on).is_ok());
        assert_eq!(cat().check_age(&code("astrazeneca"), turning(39, on), on).unwrap_err().min_years, 40);
        assert!(cat().check_age(&code("novavax"), turning(18, on), on).is_ok());
        assert!(cat().check_age(&code("novavax"), turning(17, on), on).is_err());
    }

    #[test]
    fn paediatric_products_have_an_age_band() {
        let kids = code("pfizer-5-11");
        let on = date(2022, 3, 1);
        assert!(cat().check_age(&kids, turning(5, on), on).is_ok());
        assert!(cat().check_age(&kids, turning(11, on), on).is_ok());
        assert!(cat().check_age(&kids, turning(4, on), on).is_err());
        let err = cat().check_age(&kids, turning(12, on), on).unwrap_err();
        assert_eq!((err.min_years, err.max_years), (5, Some(11)));
        assert_eq!(err.in_force_from, date(2022, 2, 21));

        let infants = code("pfizer-6m-4y");
        let on = date(2022, 10, 24);
        assert!(cat().check_age(&infants, date(2022, 4, 25), on).is_ok(), "6 months on the eve");
        let err = cat().check_age(&infants, date(2022, 4, 26), on).unwrap_err();
        assert_eq!((err.min_years, err.min_months, err.max_years), (0, 6, Some(4)));
        assert!(cat().check_age(&infants, turning(4, on), on).is_ok());
        assert!(cat().check_age(&infants, turning(5, on), on).is_err());
    }

    #[test]
    fn omicron_products_age_minimums() {
        let on = date(2023, 1, 10);
        assert!(cat().check_age(&code("pfizer-bivalent-ba45"), turning(12, on), on).is_ok());
        assert!(cat().check_age(&code("pfizer-bivalent-ba45"), turning(11, on), on).is_err());
        assert!(cat().check_age(&code("moderna-bivalent-ba45"), turning(17, on), on).is_err());
        assert!(cat().check_age(&code("moderna-bivalent-ba45"), turning(18, on), on).is_ok());
        let later = date(2024, 1, 10);
        assert!(cat().check_age(&code("daiichi-xbb"), turning(12, later), later).is_ok());
        assert!(cat().check_age(&code("pfizer-xbb"), turning(11, later), later).is_err());
    }

    #[test]
    fn age_requirement_reads_plainly() {
        let on = date(2022, 3, 1);
        let err = cat().check_age(&code("pfizer-5-11"), turning(12, on), on).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pfizer-5-11 is for people aged 5 years to 11 years on the day of vaccination \
             (rule pfizer-5-11-paediatric in force from 2022-02-21)"
        );
        let err = cat().check_age(&code("pfizer-6m-4y"), date(2022, 10, 1), date(2022, 10, 24)).unwrap_err();
        assert!(err.to_string().contains("aged 6 months to 4 years"), "{err}");
        let err = cat().check_age(&code("pfizer"), on, date(2022, 10, 24)).unwrap_err();
        assert!(err.to_string().contains("aged 12 years or over"), "{err}");
    }

    #[test]
    fn lot_patterns() {
        let pfizer = code("pfizer");
        let moderna = code("moderna");
        assert!(cat().lot_plausible(&pfizer, "FA5765"));
        assert!(cat().lot_plausible(&pfizer, " FA5765 "), "trimmed");
        assert!(!cat().lot_plausible(&pfizer, "FA57"));
        assert!(!cat().lot_plausible(&pfizer, "fa5765"), "nothing normalised but spaces");
        assert!(!cat().lot_plausible(&pfizer, "3004734"));
        assert!(cat().lot_plausible(&moderna, "3004734"));
        assert!(!cat().lot_plausible(&moderna, "FA5765"));
        // No pattern: any text up to 20 characters.
        let az = code("astrazeneca");
        assert!(cat().lot_plausible(&az, "ABV5300"));
        assert!(cat().lot_plausible(&az, "ロット1"));
        assert!(!cat().lot_plausible(&az, "   "));
        assert!(!cat().lot_plausible(&az, &"X".repeat(21)));
        assert!(!cat().lot_plausible(&code("unknown"), "FA5765"));
    }

    #[test]
    fn lot_pattern_language() {
        let fits = |pattern: &str, lot: &str| {
            let tokens = parse_lot_pattern(pattern).unwrap();
            lot_matches(&tokens, &lot.chars().collect::<Vec<_>>())
        };
        assert!(fits("AA9999", "EW0150"));
        assert!(fits("\\A-9*", "A-1"));
        assert!(fits("\\A-9*", "A-1xyz"));
        assert!(!fits("\\A-9*", "B-1"));
        assert!(fits("*9", "ab7"));
        assert!(!fits("*9", "ab"));
        assert!(parse_lot_pattern("").is_err());
        assert!(parse_lot_pattern("AA99\\").is_err());
        assert!(parse_lot_pattern("AA 99").is_err());
        assert!(parse_lot_pattern("ＡＡ99").is_err());
        assert!(parse_lot_pattern(&"9".repeat(21)).is_err());
    }

    /// A one-product catalogue with an interval rule, for the rejection tests.
    fn file_with(product_extra: &str, rule: &str) -> String {
        format!(
            r#"{{"format": 1,
                "products": [{{"code": "p", "name": "名", "maker": "M", "family": "f",
                               "primary_series_doses": 2, "available_from": "2021-01-01"{product_extra}}}],
                "interval_rules": [{rule}]}}"#
        )
    }

    fn rejected(text: &str) -> String {
        match Catalogue::from_json(text) {
            Err(Error::Catalogue { detail }) => detail,
            Err(other) => panic!("not a catalogue error: {other}"),
            Ok(_) => panic!("accepted: {text}"),
        }
    }

    #[test]
    fn from_json_accepts_a_small_catalogue() {
        let rule = r#"{"id": "r", "dose": 2, "min_clear_days": 6, "from": "2021-01-01"}"#;
        let catalogue = Catalogue::from_json(&file_with(r#", "lot_pattern": "9A""#, rule)).unwrap();
        let p = code("p");
        assert_eq!(catalogue.earliest_next_dose(&p, 1, date(2021, 2, 1), &p, 2, date(2021, 3, 1)), Some(date(2021, 2, 8)));
        assert!(catalogue.lot_plausible(&p, "1Z"));
        // No age rule: no requirement.
        assert!(catalogue.check_age(&p, date(2021, 1, 1), date(2021, 1, 1)).is_ok());
    }

    #[test]
    fn from_json_rejects_inconsistent_files() {
        let ok_rule = r#"{"id": "r", "dose": 2, "min_clear_days": 6, "from": "2021-01-01"}"#;
        let detail = rejected(&file_with("", r#"{"id": "r", "dose": 2, "next": ["q"], "min_clear_days": 6, "from": "2021-01-01"}"#));
        assert!(detail.contains("unknown product q"), "{detail}");
        let detail = rejected(&file_with(r#", "lot_pattern": "AA9\\""#, ok_rule));
        assert!(detail.contains("lot_pattern"), "{detail}");
        let detail =
            rejected(&file_with("", r#"{"id": "r", "dose": 2, "min_clear_days": 6, "from": "2021-01-01", "until": "2021-01-01"}"#));
        assert!(detail.contains("not after"), "{detail}");
        let detail = rejected(&file_with("", r#"{"id": "r", "dose": 2, "min_clear_days": 6, "min_months": 1, "from": "2021-01-01"}"#));
        assert!(detail.contains("exactly one"), "{detail}");
        let detail = rejected(&file_with("", r#"{"id": "r", "dose": 1, "min_clear_days": 6, "from": "2021-01-01"}"#));
        assert!(detail.contains("dose 2"), "{detail}");
        let detail = rejected(&file_with(r#", "colour": "red""#, ok_rule));
        assert!(detail.contains("colour"), "{detail}");
        let detail = rejected(&file_with("", &format!("{ok_rule}, {ok_rule}")));
        assert!(detail.contains("duplicate id"), "{detail}");
        let detail = rejected(&file_with(r#", "maker": "M""#, ok_rule));
        assert!(detail.contains("maker"), "{detail}");
        let detail = rejected(&BUILTIN_JSON.replace("\"format\": 1", "\"format\": 2"));
        assert!(detail.contains("format 2"), "{detail}");
        let detail = rejected("{");
        assert!(detail.contains("line 1"), "{detail}");
    }

    #[test]
    fn from_json_rejects_duplicate_codes_and_overlapping_age_rules() {
        let product = r#"{"code": "p", "name": "名", "maker": "M", "family": "f",
                          "primary_series_doses": 2, "available_from": "2021-01-01"}"#;
        let detail = rejected(&format!(r#"{{"format": 1, "products": [{product}, {product}]}}"#));
        assert!(detail.contains("duplicate code"), "{detail}");
        let detail = rejected(&format!(
            r#"{{"format": 1, "products": [{product}], "age_rules": [
                {{"id": "a", "products": ["p"], "from": "2021-01-01", "until": "2021-06-01", "min_years": 16}},
                {{"id": "b", "products": ["p"], "from": "2021-05-01", "min_years": 12}}]}}"#
        ));
        assert!(detail.contains("overlaps a"), "{detail}");
        let detail = rejected(&format!(
            r#"{{"format": 1, "products": [{product}], "age_rules": [
                {{"id": "a", "products": ["p"], "from": "2021-01-01", "min_years": 12, "max_years": 5}}]}}"#
        ));
        assert!(detail.contains("max_years"), "{detail}");
    }

    #[test]
    fn from_json_rejects_rules_across_families() {
        let text = r#"{"format": 1, "products": [
            {"code": "p", "name": "名", "maker": "M", "family": "f", "primary_series_doses": 2, "available_from": "2021-01-01"},
            {"code": "q", "name": "名", "maker": "M", "family": "g", "primary_series_doses": 2, "available_from": "2021-01-01"}],
            "interval_rules": [{"id": "r", "dose": 2, "prev": ["p"], "next": ["q"], "min_clear_days": 6, "from": "2021-01-01"}]}"#;
        assert!(rejected(text).contains("different families"));
    }

    fn any_date() -> impl Strategy<Value = NaiveDate> {
        (0u64..365 * 12).prop_map(|offset| date(2014, 1, 1) + Days::new(offset))
    }

    fn any_product() -> impl Strategy<Value = ProductCode> {
        let codes: Vec<ProductCode> = cat().products().map(|p| p.code.clone()).collect();
        proptest::sample::select(codes)
    }

    proptest! {
        #[test]
        fn earliest_next_dose_is_monotone_in_prev_date(
            prev in any_product(),
            next in any_product(),
            prev_number in 1u8..7,
            a in any_date(),
            b in any_date(),
            on in any_date(),
        ) {
            let (early, late) = if a <= b { (a, b) } else { (b, a) };
            let first = cat().earliest_next_dose(&prev, prev_number, early, &next, prev_number + 1, on);
            let second = cat().earliest_next_dose(&prev, prev_number, late, &next, prev_number + 1, on);
            prop_assert_eq!(first.is_some(), second.is_some());
            if let (Some(first), Some(second)) = (first, second) {
                prop_assert!(first <= second);
                prop_assert!(first > early, "a later dose is never on the same day");
            }
        }

        #[test]
        fn pfizer_series_is_monotone_and_always_ruled_in_the_omicron_period(
            prev_number in 1u8..6,
            a in any_date(),
            b in any_date(),
            days_after in 0u64..334, // until the XBB programme replaced the monovalent boosters
        ) {
            let pfizer = code("pfizer");
            let (early, late) = if a <= b { (a, b) } else { (b, a) };
            let on = date(2022, 10, 21) + Days::new(days_after);
            let at = |prev_date| {
                cat().earliest_next_dose(&pfizer, prev_number, prev_date, &pfizer, prev_number + 1, on)
            };
            let (first, second) = (at(early), at(late));
            prop_assert!(first.is_some() && second.is_some());
            prop_assert!(first <= second);
        }

        #[test]
        fn years_are_whole_months(birth in any_date(), on in any_date()) {
            prop_assert_eq!(age_in_years(birth, on), age_in_months(birth, on) / 12);
        }

        #[test]
        fn age_never_decreases(birth in any_date(), on in any_date()) {
            let next_day = on + Days::new(1);
            prop_assert!(age_in_months(birth, on) <= age_in_months(birth, next_day));
            prop_assert!(age_in_months(birth, next_day) <= age_in_months(birth, on) + 1);
        }

        #[test]
        fn pfizer_shaped_lots_are_plausible(lot in "[A-Z]{2}[0-9]{4}") {
            prop_assert!(cat().lot_plausible(&code("pfizer"), &lot));
            prop_assert!(!cat().lot_plausible(&code("moderna"), &lot));
        }

        #[test]
        fn lots_too_long_for_the_ledger_are_never_plausible(lot in "[A-Z0-9]{21,30}") {
            for product in cat().products() {
                prop_assert!(!cat().lot_plausible(&product.code, &lot));
            }
        }
    }
}
