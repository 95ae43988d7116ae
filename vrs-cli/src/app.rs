//! Opening the store, the clock and naming the actor: everything a command needs
//! before it asks vrs-core.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use vrs_core::access::{Actor, StatsScope};
use vrs_core::clock::jst;
use vrs_core::ids::{AccountId, MunicipalityCode};
use vrs_core::service::{Clock, FixedClock, Registry};
use vrs_core::store::DynStore;
use vrs_store_postgres::PostgresStore;
use vrs_store_redb::RedbStore;

use crate::cli::StaffArgs;
use crate::error::{CliError, CliResult};
use crate::output::Report;

/// The environment variable that stops the clock (see the crate documentation).
pub const NOW_VAR: &str = "VRS_NOW";

/// The system clock.
#[derive(Debug)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Parses `VRS_NOW`: an RFC 3339 instant, or a bare date meaning 09:00 in Japan.
pub fn parse_now(text: &str) -> CliResult<DateTime<Utc>> {
    let t = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(t) {
        return Ok(at.with_timezone(&Utc));
    }
    if let Ok(day) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        let local = day.and_time(NaiveTime::from_hms_opt(9, 0, 0).unwrap_or_default());
        if let Some(at) = local.and_local_timezone(jst()).single() {
            return Ok(at.with_timezone(&Utc));
        }
    }
    Err(CliError::Input(format!("{NOW_VAR}={t:?} is neither an RFC 3339 instant (2021-07-01T09:00:00+09:00) nor a date (2021-07-01)")))
}

/// The clock: `VRS_NOW` when set, else the system clock.
pub fn clock_from_env() -> CliResult<Arc<dyn Clock>> {
    match std::env::var(NOW_VAR) {
        Ok(text) if !text.trim().is_empty() => Ok(Arc::new(FixedClock::new(parse_now(&text)?))),
        _ => Ok(Arc::new(SystemClock)),
    }
}

/// Where the store is.
pub enum StoreSpec {
    /// An embedded redb file.
    Redb(PathBuf),
    /// A PostgreSQL database (`postgres://...`, optionally `?schema=NAME`).
    Postgres(String),
}

/// Reads `--store`: a `postgres://` (or `postgresql://`) URL, else a redb file path.
pub fn store_spec(spec: &str) -> CliResult<StoreSpec> {
    let lower = spec.to_ascii_lowercase();
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        return Ok(StoreSpec::Postgres(spec.to_owned()));
    }
    if spec.contains("://") {
        return Err(CliError::Input(format!("--store {spec:?}: expected a file path or postgres://...")));
    }
    Ok(StoreSpec::Redb(PathBuf::from(spec)))
}

/// Opens (creating if needed) the redb store at `path`, creating its directory.
pub fn open_redb(path: &Path) -> CliResult<RedbStore> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| CliError::Failure(format!("cannot create {}: {e}", dir.display())))?;
    }
    RedbStore::open(path).map_err(CliError::Core)
}

/// Connects to the PostgreSQL store at `url`, applying pending migrations.
pub async fn open_postgres(url: &str) -> CliResult<PostgresStore> {
    PostgresStore::connect(url).await.map_err(CliError::Core)
}

/// Opens the store named by `--store`.
pub async fn open_store(spec: &str) -> CliResult<DynStore> {
    Ok(match store_spec(spec)? {
        StoreSpec::Redb(path) => Arc::new(open_redb(&path)?),
        StoreSpec::Postgres(url) => Arc::new(open_postgres(&url).await?),
    })
}

/// An opened store and the registry on it.
pub struct App {
    /// The service every command goes through.
    pub registry: Registry,
}

impl App {
    /// Opens the store named by `--store` with the clock from the environment.
    pub async fn open(spec: &str) -> CliResult<App> {
        let store = open_store(spec).await?;
        Ok(App { registry: Registry::new(store, clock_from_env()?) })
    }
}

/// `vrs check`: the store's integrity check (redb's page checksums; for PostgreSQL, the
/// migrations and the dose id index).
pub async fn check(spec: &str) -> CliResult<Report> {
    let path = match store_spec(spec)? {
        StoreSpec::Redb(path) => path,
        StoreSpec::Postgres(url) => return check_postgres(&url).await,
    };
    if !path.exists() {
        return Err(CliError::Input(format!("no store at {}", path.display())));
    }
    let mut store = open_redb(&path)?;
    let intact = store.check_integrity().map_err(CliError::Core)?;
    let json = serde_json::json!({ "store": path, "clean": intact });
    if intact {
        Ok(Report::new(format!("store {}: integrity check passed, clean", path.display()), &json))
    } else {
        Err(CliError::Reported {
            report: Box::new(Report::new(format!("store {}: integrity check found damage and repaired it", path.display()), &json)),
            error: Box::new(CliError::Failure(format!("store {} was not clean (repaired now)", path.display()))),
        })
    }
}

async fn check_postgres(url: &str) -> CliResult<Report> {
    let options = vrs_store_postgres::Options { migrate: false, max_connections: 1, ..Default::default() };
    let store = PostgresStore::connect_with(url, options).await.map_err(CliError::Core)?;
    let report = store.check().await.map_err(CliError::Core)?;
    store.close().await;
    let shown = vrs_store_postgres::redact_url(url);
    let json = serde_json::json!({
        "store": shown,
        "clean": report.is_clean(),
        "layout": report.layout.as_str(),
        "migrations_applied": report.migrations_applied,
        "migrations_known": report.migrations_known,
        "orphan_dose_ids": report.orphan_dose_ids,
    });
    let text = format!(
        "store {shown} ({} layout): {}/{} migrations applied, {} dose ids out of step",
        report.layout, report.migrations_applied, report.migrations_known, report.orphan_dose_ids
    );
    if report.is_clean() {
        Ok(Report::new(format!("{text}: clean"), &json))
    } else {
        Err(CliError::Reported {
            report: Box::new(Report::new(text, &json)),
            error: Box::new(CliError::Failure(format!("store {shown} is not clean"))),
        })
    }
}

