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
//! The store decodes its records straight into columns ([`vrs_core::columns`]) whose
//! vectors already have Arrow's layouts, at most [`BATCH_ROWS`] rows at a time (a redb
//! store decodes chunks of its range on several threads); a [`Batcher`] hands each column
//! to Arrow as a buffer, on threads of its own (past its first 2M rows, a residents table
//! on the calling thread, so that it lives in the heap glibc keeps: see
//! [`Batcher::on_caller_after`]), while the store decodes the next rows. The table is the record batches in the store's order.
//! Memory stays close to the size of the Arrow data itself.

use std::sync::{Arc, mpsc};
use std::thread;

use arrow_array::builder::{Date32Builder, StringViewBuilder, UInt8Builder, UInt64Builder};
use arrow_array::ffi_stream::FFI_ArrowArrayStream;
use arrow_array::{
    ArrayRef, BooleanArray, Date32Array, RecordBatch, RecordBatchIterator, StringArray, StringViewArray, TimestampMicrosecondArray,
    UInt8Array, UInt32Array, UInt64Array,
};
use arrow_buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::ffi::FFI_ArrowSchema;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use pyo3::prelude::*;
use pyo3::types::PyCapsule;
use vrs_core::Result;
use vrs_core::columns::{DateColumn, DoseColumns, ResidentColumns, TextColumn, TextParts, Validity, epoch_days};
use vrs_core::stats::StatsRow;

use crate::errors::{StorageError, arrow as arrow_error};

/// Rows per record batch.
pub const BATCH_ROWS: usize = 1 << 16;

/// Rows of a residents table built on threads of their own before the rest is built on
/// the calling thread (see [`Batcher::on_caller_after`]): 2M, about 0.5 GB of table.
pub const CALLER_AFTER_ROWS: usize = 1 << 21;

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

/// A string column builder (for the small statistics table).
fn strings(repeated: bool) -> StringViewBuilder {
    let b = StringViewBuilder::new();
    if repeated { b.with_deduplicate_strings() } else { b }
}

// ---- doses -------------------------------------------------------------------------------

/// The doses table: one row per dose, as it stands now (voided ones included, flagged);
/// `version` counts its corrections.
pub struct DoseTable;

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
}

// ---- residents ---------------------------------------------------------------------------

/// The residents table: one row per uploaded resident. The personal-number hash is never
/// exported.
pub struct ResidentTable;

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
        day.append_value(epoch_days(k.date));
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

// ---- columns -----------------------------------------------------------------------------
// Columns decoded by the store ([`vrs_core::columns`]) become Arrow arrays without a copy:
// their vectors are already Arrow's layouts (views over one byte buffer, day numbers,
// microseconds), so each is handed over as a buffer.

fn nulls(validity: Validity) -> Option<NullBuffer> {
    validity.into_flags().map(NullBuffer::from)
}

/// Where the decoded vectors that a batch hands to Arrow as they are (views checked in
/// place, text bytes, day numbers) should live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Heap {
    /// Where the store decoded them (its scan threads' heaps).
    Decoded,
    /// In the heap of the thread building the batch, copied there: with
    /// [`Batcher::on_caller_after`], the caller's heap, which glibc keeps for the next read
    /// when the table is dropped, while it hands an emptied scan-thread heap back to the
    /// system (and the next read faults its pages in again, each zeroed by the kernel). A
    /// copy costs less than those faults.
    Builder,
}

impl Heap {
    fn place<T: Copy>(self, v: Vec<T>) -> Vec<T> {
        match self {
            Heap::Decoded => v,
            Heap::Builder => v.as_slice().to_vec(),
        }
    }
}

