//! The shared vrs store: [`vrs_core::store::StoreBackend`] on PostgreSQL 15+ through
//! [sqlx](https://docs.rs/sqlx), for a deployment where many sites and municipalities
//! write to one database.
//!
//! - **Schema**: sqlx migrations in `migrations/` (plain tables) or
//!   `migrations/partitioned/` (the big tables hash-partitioned by the issuing
//!   municipality), applied by [`PostgresStore::connect`] and [`PostgresStore::migrate`].
//!   Every table of a municipality's data leads with its municipality code. The crate's
//!   README tells how to distribute the tables on Citus.
//! - **Writes**: a call of [`StoreBackend::apply`] is one statement, so one transaction;
//!   its guards (new dose ids, revisions, dose slots) are unique keys and conditional
//!   writes, and a guard that fails is [`Error::Conflict`], which the service retries.
//!   The store holds no rule of its own: what to write is decided by vrs-core.
//! - **Imports** stream through `COPY` into a staging table and merge in one statement,
//!   in one transaction: atomic, and simply run again after a failure.
//! - **Scans** (exports) read through a server-side cursor, a thousand rows at a time.
//!
//! The store needs a tokio runtime (sqlx's); the I/O and timers of the runtime must be
//! enabled (`Builder::enable_all`).
//!
//! ```no_run
//! # async fn example() -> vrs_core::Result<()> {
//! use std::sync::Arc;
//! use vrs_store_postgres::{Layout, Options, PostgresStore};
//!
//! // Plain tables in the default schema, migrated on connect:
//! let store = PostgresStore::connect("postgres://vrs@localhost/vrs").await?;
//! // Or the partitioned layout in a schema of its own:
//! let options = Options { layout: Some(Layout::Partitioned), schema: Some("national".into()), ..Options::default() };
//! let partitioned = PostgresStore::connect_with("postgres://vrs@localhost/vrs", options).await?;
//! let store: vrs_core::store::DynStore = Arc::new(store);
//! # let _ = (store, partitioned);
//! # Ok(())
//! # }
//! ```

mod apply;
mod codec;
mod conn;
mod context;
mod error;
mod import;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::NaiveDate;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use vrs_core::access::TabletAccount;
use vrs_core::dose::DoseRecord;
use vrs_core::finding::Finding;
use vrs_core::ids::{AccountId, DoseId, MunicipalityCode, PersonRef, SiteId, VoucherRef};
use vrs_core::resident::Resident;
use vrs_core::stats::{StatsKey, StatsQuery, StatsRow};
use vrs_core::store::{
    Applied, AuditEvent, ChangeSet, DoseScan, ImportApplied, PersonContext, PersonQuery, ResidentSource, StoreBackend, Visit,
};
use vrs_core::vaccine::ProductCode;
use vrs_core::{Error, Result};

use crate::codec::{RESIDENT_COLUMNS, addressee_len, col, record};
use crate::conn::Conns;
use crate::error::{db, map, storage_message};

/// Rows fetched from a scan's cursor at a time.
const SCAN_CHUNK: usize = 1000;

/// How the tables are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// One table each (migrations/).
    Plain,
    /// The big tables (residents, doses, dose ids, slots, findings, counters, audit)
    /// hash-partitioned by municipality code, dose ids by id (migrations/partitioned/).
    Partitioned,
}

