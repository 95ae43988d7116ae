//! The Python-side value classes: actors, and what operations return. Each is a frozen
//! copy of vrs-core's value, translated at the edge (codes as strings, dates as
//! `datetime.date`, instants as aware `datetime.datetime` in UTC).

use chrono::{DateTime, NaiveDate, Utc};
use pyo3::prelude::*;
use pyo3::types::PyString;
use vrs_core::access::{Actor as CoreActor, StatsScope};
use vrs_core::dose::{DoseRecord, DoseVersion as CoreVersion};
use vrs_core::finding::{Finding as CoreFinding, Severity};
use vrs_core::ids::{AccountId, MunicipalityCode};

use crate::errors::InvalidInput;

// ---- actors ------------------------------------------------------------------------------

/// Staff of a municipality (市区町村職員): uploads and reads its residents, reads and
/// corrects its doses, issues tablet accounts, exports its ledger.
#[pyclass(module = "vrs", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Staff {
    /// The 6-digit municipality code (全国地方公共団体コード).
    pub municipality: String,
    /// The user name written to the audit trail.
    pub user: String,
}

#[pymethods]
impl Staff {
    #[new]
    #[pyo3(signature = (municipality, user = "python".to_owned()))]
    fn new(municipality: &str, user: String) -> PyResult<Self> {
        let code = parse_municipality(municipality)?;
        Ok(Self { municipality: code.as_str().to_owned(), user })
    }
    fn __repr__(&self) -> String {
        format!("Staff(municipality={:?}, user={:?})", self.municipality, self.user)
    }
}

/// A tablet account issued to a vaccination site (接種会場): registers doses, and reads
/// or corrects only the doses it registered today.
#[pyclass(module = "vrs", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Site {
    /// The tablet account id.
    pub account: String,
}

#[pymethods]
impl Site {
    #[new]
    fn new(account: &str) -> PyResult<Self> {
        let id = AccountId::parse(account).map_err(|e| Python::attach(|py| crate::errors::to_py(py, e)))?;
        Ok(Self { account: id.as_str().to_owned() })
    }
    fn __repr__(&self) -> String {
        format!("Site(account={:?})", self.account)
    }
}

/// A reader of aggregate statistics: national (`prefecture=None`) or one prefecture (1–47).
/// Sees counts only, never a person.
#[pyclass(module = "vrs", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StatisticsReader {
    /// `None` for the whole country, else the prefecture number 1–47.
    pub prefecture: Option<u8>,
}

#[pymethods]
impl StatisticsReader {
    #[new]
    #[pyo3(signature = (prefecture = None))]
    fn new(prefecture: Option<u8>) -> PyResult<Self> {
        if let Some(p) = prefecture
            && !(1..=47).contains(&p)
        {
            return Err(InvalidInput::new_err(format!("prefecture {p}: expected 1 to 47")));
        }
        Ok(Self { prefecture })
    }
    fn __repr__(&self) -> String {
        match self.prefecture {
            Some(p) => format!("StatisticsReader(prefecture={p})"),
            None => "StatisticsReader()".into(),
        }
    }
}

/// A municipality code given from Python.
pub fn parse_municipality(text: &str) -> PyResult<MunicipalityCode> {
    MunicipalityCode::parse(text).map_err(|e| Python::attach(|py| crate::errors::to_py(py, e)))
}

