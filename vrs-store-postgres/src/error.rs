//! sqlx errors into vrs-core's one error enum: a guard the database enforces (a unique
//! key, a revision or slot check, a serialization failure or deadlock) is a
//! [`Error::Conflict`] the service retries; everything else is [`Error::Storage`].

use vrs_core::Error;

/// SQLSTATE of the store's own guard failures, raised by the `vrs_check` function of the
/// schema when a revision or slot check fails.
pub(crate) const GUARD_FAILED: &str = "VR409";
/// unique_violation.
const UNIQUE_VIOLATION: &str = "23505";
/// serialization_failure.
const SERIALIZATION_FAILURE: &str = "40001";
/// deadlock_detected.
const DEADLOCK_DETECTED: &str = "40P01";

/// Maps a sqlx error, saying what the store was doing.
pub(crate) fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| map(what, e)
}

/// Maps a sqlx error, saying what the store was doing.
pub(crate) fn map(what: &str, e: sqlx::Error) -> Error {
    if let sqlx::Error::Database(d) = &e {
        match d.code().as_deref() {
            Some(GUARD_FAILED) => return Error::Conflict { what: d.message().to_owned() },
            Some(UNIQUE_VIOLATION) => {
                let taken = match d.constraint() {
                    Some(c) if c.starts_with("dose") => "a new dose's id (its idempotency key) is taken".to_owned(),
                    Some(c) => format!("a key guarded by {c} is taken"),
                    None => "a unique key is taken".to_owned(),
                };
                return Error::Conflict { what: format!("{what}: {taken} ({})", d.message()) };
            }
            Some(SERIALIZATION_FAILURE | DEADLOCK_DETECTED) => {
                return Error::Conflict { what: format!("{what}: a concurrent writer got in the way ({})", d.message()) };
            }
            _ => {}
        }
    }
    Error::storage(what.to_owned(), e)
}

/// A storage error without a source (a stored value that does not decode, a bad option).
pub(crate) fn storage_message(message: impl Into<String>) -> Error {
    Error::Storage { message: message.into(), source: None }
}
