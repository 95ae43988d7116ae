//! The exception hierarchy under `vrs.VrsError`, and the one place where vrs-core's
//! [`Error`] (and anything else that goes wrong in Rust) becomes a Python exception.
//! Nothing reaches Python as a bare `RuntimeError` or a Rust panic.

use std::any::Any;

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyList;
use pyo3::{PyTypeInfo, create_exception};
use vrs_core::Error;
use vrs_core::finding::FindingKind;

use crate::types::{ImportReport, RowError};

create_exception!(vrs, VrsError, PyException, "Base class of every error raised by vrs.");
create_exception!(
    vrs,
    InvalidInput,
    VrsError,
    "A value or a file was refused. `line` and `column` say where, when there is a place \
     (a line of an upload, a field of a call); `reason` says why."
);
create_exception!(
    vrs,
    ImportRejected,
    InvalidInput,
    "A residents upload had bad rows and nothing was applied. `errors` lists every bad line; \
     `report` is the full ImportReport; `line`/`column` point at the first bad line."
);
create_exception!(
    vrs,
    DoseRejected,
    InvalidInput,
    "A dose registration was refused at input (nothing was stored). `kind` names the rule, \
     e.g. 'malformed_ocr', 'bad_check_digit', 'future_date', 'unknown_product'."
);
create_exception!(vrs, PermissionDenied, VrsError, "The actor may not do this. `actor`, `operation` and `reason` say who, what and why.");
create_exception!(vrs, NotFound, VrsError, "The thing asked for does not exist. `what` names it.");
create_exception!(
    vrs,
    Conflict,
    VrsError,
    "A uniqueness was taken meanwhile or a record kept changing (e.g. an idempotency key reused \
     for another voucher, an account id already issued). `what` names it."
);
create_exception!(vrs, StorageError, VrsError, "The store failed (the file or the database), or vrs itself did.");

/// Attributes every instance of a class has, `None` unless set.
const DEFAULT_ATTRIBUTES: &[(&str, &[&str])] = &[
    ("InvalidInput", &["line", "column", "field", "value", "reason", "kind", "errors", "report"]),
    ("PermissionDenied", &["actor", "operation", "reason"]),
    ("NotFound", &["what"]),
    ("Conflict", &["what"]),
];

/// Adds the exception classes to the module, with their default attributes.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("VrsError", py.get_type::<VrsError>())?;
    m.add("InvalidInput", py.get_type::<InvalidInput>())?;
    m.add("ImportRejected", py.get_type::<ImportRejected>())?;
    m.add("DoseRejected", py.get_type::<DoseRejected>())?;
    m.add("PermissionDenied", py.get_type::<PermissionDenied>())?;
    m.add("NotFound", py.get_type::<NotFound>())?;
    m.add("Conflict", py.get_type::<Conflict>())?;
    m.add("StorageError", py.get_type::<StorageError>())?;
    for (class, attributes) in DEFAULT_ATTRIBUTES {
        let ty = m.getattr(*class)?;
        for a in *attributes {
            ty.setattr(*a, py.None())?;
        }
    }
    Ok(())
}

/// An exception of class `T` with `message` and attributes.
fn raise<T: PyTypeInfo>(py: Python<'_>, message: String, attributes: Vec<(&str, Py<PyAny>)>) -> PyErr {
    let err = PyErr::new::<T, _>(message);
    let value = err.value(py);
    for (name, v) in attributes {
        // Setting an attribute on a fresh exception instance cannot fail in practice;
        // if it did, the exception still carries its message.
        let _ = value.setattr(name, v);
    }
    err
}

fn s(py: Python<'_>, text: &str) -> Py<PyAny> {
    text.into_pyobject(py).map(|o| o.into_any().unbind()).unwrap_or_else(|_| py.None())
}

fn opt<'a>(py: Python<'_>, text: impl Into<Option<&'a str>>) -> Py<PyAny> {
    match text.into() {
        Some(t) => s(py, t),
        None => py.None(),
    }
}

