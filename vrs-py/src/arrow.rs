//! Arrow tables handed to Python through the Arrow PyCapsule interface
//! (`__arrow_c_stream__`, `__arrow_c_schema__`), on arrow-rs's C data interface: pyarrow,
//! polars and pandas (through pyarrow) take the buffers as they are, without a copy.
//!
//! Layout choices, for data teams:
//! - codes (municipality, voucher and addressee numbers) are strings, so leading zeros stay;
//! - strings are `string_view` (Arrow's `Utf8View`, what polars stores natively): codes of
//!   up to 12 bytes live inline in the view, and repeated values (site, doctor, maker, lot)
//!   share their bytes;
//! - dates are `date32`, instants `timestamp[us, tz=Asia/Tokyo]`.
//!
//! Rows are built in batches of [`BATCH_ROWS`] while the store streams records, so
//! memory stays close to the size of the Arrow data itself.

use std::sync::Arc;

use arrow_array::builder::ArrayBuilder;
use arrow_array::builder::{
    BooleanBuilder, Date32Builder, StringViewBuilder, TimestampMicrosecondBuilder, UInt8Builder, UInt32Builder, UInt64Builder,
};
use arrow_array::ffi_stream::FFI_ArrowArrayStream;
use arrow_array::{ArrayRef, RecordBatch, RecordBatchIterator};
use arrow_schema::ffi::FFI_ArrowSchema;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, NaiveDate, Utc};
use pyo3::prelude::*;
use pyo3::types::PyCapsule;
use vrs_core::Result;
use vrs_core::dose::DoseRecord;
use vrs_core::resident::Resident;
use vrs_core::stats::StatsRow;

use crate::errors::{StorageError, arrow as arrow_error};

/// Rows per record batch.
pub const BATCH_ROWS: usize = 1 << 16;

/// The time zone of timestamp columns.
pub const TIME_ZONE: &str = "Asia/Tokyo";

/// An Arrow table returned by vrs: hand it to `pyarrow.table()` or `polars.DataFrame()`
/// (polars 2's `polars.from_arrow()` makes a struct Series of it: `.struct.unnest()`);
/// nothing is copied row by row.
#[pyclass(module = "vrs", name = "Table", frozen)]
pub struct Table {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    cursor: Option<u64>,
}

impl Table {
    fn new(schema: SchemaRef, batches: Vec<RecordBatch>, cursor: Option<u64>) -> Self {
        Self { schema, batches, cursor }
    }
}

#[pymethods]
impl Table {
    /// The Arrow schema, as an `arrow_schema` PyCapsule (Arrow PyCapsule interface).
    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        let schema = FFI_ArrowSchema::try_from(self.schema.as_ref()).map_err(|e| StorageError::new_err(format!("Arrow schema: {e}")))?;
        PyCapsule::new_with_value(py, schema, c"arrow_schema")
    }

    /// The rows, as an `arrow_array_stream` PyCapsule (Arrow PyCapsule interface). The
    /// table can be exported any number of times; the buffers are shared, not copied.
    /// `requested_schema` is accepted and ignored (the schema is fixed).
    #[pyo3(signature = (requested_schema = None))]
    fn __arrow_c_stream__<'py>(&self, py: Python<'py>, requested_schema: Option<Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema;
        let reader = RecordBatchIterator::new(self.batches.clone().into_iter().map(Ok), self.schema.clone());
        let stream = FFI_ArrowArrayStream::new(Box::new(reader));
        PyCapsule::new_with_value(py, stream, c"arrow_array_stream")
    }

    /// Number of rows.
    #[getter]
    fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// Column names, in order.
    #[getter]
    fn column_names(&self) -> Vec<String> {
        self.schema.fields().iter().map(|f| f.name().clone()).collect()
    }

    /// Bytes held by the Arrow buffers.
    #[getter]
    fn nbytes(&self) -> usize {
        self.batches.iter().map(RecordBatch::get_array_memory_size).sum()
    }

    /// For `doses(since=...)`: the cursor to pass as `since` next time to get only what
    /// changed after this read. `None` for other tables.
    #[getter]
    fn cursor(&self) -> Option<u64> {
        self.cursor
    }

    /// The table as a `pyarrow.Table` (zero-copy; needs pyarrow).
    fn to_pyarrow<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("pyarrow")?.call_method1("table", (slf,))
    }

    /// The table as a `polars.DataFrame` (zero-copy for the string views; needs polars).
    /// Same as `polars.DataFrame(table)`.
    fn to_polars<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("polars")?.call_method1("DataFrame", (slf,))
    }

    /// The table as a `pandas.DataFrame`, through pyarrow (needs pyarrow and pandas).
    /// Codes stay strings; dates become `datetime64` columns only if you convert them.
    fn to_pandas<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::to_pyarrow(slf)?.call_method0("to_pandas")
    }

    fn __len__(&self) -> usize {
        self.num_rows()
    }

    fn __repr__(&self) -> String {
        let columns: Vec<String> = self.schema.fields().iter().map(|f| format!("{}: {}", f.name(), type_name(f.data_type()))).collect();
        format!("vrs.Table({} rows; {})", self.num_rows(), columns.join(", "))
    }
}

