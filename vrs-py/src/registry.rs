//! `vrs.open()` and the `Registry` class: every operation goes to vrs-core's
//! [`Registry`](vrs_core::service::Registry) as the actor the handle was opened with, with
//! the GIL released while the store works.

use std::fs::File;
use std::future::Future;
use std::io::{BufWriter, Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use chrono::{DateTime, NaiveDate, Utc};
use pyo3::prelude::*;
use pyo3::types::{PyDate, PyDict, PyString};
use vrs_core::access::{Actor, Site as CoreSite, StatsScope};
use vrs_core::columns::ResidentColumns;
use vrs_core::dose::{DoseCorrection, DoseRegistration};
use vrs_core::ids::{AccountId, AddresseeNumber, DoseId, IdempotencyKey, MunicipalityCode, PersonRef, SiteId};
use vrs_core::import::{ImportOptions, ImportProgress, InputEncoding, ResidentCsvSource};
use vrs_core::ledger::{LedgerOptions, OutputEncoding};
use vrs_core::opendata::{write_ndjson, write_summary_by_date};
use vrs_core::service::{Clock, FixedClock, Registry as CoreRegistry};
use vrs_core::stats::StatsQuery;
use vrs_core::store::DynStore;
use vrs_core::{Error, Result};
use vrs_store_postgres::{PostgresStore, redact_url};
use vrs_store_redb::RedbStore;

use crate::arrow::{
    BATCH_ROWS, Batcher, CALLER_AFTER_ROWS, DoseTable, ResidentTable, Table, dose_batch, resident_batch, resident_batch_here, stats_table,
    table,
};
use crate::errors::{InvalidInput, StorageError, VrsError, panicked, to_py};
use crate::types::{
    Account, Dose, DoseChange, FhirImport, Finding, ImportReport, LedgerExport, Reconciliation, Registration, actor_to_py, extract_actor,
    parse_municipality,
};

/// The async runtime every call runs on (PostgreSQL needs tokio; redb runs on its own
/// thread pool and works under any executor).
fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("vrs").enable_all().build().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::Storage { message: format!("starting the async runtime: {e}"), source: None })
}

/// Runs `work` with the GIL released, catching panics, and maps errors to Python.
fn detached<T: Send>(py: Python<'_>, work: impl FnOnce() -> Result<T> + Send) -> PyResult<T> {
    match py.detach(|| catch_unwind(AssertUnwindSafe(work))) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(to_py(py, e)),
        Err(payload) => Err(panicked(payload)),
    }
}

/// Drives `fut` to completion on the runtime with the GIL released.
fn block_on<T: Send>(py: Python<'_>, fut: impl Future<Output = Result<T>> + Send) -> PyResult<T> {
    detached(py, || runtime()?.block_on(fut))
}

/// The system clock.
struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// What `open` connects to: a PostgreSQL URL, or a redb file. Runs inside the runtime
/// (sqlx needs tokio).
async fn open_store(spec: &str, cache_bytes: Option<usize>) -> Result<DynStore> {
    let lower = spec.trim().to_ascii_lowercase();
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        if cache_bytes.is_some() {
            return Err(Error::Invalid {
                field: "cache_bytes",
                value: format!("{cache_bytes:?}"),
                reason: "sizes the cache of a redb file; a PostgreSQL server has its own".into(),
            });
        }
        return Ok(Arc::new(PostgresStore::connect(spec.trim()).await?));
    }
    if spec.contains("://") {
        return Err(Error::Invalid {
            field: "path_or_url",
            value: spec.chars().take(64).collect(),
            reason: "expected a file path (redb store) or a postgres:// URL".into(),
        });
    }
    let path = PathBuf::from(spec);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::storage(format!("creating {}", dir.display()), e))?;
    }
    // redb blocks while it opens (and repairs) the file: this runs in `block_on` on the
    // caller's thread (with the GIL released), never on an async worker.
    Ok(Arc::new(match cache_bytes {
        Some(bytes) => RedbStore::open_with_cache(&path, bytes)?,
        None => RedbStore::open(&path)?,
    }))
}

/// The store and service behind one or more `Registry` handles (one per actor).
struct Shared {
    registry: RwLock<Option<CoreRegistry>>,
    description: String,
}

/// A registry on an open store, acting as one actor. Get one with `vrs.open()`; get the
/// same store as another actor with `with_actor()`.
#[pyclass(module = "vrs", name = "Registry", frozen)]
pub struct PyRegistry {
    shared: Arc<Shared>,
    actor: Actor,
}