fn text_array(column: TextColumn, heap: Heap) -> Result<ArrayRef> {
    let array = match column.into_parts() {
        TextParts::Views { views, bytes, validity } => view_array(views, bytes, validity, heap)?,
        TextParts::Contiguous { offsets, bytes, validity } if bytes.is_ascii() => {
            // ASCII (ids, codes): Arrow's own check of the whole buffer is quick here, and the
            // views then point into that buffer (placed as `heap` says, else not copied).
            let bytes = heap.place(bytes);
            if offsets.first() != Some(&0) || offsets.windows(2).any(|w| w[0] > w[1]) {
                return Err(arrow_error("text offsets out of order"));
            }
            let strings = StringArray::try_new(OffsetBuffer::new(ScalarBuffer::from(offsets)), Buffer::from_vec(bytes), nulls(validity))
                .map_err(arrow_error)?;
            StringViewArray::from(&strings)
        }
        TextParts::Contiguous { offsets, bytes, validity } => {
            // The whole buffer's UTF-8 is checked once, with SIMD (simdutf8: names and
            // addresses are Japanese, which std's check, per value in
            // `StringViewArray::try_new` or whole in `StringArray::try_new`, takes nearly a
            // byte at a time: a quarter of a residents read). Each value is then a slice of
            // checked text, which the builder takes without checking it again.
            let text = simdutf8::basic::from_utf8(&bytes).map_err(|_| arrow_error("a stored text is not UTF-8"))?;
            let block = u32::try_from(bytes.len().max(1)).map_err(arrow_error)?;
            let rows = offsets.len().saturating_sub(1);
            let mut builder = StringViewBuilder::with_capacity(rows).with_fixed_block_size(block);
            // The values lie one after another: each is cut off the front of the rest (a
            // character boundary checked once per value, not at both of its ends).
            if offsets.first().is_some_and(|&o| o != 0) {
                return Err(arrow_error("text offsets out of order"));
            }
            let (mut rest, mut at) = (text, 0);
            for (row, &end) in offsets.iter().skip(1).enumerate() {
                let len =
                    end.checked_sub(at).and_then(|l| usize::try_from(l).ok()).ok_or_else(|| arrow_error("text offsets out of order"))?;
                let (value, tail) = rest.split_at_checked(len).ok_or_else(|| arrow_error("a text offset off a character boundary"))?;
                (rest, at) = (tail, end);
                if validity.is_valid(row) {
                    builder.try_append_value(value).map_err(arrow_error)?;
                } else {
                    builder.append_null();
                }
            }
            builder.finish()
        }
    };
    Ok(Arc::new(array))
}

/// A column held as views (codes) as a `string_view` array.
///
/// `StringViewArray::try_new` checks each view's UTF-8 on its own, a call per value that
/// cost a fifth of a residents read. Many code columns are long runs of one value (the
/// municipality read; a status; a previous municipality, mostly missing): those are built
/// a run at a time, the run's value checked once and its view repeated. Other columns go
/// to Arrow's check: a builder per value costs more than the check it saves, and so does
/// laying the inline values end to end, checking them once as a `StringArray` and
/// converting that (callgrind, a 1M residents read: +10M and +22M instructions on ~1.25G).
fn view_array(views: Vec<u128>, bytes: Vec<u8>, validity: Validity, heap: Heap) -> Result<StringViewArray> {
    let valid = |row: usize| validity.is_valid(row);
    // Runs of equal views (and validity), counted until there are too many (a column of
    // distinct values is given up after an eighth of it); every value is inline when
    // `bytes` is empty.
    let limit = views.len() / RUN_SHARE;
    let mut runs = 1;
    let few = bytes.is_empty()
        && views.windows(2).enumerate().all(|(i, w)| {
            runs += usize::from(w[0] != w[1] || valid(i) != valid(i + 1));
            runs <= limit
        });
    if !few || runs > limit {
        let buffers = if bytes.is_empty() { Vec::new() } else { vec![Buffer::from_vec(heap.place(bytes))] };
        return StringViewArray::try_new(ScalarBuffer::from(heap.place(views)), buffers, nulls(validity)).map_err(arrow_error);
    }
    let mut builder = StringViewBuilder::with_capacity(views.len());
    let mut row = 0;
    while let Some(&view) = views.get(row) {
        let held = valid(row);
        let run = views[row..].iter().enumerate().take_while(|&(i, &v)| v == view && valid(row + i) == held).count();
        if held {
            let len = view as u32 as usize;
            let inline = view.to_le_bytes();
            let value = inline.get(4..4 + len).ok_or_else(|| arrow_error("a code longer than its view"))?;
            let value = std::str::from_utf8(value).map_err(|_| arrow_error("a stored text is not UTF-8"))?;
            builder.try_append_value_n(value, run).map_err(arrow_error)?;
        } else {
            (0..run).for_each(|_| builder.append_null());
        }
        row += run;
    }
    Ok(builder.finish())
}