fn type_name(t: &DataType) -> String {
    match t {
        DataType::Utf8View => "string_view".into(),
        DataType::Date32 => "date32".into(),
        DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) => format!("timestamp[us, tz={tz}]"),
        DataType::Boolean => "bool".into(),
        DataType::UInt8 => "uint8".into(),
        DataType::UInt32 => "uint32".into(),
        DataType::UInt64 => "uint64".into(),
        other => other.to_string(),
    }
}

// ---- columns -----------------------------------------------------------------------------

fn string(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8View, nullable)
}

fn date(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Date32, nullable)
}

fn timestamp(name: &str) -> Field {
    Field::new(name, DataType::Timestamp(TimeUnit::Microsecond, Some(TIME_ZONE.into())), false)
}

/// Days since 1970-01-01, as date32 stores them.
fn days(d: NaiveDate) -> i32 {
    // Dates of vrs are within ±5,800,000 years; the subtraction fits i32.
    (d - NaiveDate::default()).num_days() as i32
}

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// A string column; `repeated` columns (few distinct values) share the bytes of equal values.
fn strings(repeated: bool) -> StringViewBuilder {
    let b = StringViewBuilder::with_capacity(BATCH_ROWS);
    if repeated { b.with_deduplicate_strings() } else { b }
}

fn ts() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::with_capacity(BATCH_ROWS).with_timezone(TIME_ZONE)
}

/// Accumulates rows into record batches of [`BATCH_ROWS`].
trait Rows {
    /// Rows pending in the builders.
    fn pending(&self) -> usize;
    /// Finishes the builders into columns (in schema order).
    fn columns(&mut self) -> Vec<ArrayRef>;
}

struct Batches<R: Rows> {
    schema: SchemaRef,
    rows: R,
    done: Vec<RecordBatch>,
}

impl<R: Rows> Batches<R> {
    fn new(schema: Schema, rows: R) -> Self {
        Self { schema: Arc::new(schema), rows, done: Vec::new() }
    }

    fn flush(&mut self) -> Result<()> {
        if self.rows.pending() == 0 {
            return Ok(());
        }
        let columns = self.rows.columns();
        let batch = RecordBatch::try_new(self.schema.clone(), columns).map_err(arrow_error)?;
        self.done.push(batch);
        Ok(())
    }

    fn after_push(&mut self) -> Result<()> {
        if self.rows.pending() >= BATCH_ROWS { self.flush() } else { Ok(()) }
    }

    fn finish(mut self, cursor: Option<u64>) -> Result<Table> {
        self.flush()?;
        Ok(Table::new(self.schema, self.done, cursor))
    }
}

// ---- doses -------------------------------------------------------------------------------

/// Builds the doses table: one row per dose, as it stands now (voided ones included,
/// flagged); `version` counts its corrections.
pub struct DoseTable(Batches<DoseRows>);

struct DoseRows {
    dose_id: StringViewBuilder,
    municipality: StringViewBuilder,
    voucher_number: StringViewBuilder,
    ticket_kind: UInt8Builder,
    dose_number: UInt8Builder,
    date_given: Date32Builder,
    registered_at: TimestampMicrosecondBuilder,
    registered_by: StringViewBuilder,
    administering_municipality: StringViewBuilder,
    site_id: StringViewBuilder,
    site_name: StringViewBuilder,
    doctor: StringViewBuilder,
    product: StringViewBuilder,
    maker: StringViewBuilder,
    lot: StringViewBuilder,
    lot_expiry: Date32Builder,
    resident_municipality: StringViewBuilder,
    addressee_number: StringViewBuilder,
    voided: BooleanBuilder,
    version: UInt32Builder,
    updated_at: TimestampMicrosecondBuilder,
    seq: UInt64Builder,
}