impl Layout {
    /// `plain` or `partitioned`, as recorded in the schema's `vrs_meta` table.
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Plain => "plain",
            Layout::Partitioned => "partitioned",
        }
    }

    /// Parses [`Layout::as_str`].
    pub fn parse(text: &str) -> Option<Layout> {
        match text {
            "plain" => Some(Layout::Plain),
            "partitioned" => Some(Layout::Partitioned),
            _ => None,
        }
    }

    fn migrator(self) -> sqlx::migrate::Migrator {
        match self {
            Layout::Plain => sqlx::migrate!("./migrations"),
            Layout::Partitioned => sqlx::migrate!("./migrations/partitioned"),
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to connect.
#[derive(Clone, Debug)]
pub struct Options {
    /// The layout wanted. `None` takes the layout the schema already has, or
    /// [`Layout::Plain`] for an empty one; `Some` of another layout than the schema's is
    /// an error (the data would have to be moved, which this store does not do).
    pub layout: Option<Layout>,
    /// The schema to keep the tables in (created when missing); `None` for the
    /// connection's default `search_path` (usually `public`). Lowercase ASCII letters,
    /// digits and `_`, at most 63, not starting with a digit.
    pub schema: Option<String>,
    /// Connections in the pool.
    pub max_connections: u32,
    /// `application_name` of the connections (shown in `pg_stat_activity`).
    pub application_name: String,
    /// Whether to apply pending migrations when connecting. Without, a schema that is
    /// not migrated is an error.
    pub migrate: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { layout: None, schema: None, max_connections: 16, application_name: "vrs".into(), migrate: true }
    }
}

/// The PostgreSQL store. Cheap to clone (the connections are shared); `Send + Sync`.
#[derive(Clone)]
pub struct PostgresStore {
    conns: Arc<Conns>,
    layout: Layout,
}

/// A query with its arguments bound.
type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore").field("layout", &self.layout).finish_non_exhaustive()
    }
}

/// What [`PostgresStore::check`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    /// The schema's layout.
    pub layout: Layout,
    /// Migrations applied to the schema.
    pub migrations_applied: usize,
    /// Migrations this build knows.
    pub migrations_known: usize,
    /// Dose records whose id is not in the id index, or the other way round (0 when sound).
    pub orphan_dose_ids: u64,
}

impl CheckReport {
    /// Whether everything is in order.
    pub fn is_clean(&self) -> bool {
        self.migrations_applied == self.migrations_known && self.orphan_dose_ids == 0
    }
}

fn check_schema_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid {
            field: "schema",
            value: name.chars().take(64).collect(),
            reason: "must be 1 to 63 characters of a-z, 0-9 and '_', not starting with a digit".into(),
        })
    }
}

/// Takes the store's own `schema` parameter out of a URL's query string (sqlx would ignore
/// it): `postgres://host/db?schema=tokyo` → (`postgres://host/db`, `Some("tokyo")`).
fn split_schema_param(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else { return (url.to_owned(), None) };
    let mut schema = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some(("schema", value)) => {
                schema = Some(value.to_owned());
                false
            }
            _ => !pair.is_empty(),
        })
        .collect();
    if kept.is_empty() { (base.to_owned(), schema) } else { (format!("{base}?{}", kept.join("&")), schema) }
}

/// The connect options of a URL, with the schema, application name and our settings;
/// also the schema in effect (the options', else the URL's `schema` parameter).
fn connect_options(url: &str, options: &Options) -> Result<(PgConnectOptions, Option<String>)> {
    let (url, url_schema) = split_schema_param(url);
    let mut connect = PgConnectOptions::from_str(&url).map_err(|e| Error::Invalid {
        field: "store",
        value: redact_url(&url),
        reason: format!("not a PostgreSQL URL: {e}"),
    })?;
    let schema = options.schema.clone().or(url_schema);
    if let Some(schema) = &schema {
        check_schema_name(schema)?;
        connect = connect.options([("search_path", schema.as_str())]);
    }
    // The store's statements are prepared once per connection and run thousands of times
    // with small arrays; left to choose, the server keeps planning them afresh (its generic
    // plan guesses arrays of many rows, so it looks dearer than a custom one), which cost a
    // registration's context read ~9 ms of planning for ~1 ms of work. Unnamed one-off
    // statements (the scans' cursors) are still planned for their values.
    connect = connect.options([("plan_cache_mode", "force_generic_plan")]);
    Ok((connect.application_name(&options.application_name), schema))
}

