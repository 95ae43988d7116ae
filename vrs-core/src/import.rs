//! Resident upload (CSV) import.
//!
//! [`ResidentCsvSource`] reads a municipality's resident file as a stream and implements
//! [`ResidentSource`](crate::store::ResidentSource): a store pulls validated [`Resident`]s
//! in batches inside one transaction and asks at the end whether it may commit. Bad rows
//! are collected in the [`ImportReport`] with their physical line number, column and reason
//! (never the value: names and birth dates are personal data).
//!
//! The file may be UTF-8 (with or without BOM) or Shift_JIS/CP932, detected or told; CRLF
//! or LF; with a header row naming the columns in Japanese or English, or header-less with a
//! [`ColumnLayout`]. Memory stays bounded whatever the file's size: the input is decoded in
//! 64 KiB chunks, one record is held at a time, and the only per-row state is one entry
//! per addressee number and voucher number for the in-file duplicate checks.

use std::collections::hash_map::{Entry, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read};

use chrono::Datelike;
use encoding_rs::{CoderResult, Decoder, SHIFT_JIS};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::era::parse_date;
use crate::ids::{AddresseeNumber, MunicipalityCode, PersonRef, PersonalNumber, PersonalNumberHash, VoucherNumber, VoucherRef};
use crate::resident::{PersonalText, Resident, ResidentStatus, Sex};
use crate::text::to_halfwidth;
use crate::{Error, Result};

/// One bad row of an upload: where and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    /// 1-based line number in the file (the header is line 1 when present).
    pub line: u64,
    /// The column (English name of the field), or empty when the whole row is bad.
    pub column: String,
    /// Why the value is refused (without personal data).
    pub reason: String,
}

/// The outcome of an upload: rows read, rows valid, every bad line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    /// Data rows read (header excluded).
    pub rows_read: u64,
    /// Rows that passed validation.
    pub rows_valid: u64,
    /// Every bad row.
    pub errors: Vec<RowError>,
    /// Whether the good rows were applied.
    pub applied: bool,
    /// New residents.
    pub inserted: u64,
    /// Residents replaced.
    pub replaced: u64,
    /// Previous vouchers (転入前) named by the upload, so that doses registered under
    /// them can be matched to the moved-in residents afterwards.
    pub previous_vouchers: Vec<crate::ids::VoucherRef>,
    /// Rows with at least one error (a row can have several errors, one per column).
    #[serde(default)]
    pub rows_invalid: u64,
    /// Errors not kept in `errors` because there were more than [`MAX_REPORTED_ERRORS`]
    /// (a file that bad is in the wrong format; the count keeps memory bounded).
    #[serde(default)]
    pub errors_omitted: u64,
    /// Remarks that are not errors: the encoding used, columns ignored.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// How many [`RowError`]s a report keeps; the rest are only counted.
pub const MAX_REPORTED_ERRORS: usize = 100_000;

impl ImportReport {
    /// One line: counts and whether anything was applied.
    pub fn summary(&self) -> String {
        format!(
            "{} rows read, {} valid, {} bad; {}",
            self.rows_read,
            self.rows_valid,
            self.rows_invalid,
            if self.applied { "applied" } else { "nothing applied" }
        )
    }

    fn push_error(&mut self, error: RowError) {
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(error);
        } else {
            self.errors_omitted += 1;
        }
    }
}

/// A column of the resident upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Column {
    /// 自治体コード: optional; when absent, the uploader's municipality.
    MunicipalityCode,
    /// 宛名番号 / 個別宛名番号 (required).
    AddresseeNumber,
    /// 券番号 / 接種券番号 (required).
    VoucherNumber,
    /// 氏名 (required).
    Name,
    /// 氏名カナ / カナ氏名.
    NameKana,
    /// 生年月日 (required).
    BirthDate,
    /// 性別 (required).
    Sex,
    /// 住所.
    Address,
    /// 転入前自治体コード (with the previous voucher number, or neither).
    PreviousMunicipalityCode,
    /// 転入前券番号 (with the previous municipality code, or neither).
    PreviousVoucherNumber,
    /// 個人番号: only its keyed hash is kept.
    PersonalNumber,
    /// 異動事由.
    Status,
    /// 異動日.
    StatusDate,
}

const COLUMNS: usize = 13;

impl Column {
    /// Every column, in the order of the upload format.
    pub const ALL: [Column; COLUMNS] = [
        Column::MunicipalityCode,
        Column::AddresseeNumber,
        Column::VoucherNumber,
        Column::Name,
        Column::NameKana,
        Column::BirthDate,
        Column::Sex,
        Column::Address,
        Column::PreviousMunicipalityCode,
        Column::PreviousVoucherNumber,
        Column::PersonalNumber,
        Column::Status,
        Column::StatusDate,
    ];

    /// The English column name, e.g. `addressee_number` (used in [`RowError::column`]).
    pub fn name(self) -> &'static str {
        self.aliases()[0]
    }

    /// The Japanese column name, e.g. `宛名番号`.
    pub fn japanese(self) -> &'static str {
        self.aliases()[1]
    }

    /// `true` for the columns a file must have.
    pub fn is_required(self) -> bool {
        matches!(self, Column::AddresseeNumber | Column::VoucherNumber | Column::Name | Column::BirthDate | Column::Sex)
    }

    /// English name first, Japanese name second, then other names seen in municipal files.
    fn aliases(self) -> &'static [&'static str] {
        match self {
            Column::MunicipalityCode => {
                &["municipality_code", "自治体コード", "municipality", "市区町村コード", "団体コード", "地方公共団体コード"]
            }
            Column::AddresseeNumber => &["addressee_number", "宛名番号", "個別宛名番号", "addressee"],
            Column::VoucherNumber => &["voucher_number", "券番号", "接種券番号", "voucher"],
            Column::Name => &["name", "氏名", "氏名(漢字)", "漢字氏名"],
            Column::NameKana => &["name_kana", "氏名カナ", "カナ氏名", "氏名(カナ)", "フリガナ", "氏名フリガナ", "kana"],
            Column::BirthDate => &["birth_date", "生年月日", "birthdate", "date_of_birth", "dob"],
            Column::Sex => &["sex", "性別", "gender"],
            Column::Address => &["address", "住所"],
            Column::PreviousMunicipalityCode => {
                &["previous_municipality_code", "転入前自治体コード", "転入元自治体コード", "転入前市区町村コード", "previous_municipality"]
            }
            Column::PreviousVoucherNumber => {
                &["previous_voucher_number", "転入前券番号", "転入元券番号", "転入前接種券番号", "previous_voucher"]
            }
            Column::PersonalNumber => &["personal_number", "個人番号", "マイナンバー", "my_number"],
            Column::Status => &["status", "異動事由", "異動区分"],
            Column::StatusDate => &["status_date", "異動日", "異動年月日"],
        }
    }

    /// Recognises a column name in English or Japanese: case, spaces, `_`, `-` and
    /// full-width forms do not matter (`Addressee Number`, `個別宛名番号`, `氏名（カナ）`).
    pub fn from_name(text: &str) -> Option<Column> {
        let key = name_key(text);
        if key.is_empty() {
            return None;
        }
        Column::ALL.into_iter().find(|c| c.aliases().iter().any(|a| name_key(a) == key))
    }
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The comparison form of a column name.
fn name_key(text: &str) -> String {
    to_halfwidth(text.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}'))
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '_' && *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Column positions for a file without a header row (or with a header in names we do not
/// know), as given by the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnLayout {
    columns: Vec<Option<Column>>,
    header_row: bool,
}

impl ColumnLayout {
    /// A layout from one entry per column of the file; `None` skips a column. Every
    /// required column must appear, and none twice.
    pub fn new(columns: Vec<Option<Column>>) -> Result<Self> {
        let mut seen = [false; COLUMNS];
        for c in columns.iter().flatten() {
            if std::mem::replace(&mut seen[*c as usize], true) {
                return Err(Error::Invalid { field: "layout", value: c.name().into(), reason: "column given twice".into() });
            }
        }
        let missing: Vec<Column> = Column::ALL.into_iter().filter(|c| c.is_required() && !seen[*c as usize]).collect();
        if !missing.is_empty() {
            return Err(missing_columns_error("layout", &missing));
        }
        Ok(Self { columns, header_row: false })
    }

    /// Parses a mapping text: column names (English or Japanese) in file order, separated
    /// by commas or line breaks, e.g. `addressee_number,voucher_number,name,name_kana,birth_date,sex`.
    /// An empty entry or `_` skips a column of the file. Every column of the file must be
    /// listed: rows with another number of fields are errors.
    pub fn parse(text: &str) -> Result<Self> {
        let mut columns = Vec::new();
        for entry in text.trim().split([',', '\n']) {
            let entry = entry.trim();
            if entry.is_empty() || entry == "_" {
                columns.push(None);
                continue;
            }
            match Column::from_name(entry) {
                Some(c) => columns.push(Some(c)),
                None => {
                    return Err(Error::Invalid {
                        field: "layout",
                        value: entry.chars().take(64).collect(),
                        reason: "not a known column name (use `_` to skip a column)".into(),
                    });
                }
            }
        }
        Self::new(columns)
    }

    /// Whether the file's first line is a header to skip (its names are not used).
    pub fn with_header_row(mut self, header_row: bool) -> Self {
        self.header_row = header_row;
        self
    }

    /// The columns in file order (`None`: ignored).
    pub fn columns(&self) -> &[Option<Column>] {
        &self.columns
    }

    /// `true` when the file's first line is a header to skip.
    pub fn has_header_row(&self) -> bool {
        self.header_row
    }
}

fn missing_columns_error(field: &'static str, missing: &[Column]) -> Error {
    Error::Invalid {
        field,
        value: missing.iter().map(|c| c.name()).collect::<Vec<_>>().join(", "),
        reason: format!("required columns are missing ({})", missing.iter().map(|c| c.japanese()).collect::<Vec<_>>().join(", ")),
    }
}

/// The character encoding of an upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum InputEncoding {
    /// UTF-8 when the file starts with a UTF-8 BOM or its first 64 KiB are valid UTF-8;
    /// Shift_JIS otherwise.
    #[default]
    Auto,
    /// UTF-8, with or without BOM.
    Utf8,
    /// Shift_JIS as Windows writes it (CP932, which encoding_rs's `Shift_JIS` is).
    ShiftJis,
}