impl Rows for DoseRows {
    fn pending(&self) -> usize {
        self.seq.len()
    }
    fn columns(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.dose_id.finish()),
            Arc::new(self.municipality.finish()),
            Arc::new(self.voucher_number.finish()),
            Arc::new(self.ticket_kind.finish()),
            Arc::new(self.dose_number.finish()),
            Arc::new(self.date_given.finish()),
            Arc::new(self.registered_at.finish()),
            Arc::new(self.registered_by.finish()),
            Arc::new(self.administering_municipality.finish()),
            Arc::new(self.site_id.finish()),
            Arc::new(self.site_name.finish()),
            Arc::new(self.doctor.finish()),
            Arc::new(self.product.finish()),
            Arc::new(self.maker.finish()),
            Arc::new(self.lot.finish()),
            Arc::new(self.lot_expiry.finish()),
            Arc::new(self.resident_municipality.finish()),
            Arc::new(self.addressee_number.finish()),
            Arc::new(self.voided.finish()),
            Arc::new(self.version.finish()),
            Arc::new(self.updated_at.finish()),
            Arc::new(self.seq.finish()),
        ]
    }
}

impl DoseTable {
    /// The schema of the doses table.
    pub fn schema() -> Schema {
        Schema::new(vec![
            string("dose_id", false),
            string("municipality", false),
            string("voucher_number", false),
            Field::new("ticket_kind", DataType::UInt8, false),
            Field::new("dose_number", DataType::UInt8, false),
            date("date_given", false),
            timestamp("registered_at"),
            string("registered_by", false),
            string("administering_municipality", false),
            string("site_id", false),
            string("site_name", false),
            string("doctor", false),
            string("product", false),
            string("maker", false),
            string("lot", false),
            date("lot_expiry", true),
            string("resident_municipality", true),
            string("addressee_number", true),
            Field::new("voided", DataType::Boolean, false),
            Field::new("version", DataType::UInt32, false),
            timestamp("updated_at"),
            Field::new("seq", DataType::UInt64, false),
        ])
    }

    /// An empty builder.
    pub fn new() -> Self {
        Self(Batches::new(
            Self::schema(),
            DoseRows {
                dose_id: strings(false),
                municipality: strings(false),
                voucher_number: strings(false),
                ticket_kind: UInt8Builder::with_capacity(BATCH_ROWS),
                dose_number: UInt8Builder::with_capacity(BATCH_ROWS),
                date_given: Date32Builder::with_capacity(BATCH_ROWS),
                registered_at: ts(),
                registered_by: strings(true),
                administering_municipality: strings(false),
                site_id: strings(true),
                site_name: strings(true),
                doctor: strings(true),
                product: strings(true),
                maker: strings(true),
                lot: strings(true),
                lot_expiry: Date32Builder::with_capacity(BATCH_ROWS),
                resident_municipality: strings(false),
                addressee_number: strings(false),
                voided: BooleanBuilder::with_capacity(BATCH_ROWS),
                version: UInt32Builder::with_capacity(BATCH_ROWS),
                updated_at: ts(),
                seq: UInt64Builder::with_capacity(BATCH_ROWS),
            },
        ))
    }

    /// Appends one dose.
    pub fn push(&mut self, r: &DoseRecord) -> Result<()> {
        let rows = &mut self.0.rows;
        let current = r.current();
        let d = &current.details;
        rows.dose_id.append_value(r.id.to_string());
        rows.municipality.append_value(r.voucher.municipality.as_str());
        rows.voucher_number.append_value(r.voucher.number.as_str());
        rows.ticket_kind.append_value(r.ticket_kind);
        rows.dose_number.append_value(d.dose_number);
        rows.date_given.append_value(days(d.date_given));
        rows.registered_at.append_value(micros(r.registered_at));
        rows.registered_by.append_value(r.registered_by.as_str());
        rows.administering_municipality.append_value(d.administering_municipality.as_str());
        rows.site_id.append_value(d.site.as_str());
        rows.site_name.append_value(&d.site_name);
        rows.doctor.append_value(&d.doctor);
        rows.product.append_value(d.product.as_str());
        rows.maker.append_value(&d.maker);
        rows.lot.append_value(&d.lot);
        rows.lot_expiry.append_option(d.lot_expiry.map(days));
        rows.resident_municipality.append_option(r.matched.as_ref().map(|p| p.municipality.as_str()));
        rows.addressee_number.append_option(r.matched.as_ref().map(|p| p.addressee.as_str()));
        rows.voided.append_value(current.voided);
        rows.version.append_value(current.version);
        rows.updated_at.append_value(micros(current.recorded_at));
        rows.seq.append_value(r.seq);
        self.0.after_push()
    }

    /// The table; `cursor` is what a `since=` read returns for the next one.
    pub fn finish(self, cursor: Option<u64>) -> Result<Table> {
        self.0.finish(cursor)
    }
}

// ---- residents ---------------------------------------------------------------------------

/// Builds the residents table: one row per uploaded resident. The personal-number hash
/// is never exported.
pub struct ResidentTable(Batches<ResidentRows>);