/// A URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme + 3], &userinfo[..colon], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`),
    /// applying pending migrations: see [`Options::default`].
    ///
    /// Fails with [`Error::Storage`] when the server cannot be reached or the schema was
    /// migrated by an incompatible build, [`Error::Invalid`] for a malformed URL.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, Options::default()).await
    }

    /// Connects with options (layout, schema, pool size). The URL may name the schema
    /// with a `schema` query parameter (`postgres://host/db?schema=tokyo`), used when
    /// [`Options::schema`] is `None`.
    pub async fn connect_with(url: &str, options: Options) -> Result<Self> {
        let (connect, schema) = connect_options(url, &options)?;
        // One connection to set up: the schema must exist before `search_path` can put
        // tables in it, and the migrations run before the store is used.
        let mut conn = sqlx::PgConnection::connect_with(&connect).await.map_err(|e| unreachable(url, e))?;
        if let Some(schema) = &schema {
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .execute(&mut conn)
                .await
                .map_err(db("creating the store's schema"))?;
        }
        let layout = if options.migrate { migrate(&mut conn, options.layout).await? } else { existing_layout(&mut conn).await? };
        let _ = conn.close().await;
        let conns = Arc::new(Conns::new(connect, options.max_connections, redact_url(url)));
        match (layout, options.layout) {
            (Some(layout), None) => Ok(Self { conns, layout }),
            (Some(layout), Some(wanted)) if layout == wanted => Ok(Self { conns, layout }),
            (Some(layout), Some(wanted)) => Err(storage_message(format!(
                "the schema has the {layout} layout, not the {wanted} one asked for: use a schema of its own for each layout"
            ))),
            (None, _) => Err(storage_message("the schema is not migrated: run `vrs migrate` (or connect with migrations on)")),
        }
    }

    /// Drops the schema named by `options` (or the URL's `schema` parameter) with
    /// everything in it, then connects to it afresh: for demonstrations and tests. Refuses
    /// when no schema is named (it never drops the default one).
    pub async fn connect_fresh(url: &str, options: Options) -> Result<Self> {
        let (connect, schema) = connect_options(url, &options)?;
        let Some(schema) = schema else {
            return Err(Error::Invalid {
                field: "schema",
                value: String::new(),
                reason: "a fresh store needs a schema of its own to wipe (add ?schema=NAME to the URL)".into(),
            });
        };
        drop_schema(url, &connect, &schema).await?;
        Self::connect_with(url, Options { schema: Some(schema), ..options }).await
    }

    /// Drops a schema with every table in it (when it exists): for demonstrations and
    /// tests that start over.
    pub async fn drop_schema(url: &str, schema: &str) -> Result<()> {
        let (connect, _) = connect_options(url, &Options { schema: Some(schema.to_owned()), ..Options::default() })?;
        drop_schema(url, &connect, schema).await
    }

    /// Applies pending migrations to the database at `url` (the layout and schema of
    /// `options`) and returns the schema's layout. [`PostgresStore::connect`] does the
    /// same; this is `vrs migrate`.
    pub async fn migrate(url: &str, options: Options) -> Result<Layout> {
        let store = Self::connect_with(url, Options { migrate: true, max_connections: 1, ..options }).await?;
        store.close().await;
        Ok(store.layout)
    }

    /// The schema's layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Closes the store's connections; calls made afterwards fail.
    pub async fn close(&self) {
        self.conns.close().await;
    }

    /// Runs one query on a connection of the store and returns its rows.
    async fn fetch_all(&self, what: &'static str, query: Query<'_>) -> Result<Vec<PgRow>> {
        let mut c = self.conns.get().await?;
        let rows = query.fetch_all(&mut *c).await;
        c.check(rows).map_err(db(what))
    }

    /// Runs one query on a connection of the store and returns its row, if any.
    async fn fetch_optional(&self, what: &'static str, query: Query<'_>) -> Result<Option<PgRow>> {
        let mut c = self.conns.get().await?;
        let row = query.fetch_optional(&mut *c).await;
        c.check(row).map_err(db(what))
    }

    /// Runs one query on a connection of the store and returns its one row.
    async fn fetch_one(&self, what: &'static str, query: Query<'_>) -> Result<PgRow> {
        let mut c = self.conns.get().await?;
        let row = query.fetch_one(&mut *c).await;
        c.check(row).map_err(db(what))
    }

    /// Checks the schema: every migration this build knows is applied, and the dose id
    /// index matches the doses.
    pub async fn check(&self) -> Result<CheckReport> {
        let migrator = self.layout.migrator();
        let row = self
            .fetch_one("reading the applied migrations", sqlx::query("SELECT count(*) AS n FROM _sqlx_migrations WHERE success"))
            .await?;
        let applied: i64 = col(&row, "n")?;
        let query = sqlx::query(
            "SELECT (SELECT count(*) FROM doses AS d WHERE NOT EXISTS (SELECT 1 FROM dose_ids AS k WHERE k.id = d.id AND k.municipality = d.municipality))
                  + (SELECT count(*) FROM dose_ids AS k WHERE NOT EXISTS (SELECT 1 FROM doses AS d WHERE d.id = k.id AND d.municipality = k.municipality)) AS n",
        );
        let orphans: i64 = col(&self.fetch_one("checking the dose id index", query).await?, "n")?;
        Ok(CheckReport {
            layout: self.layout,
            migrations_applied: usize::try_from(applied).unwrap_or(0),
            migrations_known: migrator.iter().count(),
            orphan_dose_ids: u64::try_from(orphans).unwrap_or(0),
        })
    }

    /// Runs `select` through a server-side cursor, handing every row to `visit` after
    /// `seen`; stops at the first error (the transaction ends, which drops the cursor).
    async fn scan<T>(
        &self,
        what: &'static str,
        select: Query<'_>,
        decode: impl Fn(&PgRow) -> Result<T> + Send,
        visit: Visit<'_, T>,
        mut seen: impl FnMut(&T) + Send,
    ) -> Result<()> {
        let mut c = self.conns.get().await?;
        let mut tx = c.begin().await.map_err(db(what))?;
        select.persistent(false).execute(&mut *tx).await.map_err(db(what))?;
        loop {
            // Not a prepared statement: its columns are those of whichever cursor is open.
            let rows = sqlx::query(FETCH).persistent(false).fetch_all(&mut *tx).await.map_err(db(what))?;
            for row in &rows {
                let value = decode(row)?;
                seen(&value);
                // A visitor's error ends the scan; the transaction rolls back (which closes
                // the cursor) before the connection's next use.
                visit(value)?;
            }
            if rows.len() < SCAN_CHUNK {
                break;
            }
        }
        let committed = tx.commit().await;
        c.check(committed).map_err(db(what))
    }

    /// The highest sequence number of `m`'s dose writes that is certainly committed: taken
    /// under the municipality's advisory lock, which waits for every write in flight (they
    /// hold it shared while they take their numbers and until they commit).
    async fn committed_bound(&self, m: &MunicipalityCode) -> Result<u64> {
        let row = sqlx::query(
            "WITH l AS MATERIALIZED (SELECT pg_advisory_xact_lock($1, $2)::text AS x)
             SELECT (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM dose_seq WHERE l.x IS NOT NULL) AS bound FROM l",
        )
        .bind(apply::LOCK_SPACE)
        .bind(codec::municipality_number(m));
        let bound: i64 = col(&self.fetch_one("waiting for dose writes in flight", row).await?, "bound")?;
        Ok(u64::try_from(bound).unwrap_or(0))
    }

    async fn doses_where(&self, what: &'static str, query: Query<'_>) -> Result<Vec<DoseRecord>> {
        self.fetch_all(what, query).await?.iter().map(codec::dose).collect()
    }

    async fn residents_where(&self, what: &'static str, query: Query<'_>) -> Result<Vec<Resident>> {
        self.fetch_all(what, query).await?.iter().map(codec::resident).collect()
    }
}

