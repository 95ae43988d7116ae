//! A deterministic generator of resident uploads, for demos, tests and benchmarks
//! (`vrs gen residents --count N --municipality CODE --seed S [--encoding sjis]`).
//!
//! The same options give the same rows and the same bytes on every platform: the random
//! numbers come from SplitMix64 seeded per row, never from the operating system. Addressee
//! numbers ascend from `first_addressee` without zero padding (so a store receives its keys
//! in order); voucher numbers are a bijection of the row index, i ↦ (a·i + b) mod 10¹⁰
//! with a coprime to 10, hence unique and spread over the whole 10-digit range.

use std::fmt::Write as _;
use std::io::{self, Write};

use chrono::{Datelike, Days, NaiveDate};
use encoding_rs::{Encoder, EncoderResult, SHIFT_JIS};

use crate::era::format_era;
use crate::ids::{AddresseeNumber, MunicipalityCode, PersonRef, PersonalNumber, VoucherNumber, VoucherRef};
use crate::import::Column;
pub use crate::ledger::OutputEncoding;
use crate::resident::{PersonalText, Resident, ResidentStatus, Sex};
use crate::{Error, Result};

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough for test data.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`0` when `n` is 0), by Lemire's multiply-shift (bias below 2⁻³²
    /// for the small ranges used here).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        items.get(self.below(items.len() as u64) as usize).copied()
    }
}

/// How the generator writes dates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DateStyle {
    /// `YYYY-MM-DD` (the default).
    #[default]
    Iso,
    /// Japanese era dates, e.g. `昭和22年5月3日`.
    Era,
}

/// The language of the header row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HeaderLanguage {
    /// `自治体コード,宛名番号,券番号,...` (the default).
    #[default]
    Japanese,
    /// `municipality_code,addressee_number,voucher_number,...`.
    English,
}

/// What to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenOptions {
    /// The municipality (must be in the shipped list: addresses use its name).
    pub municipality: MunicipalityCode,
    /// Number of residents.
    pub count: u64,
    /// Seed: the same options give the same rows.
    pub seed: u64,
    /// The first addressee number; the others follow it in order.
    pub first_addressee: u64,
    /// How birth dates and status dates are written.
    pub date_style: DateStyle,
    /// Add a personal_number column (12 digits with a valid check digit); importing it
    /// then needs a personal-number secret.
    pub personal_numbers: bool,
    /// Let about 2% of residents have moved in (with a previous voucher of another
    /// municipality), 1% have moved out and 0.5% be deceased; otherwise all are active.
    pub moves: bool,
}

impl GenOptions {
    /// `count` residents of `municipality`: addressee numbers from 1, ISO dates, no personal
    /// numbers, with moves.
    pub fn new(municipality: MunicipalityCode, count: u64, seed: u64) -> Self {
        Self { municipality, count, seed, first_addressee: 1, date_style: DateStyle::Iso, personal_numbers: false, moves: true }
    }
}

/// One generated resident, borrowing its texts from the generator's tables.
#[derive(Clone, PartialEq, Eq)]
pub struct GeneratedResident {
    /// The addressee number (written without zero padding).
    pub addressee: u64,
    /// The voucher number.
    pub voucher: VoucherNumber,
    /// Family name in kanji.
    pub family_name: &'static str,
    /// Family name in katakana.
    pub family_name_kana: &'static str,
    /// Given name in kanji.
    pub given_name: &'static str,
    /// Given name in katakana.
    pub given_name_kana: &'static str,
    /// Birth date, 1925–2020.
    pub birth_date: NaiveDate,
    /// Male or female.
    pub sex: Sex,
    /// Prefecture of the address.
    pub prefecture: &'static str,
    /// Municipality of the address.
    pub city: &'static str,
    /// Town (町名) of the address.
    pub town: &'static str,
    /// 丁目, 番, 号 of the address.
    pub block: (u8, u8, u8),
    /// The voucher of the municipality the resident moved in from.
    pub previous: Option<VoucherRef>,
    /// Personal number as 12 ASCII digits, when asked for.
    pub personal_number: Option<[u8; 12]>,
    /// Status.
    pub status: ResidentStatus,
    /// Date of the status change, when not active.
    pub status_date: Option<NaiveDate>,
}