impl InputEncoding {
    /// A short name: `auto`, `utf-8`, `shift_jis`.
    pub fn as_str(self) -> &'static str {
        match self {
            InputEncoding::Auto => "auto",
            InputEncoding::Utf8 => "utf-8",
            InputEncoding::ShiftJis => "shift_jis",
        }
    }
}

/// Progress of an import, reported every 10,000 rows and at the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ImportProgress {
    /// Data rows read so far.
    pub rows_read: u64,
    /// Bytes read from the input so far (as stored, before decoding).
    pub bytes_read: u64,
}

/// How to read an upload.
pub struct ImportOptions {
    /// The file's encoding (default: detect).
    pub encoding: InputEncoding,
    /// Column positions for a file without a header row; `None`: the first line names them.
    pub layout: Option<ColumnLayout>,
    /// Apply the good rows even if some are bad (default: apply nothing if any row is bad).
    pub skip_invalid: bool,
    /// The uploading municipality: a municipality uploads only its own residents.
    pub municipality: MunicipalityCode,
    /// The deployment secret for the personal-number hash (required when the file has a
    /// personal_number column).
    pub personal_number_secret: Vec<u8>,
    /// Called every 10,000 rows and at the end.
    pub progress: Option<Box<dyn FnMut(ImportProgress) + Send>>,
}

impl ImportOptions {
    /// Defaults for `municipality`: detect the encoding, header row, all or nothing, no
    /// personal-number secret, no progress callback.
    pub fn new(municipality: MunicipalityCode) -> Self {
        Self {
            encoding: InputEncoding::Auto,
            layout: None,
            skip_invalid: false,
            municipality,
            personal_number_secret: Vec::new(),
            progress: None,
        }
    }
}

impl fmt::Debug for ImportOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportOptions")
            .field("encoding", &self.encoding)
            .field("layout", &self.layout)
            .field("skip_invalid", &self.skip_invalid)
            .field("municipality", &self.municipality)
            .field("personal_number_secret", &"<redacted>")
            .field("progress", &self.progress.as_ref().map(|_| "<callback>"))
            .finish()
    }
}

const CHUNK: usize = 64 * 1024;
const PROGRESS_EVERY: u64 = 10_000;
/// A record longer than this is an unclosed quote swallowing the file, not data: refusing
/// it keeps memory bounded.
const MAX_RECORD_BYTES: u64 = 1 << 20;
const MAX_NAME_CHARS: usize = 64;
const MAX_ADDRESS_CHARS: usize = 256;
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The marker error [`Input`] raises when a record exceeds [`MAX_RECORD_BYTES`].
#[derive(Debug)]
struct RecordTooLong;

impl fmt::Display for RecordTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record longer than {MAX_RECORD_BYTES} bytes")
    }
}
impl std::error::Error for RecordTooLong {}

fn read_retrying<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Shift_JIS decoding state: raw chunks go in, UTF-8 comes out.
struct ShiftJisState {
    decoder: Decoder,
    out: Box<[u8]>,
    out_pos: usize,
    out_len: usize,
    done: bool,
}

/// The caller's reader, turned into UTF-8 for the CSV parser: counts bytes, strips a BOM,
/// replays the sniffed sample, decodes Shift_JIS chunk by chunk, and stops a record that
/// grows past [`MAX_RECORD_BYTES`].
struct Input<R> {
    inner: R,
    /// Bytes read from `inner`.
    raw_read: u64,
    /// UTF-8 bytes handed to the CSV parser.
    delivered: u64,
    /// The last byte handed out (to tell whether a record ended with a newline).
    last: u8,
    /// Bytes handed out since the current record began.
    budget: u64,
    /// UTF-8: the sample still to replay; Shift_JIS: the current raw chunk.
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    eof: bool,
    sjis: Option<Box<ShiftJisState>>,
}

impl<R: Read> Input<R> {
    fn read_inner(&mut self) -> io::Result<()> {
        if self.buf.len() < CHUNK {
            self.buf.resize(CHUNK, 0);
        }
        let n = read_retrying(&mut self.inner, &mut self.buf)?;
        self.raw_read += n as u64;
        self.pos = 0;
        self.len = n;
        self.eof = n == 0;
        Ok(())
    }

    fn read_utf8(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.len {
            let n = out.len().min(self.len - self.pos);
            out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        if self.eof {
            return Ok(0);
        }
        let n = read_retrying(&mut self.inner, out)?;
        self.raw_read += n as u64;
        Ok(n)
    }

    fn read_sjis(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(st) = self.sjis.as_deref_mut() else { return Ok(0) };
            if st.out_pos < st.out_len {
                let n = out.len().min(st.out_len - st.out_pos);
                out[..n].copy_from_slice(&st.out[st.out_pos..st.out_pos + n]);
                st.out_pos += n;
                return Ok(n);
            }
            if st.done {
                return Ok(0);
            }
            if self.pos == self.len && !self.eof {
                self.read_inner()?;
            }
            let Some(st) = self.sjis.as_deref_mut() else { return Ok(0) };
            // Malformed bytes become U+FFFD, which the row validation reports per field.
            let (result, read, written, _) = st.decoder.decode_to_utf8(&self.buf[self.pos..self.len], &mut st.out, self.eof);
            self.pos += read;
            st.out_pos = 0;
            st.out_len = written;
            if self.eof && result == CoderResult::InputEmpty {
                st.done = true;
            }
        }
    }
}

impl<R: Read> Read for Input<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if self.budget > MAX_RECORD_BYTES {
            return Err(io::Error::other(RecordTooLong));
        }
        let n = if self.sjis.is_some() { self.read_sjis(out)? } else { self.read_utf8(out)? };
        if n > 0 {
            self.delivered += n as u64;
            self.last = out[n - 1];
            self.budget += n as u64;
        }
        Ok(n)
    }
}

/// Reads up to `buf.len()` bytes, stopping early only at end of input.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = read_retrying(r, &mut buf[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// UTF-8 unless the sample has a byte sequence UTF-8 forbids; a character cut by the end of
/// the sample (not the end of the file) does not count.
fn looks_utf8(sample: &[u8], at_eof: bool) -> bool {
    match std::str::from_utf8(sample) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none() && !at_eof,
    }
}

fn read_error(e: io::Error) -> Error {
    Error::Read { detail: e.to_string() }
}