const FETCH: &str = "FETCH 1000 FROM vrs_scan";

async fn drop_schema(url: &str, connect: &PgConnectOptions, schema: &str) -> Result<()> {
    check_schema_name(schema)?;
    let mut conn = sqlx::PgConnection::connect_with(connect).await.map_err(|e| unreachable(url, e))?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&mut conn).await.map_err(db("dropping the store's schema"))?;
    let _ = conn.close().await;
    Ok(())
}

fn unreachable(url: &str, e: sqlx::Error) -> Error {
    map(&format!("connecting to PostgreSQL at {}", redact_url(url)), e)
}

/// The layout recorded in the schema, if it is migrated.
async fn existing_layout(conn: &mut PgConnection) -> Result<Option<Layout>> {
    let row = sqlx::query("SELECT to_regclass('vrs_meta') IS NOT NULL AS migrated")
        .fetch_one(&mut *conn)
        .await
        .map_err(db("reading the schema"))?;
    if !col::<bool>(&row, "migrated")? {
        return Ok(None);
    }
    let value: Option<String> = sqlx::query("SELECT value FROM vrs_meta WHERE name = 'layout'")
        .fetch_optional(&mut *conn)
        .await
        .map_err(db("reading the schema's layout"))?
        .map(|r| col(&r, "value"))
        .transpose()?;
    match value.as_deref().map(Layout::parse) {
        Some(Some(layout)) => Ok(Some(layout)),
        Some(None) | None => Err(storage_message(format!("the schema's layout {value:?} is unknown to this build"))),
    }
}

