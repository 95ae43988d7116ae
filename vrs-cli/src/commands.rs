//! The day-to-day commands: register, reconcile, findings, correct, void, doses,
//! accounts and exports. Each one names the actor, calls the service once and prints
//! what it decided.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use vrs_core::access::{Actor, Site, StatsScope, TabletAccount};
use vrs_core::dose::{DoseCorrection, DoseRecord, DoseRegistration};
use vrs_core::finding::{Finding, Severity};
use vrs_core::ids::{AccountId, AddresseeNumber, DoseId, IdempotencyKey, PersonRef, SiteId};
use vrs_core::ledger::{LedgerOptions, OutputEncoding};
use vrs_core::service::{ChangeOutcome, RegistrationOutcome};
use vrs_core::stats::{StatsQuery, StatsRow};

use crate::app::{self, App};
use crate::cli::{
    AccountsCommand, CorrectArgs, DosesArgs, Encoding, ExportCommand, ExportLedgerArgs, ExportStatsArgs, ExportUnmatchedArgs, FindingsArgs,
    ReconcileArgs, RegisterArgs, VoidArgs,
};
use crate::error::{CliError, CliResult, write_error};
use crate::output::{Report, to_json};
use crate::progress;

// ---- registration -------------------------------------------------------------------

/// A 128-bit FNV-1a hash: stable across builds and platforms, unlike std's hasher.
fn fnv128(parts: &[&str]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h = OFFSET;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0x1f;
            h = h.wrapping_mul(PRIME);
        }
        for b in part.as_bytes() {
            h ^= u128::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    }
    h
}

/// The idempotency key of a registration made without `--key`: derived from every
/// input, so running the same command twice names the same dose.
pub fn derived_key(
    account: &str,
    ocr: &str,
    date: &str,
    product: &str,
    lot: &str,
    doctor: &str,
    dose: Option<u8>,
) -> CliResult<IdempotencyKey> {
    let dose = dose.map(|d| d.to_string()).unwrap_or_default();
    let h = fnv128(&[account.trim(), ocr.trim(), date.trim(), product.trim(), lot.trim(), doctor.trim(), &dose]);
    Ok(IdempotencyKey::parse(&format!("cli-{h:032x}"))?)
}

/// A severity in a few ASCII letters, for aligned tables.
pub fn severity_label(s: Severity) -> &'static str {
    match s {
        Severity::Rejected => "rejected",
        Severity::MustFix => "must-fix",
        Severity::ToCheck => "to-check",
    }
}

fn finding_line(out: &mut String, f: &Finding, with_state: bool) {
    let state = if !with_state {
        ""
    } else if f.open {
        "open    "
    } else {
        "closed  "
    };
    let _ = writeln!(out, "  {state}{:<9} {:<21} {} {}", severity_label(f.severity), f.kind.as_str(), f.dose, f.detail);
}

/// JSON of a registration outcome, with the dose id up front.
#[derive(Serialize)]
struct RegistrationJson<'a> {
    dose_id: String,
    matched: bool,
    replayed: bool,
    findings: &'a [Finding],
    dose: &'a DoseRecord,
}

/// Plain-text account of a registration outcome.
pub fn registration_text(o: &RegistrationOutcome) -> String {
    let d = o.dose.details();
    let mut t = String::new();
    if o.replayed {
        let _ = writeln!(t, "dose {} was already registered with this idempotency key: nothing new stored", o.dose.id);
    } else {
        let _ = writeln!(t, "dose {} registered", o.dose.id);
    }
    let _ = writeln!(
        t,
        "  voucher {} dose {} on {} ({} lot {}) at {}",
        o.dose.voucher, d.dose_number, d.date_given, d.product, d.lot, d.site_name
    );
    let _ = writeln!(t, "  matched: {}", if o.matched { "yes" } else { "no (voucher not uploaded yet: on the unmatched list)" });
    if o.findings.is_empty() {
        let _ = writeln!(t, "  findings: none");
    } else {
        let _ = writeln!(t, "  findings:");
        for f in &o.findings {
            finding_line(&mut t, f, false);
        }
    }
    t
}

