//! `vrs import residents`: streams a residents upload into the store as one atomic
//! change; vrs-core validates every row and decides whether it may be applied.

use std::fmt::Write as _;
use std::path::Path;

use vrs_core::access::Actor;
use vrs_core::ids::MunicipalityCode;
use vrs_core::import::{ColumnLayout, ImportOptions, ImportReport, InputEncoding, ResidentCsvSource};
use vrs_core::service::{ImportOutcome, Registry};

use crate::app::{self, App};
use crate::cli::{ImportCommand, ImportResidentsArgs, InEncoding};
use crate::error::{CliError, CliResult, read_error};
use crate::output::{Report, to_json};
use crate::progress;

/// The environment variable holding the deployment secret for personal-number hashes
/// (needed only when an upload has a personal_number column).
pub const SECRET_VAR: &str = "VRS_PERSONAL_NUMBER_SECRET";

/// The core's input encoding for a command-line choice.
pub fn input_encoding(e: InEncoding) -> InputEncoding {
    match e {
        InEncoding::Auto => InputEncoding::Auto,
        InEncoding::Utf8 => InputEncoding::Utf8,
        InEncoding::Sjis => InputEncoding::ShiftJis,
    }
}

/// A `--layout` value: the path of a mapping file, or the mapping itself.
fn layout(spec: &str, header_row: bool) -> CliResult<ColumnLayout> {
    let path = Path::new(spec);
    let text = if path.is_file() { std::fs::read_to_string(path).map_err(|e| read_error(path, e))? } else { spec.to_owned() };
    Ok(ColumnLayout::parse(&text)?.with_header_row(header_row))
}

/// Imports `file` for `municipality` as `actor`, with a progress bar on a terminal.
pub async fn import_file(
    registry: &Registry,
    actor: &Actor,
    municipality: MunicipalityCode,
    file: &Path,
    mut options: ImportOptions,
) -> CliResult<ImportOutcome> {
    let f = std::fs::File::open(file).map_err(|e| read_error(file, e))?;
    let len = f.metadata().map(|m| m.len()).ok();
    let bar = progress::bar(len, "importing residents", true);
    let cb_bar = bar.clone();
    options.progress = Some(Box::new(move |p| {
        cb_bar.set_position(p.bytes_read);
        if len.is_some_and(|n| p.bytes_read >= n) {
            cb_bar.set_message("committing");
        }
    }));
    let reader = std::io::BufReader::with_capacity(256 * 1024, f);
    let source = ResidentCsvSource::new(reader, options);
    let result = match source {
        Ok(source) => registry.import_residents(actor, municipality, Box::new(source)).await.map_err(CliError::Core),
        Err(e) => Err(CliError::Core(e)),
    };
    bar.finish_and_clear();
    result
}

/// Plain-text account of an import report, naming every bad line.
pub fn report_text(file: &Path, r: &ImportReport) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "{}: {}", file.display(), r.summary());
    if r.applied {
        let _ = writeln!(t, "  {} residents inserted, {} replaced", r.inserted, r.replaced);
    }
    for note in &r.notes {
        let _ = writeln!(t, "  note: {note}");
    }
    if !r.errors.is_empty() {
        let _ = writeln!(t, "  bad lines ({}):", r.errors.len());
        for e in &r.errors {
            let column = if e.column.is_empty() { "(row)" } else { e.column.as_str() };
            let _ = writeln!(t, "    line {}, column {}: {}", e.line, column, e.reason);
        }
    }
    if r.errors_omitted > 0 {
        let _ = writeln!(t, "    ... and {} more errors not listed", r.errors_omitted);
    }
    t
}

/// `vrs import ...`.
pub async fn run(app: &App, cmd: &ImportCommand) -> CliResult<Report> {
    match cmd {
        ImportCommand::Residents(a) => residents(app, a).await,
        ImportCommand::Fhir(a) => crate::interchange::import_fhir(app, a).await,
    }
}

async fn residents(app: &App, a: &ImportResidentsArgs) -> CliResult<Report> {
    let m = app::municipality(&a.municipality)?;
    let actor = match &a.as_actor {
        Some(spec) => app::parse_actor(spec, &a.user)?,
        None => Actor::MunicipalStaff { municipality: m, user: a.user.clone() },
    };
    let mut options = ImportOptions::new(m);
    options.encoding = input_encoding(a.encoding);
    options.skip_invalid = a.skip_invalid;
    options.layout = a.layout.as_deref().map(|s| layout(s, a.header_row)).transpose()?;
    if let Ok(secret) = std::env::var(SECRET_VAR) {
        options.personal_number_secret = secret.into_bytes();
    }
    match import_file(&app.registry, &actor, m, &a.file, options).await {
        Ok(outcome) => {
            let mut text = report_text(&a.file, &outcome.report);
            if outcome.reconciled.matched > 0 || outcome.reconciled.still_unmatched > 0 {
                let _ = writeln!(
                    text,
                    "  waiting doses matched by this upload: {}; still unmatched in {m}: {}",
                    outcome.reconciled.matched, outcome.reconciled.still_unmatched
                );
            }
            Ok(Report { text, json: to_json(&outcome) })
        }
        Err(CliError::Core(vrs_core::Error::ImportRejected(report))) => {
            let text = report_text(&a.file, &report);
            let json = serde_json::json!({ "report": &report, "reconciled": null });
            let error = CliError::Input(format!(
                "upload {} refused: {} bad rows ({} errors); nothing was applied (use --skip-invalid to apply the good rows)",
                a.file.display(),
                report.rows_invalid,
                report.errors.len() as u64 + report.errors_omitted
            ));
            Err(CliError::Reported { report: Box::new(Report { text, json }), error: Box::new(error) })
        }
        Err(e) => Err(e),
    }
}