impl std::fmt::Debug for GeneratedResident {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Fake, but shaped like personal data: keep it out of logs all the same.
        f.debug_struct("GeneratedResident").field("addressee", &self.addressee).field("voucher", &self.voucher).finish_non_exhaustive()
    }
}

impl GeneratedResident {
    /// `family　given` with an ideographic space, as municipal systems write it.
    pub fn name(&self) -> String {
        format!("{}\u{3000}{}", self.family_name, self.given_name)
    }

    /// The name in katakana, `ヤマダ　タロウ`.
    pub fn name_kana(&self) -> String {
        format!("{}\u{3000}{}", self.family_name_kana, self.given_name_kana)
    }

    /// The address, e.g. `東京都千代田区本町2丁目14番3号`.
    pub fn address(&self) -> String {
        let mut s = String::new();
        self.write_address(&mut s);
        s
    }

    fn write_address(&self, out: &mut String) {
        out.push_str(self.prefecture);
        // Ward names in the list read "札幌市 中央区"; prefecture-level entries repeat the prefecture.
        if self.city != self.prefecture {
            for part in self.city.split(' ') {
                out.push_str(part);
            }
        }
        let (chome, ban, go) = self.block;
        let _ = write!(out, "{}{chome}丁目{ban}番{go}号", self.town);
    }

    /// The resident as an upload of `municipality` would store it (the personal number
    /// hashed with `secret`).
    pub fn to_resident(&self, municipality: MunicipalityCode, secret: &[u8]) -> Result<Resident> {
        let personal_number_hash = match &self.personal_number {
            Some(digits) => {
                let text = std::str::from_utf8(digits).map_err(|_| Error::Invalid {
                    field: "personal_number",
                    value: "(redacted)".into(),
                    reason: "not ASCII digits".into(),
                })?;
                Some(PersonalNumber::parse(text)?.keyed_hash(secret))
            }
            None => None,
        };
        Ok(Resident {
            person: PersonRef { municipality, addressee: AddresseeNumber::parse(&self.addressee.to_string())? },
            voucher: self.voucher,
            name: PersonalText(self.name()),
            name_kana: PersonalText(self.name_kana()),
            birth_date: self.birth_date,
            sex: self.sex,
            address: Some(PersonalText(self.address())),
            previous: self.previous,
            personal_number_hash,
            status: self.status,
            status_date: self.status_date,
        })
    }
}

const FAMILY: &[(&str, &str)] = &[
    ("佐藤", "サトウ"),
    ("鈴木", "スズキ"),
    ("高橋", "タカハシ"),
    ("田中", "タナカ"),
    ("伊藤", "イトウ"),
    ("渡辺", "ワタナベ"),
    ("山本", "ヤマモト"),
    ("中村", "ナカムラ"),
    ("小林", "コバヤシ"),
    ("加藤", "カトウ"),
    ("吉田", "ヨシダ"),
    ("山田", "ヤマダ"),
    ("佐々木", "ササキ"),
    ("山口", "ヤマグチ"),
    ("松本", "マツモト"),
    ("井上", "イノウエ"),
    ("木村", "キムラ"),
    ("林", "ハヤシ"),
    ("斎藤", "サイトウ"),
    ("清水", "シミズ"),
    ("山崎", "ヤマザキ"),
    ("森", "モリ"),
    ("池田", "イケダ"),
    ("橋本", "ハシモト"),
    ("阿部", "アベ"),
    ("石川", "イシカワ"),
    ("山下", "ヤマシタ"),
    ("中島", "ナカジマ"),
    ("石井", "イシイ"),
    ("小川", "オガワ"),
    ("前田", "マエダ"),
    ("岡田", "オカダ"),
    ("長谷川", "ハセガワ"),
    ("藤田", "フジタ"),
    ("後藤", "ゴトウ"),
    ("近藤", "コンドウ"),
    ("村上", "ムラカミ"),
    ("遠藤", "エンドウ"),
    ("青木", "アオキ"),
    ("坂本", "サカモト"),
];