/// An actor given from Python: one of the three classes, or a string
/// `"staff:131016"`, `"site:tablet-1"`, `"national"`, `"prefecture:13"`.
pub fn extract_actor(value: &Bound<'_, PyAny>) -> PyResult<CoreActor> {
    if let Ok(s) = value.cast::<Staff>() {
        let s = s.get();
        return Ok(CoreActor::MunicipalStaff { municipality: parse_municipality(&s.municipality)?, user: s.user.clone() });
    }
    if let Ok(s) = value.cast::<Site>() {
        return site_actor(&s.get().account);
    }
    if let Ok(r) = value.cast::<StatisticsReader>() {
        let scope = match r.get().prefecture {
            Some(p) => StatsScope::Prefecture(p),
            None => StatsScope::National,
        };
        return Ok(CoreActor::StatisticsReader { scope });
    }
    if let Ok(text) = value.cast::<PyString>() {
        return parse_actor(text.to_str()?);
    }
    Err(InvalidInput::new_err(format!(
        "actor: expected vrs.Staff, vrs.Site, vrs.StatisticsReader or a string such as 'staff:131016', got {}",
        value.get_type().name()?
    )))
}

fn site_actor(account: &str) -> PyResult<CoreActor> {
    Ok(CoreActor::Site { account: AccountId::parse(account).map_err(|e| Python::attach(|py| crate::errors::to_py(py, e)))? })
}

fn parse_actor(text: &str) -> PyResult<CoreActor> {
    let t = text.trim();
    if t == "national" {
        return Ok(CoreActor::StatisticsReader { scope: StatsScope::National });
    }
    if let Some(p) = t.strip_prefix("prefecture:") {
        return match p.trim().parse::<u8>() {
            Ok(p) if (1..=47).contains(&p) => Ok(CoreActor::StatisticsReader { scope: StatsScope::Prefecture(p) }),
            _ => Err(InvalidInput::new_err(format!("actor {t:?}: the prefecture must be 01 to 47"))),
        };
    }
    if let Some(rest) = t.strip_prefix("staff:") {
        let (code, user) = rest.split_once('@').map(|(c, u)| (c, u.to_owned())).unwrap_or((rest, "python".to_owned()));
        return Ok(CoreActor::MunicipalStaff { municipality: parse_municipality(code)?, user });
    }
    if let Some(account) = t.strip_prefix("site:") {
        return site_actor(account);
    }
    Err(InvalidInput::new_err(format!("actor {t:?}: expected 'staff:CODE', 'site:ACCOUNT', 'national' or 'prefecture:NN'")))
}

/// The Python object for an actor.
pub fn actor_to_py(py: Python<'_>, actor: &CoreActor) -> PyResult<Py<PyAny>> {
    Ok(match actor {
        CoreActor::MunicipalStaff { municipality, user } => {
            Py::new(py, Staff { municipality: municipality.as_str().to_owned(), user: user.clone() })?.into_any()
        }
        CoreActor::Site { account } => Py::new(py, Site { account: account.as_str().to_owned() })?.into_any(),
        CoreActor::StatisticsReader { scope } => {
            let prefecture = match scope {
                StatsScope::National => None,
                StatsScope::Prefecture(p) => Some(*p),
            };
            Py::new(py, StatisticsReader { prefecture })?.into_any()
        }
    })
}

// ---- results -----------------------------------------------------------------------------

/// One version of a dose (the registration, then each correction or void).
#[pyclass(module = "vrs", frozen, get_all)]
#[derive(Clone)]
pub struct DoseVersion {
    /// 1 for the registration, then 2, 3, ...
    pub version: u32,
    /// Dose number as of this version.
    pub dose_number: u8,
    /// Date given as of this version.
    pub date_given: NaiveDate,
    /// Product code.
    pub product: String,
    /// Lot number.
    pub lot: String,
    /// Doctor's name.
    pub doctor: String,
    /// Site name.
    pub site_name: String,
    /// Whether this version voids the dose.
    pub voided: bool,
    /// When it was written.
    pub recorded_at: DateTime<Utc>,
    /// Who wrote it.
    pub recorded_by: String,
    /// Why (corrections and voids).
    pub reason: Option<String>,
}