/// Opens a store and returns a `Registry` acting as `actor`.
///
/// `path_or_url` is a redb file path (created, with its directory, when missing) or a
/// PostgreSQL URL `postgres://user:password@host/db`. `actor` is `vrs.Staff(...)`,
/// `vrs.Site(...)`, `vrs.StatisticsReader(...)` or a string such as `"staff:131016"`.
/// `now`, a timezone-aware datetime, stops the clock there (tests, replays).
/// `cache_bytes` sizes a redb store's page cache (default: the file's size and an eighth,
/// at least 1 GiB, at most half the memory), so that full scans of a large store do not
/// read every page from the file again.
///
/// Raises `StorageError` when the store cannot be opened, `InvalidInput` for a bad
/// argument.
#[pyfunction]
#[pyo3(signature = (path_or_url, actor, *, now = None, cache_bytes = None))]
pub fn open(
    py: Python<'_>,
    path_or_url: &Bound<'_, PyAny>,
    actor: &Bound<'_, PyAny>,
    now: Option<&Bound<'_, PyAny>>,
    cache_bytes: Option<usize>,
) -> PyResult<PyRegistry> {
    let spec: PathBuf = path_or_url.extract()?;
    let spec = spec.to_string_lossy().into_owned();
    let actor = extract_actor(actor)?;
    let clock: Arc<dyn Clock> = match now {
        Some(at) => Arc::new(FixedClock::new(instant(at)?)),
        None => Arc::new(SystemClock),
    };
    let description = if spec.contains("://") { redact_url(&spec) } else { spec.clone() };
    // Driven by `Runtime::block_on` inside the closure, so the connect future need not be
    // `Send` (sqlx's PostgreSQL connect future trips rustc's higher-ranked `Send` check).
    let store = detached(py, || runtime()?.block_on(open_store(&spec, cache_bytes)))?;
    let registry = CoreRegistry::new(store, clock);
    Ok(PyRegistry { shared: Arc::new(Shared { registry: RwLock::new(Some(registry)), description }), actor })
}

/// An aware `datetime` as an instant.
fn instant(value: &Bound<'_, PyAny>) -> PyResult<DateTime<Utc>> {
    if value.getattr("tzinfo")?.is_none() || value.call_method0("utcoffset")?.is_none() {
        return Err(InvalidInput::new_err(
            "now: expected a timezone-aware datetime, e.g. datetime(2021, 7, 1, 9, tzinfo=ZoneInfo('Asia/Tokyo'))",
        ));
    }
    let seconds: f64 = value.call_method0("timestamp")?.extract()?;
    let micros = (seconds * 1e6).round() as i64;
    DateTime::<Utc>::from_timestamp_micros(micros).ok_or_else(|| InvalidInput::new_err("now: out of range"))
}

/// A date given as `datetime.date` or an ISO string `YYYY-MM-DD`.
fn date_arg(field: &str, value: &Bound<'_, PyAny>) -> PyResult<NaiveDate> {
    if let Ok(text) = value.cast::<PyString>() {
        let t = text.to_str()?;
        return NaiveDate::parse_from_str(t.trim(), "%Y-%m-%d")
            .map_err(|_| InvalidInput::new_err(format!("{field}: {t:?} is not a date (YYYY-MM-DD)")));
    }
    if value.is_instance_of::<PyDate>() {
        return value.extract::<NaiveDate>();
    }
    Err(InvalidInput::new_err(format!("{field}: expected a datetime.date or 'YYYY-MM-DD', got {}", value.get_type().name()?)))
}

fn core_err(py: Python<'_>, e: Error) -> PyErr {
    to_py(py, e)
}

fn input_encoding(text: &str) -> PyResult<InputEncoding> {
    match text.trim().to_ascii_lowercase().replace('-', "_").as_str() {
        "auto" => Ok(InputEncoding::Auto),
        "utf8" | "utf_8" | "utf_8_sig" => Ok(InputEncoding::Utf8),
        "sjis" | "shift_jis" | "cp932" | "windows_31j" | "ms932" => Ok(InputEncoding::ShiftJis),
        _ => Err(InvalidInput::new_err(format!("encoding {text:?}: expected 'auto', 'utf8' or 'sjis'"))),
    }
}

