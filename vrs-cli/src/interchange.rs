//! Interchange on the command line: `vrs export fhir|hl7|opendata|changes` and
//! `vrs import fhir`. The formats are vrs-core's (`fhir`, `hl7`, `opendata`, `changelog`);
//! this writes them to files and says what was written.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use vrs_core::access::Actor;
use vrs_core::changelog::ChangeLogExport;
use vrs_core::ids::{AddresseeNumber, MunicipalityCode, PersonRef};
use vrs_core::interchange::FhirImportReport;
use vrs_core::ledger::{LedgerOptions, OutputEncoding};
use vrs_core::opendata::{OpenDataRow, write_ndjson, write_summary_by_date};
use vrs_core::service::Registry;
use vrs_core::stats::StatsQuery;

use crate::app::{self, App};
use crate::cli::{ExportChangesArgs, ExportFhirArgs, ExportOpendataArgs, ImportFhirArgs};
use crate::commands::{output_encoding, stats_reader, write_file};
use crate::error::{CliError, CliResult, read_error, write_error};
use crate::output::Report;

/// The file names of an open-data export.
pub const NDJSON_FILE: &str = "prefecture.ndjson";
/// The per-date summary of an open-data export.
pub const SUMMARY_FILE: &str = "summary_by_date.csv";

/// What a FHIR Bundle export wrote.
#[derive(Debug, Default, Serialize)]
pub struct FhirWritten {
    /// The file.
    pub out: PathBuf,
    /// `Patient` resources.
    pub patients: u64,
    /// `Immunization` resources.
    pub immunizations: u64,
    /// Of which `entered-in-error` (voided doses).
    pub entered_in_error: u64,
}

/// What an open-data export wrote.
#[derive(Debug, Default, Serialize)]
pub struct OpendataWritten {
    /// `prefecture.ndjson`.
    pub ndjson: PathBuf,
    /// `summary_by_date.csv`.
    pub summary: PathBuf,
    /// Lines of `prefecture.ndjson`.
    pub rows: u64,
    /// Doses counted in them.
    pub doses: u64,
    /// Doses left out by small-cell suppression.
    pub suppressed: u64,
}

/// A resident of `m` named by `--addressee`.
fn person(m: MunicipalityCode, addressee: Option<&str>) -> CliResult<Option<PersonRef>> {
    Ok(match addressee {
        Some(a) => Some(PersonRef { municipality: m, addressee: AddresseeNumber::parse(a)? }),
        None => None,
    })
}

fn whose(m: MunicipalityCode, p: Option<&PersonRef>) -> String {
    match p {
        Some(p) => format!("resident {p}"),
        None => format!("{m} {}", m.name().unwrap_or("")).trim_end().to_owned(),
    }
}

/// Writes the FHIR R4 Bundle of `m` (or of one resident) to `path`, pretty-printed.
pub async fn write_fhir(
    registry: &Registry,
    actor: &Actor,
    m: MunicipalityCode,
    p: Option<&PersonRef>,
    path: &Path,
) -> CliResult<FhirWritten> {
    let bundle = registry.export_fhir(actor, m, p).await?;
    let mut written = FhirWritten { out: path.to_owned(), ..FhirWritten::default() };
    for e in bundle["entry"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        match e["resource"]["resourceType"].as_str() {
            Some("Patient") => written.patients += 1,
            Some("Immunization") => {
                written.immunizations += 1;
                written.entered_in_error += u64::from(e["resource"]["status"] == "entered-in-error");
            }
            _ => {}
        }
    }
    write_file(path, "exporting FHIR", async |w| {
        serde_json::to_writer_pretty(&mut *w, &bundle).map_err(|e| write_error(path, e))?;
        w.write_all(b"\n").map_err(|e| write_error(path, e))
    })
    .await?;
    Ok(written)
}

/// Writes HL7 v2.5.1 VXU^V04 messages of `m` (or of one resident) to `path`; returns how many.
pub async fn write_hl7(registry: &Registry, actor: &Actor, m: MunicipalityCode, p: Option<&PersonRef>, path: &Path) -> CliResult<u64> {
    write_file(path, "exporting HL7", async |w| Ok(registry.export_hl7(actor, m, p, w).await?)).await
}

/// Writes `prefecture.ndjson` and `summary_by_date.csv` into `dir` from the statistics
/// `actor` may read.
pub async fn write_opendata(
    registry: &Registry,
    actor: &Actor,
    query: StatsQuery,
    suppress_below: u64,
    dir: &Path,
) -> CliResult<OpendataWritten> {
    let (rows, suppressed) = registry.export_opendata(actor, query, suppress_below).await?;
    let ndjson = dir.join(NDJSON_FILE);
    let summary = dir.join(SUMMARY_FILE);
    let rows: &[OpenDataRow] = &rows;
    write_file(&ndjson, "exporting open data", async |w| Ok(write_ndjson(rows, w)?)).await?;
    write_file(&summary, "exporting the summary by date", async |w| Ok(write_summary_by_date(rows, w)?)).await?;
    Ok(OpendataWritten { ndjson, summary, rows: rows.len() as u64, doses: rows.iter().map(|r| r.count).sum(), suppressed })
}