/// A views column is built a run at a time when it has at most one run per this many rows.
const RUN_SHARE: usize = 8;

fn date_array(column: DateColumn, heap: Heap) -> ArrayRef {
    let (days, validity) = column.into_parts();
    Arc::new(Date32Array::new(ScalarBuffer::from(heap.place(days)), nulls(validity)))
}

fn timestamp_array(micros: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::new(ScalarBuffer::from(micros), None).with_timezone(TIME_ZONE))
}

/// The doses table's record batch of a batch of dose columns (schema [`DoseTable::schema`]).
pub fn dose_batch(schema: &SchemaRef, c: DoseColumns) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        text_array(c.dose_id, Heap::Decoded)?,
        text_array(c.municipality, Heap::Decoded)?,
        text_array(c.voucher_number, Heap::Decoded)?,
        Arc::new(UInt8Array::new(ScalarBuffer::from(c.ticket_kind), None)),
        Arc::new(UInt8Array::new(ScalarBuffer::from(c.dose_number), None)),
        date_array(c.date_given, Heap::Decoded),
        timestamp_array(c.registered_at),
        text_array(c.registered_by, Heap::Decoded)?,
        text_array(c.administering_municipality, Heap::Decoded)?,
        text_array(c.site_id, Heap::Decoded)?,
        text_array(c.site_name, Heap::Decoded)?,
        text_array(c.doctor, Heap::Decoded)?,
        text_array(c.product, Heap::Decoded)?,
        text_array(c.maker, Heap::Decoded)?,
        text_array(c.lot, Heap::Decoded)?,
        date_array(c.lot_expiry, Heap::Decoded),
        text_array(c.resident_municipality, Heap::Decoded)?,
        text_array(c.addressee_number, Heap::Decoded)?,
        Arc::new(BooleanArray::from(c.voided)),
        Arc::new(UInt32Array::new(ScalarBuffer::from(c.version), None)),
        timestamp_array(c.updated_at),
        Arc::new(UInt64Array::new(ScalarBuffer::from(c.seq), None)),
    ];
    RecordBatch::try_new(schema.clone(), columns).map_err(arrow_error)
}

/// The residents table's record batch of a batch of resident columns (schema
/// [`ResidentTable::schema`]).
pub fn resident_batch(schema: &SchemaRef, c: ResidentColumns) -> Result<RecordBatch> {
    resident_batch_in(schema, c, Heap::Decoded)
}

/// [`resident_batch`] for the caller's thread ([`Batcher::on_caller_after`]): the decoded
/// vectors Arrow takes as they are are copied into its heap first.
pub fn resident_batch_here(schema: &SchemaRef, c: ResidentColumns) -> Result<RecordBatch> {
    resident_batch_in(schema, c, Heap::Builder)
}

fn resident_batch_in(schema: &SchemaRef, c: ResidentColumns, heap: Heap) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        text_array(c.municipality, heap)?,
        text_array(c.addressee_number, heap)?,
        text_array(c.voucher_number, heap)?,
        text_array(c.name, heap)?,
        text_array(c.name_kana, heap)?,
        date_array(c.birth_date, heap),
        text_array(c.sex, heap)?,
        text_array(c.address, heap)?,
        text_array(c.previous_municipality, heap)?,
        text_array(c.previous_voucher_number, heap)?,
        text_array(c.status, heap)?,
        date_array(c.status_date, heap),
    ];
    RecordBatch::try_new(schema.clone(), columns).map_err(arrow_error)
}

/// Record batches with the position of their columns in the scan.
type Numbered = Vec<(usize, RecordBatch)>;

/// Builds the record batch of a batch of columns.
type Build<T> = fn(&SchemaRef, T) -> Result<RecordBatch>;

/// When a [`Batcher`] builds on the caller's thread ([`Batcher::on_caller_after`]).
struct Switch<T> {
    /// Builds a batch on the caller's thread.
    build: Build<T>,
    /// The rows of a batch of columns.
    len: fn(&T) -> usize,
    /// Rows still to hand to the threads before the caller builds the rest.
    rows_left: usize,
}