fn output_encoding(text: &str) -> PyResult<OutputEncoding> {
    match text.trim().to_ascii_lowercase().replace('-', "_").as_str() {
        "utf8" | "utf_8" => Ok(OutputEncoding::Utf8),
        "sjis" | "shift_jis" | "cp932" | "windows_31j" | "ms932" => Ok(OutputEncoding::ShiftJis),
        _ => Err(InvalidInput::new_err(format!("encoding {text:?}: expected 'utf8' or 'sjis'"))),
    }
}

/// A file reader that stops (with an error, so nothing is applied) once `cancelled` is set.
struct Cancellable<R> {
    inner: R,
    cancelled: Arc<AtomicBool>,
}

impl<R: Read> Read for Cancellable<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("cancelled by the progress callback"));
        }
        self.inner.read(buf)
    }
}

impl PyRegistry {
    fn registry(&self) -> PyResult<CoreRegistry> {
        match self.shared.registry.read() {
            Ok(g) => g.clone().ok_or_else(|| VrsError::new_err("the registry is closed")),
            Err(_) => Err(StorageError::new_err("the registry's lock is poisoned")),
        }
    }

    /// The statistics a call is about: the municipality or prefecture given, else the
    /// staff's municipality, the reader's prefecture, or the whole country.
    fn stats_query(&self, municipality: Option<&str>, prefecture: Option<u8>) -> PyResult<StatsQuery> {
        Ok(match (municipality, prefecture, &self.actor) {
            (Some(m), _, _) => StatsQuery::Municipality(parse_municipality(m)?),
            (None, Some(p), _) if (1..=47).contains(&p) => StatsQuery::Prefecture(p),
            (None, Some(p), _) => return Err(InvalidInput::new_err(format!("prefecture {p}: expected 1 to 47"))),
            (None, None, Actor::MunicipalStaff { municipality, .. }) => StatsQuery::Municipality(*municipality),
            (None, None, Actor::StatisticsReader { scope: StatsScope::Prefecture(p) }) => StatsQuery::Prefecture(*p),
            (None, None, _) => StatsQuery::National,
        })
    }

    /// A resident of `m` named by its addressee number, when one is given.
    fn person(&self, py: Python<'_>, m: MunicipalityCode, addressee: Option<&str>) -> PyResult<Option<PersonRef>> {
        addressee
            .map(|a| AddresseeNumber::parse(a).map(|addressee| PersonRef { municipality: m, addressee }).map_err(|e| core_err(py, e)))
            .transpose()
    }

    /// The municipality a call is about: the one given, or the staff actor's own.
    fn municipality(&self, given: Option<&str>) -> PyResult<MunicipalityCode> {
        match (given, &self.actor) {
            (Some(m), _) => parse_municipality(m),
            (None, Actor::MunicipalStaff { municipality, .. }) => Ok(*municipality),
            (None, _) => Err(InvalidInput::new_err("municipality: required for an actor that is not municipal staff")),
        }
    }
}

#[pymethods]
impl PyRegistry {
    /// The actor this handle acts as.
    #[getter]
    fn actor(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        actor_to_py(py, &self.actor)
    }

    /// The same open store, acting as another actor.
    fn with_actor(&self, actor: &Bound<'_, PyAny>) -> PyResult<PyRegistry> {
        Ok(PyRegistry { shared: self.shared.clone(), actor: extract_actor(actor)? })
    }