struct ResidentRows {
    municipality: StringViewBuilder,
    addressee_number: StringViewBuilder,
    voucher_number: StringViewBuilder,
    name: StringViewBuilder,
    name_kana: StringViewBuilder,
    birth_date: Date32Builder,
    sex: StringViewBuilder,
    address: StringViewBuilder,
    previous_municipality: StringViewBuilder,
    previous_voucher_number: StringViewBuilder,
    status: StringViewBuilder,
    status_date: Date32Builder,
}

impl Rows for ResidentRows {
    fn pending(&self) -> usize {
        self.birth_date.len()
    }
    fn columns(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.municipality.finish()),
            Arc::new(self.addressee_number.finish()),
            Arc::new(self.voucher_number.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.name_kana.finish()),
            Arc::new(self.birth_date.finish()),
            Arc::new(self.sex.finish()),
            Arc::new(self.address.finish()),
            Arc::new(self.previous_municipality.finish()),
            Arc::new(self.previous_voucher_number.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.status_date.finish()),
        ]
    }
}

impl ResidentTable {
    /// The schema of the residents table.
    pub fn schema() -> Schema {
        Schema::new(vec![
            string("municipality", false),
            string("addressee_number", false),
            string("voucher_number", false),
            string("name", false),
            string("name_kana", false),
            date("birth_date", false),
            string("sex", false),
            string("address", true),
            string("previous_municipality", true),
            string("previous_voucher_number", true),
            string("status", false),
            date("status_date", true),
        ])
    }

    /// An empty builder.
    pub fn new() -> Self {
        Self(Batches::new(
            Self::schema(),
            ResidentRows {
                municipality: strings(false),
                addressee_number: strings(false),
                voucher_number: strings(false),
                name: strings(false),
                name_kana: strings(false),
                birth_date: Date32Builder::with_capacity(BATCH_ROWS),
                sex: strings(false),
                address: strings(false),
                previous_municipality: strings(false),
                previous_voucher_number: strings(false),
                status: strings(false),
                status_date: Date32Builder::with_capacity(BATCH_ROWS),
            },
        ))
    }

    /// Appends one resident.
    pub fn push(&mut self, r: &Resident) -> Result<()> {
        let rows = &mut self.0.rows;
        rows.municipality.append_value(r.person.municipality.as_str());
        rows.addressee_number.append_value(r.person.addressee.as_str());
        rows.voucher_number.append_value(r.voucher.as_str());
        rows.name.append_value(r.name.as_str());
        rows.name_kana.append_value(r.name_kana.as_str());
        rows.birth_date.append_value(days(r.birth_date));
        rows.sex.append_value(r.sex.letter());
        rows.address.append_option(r.address.as_ref().map(|a| a.as_str()));
        rows.previous_municipality.append_option(r.previous.as_ref().map(|v| v.municipality.as_str()));
        rows.previous_voucher_number.append_option(r.previous.as_ref().map(|v| v.number.as_str()));
        rows.status.append_value(r.status.as_str());
        rows.status_date.append_option(r.status_date.map(days));
        self.0.after_push()
    }

    /// The table.
    pub fn finish(self) -> Result<Table> {
        self.0.finish(None)
    }
}

// ---- statistics --------------------------------------------------------------------------

/// The statistics table: one row per group with its count.
pub fn stats_table(rows: &[StatsRow]) -> Result<Table> {
    let schema = Schema::new(vec![
        string("municipality", false),
        string("prefecture", false),
        date("date", false),
        Field::new("dose_number", DataType::UInt8, false),
        string("sex", false),
        string("age_band", false),
        string("product", false),
        Field::new("count", DataType::UInt64, false),
    ]);
    let mut municipality = strings(false);
    let mut prefecture = strings(false);
    let mut day = Date32Builder::with_capacity(rows.len());
    let mut dose_number = UInt8Builder::with_capacity(rows.len());
    let mut sex = strings(false);
    let mut age_band = strings(false);
    let mut product = strings(true);
    let mut count = UInt64Builder::with_capacity(rows.len());
    for r in rows {
        let k = &r.key;
        municipality.append_value(k.municipality.as_str());
        prefecture.append_value(k.municipality.prefecture_code());
        day.append_value(days(k.date));
        dose_number.append_value(k.dose_number);
        sex.append_value(k.sex.letter());
        age_band.append_value(k.age_band.label());
        product.append_value(k.product.as_str());
        count.append_value(r.count);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(municipality.finish()),
        Arc::new(prefecture.finish()),
        Arc::new(day.finish()),
        Arc::new(dose_number.finish()),
        Arc::new(sex.finish()),
        Arc::new(age_band.finish()),
        Arc::new(product.finish()),
        Arc::new(count.finish()),
    ];
    let schema = Arc::new(schema);
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(arrow_error)?;
    Ok(Table::new(schema, vec![batch], None))
}