impl From<&CoreVersion> for DoseVersion {
    fn from(v: &CoreVersion) -> Self {
        let d = &v.details;
        Self {
            version: v.version,
            dose_number: d.dose_number,
            date_given: d.date_given,
            product: d.product.as_str().to_owned(),
            lot: d.lot.clone(),
            doctor: d.doctor.clone(),
            site_name: d.site_name.clone(),
            voided: v.voided,
            recorded_at: v.recorded_at,
            recorded_by: v.recorded_by.clone(),
            reason: v.reason.clone(),
        }
    }
}

#[pymethods]
impl DoseVersion {
    fn __repr__(&self) -> String {
        format!(
            "DoseVersion(version={}, dose_number={}, date_given={}, voided={}, reason={:?})",
            self.version, self.dose_number, self.date_given, self.voided, self.reason
        )
    }
}

/// A registered dose (接種記録) as it stands now, with every version in `history`.
#[pyclass(module = "vrs", frozen, get_all)]
#[derive(Clone)]
pub struct Dose {
    /// The dose id (32 hex digits), derived from the idempotency key.
    pub id: String,
    /// The municipality that issued the voucher and owns the dose.
    pub municipality: String,
    /// The 10-digit voucher number (券番号).
    pub voucher_number: String,
    /// Ticket kind (券種) from the OCR line.
    pub ticket_kind: u8,
    /// Dose number (接種回数).
    pub dose_number: u8,
    /// Date given (接種日).
    pub date_given: NaiveDate,
    /// When it was first registered (接種履歴登録日時).
    pub registered_at: DateTime<Utc>,
    /// The tablet account that registered it.
    pub registered_by: String,
    /// Where the site is (接種自治体コード).
    pub administering_municipality: String,
    /// The site id (venue code or G-MIS ID).
    pub site_id: String,
    /// The site name (接種会場名).
    pub site_name: String,
    /// The doctor (接種医師名).
    pub doctor: String,
    /// The product code.
    pub product: String,
    /// The maker as written in the ledger (ワクチンメーカー).
    pub maker: String,
    /// The lot number (ロット番号).
    pub lot: String,
    /// The lot's expiry date, when known.
    pub lot_expiry: Option<NaiveDate>,
    /// Whether the dose is voided.
    pub voided: bool,
    /// The current version number.
    pub version: u32,
    /// Municipality of the matched resident, or `None` while unmatched.
    pub resident_municipality: Option<String>,
    /// Addressee number (個別宛名番号) of the matched resident, or `None`.
    pub addressee_number: Option<String>,
    /// Every version, oldest first.
    pub history: Vec<DoseVersion>,
}

impl From<&DoseRecord> for Dose {
    fn from(r: &DoseRecord) -> Self {
        let d = r.details();
        Self {
            id: r.id.to_string(),
            municipality: r.voucher.municipality.as_str().to_owned(),
            voucher_number: r.voucher.number.as_str().to_owned(),
            ticket_kind: r.ticket_kind,
            dose_number: d.dose_number,
            date_given: d.date_given,
            registered_at: r.registered_at,
            registered_by: r.registered_by.as_str().to_owned(),
            administering_municipality: d.administering_municipality.as_str().to_owned(),
            site_id: d.site.as_str().to_owned(),
            site_name: d.site_name.clone(),
            doctor: d.doctor.clone(),
            product: d.product.as_str().to_owned(),
            maker: d.maker.clone(),
            lot: d.lot.clone(),
            lot_expiry: d.lot_expiry,
            voided: r.is_voided(),
            version: r.current().version,
            resident_municipality: r.matched.as_ref().map(|p| p.municipality.as_str().to_owned()),
            addressee_number: r.matched.as_ref().map(|p| p.addressee.as_str().to_owned()),
            history: r.versions.iter().map(DoseVersion::from).collect(),
        }
    }
}