/// Applies pending migrations of the schema's layout (or `wanted` for an empty schema).
async fn migrate(conn: &mut PgConnection, wanted: Option<Layout>) -> Result<Option<Layout>> {
    let layout = match existing_layout(conn).await? {
        Some(existing) => existing,
        None => wanted.unwrap_or(Layout::Plain),
    };
    if wanted.is_some_and(|w| w != layout) {
        return Ok(Some(layout));
    }
    layout.migrator().run_direct(conn).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::Execute(inner) => map("applying the store's migrations", inner),
        other => Error::storage(format!("applying the store's migrations ({layout} layout)"), other),
    })?;
    Ok(Some(layout))
}

#[async_trait]
impl StoreBackend for PostgresStore {
    async fn resident(&self, person: &PersonRef) -> Result<Option<Resident>> {
        let sql = format!("SELECT {RESIDENT_COLUMNS} FROM residents WHERE municipality = $1 AND addressee_len = $2 AND addressee = $3");
        let query =
            sqlx::query(&sql).bind(person.municipality.as_str()).bind(addressee_len(&person.addressee)).bind(person.addressee.as_str());
        let row = self.fetch_optional("reading a resident", query).await?;
        row.as_ref().map(codec::resident).transpose()
    }

    async fn resident_by_voucher(&self, voucher: VoucherRef) -> Result<Option<Resident>> {
        // The voucher's holder: the resident the latest upload gave it to.
        let sql = format!(
            "SELECT {RESIDENT_COLUMNS} FROM residents WHERE municipality = $1 AND voucher = $2
             ORDER BY voucher_import DESC, addressee_len DESC, addressee DESC LIMIT 1"
        );
        let query = sqlx::query(&sql).bind(voucher.municipality.as_str()).bind(voucher.number.as_str());
        let row = self.fetch_optional("reading a resident by voucher", query).await?;
        row.as_ref().map(codec::resident).transpose()
    }

    async fn residents_by_previous_voucher(&self, voucher: VoucherRef) -> Result<Vec<Resident>> {
        let sql = format!(
            "SELECT {RESIDENT_COLUMNS} FROM residents WHERE previous_municipality = $1 AND previous_voucher = $2
             ORDER BY municipality, addressee_len, addressee"
        );
        self.residents_where(
            "reading residents by previous voucher",
            sqlx::query(&sql).bind(voucher.municipality.as_str()).bind(voucher.number.as_str()),
        )
        .await
    }

    async fn moved_in_residents(&self, municipality: MunicipalityCode) -> Result<Vec<Resident>> {
        let sql = format!(
            "SELECT {RESIDENT_COLUMNS} FROM residents WHERE municipality = $1 AND previous_voucher IS NOT NULL
             ORDER BY addressee_len, addressee"
        );
        self.residents_where("reading moved-in residents", sqlx::query(&sql).bind(municipality.as_str())).await
    }

    async fn scan_residents(&self, municipality: MunicipalityCode, visit: Visit<'_, Resident>) -> Result<()> {
        let sql = format!(
            "DECLARE vrs_scan NO SCROLL CURSOR FOR SELECT {RESIDENT_COLUMNS} FROM residents WHERE municipality = $1
             ORDER BY addressee_len, addressee"
        );
        self.scan("scanning residents", sqlx::query(&sql).bind(municipality.as_str()), codec::resident, visit, |_| {}).await
    }

    async fn import_residents(&self, source: Box<dyn ResidentSource>) -> Result<(Box<dyn ResidentSource>, ImportApplied)> {
        import::import(&self.conns, source).await
    }

    async fn dose(&self, id: DoseId) -> Result<Option<DoseRecord>> {
        let query = sqlx::query(
            "SELECT d.record, d.seq FROM dose_ids AS k JOIN doses AS d ON d.municipality = k.municipality AND d.id = k.id WHERE k.id = $1",
        )
        .bind(id.as_bytes().as_slice());
        let row = self.fetch_optional("reading a dose", query).await?;
        row.as_ref().map(codec::dose).transpose()
    }