/// `vrs register`.
pub async fn register(app: &App, a: &RegisterArgs) -> CliResult<Report> {
    let actor = app::site_actor(app, &a.account).await?;
    let date_given = app::date("date", &a.date)?;
    let idempotency_key = match &a.key {
        Some(k) => IdempotencyKey::parse(k)?,
        None => derived_key(&a.account, &a.ocr, &a.date, &a.product, &a.lot, &a.doctor, a.dose)?,
    };
    let reg = DoseRegistration {
        ocr_line: a.ocr.clone(),
        dose_number: a.dose,
        date_given,
        product: a.product.clone(),
        lot: a.lot.clone(),
        doctor: a.doctor.clone(),
        idempotency_key,
        lot_expiry: None,
    };
    let o = app.registry.register(&actor, &reg).await?;
    let json =
        RegistrationJson { dose_id: o.dose.id.to_string(), matched: o.matched, replayed: o.replayed, findings: &o.findings, dose: &o.dose };
    Ok(Report::new(registration_text(&o), &json))
}

// ---- the municipality's side ----------------------------------------------------------

/// `vrs reconcile`.
pub async fn reconcile(app: &App, a: &ReconcileArgs) -> CliResult<Report> {
    let actor = app::actor(app, &a.staff).await?;
    let m = app::municipality(&a.staff.municipality)?;
    let r = app.registry.reconcile(&actor, m).await?;
    let text = format!("{m}: {} doses matched by this pass, {} still unmatched", r.matched, r.still_unmatched);
    Ok(Report::new(text, &r))
}

/// `vrs findings`.
pub async fn findings(app: &App, a: &FindingsArgs) -> CliResult<Report> {
    let actor = app::actor(app, &a.staff).await?;
    let m = app::municipality(&a.staff.municipality)?;
    let found = app.registry.findings(&actor, m, !a.all).await?;
    let mut t = String::new();
    let which = if a.all { "findings (open and closed)" } else { "open findings" };
    let _ = writeln!(t, "{m} {}: {} {which}", m.name().unwrap_or(""), found.len());
    if !found.is_empty() {
        let state = if a.all { "STATE   " } else { "" };
        let _ = writeln!(t, "  {state}{:<9} {:<21} {:<32} DETAIL", "SEVERITY", "KIND", "DOSE");
    }
    for f in &found {
        finding_line(&mut t, f, a.all);
    }
    Ok(Report::new(t, &found))
}

fn change_text(verb: &str, o: &ChangeOutcome) -> String {
    let d = o.dose.details();
    let mut t = String::new();
    let _ = writeln!(t, "dose {} {verb}: now version {}", o.dose.id, o.dose.current().version);
    let _ = writeln!(
        t,
        "  voucher {} dose {} on {} ({} lot {}){}",
        o.dose.voucher,
        d.dose_number,
        d.date_given,
        d.product,
        d.lot,
        if o.dose.is_voided() { " VOIDED" } else { "" }
    );
    if o.findings.is_empty() {
        let _ = writeln!(t, "  open findings: none");
    } else {
        let _ = writeln!(t, "  open findings:");
        for f in &o.findings {
            finding_line(&mut t, f, false);
        }
    }
    t
}

/// `vrs correct`.
pub async fn correct(app: &App, a: &CorrectArgs) -> CliResult<Report> {
    let actor = app::actor(app, &a.staff).await?;
    let id = DoseId::parse(&a.dose_id)?;
    let correction = DoseCorrection {
        dose_number: a.dose,
        date_given: a.date.as_deref().map(|d| app::date("date", d)).transpose()?,
        product: a.product.clone(),
        lot: a.lot.clone(),
        doctor: a.doctor.clone(),
        site_name: a.site_name.clone(),
        lot_expiry: None,
    };
    let o = app.registry.correct(&actor, id, &correction, &a.reason).await?;
    Ok(Report::new(change_text("corrected", &o), &o))
}

/// `vrs void`.
pub async fn void(app: &App, a: &VoidArgs) -> CliResult<Report> {
    let actor = app::actor(app, &a.staff).await?;
    let id = DoseId::parse(&a.dose_id)?;
    let o = app.registry.void(&actor, id, &a.reason).await?;
    Ok(Report::new(change_text("voided", &o), &o))
}

