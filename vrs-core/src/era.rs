//! Dates as municipal systems write them: Gregorian (`2021-04-01`, `2021/04/01`,
//! `20210401`, `2021年4月1日`) or in a Japanese era (和暦: `令和3年4月1日`, `令和元年5月1日`,
//! `R3.4.1`, `R03.04.01`, `H31.4.30`, `S22.5.3`).
//!
//! # The Meiji convention
//!
//! The Meiji era was proclaimed on 1868-10-23 and applied from the first day of that
//! (lunisolar) year, 慶応4年1月1日, which is 1868-01-25 in the Gregorian calendar. Japan
//! switched to the Gregorian calendar on 明治6年1月1日 (1873-01-01). We use the
//! Gregorian-calendar convention throughout: Meiji year N is the Gregorian year 1867 + N,
//! month and day are Gregorian, and the era starts on 1868-01-25. A date written in the old
//! lunisolar calendar (before 1873) would need a conversion table that we do not ship; such
//! dates cannot be a living resident's birth date anyway.

use std::fmt::Write as _;

use chrono::{Datelike, NaiveDate};

use crate::text::to_halfwidth;
use crate::{Error, Result};

/// A Japanese era (元号) of the modern calendar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Era {
    /// 明治 (M), from 1868-01-25 (Gregorian convention, see the module documentation).
    Meiji,
    /// 大正 (T), 1912-07-30 to 1926-12-24.
    Taisho,
    /// 昭和 (S), 1926-12-25 to 1989-01-07.
    Showa,
    /// 平成 (H), 1989-01-08 to 2019-04-30.
    Heisei,
    /// 令和 (R), from 2019-05-01.
    Reiwa,
}

/// A date known at compile time; an invalid one fails the build, never at run time.
const fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
    match NaiveDate::from_ymd_opt(y, m, d) {
        Some(d) => d,
        None => panic!("invalid era boundary"),
    }
}

const MEIJI_START: NaiveDate = ymd(1868, 1, 25);
const TAISHO_START: NaiveDate = ymd(1912, 7, 30);
const SHOWA_START: NaiveDate = ymd(1926, 12, 25);
const HEISEI_START: NaiveDate = ymd(1989, 1, 8);
const REIWA_START: NaiveDate = ymd(2019, 5, 1);

impl Era {
    /// Every era, oldest first.
    pub const ALL: [Era; 5] = [Era::Meiji, Era::Taisho, Era::Showa, Era::Heisei, Era::Reiwa];

    /// The era's name in kanji, e.g. `令和`.
    pub fn kanji(self) -> &'static str {
        match self {
            Era::Meiji => "明治",
            Era::Taisho => "大正",
            Era::Showa => "昭和",
            Era::Heisei => "平成",
            Era::Reiwa => "令和",
        }
    }

    /// The era's letter, e.g. `R`.
    pub fn letter(self) -> char {
        match self {
            Era::Meiji => 'M',
            Era::Taisho => 'T',
            Era::Showa => 'S',
            Era::Heisei => 'H',
            Era::Reiwa => 'R',
        }
    }

    /// The first day of the era.
    pub fn first_day(self) -> NaiveDate {
        match self {
            Era::Meiji => MEIJI_START,
            Era::Taisho => TAISHO_START,
            Era::Showa => SHOWA_START,
            Era::Heisei => HEISEI_START,
            Era::Reiwa => REIWA_START,
        }
    }

    /// The last day of the era; `None` for the current one.
    pub fn last_day(self) -> Option<NaiveDate> {
        self.next().and_then(|n| n.first_day().pred_opt())
    }

    fn next(self) -> Option<Era> {
        match self {
            Era::Meiji => Some(Era::Taisho),
            Era::Taisho => Some(Era::Showa),
            Era::Showa => Some(Era::Heisei),
            Era::Heisei => Some(Era::Reiwa),
            Era::Reiwa => None,
        }
    }

    /// The Gregorian year of the era's year 0 (元年 is this plus one).
    fn offset(self) -> i32 {
        self.first_day().year() - 1
    }

    /// The Gregorian year of era year `year` (1 = 元年).
    pub fn gregorian_year(self, year: u32) -> i32 {
        self.offset().saturating_add(i32::try_from(year).unwrap_or(i32::MAX))
    }

    /// The era a date falls in; `None` before 1868-01-25.
    pub fn of(date: NaiveDate) -> Option<Era> {
        Era::ALL.iter().rev().copied().find(|e| date >= e.first_day())
    }

    /// `true` when `date` lies within the era.
    pub fn contains(self, date: NaiveDate) -> bool {
        date >= self.first_day() && self.last_day().is_none_or(|last| date <= last)
    }

    /// Recognises an era name at the start of `s` (kanji, one-kanji abbreviation, the
    /// single-character ligature such as `㋿`, or the letter in any case); returns the era
    /// and the rest of the text.
    fn strip_prefix(s: &str) -> Option<(Era, &str)> {
        let first = s.chars().next()?;
        let letter = match first.to_ascii_uppercase() {
            'M' | '㍾' => Some(Era::Meiji),
            'T' | '㍽' => Some(Era::Taisho),
            'S' | '㍼' => Some(Era::Showa),
            'H' | '㍻' => Some(Era::Heisei),
            'R' | '㋿' => Some(Era::Reiwa),
            _ => None,
        };
        if let Some(era) = letter {
            return Some((era, &s[first.len_utf8()..]));
        }
        for era in Era::ALL {
            if let Some(rest) = s.strip_prefix(era.kanji()) {
                return Some((era, rest));
            }
        }
        // One-kanji abbreviations (明/大/昭/平/令), as on some forms.
        let era = match first {
            '明' => Era::Meiji,
            '大' => Era::Taisho,
            '昭' => Era::Showa,
            '平' => Era::Heisei,
            '令' => Era::Reiwa,
            _ => return None,
        };
        Some((era, &s[first.len_utf8()..]))
    }
}