const MALE: &[(&str, &str)] = &[
    ("太郎", "タロウ"),
    ("一郎", "イチロウ"),
    ("健太", "ケンタ"),
    ("翔太", "ショウタ"),
    ("大輔", "ダイスケ"),
    ("誠", "マコト"),
    ("浩", "ヒロシ"),
    ("隆", "タカシ"),
    ("茂", "シゲル"),
    ("清", "キヨシ"),
    ("蓮", "レン"),
    ("大翔", "ヒロト"),
    ("悠真", "ユウマ"),
    ("拓也", "タクヤ"),
    ("和夫", "カズオ"),
    ("正男", "マサオ"),
    ("進", "ススム"),
    ("勇", "イサム"),
    ("健一", "ケンイチ"),
    ("湊", "ミナト"),
];

const FEMALE: &[(&str, &str)] = &[
    ("花子", "ハナコ"),
    ("陽子", "ヨウコ"),
    ("恵子", "ケイコ"),
    ("幸子", "サチコ"),
    ("裕子", "ユウコ"),
    ("美咲", "ミサキ"),
    ("結衣", "ユイ"),
    ("陽菜", "ヒナ"),
    ("さくら", "サクラ"),
    ("愛", "アイ"),
    ("直美", "ナオミ"),
    ("久美子", "クミコ"),
    ("和子", "カズコ"),
    ("節子", "セツコ"),
    ("明美", "アケミ"),
    ("真由美", "マユミ"),
    ("葵", "アオイ"),
    ("凛", "リン"),
    ("芽依", "メイ"),
    ("千尋", "チヒロ"),
];

const TOWNS: &[&str] = &[
    "本町",
    "栄町",
    "中央",
    "緑町",
    "旭町",
    "若葉",
    "桜台",
    "東町",
    "西町",
    "南町",
    "北町",
    "元町",
    "港町",
    "宮前",
    "泉町",
    "幸町",
    "松が丘",
    "青葉台",
    "日の出町",
    "富士見",
];

const VOUCHER_SPACE: u64 = 10_000_000_000;
const MAX_ADDRESSEE: u64 = 999_999_999_999_999;

const fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
    match NaiveDate::from_ymd_opt(y, m, d) {
        Some(d) => d,
        None => panic!("invalid constant date"),
    }
}
const BIRTH_FIRST: NaiveDate = ymd(1925, 1, 1);
const BIRTH_LAST: NaiveDate = ymd(2020, 12, 31);
const MOVE_FIRST: NaiveDate = ymd(2021, 4, 1);
const MOVE_LAST: NaiveDate = ymd(2024, 3, 31);

fn days_between(a: NaiveDate, b: NaiveDate) -> u64 {
    u64::try_from((b - a).num_days()).unwrap_or(0)
}

fn random_date(rng: &mut SplitMix64, first: NaiveDate, last: NaiveDate) -> NaiveDate {
    first.checked_add_days(Days::new(rng.below(days_between(first, last) + 1))).unwrap_or(first)
}

/// Generates the residents of [`GenOptions`], in addressee order.
#[derive(Clone, Debug)]
pub struct ResidentGenerator {
    options: GenOptions,
    index: u64,
    /// The voucher bijection's multiplier (coprime to 10) and offset.
    a: u64,
    b: u64,
    prefecture: &'static str,
    city: &'static str,
    /// Municipalities a resident may have moved in from (cities, towns, villages and wards).
    elsewhere: Vec<MunicipalityCode>,
}