/// Writes the change log of `m` after cursor `since` to `path`.
pub async fn write_changes(
    registry: &Registry,
    actor: &Actor,
    m: MunicipalityCode,
    since: u64,
    encoding: OutputEncoding,
    path: &Path,
) -> CliResult<ChangeLogExport> {
    let options = LedgerOptions { encoding, since: None, no_header: false };
    write_file(path, "exporting the change log", async |w| Ok(registry.export_ledger_changes(actor, m, since, &options, w).await?)).await
}

/// `vrs export fhir`.
pub async fn export_fhir(app: &App, a: &ExportFhirArgs) -> CliResult<Report> {
    let actor = app::actor(app, &a.staff).await?;
    let m = app::municipality(&a.staff.municipality)?;
    let p = person(m, a.addressee.as_deref())?;
    let w = write_fhir(&app.registry, &actor, m, p.as_ref(), &a.out).await?;
    let text = format!(
        "FHIR R4 Bundle of {} written to {}: {} Patients, {} Immunizations ({} entered-in-error)",
        whose(m, p.as_ref()),
        a.out.display(),
        w.patients,
        w.immunizations,
        w.entered_in_error
    );
    Ok(Report::new(text, &w))
}

/// `vrs export hl7`.
pub async fn export_hl7(app: &App, a: &ExportFhirArgs) -> CliResult<Report> {
    let actor = app::actor(app, &a.staff).await?;
    let m = app::municipality(&a.staff.municipality)?;
    let p = person(m, a.addressee.as_deref())?;
    let n = write_hl7(&app.registry, &actor, m, p.as_ref(), &a.out).await?;
    let text = format!("HL7 v2.5.1 VXU^V04 messages of {} written to {}: {n} messages", whose(m, p.as_ref()), a.out.display());
    Ok(Report::new(text, &serde_json::json!({ "out": a.out, "messages": n })))
}

/// `vrs export opendata`.
pub async fn export_opendata(app: &App, a: &ExportOpendataArgs) -> CliResult<Report> {
    let (query, actor) = stats_reader(a.as_actor.as_deref(), &a.user, a.prefecture.as_deref(), a.municipality.as_deref())?;
    std::fs::create_dir_all(&a.out_dir).map_err(|e| write_error(&a.out_dir, e))?;
    let w = write_opendata(&app.registry, &actor, query, a.suppress_below, &a.out_dir).await?;
    let mut text =
        format!("open data written to {}: {} lines, {} doses ({} and {})", a.out_dir.display(), w.rows, w.doses, NDJSON_FILE, SUMMARY_FILE);
    if a.suppress_below > 0 {
        let _ = write!(text, "; {} doses in groups under {} left out", w.suppressed, a.suppress_below);
    }
    Ok(Report::new(text, &w))
}

/// `vrs export changes`.
pub async fn export_changes(app: &App, a: &ExportChangesArgs) -> CliResult<Report> {
    let actor = app::actor(app, &a.staff).await?;
    let m = app::municipality(&a.staff.municipality)?;
    let since = a.since.unwrap_or(0);
    let e = write_changes(&app.registry, &actor, m, since, output_encoding(a.encoding), &a.out).await?;
    let text = format!(
        "change log of {m} after cursor {since} written to {}: {} changes ({} voids)\nnext: --since {}",
        a.out.display(),
        e.changes,
        e.voids,
        e.cursor
    );
    Ok(Report::new(text, &serde_json::json!({ "out": a.out, "since": since, "export": e, "cursor": e.cursor })))
}

/// Plain-text account of a FHIR import.
fn import_text(file: &Path, r: &FhirImportReport) -> String {
    let mut t = format!(
        "{}: {} Immunizations registered, {} already registered, {} voided (entered-in-error), {} rejected\n",
        file.display(),
        r.registered,
        r.replayed,
        r.voided,
        r.rejected.len()
    );
    for (id, reason) in &r.rejected {
        let _ = writeln!(t, "  rejected Immunization/{id}: {reason}");
    }
    t
}

/// `vrs import fhir`.
pub async fn import_fhir(app: &App, a: &ImportFhirArgs) -> CliResult<Report> {
    let text = if a.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(|e| read_error(&a.file, e))?;
        s
    } else {
        std::fs::read_to_string(&a.file).map_err(|e| read_error(&a.file, e))?
    };
    let actor = app::site_actor(app, &a.account).await?;
    let report = app.registry.import_fhir(&actor, &text).await?;
    let out = Report::new(import_text(&a.file, &report), &report);
    if report.rejected.is_empty() {
        Ok(out)
    } else {
        let error =
            CliError::Input(format!("{} of the Bundle's Immunizations were rejected (the others were registered)", report.rejected.len()));
        Err(CliError::Reported { report: Box::new(out), error: Box::new(error) })
    }
}
