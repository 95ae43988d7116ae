//! `vrs demo`: the whole VRS story on a fresh store (embedded, or PostgreSQL with
//! `--store postgres://...`), with a clock stepping
//! through 2021–2022. Every outcome it prints is what vrs-core decided; the demo only
//! writes the script (who uploads what, which voucher is scanned where and when).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Days, NaiveDate, NaiveTime, Utc};
use serde::Serialize;
use vrs_core::access::{Actor, Site, StatsScope};
use vrs_core::clock::jst;
use vrs_core::dose::{DoseCorrection, DoseRegistration};
use vrs_core::finding::{Finding, FindingKind};
use vrs_core::generate::{GenOptions, GeneratedResident, HeaderLanguage, ResidentGenerator, write_residents_csv};
use vrs_core::ids::{AccountId, AddresseeNumber, DoseId, IdempotencyKey, MunicipalityCode, PersonRef, SiteId, VoucherNumber};
use vrs_core::import::{ImportOptions, ImportReport, RowError};
use vrs_core::ledger::{LedgerOptions, OutputEncoding};
use vrs_core::service::{FixedClock, RegistrationOutcome, Registry};
use vrs_core::stats::StatsQuery;
use vrs_core::store::DynStore;
use vrs_core::vaccine::age_in_years;

use crate::app::{StoreSpec, open_redb, store_spec};
use crate::cli::DemoArgs;
use crate::commands::{severity_label, write_stats_csv};
use crate::error::{CliError, CliResult, write_error};
use crate::import::import_file;
use crate::interchange;
use crate::output::Report;

const CHIYODA: &str = "131016";
const SHINJUKU: &str = "131041";
const PFIZER_LOTS: [&str; 4] = ["FA5765", "EY0779", "FC3661", "FF2782"];
const MODERNA_LOTS: [&str; 3] = ["3004734", "3004667", "3005236"];
const DOCTORS: [&str; 4] = ["佐藤　一郎", "高橋　花子", "田中　誠", "伊藤　由美"];

fn err(e: impl std::fmt::Display) -> CliError {
    CliError::Failure(e.to_string())
}

fn ymd(y: i32, m: u32, d: u32) -> CliResult<NaiveDate> {
    NaiveDate::from_ymd_opt(y, m, d).ok_or_else(|| err(format!("bad demo date {y}-{m}-{d}")))
}

fn add_days(d: NaiveDate, n: u64) -> CliResult<NaiveDate> {
    d.checked_add_days(Days::new(n)).ok_or_else(|| err("demo date out of range"))
}

/// `day` at `hour`:00 in Japan, as the instant the clock is set to.
fn at(day: NaiveDate, hour: u32) -> CliResult<DateTime<Utc>> {
    let t = NaiveTime::from_hms_opt(hour, 0, 0).ok_or_else(|| err("bad hour"))?;
    day.and_time(t).and_local_timezone(jst()).single().map(|x| x.with_timezone(&Utc)).ok_or_else(|| err("bad demo instant"))
}

/// One upload as the summary shows it.
#[derive(Debug, Serialize)]
struct Upload {
    municipality: MunicipalityCode,
    name: &'static str,
    file: PathBuf,
    encoding: String,
    rows: u64,
    applied: bool,
    inserted: u64,
    replaced: u64,
    waiting_doses_matched: u64,
    bad_lines: Vec<RowError>,
}

/// A file the demo wrote.
#[derive(Debug, Serialize)]
struct FileWritten {
    path: PathBuf,
    what: String,
}

/// One of the story's cases, with what the core said about it.
#[derive(Debug, Default, Serialize)]
struct Case {
    count: u64,
    doses: Vec<DoseId>,
    findings: Vec<String>,
    note: String,
}

/// The counts per case, for `--json` and the tests.
#[derive(Debug, Default, Serialize)]
struct Cases {
    registrations: u64,
    matched: u64,
    unmatched_at_registration: u64,
    unmatched_then_matched: u64,
    still_unmatched: u64,
    duplicate: u64,
    probable_duplicate: u64,
    too_early: u64,
    retry_replayed: u64,
    rejected: BTreeMap<String, u64>,
    corrected: u64,
    voided: u64,
    moved_in_doses_seen: u64,
    boosters: u64,
    findings_of_routine_doses: BTreeMap<String, u64>,
}

/// Everything the demo prints.
#[derive(Debug, Default, Serialize)]
struct Summary {
    dir: PathBuf,
    store: String,
    uploads: Vec<Upload>,
    accounts: Vec<String>,
    cases: Cases,
    details: BTreeMap<&'static str, Case>,
    open_findings: BTreeMap<String, BTreeMap<String, u64>>,
    files: Vec<FileWritten>,
    seconds: f64,
}

/// The demo's state: the registry on a fresh store and its stopped clock.
struct Story {
    registry: Registry,
    clock: Arc<FixedClock>,
    dir: PathBuf,
    chiyoda: MunicipalityCode,
    shinjuku: MunicipalityCode,
    summary: Summary,
    lots: usize,
}

fn staff(m: MunicipalityCode) -> Actor {
    Actor::MunicipalStaff { municipality: m, user: "demo".into() }
}

