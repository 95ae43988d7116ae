//! vrs-py: the Python bindings of vrs (`import vrs`), built with maturin into the native
//! module `vrs._vrs`; the pure-Python package `vrs` (python/vrs/) re-exports it with
//! docstrings and type stubs.
//!
//! This crate only translates: Python values to vrs-core's types and back, vrs-core's
//! errors to the exception hierarchy under `vrs.VrsError`, and tables to Arrow through the
//! PyCapsule interface. Every rule (access, reconciliation, validation) is vrs-core's.
//! Long work runs with the GIL released; no panic crosses into Python.

mod arrow;
mod errors;
mod registry;
mod types;

use pyo3::prelude::*;

/// Parses the 18-digit OCR line of a voucher (spaces and full-width digits tolerated);
/// raises `DoseRejected` (an `InvalidInput`) when it is malformed, has a bad check digit or
/// names no real municipality.
#[pyfunction]
fn parse_ocr(py: Python<'_>, text: &str) -> PyResult<types::OcrLine> {
    match vrs_core::reconcile::parse_ocr(text) {
        Ok(ocr) => Ok(types::OcrLine::from(&ocr)),
        Err(e) => Err(errors::to_py(py, e)),
    }
}

/// The native module `vrs._vrs`.
#[pymodule]
fn _vrs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_function(wrap_pyfunction!(registry::open, m)?)?;
    m.add_function(wrap_pyfunction!(parse_ocr, m)?)?;
    m.add_class::<registry::PyRegistry>()?;
    m.add_class::<arrow::Table>()?;
    m.add_class::<types::Staff>()?;
    m.add_class::<types::Site>()?;
    m.add_class::<types::StatisticsReader>()?;
    m.add_class::<types::Dose>()?;
    m.add_class::<types::DoseVersion>()?;
    m.add_class::<types::Finding>()?;
    m.add_class::<types::Registration>()?;
    m.add_class::<types::DoseChange>()?;
    m.add_class::<types::ImportReport>()?;
    m.add_class::<types::RowError>()?;
    m.add_class::<types::Reconciliation>()?;
    m.add_class::<types::LedgerExport>()?;
    m.add_class::<types::FhirImport>()?;
    m.add_class::<types::Account>()?;
    m.add_class::<types::OcrLine>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