/// A fast hasher for the numeric keys of the duplicate checks (SplitMix64's finaliser):
/// the keys are numbers, so SipHash's protection buys nothing and costs time per row.
#[derive(Default)]
struct NumberHasher(u64);

impl Hasher for NumberHasher {
    fn finish(&self) -> u64 {
        let mut z = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Numbers seen so far in a file, with the line of each. Files are often sorted by these
/// numbers: a strictly ascending run is kept in a plain vector (appended in order, no
/// hashing); only numbers that arrive out of order go into the hash map.
#[derive(Default)]
struct SeenNumbers {
    ascending: Vec<(u64, u64)>,
    others: HashMap<u64, u64, BuildHasherDefault<NumberHasher>>,
}

impl SeenNumbers {
    /// Records `key` on `line`; returns the earlier line when it was seen before.
    fn insert(&mut self, key: u64, line: u64) -> Option<u64> {
        match self.ascending.last() {
            // Larger than everything seen: every earlier number, including those in the
            // map, is smaller (they were smaller than the run's last element when added).
            None => {
                self.ascending.push((key, line));
                None
            }
            Some(&(last, _)) if key > last => {
                self.ascending.push((key, line));
                None
            }
            Some(_) => {
                if let Ok(i) = self.ascending.binary_search_by_key(&key, |e| e.0) {
                    return Some(self.ascending[i].1);
                }
                match self.others.entry(key) {
                    Entry::Occupied(e) => Some(*e.get()),
                    Entry::Vacant(v) => {
                        v.insert(line);
                        None
                    }
                }
            }
        }
    }
}

/// The errors of the row being validated.
struct RowErrors<'a> {
    report: &'a mut ImportReport,
    line: u64,
    bad: bool,
}

impl RowErrors<'_> {
    fn add(&mut self, column: Column, reason: impl Into<String>) {
        self.bad = true;
        self.report.push_error(RowError { line: self.line, column: column.name().into(), reason: reason.into() });
    }
}

/// The reason of a validation error, without the value.
fn reason_of(e: Error) -> String {
    match e {
        Error::Invalid { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// Refuses control characters (C0, DEL, C1; NUL included) and U+FFFD, which is what
/// bytes invalid in the file's encoding decode to.
fn bad_chars(s: &str) -> Option<&'static str> {
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c < 0x20 || c == 0x7F {
            return Some(if c == 0 { "contains a NUL byte" } else { "contains a control character (a line break, tab or similar)" });
        }
        if c == 0xC2 && b.get(i + 1).is_some_and(|n| (0x80..=0x9F).contains(n)) {
            return Some("contains a control character (a line break, tab or similar)");
        }
        if c == 0xEF && b.get(i + 1) == Some(&0xBF) && b.get(i + 2) == Some(&0xBD) {
            return Some("contains bytes that are not valid in the file's encoding (U+FFFD); is the encoding right?");
        }
    }
    None
}

/// A record being validated, with what is known of it as a whole.
struct Row<'r> {
    fields: &'r csv::ByteRecord,
    /// The whole record as text, when it is valid UTF-8 (checked once, not per field).
    text: Option<&'r str>,
    /// No byte anywhere that [`bad_chars`] could refuse: the per-field check is skipped.
    plain: bool,
}

impl<'r> Row<'r> {
    fn new(fields: &'r csv::ByteRecord) -> Self {
        let bytes = fields.as_slice();
        // A CRLF file leaves the CR at the end of the last field, where trimming drops it.
        let body = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        // Control characters, and the lead bytes of C1 controls (C2) and of U+FFFD (EF). The
        // fold has no early exit, so it compiles to a vector loop.
        let suspicious = body.iter().fold(false, |acc, &c| acc | (c < 0x20) | (c == 0x7F) | (c == 0xC2) | (c == 0xEF));
        Self { fields, text: std::str::from_utf8(bytes).ok(), plain: !suspicious }
    }
}

/// Trims whitespace, ideographic spaces included; the Unicode-aware trim runs only when an
/// end of the text is a non-ASCII space (names start and end with kanji: one look each).
fn trim(s: &str) -> &str {
    let t = s.trim_ascii();
    let spaced = |c: Option<char>| c.is_some_and(|c| !c.is_ascii() && c.is_whitespace());
    if spaced(t.chars().next()) || spaced(t.chars().next_back()) { t.trim() } else { t }
}

/// What [`RowParser::parse`] makes of a row.
struct Parsed {
    /// The resident, when every field is valid.
    resident: Option<Resident>,
    /// The addressee number as a number (with its length), when it parsed.
    addressee_key: Option<u64>,
    /// The voucher number as a number, when it parsed.
    voucher_key: Option<u64>,
}

/// A parsed row awaiting the duplicate checks.
struct Pending {
    line: u64,
    resident: Option<Resident>,
    addressee_key: Option<u64>,
    voucher_key: Option<u64>,
    bad: bool,
}

/// Rows parsed before their duplicate checks run together.
const CHECK_RUN: usize = 1024;

/// Validates rows into residents; holds what the checks across rows need.
struct RowParser {
    /// Field index of each column, by `Column as usize`.
    index: [Option<usize>; COLUMNS],
    municipality: MunicipalityCode,
    /// HMAC keyed once with the deployment secret, cloned per row (saves the key schedule).
    mac: Option<Hmac<Sha256>>,
    addressees: SeenNumbers,
    vouchers: SeenNumbers,
}

impl RowParser {
    /// The trimmed text of a column: `""` when the file has no such column, `None` when the
    /// cell is not acceptable text (the error is recorded).
    fn cell<'r>(&self, rec: &Row<'r>, col: Column, errs: &mut RowErrors<'_>) -> Option<&'r str> {
        let Some(i) = self.index[col as usize] else { return Some("") };
        let text = match rec.text {
            // A field of a valid record is valid unless a character straddles two fields.
            Some(all) => rec.fields.range(i).and_then(|r| all.get(r)),
            None => rec.fields.get(i).and_then(|b| std::str::from_utf8(b).ok()),
        };
        let Some(s) = text else {
            errs.add(col, "is not valid UTF-8 (is the file Shift_JIS? give the encoding)");
            return None;
        };
        let s = trim(s);
        if !rec.plain
            && let Some(reason) = bad_chars(s)
        {
            errs.add(col, reason);
            return None;
        }
        Some(s)
    }

    /// A required cell: the error "is required" when empty.
    fn required<'r>(&self, rec: &Row<'r>, col: Column, errs: &mut RowErrors<'_>) -> Option<&'r str> {
        let s = self.cell(rec, col, errs)?;
        if s.is_empty() {
            errs.add(col, "is required");
            return None;
        }
        Some(s)
    }

    fn personal_text(&self, rec: &Row<'_>, col: Column, max: usize, errs: &mut RowErrors<'_>) -> Option<String> {
        let s = if col.is_required() { self.required(rec, col, errs)? } else { self.cell(rec, col, errs)? };
        // Byte length bounds the character count from above: count only when it may matter.
        if s.len() > max && s.chars().count() > max {
            errs.add(col, format!("is longer than {max} characters"));
            return None;
        }
        Some(s.to_owned())
    }

    /// Validates one row. The duplicate checks across rows are left to
    /// [`RowParser::check_duplicates`], which gets the keys computed here.
    fn parse(&self, rec: &Row<'_>, errs: &mut RowErrors<'_>) -> Parsed {
        // The common case, the uploader's own code as is, needs no parsing.
        if let Some(text) = self.cell(rec, Column::MunicipalityCode, errs)
            && !text.is_empty()
            && text != self.municipality.as_str()
        {
            match MunicipalityCode::parse(text) {
                Ok(code) if code == self.municipality => {}
                Ok(code) => errs.add(
                    Column::MunicipalityCode,
                    format!("the row belongs to municipality {code}, but this upload is for {}", self.municipality),
                ),
                Err(e) => errs.add(Column::MunicipalityCode, reason_of(e)),
            }
        }

        let addressee = self.required(rec, Column::AddresseeNumber, errs).and_then(|t| match AddresseeNumber::parse(t) {
            Ok(a) => Some(a),
            Err(e) => {
                errs.add(Column::AddresseeNumber, reason_of(e));
                None
            }
        });
        // 1–15 digits: the value fits in 50 bits; the length keeps "012" and "12" apart.
        let addressee_key = addressee.as_ref().map(|a| {
            let digits = a.as_str();
            digits.bytes().fold(0u64, |acc, c| acc * 10 + u64::from(c - b'0')) | ((digits.len() as u64) << 50)
        });

        let voucher = self.required(rec, Column::VoucherNumber, errs).and_then(|t| match VoucherNumber::parse(t) {
            Ok(v) => Some(v),
            Err(e) => {
                errs.add(Column::VoucherNumber, reason_of(e));
                None
            }
        });
        let voucher_key = voucher.map(|v| v.as_str().bytes().fold(0u64, |acc, c| acc * 10 + u64::from(c - b'0')));
        let resident = self.resident(rec, errs, addressee, voucher);
        Parsed { resident, addressee_key, voucher_key }
    }