/// Builds record batches on a few threads of their own as a scan hands over its columns,
/// so that wrapping them for Arrow (checking text, views) runs beside the scan and on
/// every core instead of on the one thread that receives them; past a number of rows, if
/// made with [`on_caller_after`](Self::on_caller_after), on that thread. Batches come back
/// in the order they were pushed.
pub struct Batcher<T> {
    schema: SchemaRef,
    senders: Vec<mpsc::Sender<(usize, T)>>,
    threads: Vec<thread::JoinHandle<Result<Numbered>>>,
    pushed: usize,
    /// The batches built on the caller's thread, or the first error building one.
    here: Result<Numbered>,
    switch: Option<Switch<T>>,
}

impl<T: Send + 'static> Batcher<T> {
    /// Starts the threads (the machine's parallelism, 1 to 4), each building batches of
    /// `schema` with `build`.
    pub fn new(schema: &SchemaRef, build: Build<T>) -> Result<Self> {
        let n = thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4);
        let (mut senders, mut threads) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let (tx, rx) = mpsc::channel::<(usize, T)>();
            let schema = schema.clone();
            let work = move || rx.into_iter().map(|(i, c)| Ok((i, build(&schema, c)?))).collect();
            let spawned =
                thread::Builder::new().name("vrs-arrow".into()).spawn(work).map_err(|e| arrow_error(format!("starting a thread: {e}")))?;
            senders.push(tx);
            threads.push(spawned);
        }
        Ok(Self { schema: schema.clone(), senders, threads, pushed: 0, here: Ok(Vec::new()), switch: None })
    }

    /// Hands the threads the batches of the first `rows` rows (at least; `len` counts a
    /// batch's rows) and builds the rest, with `build_here`, on the thread that pushes
    /// them, as they are pushed, so that their buffers are allocated in that thread's heap.
    ///
    /// Why: glibc hands a thread's own heap (an arena of 64 MiB mappings) back to the
    /// system as soon as it is empty, which dropping a table of millions of rows does; the
    /// next read then faults every page of its table in again, each zeroed by the kernel
    /// (10M residents: 0.6M faults and 1.0-1.4 s of system CPU per read, a third of its
    /// CPU). The caller's heap (Python's main thread: glibc's main arena) keeps freed
    /// memory for the next read, or for pandas. But the caller builds on one core: a small
    /// table, whose faults cost less, is built faster on every core.
    pub fn on_caller_after(mut self, rows: usize, len: fn(&T) -> usize, build_here: Build<T>) -> Self {
        self.switch = Some(Switch { build: build_here, len, rows_left: rows });
        self
    }

    /// Hands over the next columns (in turn to each thread, or built here: see
    /// [`on_caller_after`](Self::on_caller_after)).
    pub fn push(&mut self, columns: T) {
        let i = self.pushed;
        self.pushed += 1;
        if let Some(switch) = &mut self.switch {
            if switch.rows_left == 0 {
                if let Ok(built) = &mut self.here {
                    match (switch.build)(&self.schema, columns) {
                        Ok(b) => built.push((i, b)),
                        Err(e) => self.here = Err(e),
                    }
                }
                return;
            }
            switch.rows_left = switch.rows_left.saturating_sub((switch.len)(&columns));
        }
        // A thread that stopped on an error has dropped its receiver: `finish` reports it.
        let _ = self.senders[i % self.senders.len()].send((i, columns));
    }

    /// Waits for every batch and returns them in the order pushed.
    pub fn finish(self) -> Result<Vec<RecordBatch>> {
        drop(self.senders);
        let mut batches = Vec::with_capacity(self.pushed);
        for t in self.threads {
            batches.extend(t.join().map_err(|_| arrow_error("a thread building record batches panicked"))??);
        }
        batches.extend(self.here?);
        batches.sort_unstable_by_key(|(i, _)| *i);
        if batches.len() != self.pushed {
            return Err(arrow_error("a record batch went missing"));
        }
        Ok(batches.into_iter().map(|(_, b)| b).collect())
    }
}

/// A table of record batches already built.
pub fn table(schema: SchemaRef, batches: Vec<RecordBatch>, cursor: Option<u64>) -> Table {
    Table::new(schema, batches, cursor)
}