impl ResidentGenerator {
    /// Checks the options: the municipality must be in the shipped list, at most 10¹⁰
    /// residents (one voucher number each), addressee numbers of at most 15 digits.
    pub fn new(options: &GenOptions) -> Result<Self> {
        let Some(m) = crate::municipalities::lookup(options.municipality) else {
            return Err(Error::Invalid {
                field: "municipality_code",
                value: options.municipality.to_string(),
                reason: "not in the list of municipalities (the generator needs its name for addresses)".into(),
            });
        };
        if options.count > VOUCHER_SPACE {
            return Err(Error::Invalid {
                field: "count",
                value: options.count.to_string(),
                reason: "at most 10^10 residents (one voucher number each)".into(),
            });
        }
        if options.count > 0 && options.first_addressee.checked_add(options.count - 1).is_none_or(|last| last > MAX_ADDRESSEE) {
            return Err(Error::Invalid {
                field: "first_addressee",
                value: options.first_addressee.to_string(),
                reason: "addressee numbers would exceed 15 digits".into(),
            });
        }
        let code: u64 = options.municipality.as_str().parse().unwrap_or(0);
        let mut rng = SplitMix64::new(options.seed ^ code.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        // A multiplier ending in 1, 3, 7 or 9 is coprime to 10^10, so i ↦ a·i + b is a bijection.
        let a = rng.below(VOUCHER_SPACE / 10) * 10 + [1, 3, 7, 9][rng.below(4) as usize];
        let b = rng.below(VOUCHER_SPACE);
        let elsewhere = crate::municipalities::all()
            .into_iter()
            .map(|m| m.code)
            .filter(|c| c != &options.municipality && &c.as_str()[2..5] != "000")
            .collect();
        Ok(Self { options: options.clone(), index: 0, a, b, prefecture: m.prefecture, city: m.name, elsewhere })
    }

    fn voucher(&self, i: u64) -> Result<VoucherNumber> {
        let v = (u128::from(self.a) * u128::from(i) + u128::from(self.b)) % u128::from(VOUCHER_SPACE);
        VoucherNumber::parse(&format!("{v:010}"))
    }

    /// The resident of row `i` (0-based), independent of the others.
    pub fn row(&self, i: u64) -> Result<GeneratedResident> {
        let mut rng = SplitMix64::new(self.options.seed ^ SplitMix64::new(i).next_u64());
        let (family_name, family_name_kana) = rng.pick(FAMILY).unwrap_or(("山田", "ヤマダ"));
        let sex = if rng.below(2) == 0 { Sex::Male } else { Sex::Female };
        let (given_name, given_name_kana) = rng.pick(if sex == Sex::Male { MALE } else { FEMALE }).unwrap_or(("太郎", "タロウ"));
        let birth_date = random_date(&mut rng, BIRTH_FIRST, BIRTH_LAST);
        let town = rng.pick(TOWNS).unwrap_or("本町");
        let block = (1 + rng.below(5) as u8, 1 + rng.below(30) as u8, 1 + rng.below(20) as u8);
        let personal_number = if self.options.personal_numbers {
            let mut d = [b'0'; 12];
            for c in d.iter_mut().take(11) {
                *c = b'0' + rng.below(10) as u8;
            }
            d[11] = b'0' + PersonalNumber::check_digit(&d[..11]);
            Some(d)
        } else {
            None
        };
        let (mut previous, mut status, mut status_date) = (None, ResidentStatus::Active, None);
        if self.options.moves {
            match rng.below(1000) {
                0..20 => {
                    if let Some(municipality) = rng.pick(&self.elsewhere) {
                        let number = VoucherNumber::parse(&format!("{:010}", rng.below(VOUCHER_SPACE)))?;
                        previous = Some(VoucherRef { municipality, number });
                    }
                }
                20..30 => {
                    status = ResidentStatus::MovedOut;
                    status_date = Some(random_date(&mut rng, MOVE_FIRST, MOVE_LAST));
                }
                30..35 => {
                    status = ResidentStatus::Deceased;
                    status_date = Some(random_date(&mut rng, MOVE_FIRST, MOVE_LAST));
                }
                _ => {}
            }
        }
        Ok(GeneratedResident {
            addressee: self.options.first_addressee + i,
            voucher: self.voucher(i)?,
            family_name,
            family_name_kana,
            given_name,
            given_name_kana,
            birth_date,
            sex,
            prefecture: self.prefecture,
            city: self.city,
            town,
            block,
            previous,
            personal_number,
            status,
            status_date,
        })
    }
}

impl Iterator for ResidentGenerator {
    type Item = GeneratedResident;

    fn next(&mut self) -> Option<GeneratedResident> {
        if self.index >= self.options.count {
            return None;
        }
        let i = self.index;
        self.index += 1;
        // Cannot fail: the voucher is 10 digits by construction.
        self.row(i).ok()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.options.count - self.index).unwrap_or(usize::MAX);
        (left, Some(left))
    }