    fn resident(
        &self,
        rec: &Row<'_>,
        errs: &mut RowErrors<'_>,
        addressee: Option<AddresseeNumber>,
        voucher: Option<VoucherNumber>,
    ) -> Option<Resident> {
        let name = self.personal_text(rec, Column::Name, MAX_NAME_CHARS, errs);
        let name_kana = self.personal_text(rec, Column::NameKana, MAX_NAME_CHARS, errs);

        let birth_date = self.required(rec, Column::BirthDate, errs).and_then(|t| match parse_date(t) {
            Ok(d) if d.year() >= 1868 => Some(d),
            Ok(_) => {
                errs.add(Column::BirthDate, "is before 1868");
                None
            }
            Err(e) => {
                errs.add(Column::BirthDate, reason_of(e));
                None
            }
        });

        let sex = self.required(rec, Column::Sex, errs).and_then(|t| {
            let s = Sex::parse(t);
            if s.is_none() {
                errs.add(Column::Sex, "must be 1/2/9, M/F/U or 男/女/不明");
            }
            s
        });

        let address = self.personal_text(rec, Column::Address, MAX_ADDRESS_CHARS, errs);

        let previous = self.previous(rec, errs);

        let personal_number_hash = match self.cell(rec, Column::PersonalNumber, errs) {
            None => None,
            Some("") => Some(None),
            Some(t) => match (PersonalNumber::parse(t), &self.mac) {
                (Ok(_), Some(mac)) => {
                    // Same bytes as PersonalNumber::keyed_hash: the 12 ASCII digits.
                    let mut mac = mac.clone();
                    mac.update(to_halfwidth(t).as_bytes());
                    Some(Some(PersonalNumberHash(mac.finalize().into_bytes().into())))
                }
                (Ok(_), None) => {
                    errs.add(Column::PersonalNumber, "no personal-number secret is configured");
                    None
                }
                (Err(e), _) => {
                    errs.add(Column::PersonalNumber, reason_of(e));
                    None
                }
            },
        };

        let status = self.cell(rec, Column::Status, errs).and_then(|t| {
            let s = ResidentStatus::parse(&to_halfwidth(t));
            if s.is_none() {
                errs.add(Column::Status, "must be empty or 在住/active (0), 転出/moved_out (1), 死亡/deceased (2)");
            }
            s
        });
        let status_date = match self.cell(rec, Column::StatusDate, errs) {
            None => None,
            Some("") => Some(None),
            Some(t) => match parse_date(t) {
                Ok(d) => Some(Some(d)),
                Err(e) => {
                    errs.add(Column::StatusDate, reason_of(e));
                    None
                }
            },
        };

        if errs.bad {
            return None;
        }
        Some(Resident {
            person: PersonRef { municipality: self.municipality, addressee: addressee? },
            voucher: voucher?,
            name: PersonalText(name?),
            name_kana: PersonalText(name_kana?),
            birth_date: birth_date?,
            sex: sex?,
            address: address.filter(|a| !a.is_empty()).map(PersonalText),
            previous: previous?,
            personal_number_hash: personal_number_hash?,
            status: status?,
            status_date: status_date?,
        })
    }

    /// The in-file duplicate checks for a run of rows, in file order: the same addressee
    /// number twice, or the same voucher number for two addressee numbers. Done apart from
    /// the parsing so that the lookups in the large tables follow each other closely and
    /// their cache misses overlap, rather than each stalling a row's parsing.
    fn check_duplicates(&mut self, pending: &mut [Pending], report: &mut ImportReport) {
        for p in pending {
            let mut duplicate_addressee = false;
            if let Some(key) = p.addressee_key
                && let Some(earlier) = self.addressees.insert(key, p.line)
            {
                duplicate_addressee = true;
                p.bad = true;
                report.push_error(RowError {
                    line: p.line,
                    column: Column::AddresseeNumber.name().into(),
                    reason: format!("duplicate: the same addressee number is on line {earlier}"),
                });
            }
            // A row repeating an addressee number repeats its voucher too: one error is enough.
            if let Some(key) = p.voucher_key
                && !duplicate_addressee
                && let Some(earlier) = self.vouchers.insert(key, p.line)
            {
                p.bad = true;
                report.push_error(RowError {
                    line: p.line,
                    column: Column::VoucherNumber.name().into(),
                    reason: format!("duplicate: voucher number {key:010} is also given to the addressee number on line {earlier}"),
                });
            }
        }
    }

    /// The previous voucher (転入前): both columns or neither. `None` when bad.
    fn previous(&self, rec: &Row<'_>, errs: &mut RowErrors<'_>) -> Option<Option<VoucherRef>> {
        let m = self.cell(rec, Column::PreviousMunicipalityCode, errs);
        let v = self.cell(rec, Column::PreviousVoucherNumber, errs);
        let (m, v) = (m?, v?);
        match (m.is_empty(), v.is_empty()) {
            (true, true) => Some(None),
            (false, true) | (true, false) => {
                let col = if m.is_empty() { Column::PreviousMunicipalityCode } else { Column::PreviousVoucherNumber };
                errs.add(col, "previous_municipality_code and previous_voucher_number must be given together");
                None
            }
            (false, false) => {
                let municipality = MunicipalityCode::parse(m).map_err(|e| errs.add(Column::PreviousMunicipalityCode, reason_of(e))).ok();
                let number = VoucherNumber::parse(v).map_err(|e| errs.add(Column::PreviousVoucherNumber, reason_of(e))).ok();
                Some(Some(VoucherRef { municipality: municipality?, number: number? }))
            }
        }
    }
}

/// A streaming reader of a resident upload; see the [module documentation](self).
///
/// The header (or the layout) is checked by [`ResidentCsvSource::new`], so a file-level
/// error surfaces before any store work. Rows are validated as the store pulls them.
pub struct ResidentCsvSource<R: Read + Send> {
    reader: csv::Reader<Input<R>>,
    record: csv::ByteRecord,
    parser: RowParser,
    report: ImportReport,
    expected_fields: usize,
    encoding: InputEncoding,
    skip_invalid: bool,
    progress: Option<Box<dyn FnMut(ImportProgress) + Send>>,
    /// The rest of the file could not be read (a runaway quoted field): never commit.
    fatal: bool,
    done: bool,
    /// Reused buffer of rows awaiting their duplicate checks.
    pending: Vec<Pending>,
}

impl<R: Read + Send> fmt::Debug for ResidentCsvSource<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResidentCsvSource")
            .field("encoding", &self.encoding)
            .field("municipality", &self.parser.municipality)
            .field("report", &self.report.summary())
            .finish_non_exhaustive()
    }
}

/// What a read of the next record found.
enum Next {
    /// A record starting on this line.
    Record(u64),
    /// End of input.
    End,
}