/// Plain-text lines for a list of doses, every version shown.
pub fn doses_text(doses: &[DoseRecord]) -> String {
    let mut t = String::new();
    for d in doses {
        let det = d.details();
        let _ = writeln!(
            t,
            "  dose {} on {} {:<10} lot {:<8} voucher {} at {} ({}) id {}{}",
            det.dose_number,
            det.date_given,
            det.product.as_str(),
            det.lot,
            d.voucher,
            det.site_name,
            det.administering_municipality,
            d.id,
            if d.is_voided() { " VOIDED" } else { "" }
        );
        for v in d.versions.iter().skip(1) {
            let _ = writeln!(
                t,
                "      version {} by {}: {}{}",
                v.version,
                v.recorded_by,
                v.reason.as_deref().unwrap_or(""),
                if v.voided { " (void)" } else { "" }
            );
        }
    }
    t
}

/// `vrs doses`.
pub async fn doses(app: &App, a: &DosesArgs) -> CliResult<Report> {
    let actor = app::actor(app, &a.staff).await?;
    let person = PersonRef { municipality: app::municipality(&a.staff.municipality)?, addressee: AddresseeNumber::parse(&a.addressee)? };
    let doses = app.registry.doses_of_resident(&actor, &person).await?;
    let mut t = format!("resident {person}: {} doses\n", doses.len());
    t.push_str(&doses_text(&doses));
    Ok(Report::new(t, &serde_json::json!({ "resident": person, "doses": doses })))
}

// ---- accounts ---------------------------------------------------------------------------

fn account_line(a: &TabletAccount) -> String {
    let jst = |t: chrono::DateTime<chrono::Utc>| t.with_timezone(&vrs_core::clock::jst()).to_rfc3339();
    format!(
        "{} site {} \"{}\" in {} issued {} by {}{}",
        a.id,
        a.site.id,
        a.site.name,
        a.site.municipality,
        jst(a.issued_at),
        a.issued_by,
        a.revoked_at.map(|r| format!(", REVOKED {}", jst(r))).unwrap_or_default()
    )
}

/// `vrs accounts ...`.
pub async fn accounts(app: &App, cmd: &AccountsCommand) -> CliResult<Report> {
    match cmd {
        AccountsCommand::Issue(a) => {
            let actor = app::admin_actor(&a.admin.municipality, &a.admin.user, a.admin.as_actor.as_deref())?;
            let site =
                Site { id: SiteId::parse(&a.site_id)?, name: a.site_name.clone(), municipality: app::municipality(&a.admin.municipality)? };
            let issued =
                app.registry.issue_account_with_secret(&actor, site, AccountId::parse(&a.account_id)?, &mut app::OsEntropy).await?;
            Ok(Report::new(
                format!(
                    "issued {}\nsecret (shown once, only its hash is stored; the tablet signs in with it as {}): {}",
                    account_line(&issued.account),
                    app::ACCOUNT_SECRET_VAR,
                    issued.secret.reveal()
                ),
                &serde_json::json!({ "account": issued.account, "secret": issued.secret.reveal() }),
            ))
        }
        AccountsCommand::RenewSecret(a) => {
            let actor = app::admin_actor(&a.admin.municipality, &a.admin.user, a.admin.as_actor.as_deref())?;
            let id = AccountId::parse(&a.account_id)?;
            let secret = app.registry.renew_account_secret(&actor, &id, &mut app::OsEntropy).await?;
            Ok(Report::new(
                format!("account {id}: new secret (shown once; the previous one no longer works): {}", secret.reveal()),
                &serde_json::json!({ "account": id, "secret": secret.reveal() }),
            ))
        }
        AccountsCommand::Revoke(a) => {
            let actor = app::admin_actor(&a.admin.municipality, &a.admin.user, a.admin.as_actor.as_deref())?;
            let account = app.registry.revoke_account(&actor, &AccountId::parse(&a.account_id)?).await?;
            Ok(Report::new(format!("revoked {}", account_line(&account)), &account))
        }
        AccountsCommand::List(a) => {
            let actor = app::admin_actor(&a.municipality, &a.user, a.as_actor.as_deref())?;
            let m = app::municipality(&a.municipality)?;
            let list = app.registry.accounts(&actor, m).await?;
            let mut t = format!("{m}: {} tablet accounts\n", list.len());
            for acc in &list {
                let _ = writeln!(t, "  {}", account_line(acc));
            }
            Ok(Report::new(t, &list))
        }
    }
}

// ---- exports ----------------------------------------------------------------------------

/// The core's output encoding for a command-line choice.
pub fn output_encoding(e: Encoding) -> OutputEncoding {
    match e {
        Encoding::Utf8 => OutputEncoding::Utf8,
        Encoding::Sjis => OutputEncoding::ShiftJis,
    }
}