#[pymethods]
impl Dose {
    /// Whether the dose is matched (突合済み) to an uploaded resident.
    #[getter]
    fn matched(&self) -> bool {
        self.addressee_number.is_some()
    }
    fn __repr__(&self) -> String {
        format!(
            "Dose(id={:?}, municipality={:?}, voucher_number={:?}, dose_number={}, date_given={}, product={:?}, lot={:?}, matched={}, voided={}, version={})",
            self.id,
            self.municipality,
            self.voucher_number,
            self.dose_number,
            self.date_given,
            self.product,
            self.lot,
            self.addressee_number.is_some(),
            self.voided,
            self.version
        )
    }
}

/// A finding of reconciliation (突合) in a municipality's review queue.
#[pyclass(module = "vrs", frozen, get_all)]
#[derive(Clone)]
pub struct Finding {
    /// The dose it is about.
    pub dose_id: String,
    /// The municipality whose queue holds it.
    pub municipality: String,
    /// What it is: 'unmatched', 'duplicate', 'probable_duplicate', 'interval_too_short', ...
    pub kind: String,
    /// 'must_fix' (要修正) or 'to_check' (要確認).
    pub severity: String,
    /// Plain words explaining it.
    pub detail: String,
    /// The other dose involved (duplicates, intervals), if any.
    pub related_dose_id: Option<String>,
    /// Still open, or closed because its cause went away.
    pub open: bool,
    /// When first raised.
    pub raised_at: DateTime<Utc>,
    /// When closed.
    pub closed_at: Option<DateTime<Utc>>,
}

/// The Python name of a severity.
pub fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Rejected => "rejected",
        Severity::MustFix => "must_fix",
        Severity::ToCheck => "to_check",
    }
}

impl From<&CoreFinding> for Finding {
    fn from(f: &CoreFinding) -> Self {
        Self {
            dose_id: f.dose.to_string(),
            municipality: f.municipality.as_str().to_owned(),
            kind: f.kind.as_str().to_owned(),
            severity: severity_name(f.severity).to_owned(),
            detail: f.detail.clone(),
            related_dose_id: f.related.map(|d| d.to_string()),
            open: f.open,
            raised_at: f.raised_at,
            closed_at: f.closed_at,
        }
    }
}

#[pymethods]
impl Finding {
    fn __repr__(&self) -> String {
        format!(
            "Finding(kind={:?}, severity={:?}, dose_id={:?}, open={}, detail={:?})",
            self.kind, self.severity, self.dose_id, self.open, self.detail
        )
    }
}

/// What registering a dose returns: the dose, whether it matched a resident, its open
/// findings, and whether this was a replay of an earlier call with the same key.
#[pyclass(module = "vrs", frozen, get_all)]
pub struct Registration {
    /// The dose as stored (or as first stored, for a replay).
    pub dose: Dose,
    /// Whether the voucher matched an uploaded resident.
    pub matched: bool,
    /// The open findings about this dose.
    pub findings: Vec<Finding>,
    /// `True` when the idempotency key had been used: nothing new was stored.
    pub replayed: bool,
}

#[pymethods]
impl Registration {
    fn __repr__(&self) -> String {
        let kinds: Vec<&str> = self.findings.iter().map(|f| f.kind.as_str()).collect();
        format!("Registration(dose_id={:?}, matched={}, replayed={}, findings={:?})", self.dose.id, self.matched, self.replayed, kinds)
    }
}

/// What a correction or a void returns: the dose with its new version and its open findings.
#[pyclass(module = "vrs", frozen, get_all)]
pub struct DoseChange {
    /// The dose with its new version.
    pub dose: Dose,
    /// Its open findings afterwards.
    pub findings: Vec<Finding>,
}

#[pymethods]
impl DoseChange {
    fn __repr__(&self) -> String {
        format!(
            "DoseChange(dose_id={:?}, version={}, voided={}, findings={})",
            self.dose.id,
            self.dose.version,
            self.dose.voided,
            self.findings.len()
        )
    }
}

