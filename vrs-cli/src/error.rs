//! The command's errors: vrs-core's, plus what the adapter itself can meet.

use crate::output::Report;

/// Why a command failed.
#[derive(Debug)]
pub enum CliError {
    /// vrs-core refused or failed; its [`vrs_core::Error::exit_code`] decides the exit code.
    Core(vrs_core::Error),
    /// The arguments or an input file could not be read as asked (exit 2).
    Input(String),
    /// Anything else: the store, the file system, the runtime (exit 1).
    Failure(String),
    /// A failure that comes with a report for stdout (e.g. a refused upload's every bad line).
    Reported {
        /// What to print on stdout (text, or JSON with `--json`).
        report: Box<Report>,
        /// The failure itself, for stderr and the exit code.
        error: Box<CliError>,
    },
}

impl CliError {
    /// 2 for bad input, 1 for anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Core(e) => u8::try_from(e.exit_code()).unwrap_or(1),
            CliError::Input(_) => 2,
            CliError::Failure(_) => 1,
            CliError::Reported { error, .. } => error.exit_code(),
        }
    }

    /// A short machine-readable kind for `--json` error objects.
    pub fn kind(&self) -> &'static str {
        match self {
            CliError::Core(e) => match e {
                vrs_core::Error::Invalid { .. } => "invalid",
                vrs_core::Error::Catalogue { .. } => "catalogue",
                vrs_core::Error::ImportRejected(_) => "import_rejected",
                vrs_core::Error::DoseRejected { .. } => "dose_rejected",
                vrs_core::Error::PermissionDenied { .. } => "permission_denied",
                vrs_core::Error::NotFound { .. } => "not_found",
                vrs_core::Error::Conflict { .. } => "conflict",
                vrs_core::Error::Read { .. } => "read",
                vrs_core::Error::Storage { .. } => "storage",
                _ => "error",
            },
            CliError::Input(_) => "input",
            CliError::Failure(_) => "failure",
            CliError::Reported { error, .. } => error.kind(),
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Core(e) => {
                write!(f, "{e}")?;
                let mut source = std::error::Error::source(e);
                while let Some(s) = source {
                    write!(f, ": {s}")?;
                    source = s.source();
                }
                Ok(())
            }
            CliError::Input(m) | CliError::Failure(m) => f.write_str(m),
            CliError::Reported { error, .. } => write!(f, "{error}"),
        }
    }
}

impl From<vrs_core::Error> for CliError {
    fn from(e: vrs_core::Error) -> Self {
        CliError::Core(e)
    }
}

/// Result of a command.
pub type CliResult<T> = Result<T, CliError>;

/// An error about writing an output file (exit 1).
pub fn write_error(what: &std::path::Path, e: impl std::fmt::Display) -> CliError {
    CliError::Failure(format!("cannot write {}: {e}", what.display()))
}

/// An error about reading an input file (exit 2: the input is bad or missing).
pub fn read_error(what: &std::path::Path, e: impl std::fmt::Display) -> CliError {
    CliError::Input(format!("cannot read {}: {e}", what.display()))
}