fn encoding_name(e: OutputEncoding) -> &'static str {
    match e {
        OutputEncoding::Utf8 => "UTF-8",
        OutputEncoding::ShiftJis => "Shift_JIS",
    }
}

/// A file written under a temporary name and renamed into place once complete, so a
/// failed export never leaves a half-written file under the asked name.
pub struct OutFile {
    path: PathBuf,
    partial: PathBuf,
    writer: std::io::BufWriter<std::fs::File>,
}

impl OutFile {
    /// Starts writing `path` (its directory is created).
    pub fn create(path: &Path) -> CliResult<OutFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| write_error(dir, e))?;
        }
        let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".partial");
        let partial = path.with_file_name(name);
        let file = std::fs::File::create(&partial).map_err(|e| write_error(&partial, e))?;
        Ok(OutFile { path: path.to_owned(), partial, writer: std::io::BufWriter::with_capacity(256 * 1024, file) })
    }

    /// The writer.
    pub fn writer(&mut self) -> &mut std::io::BufWriter<std::fs::File> {
        &mut self.writer
    }

    /// Flushes, syncs and renames into place.
    pub fn finish(self) -> CliResult<PathBuf> {
        let OutFile { path, partial, writer } = self;
        let file = writer.into_inner().map_err(|e| write_error(&partial, e.error()))?;
        file.sync_all().map_err(|e| write_error(&partial, e))?;
        std::fs::rename(&partial, &path).map_err(|e| write_error(&path, e))?;
        Ok(path)
    }

    /// Removes the temporary file after a failure.
    pub fn abandon(self) {
        let _ = std::fs::remove_file(&self.partial);
    }
}

/// Runs `f` over a new output file, keeping it only if `f` succeeds.
pub async fn write_file<T, F>(path: &Path, what: &str, f: F) -> CliResult<T>
where
    F: AsyncFnOnce(&mut (dyn std::io::Write + Send)) -> CliResult<T>,
{
    let mut out = OutFile::create(path)?;
    let bar = progress::bar(None, what, true);
    let result = {
        let mut w = bar.wrap_write(out.writer());
        f(&mut w).await
    };
    bar.finish_and_clear();
    match result {
        Ok(v) => {
            out.finish()?;
            Ok(v)
        }
        Err(e) => {
            out.abandon();
            Err(e)
        }
    }
}

/// `vrs export ...`.
pub async fn export(app: &App, cmd: &ExportCommand) -> CliResult<Report> {
    match cmd {
        ExportCommand::Ledger(a) => export_ledger(app, a).await,
        ExportCommand::Unmatched(a) => export_unmatched(app, a).await,
        ExportCommand::Stats(a) => export_stats(app, a).await,
        ExportCommand::Fhir(a) => crate::interchange::export_fhir(app, a).await,
        ExportCommand::Hl7(a) => crate::interchange::export_hl7(app, a).await,
        ExportCommand::Opendata(a) => crate::interchange::export_opendata(app, a).await,
        ExportCommand::Changes(a) => crate::interchange::export_changes(app, a).await,
    }
}

async fn export_ledger(app: &App, a: &ExportLedgerArgs) -> CliResult<Report> {
    let actor = app::actor(app, &a.staff).await?;
    let m = app::municipality(&a.staff.municipality)?;
    let options = LedgerOptions { encoding: output_encoding(a.encoding), since: a.since, no_header: false };
    let registry = &app.registry;
    let export = write_file(&a.out, "exporting the ledger", async |w| Ok(registry.export_ledger(&actor, m, &options, w).await?)).await?;
    let text = format!(
        "ledger of {m} written to {} ({}{}): {} rows, {} doses, {} dose blocks per row\nnext delta: --since {}",
        a.out.display(),
        encoding_name(options.encoding),
        a.since.map(|c| format!(", changes after cursor {c}")).unwrap_or_default(),
        export.rows,
        export.doses,
        export.blocks,
        export.cursor
    );
    Ok(Report::new(
        text,
        &serde_json::json!({ "out": a.out, "encoding": encoding_name(options.encoding), "since": a.since, "export": export }),
    ))
}