/// One bad line of an upload: where and why (never the value: it may be personal data).
#[pyclass(module = "vrs", frozen, get_all)]
#[derive(Clone)]
pub struct RowError {
    /// 1-based line number in the file (the header is line 1).
    pub line: u64,
    /// The column (English field name), or `None` when the whole row is bad.
    pub column: Option<String>,
    /// Why the value is refused.
    pub reason: String,
}

impl From<&vrs_core::import::RowError> for RowError {
    fn from(e: &vrs_core::import::RowError) -> Self {
        Self { line: e.line, column: Some(e.column.clone()).filter(|c| !c.is_empty()), reason: e.reason.clone() }
    }
}

#[pymethods]
impl RowError {
    fn __repr__(&self) -> String {
        format!("RowError(line={}, column={:?}, reason={:?})", self.line, self.column, self.reason)
    }
}

/// What an import did: rows read and valid, every bad line, what was applied, and how
/// many waiting doses the upload matched.
#[pyclass(module = "vrs", frozen, get_all)]
pub struct ImportReport {
    /// Data rows read (header excluded).
    pub rows_read: u64,
    /// Rows that passed validation.
    pub rows_valid: u64,
    /// Rows with at least one error.
    pub rows_invalid: u64,
    /// Whether the good rows were applied.
    pub applied: bool,
    /// New residents.
    pub inserted: u64,
    /// Residents replaced (same addressee number uploaded again).
    pub replaced: u64,
    /// Every bad line (up to 100,000; the rest are counted in `errors_omitted`).
    pub errors: Vec<RowError>,
    /// Bad lines beyond those kept in `errors`.
    pub errors_omitted: u64,
    /// Remarks that are not errors (the encoding used, columns ignored).
    pub notes: Vec<String>,
    /// Unmatched doses matched thanks to this upload.
    pub matched: u64,
    /// The municipality's doses still unmatched afterwards.
    pub still_unmatched: u64,
}

impl ImportReport {
    /// From vrs-core's report and, after a successful import, its reconciliation.
    pub fn from_core(r: vrs_core::import::ImportReport, reconciled: Option<vrs_core::service::ReconcileReport>) -> Self {
        let reconciled = reconciled.unwrap_or_default();
        Self {
            rows_read: r.rows_read,
            rows_valid: r.rows_valid,
            rows_invalid: r.rows_invalid,
            applied: r.applied,
            inserted: r.inserted,
            replaced: r.replaced,
            errors: r.errors.iter().map(RowError::from).collect(),
            errors_omitted: r.errors_omitted,
            notes: r.notes,
            matched: reconciled.matched,
            still_unmatched: reconciled.still_unmatched,
        }
    }
}

#[pymethods]
impl ImportReport {
    fn __repr__(&self) -> String {
        format!(
            "ImportReport(rows_read={}, rows_valid={}, rows_invalid={}, applied={}, inserted={}, replaced={}, matched={})",
            self.rows_read, self.rows_valid, self.rows_invalid, self.applied, self.inserted, self.replaced, self.matched
        )
    }
}

/// What a reconciliation pass did.
#[pyclass(module = "vrs", frozen, get_all)]
pub struct Reconciliation {
    /// Doses matched to a resident by this pass.
    pub matched: u64,
    /// The municipality's doses still unmatched afterwards.
    pub still_unmatched: u64,
}

#[pymethods]
impl Reconciliation {
    fn __repr__(&self) -> String {
        format!("Reconciliation(matched={}, still_unmatched={})", self.matched, self.still_unmatched)
    }
}

/// What a ledger export wrote.
#[pyclass(module = "vrs", frozen, get_all)]
pub struct LedgerExport {
    /// Person rows written.
    pub rows: u64,
    /// Doses written in those rows.
    pub doses: u64,
    /// Dose blocks per row (8 columns each).
    pub blocks: usize,
    /// Cursor for the next delta export (`since=`).
    pub cursor: u64,
}