impl<R: Read + Send> ResidentCsvSource<R> {
    /// Opens an upload: detects the encoding and reads the header row (or applies the
    /// layout). Fails with [`Error::Invalid`] when required columns are missing, a column
    /// is named twice, or a personal_number column comes without a secret; with
    /// [`Error::Read`] when the reader fails.
    pub fn new(mut reader: R, options: ImportOptions) -> Result<Self> {
        let ImportOptions { encoding, layout, skip_invalid, municipality, personal_number_secret, progress } = options;

        let mut sample = vec![0u8; CHUNK];
        let filled = read_full(&mut reader, &mut sample).map_err(read_error)?;
        sample.truncate(filled);
        let at_eof = filled < CHUNK;
        if sample.starts_with(b"\xFF\xFE") || sample.starts_with(b"\xFE\xFF") {
            return Err(Error::Invalid {
                field: "encoding",
                value: "UTF-16".into(),
                reason: "the file is UTF-16 (Excel's \"Unicode text\"): save it as UTF-8 or Shift_JIS CSV".into(),
            });
        }
        let has_bom = sample.starts_with(UTF8_BOM);
        let (resolved, detected) = match encoding {
            InputEncoding::Auto if has_bom || looks_utf8(&sample, at_eof) => (InputEncoding::Utf8, true),
            InputEncoding::Auto => (InputEncoding::ShiftJis, true),
            told => (told, false),
        };
        let mut input = Input {
            inner: reader,
            raw_read: filled as u64,
            delivered: 0,
            last: 0,
            budget: 0,
            pos: if resolved == InputEncoding::Utf8 && has_bom { UTF8_BOM.len() } else { 0 },
            len: sample.len(),
            buf: sample,
            eof: at_eof,
            sjis: None,
        };
        if resolved == InputEncoding::ShiftJis {
            input.sjis = Some(Box::new(ShiftJisState {
                // new_decoder sniffs a BOM: a file told Shift_JIS but carrying a UTF-8 BOM is read as UTF-8.
                decoder: SHIFT_JIS.new_decoder(),
                out: vec![0u8; CHUNK].into_boxed_slice(),
                out_pos: 0,
                out_len: 0,
                done: false,
            }));
        }

        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            // Only LF ends a record; a CR before it stays in the last field and is trimmed.
            // This way every record consumes its own line break, which the line numbers rely on.
            .terminator(csv::Terminator::Any(b'\n'))
            .buffer_capacity(CHUNK)
            .from_reader(input);

        let mut notes = vec![format!("read as {}{}", resolved.as_str(), if detected { " (detected)" } else { "" })];
        let mut source = Self {
            reader,
            record: csv::ByteRecord::new(),
            parser: RowParser {
                index: [None; COLUMNS],
                municipality,
                mac: None,
                addressees: SeenNumbers::default(),
                vouchers: SeenNumbers::default(),
            },
            report: ImportReport::default(),
            expected_fields: 0,
            encoding: resolved,
            skip_invalid,
            progress,
            fatal: false,
            done: false,
            pending: Vec::new(),
        };

        match layout {
            Some(layout) => {
                if layout.header_row {
                    source.next_record()?;
                }
                for (i, c) in layout.columns.iter().enumerate() {
                    if let Some(c) = c {
                        source.parser.index[*c as usize] = Some(i);
                    }
                }
                source.expected_fields = layout.columns.len();
            }
            None => {
                let first = source.next_record()?;
                if source.fatal {
                    return Err(Error::Invalid {
                        field: "header",
                        value: String::new(),
                        reason: "the first line runs on for more than 1 MiB (an unclosed quote?)".into(),
                    });
                }
                if let Next::End = first {
                    return Err(Error::Invalid {
                        field: "header",
                        value: String::new(),
                        reason: "the file is empty: expected a header row".into(),
                    });
                }
                source.read_header(&mut notes)?;
            }
        }

        if source.parser.index[Column::PersonalNumber as usize].is_some() {
            if personal_number_secret.is_empty() {
                return Err(Error::Invalid {
                    field: "personal_number_secret",
                    value: "(redacted)".into(),
                    reason: "the file has a personal_number column: a deployment secret is needed to hash personal numbers".into(),
                });
            }
            let mac = <Hmac<Sha256> as Mac>::new_from_slice(&personal_number_secret).map_err(|_| Error::Invalid {
                field: "personal_number_secret",
                value: "(redacted)".into(),
                reason: "not usable as an HMAC key".into(),
            })?;
            source.parser.mac = Some(mac);
        }
        source.report.notes = notes;
        Ok(source)
    }

    fn read_header(&mut self, notes: &mut Vec<String>) -> Result<()> {
        let mut undecodable = false;
        for (i, raw) in self.record.iter().enumerate() {
            let Ok(text) = std::str::from_utf8(raw) else {
                undecodable = true;
                notes.push(format!("column {} ignored: its name is not valid UTF-8", i + 1));
                continue;
            };
            match Column::from_name(text) {
                Some(c) => {
                    if self.parser.index[c as usize].is_some() {
                        return Err(Error::Invalid { field: "header", value: c.name().into(), reason: "column named twice".into() });
                    }
                    self.parser.index[c as usize] = Some(i);
                }
                None if text.trim().is_empty() => notes.push(format!("column {} ignored: it has no name", i + 1)),
                None => {
                    let shown: String = text.trim().chars().take(64).collect();
                    notes.push(format!("column {} ignored: {shown:?} is not a known column", i + 1));
                }
            }
        }
        let missing: Vec<Column> =
            Column::ALL.into_iter().filter(|c| c.is_required() && self.parser.index[*c as usize].is_none()).collect();
        if !missing.is_empty() {
            let mut e = missing_columns_error("header", &missing);
            if let Error::Invalid { reason, .. } = &mut e {
                if undecodable {
                    reason.push_str("; the header is not valid UTF-8: is the file Shift_JIS? give the encoding");
                } else if self.parser.index.iter().all(Option::is_none) {
                    reason.push_str("; the first line names no known column: a file without a header row needs a column layout");
                }
            }
            return Err(e);
        }
        self.expected_fields = self.record.len();
        Ok(())
    }

    /// The encoding the file is read in (detected or told).
    pub fn encoding(&self) -> InputEncoding {
        self.encoding
    }

    /// The report so far.
    pub fn report(&self) -> &ImportReport {
        &self.report
    }

    /// The progress so far.
    pub fn progress(&self) -> ImportProgress {
        ImportProgress { rows_read: self.report.rows_read, bytes_read: self.reader.get_ref().raw_read }
    }

    /// Reads the next non-blank record into `self.record`.
    fn next_record(&mut self) -> Result<Next> {
        loop {
            let start_hint = self.reader.position().line();
            self.reader.get_mut().budget = 0;
            match self.reader.read_byte_record(&mut self.record) {
                Ok(false) => return Ok(Next::End),
                Ok(true) => {
                    // Blank lines (and lines of only commas and spaces) are not rows.
                    if self.record.iter().all(|f| f.trim_ascii().is_empty()) {
                        continue;
                    }
                    return Ok(Next::Record(self.record_line()));
                }
                Err(e) => {
                    let too_long = matches!(e.kind(), csv::ErrorKind::Io(io) if io.get_ref().is_some_and(|x| x.is::<RecordTooLong>()));
                    if !too_long {
                        return Err(Error::Read { detail: e.to_string() });
                    }
                    self.fatal = true;
                    self.report.rows_invalid += 1;
                    self.report.push_error(RowError {
                        line: start_hint,
                        column: String::new(),
                        reason: "a record starting here runs on for more than 1 MiB, probably an unclosed quote (\"); \
                                 the rest of the file was not read"
                            .into(),
                    });
                    return Ok(Next::End);
                }
            }
        }
    }

    /// The physical line the record just read starts on. csv's own record position is
    /// the end of the previous record (wrong after blank lines), so count back from the
    /// end: the lines consumed, minus line breaks inside quoted fields, minus the
    /// record's own line break when it had one (the last line of a file may not).
    fn record_line(&self) -> u64 {
        let pos = self.reader.position();
        let input = self.reader.get_ref();
        let terminated = pos.byte() < input.delivered || input.last == b'\n';
        let embedded = self.record.as_slice().iter().filter(|&&b| b == b'\n').count() as u64;
        pos.line().saturating_sub(embedded + u64::from(terminated)).max(1)
    }

    fn report_progress(&mut self) {
        let p = self.progress();
        if let Some(cb) = self.progress.as_mut() {
            cb(p);
        }
    }

    fn finish(&mut self) {
        self.done = true;
        self.report_progress();
    }
}