const FORMAT_REASON: &str =
    "not a date: expected YYYY-MM-DD, YYYY/MM/DD, YYYYMMDD, YYYY年M月D日 or an era date such as 令和3年4月1日 or R3.4.1";

/// The error for a date that does not parse. The text itself is never included: dates
/// here are mostly birth dates, which are personal data.
fn date_error(reason: impl Into<String>) -> Error {
    Error::Invalid { field: "date", value: "(redacted)".into(), reason: reason.into() }
}

/// Parses a date written the way municipal systems write them.
///
/// Accepted: `YYYY-MM-DD`, `YYYY/MM/DD`, `YYYY.MM.DD` (month and day may have one digit),
/// `YYYYMMDD`, `YYYY年M月D日`, and era dates: an era (`令和`, `R`, `r`, `令`, `㋿`; likewise
/// 明治 M, 大正 T, 昭和 S, 平成 H), a year of one or two digits or `元`, then `年M月D日`
/// or `.M.D`, `/M/D`, `-M-D` (e.g. `令和3年4月1日`, `令和元年5月1日`, `R3.4.1`,
/// `R03.04.01`, `H31.4.30`), or six digits `YYMMDD` (`R030401`). Full-width digits and
/// spaces are accepted; spaces may pad the numbers of the kanji forms (`平成 1年 1月 8日`).
/// A date outside its era (`H31.5.1`: Heisei ended on 2019-04-30) is refused.
///
/// The error is [`Error::Invalid`] with field `date`, the value redacted and a reason.
pub fn parse_date(text: &str) -> Result<NaiveDate> {
    let trimmed = text.trim();
    if let Some(d) = fast_iso(trimmed.as_bytes()) {
        return Ok(d);
    }
    let norm = to_halfwidth(trimmed);
    let s = norm.trim();
    match Era::strip_prefix(s) {
        Some((era, rest)) => parse_era(era, rest),
        None => parse_gregorian(s),
    }
}

/// `YYYY-MM-DD` / `YYYY/MM/DD` / `YYYYMMDD` in plain ASCII: the common case of a large
/// upload, parsed without any allocation or scanning.
#[inline]
fn fast_iso(b: &[u8]) -> Option<NaiveDate> {
    let d = |i: usize| -> Option<u32> {
        let c = *b.get(i)?;
        c.is_ascii_digit().then(|| u32::from(c - b'0'))
    };
    let (y, m, dd) = match b.len() {
        10 if (b[4] == b'-' || b[4] == b'/') && b[7] == b[4] => (0, 5, 8),
        8 => (0, 4, 6),
        _ => return None,
    };
    let year = d(y)? * 1000 + d(y + 1)? * 100 + d(y + 2)? * 10 + d(y + 3)?;
    let month = d(m)? * 10 + d(m + 1)?;
    let day = d(dd)? * 10 + d(dd + 1)?;
    NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)
}