    fn nth(&mut self, n: usize) -> Option<GeneratedResident> {
        self.index = self.index.saturating_add(n as u64).min(self.options.count);
        self.next()
    }
}

/// The columns written, in order.
fn columns(options: &GenOptions) -> Vec<Column> {
    Column::ALL.into_iter().filter(|c| *c != Column::PersonalNumber || options.personal_numbers).collect()
}

/// U+3013 GETA MARK in Shift_JIS: the customary stand-in for a character the encoding
/// lacks (none of the generator's own tables needs it).
const GETA_SJIS: &[u8] = b"\x81\xAC";

fn encode_sjis(encoder: &mut Encoder, mut src: &str, dst: &mut Vec<u8>) {
    dst.clear();
    loop {
        let start = dst.len();
        dst.resize(start + src.len() + 16, 0);
        let (result, read, written) = encoder.encode_from_utf8_without_replacement(src, &mut dst[start..], false);
        dst.truncate(start + written);
        src = &src[read..];
        match result {
            EncoderResult::InputEmpty => return,
            EncoderResult::OutputFull => {}
            EncoderResult::Unmappable(_) => dst.extend_from_slice(GETA_SJIS),
        }
    }
}

fn write_date(out: &mut String, date: NaiveDate, style: DateStyle) {
    match style {
        DateStyle::Iso => {
            // Plain integer formatting: chrono's strftime machinery is the slow part of a row.
            let _ = write!(out, "{:04}-{:02}-{:02}", date.year(), date.month(), date.day());
        }
        DateStyle::Era => out.push_str(&format_era(date)),
    }
}

fn status_text(status: ResidentStatus, header: HeaderLanguage) -> &'static str {
    match (status, header) {
        (ResidentStatus::Active, _) => "",
        (ResidentStatus::MovedOut, HeaderLanguage::Japanese) => "転出",
        (ResidentStatus::Deceased, HeaderLanguage::Japanese) => "死亡",
        (s, HeaderLanguage::English) => s.as_str(),
    }
}

fn write_row(line: &mut String, r: &GeneratedResident, options: &GenOptions, cols: &[Column], header: HeaderLanguage) {
    for (k, col) in cols.iter().enumerate() {
        if k > 0 {
            line.push(',');
        }
        // No generated value contains a comma, quote or line break: nothing needs quoting.
        match col {
            Column::MunicipalityCode => line.push_str(options.municipality.as_str()),
            Column::AddresseeNumber => {
                let _ = write!(line, "{}", r.addressee);
            }
            Column::VoucherNumber => line.push_str(r.voucher.as_str()),
            Column::Name => {
                let _ = write!(line, "{}\u{3000}{}", r.family_name, r.given_name);
            }
            Column::NameKana => {
                let _ = write!(line, "{}\u{3000}{}", r.family_name_kana, r.given_name_kana);
            }
            Column::BirthDate => write_date(line, r.birth_date, options.date_style),
            Column::Sex => {
                let _ = write!(line, "{}", r.sex.code());
            }
            Column::Address => r.write_address(line),
            Column::PreviousMunicipalityCode => line.push_str(r.previous.as_ref().map_or("", |p| p.municipality.as_str())),
            Column::PreviousVoucherNumber => line.push_str(r.previous.as_ref().map_or("", |p| p.number.as_str())),
            Column::PersonalNumber => line.push_str(r.personal_number.as_ref().and_then(|d| std::str::from_utf8(d).ok()).unwrap_or("")),
            Column::Status => line.push_str(status_text(r.status, header)),
            Column::StatusDate => {
                if let Some(d) = r.status_date {
                    write_date(line, d, options.date_style);
                }
            }
        }
    }
}

fn write_error(e: io::Error) -> Error {
    Error::storage("writing the residents file", e)
}