async fn export_unmatched(app: &App, a: &ExportUnmatchedArgs) -> CliResult<Report> {
    let actor = app::actor(app, &a.staff).await?;
    let m = app::municipality(&a.staff.municipality)?;
    let options = LedgerOptions { encoding: output_encoding(a.encoding), since: None, no_header: false };
    let registry = &app.registry;
    let rows =
        write_file(&a.out, "exporting the unmatched list", async |w| Ok(registry.export_unmatched(&actor, m, &options, w).await?)).await?;
    let text = format!("unmatched list of {m} written to {}: {rows} doses waiting for their resident", a.out.display());
    Ok(Report::new(text, &serde_json::json!({ "out": a.out, "rows": rows })))
}

/// One statistics row as exported.
#[derive(Serialize)]
pub struct StatsLine {
    date: String,
    municipality: String,
    prefecture: String,
    dose_number: u8,
    sex: &'static str,
    age_band: &'static str,
    product: String,
    count: u64,
}

impl From<&StatsRow> for StatsLine {
    fn from(r: &StatsRow) -> Self {
        StatsLine {
            date: r.key.date.format("%Y-%m-%d").to_string(),
            municipality: r.key.municipality.as_str().to_owned(),
            prefecture: r.key.municipality.prefecture_code().to_owned(),
            dose_number: r.key.dose_number,
            sex: r.key.sex.letter(),
            age_band: r.key.age_band.label(),
            product: r.key.product.as_str().to_owned(),
            count: r.count,
        }
    }
}

/// Writes statistics rows as CSV (date, municipality, prefecture, dose_number, sex,
/// age_band, product, count).
pub fn write_stats_csv(rows: &[StatsRow], w: &mut dyn std::io::Write) -> std::io::Result<()> {
    writeln!(w, "date,municipality,prefecture,dose_number,sex,age_band,product,count")?;
    for r in rows {
        let l = StatsLine::from(r);
        writeln!(w, "{},{},{},{},{},{},{},{}", l.date, l.municipality, l.prefecture, l.dose_number, l.sex, l.age_band, l.product, l.count)?;
    }
    Ok(())
}

/// The statistics query and its default reader for `--prefecture` / `--municipality`.
pub fn stats_query(a: &ExportStatsArgs) -> CliResult<(StatsQuery, Actor)> {
    stats_reader(a.as_actor.as_deref(), &a.user, a.prefecture.as_deref(), a.municipality.as_deref())
}

/// The statistics query for `--prefecture` / `--municipality` and its reader: `--as`, or
/// by default the municipality's staff, the prefecture's reader, else the national one.
pub fn stats_reader(
    as_actor: Option<&str>,
    user: &str,
    prefecture: Option<&str>,
    municipality: Option<&str>,
) -> CliResult<(StatsQuery, Actor)> {
    let (query, default_actor) = match (municipality, prefecture) {
        (Some(m), _) => {
            let m = app::municipality(m)?;
            (StatsQuery::Municipality(m), Actor::MunicipalStaff { municipality: m, user: user.to_owned() })
        }
        (None, Some(p)) => {
            let p = app::prefecture(p)?;
            (StatsQuery::Prefecture(p), Actor::StatisticsReader { scope: StatsScope::Prefecture(p) })
        }
        (None, None) => (StatsQuery::National, Actor::StatisticsReader { scope: StatsScope::National }),
    };
    let actor = match as_actor {
        Some(spec) => app::parse_actor(spec, user)?,
        None => default_actor,
    };
    Ok((query, actor))
}

async fn export_stats(app: &App, a: &ExportStatsArgs) -> CliResult<Report> {
    let (query, actor) = stats_query(a)?;
    let rows = app.registry.statistics(&actor, query).await?;
    let lines: Vec<StatsLine> = rows.iter().map(StatsLine::from).collect();
    let total: u64 = rows.iter().map(|r| r.count).sum();
    match &a.out {
        Some(path) => {
            write_file(path, "exporting statistics", async |w| write_stats_csv(&rows, w).map_err(|e| write_error(path, e))).await?;
            let text = format!("statistics written to {}: {} groups, {total} doses", path.display(), rows.len());
            Ok(Report::new(text, &serde_json::json!({ "out": path, "groups": rows.len(), "doses": total, "rows": lines })))
        }
        None => {
            let mut buf = Vec::new();
            write_stats_csv(&rows, &mut buf).map_err(|e| CliError::Failure(e.to_string()))?;
            Ok(Report { text: String::from_utf8_lossy(&buf).into_owned(), json: to_json(&lines) })
        }
    }
}
