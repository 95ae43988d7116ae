//! The one error enum of vrs-core. Stores and frontends map into or from it; personal
//! data (names, birth dates, personal numbers) never appears in a message.

use crate::access::Operation;
use crate::finding::FindingKind;
use crate::import::ImportReport;

/// Everything that can go wrong in vrs-core, in the user's terms.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value failed validation. `value` is the offending text, or `(redacted)` for
    /// personal data.
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        /// The field, in the English column name of the upload format.
        field: &'static str,
        /// The offending value (cut to 64 characters; redacted for personal data).
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The vaccine catalogue or rules file is malformed.
    #[error("vaccine catalogue: {detail}")]
    Catalogue {
        /// What is wrong, with the place in the file.
        detail: String,
    },
    /// A residents upload had bad rows and nothing was applied (the default).
    #[error("{}", .0.summary())]
    ImportRejected(Box<ImportReport>),
    /// A dose registration was refused at input: nothing was stored.
    #[error("dose rejected ({kind}): {detail}")]
    DoseRejected {
        /// Which rule refused it.
        kind: FindingKind,
        /// What was wrong.
        detail: String,
    },
    /// The actor may not perform this operation on this data.
    #[error("permission denied: {actor} may not {operation}: {reason}")]
    PermissionDenied {
        /// Who asked (without personal data).
        actor: String,
        /// What they asked for.
        operation: Operation,
        /// Why it is refused.
        reason: String,
    },
    /// The thing asked for does not exist.
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// A uniqueness guarded by the store was taken meanwhile, or a record changed since
    /// it was read. The service re-reads and decides again.
    #[error("conflict: {what}")]
    Conflict {
        /// Which guard or record.
        what: String,
    },
    /// Input could not be read (the reader failed, or an encoding could not be decoded).
    #[error("reading input: {detail}")]
    Read {
        /// What failed.
        detail: String,
    },
    /// A scan (a voucher's OCR line or barcode, a vaccine label) cannot be used as read;
    /// the problem says what to ask the operator.
    #[error("unreadable: {0}")]
    Unreadable(crate::scan::ScanProblem),
    /// The storage backend failed.
    #[error("storage: {message}")]
    Storage {
        /// What the store was doing.
        message: String,
        /// The backend's own error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl Error {
    /// A storage error wrapping a backend error.
    pub fn storage(message: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Storage { message: message.into(), source: Some(Box::new(source)) }
    }

    /// `true` for [`Error::Conflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }

    /// The exit code a command-line frontend should use: 2 for bad input, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Invalid { .. }
            | Error::ImportRejected(_)
            | Error::DoseRejected { .. }
            | Error::Catalogue { .. }
            | Error::Unreadable(_)
            | Error::Read { .. } => 2,
            _ => 1,
        }
    }
}