impl<R: Read + Send> crate::store::ResidentSource for ResidentCsvSource<R> {
    fn next_batch(&mut self, max: usize) -> Result<Option<Vec<Resident>>> {
        let max = max.max(1);
        let mut batch = Vec::with_capacity(max.min(16 * 1024));
        let mut pending = std::mem::take(&mut self.pending);
        while batch.len() < max && !self.done {
            // Parse a run of rows, check them for duplicates together, then hand them out.
            let errors_before = self.report.errors.len();
            let run = (max - batch.len()).min(CHECK_RUN);
            pending.clear();
            while pending.len() < run {
                let line = match self.next_record()? {
                    Next::Record(line) => line,
                    Next::End => {
                        self.finish();
                        break;
                    }
                };
                self.report.rows_read += 1;
                if self.report.rows_read.is_multiple_of(PROGRESS_EVERY) {
                    self.report_progress();
                }
                if self.record.len() != self.expected_fields {
                    let reason = format!("has {} fields, expected {}", self.record.len(), self.expected_fields);
                    self.report.push_error(RowError { line, column: String::new(), reason });
                    pending.push(Pending { line, resident: None, addressee_key: None, voucher_key: None, bad: true });
                    continue;
                }
                let mut errs = RowErrors { report: &mut self.report, line, bad: false };
                let parsed = self.parser.parse(&Row::new(&self.record), &mut errs);
                let bad = errs.bad;
                pending.push(Pending {
                    line,
                    resident: parsed.resident,
                    addressee_key: parsed.addressee_key,
                    voucher_key: parsed.voucher_key,
                    bad,
                });
            }
            self.parser.check_duplicates(&mut pending, &mut self.report);
            // The duplicate errors came last: restore file order (stable, so a line's own
            // errors keep their column order).
            self.report.errors[errors_before..].sort_by_key(|e| e.line);
            for p in pending.drain(..) {
                match p.resident {
                    Some(resident) if !p.bad => {
                        self.report.rows_valid += 1;
                        if let Some(prev) = resident.previous {
                            self.report.previous_vouchers.push(prev);
                        }
                        // Once a row is bad and bad rows void the upload, the store need not
                        // do any more work: keep validating for the report, stop handing out rows.
                        if self.skip_invalid || self.report.rows_invalid == 0 {
                            batch.push(resident);
                        }
                    }
                    _ => self.report.rows_invalid += 1,
                }
            }
        }
        self.pending = pending;
        if batch.is_empty() && self.done { Ok(None) } else { Ok(Some(batch)) }
    }

    fn may_commit(&self) -> bool {
        self.done && !self.fatal && (self.skip_invalid || self.report.rows_invalid == 0)
    }