    async fn doses_by_voucher(&self, voucher: VoucherRef) -> Result<Vec<DoseRecord>> {
        let q = sqlx::query("SELECT record, seq FROM doses WHERE municipality = $1 AND voucher = $2 ORDER BY id")
            .bind(voucher.municipality.as_str())
            .bind(voucher.number.as_str());
        self.doses_where("reading doses by voucher", q).await
    }

    async fn unmatched_doses(&self, municipality: MunicipalityCode) -> Result<Vec<DoseRecord>> {
        let q =
            sqlx::query("SELECT record, seq FROM doses WHERE municipality = $1 AND NOT matched ORDER BY id").bind(municipality.as_str());
        self.doses_where("reading unmatched doses", q).await
    }

    async fn doses_by_site(&self, site: &SiteId, day: NaiveDate) -> Result<Vec<DoseRecord>> {
        let q =
            sqlx::query("SELECT record, seq FROM doses WHERE site = $1 AND registered_on = $2 ORDER BY id").bind(site.as_str()).bind(day);
        self.doses_where("reading a site's doses", q).await
    }

    async fn scan_doses(&self, municipality: MunicipalityCode, scan: DoseScan, visit: Visit<'_, DoseRecord>) -> Result<u64> {
        // Every write numbered up to `bound` is committed and seen by the scan below.
        let bound = self.committed_bound(&municipality).await?;
        let mut high = 0u64;
        match scan {
            DoseScan::ByVoucher => {
                let q = sqlx::query(
                    "DECLARE vrs_scan NO SCROLL CURSOR FOR SELECT record, seq FROM doses WHERE municipality = $1 ORDER BY voucher, id",
                )
                .bind(municipality.as_str());
                self.scan("scanning doses by voucher", q, codec::dose, visit, |d| high = high.max(d.seq)).await?;
                // A record numbered above the bound may have overtaken one still in flight:
                // the next delta starts at the bound (and may repeat a record, never skip one).
                Ok(high.min(bound))
            }
            DoseScan::ChangedSince { after } => {
                let low = i64::try_from(after).unwrap_or(i64::MAX);
                let q = sqlx::query(
                    "DECLARE vrs_scan NO SCROLL CURSOR FOR SELECT record, seq FROM doses
                     WHERE municipality = $1 AND seq > $2 AND seq <= $3 ORDER BY seq",
                )
                .bind(municipality.as_str())
                .bind(low)
                .bind(i64::try_from(bound).unwrap_or(i64::MAX));
                high = after;
                self.scan("scanning changed doses", q, codec::dose, visit, |d| high = high.max(d.seq)).await?;
                Ok(high)
            }
        }
    }

    async fn person_contexts(&self, queries: &[PersonQuery]) -> Result<Vec<PersonContext>> {
        context::person_contexts(self, queries).await
    }

    async fn account_with_person_context(
        &self,
        id: &AccountId,
        query: PersonQuery,
    ) -> Result<(Option<TabletAccount>, Option<PersonContext>)> {
        context::account_with_person_context(self, id, query).await
    }

    async fn findings(&self, municipality: MunicipalityCode, open_only: bool) -> Result<Vec<Finding>> {
        let sql = if open_only {
            "SELECT record FROM findings WHERE municipality = $1 AND open ORDER BY dose, kind"
        } else {
            "SELECT record FROM findings WHERE municipality = $1 ORDER BY open DESC, dose, kind"
        };
        let rows = self.fetch_all("reading findings", sqlx::query(sql).bind(municipality.as_str())).await?;
        rows.iter().map(|r| record(r, "record")).collect()
    }

    async fn findings_for_dose(&self, dose: DoseId) -> Result<Vec<Finding>> {
        let query = sqlx::query("SELECT record FROM findings WHERE dose = $1 ORDER BY kind").bind(dose.as_bytes().as_slice());
        let rows = self.fetch_all("reading a dose's findings", query).await?;
        rows.iter().map(|r| record(r, "record")).collect()
    }

    async fn account(&self, id: &AccountId) -> Result<Option<TabletAccount>> {
        let row =
            self.fetch_optional("reading an account", sqlx::query("SELECT record FROM accounts WHERE id = $1").bind(id.as_str())).await?;
        row.as_ref().map(|r| record(r, "record")).transpose()
    }