fn site_actor(account: &str) -> CliResult<Actor> {
    Ok(Actor::Site { account: AccountId::parse(account)? })
}

fn kinds(findings: &[Finding]) -> Vec<String> {
    findings.iter().map(|f| format!("{} ({})", f.kind.as_str(), severity_label(f.severity))).collect()
}

const VENUE: &str = "chiyoda-venue-t1";
const CLINIC_A: &str = "gmis-1310100021-t1";
const CLINIC_B: &str = "gmis-1310400057-t1";

impl Story {
    fn set_clock(&self, day: NaiveDate, hour: u32) -> CliResult<()> {
        self.clock.set(at(day, hour)?);
        Ok(())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn file(&mut self, path: &Path, what: impl Into<String>) {
        self.summary.files.push(FileWritten { path: path.to_owned(), what: what.into() });
    }

    /// Writes generated residents (rows `range` of `options`) as a CSV file.
    fn write_generated(
        &mut self,
        path: &Path,
        options: &GenOptions,
        encoding: OutputEncoding,
        keep: std::ops::Range<usize>,
    ) -> CliResult<()> {
        let mut buf = Vec::new();
        write_residents_csv(&mut buf, options, encoding, HeaderLanguage::Japanese)?;
        let bytes = if keep.start == 0 && keep.end as u64 >= options.count {
            buf
        } else {
            // The generator writes one row per line and never quotes: rows split on line ends.
            let mut lines = buf.split_inclusive(|b| *b == b'\n');
            let mut out = lines.next().map(<[u8]>::to_vec).unwrap_or_default();
            for line in lines.skip(keep.start).take(keep.len()) {
                out.extend_from_slice(line);
            }
            out
        };
        std::fs::write(path, bytes).map_err(|e| write_error(path, e))
    }

    async fn upload(&mut self, m: MunicipalityCode, file: &Path) -> CliResult<Option<u64>> {
        let options = ImportOptions::new(m);
        let name = m.name().unwrap_or("");
        match import_file(&self.registry, &staff(m), m, file, options).await {
            Ok(outcome) => {
                let r = &outcome.report;
                self.summary.uploads.push(Upload {
                    municipality: m,
                    name,
                    file: file.to_owned(),
                    encoding: r.notes.iter().find(|n| n.contains("read as")).cloned().unwrap_or_default(),
                    rows: r.rows_read,
                    applied: r.applied,
                    inserted: r.inserted,
                    replaced: r.replaced,
                    waiting_doses_matched: outcome.reconciled.matched,
                    bad_lines: r.errors.clone(),
                });
                Ok(Some(outcome.reconciled.matched))
            }
            Err(CliError::Core(vrs_core::Error::ImportRejected(report))) => {
                let r: &ImportReport = &report;
                self.summary.uploads.push(Upload {
                    municipality: m,
                    name,
                    file: file.to_owned(),
                    encoding: r.notes.iter().find(|n| n.contains("read as")).cloned().unwrap_or_default(),
                    rows: r.rows_read,
                    applied: false,
                    inserted: 0,
                    replaced: 0,
                    waiting_doses_matched: 0,
                    bad_lines: r.errors.clone(),
                });
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn registration(
        &mut self,
        m: MunicipalityCode,
        voucher: VoucherNumber,
        dose: u8,
        day: NaiveDate,
        product: &str,
        key: &str,
    ) -> CliResult<DoseRegistration> {
        self.lots += 1;
        let lot = match product {
            "moderna" => MODERNA_LOTS[self.lots % MODERNA_LOTS.len()],
            _ => PFIZER_LOTS[self.lots % PFIZER_LOTS.len()],
        };
        Ok(DoseRegistration {
            ocr_line: format!("1{dose}{m}{voucher}"),
            dose_number: None,
            date_given: day,
            product: product.to_owned(),
            lot: lot.to_owned(),
            doctor: DOCTORS[self.lots % DOCTORS.len()].to_owned(),
            idempotency_key: IdempotencyKey::parse(key)?,
            lot_expiry: None,
        })
    }

    /// Registers one dose for a case and records what the core said.
    async fn register(&mut self, account: &str, reg: &DoseRegistration) -> CliResult<RegistrationOutcome> {
        let o = self.registry.register(&site_actor(account)?, reg).await?;
        if !o.replayed {
            self.summary.cases.registrations += 1;
            if o.matched {
                self.summary.cases.matched += 1;
            } else {
                self.summary.cases.unmatched_at_registration += 1;
            }
        }
        Ok(o)
    }

    /// A day of routine vaccination at one site: one batch, one durable commit.
    async fn routine_day(&mut self, account: &str, regs: &[DoseRegistration]) -> CliResult<()> {
        if regs.is_empty() {
            return Ok(());
        }
        for result in self.registry.register_batch(&site_actor(account)?, regs).await? {
            let o = result?;
            self.summary.cases.registrations += 1;
            if o.matched {
                self.summary.cases.matched += 1;
            } else {
                self.summary.cases.unmatched_at_registration += 1;
            }
            for f in &o.findings {
                *self.summary.cases.findings_of_routine_doses.entry(f.kind.as_str().to_owned()).or_default() += 1;
            }
        }
        Ok(())
    }

    fn case(&mut self, name: &'static str) -> &mut Case {
        self.summary.details.entry(name).or_default()
    }
}

/// The residents a campaign vaccinates: active, not moved in, at least `min_age` on `day`.
fn adults(rows: &[GeneratedResident], day: NaiveDate, min_age: u32) -> Vec<usize> {
    (0..rows.len())
        .filter(|&i| rows[i].previous.is_none() && rows[i].status_date.is_none() && age_in_years(rows[i].birth_date, day) >= min_age)
        .collect()
}

/// The schema the demo wipes and runs in on PostgreSQL, unless the URL names one.
const DEMO_SCHEMA: &str = "vrs_demo";

/// A fresh store for the demo: a PostgreSQL schema wiped and migrated anew when `--store`
/// is a `postgres://` URL, else a new redb file in the demo's directory. Returns the
/// store and how to name it in `--store`.
async fn fresh_store(dir: &Path, store: &str) -> CliResult<(DynStore, String)> {
    match store_spec(store)? {
        StoreSpec::Postgres(url) => {
            let named = url.contains("schema=");
            let url = if named { url } else { format!("{url}{}schema={DEMO_SCHEMA}", if url.contains('?') { '&' } else { '?' }) };
            let options = vrs_store_postgres::Options::default();
            let pg = vrs_store_postgres::PostgresStore::connect_fresh(&url, options).await.map_err(CliError::Core)?;
            Ok((Arc::new(pg), vrs_store_postgres::redact_url(&url)))
        }
        StoreSpec::Redb(_) => {
            let path = dir.join("vrs.redb");
            let store: DynStore = Arc::new(open_redb(&path)?);
            Ok((store, path.display().to_string()))
        }
    }
}

/// Runs `vrs demo` on a fresh store: `store` is the `--store` given (a PostgreSQL URL is
/// used, its schema wiped first; a file path is not: the demo's redb file lives in its
/// directory).
pub async fn run(args: &DemoArgs, store: &str) -> CliResult<Report> {
    let started = Instant::now();
    let dir = args.dir.clone();
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| write_error(&dir, e))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| write_error(&dir, e))?;
    let clock = Arc::new(FixedClock::new(at(ymd(2021, 4, 1)?, 9)?));
    let (store, store_name) = fresh_store(&dir, store).await?;
    let registry = Registry::new(store, clock.clone());
    let chiyoda = MunicipalityCode::parse(CHIYODA)?;
    let shinjuku = MunicipalityCode::parse(SHINJUKU)?;
    let mut s = Story {
        registry,
        clock,
        dir: dir.clone(),
        chiyoda,
        shinjuku,
        summary: Summary { dir: dir.clone(), store: store_name, ..Summary::default() },
        lots: 0,
    };
    story(&mut s, u64::from(args.residents.max(100))).await?;
    s.summary.seconds = started.elapsed().as_secs_f64();
    let text = summary_text(&s.summary);
    Ok(Report::new(text, &s.summary))
}

async fn story(s: &mut Story, n: u64) -> CliResult<()> {
    let (a, b) = (s.chiyoda, s.shinjuku);

    // ---- 2021-04-01: uploads ----------------------------------------------------------
    // 千代田区: n residents now, 3 more (held back) in a later upload.
    let a_opts = GenOptions { moves: false, ..GenOptions::new(a, n + 3, 2021) };
    let a_rows: Vec<GeneratedResident> = ResidentGenerator::new(&a_opts)?.collect();
    let a_file = s.path("residents-131016.csv");
    s.write_generated(&a_file, &a_opts, OutputEncoding::Utf8, 0..n as usize)?;
    let a_late_file = s.path("residents-131016-late.csv");
    s.write_generated(&a_late_file, &a_opts, OutputEncoding::Utf8, n as usize..(n + 3) as usize)?;
    // 新宿区: n residents in Shift_JIS, the encoding many municipal systems still write.
    let b_opts = GenOptions { moves: false, ..GenOptions::new(b, n, 2022) };
    let b_rows: Vec<GeneratedResident> = ResidentGenerator::new(&b_opts)?.collect();
    let b_file = s.path("residents-131041.sjis.csv");
    s.write_generated(&b_file, &b_opts, OutputEncoding::ShiftJis, 0..n as usize)?;
    s.upload(a, &a_file).await?;
    s.upload(b, &b_file).await?;

    // An upload with bad rows: refused whole, with every bad line.
    let bad_opts = GenOptions { moves: false, first_addressee: 900_001, ..GenOptions::new(a, 12, 99) };
    let mut buf = Vec::new();
    write_residents_csv(&mut buf, &bad_opts, OutputEncoding::Utf8, HeaderLanguage::Japanese)?;
    let text = String::from_utf8(buf).map_err(err)?;
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let breaks: [(usize, usize, &str); 4] = [(3, 2, "12345"), (5, 5, "2021-02-30"), (8, 6, "X"), (11, 0, SHINJUKU)];
    for (line, col, value) in breaks {
        // Line numbers count the header as line 1.
        if let Some(l) = lines.get_mut(line - 1) {
            let mut fields: Vec<&str> = l.split(',').collect();
            if let Some(f) = fields.get_mut(col) {
                *f = value;
            }
            *l = fields.join(",");
        }
    }
    let bad_file = s.path("residents-131016-broken.csv");
    std::fs::write(&bad_file, lines.join("\n") + "\n").map_err(|e| write_error(&bad_file, e))?;
    s.upload(a, &bad_file).await?;

    // ---- tablet accounts for three sites ------------------------------------------------
    let sites = [
        (a, VENUE, "V131016-01", "千代田区役所　集団接種会場"),
        (a, CLINIC_A, "1310100021", "神田駅前クリニック"),
        (b, CLINIC_B, "1310400057", "新宿西口内科"),
    ];
    for (m, account, site, name) in sites {
        let site = Site { id: SiteId::parse(site)?, name: name.to_owned(), municipality: m };
        let acc = s.registry.issue_account(&staff(m), site, AccountId::parse(account)?).await?;
        s.summary.accounts.push(format!("{} → {} {} ({})", acc.id, acc.site.id, acc.site.name, m.name().unwrap_or("")));
    }

    // Who is who in the story (千代田区 adults), and the routine campaign groups.
    let start_a = ymd(2021, 5, 10)?;
    let a_adults = adults(&a_rows[..n as usize], start_a, 16);
    if a_adults.len() < 20 {
        return Err(err("too few adults generated for the demo"));
    }
    let (early, dup, prob, mover) = (a_adults[0], a_adults[1], a_adults[2], a_adults[3]);
    let a_campaign: Vec<usize> = a_adults[3..].iter().copied().take(a_adults.len() * 6 / 10).collect();
    let start_b = ymd(2021, 5, 24)?;
    let b_adults = adults(&b_rows, start_b, 18);
    let b_campaign: Vec<usize> = b_adults.iter().copied().take(b_adults.len() * 6 / 10).collect();

    // ---- routine campaign: dose 1 then dose 2 at the proper interval ----------------------
    let mut days: BTreeMap<NaiveDate, Vec<(&'static str, DoseRegistration)>> = BTreeMap::new();
    for (k, &i) in a_campaign.iter().enumerate() {
        let d1 = add_days(start_a, (k % 10) as u64)?;
        let d2 = add_days(d1, 21)?;
        let account = if k % 2 == 0 { VENUE } else { CLINIC_A };
        let v = a_rows[i].voucher;
        let r1 = s.registration(a, v, 1, d1, "pfizer", &format!("{account}-{v}-1"))?;
        let r2 = s.registration(a, v, 2, d2, "pfizer", &format!("{account}-{v}-2"))?;
        days.entry(d1).or_default().push((account, r1));
        days.entry(d2).or_default().push((account, r2));
    }
    for (k, &i) in b_campaign.iter().enumerate() {
        let d1 = add_days(start_b, (k % 10) as u64)?;
        let d2 = add_days(d1, 28)?;
        let v = b_rows[i].voucher;
        let r1 = s.registration(b, v, 1, d1, "moderna", &format!("{CLINIC_B}-{v}-1"))?;
        let r2 = s.registration(b, v, 2, d2, "moderna", &format!("{CLINIC_B}-{v}-2"))?;
        days.entry(d1).or_default().push((CLINIC_B, r1));
        days.entry(d2).or_default().push((CLINIC_B, r2));
    }
    // Boosters in 2022 for the first fifth of 千代田区's campaign.
    let booster_day = ymd(2022, 3, 14)?;
    for (k, &i) in a_campaign.iter().skip(1).take(a_campaign.len() / 5).enumerate() {
        let d3 = add_days(booster_day, (k % 5) as u64)?;
        let v = a_rows[i].voucher;
        let product = if k % 2 == 0 { "pfizer" } else { "moderna" };
        let r3 = s.registration(a, v, 3, d3, product, &format!("{VENUE}-{v}-3"))?;
        days.entry(d3).or_default().push((VENUE, r3));
        s.summary.cases.boosters += 1;
    }

    // The special cases, each on its day, between the routine batches.
    let june1 = ymd(2021, 6, 1)?;
    let june8 = ymd(2021, 6, 8)?;
    let june10 = ymd(2021, 6, 10)?;
    let june15 = ymd(2021, 6, 15)?;
    let july1 = ymd(2021, 7, 1)?;
    let sept1 = ymd(2021, 9, 1)?;
    let mut special_days = vec![june1, june8, june10, june15, july1, sept1];
    special_days.retain(|d| !days.contains_key(d));
    for d in special_days {
        days.entry(d).or_default();
    }

    let mut early_dose2 = None;
    let mut dup_second = None;
    for (day, regs) in std::mem::take(&mut days) {
        s.set_clock(day, 17)?;
        for account in [VENUE, CLINIC_A, CLINIC_B] {
            let batch: Vec<DoseRegistration> = regs.iter().filter(|(a, _)| *a == account).map(|(_, r)| r.clone()).collect();
            s.routine_day(account, &batch).await?;
        }
        if day == june1 {
            s.set_clock(day, 18)?;
            june_first(s, &a_rows, n as usize, early, dup, prob, &mut dup_second).await?;
        } else if day == june8 {
            // The same person again a week later, as dose 1 at another site: a probable duplicate.
            s.set_clock(day, 18)?;
            let v = a_rows[prob].voucher;
            let reg = s.registration(a, v, 1, day, "pfizer", &format!("{CLINIC_A}-{v}-1-again"))?;
            let o = s.register(CLINIC_A, &reg).await?;
            let found = o.findings.iter().any(|f| f.kind == FindingKind::ProbableDuplicate);
            let c = s.case("probable duplicate");
            c.count += u64::from(found);
            c.doses.push(o.dose.id);
            c.findings = kinds(&o.findings);
            c.note = "dose 1 again 7 days after a dose 1 at another site: kept, queued for review".into();
            s.summary.cases.probable_duplicate += u64::from(found);
        } else if day == june10 {
            // The held-back residents arrive: the waiting dose is matched automatically.
            s.set_clock(day, 10)?;
            let matched = s.upload(a, &a_late_file).await?.unwrap_or(0);
            s.summary.cases.unmatched_then_matched += matched;
            let c = s.case("unmatched-then-matched");
            c.count = matched;
            c.note = format!("registered on {june1} before its resident was uploaded; the upload of {day} matched it automatically");
            if let Some(id) = c.doses.first().copied() {
                let d = s.registry.dose(&staff(a), id).await?;
                let open = s.registry.findings(&staff(a), a, true).await?;
                let c = s.case("unmatched-then-matched");
                c.findings = vec![format!("matched to {}", d.matched.map(|p| p.to_string()).unwrap_or_else(|| "nobody".into()))];
                if !open.iter().any(|f| f.dose == id && f.kind == FindingKind::Unmatched) {
                    c.findings.push("unmatched finding closed".into());
                }
            }
        } else if day == june15 {
            // Dose 2 only 14 days after dose 1 (Pfizer needs 18 clear days).
            s.set_clock(day, 18)?;
            let v = a_rows[early].voucher;
            let reg = s.registration(a, v, 2, day, "pfizer", &format!("{VENUE}-{v}-2"))?;
            let o = s.register(VENUE, &reg).await?;
            let found = o.findings.iter().any(|f| f.kind == FindingKind::IntervalTooShort);
            s.summary.cases.too_early += u64::from(found);
            early_dose2 = Some(o.dose.id);
            let c = s.case("too early");
            c.count += u64::from(found);
            c.doses.push(o.dose.id);
            c.findings = kinds(&o.findings);
            c.note = format!("dose 2 on {day}, 14 days after dose 1 on {june1}");
            // The tablet retries (lost response): same idempotency key, nothing new stored.
            let again = s.register(VENUE, &reg).await?;
            s.summary.cases.retry_replayed += u64::from(again.replayed);
            let c = s.case("retry");
            c.count += u64::from(again.replayed);
            c.doses.push(again.dose.id);
            c.note = if again.replayed {
                "the same registration sent again with the same idempotency key: the first result returned, nothing new stored".into()
            } else {
                "the retry was stored again (unexpected)".into()
            };
        } else if day == july1 {
            s.set_clock(day, 10)?;
            // Correction (補正): the municipality fixes the misread date; the finding closes.
            if let Some(id) = early_dose2 {
                let before = s.registry.findings(&staff(a), a, true).await?;
                let correction = DoseCorrection { date_given: Some(ymd(2021, 6, 22)?), ..DoseCorrection::default() };
                let o = s.registry.correct(&staff(a), id, &correction, "date misread at the venue: given on 2021-06-22").await?;
                let closed: Vec<String> = before
                    .iter()
                    .filter(|f| f.dose == id && !o.findings.iter().any(|x| x.kind == f.kind))
                    .map(|f| f.kind.as_str().to_owned())
                    .collect();
                s.summary.cases.corrected += 1;
                let c = s.case("correction");
                c.count = 1;
                c.doses.push(id);
                c.findings = closed.iter().map(|k| format!("{k} closed")).chain(kinds(&o.findings)).collect();
                c.note = format!("dose 2 date 2021-06-15 → 2021-06-22 (version {})", o.dose.current().version);
            }
            // Void: the second scan of the duplicate is withdrawn with a reason.
            if let Some(id) = dup_second {
                let before = s.registry.findings(&staff(a), a, true).await?;
                let o = s.registry.void(&staff(a), id, "scanned twice at two tablets; the first record stands").await?;
                let closed: Vec<String> = before.iter().filter(|f| f.dose == id).map(|f| f.kind.as_str().to_owned()).collect();
                s.summary.cases.voided += u64::from(o.dose.is_voided());
                let c = s.case("void");
                c.count = u64::from(o.dose.is_voided());
                c.doses.push(id);
                c.findings = closed.iter().map(|k| format!("{k} closed")).collect();
                c.note = format!("the duplicate registration voided (version {}); it stays in the history", o.dose.current().version);
            }
        } else if day == sept1 {
            // 転入: the 千代田区 resident moves to 新宿区, which uploads them with the previous voucher.
            s.set_clock(day, 10)?;
            moved_in(s, &a_rows[mover], n).await?;
        }
    }

    // ---- 2022-04-01: reconcile, exports, the review queue --------------------------------
    s.set_clock(ymd(2022, 4, 1)?, 9)?;
    for m in [a, b] {
        s.registry.reconcile(&staff(m), m).await?;
    }
    s.summary.cases.still_unmatched =
        s.registry.unmatched(&staff(a), a).await?.len() as u64 + s.registry.unmatched(&staff(b), b).await?.len() as u64;
    exports(s).await?;
    for m in [a, b] {
        let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
        for f in s.registry.findings(&staff(m), m, true).await? {
            *by_kind.entry(f.kind.as_str().to_owned()).or_default() += 1;
        }
        s.summary.open_findings.insert(format!("{m} {}", m.name().unwrap_or("")), by_kind);
    }
    Ok(())
}

/// 2021-06-01: the unmatched dose, the start of the too-early and duplicate cases, and
/// the rejected scans.
async fn june_first(
    s: &mut Story,
    a_rows: &[GeneratedResident],
    n: usize,
    early: usize,
    dup: usize,
    prob: usize,
    dup_second: &mut Option<DoseId>,
) -> CliResult<()> {
    let a = s.chiyoda;
    let day = ymd(2021, 6, 1)?;
    // A held-back resident (uploaded on 06-10) is vaccinated today: stored unmatched.
    let late = a_rows.get(n).ok_or_else(|| err("no held-back resident"))?;
    let reg = s.registration(a, late.voucher, 1, day, "pfizer", &format!("{VENUE}-{}-1", late.voucher))?;
    let o = s.register(VENUE, &reg).await?;
    let c = s.case("unmatched-then-matched");
    c.doses.push(o.dose.id);
    c.findings = kinds(&o.findings);
    // A voucher number never issued (VRS had no check digit, so made-up numbers got through).
    let made_up = VoucherNumber::parse("0000000000")?;
    let reg = s.registration(a, made_up, 1, day, "pfizer", &format!("{CLINIC_A}-{made_up}-1"))?;
    let o = s.register(CLINIC_A, &reg).await?;
    let c = s.case("still unmatched");
    c.count = 1;
    c.doses.push(o.dose.id);
    c.findings = kinds(&o.findings);
    c.note = "voucher 0000000000 was never issued: the dose waits on the unmatched list (登録待ちリスト)".into();

    // Dose 1 of the person whose dose 2 will come too early, and of the probable duplicate.
    for who in [early, prob] {
        let v = a_rows[who].voucher;
        let reg = s.registration(a, v, 1, day, "pfizer", &format!("{VENUE}-{v}-1"))?;
        s.register(VENUE, &reg).await?;
    }
    // Duplicate: the same voucher, dose and day scanned at two tablets (different keys).
    let v = a_rows[dup].voucher;
    let first = s.registration(a, v, 1, day, "pfizer", &format!("{CLINIC_A}-{v}-1"))?;
    s.register(CLINIC_A, &first).await?;
    let second = DoseRegistration { idempotency_key: IdempotencyKey::parse(&format!("{VENUE}-{v}-1-second-tablet"))?, ..first.clone() };
    let o = s.register(VENUE, &second).await?;
    let found = o.findings.iter().any(|f| f.kind == FindingKind::Duplicate);
    s.summary.cases.duplicate += u64::from(found);
    *dup_second = Some(o.dose.id);
    let c = s.case("duplicate");
    c.count += u64::from(found);
    c.doses.push(o.dose.id);
    c.findings = kinds(&o.findings);
    c.note = "the same voucher, dose and day registered again with a different key: both kept, the second flagged".into();

    // Rejected scans: nothing stored.
    let good = a_rows[dup].voucher;
    let unknown = unknown_municipality()?;
    let rejects: [(&str, String, NaiveDate, &str); 5] = [
        ("bad check digit", format!("11131017{good}"), day, "pfizer"),
        ("unknown municipality", format!("11{unknown}{good}"), day, "pfizer"),
        ("malformed line", format!("1113101600{}O", &good.as_str()[..7]), day, "pfizer"),
        ("future date", format!("11{a}{good}"), add_days(day, 1)?, "pfizer"),
        ("unknown product", format!("11{a}{good}"), day, "sputnik-v"),
    ];
    for (what, ocr, date, product) in rejects {
        let reg = DoseRegistration {
            ocr_line: ocr,
            dose_number: None,
            date_given: date,
            product: product.to_owned(),
            lot: "FA5765".into(),
            doctor: DOCTORS[0].into(),
            idempotency_key: IdempotencyKey::parse(&format!("{CLINIC_B}-reject-{}", what.replace(' ', "-")))?,
            lot_expiry: None,
        };
        match s.registry.register(&site_actor(CLINIC_B)?, &reg).await {
            Err(vrs_core::Error::DoseRejected { kind, detail }) => {
                *s.summary.cases.rejected.entry(kind.as_str().replace('_', " ")).or_default() += 1;
                let c = s.case("rejected");
                c.count += 1;
                c.findings.push(format!("{what}: {} — {detail}", kind.as_str()));
            }
            Err(e) => return Err(e.into()),
            Ok(o) => {
                let c = s.case("rejected");
                c.findings.push(format!("{what}: NOT rejected, stored as {}", o.dose.id));
            }
        }
    }
    s.case("rejected").note = "refused at input: nothing stored".into();
    Ok(())
}

/// A code with a valid check digit that names no municipality.
fn unknown_municipality() -> CliResult<MunicipalityCode> {
    for first5 in 13990..14000u32 {
        let digits = first5.to_string();
        let check = MunicipalityCode::check_digit(digits.as_bytes());
        if let Ok(code) = MunicipalityCode::parse(&format!("{digits}{check}"))
            && !code.is_known()
        {
            return Ok(code);
        }
    }
    Err(err("no unknown municipality code found"))
}

/// 新宿区 uploads a resident who moved in from 千代田区, naming the previous voucher, and
/// then looks up the doses given under it.
async fn moved_in(s: &mut Story, person: &GeneratedResident, n: u64) -> CliResult<()> {
    let (a, b) = (s.chiyoda, s.shinjuku);
    // The new 新宿区 voucher: the next row of 新宿区's generator.
    let b_next = ResidentGenerator::new(&GenOptions { moves: false, ..GenOptions::new(b, n + 1, 2022) })?.row(n)?;
    let addressee = n + 1;
    let file = s.path("residents-131041-moved-in.csv");
    let text = format!(
        "municipality_code,addressee_number,voucher_number,name,name_kana,birth_date,sex,address,previous_municipality_code,previous_voucher_number\n\
         {b},{addressee},{},{},{},{},{},東京都新宿区西新宿2丁目8番1号,{a},{}\n",
        b_next.voucher,
        person.name(),
        person.name_kana(),
        person.birth_date.format("%Y-%m-%d"),
        person.sex.code(),
        person.voucher
    );
    std::fs::write(&file, text).map_err(|e| write_error(&file, e))?;
    s.upload(b, &file).await?;
    let who = PersonRef { municipality: b, addressee: AddresseeNumber::parse(&addressee.to_string())? };
    let doses = s.registry.doses_of_resident(&staff(b), &who).await?;
    s.summary.cases.moved_in_doses_seen = doses.len() as u64;
    let c = s.case("moved in");
    c.count = doses.len() as u64;
    c.doses = doses.iter().map(|d| d.id).collect();
    c.findings = doses
        .iter()
        .map(|d| format!("dose {} on {} under voucher {}", d.details().dose_number, d.details().date_given, d.voucher))
        .collect();
    c.note = format!(
        "resident {who} moved in from {} ({a}): {} sees the doses given under the previous voucher",
        a.name().unwrap_or(""),
        b.name().unwrap_or("")
    );
    Ok(())
}

async fn exports(s: &mut Story) -> CliResult<()> {
    let (a, b) = (s.chiyoda, s.shinjuku);
    for (m, encoding, name) in [
        (a, OutputEncoding::Utf8, "ledger-131016.utf8.csv"),
        (a, OutputEncoding::ShiftJis, "ledger-131016.sjis.csv"),
        (b, OutputEncoding::Utf8, "ledger-131041.utf8.csv"),
    ] {
        let path = s.path(name);
        let options = LedgerOptions { encoding, since: None, no_header: false };
        let mut out = crate::commands::OutFile::create(&path)?;
        let e = s.registry.export_ledger(&staff(m), m, &options, out.writer()).await?;
        out.finish()?;
        let enc = if encoding == OutputEncoding::Utf8 { "UTF-8" } else { "Shift_JIS" };
        s.file(
            &path,
            format!(
                "ledger of {} ({enc}): {} persons, {} doses, {} dose blocks, next cursor {}",
                m.name().unwrap_or(""),
                e.rows,
                e.doses,
                e.blocks,
                e.cursor
            ),
        );
    }
    let path = s.path("unmatched-131016.csv");
    let mut out = crate::commands::OutFile::create(&path)?;
    let rows = s.registry.export_unmatched(&staff(a), a, &LedgerOptions::default(), out.writer()).await?;
    out.finish()?;
    s.file(&path, format!("unmatched list of 千代田区: {rows} doses waiting"));

    let national = Actor::StatisticsReader { scope: StatsScope::National };
    let rows = s.registry.statistics(&national, StatsQuery::National).await?;
    let path = s.path("stats-national.csv");
    let mut out = crate::commands::OutFile::create(&path)?;
    write_stats_csv(&rows, out.writer()).map_err(|e| write_error(&path, e))?;
    out.finish()?;
    let total: u64 = rows.iter().map(|r| r.count).sum();
    s.file(&path, format!("national statistics: {} groups, {total} doses", rows.len()));
    interchange_exports(s).await
}

/// The interchange files: FHIR R4, HL7 v2.5.1 VXU, open data and the ledger change log.
async fn interchange_exports(s: &mut Story) -> CliResult<()> {
    let a = s.chiyoda;
    let path = s.path("fhir.json");
    let w = interchange::write_fhir(&s.registry, &staff(a), a, None, &path).await?;
    s.file(
        &path,
        format!(
            "FHIR R4 Bundle of 千代田区: {} Patients, {} Immunizations ({} entered-in-error)",
            w.patients, w.immunizations, w.entered_in_error
        ),
    );
    let path = s.path("vxu.hl7");
    let n = interchange::write_hl7(&s.registry, &staff(a), a, None, &path).await?;
    s.file(&path, format!("HL7 v2.5.1 VXU^V04 messages of 千代田区: {n}"));
    let national = Actor::StatisticsReader { scope: StatsScope::National };
    let dir = s.dir.clone();
    let w = interchange::write_opendata(&s.registry, &national, StatsQuery::National, 0, &dir).await?;
    s.file(&w.ndjson, format!("open data (VRS's public schema): {} lines, {} doses", w.rows, w.doses));
    s.file(&w.summary, "open data: doses per date, dose number and age group");
    let path = s.path("changes-131016.csv");
    let e = interchange::write_changes(&s.registry, &staff(a), a, 0, OutputEncoding::Utf8, &path).await?;
    s.file(&path, format!("change log of 千代田区 (台帳差分): {} changes, {} voids (取消), next cursor {}", e.changes, e.voids, e.cursor));
    Ok(())
}

fn summary_text(sum: &Summary) -> String {
    let mut t = String::new();
    let c = &sum.cases;
    let _ = writeln!(t, "vrs demo: the VRS story on a fresh store ({})", sum.store);
    let _ = writeln!(t);
    let _ = writeln!(t, "Uploads (接種対象者)");
    for u in &sum.uploads {
        let file = u.file.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        if u.applied {
            let _ = writeln!(
                t,
                "  {} {} {file}: {} rows, {} inserted, {} replaced; {}{}",
                u.municipality,
                u.name,
                u.rows,
                u.inserted,
                u.replaced,
                u.encoding,
                if u.waiting_doses_matched > 0 { format!("; {} waiting doses matched", u.waiting_doses_matched) } else { String::new() }
            );
        } else {
            let _ = writeln!(t, "  {} {} {file}: REFUSED, nothing applied; {} rows, bad lines:", u.municipality, u.name, u.rows);
            for e in &u.bad_lines {
                let _ =
                    writeln!(t, "      line {}, column {}: {}", e.line, if e.column.is_empty() { "(row)" } else { &e.column }, e.reason);
            }
        }
    }
    let _ = writeln!(t, "Tablet accounts: {}", sum.accounts.join("; "));
    let _ = writeln!(t);
    let _ = writeln!(t, "Cases (as vrs-core decided them)");
    let _ = writeln!(
        t,
        "  {:<24} {:>6}  of {} doses registered were matched to their resident at registration",
        "matched", c.matched, c.registrations
    );
    if !c.findings_of_routine_doses.is_empty() {
        let list: Vec<String> = c.findings_of_routine_doses.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(t, "  {:<24} {:>6}  findings on routine doses: {}", "", "", list.join(", "));
    }
    let _ = writeln!(t, "  {:<24} {:>6}  boosters (dose 3) in March 2022", "boosters", c.boosters);
    let order = [
        ("unmatched-then-matched", c.unmatched_then_matched),
        ("still unmatched", c.still_unmatched),
        ("duplicate", c.duplicate),
        ("probable duplicate", c.probable_duplicate),
        ("too early", c.too_early),
        ("retry", c.retry_replayed),
        ("rejected", c.rejected.values().sum()),
        ("moved in", c.moved_in_doses_seen),
        ("correction", c.corrected),
        ("void", c.voided),
    ];
    for (name, count) in order {
        let Some(case) = sum.details.get(name) else {
            let _ = writeln!(t, "  {name:<24} {count:>6}");
            continue;
        };
        let _ = writeln!(t, "  {name:<24} {count:>6}  {}", case.note);
        if let Some(id) = case.doses.first() {
            let _ = writeln!(t, "  {:<24} {:>6}    dose {id}", "", "");
        }
        for f in &case.findings {
            let _ = writeln!(t, "  {:<24} {:>6}    → {f}", "", "");
        }
        if name == "rejected" && !c.rejected.is_empty() {
            let list: Vec<String> = c.rejected.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let _ = writeln!(t, "  {:<24} {:>6}    rejected by kind: {}", "", "", list.join(", "));
        }
    }
    let _ = writeln!(t);
    let _ = writeln!(t, "Open findings (the review queues, 要修正 / 要確認)");
    for (m, kinds) in &sum.open_findings {
        if kinds.is_empty() {
            let _ = writeln!(t, "  {m}: none");
        } else {
            let list: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let _ = writeln!(t, "  {m}: {}", list.join(", "));
        }
    }
    let _ = writeln!(t);
    let _ = writeln!(t, "Files written");
    for f in &sum.files {
        let _ = writeln!(t, "  file: {}  ({})", f.path.display(), f.what);
    }
    let _ = writeln!(t);
    let _ = writeln!(t, "Done in {:.1} s. Inspect the store with, e.g.:", sum.seconds);
    let _ = writeln!(t, "  vrs --store '{}' findings --municipality {CHIYODA} --all", sum.store);
    t
}