/// The field a rejected registration is about.
fn rejected_field(kind: FindingKind) -> Option<&'static str> {
    match kind {
        FindingKind::MalformedOcr | FindingKind::BadCheckDigit | FindingKind::UnknownMunicipality => Some("ocr_line"),
        FindingKind::FutureDate => Some("date_given"),
        FindingKind::UnknownProduct => Some("product"),
        _ => None,
    }
}

/// The Python exception for a vrs-core error.
pub fn to_py(py: Python<'_>, error: Error) -> PyErr {
    let message = error.to_string();
    match error {
        Error::Invalid { field, value, reason } => raise::<InvalidInput>(
            py,
            message,
            vec![("field", s(py, field)), ("column", s(py, field)), ("value", s(py, &value)), ("reason", s(py, &reason))],
        ),
        Error::Catalogue { detail } => raise::<InvalidInput>(py, message, vec![("field", s(py, "catalogue")), ("reason", s(py, &detail))]),
        Error::Read { detail } => raise::<InvalidInput>(py, message, vec![("reason", s(py, &detail))]),
        Error::ImportRejected(report) => import_rejected(py, *report),
        Error::DoseRejected { kind, detail } => {
            let field = rejected_field(kind);
            raise::<DoseRejected>(
                py,
                message,
                vec![("kind", s(py, kind.as_str())), ("reason", s(py, &detail)), ("field", opt(py, field)), ("column", opt(py, field))],
            )
        }
        Error::PermissionDenied { actor, operation, reason } => raise::<PermissionDenied>(
            py,
            message,
            vec![("actor", s(py, &actor)), ("operation", s(py, &operation.to_string())), ("reason", s(py, &reason))],
        ),
        Error::NotFound { what } => raise::<NotFound>(py, message, vec![("what", s(py, &what))]),
        Error::Conflict { what } => raise::<Conflict>(py, message, vec![("what", s(py, &what))]),
        Error::Storage { source, .. } => {
            // The source chain says what the backend reported.
            let mut full = message;
            let mut next: Option<&(dyn std::error::Error + 'static)> = source.as_deref().map(|e| e as &(dyn std::error::Error + 'static));
            while let Some(e) = next {
                full.push_str(": ");
                full.push_str(&e.to_string());
                next = e.source();
            }
            raise::<StorageError>(py, full, Vec::new())
        }
        other => raise::<VrsError>(py, other.to_string(), Vec::new()),
    }
}

fn import_rejected(py: Python<'_>, report: vrs_core::import::ImportReport) -> PyErr {
    let mut message = report.summary();
    for e in report.errors.iter().take(5) {
        message.push_str(&format!("\n  line {}: {}: {}", e.line, if e.column.is_empty() { "(row)" } else { &e.column }, e.reason));
    }
    if report.errors.len() > 5 {
        message.push_str(&format!("\n  ... and {} more (see .errors)", report.errors.len() as u64 - 5 + report.errors_omitted));
    }
    let first = report.errors.first().cloned();
    let errors: Vec<RowError> = report.errors.iter().map(RowError::from).collect();
    let errors = PyList::new(py, errors).map(|l| l.into_any().unbind()).unwrap_or_else(|_| py.None());
    let report = Bound::new(py, ImportReport::from_core(report, None)).map(|r| r.into_any().unbind()).unwrap_or_else(|_| py.None());
    let mut attributes = vec![("errors", errors), ("report", report), ("reason", s(py, "the upload has bad rows; nothing was applied"))];
    if let Some(first) = first {
        attributes.push(("line", first.line.into_pyobject(py).map(|o| o.into_any().unbind()).unwrap_or_else(|_| py.None())));
        attributes.push(("column", opt(py, Some(first.column.as_str()).filter(|c| !c.is_empty()))));
    }
    raise::<ImportRejected>(py, message, attributes)
}

/// A panic caught at the boundary: reported as a `StorageError` naming it, never
/// unwinding into Python.
pub fn panicked(payload: Box<dyn Any + Send>) -> PyErr {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    PyErr::new::<StorageError, _>(format!("internal error in vrs (please report it): {what}"))
}

/// An error from the Arrow conversion (a bug, not bad input).
pub fn arrow(e: impl std::fmt::Display) -> Error {
    Error::Storage { message: format!("building Arrow data: {e}"), source: None }
}