    async fn accounts(&self, municipality: MunicipalityCode) -> Result<Vec<TabletAccount>> {
        let query = sqlx::query("SELECT record FROM accounts WHERE municipality = $1 ORDER BY id").bind(municipality.as_str());
        let rows = self.fetch_all("reading accounts", query).await?;
        rows.iter().map(|r| record(r, "record")).collect()
    }

    async fn account_secret(&self, id: &AccountId) -> Result<Option<vrs_core::credentials::SecretHash>> {
        let query = sqlx::query("SELECT record FROM account_secrets WHERE account = $1").bind(id.as_str());
        let row = self.fetch_optional("reading an account secret hash", query).await?;
        row.as_ref().map(|r| record(r, "record")).transpose()
    }

    async fn statistics(&self, query: StatsQuery) -> Result<Vec<StatsRow>> {
        const COLUMNS: &str = "SELECT municipality, day, dose_number, sex, age_band, product, count FROM counters WHERE count > 0";
        const PREFECTURE: &str = "SELECT municipality, day, dose_number, sex, age_band, product, count FROM counters
            WHERE count > 0 AND municipality >= $1 AND municipality < $2";
        const MUNICIPALITY: &str =
            "SELECT municipality, day, dose_number, sex, age_band, product, count FROM counters WHERE count > 0 AND municipality = $1";
        let (low, high);
        let query = match query {
            StatsQuery::National => sqlx::query(COLUMNS),
            StatsQuery::Prefecture(p) => {
                // Codes of a prefecture sort between "PP" and "PP" + 1.
                low = format!("{p:02}");
                high = format!("{:02}", u16::from(p) + 1);
                sqlx::query(PREFECTURE).bind(low.as_str()).bind(high.as_str())
            }
            StatsQuery::Municipality(m) => sqlx::query(MUNICIPALITY).bind(m.as_str().to_owned()),
        };
        let rows = self.fetch_all("reading statistics", query).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let municipality = MunicipalityCode::parse(&col::<String>(row, "municipality")?)
                .map_err(|e| storage_message(format!("a stored counter's municipality does not parse: {e}")))?;
            let dose_number: i16 = col(row, "dose_number")?;
            let count: i64 = col(row, "count")?;
            let key = StatsKey {
                municipality,
                date: col(row, "day")?,
                dose_number: u8::try_from(dose_number).map_err(|_| storage_message(format!("a stored dose number {dose_number}")))?,
                sex: codec::sex(col(row, "sex")?)?,
                age_band: codec::age_band(col(row, "age_band")?)?,
                product: ProductCode::new(col::<String>(row, "product")?),
            };
            out.push(StatsRow { key, count: u64::try_from(count).unwrap_or(0) });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn audit(&self, municipality: MunicipalityCode) -> Result<Vec<AuditEvent>> {
        let query = sqlx::query("SELECT record FROM audit WHERE municipality = $1 ORDER BY seq").bind(municipality.as_str());
        let rows = self.fetch_all("reading the audit trail", query).await?;
        rows.iter().map(|r| record(r, "record")).collect()
    }

    async fn apply(&self, changes: Vec<ChangeSet>) -> Result<Applied> {
        apply::apply(&self.conns, changes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("postgres://vrs:secret@db:5432/vrs"), "postgres://vrs:***@db:5432/vrs");
        assert_eq!(redact_url("postgres://vrs@db/vrs"), "postgres://vrs@db/vrs");
        assert_eq!(redact_url("postgres://db/vrs"), "postgres://db/vrs");
    }

    #[test]
    fn the_schema_parameter_is_taken_out_of_the_url() {
        assert_eq!(split_schema_param("postgres://h/db"), ("postgres://h/db".into(), None));
        assert_eq!(split_schema_param("postgres://h/db?schema=tokyo"), ("postgres://h/db".into(), Some("tokyo".into())));
        assert_eq!(
            split_schema_param("postgres://h/db?sslmode=disable&schema=t1&application_name=x"),
            ("postgres://h/db?sslmode=disable&application_name=x".into(), Some("t1".into()))
        );
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(check_schema_name("vrs_test_1").is_ok());
        for bad in ["", "1abc", "a-b", "A", "a;drop", &"x".repeat(64)] {
            assert!(check_schema_name(bad).is_err(), "{bad}");
        }
    }
}