/// Writes a resident upload: a header row, then one row per resident, streamed (memory
/// does not grow with `count`). UTF-8 files use LF and no BOM; Shift_JIS files use CRLF, as
/// the Windows systems that want Shift_JIS expect. Returns the number of residents
/// written. A write failure is reported as [`Error::Storage`].
pub fn write_residents_csv<W: Write>(out: W, options: &GenOptions, encoding: OutputEncoding, header: HeaderLanguage) -> Result<u64> {
    let generator = ResidentGenerator::new(options)?;
    let cols = columns(options);
    let mut out = io::BufWriter::with_capacity(64 * 1024, out);
    let mut encoder = SHIFT_JIS.new_encoder();
    let mut line = String::with_capacity(512);
    let mut bytes = Vec::with_capacity(1024);
    let eol = match encoding {
        OutputEncoding::Utf8 => "\n",
        OutputEncoding::ShiftJis => "\r\n",
    };

    let mut emit = |line: &str, out: &mut io::BufWriter<W>| -> Result<()> {
        match encoding {
            OutputEncoding::Utf8 => out.write_all(line.as_bytes()).map_err(write_error),
            OutputEncoding::ShiftJis => {
                encode_sjis(&mut encoder, line, &mut bytes);
                out.write_all(&bytes).map_err(write_error)
            }
        }
    };

    for (k, col) in cols.iter().enumerate() {
        if k > 0 {
            line.push(',');
        }
        line.push_str(match header {
            HeaderLanguage::Japanese => col.japanese(),
            HeaderLanguage::English => col.name(),
        });
    }
    line.push_str(eol);
    emit(&line, &mut out)?;

    let mut written = 0u64;
    for i in 0..options.count {
        let r = generator.row(i)?;
        line.clear();
        write_row(&mut line, &r, options, &cols, header);
        line.push_str(eol);
        emit(&line, &mut out)?;
        written += 1;
    }
    out.flush().map_err(write_error)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::{ImportOptions, ResidentCsvSource};
    use crate::store::ResidentSource;
    use std::collections::HashSet;

    fn code(s: &str) -> MunicipalityCode {
        MunicipalityCode::parse(s).unwrap()
    }

    fn bytes(options: &GenOptions, encoding: OutputEncoding, header: HeaderLanguage) -> Vec<u8> {
        let mut out = Vec::new();
        let n = write_residents_csv(&mut out, options, encoding, header).unwrap();
        assert_eq!(n, options.count);
        out
    }

    #[test]
    fn same_seed_same_bytes() {
        let o = GenOptions::new(code("131016"), 2_000, 42);
        for enc in [OutputEncoding::Utf8, OutputEncoding::ShiftJis] {
            assert_eq!(bytes(&o, enc, HeaderLanguage::Japanese), bytes(&o, enc, HeaderLanguage::Japanese));
        }
        let other = GenOptions { seed: 43, ..o.clone() };
        assert_ne!(
            bytes(&o, OutputEncoding::Utf8, HeaderLanguage::Japanese),
            bytes(&other, OutputEncoding::Utf8, HeaderLanguage::Japanese)
        );
        // The iterator and random access agree.
        let g = ResidentGenerator::new(&o).unwrap();
        let rows: Vec<GeneratedResident> = g.clone().collect();
        assert_eq!(rows.len(), 2_000);
        assert_eq!(rows[1234], g.row(1234).unwrap());
        assert_eq!(g.clone().nth(1234).unwrap(), rows[1234]);
    }

    #[test]
    fn first_rows_look_right() {
        let o = GenOptions { first_addressee: 1000, ..GenOptions::new(code("011011"), 3, 7) };
        let text = String::from_utf8(bytes(&o, OutputEncoding::Utf8, HeaderLanguage::Japanese)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "自治体コード,宛名番号,券番号,氏名,氏名カナ,生年月日,性別,住所,転入前自治体コード,転入前券番号,異動事由,異動日"
        );
        let f: Vec<&str> = lines[1].split(',').collect();
        assert_eq!(f.len(), 12);
        assert_eq!((f[0], f[1]), ("011011", "1000"));
        assert_eq!(f[2].len(), 10);
        assert!(f[3].contains('\u{3000}'));
        assert!(f[7].starts_with("北海道札幌市中央区"), "{}", f[7]);
        assert_eq!(lines[3].split(',').nth(1), Some("1002"));
        assert!(!text.contains('\r'));
    }

    fn import(data: &[u8], municipality: MunicipalityCode, secret: &[u8]) -> (Vec<Resident>, crate::import::ImportReport) {
        let options = ImportOptions { personal_number_secret: secret.to_vec(), ..ImportOptions::new(municipality) };
        let mut src = ResidentCsvSource::new(data, options).unwrap();
        let mut all = Vec::new();
        while let Some(b) = src.next_batch(10_000).unwrap() {
            all.extend(b);
        }
        assert!(src.may_commit());
        (all, (Box::new(src) as Box<dyn ResidentSource>).into_report())
    }

    #[test]
    fn generated_files_import_back_without_errors() {
        let m = code("131016");
        let secret = b"gen-secret";
        for (encoding, header, date_style, personal_numbers) in [
            (OutputEncoding::Utf8, HeaderLanguage::Japanese, DateStyle::Iso, false),
            (OutputEncoding::ShiftJis, HeaderLanguage::Japanese, DateStyle::Era, true),
            (OutputEncoding::Utf8, HeaderLanguage::English, DateStyle::Era, true),
            (OutputEncoding::ShiftJis, HeaderLanguage::English, DateStyle::Iso, false),
        ] {
            let o = GenOptions { date_style, personal_numbers, ..GenOptions::new(m, 5_000, 9) };
            let data = bytes(&o, encoding, header);
            let (rs, report) = import(&data, m, secret);
            assert!(report.errors.is_empty(), "{encoding:?} {header:?}: {:?}", &report.errors[..report.errors.len().min(5)]);
            let want = if encoding == OutputEncoding::ShiftJis { "shift_jis (detected)" } else { "utf-8 (detected)" };
            assert!(report.notes[0].contains(want), "{:?}", report.notes);
            assert_eq!(rs.len(), 5_000);
            let g = ResidentGenerator::new(&o).unwrap();
            for (r, gen_row) in rs.iter().zip(g) {
                assert_eq!(r, &gen_row.to_resident(m, secret).unwrap());
            }
            assert!(rs.iter().any(|r| r.previous.is_some()));
            assert!(rs.iter().any(|r| r.status == ResidentStatus::Deceased));
            assert_eq!(report.previous_vouchers.len(), rs.iter().filter(|r| r.previous.is_some()).count());
        }
    }

    #[test]
    fn every_listed_municipality_is_writable_in_shift_jis() {
        for m in crate::municipalities::all() {
            let o = GenOptions::new(m.code, 1, 1);
            let data = bytes(&o, OutputEncoding::ShiftJis, HeaderLanguage::Japanese);
            assert!(!data.windows(2).any(|w| w == GETA_SJIS), "{} needs a stand-in", m.code);
        }
    }

    #[test]
    fn vouchers_unique_and_spread_over_100k_rows() {
        let o = GenOptions::new(code("271004"), 100_000, 1);
        let g = ResidentGenerator::new(&o).unwrap();
        let mut seen = HashSet::new();
        let mut low_half = 0;
        for r in g {
            let v = r.voucher.as_str().to_owned();
            if v.as_bytes()[0] < b'5' {
                low_half += 1;
            }
            assert!(seen.insert(v));
        }
        assert_eq!(seen.len(), 100_000);
        assert!((45_000..55_000).contains(&low_half), "{low_half}");
    }

    #[test]
    fn options_are_checked() {
        assert!(ResidentGenerator::new(&GenOptions::new(code("131016"), VOUCHER_SPACE + 1, 1)).is_err());
        assert!(ResidentGenerator::new(&GenOptions { first_addressee: MAX_ADDRESSEE, ..GenOptions::new(code("131016"), 2, 1) }).is_err());
        assert!(ResidentGenerator::new(&GenOptions { first_addressee: MAX_ADDRESSEE, ..GenOptions::new(code("131016"), 1, 1) }).is_ok());
        // 131008 passes the check digit but is not a listed municipality.
        let unlisted = (0..10).map(|d| format!("1399{d}")).find_map(|p| {
            let c = MunicipalityCode::parse(&format!("{p}{}", MunicipalityCode::check_digit(p.as_bytes()))).ok()?;
            (!c.is_known()).then_some(c)
        });
        assert!(ResidentGenerator::new(&GenOptions::new(unlisted.unwrap(), 1, 1)).is_err());
    }

    #[test]
    fn splitmix_reference_values() {
        // First outputs for seed 1234567 from the reference implementation.
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
    }
}
