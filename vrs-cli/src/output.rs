//! Printing: a command produces a [`Report`] (plain text for people, JSON for
//! machines); errors go to stderr in plain words.

use std::io::Write;
use std::process::ExitCode;

use serde::Serialize;

use crate::error::CliError;

/// What a command prints on stdout.
#[derive(Debug, Default)]
pub struct Report {
    /// Plain text for people.
    pub text: String,
    /// The same for machines (`--json`).
    pub json: serde_json::Value,
}

impl Report {
    /// A report from text and any serializable value.
    pub fn new(text: impl Into<String>, json: &impl Serialize) -> Self {
        Self { text: text.into(), json: to_json(json) }
    }
}

/// A value as JSON; a value that cannot be serialized (never for our types) becomes null.
pub fn to_json(value: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

fn print_report(report: &Report, json: bool) {
    let mut out = std::io::stdout().lock();
    let written = if json {
        serde_json::to_string_pretty(&report.json).map_err(std::io::Error::other).and_then(|s| writeln!(out, "{s}"))
    } else if report.text.is_empty() {
        Ok(())
    } else if report.text.ends_with('\n') {
        write!(out, "{}", report.text)
    } else {
        writeln!(out, "{}", report.text)
    };
    // A closed pipe (e.g. `vrs ... | head`) is not worth a panic.
    let _ = written.and_then(|()| out.flush());
}

/// Prints a successful command's report and exits 0.
pub fn succeed(report: &Report, json: bool) -> ExitCode {
    print_report(report, json);
    ExitCode::SUCCESS
}

/// Prints a failure: its report (if any) on stdout, the error on stderr (and as a JSON
/// object on stdout with `--json`); exits 2 for bad input, 1 otherwise.
pub fn fail(error: &CliError, json: bool) -> ExitCode {
    let code = error.exit_code();
    match error {
        CliError::Reported { report, .. } => print_report(report, json),
        _ if json => {
            let value = serde_json::json!({
                "error": {
                    "kind": error.kind(),
                    "message": error.to_string(),
                    "exit_code": code,
                    "detail": detail(error),
                }
            });
            print_report(&Report { text: String::new(), json: value }, true);
        }
        _ => {}
    }
    let _ = writeln!(std::io::stderr().lock(), "vrs: error: {error}");
    ExitCode::from(code)
}

/// Structured detail of a core error, for `--json`.
fn detail(error: &CliError) -> serde_json::Value {
    match error {
        CliError::Core(vrs_core::Error::DoseRejected { kind, detail }) => {
            serde_json::json!({ "finding": kind.as_str(), "severity": kind.severity().to_string(), "detail": detail })
        }
        CliError::Core(vrs_core::Error::Invalid { field, value, reason }) => {
            serde_json::json!({ "field": field, "value": value, "reason": reason })
        }
        CliError::Core(vrs_core::Error::PermissionDenied { actor, operation, reason }) => {
            serde_json::json!({ "actor": actor, "operation": operation.to_string(), "reason": reason })
        }
        CliError::Core(vrs_core::Error::ImportRejected(report)) => to_json(report),
        _ => serde_json::Value::Null,
    }
}
