//! `vrs gen residents`: a deterministic residents upload from vrs-core's generator.

use std::io::Write;

use vrs_core::generate::{DateStyle, GenOptions, HeaderLanguage, write_residents_csv};

use crate::app;
use crate::cli::{GenCommand, GenResidentsArgs, HeaderLang};
use crate::commands::{output_encoding, write_file};
use crate::error::{CliError, CliResult};
use crate::output::Report;
use crate::progress;

/// The generator's options for the command line's.
pub fn options(a: &GenResidentsArgs) -> CliResult<GenOptions> {
    let mut o = GenOptions::new(app::municipality(&a.municipality)?, a.count, a.seed);
    o.first_addressee = a.first_addressee;
    o.date_style = if a.era_dates { DateStyle::Era } else { DateStyle::Iso };
    o.personal_numbers = a.personal_numbers;
    o.moves = !a.no_moves;
    Ok(o)
}

fn header(h: HeaderLang) -> HeaderLanguage {
    match h {
        HeaderLang::Ja => HeaderLanguage::Japanese,
        HeaderLang::En => HeaderLanguage::English,
    }
}

/// Runs `vrs gen ...`.
pub async fn run(cmd: &GenCommand) -> CliResult<Report> {
    let GenCommand::Residents(a) = cmd;
    let o = options(a)?;
    let encoding = output_encoding(a.encoding);
    let json = |rows: u64| serde_json::json!({ "out": a.out, "rows": rows, "municipality": o.municipality, "seed": o.seed });
    match &a.out {
        Some(path) => {
            let rows =
                write_file(path, "generating residents", async |w| Ok(write_residents_csv(w, &o, encoding, header(a.header))?)).await?;
            Ok(Report::new(format!("{rows} residents of {} written to {}", o.municipality, path.display()), &json(rows)))
        }
        None => {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            let bar = progress::bar(None, "generating residents", true);
            let rows = write_residents_csv(bar.wrap_write(&mut lock), &o, encoding, header(a.header));
            bar.finish_and_clear();
            let rows = rows?;
            lock.flush().map_err(|e| CliError::Failure(format!("cannot write to stdout: {e}")))?;
            // The file went to stdout: print nothing more there (a JSON summary would corrupt it).
            let _ = rows;
            Ok(Report::default())
        }
    }
}