    /// Closes the store (for every handle on it). Further calls raise `VrsError`.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let taken = match self.shared.registry.write() {
            Ok(mut g) => g.take(),
            Err(_) => return Err(StorageError::new_err("the registry's lock is poisoned")),
        };
        // Dropping the store may wait for its file to close: without the GIL.
        detached(py, move || {
            drop(taken);
            Ok(())
        })
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("vrs.Registry({:?}, actor={})", self.shared.description, self.actor)
    }

    /// Imports a residents upload (接種対象者, CSV) for the staff's municipality.
    ///
    /// The file may be UTF-8 (with or without BOM) or Shift_JIS/CP932 (`encoding` is
    /// `"auto"`, `"utf8"` or `"sjis"`), with a header row in Japanese or English. By
    /// default a file with any bad row is applied not at all and `ImportRejected` lists
    /// every bad line; with `skip_invalid=True` the good rows are applied and the report
    /// lists the rest. The import is atomic. `progress(rows_read, bytes_read)` is called
    /// every 10,000 rows; if it raises, the import stops, nothing is applied, and its
    /// exception propagates. Doses waiting for the uploaded vouchers are matched after.
    ///
    /// Returns an `ImportReport`. Raises `ImportRejected`, `InvalidInput` (a bad header,
    /// an undecodable file), `PermissionDenied`, `FileNotFoundError`.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (path, *, encoding = "auto", skip_invalid = false, municipality = None, progress = None, personal_number_secret = None))]
    fn import_residents(
        &self,
        py: Python<'_>,
        path: PathBuf,
        encoding: &str,
        skip_invalid: bool,
        municipality: Option<&str>,
        progress: Option<Py<PyAny>>,
        personal_number_secret: Option<Vec<u8>>,
    ) -> PyResult<ImportReport> {
        let registry = self.registry()?;
        let m = self.municipality(municipality)?;
        let mut options = ImportOptions::new(m);
        options.encoding = input_encoding(encoding)?;
        options.skip_invalid = skip_invalid;
        options.personal_number_secret = personal_number_secret.unwrap_or_default();
        let cancelled = Arc::new(AtomicBool::new(false));
        let callback_error: Arc<Mutex<Option<PyErr>>> = Arc::new(Mutex::new(None));
        if let Some(cb) = progress {
            let cancelled = cancelled.clone();
            let callback_error = callback_error.clone();
            options.progress = Some(Box::new(move |p: ImportProgress| {
                if cancelled.load(Ordering::Relaxed) {
                    return;
                }
                Python::attach(|py| {
                    if let Err(e) = cb.call1(py, (p.rows_read, p.bytes_read)) {
                        cancelled.store(true, Ordering::Relaxed);
                        if let Ok(mut slot) = callback_error.lock() {
                            slot.get_or_insert(e);
                        }
                    }
                });
            }));
        }
        let file = File::open(&path)?;
        let actor = &self.actor;
        let result = detached(py, || {
            let reader = Cancellable { inner: file, cancelled: cancelled.clone() };
            let source = ResidentCsvSource::new(reader, options)?;
            runtime()?.block_on(registry.import_residents(actor, m, Box::new(source)))
        });
        if let Some(e) = callback_error.lock().ok().and_then(|mut slot| slot.take()) {
            return Err(e);
        }
        let outcome = result?;
        Ok(ImportReport::from_core(outcome.report, Some(outcome.reconciled)))
    }

    /// Issues a tablet account to a site of the staff's municipality.
    #[pyo3(signature = (account, *, site_id, site_name, municipality = None))]
    fn issue_account(
        &self,
        py: Python<'_>,
        account: &str,
        site_id: &str,
        site_name: &str,
        municipality: Option<&str>,
    ) -> PyResult<Account> {
        let registry = self.registry()?;
        let m = self.municipality(municipality)?;
        let id = AccountId::parse(account).map_err(|e| core_err(py, e))?;
        let site = CoreSite { id: SiteId::parse(site_id).map_err(|e| core_err(py, e))?, name: site_name.to_owned(), municipality: m };
        let a = block_on(py, registry.issue_account(&self.actor, site, id))?;
        Ok(Account::from(&a))
    }

    /// Revokes a tablet account: it can do nothing from then on.
    fn revoke_account(&self, py: Python<'_>, account: &str) -> PyResult<Account> {
        let registry = self.registry()?;
        let id = AccountId::parse(account).map_err(|e| core_err(py, e))?;
        let a = block_on(py, registry.revoke_account(&self.actor, &id))?;
        Ok(Account::from(&a))
    }

    /// Registers one dose read at a site (the actor must be a `vrs.Site`).
    ///
    /// `ocr_line` is the voucher's 18 digits (spaces and full-width digits tolerated);
    /// `date_given` a `datetime.date` or `"YYYY-MM-DD"`; `product` a catalogue code such as
    /// `"pfizer"`; `dose_number` overrides the number printed on the voucher; `lot_expiry`
    /// is the lot's expiry date when the label read gave one. Registering
    /// again with the same `idempotency_key` returns the first result (`replayed=True`).
    ///
    /// Returns a `Registration` (the dose, whether it matched a resident, its findings).
    /// Raises `DoseRejected` when the input is refused (nothing stored), `PermissionDenied`,
    /// `Conflict` when the key was used for another voucher.
    #[pyo3(signature = (ocr_line, *, date_given, product, lot, doctor, idempotency_key, dose_number = None, lot_expiry = None))]
    #[allow(clippy::too_many_arguments)]
    fn register_dose(
        &self,
        py: Python<'_>,
        ocr_line: &str,
        date_given: &Bound<'_, PyAny>,
        product: &str,
        lot: &str,
        doctor: &str,
        idempotency_key: &str,
        dose_number: Option<u8>,
        lot_expiry: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Registration> {
        let registry = self.registry()?;
        let reg = DoseRegistration {
            ocr_line: ocr_line.to_owned(),
            dose_number,
            date_given: date_arg("date_given", date_given)?,
            product: product.to_owned(),
            lot: lot.to_owned(),
            doctor: doctor.to_owned(),
            idempotency_key: IdempotencyKey::parse(idempotency_key).map_err(|e| core_err(py, e))?,
            lot_expiry: lot_expiry.map(|d| date_arg("lot_expiry", d)).transpose()?,
        };
        let out = block_on(py, registry.register(&self.actor, &reg))?;
        Ok(Registration {
            dose: Dose::from(&out.dose),
            matched: out.matched,
            findings: out.findings.iter().map(Finding::from).collect(),
            replayed: out.replayed,
        })
    }

    /// Corrects a dose (補正): writes a new version with the given fields changed, who,
    /// when and `reason`; findings, statistics and exports follow.
    ///
    /// Returns a `DoseChange`. Raises `NotFound`, `PermissionDenied`, `InvalidInput`
    /// (no reason, nothing would change, a voided dose), `DoseRejected`.
    #[pyo3(signature = (dose_id, *, reason, dose_number = None, date_given = None, product = None, lot = None, doctor = None, site_name = None, lot_expiry = None))]
    #[allow(clippy::too_many_arguments)]
    fn correct_dose(
        &self,
        py: Python<'_>,
        dose_id: &str,
        reason: &str,
        dose_number: Option<u8>,
        date_given: Option<&Bound<'_, PyAny>>,
        product: Option<String>,
        lot: Option<String>,
        doctor: Option<String>,
        site_name: Option<String>,
        lot_expiry: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<DoseChange> {
        let registry = self.registry()?;
        let id = DoseId::parse(dose_id).map_err(|e| core_err(py, e))?;
        let correction = DoseCorrection {
            dose_number,
            date_given: date_given.map(|d| date_arg("date_given", d)).transpose()?,
            product,
            lot,
            doctor,
            site_name,
            lot_expiry: lot_expiry.map(|d| date_arg("lot_expiry", d)).transpose()?,
        };
        let out = block_on(py, registry.correct(&self.actor, id, &correction, reason))?;
        Ok(DoseChange { dose: Dose::from(&out.dose), findings: out.findings.iter().map(Finding::from).collect() })
    }

    /// Voids a dose with a reason (nothing is erased; a new version marks it void).
    #[pyo3(signature = (dose_id, *, reason))]
    fn void_dose(&self, py: Python<'_>, dose_id: &str, reason: &str) -> PyResult<DoseChange> {
        let registry = self.registry()?;
        let id = DoseId::parse(dose_id).map_err(|e| core_err(py, e))?;
        let out = block_on(py, registry.void(&self.actor, id, reason))?;
        Ok(DoseChange { dose: Dose::from(&out.dose), findings: out.findings.iter().map(Finding::from).collect() })
    }

    /// One dose, for whoever may see it.
    fn dose(&self, py: Python<'_>, dose_id: &str) -> PyResult<Dose> {
        let registry = self.registry()?;
        let id = DoseId::parse(dose_id).map_err(|e| core_err(py, e))?;
        let d = block_on(py, registry.dose(&self.actor, id))?;
        Ok(Dose::from(&d))
    }

    /// Matches the municipality's waiting doses to residents uploaded since.
    #[pyo3(signature = (municipality = None))]
    fn reconcile(&self, py: Python<'_>, municipality: Option<&str>) -> PyResult<Reconciliation> {
        let registry = self.registry()?;
        let m = self.municipality(municipality)?;
        let r = block_on(py, registry.reconcile(&self.actor, m))?;
        Ok(Reconciliation { matched: r.matched, still_unmatched: r.still_unmatched })
    }

    /// The municipality's review queue (要修正 / 要確認).
    #[pyo3(signature = (municipality = None, *, open_only = true))]
    fn findings(&self, py: Python<'_>, municipality: Option<&str>, open_only: bool) -> PyResult<Vec<Finding>> {
        let registry = self.registry()?;
        let m = self.municipality(municipality)?;
        let found = block_on(py, registry.findings(&self.actor, m, open_only))?;
        Ok(found.iter().map(Finding::from).collect())
    }

    /// The doses a municipality owns (registered under its vouchers), one row per dose as
    /// it stands now, voided ones flagged, as an Arrow table (`vrs.Table`).
    ///
    /// `municipality` defaults to the staff actor's own. With `since` (the `cursor` of an
    /// earlier table), only doses written after it. Columns: dose_id, municipality,
    /// voucher_number, ticket_kind, dose_number, date_given (date32), registered_at
    /// (timestamp[us, Asia/Tokyo]), registered_by, administering_municipality, site_id,
    /// site_name, doctor, product, maker, lot, lot_expiry (date32), resident_municipality,
    /// addressee_number, voided, version, updated_at, seq. Codes are strings (leading
    /// zeros kept).
    ///
    /// On a redb store a full read (no `since`) is served from a cache of the columns kept
    /// in the store file: the first full read after writes rebuilds the parts they changed
    /// (the first read of a municipality builds it all, and takes several times as long).
    ///
    /// Raises `PermissionDenied` for anyone but the municipality's staff.
    #[pyo3(signature = (municipality = None, *, since = None))]
    fn doses(&self, py: Python<'_>, municipality: Option<&str>, since: Option<u64>) -> PyResult<Table> {
        let registry = self.registry()?;
        let m = self.municipality(municipality)?;
        let actor = &self.actor;
        block_on(py, async move {
            // The store decodes the next columns while this thread hands the last ones to Arrow.
            let schema = Arc::new(DoseTable::schema());
            let mut batcher = Batcher::new(&schema, dose_batch)?;
            let cursor = registry
                .scan_dose_columns(actor, m, since, BATCH_ROWS, &mut |c| {
                    batcher.push(c);
                    Ok(())
                })
                .await;
            let batches = batcher.finish()?;
            Ok(table(schema, batches, Some(cursor?)))
        })
    }

    /// The residents a municipality uploaded, as an Arrow table (`vrs.Table`).
    ///
    /// Columns: municipality, addressee_number, voucher_number, name, name_kana,
    /// birth_date (date32), sex (M/F/U), address, previous_municipality,
    /// previous_voucher_number, status, status_date. Codes are strings (leading zeros
    /// kept); the personal-number hash is never exported.
    ///
    /// On a redb store the read is served from a cache of the columns kept in the store
    /// file: the first read after an upload of the municipality rebuilds it (and takes
    /// several times as long as the reads after it).
    ///
    /// Raises `PermissionDenied` for anyone but the municipality's staff.
    ///
    /// `_caller_after_rows` (tests only) moves the point past which the table is built on
    /// the calling thread (see `Batcher::on_caller_after`).
    #[pyo3(signature = (municipality = None, *, _caller_after_rows = CALLER_AFTER_ROWS))]
    fn residents(&self, py: Python<'_>, municipality: Option<&str>, _caller_after_rows: usize) -> PyResult<Table> {
        let registry = self.registry()?;
        let m = self.municipality(municipality)?;
        let actor = &self.actor;
        block_on(py, async move {
            let schema = Arc::new(ResidentTable::schema());
            // Past the first rows, built here, so that the table's buffers come from this
            // thread's heap, which glibc keeps for the next read (see `on_caller_after`).
            let mut batcher =
                Batcher::new(&schema, resident_batch)?.on_caller_after(_caller_after_rows, ResidentColumns::len, resident_batch_here);
            let scanned = registry
                .scan_resident_columns(actor, m, BATCH_ROWS, &mut |c| {
                    batcher.push(c);
                    Ok(())
                })
                .await;
            let batches = batcher.finish()?;
            scanned?;
            Ok(table(schema, batches, None))
        })
    }

    /// Aggregate dose counts, kept up to date as doses are stored, as an Arrow table.
    ///
    /// One row per group: municipality, prefecture, date (date32), dose_number, sex,
    /// age_band, product, count. Without arguments: the staff's municipality, the
    /// reader's prefecture, or the whole country for a national reader.
    ///
    /// Raises `PermissionDenied` outside the actor's scope.
    #[pyo3(signature = (*, municipality = None, prefecture = None))]
    fn stats(&self, py: Python<'_>, municipality: Option<&str>, prefecture: Option<u8>) -> PyResult<Table> {
        let registry = self.registry()?;
        let query = self.stats_query(municipality, prefecture)?;
        let rows = block_on(py, registry.statistics(&self.actor, query))?;
        stats_table(&rows).map_err(|e| to_py(py, e))
    }

    /// Writes the municipality's ledger (予防接種台帳向け出力) to `path` as CSV: one row per
    /// person with a dose, 個別宛名番号 then eight columns per dose number.
    ///
    /// `encoding` is `"utf8"` or `"sjis"`; `since` (the `cursor` of an earlier export)
    /// writes only persons with a dose changed after it. Returns a `LedgerExport` with
    /// the next cursor. Raises `PermissionDenied`, `InvalidInput` (a value Shift_JIS
    /// cannot encode).
    #[pyo3(signature = (path, *, municipality = None, encoding = "utf8", since = None, header = true))]
    fn export_ledger(
        &self,
        py: Python<'_>,
        path: PathBuf,
        municipality: Option<&str>,
        encoding: &str,
        since: Option<u64>,
        header: bool,
    ) -> PyResult<LedgerExport> {
        let registry = self.registry()?;
        let m = self.municipality(municipality)?;
        let options = LedgerOptions { encoding: output_encoding(encoding)?, since, no_header: !header };
        let actor = &self.actor;
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&path)?);
        let (e, flushed) = detached(py, || {
            let e = runtime()?.block_on(registry.export_ledger(actor, m, &options, &mut out))?;
            Ok((e, out.flush()))
        })?;
        flushed?;
        Ok(LedgerExport { rows: e.rows, doses: e.doses, blocks: e.blocks, cursor: e.cursor })
    }

    /// A FHIR R4 `Bundle` (type `collection`) of the municipality's Patients and
    /// Immunizations, or of one resident's (`addressee`, the 個別宛名番号), as a dict.
    ///
    /// Voided doses are `entered-in-error`; doses under a previous municipality's voucher
    /// follow a moved-in resident; unmatched doses refer to their voucher by identifier.
    /// Raises `PermissionDenied` for anyone but the municipality's staff, `NotFound` for
    /// an unknown resident.
    #[pyo3(signature = (*, municipality = None, addressee = None))]
    fn export_fhir<'py>(&self, py: Python<'py>, municipality: Option<&str>, addressee: Option<&str>) -> PyResult<Bound<'py, PyAny>> {
        let registry = self.registry()?;
        let m = self.municipality(municipality)?;
        let person = self.person(py, m, addressee)?;
        let actor = &self.actor;
        let text = block_on(py, async move { Ok(registry.export_fhir(actor, m, person.as_ref()).await?.to_string()) })?;
        py.import("json")?.call_method1("loads", (text,))
    }

    /// HL7 v2.5.1 `VXU^V04` messages of the municipality (or of one resident), one per
    /// dose: segments end in `\r`, each message in `\n`.
    ///
    /// RXA-21 is `A` for a dose as registered, `U` for a corrected one, `D` for a voided
    /// one. Raises `PermissionDenied` for anyone but the municipality's staff.
    #[pyo3(signature = (*, municipality = None, addressee = None))]
    fn export_hl7(&self, py: Python<'_>, municipality: Option<&str>, addressee: Option<&str>) -> PyResult<String> {
        let registry = self.registry()?;
        let m = self.municipality(municipality)?;
        let person = self.person(py, m, addressee)?;
        let actor = &self.actor;
        let bytes = block_on(py, async move {
            let mut out = Vec::new();
            registry.export_hl7(actor, m, person.as_ref(), &mut out).await?;
            Ok(out)
        })?;
        String::from_utf8(bytes).map_err(|e| StorageError::new_err(format!("HL7 export is not UTF-8: {e}")))
    }

    /// Open data in the schema of VRS's public statistics: one dict per line of
    /// `prefecture.ndjson` (`date` as `"YYYY-MM-DD"`, `prefecture`, `gender` F/M/U, `age`
    /// -64/65-/UNK, `medical_worker`, `status` = dose number, `count`).
    ///
    /// The scope is chosen as in `stats()`. Groups of fewer than `suppress_below` doses
    /// are left out (small-cell suppression). With `out_dir`, `prefecture.ndjson` and
    /// `summary_by_date.csv` are also written there. Raises `PermissionDenied` outside
    /// the actor's scope.
    #[pyo3(signature = (*, municipality = None, prefecture = None, suppress_below = 0, out_dir = None))]
    fn opendata<'py>(
        &self,
        py: Python<'py>,
        municipality: Option<&str>,
        prefecture: Option<u8>,
        suppress_below: u64,
        out_dir: Option<PathBuf>,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let registry = self.registry()?;
        let query = self.stats_query(municipality, prefecture)?;
        let (rows, _) = block_on(py, registry.export_opendata(&self.actor, query, suppress_below))?;
        if let Some(dir) = out_dir {
            std::fs::create_dir_all(&dir)?;
            let rows = &rows;
            let (a, b) = detached(py, || {
                let mut ndjson = BufWriter::new(
                    File::create(dir.join("prefecture.ndjson")).map_err(|e| Error::storage("creating prefecture.ndjson", e))?,
                );
                write_ndjson(rows, &mut ndjson)?;
                let mut summary = BufWriter::new(
                    File::create(dir.join("summary_by_date.csv")).map_err(|e| Error::storage("creating summary_by_date.csv", e))?,
                );
                write_summary_by_date(rows, &mut summary)?;
                Ok((ndjson.flush(), summary.flush()))
            })?;
            a?;
            b?;
        }
        rows.iter()
            .map(|r| {
                let d = PyDict::new(py);
                d.set_item("date", r.date.format("%Y-%m-%d").to_string())?;
                d.set_item("prefecture", &r.prefecture)?;
                d.set_item("gender", &r.gender)?;
                d.set_item("age", &r.age)?;
                d.set_item("medical_worker", r.medical_worker)?;
                d.set_item("status", r.status)?;
                d.set_item("count", r.count)?;
                Ok(d)
            })
            .collect()
    }

    /// Writes the municipality's ledger change log (台帳差分) to `path` as CSV: one line per
    /// dose written after the cursor `since` (0: all), in its newest version, marked
    /// 登録 (registered), 補正 (corrected), 取消 (voided) or 突合 (matched since).
    ///
    /// Returns the cursor to pass as `since` next time: chained exports cover every
    /// change exactly once, even while doses are being registered. `encoding` is
    /// `"utf8"` or `"sjis"`. Raises `PermissionDenied`, `InvalidInput` (a value Shift_JIS
    /// cannot encode).
    #[pyo3(signature = (path, *, municipality = None, since = 0, encoding = "utf8", header = true))]
    fn export_changes(
        &self,
        py: Python<'_>,
        path: PathBuf,
        municipality: Option<&str>,
        since: u64,
        encoding: &str,
        header: bool,
    ) -> PyResult<u64> {
        let registry = self.registry()?;
        let m = self.municipality(municipality)?;
        let options = LedgerOptions { encoding: output_encoding(encoding)?, since: None, no_header: !header };
        let actor = &self.actor;
        let mut out = BufWriter::new(File::create(&path)?);
        let (e, flushed) = detached(py, || {
            let e = runtime()?.block_on(registry.export_ledger_changes(actor, m, since, &options, &mut out))?;
            Ok((e, out.flush()))
        })?;
        flushed?;
        Ok(e.cursor)
    }

    /// Registers a FHIR R4 Bundle's Immunizations as doses, from the site this handle
    /// acts as (a `vrs.Site`), in one batch; `entered-in-error` ones are voided after.
    ///
    /// `bundle` is a dict (as `export_fhir()` returns), JSON text, or a path to a JSON
    /// file. Importing the same Bundle again stores nothing new (`replayed`). Returns a
    /// `FhirImport`; Immunizations refused one by one are in its `rejected`. Raises
    /// `InvalidInput` when the Bundle cannot be read (naming the entry and field),
    /// `PermissionDenied` when the actor is not an active site account.
    fn import_fhir(&self, py: Python<'_>, bundle: &Bound<'_, PyAny>) -> PyResult<FhirImport> {
        let registry = self.registry()?;
        let text: String = if bundle.is_instance_of::<PyDict>() {
            py.import("json")?.call_method1("dumps", (bundle,))?.extract()?
        } else if let Ok(s) = bundle.cast::<PyString>() {
            s.to_str()?.to_owned()
        } else if let Ok(path) = bundle.extract::<PathBuf>() {
            std::fs::read_to_string(path)?
        } else {
            return Err(InvalidInput::new_err(format!("bundle: expected a dict, JSON text or a path, got {}", bundle.get_type().name()?)));
        };
        let report = block_on(py, registry.import_fhir(&self.actor, &text))?;
        Ok(FhirImport::from(report))
    }
}