/// A tiny cursor over normalised date text.
struct Cursor<'a> {
    s: &'a str,
}

impl<'a> Cursor<'a> {
    fn skip_spaces(&mut self) {
        self.s = self.s.trim_start_matches([' ', '\t']);
    }
    /// Reads a run of ASCII digits: (value, number of digits). Runs longer than 9 digits
    /// are refused rather than overflowing.
    fn number(&mut self) -> Option<(u32, usize)> {
        let n = self.s.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 || n > 9 {
            return None;
        }
        let v = self.s[..n].bytes().fold(0u32, |acc, c| acc * 10 + u32::from(c - b'0'));
        self.s = &self.s[n..];
        Some((v, n))
    }
    fn eat(&mut self, t: &str) -> bool {
        match self.s.strip_prefix(t) {
            Some(rest) => {
                self.s = rest;
                true
            }
            None => false,
        }
    }
    fn eat_sep(&mut self) -> Option<u8> {
        let c = *self.s.as_bytes().first()?;
        if matches!(c, b'-' | b'/' | b'.') {
            self.s = &self.s[1..];
            Some(c)
        } else {
            None
        }
    }
    fn done(&self) -> bool {
        self.s.is_empty()
    }
}

/// After the year: `年M月D日` or `<sep>M<sep>D` with the same separator twice.
fn month_day(c: &mut Cursor<'_>) -> Option<(u32, u32)> {
    if c.eat("年") {
        c.skip_spaces();
        let (m, mn) = c.number()?;
        if mn > 2 || !c.eat("月") {
            return None;
        }
        c.skip_spaces();
        let (d, dn) = c.number()?;
        if dn > 2 || !c.eat("日") {
            return None;
        }
        return c.done().then_some((m, d));
    }
    let sep = c.eat_sep()?;
    let (m, mn) = c.number()?;
    if mn > 2 || c.eat_sep()? != sep {
        return None;
    }
    let (d, dn) = c.number()?;
    (dn <= 2 && c.done()).then_some((m, d))
}

fn parse_gregorian(s: &str) -> Result<NaiveDate> {
    let mut c = Cursor { s };
    let (y, m, d) = match c.number() {
        Some((v, 8)) if c.done() => (v / 10000, v / 100 % 100, v % 100),
        Some((y, 4)) => {
            let (m, d) = month_day(&mut c).ok_or_else(|| date_error(FORMAT_REASON))?;
            (y, m, d)
        }
        _ => return Err(date_error(FORMAT_REASON)),
    };
    let y = i32::try_from(y).map_err(|_| date_error(FORMAT_REASON))?;
    NaiveDate::from_ymd_opt(y, m, d).ok_or_else(|| date_error("no such day in the calendar"))
}

fn parse_era(era: Era, rest: &str) -> Result<NaiveDate> {
    let mut c = Cursor { s: rest };
    c.skip_spaces();
    let (year, month, day) = if c.eat("元") {
        let (m, d) = month_day(&mut c).ok_or_else(|| date_error(FORMAT_REASON))?;
        (1, m, d)
    } else {
        match c.number() {
            // R030401: two digits each of year, month and day.
            Some((v, 6)) if c.done() => (v / 10000, v / 100 % 100, v % 100),
            Some((y, 1 | 2)) => {
                let (m, d) = month_day(&mut c).ok_or_else(|| date_error(FORMAT_REASON))?;
                (y, m, d)
            }
            _ => return Err(date_error(FORMAT_REASON)),
        }
    };
    if year == 0 {
        return Err(date_error("era year 0 does not exist (the first year is 元年, year 1)"));
    }
    let date = NaiveDate::from_ymd_opt(era.gregorian_year(year), month, day).ok_or_else(|| date_error("no such day in the calendar"))?;
    if !era.contains(date) {
        let mut reason = format!("outside the {} era ({} to ", era.kanji(), era.first_day());
        match era.last_day() {
            Some(last) => {
                let _ = write!(reason, "{last})");
            }
            None => reason.push_str("today)"),
        }
        return Err(date_error(reason));
    }
    Ok(date)
}

/// The era of a date and its year in it, when the era form can be read back: [`parse_date`]
/// takes era years of one or two digits, so 令和100年 (2118) on is written as a Gregorian date.
fn era_year(date: NaiveDate) -> Option<(Era, i32)> {
    let era = Era::of(date)?;
    let year = date.year() - era.offset();
    (year <= 99).then_some((era, year))
}