/// `vrs migrate`: applies the PostgreSQL store's pending migrations (the redb store lays
/// itself out when opened).
pub async fn migrate(spec: &str, partitioned: bool) -> CliResult<Report> {
    match store_spec(spec)? {
        StoreSpec::Redb(path) => {
            open_redb(&path)?;
            let json = serde_json::json!({ "store": path, "layout": "redb" });
            Ok(Report::new(format!("store {}: the redb store lays itself out when opened; nothing to migrate", path.display()), &json))
        }
        StoreSpec::Postgres(url) => {
            let layout = partitioned.then_some(vrs_store_postgres::Layout::Partitioned);
            let options = vrs_store_postgres::Options { layout, ..Default::default() };
            let layout = PostgresStore::migrate(&url, options).await.map_err(CliError::Core)?;
            let shown = vrs_store_postgres::redact_url(&url);
            let json = serde_json::json!({ "store": shown, "layout": layout.as_str() });
            Ok(Report::new(format!("store {shown}: migrations applied ({layout} layout)"), &json))
        }
    }
}

/// A municipality code from the command line.
pub fn municipality(text: &str) -> CliResult<MunicipalityCode> {
    Ok(MunicipalityCode::parse(text)?)
}

/// Parses `--as`: `national`, `prefecture:NN` or `staff:CODE`.
pub fn parse_actor(spec: &str, user: &str) -> CliResult<Actor> {
    let s = spec.trim();
    if s == "national" {
        return Ok(Actor::StatisticsReader { scope: StatsScope::National });
    }
    if let Some(p) = s.strip_prefix("prefecture:") {
        return Ok(Actor::StatisticsReader { scope: StatsScope::Prefecture(prefecture(p)?) });
    }
    if let Some(code) = s.strip_prefix("staff:") {
        return Ok(Actor::MunicipalStaff { municipality: municipality(code)?, user: user.to_owned() });
    }
    Err(CliError::Input(format!("--as {s:?}: expected national, prefecture:NN or staff:CODE")))
}

/// A prefecture number 01–47.
pub fn prefecture(text: &str) -> CliResult<u8> {
    match text.trim().parse::<u8>() {
        Ok(p) if (1..=47).contains(&p) => Ok(p),
        _ => Err(CliError::Input(format!("prefecture {text:?}: expected 01 to 47"))),
    }
}

/// The environment variable holding a tablet account's secret, for the commands that act
/// as a site account (an argument would show in the process list and shell history).
pub const ACCOUNT_SECRET_VAR: &str = "VRS_ACCOUNT_SECRET";

/// Signs in as a site's tablet account with the secret in [`ACCOUNT_SECRET_VAR`]; the
/// account then acts only if its Argon2id hash matches and it is not revoked.
pub async fn site_actor(app: &App, account: &str) -> CliResult<Actor> {
    let id = AccountId::parse(account)?;
    let Ok(secret) = std::env::var(ACCOUNT_SECRET_VAR) else {
        return Err(CliError::Core(vrs_core::Error::PermissionDenied {
            actor: format!("site account {id}"),
            operation: vrs_core::access::Operation::SignIn,
            reason: format!("set {ACCOUNT_SECRET_VAR} to the account's secret (shown once by `vrs accounts issue`)"),
        }));
    };
    Ok(app.registry.authenticate(&id, &secret).await?)
}

/// The operating system's random generator, the entropy of new account secrets.
pub struct OsEntropy;

impl vrs_core::credentials::Entropy for OsEntropy {
    fn fill(&mut self, out: &mut [u8]) -> vrs_core::Result<()> {
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(out))
            .map_err(|e| vrs_core::Error::Read { detail: format!("reading /dev/urandom for a new secret: {e}") })
    }
}

/// The actor of a municipality-scoped command: a site account (`--account`, signed in with
/// [`ACCOUNT_SECRET_VAR`]), an explicit `--as`, or by default the staff of `--municipality`.
pub async fn actor(app: &App, args: &StaffArgs) -> CliResult<Actor> {
    if let Some(account) = &args.site_account {
        return site_actor(app, account).await;
    }
    if let Some(spec) = &args.as_actor {
        return parse_actor(spec, &args.user);
    }
    Ok(Actor::MunicipalStaff { municipality: municipality(&args.municipality)?, user: args.user.clone() })
}

/// The staff actor of `--municipality` (or `--as`), for account administration.
pub fn admin_actor(municipality_code: &str, user: &str, as_actor: Option<&str>) -> CliResult<Actor> {
    match as_actor {
        Some(spec) => parse_actor(spec, user),
        None => Ok(Actor::MunicipalStaff { municipality: municipality(municipality_code)?, user: user.to_owned() }),
    }
}

/// A date `YYYY-MM-DD` from the command line.
pub fn date(field: &str, text: &str) -> CliResult<NaiveDate> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").map_err(|_| CliError::Input(format!("--{field} {text:?}: expected YYYY-MM-DD")))
}