#[pymethods]
impl LedgerExport {
    fn __repr__(&self) -> String {
        format!("LedgerExport(rows={}, doses={}, blocks={}, cursor={})", self.rows, self.doses, self.blocks, self.cursor)
    }
}

/// What importing a FHIR Bundle did.
#[pyclass(module = "vrs", frozen, get_all)]
pub struct FhirImport {
    /// Immunizations registered as new doses.
    pub registered: u64,
    /// Immunizations registered before (same resource id): nothing new stored.
    pub replayed: u64,
    /// `entered-in-error` Immunizations voided after registration.
    pub voided: u64,
    /// Immunizations refused: `(resource id, reason)`.
    pub rejected: Vec<(String, String)>,
}

impl From<vrs_core::interchange::FhirImportReport> for FhirImport {
    fn from(r: vrs_core::interchange::FhirImportReport) -> Self {
        FhirImport { registered: r.registered, replayed: r.replayed, voided: r.voided, rejected: r.rejected }
    }
}

#[pymethods]
impl FhirImport {
    fn __repr__(&self) -> String {
        format!(
            "FhirImport(registered={}, replayed={}, voided={}, rejected={})",
            self.registered,
            self.replayed,
            self.voided,
            self.rejected.len()
        )
    }
}

/// A tablet account issued to a site.
#[pyclass(module = "vrs", frozen, get_all)]
pub struct Account {
    /// The account id (what `vrs.Site(account)` names).
    pub account: String,
    /// The site id (venue code or G-MIS ID).
    pub site_id: String,
    /// The site name (接種会場名).
    pub site_name: String,
    /// The municipality the site is in.
    pub municipality: String,
    /// Who issued it.
    pub issued_by: String,
    /// When.
    pub issued_at: DateTime<Utc>,
    /// When revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<&vrs_core::access::TabletAccount> for Account {
    fn from(a: &vrs_core::access::TabletAccount) -> Self {
        Self {
            account: a.id.as_str().to_owned(),
            site_id: a.site.id.as_str().to_owned(),
            site_name: a.site.name.clone(),
            municipality: a.site.municipality.as_str().to_owned(),
            issued_by: a.issued_by.clone(),
            issued_at: a.issued_at,
            revoked_at: a.revoked_at,
        }
    }
}

#[pymethods]
impl Account {
    fn __repr__(&self) -> String {
        format!(
            "Account(account={:?}, site_id={:?}, municipality={:?}, revoked={})",
            self.account,
            self.site_id,
            self.municipality,
            self.revoked_at.is_some()
        )
    }
}

/// The 18 digits printed on a voucher, parsed: 券種 + 回数 + municipality + voucher number.
#[pyclass(module = "vrs", frozen, eq, get_all)]
#[derive(PartialEq, Eq)]
pub struct OcrLine {
    /// Ticket kind (券種), 1 digit.
    pub ticket_kind: u8,
    /// Dose number printed on the voucher (回数).
    pub dose_number: u8,
    /// The issuing municipality's 6-digit code.
    pub municipality: String,
    /// The 10-digit voucher number.
    pub voucher_number: String,
}

impl From<&vrs_core::ids::OcrLine> for OcrLine {
    fn from(o: &vrs_core::ids::OcrLine) -> Self {
        Self {
            ticket_kind: o.ticket_kind,
            dose_number: o.dose_number,
            municipality: o.voucher.municipality.as_str().to_owned(),
            voucher_number: o.voucher.number.as_str().to_owned(),
        }
    }
}

#[pymethods]
impl OcrLine {
    /// The 18 digits, normalised.
    fn __str__(&self) -> String {
        format!("{}{}{}{}", self.ticket_kind, self.dose_number, self.municipality, self.voucher_number)
    }
    fn __repr__(&self) -> String {
        format!(
            "OcrLine(ticket_kind={}, dose_number={}, municipality={:?}, voucher_number={:?})",
            self.ticket_kind, self.dose_number, self.municipality, self.voucher_number
        )
    }
}