/// Formats a date in its era, e.g. `令和3年4月1日`, with `元年` for year 1
/// (`令和元年5月1日`). A date before the Meiji era (1868-01-25), or from 令和100年 (2118) on,
/// is written `YYYY-MM-DD`, which [`parse_date`] also reads back.
pub fn format_era(date: NaiveDate) -> String {
    let Some((era, year)) = era_year(date) else {
        return date.format("%Y-%m-%d").to_string();
    };
    if year == 1 {
        format!("{}元年{}月{}日", era.kanji(), date.month(), date.day())
    } else {
        format!("{}{}年{}月{}日", era.kanji(), year, date.month(), date.day())
    }
}

/// Formats a date with the era's letter, e.g. `R3.4.1` (year 1 is `1`). A date before the
/// Meiji era, or from 令和100年 (2118) on, is written `YYYY-MM-DD`.
pub fn format_era_letter(date: NaiveDate) -> String {
    match era_year(date) {
        Some((era, year)) => format!("{}{}.{}.{}", era.letter(), year, date.month(), date.day()),
        None => date.format("%Y-%m-%d").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(y: i32, m: u32, dd: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, dd).unwrap()
    }

    fn reason(text: &str) -> String {
        match parse_date(text) {
            Err(Error::Invalid { reason, value, .. }) => {
                assert_eq!(value, "(redacted)");
                reason
            }
            other => panic!("{text}: expected an error, got {other:?}"),
        }
    }

    #[test]
    fn gregorian_forms() {
        for t in ["2021-04-01", "2021/04/01", "20210401", "2021年4月1日", "2021年04月01日", "2021-4-1", "2021.4.1", " 2021-04-01 "] {
            assert_eq!(parse_date(t).unwrap(), d(2021, 4, 1), "{t}");
        }
        assert_eq!(parse_date("２０２１－０４－０１").unwrap(), d(2021, 4, 1));
        assert_eq!(parse_date("２０２１年４月１日").unwrap(), d(2021, 4, 1));
        assert_eq!(parse_date("2021年 4月 1日").unwrap(), d(2021, 4, 1));
        for bad in ["", "2021-04", "2021-04-01x", "2021/04-01", "21-04-01", "2021-004-01", "2021年4月1", "abc", "2021041", "202104011"] {
            assert_eq!(reason(bad), FORMAT_REASON, "{bad:?}");
        }
        assert_eq!(reason("2021-02-30"), "no such day in the calendar");
        assert_eq!(reason("20210230"), "no such day in the calendar");
    }

    #[test]
    fn era_forms() {
        let cases = [
            ("令和3年4月1日", d(2021, 4, 1)),
            ("令和元年5月1日", d(2019, 5, 1)),
            ("令和1年5月1日", d(2019, 5, 1)),
            ("R3.4.1", d(2021, 4, 1)),
            ("R03.04.01", d(2021, 4, 1)),
            ("R3/4/1", d(2021, 4, 1)),
            ("r3-4-1", d(2021, 4, 1)),
            ("R030401", d(2021, 4, 1)),
            ("Ｒ３．４．１", d(2021, 4, 1)),
            ("令和３年４月１日", d(2021, 4, 1)),
            ("令3.4.1", d(2021, 4, 1)),
            ("㋿3.4.1", d(2021, 4, 1)),
            ("H31.4.30", d(2019, 4, 30)),
            ("h1.1.8", d(1989, 1, 8)),
            ("平成元年1月8日", d(1989, 1, 8)),
            ("平成 1年 1月 8日", d(1989, 1, 8)),
            ("S22.5.3", d(1947, 5, 3)),
            ("S64.1.7", d(1989, 1, 7)),
            ("昭和元年12月25日", d(1926, 12, 25)),
            ("T1.7.30", d(1912, 7, 30)),
            ("大正15年12月24日", d(1926, 12, 24)),
            ("M45.7.29", d(1912, 7, 29)),
            ("明治元年1月25日", d(1868, 1, 25)),
            ("m6.1.1", d(1873, 1, 1)),
        ];
        for (t, want) in cases {
            assert_eq!(parse_date(t).unwrap(), want, "{t}");
        }
    }

    #[test]
    fn dates_outside_their_era_are_refused() {
        assert_eq!(reason("H31.5.1"), "outside the 平成 era (1989-01-08 to 2019-04-30)");
        assert_eq!(reason("R1.4.30"), "outside the 令和 era (2019-05-01 to today)");
        assert!(reason("S64.1.8").contains("昭和"));
        assert!(reason("S1.12.24").contains("昭和"));
        assert!(reason("T15.12.25").contains("大正"));
        assert!(reason("T1.7.29").contains("大正"));
        assert!(reason("M45.7.30").contains("明治"));
        assert!(reason("M1.1.24").contains("明治"));
        assert!(reason("H0.1.8").contains("year 0"));
        assert_eq!(reason("R3.2.29"), "no such day in the calendar");
        for bad in ["R", "R3", "R3.4", "R3.4/1", "R123.4.1", "令和3年4月", "令和年4月1日", "X3.4.1", "R3.4.1日", "元年4月1日"]
        {
            assert!(parse_date(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn era_boundaries() {
        assert_eq!(Era::of(d(1868, 1, 24)), None);
        for era in Era::ALL {
            assert_eq!(Era::of(era.first_day()), Some(era));
            if let Some(last) = era.last_day() {
                assert_eq!(Era::of(last), Some(era));
                assert!(!era.contains(last.succ_opt().unwrap()));
            }
        }
        assert_eq!(Era::Heisei.last_day(), Some(d(2019, 4, 30)));
        assert_eq!(Era::Showa.last_day(), Some(d(1989, 1, 7)));
        assert_eq!(Era::Taisho.last_day(), Some(d(1926, 12, 24)));
        assert_eq!(Era::Meiji.last_day(), Some(d(1912, 7, 29)));
    }

    #[test]
    fn formatting() {
        assert_eq!(format_era(d(2021, 4, 1)), "令和3年4月1日");
        assert_eq!(format_era(d(2019, 5, 1)), "令和元年5月1日");
        assert_eq!(format_era(d(2019, 4, 30)), "平成31年4月30日");
        assert_eq!(format_era(d(1947, 5, 3)), "昭和22年5月3日");
        assert_eq!(format_era(d(1868, 1, 24)), "1868-01-24");
        assert_eq!(format_era_letter(d(2021, 4, 1)), "R3.4.1");
        assert_eq!(format_era_letter(d(1989, 1, 8)), "H1.1.8");
    }

    /// Found by fuzzing (fuzz/ era_date): 2118 was written 令和100年, which parse_date
    /// refuses (era years have one or two digits there).
    #[test]
    fn dates_from_reiwa_100_are_written_gregorian_and_read_back() {
        assert_eq!(format_era(d(2117, 12, 31)), "令和99年12月31日");
        assert_eq!(format_era_letter(d(2117, 12, 31)), "R99.12.31");
        for day in [d(2118, 1, 1), d(2999, 12, 31)] {
            assert_eq!(format_era(day), day.format("%Y-%m-%d").to_string());
            assert_eq!(format_era_letter(day), day.format("%Y-%m-%d").to_string());
            assert_eq!(parse_date(&format_era(day)).unwrap(), day);
            assert_eq!(parse_date(&format_era_letter(day)).unwrap(), day);
        }
    }

    #[test]
    fn every_day_from_1873_to_2100_round_trips() {
        let mut day = d(1873, 1, 1);
        let end = d(2100, 12, 31);
        while day <= end {
            assert_eq!(parse_date(&format_era(day)).unwrap(), day);
            assert_eq!(parse_date(&format_era_letter(day)).unwrap(), day);
            day = day.succ_opt().unwrap();
        }
    }

    proptest! {
        #[test]
        fn era_round_trip(offset in 0i64..83_000) {
            let day = d(1873, 1, 1) + chrono::Duration::days(offset);
            prop_assume!(day <= d(2100, 12, 31));
            prop_assert_eq!(parse_date(&format_era(day)).unwrap(), day);
        }

        #[test]
        fn gregorian_round_trip(offset in 0i64..100_000) {
            let day = d(1850, 1, 1) + chrono::Duration::days(offset);
            for f in ["%Y-%m-%d", "%Y/%m/%d", "%Y%m%d", "%Y年%-m月%-d日", "%Y-%-m-%-d"] {
                prop_assert_eq!(parse_date(&day.format(f).to_string()).unwrap(), day);
            }
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,20}") {
            let _ = parse_date(&s);
        }

        #[test]
        fn parse_never_panics_on_date_like_text(s in "[MTSHRmtshr明大昭平令元年月日0-9０-９./ -]{0,16}") {
            let _ = parse_date(&s);
        }
    }
}