    fn into_report(self: Box<Self>) -> ImportReport {
        let mut report = self.report;
        report.previous_vouchers.sort_unstable();
        report.previous_vouchers.dedup();
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ResidentSource;
    use chrono::NaiveDate;

    const MUNI: &str = "131016";

    fn muni() -> MunicipalityCode {
        MunicipalityCode::parse(MUNI).unwrap()
    }

    fn opts() -> ImportOptions {
        ImportOptions::new(muni())
    }

    /// Reads everything; returns the residents handed out, the report and may_commit.
    fn run(data: &[u8], options: ImportOptions) -> (Vec<Resident>, ImportReport, bool) {
        let mut src = ResidentCsvSource::new(data, options).unwrap();
        let mut all = Vec::new();
        while let Some(batch) = src.next_batch(3).unwrap() {
            all.extend(batch);
        }
        assert!(src.next_batch(3).unwrap().is_none());
        let commit = src.may_commit();
        let report = (Box::new(src) as Box<dyn ResidentSource>).into_report();
        (all, report, commit)
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    const JA: &str = "自治体コード,宛名番号,券番号,氏名,氏名カナ,生年月日,性別,住所\n\
        131016,1001,0000000001,山田　太郎,ヤマダ　タロウ,1950-04-01,1,東京都千代田区1-1\n\
        131016,1002,0000000002,佐藤　花子,サトウ　ハナコ,S22.5.3,2,\n\
        ,1003,0000000003,鈴木　一郎,スズキ　イチロウ,令和元年5月1日,男,\n";

    #[test]
    fn japanese_header_utf8() {
        let (rs, report, commit) = run(JA.as_bytes(), opts());
        assert!(commit, "{report:?}");
        assert_eq!(report.rows_read, 3);
        assert_eq!(report.rows_valid, 3);
        assert!(report.errors.is_empty());
        assert_eq!(rs.len(), 3);
        assert_eq!(rs[0].name.as_str(), "山田　太郎");
        assert_eq!(rs[0].name_kana.as_str(), "ヤマダ　タロウ");
        assert_eq!(rs[0].birth_date, date(1950, 4, 1));
        assert_eq!(rs[0].address.as_ref().unwrap().as_str(), "東京都千代田区1-1");
        assert_eq!(rs[1].birth_date, date(1947, 5, 3));
        assert_eq!(rs[1].sex, Sex::Female);
        assert_eq!(rs[1].address, None);
        assert_eq!(rs[2].birth_date, date(2019, 5, 1));
        assert_eq!(rs[2].person.municipality, muni());
        assert_eq!(rs[2].status, ResidentStatus::Active);
        assert!(report.notes[0].contains("utf-8"), "{:?}", report.notes);
    }

    #[test]
    fn bom_and_crlf() {
        let mut data = UTF8_BOM.to_vec();
        data.extend(JA.replace('\n', "\r\n").as_bytes());
        let (rs, report, commit) = run(&data, opts());
        assert!(commit, "{report:?}");
        assert_eq!(rs.len(), 3);
        assert_eq!(rs[0].address.as_ref().unwrap().as_str(), "東京都千代田区1-1");
        assert_eq!(rs[2].sex, Sex::Male);
        // Told UTF-8 explicitly, the BOM is stripped too.
        let (rs, _, commit) = run(&data, ImportOptions { encoding: InputEncoding::Utf8, ..opts() });
        assert!(commit);
        assert_eq!(rs.len(), 3);
    }

    fn sjis(text: &str) -> Vec<u8> {
        let (bytes, _, unmappable) = SHIFT_JIS.encode(text);
        assert!(!unmappable);
        bytes.into_owned()
    }

    #[test]
    fn shift_jis_detected_and_told() {
        let data = sjis(&JA.replace('\n', "\r\n"));
        assert!(std::str::from_utf8(&data).is_err());
        for encoding in [InputEncoding::Auto, InputEncoding::ShiftJis] {
            let mut src = ResidentCsvSource::new(&data[..], ImportOptions { encoding, ..opts() }).unwrap();
            assert_eq!(src.encoding(), InputEncoding::ShiftJis);
            let rs = src.next_batch(100).unwrap().unwrap();
            assert!(src.next_batch(100).unwrap().is_none());
            assert!(src.may_commit());
            assert_eq!(rs.len(), 3);
            assert_eq!(rs[0].name.as_str(), "山田　太郎");
            assert_eq!(rs[1].name_kana.as_str(), "サトウ　ハナコ");
        }
        // Read as UTF-8 against its will: the header is not understood, and we say why.
        let err = ResidentCsvSource::new(&data[..], ImportOptions { encoding: InputEncoding::Utf8, ..opts() }).unwrap_err();
        assert!(err.to_string().contains("Shift_JIS"), "{err}");
    }

    /// A big Shift_JIS file crosses many 64 KiB chunks, with two-byte characters cut at
    /// chunk ends; every row must come through intact.
    #[test]
    fn shift_jis_across_chunks() {
        let mut text = String::from("宛名番号,券番号,氏名,生年月日,性別\r\n");
        for i in 0..20_000u64 {
            text.push_str(&format!("{},{:010},漢字氏名表示{},平成{}年1月8日,2\r\n", i + 1, i, i % 7, 1 + i % 30));
        }
        let data = sjis(&text);
        assert!(data.len() > 5 * CHUNK);
        let (rs, report, commit) = run(&data, opts());
        assert!(commit, "{:?}", &report.errors[..report.errors.len().min(3)]);
        assert_eq!(rs.len(), 20_000);
        assert_eq!(rs[19_999].name.as_str(), format!("漢字氏名表示{}", 19_999 % 7));
        assert!(report.notes[0].contains("shift_jis (detected)"));
    }

    /// UTF-8 detection when a multi-byte character straddles the 64 KiB sample's end.
    #[test]
    fn utf8_character_cut_at_the_sample_end_is_still_utf8() {
        // Pad the header so that a three-byte character starts just before the cut.
        let text = (0..64)
            .map(|pad| {
                let mut text = format!("addressee_number,voucher_number,name,birth_date,sex,address,{}\n", "x".repeat(pad + 1));
                let mut i = 0u64;
                while text.len() < CHUNK + 4096 {
                    i += 1;
                    text.push_str(&format!("{i},{i:010},山田,2000-01-01,1,東京都千代田区,\n"));
                }
                text
            })
            .find(|t| !t.is_char_boundary(CHUNK))
            .unwrap();
        let rows = text.lines().count() as u64 - 1;
        let (rs, report, commit) = run(text.as_bytes(), opts());
        assert!(commit, "{:?}", report.errors.first());
        assert_eq!(rs.len() as u64, rows);
        assert!(report.notes[0].contains("utf-8"));
    }

    #[test]
    fn english_header_all_columns_and_fullwidth_digits() {
        let data = "Municipality Code,Addressee Number,voucher_number,NAME,name_kana,birth_date,sex,address,\
            previous_municipality_code,previous_voucher_number,personal_number,status,status_date,memo\n\
            １３１０１６,００１２,０１２３４５６７８９,Yamada Taro,ヤマダ,２０２１年４月１日,１,,011002,9999999999,123456789018,転出,R5.3.31,x\n";
        let secret = b"deployment-secret".to_vec();
        let (rs, report, commit) = run(data.as_bytes(), ImportOptions { personal_number_secret: secret.clone(), ..opts() });
        assert!(commit, "{report:?}");
        let r = &rs[0];
        assert_eq!(r.person.addressee.as_str(), "0012");
        assert_eq!(r.voucher.as_str(), "0123456789");
        assert_eq!(r.birth_date, date(2021, 4, 1));
        assert_eq!(r.status, ResidentStatus::MovedOut);
        assert_eq!(r.status_date, Some(date(2023, 3, 31)));
        let prev = r.previous.unwrap();
        assert_eq!((prev.municipality.as_str(), prev.number.as_str()), ("011002", "9999999999"));
        assert_eq!(report.previous_vouchers, vec![prev]);
        let pn = PersonalNumber::parse("123456789018").unwrap();
        assert_eq!(r.personal_number_hash, Some(pn.keyed_hash(&secret)));
        assert!(report.notes.iter().any(|n| n.contains("\"memo\"")), "{:?}", report.notes);
    }

    #[test]
    fn personal_number_column_needs_a_secret() {
        let data = "宛名番号,券番号,氏名,生年月日,性別,個人番号\n1,0000000001,山田,2000-01-01,1,\n";
        let err = ResidentCsvSource::new(data.as_bytes(), opts()).unwrap_err();
        assert!(err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn missing_and_duplicate_columns_are_file_level_errors() {
        let err = ResidentCsvSource::new("宛名番号,氏名,性別\n".as_bytes(), opts()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("voucher_number") && text.contains("birth_date") && text.contains("券番号"), "{text}");
        assert!(!text.contains("sex"), "{text}");
        assert_eq!(err.exit_code(), 2);
        let err = ResidentCsvSource::new("宛名番号,券番号,氏名,生年月日,性別,個別宛名番号\n".as_bytes(), opts()).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
        assert!(ResidentCsvSource::new(&b""[..], opts()).is_err());
    }

    #[test]
    fn headerless_with_layout() {
        let layout = ColumnLayout::parse("addressee_number,voucher_number,name,name_kana,birth_date,sex").unwrap();
        let data = "1,0000000001,山田　太郎,ヤマダ,R3.4.1,1\n2,0000000002,佐藤,サトウ,H1.1.8,F\n";
        let (rs, report, commit) = run(data.as_bytes(), ImportOptions { layout: Some(layout), ..opts() });
        assert!(commit, "{report:?}");
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].birth_date, date(2021, 4, 1));
        assert_eq!(rs[1].sex, Sex::Female);

        // Japanese names, skipped columns, a header row to ignore; errors count lines from it.
        let layout = ColumnLayout::parse("_,宛名番号,券番号,,氏名,生年月日,性別").unwrap().with_header_row(true);
        assert_eq!(layout.columns().len(), 7);
        let data = "a,b,c,d,e,f,g\nx,1,0000000001,junk,山田,2000-01-01,1\nx,2,000000000X,junk,佐藤,2000-01-01,2\n";
        let (rs, report, commit) = run(data.as_bytes(), ImportOptions { layout: Some(layout), ..opts() });
        assert!(!commit);
        assert_eq!(rs.len(), 1);
        assert_eq!(report.errors, vec![RowError { line: 3, column: "voucher_number".into(), reason: "must be exactly 10 digits".into() }]);

        assert!(ColumnLayout::parse("addressee_number,name,birth_date,sex").is_err(), "voucher missing");
        assert!(ColumnLayout::parse("addressee_number,voucher_number,name,birth_date,sex,nonsense").is_err());
        assert!(ColumnLayout::parse("addressee_number,voucher_number,name,birth_date,sex,氏名").is_err(), "twice");
        let multi = ColumnLayout::parse("宛名番号\n券番号\n氏名\n生年月日\n性別\n").unwrap();
        assert_eq!(multi.columns().len(), 5);
    }

    const SECRET_NAME: &str = "秘密太郎";

    fn bad_file() -> String {
        [
            "宛名番号,券番号,氏名,生年月日,性別,転入前自治体コード,転入前券番号,自治体コード", // 1
            "1,0000000001,山田,2000-01-01,1,,,",                                               // 2 ok
            "2,0000000002,秘密太郎,1999-02-30,1,,,",                                           // 3 birth_date
            "3,00000003,佐藤,2000-01-01,X,,,",                                                 // 4 voucher, sex
            "1,0000000004,鈴木,2000-01-01,2,,,",                                               // 5 duplicate addressee
            "5,0000000001,高橋,2000-01-01,2,,,",                                               // 6 duplicate voucher
            "6,0000000006,田中,2000-01-01,2,011002,,",                                         // 7 previous half
            "7,0000000007,伊藤,2000-01-01",                                                    // 8 field count
            "8,0000000008,,2000-01-01,1,,,",                                                   // 9 name missing
            "9,0000000009,渡辺,2000-01-01,1,,,011002",                                         // 10 other municipality
            "10,0000000010,\"秘密\n太郎\",2000-01-01,1,,,",                                    // 11-12 control char
            "11,0000000011,中村,H31.5.1,1,,,",                                                 // 13 outside era
            "",                                                                                // 14 blank
            "12,0000000012,小林,2000-01-01,1,,,",                                              // 15 ok
            "13,0000000013,山本\u{0},2000-01-01,1,,,",                                         // 16 NUL
            "14,0000000014,加藤,2000-01-01,1,,,",                                              // 17 ok, no newline at the end
        ]
        .join("\n")
    }

    fn expected_errors() -> Vec<(u64, &'static str)> {
        vec![
            (3, "birth_date"),
            (4, "voucher_number"),
            (4, "sex"),
            (5, "addressee_number"),
            (6, "voucher_number"),
            (7, "previous_voucher_number"),
            (8, ""),
            (9, "name"),
            (10, "municipality_code"),
            (11, "name"),
            (13, "birth_date"),
            (16, "name"),
        ]
    }

    #[test]
    fn every_bad_row_is_reported_with_line_and_column() {
        for crlf in [false, true] {
            let text = if crlf { bad_file().replace('\n', "\r\n") } else { bad_file() };
            let (rs, report, commit) = run(text.as_bytes(), opts());
            assert!(!commit);
            let got: Vec<(u64, &str)> = report.errors.iter().map(|e| (e.line, e.column.as_str())).collect();
            assert_eq!(got, expected_errors(), "crlf={crlf}: {:#?}", report.errors);
            assert_eq!(report.rows_read, 14);
            assert_eq!(report.rows_invalid, 11);
            assert_eq!(report.rows_valid, 3);
            // Only the rows before the first bad one were handed out: the rest is pointless
            // store work when nothing will be committed.
            assert_eq!(rs.len(), 1);
            assert!(report.errors[4].reason.contains("line 2"), "{:?}", report.errors[4]);
            assert!(report.errors[3].reason.contains("line 2"), "{:?}", report.errors[3]);
            assert!(report.errors[8].reason.contains("011002"), "{:?}", report.errors[8]);
            let all = format!("{report:?} {}", serde_json::to_string(&report).unwrap());
            for secret in [SECRET_NAME, "1999-02-30", "秘密", "H31.5.1", "渡辺", "山本"] {
                assert!(!all.contains(secret), "{secret} leaked: {all}");
            }
            assert!(Error::ImportRejected(Box::new(report)).to_string().contains("11 bad"));
        }
    }

    #[test]
    fn skip_invalid_applies_the_good_rows() {
        let (rs, report, commit) = run(bad_file().as_bytes(), ImportOptions { skip_invalid: true, ..opts() });
        assert!(commit);
        let ids: Vec<&str> = rs.iter().map(|r| r.person.addressee.as_str()).collect();
        assert_eq!(ids, ["1", "12", "14"]);
        assert_eq!(report.rows_valid, 3);
        assert_eq!(report.rows_invalid, 11);
    }

    #[test]
    fn multi_line_quoted_field_keeps_later_line_numbers() {
        let data = "宛名番号,券番号,氏名,生年月日,性別,住所,備考\n\
            1,0000000001,山田,2000-01-01,1,東京都,\"line one\nline two\nline three\"\n\
            2,0000000002,佐藤,2000-01-01,9,東京都,\n\
            \n\
            3,0000000003,鈴木,2000-13-01,1,\"東京都\n千代田区\",\n\
            4,0000000004,田中,bad,1,,\n";
        let (_, report, commit) = run(data.as_bytes(), opts());
        assert!(!commit);
        let got: Vec<(u64, &str)> = report.errors.iter().map(|e| (e.line, e.column.as_str())).collect();
        assert_eq!(got, vec![(7, "birth_date"), (7, "address"), (9, "birth_date")]);
    }

    #[test]
    fn wrong_municipality_and_bad_encoding_bytes() {
        // Shift_JIS bytes inside a file told to be UTF-8: a row error, not a crash.
        let mut data = b"addressee_number,voucher_number,name,birth_date,sex\n1,0000000001,".to_vec();
        data.extend(sjis("山田"));
        data.extend(b",2000-01-01,1\n");
        let (_, report, _) = run(&data, ImportOptions { encoding: InputEncoding::Utf8, ..opts() });
        assert_eq!(report.errors.len(), 1);
        assert!(report.errors[0].reason.contains("UTF-8"));
        // Invalid Shift_JIS (a lone lead byte) decodes to U+FFFD, reported per field.
        let mut data = sjis("宛名番号,券番号,氏名,生年月日,性別\n1,0000000001,");
        data.extend(b"\x81");
        data.extend(b",2000-01-01,1\n");
        let (_, report, _) = run(&data, ImportOptions { encoding: InputEncoding::ShiftJis, ..opts() });
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
        assert_eq!((report.errors[0].line, report.errors[0].column.as_str()), (2, "name"));
    }

    #[test]
    fn an_unclosed_quote_stops_the_file_without_eating_memory() {
        let mut data = String::from("宛名番号,券番号,氏名,生年月日,性別\n1,0000000001,\"山田,2000-01-01,1\n");
        while data.len() < 3 << 20 {
            data.push_str("2,0000000002,佐藤,2000-01-01,1\n");
        }
        let (_, report, commit) = run(data.as_bytes(), ImportOptions { skip_invalid: true, ..opts() });
        assert!(!commit, "a file not read to its end is never committed");
        assert_eq!(report.errors.len(), 1);
        assert_eq!(report.errors[0].line, 2);
        assert!(report.errors[0].reason.contains("unclosed quote"));
    }

    #[test]
    fn progress_is_reported() {
        let mut text = String::from("宛名番号,券番号,氏名,生年月日,性別\n");
        for i in 0..25_000u64 {
            text.push_str(&format!("{},{:010},山田,2000-01-01,1\n", i + 1, i));
        }
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let options = ImportOptions { progress: Some(Box::new(move |p| sink.lock().unwrap().push(p))), ..opts() };
        let (rs, _, commit) = run(text.as_bytes(), options);
        assert!(commit);
        assert_eq!(rs.len(), 25_000);
        let seen = seen.lock().unwrap();
        let rows: Vec<u64> = seen.iter().map(|p| p.rows_read).collect();
        assert_eq!(rows, vec![10_000, 20_000, 25_000]);
        assert_eq!(seen.last().unwrap().bytes_read, text.len() as u64);
    }

    #[test]
    fn seen_numbers_ascending_and_out_of_order() {
        let mut s = SeenNumbers::default();
        assert_eq!(s.insert(5, 1), None);
        assert_eq!(s.insert(9, 2), None);
        assert_eq!(s.insert(7, 3), None);
        assert_eq!(s.insert(12, 4), None);
        assert_eq!(s.insert(7, 5), Some(3));
        assert_eq!(s.insert(9, 6), Some(2));
        assert_eq!(s.insert(12, 7), Some(4));
        assert_eq!(s.insert(1, 8), None);
        assert_eq!(s.insert(1, 9), Some(8));
    }

    #[test]
    fn utf16_and_headerless_files_get_a_clear_error() {
        let err = ResidentCsvSource::new(&b"\xFF\xFEa\x00"[..], opts()).unwrap_err();
        assert!(err.to_string().contains("UTF-16"), "{err}");
        let err = ResidentCsvSource::new("1,0000000001,山田,2000-01-01,1\n".as_bytes(), opts()).unwrap_err();
        assert!(err.to_string().contains("column layout"), "{err}");
    }

    proptest::proptest! {
        /// Whatever the bytes, the reader reports; it never panics.
        #[test]
        fn arbitrary_input_never_panics(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400), sjis_mode in 0u8..3) {
            let mut data = b"addressee_number,voucher_number,name,birth_date,sex,status,status_date,personal_number\n".to_vec();
            data.extend(body);
            let encoding = [InputEncoding::Auto, InputEncoding::Utf8, InputEncoding::ShiftJis][usize::from(sjis_mode)];
            let options = ImportOptions { encoding, skip_invalid: true, personal_number_secret: b"k".to_vec(), ..opts() };
            if let Ok(mut src) = ResidentCsvSource::new(&data[..], options) {
                while let Some(batch) = src.next_batch(7).unwrap() {
                    proptest::prop_assert!(batch.len() <= 7);
                }
                let report = (Box::new(src) as Box<dyn ResidentSource>).into_report();
                proptest::prop_assert_eq!(report.rows_valid + report.rows_invalid, report.rows_read);
            }
        }

        /// Lines stay right whatever mix of blank lines, CRLF and multi-line quoted fields.
        #[test]
        fn bad_rows_are_found_on_their_line(rows in proptest::collection::vec((0u8..4, proptest::prelude::any::<bool>()), 1..40)) {
            let mut text = String::from("宛名番号,券番号,氏名,生年月日,性別,備考\r\n");
            let mut line = 2u64;
            let mut bad_lines = Vec::new();
            for (i, (shape, bad)) in rows.iter().enumerate() {
                let date = if *bad { "2000-02-30" } else { "2000-02-28" };
                let note = match shape {
                    0 => String::new(),
                    1 => "\"a\nb\"".to_owned(),
                    2 => "\"a\r\nb\r\nc\"".to_owned(),
                    _ => "x".to_owned(),
                };
                if *bad {
                    bad_lines.push(line);
                }
                text.push_str(&format!("{},{:010},山田,{date},1,{note}", i + 1, i));
                line += 1 + note.matches('\n').count() as u64;
                text.push_str(if i % 3 == 0 { "\n" } else { "\r\n" });
                if i % 5 == 4 {
                    text.push_str("\r\n");
                    line += 1;
                }
            }
            let (_, report, _) = run(text.as_bytes(), opts());
            let got: Vec<u64> = report.errors.iter().map(|e| e.line).collect();
            proptest::prop_assert_eq!(got, bad_lines);
        }
    }

    #[test]
    fn column_names() {
        assert_eq!(Column::from_name("個別宛名番号"), Some(Column::AddresseeNumber));
        assert_eq!(Column::from_name("接種券番号"), Some(Column::VoucherNumber));
        assert_eq!(Column::from_name("カナ氏名"), Some(Column::NameKana));
        assert_eq!(Column::from_name("氏名（カナ）"), Some(Column::NameKana));
        assert_eq!(Column::from_name(" Birth Date "), Some(Column::BirthDate));
        assert_eq!(Column::from_name("\u{feff}宛名番号"), Some(Column::AddresseeNumber));
        assert_eq!(Column::from_name("備考"), None);
        for c in Column::ALL {
            assert_eq!(Column::from_name(c.name()), Some(c));
            assert_eq!(Column::from_name(c.japanese()), Some(c));
        }
    }
}
