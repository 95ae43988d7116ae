//! The command line as clap reads it. Only the shape of the arguments lives here: what
//! they mean is decided by vrs-core.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Environment variables and exit codes, printed after `vrs --help`.
const AFTER_HELP: &str = concat!(
    "Environment:\n",
    "  VRS_NOW=2021-07-01T09:00:00+09:00  stop the clock at that instant (a bare date means 09:00 JST),\n",
    "                                     for reproducible dates in tests and demonstrations;\n",
    "                                     default: the system clock\n",
    "  VRS_PERSONAL_NUMBER_SECRET         deployment secret for personal-number hashes (uploads with 個人番号)\n",
    "  VRS_ACCOUNT_SECRET                 a tablet account's secret, for commands that act as a site account\n",
    "                                     (--account, sync apply); shown once by `vrs accounts issue`\n",
    "\n",
    "Exit codes: 0 success, 2 bad input (with a report), 1 any other failure (e.g. permission denied)."
);

/// `vrs`: the vaccination record system on the embedded store.
///
/// Environment: `VRS_NOW` (e.g. `2021-07-01T09:00:00+09:00`, or a bare date `2021-07-01`
/// meaning 09:00 Japan time) stops the clock at that instant, for reproducible dates in
/// tests and demonstrations; without it the system clock is used.
#[derive(Debug, Parser)]
#[command(name = "vrs", version, about, long_about = None, after_help = AFTER_HELP)]
pub struct Cli {
    /// The store: a redb file path, or a PostgreSQL URL `postgres://user@host:port/db`
    /// (optionally `?schema=NAME`; migrated on first use).
    #[arg(long, global = true, value_name = "PATH_OR_URL", default_value = "./vrs-data/vrs.redb")]
    pub store: String,
    /// Machine-readable output (JSON) on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole VRS story on a fresh store (embedded, or `--store postgres://...`,
    /// whose schema `vrs_demo` is wiped first) and print a summary.
    Demo(DemoArgs),
    /// Generate test data.
    #[command(subcommand)]
    Gen(GenCommand),
    /// Import a file.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Register a dose read at a site from its voucher's OCR line.
    Register(RegisterArgs),
    /// Match a municipality's unmatched doses to residents uploaded since.
    Reconcile(ReconcileArgs),
    /// A municipality's review queue (要修正 / 要確認).
    Findings(FindingsArgs),
    /// Correct a dose (補正): a new version with who, when and why.
    Correct(CorrectArgs),
    /// Void a dose, with a reason; nothing is erased.
    Void(VoidArgs),
    /// A resident's doses, including those under a previous municipality's voucher.
    Doses(DosesArgs),
    /// Tablet accounts of vaccination sites.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Export the ledger, the unmatched list, statistics, FHIR, HL7, open data or the
    /// change log.
    #[command(subcommand)]
    Export(ExportCommand),
    /// Check the store's integrity; exit 0 when clean.
    Check,
    /// Apply the PostgreSQL store's schema migrations (connecting does it too).
    Migrate(MigrateArgs),
    /// Tablet sync batches.
    #[command(subcommand)]
    Sync(SyncCommand),
}

/// `vrs sync ...`
#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Apply a tablet's sync batch (JSON) as its account, idempotently; prints the reply
    /// (`--json`: the reply JSON itself, for the tablet's `acknowledge`).
    Apply(SyncApplyArgs),
}

/// Options of `vrs sync apply`.
#[derive(Debug, Args)]
pub struct SyncApplyArgs {
    /// The batch file (`-` for standard input).
    pub file: PathBuf,
    /// Also write the reply JSON to this file.
    #[arg(long)]
    pub reply: Option<PathBuf>,
}

/// Options of `vrs migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Create the big tables hash-partitioned by municipality code (only for an empty
    /// schema; a migrated schema keeps its layout).
    #[arg(long)]
    pub partitioned: bool,
}

/// Options of `vrs demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory for the demo's store and files (wiped and recreated).
    #[arg(long, default_value = "./vrs-demo")]
    pub dir: PathBuf,
    /// Residents generated per municipality.
    #[arg(long, default_value_t = 3000)]
    pub residents: u32,
}

/// `vrs gen ...`
#[derive(Debug, Subcommand)]
pub enum GenCommand {
    /// Generate a residents upload (deterministic for a seed).
    Residents(GenResidentsArgs),
}

/// Options of `vrs gen residents`.
#[derive(Debug, Args)]
pub struct GenResidentsArgs {
    /// How many residents.
    #[arg(long)]
    pub count: u64,
    /// The uploading municipality (6-digit code).
    #[arg(long)]
    pub municipality: String,
    /// Seed of the generator: the same seed gives the same file.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Encoding of the file.
    #[arg(long, value_enum, default_value_t = Encoding::Utf8)]
    pub encoding: Encoding,
    /// Write birth dates in Japanese eras (令和3年4月1日, S22.5.3, ...).
    #[arg(long)]
    pub era_dates: bool,
    /// Language of the header row.
    #[arg(long, value_enum, default_value_t = HeaderLang::Ja)]
    pub header: HeaderLang,
    /// The first addressee number; the others follow in order.
    #[arg(long, default_value_t = 1)]
    pub first_addressee: u64,
    /// Add a personal_number column (importing it needs VRS_PERSONAL_NUMBER_SECRET).
    #[arg(long)]
    pub personal_numbers: bool,
    /// Everyone active: no moved-in, moved-out or deceased residents.
    #[arg(long)]
    pub no_moves: bool,
    /// Output file (stdout when absent).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The language of a generated header row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HeaderLang {
    /// Japanese (自治体コード, 宛名番号, ...).
    Ja,
    /// English (municipality_code, addressee_number, ...).
    En,
}

/// An output encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Encoding {
    /// UTF-8.
    Utf8,
    /// Shift_JIS (CP932).
    Sjis,
}

/// An input encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InEncoding {
    /// Detect UTF-8 (with or without BOM) or Shift_JIS.
    Auto,
    /// UTF-8.
    Utf8,
    /// Shift_JIS (CP932).
    Sjis,
}

/// `vrs import ...`
#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Import a residents upload (接種対象者) as one atomic change.
    Residents(ImportResidentsArgs),
    /// Register a FHIR R4 Bundle's Immunizations as doses from a site, in one batch
    /// (`entered-in-error` ones are voided); importing the same Bundle again stores nothing new.
    Fhir(ImportFhirArgs),
}

/// Options of `vrs import fhir`.
#[derive(Debug, Args)]
pub struct ImportFhirArgs {
    /// The Bundle (JSON; `-` for standard input).
    pub file: PathBuf,
    /// The site's tablet account registering the doses.
    #[arg(long)]
    pub account: String,
}

/// Options of `vrs import residents`.
#[derive(Debug, Args)]
pub struct ImportResidentsArgs {
    /// The CSV file.
    pub file: PathBuf,
    /// The uploading municipality (acting as its staff).
    #[arg(long)]
    pub municipality: String,
    /// The staff member's user name, for the audit trail.
    #[arg(long, default_value = "cli")]
    pub user: String,
    /// Input encoding.
    #[arg(long, value_enum, default_value_t = InEncoding::Auto)]
    pub encoding: InEncoding,
    /// Column layout of a header-less file: a spec such as
    /// `addressee_number,voucher_number,name,...`, or a file holding one.
    #[arg(long, value_name = "SPEC_OR_FILE")]
    pub layout: Option<String>,
    /// With `--layout`: the file's first line is a header row to skip.
    #[arg(long, requires = "layout")]
    pub header_row: bool,
    /// Apply the good rows and report the bad ones (default: apply nothing when a row is bad).
    #[arg(long)]
    pub skip_invalid: bool,
    /// Act as `staff:CODE` (another municipality's staff) instead.
    #[arg(long = "as", value_name = "ACTOR")]
    pub as_actor: Option<String>,
}

/// Options of `vrs register`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The site's tablet account.
    #[arg(long)]
    pub account: String,
    /// The 18-digit OCR line of the voucher.
    #[arg(long)]
    pub ocr: String,
    /// Date given, YYYY-MM-DD.
    #[arg(long)]
    pub date: String,
    /// Vaccine product code (e.g. pfizer, moderna).
    #[arg(long)]
    pub product: String,
    /// Lot number.
    #[arg(long)]
    pub lot: String,
    /// Doctor's name.
    #[arg(long)]
    pub doctor: String,
    /// Dose number, when it differs from the one printed on the voucher.
    #[arg(long)]
    pub dose: Option<u8>,
    /// Idempotency key; without it one is derived from the inputs, so a retried
    /// command stores nothing twice.
    #[arg(long)]
    pub key: Option<String>,
}

/// A municipality-scoped command, acting as that municipality's staff by default.
#[derive(Debug, Args)]
pub struct StaffArgs {
    /// The municipality (6-digit code).
    #[arg(long)]
    pub municipality: String,
    /// Staff user name, for the audit trail.
    #[arg(long, default_value = "cli")]
    pub user: String,
    /// Act as this site tablet account instead of the municipality's staff.
    #[arg(long = "account", value_name = "ID", conflicts_with = "as_actor")]
    pub site_account: Option<String>,
    /// Act as `national`, `prefecture:NN` or `staff:CODE` instead.
    #[arg(long = "as", value_name = "ACTOR")]
    pub as_actor: Option<String>,
}

/// The municipality that administers tablet accounts (acting as its staff).
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The municipality (6-digit code).
    #[arg(long)]
    pub municipality: String,
    /// Staff user name, for the audit trail.
    #[arg(long, default_value = "cli")]
    pub user: String,
    /// Act as `national`, `prefecture:NN` or `staff:CODE` instead.
    #[arg(long = "as", value_name = "ACTOR")]
    pub as_actor: Option<String>,
}

/// Options of `vrs reconcile`.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Municipality and actor.
    #[command(flatten)]
    pub staff: StaffArgs,
}

/// Options of `vrs findings`.
#[derive(Debug, Args)]
pub struct FindingsArgs {
    /// Municipality and actor.
    #[command(flatten)]
    pub staff: StaffArgs,
    /// Include closed findings.
    #[arg(long)]
    pub all: bool,
}

/// Options of `vrs correct`.
#[derive(Debug, Args)]
pub struct CorrectArgs {
    /// The dose id (32 hex digits).
    pub dose_id: String,
    /// Municipality and actor.
    #[command(flatten)]
    pub staff: StaffArgs,
    /// New date given, YYYY-MM-DD.
    #[arg(long)]
    pub date: Option<String>,
    /// New dose number.
    #[arg(long)]
    pub dose: Option<u8>,
    /// New product code.
    #[arg(long)]
    pub product: Option<String>,
    /// New lot number.
    #[arg(long)]
    pub lot: Option<String>,
    /// New doctor's name.
    #[arg(long)]
    pub doctor: Option<String>,
    /// New site name.
    #[arg(long)]
    pub site_name: Option<String>,
    /// Why (required).
    #[arg(long)]
    pub reason: String,
}

/// Options of `vrs void`.
#[derive(Debug, Args)]
pub struct VoidArgs {
    /// The dose id (32 hex digits).
    pub dose_id: String,
    /// Municipality and actor.
    #[command(flatten)]
    pub staff: StaffArgs,
    /// Why (required).
    #[arg(long)]
    pub reason: String,
}

/// Options of `vrs doses`.
#[derive(Debug, Args)]
pub struct DosesArgs {
    /// Municipality and actor.
    #[command(flatten)]
    pub staff: StaffArgs,
    /// The resident's addressee number (個別宛名番号).
    #[arg(long)]
    pub addressee: String,
}

/// `vrs accounts ...`
#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Issue a tablet account to a site in the municipality; prints its secret once.
    Issue(IssueAccountArgs),
    /// Revoke a tablet account.
    Revoke(RevokeAccountArgs),
    /// Give a tablet account a new secret (shown once); the previous one stops working.
    RenewSecret(RevokeAccountArgs),
    /// List the municipality's tablet accounts.
    List(AdminArgs),
}

/// Options of `vrs accounts issue`.
#[derive(Debug, Args)]
pub struct IssueAccountArgs {
    /// Municipality and actor.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The new account's id.
    #[arg(long = "account", value_name = "ID")]
    pub account_id: String,
    /// The site: a venue code or a clinic's G-MIS ID.
    #[arg(long)]
    pub site_id: String,
    /// The site's name as printed in the ledger (≤ 30 characters).
    #[arg(long)]
    pub site_name: String,
}

/// Options of `vrs accounts revoke`.
#[derive(Debug, Args)]
pub struct RevokeAccountArgs {
    /// Municipality and actor.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The account to revoke.
    #[arg(long = "account", value_name = "ID")]
    pub account_id: String,
}

/// `vrs export ...`
#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// The ledger (予防接種台帳向け出力): one row per person, 1 + 8·n columns.
    Ledger(ExportLedgerArgs),
    /// The unmatched list (接種対象者登録待ちリスト).
    Unmatched(ExportUnmatchedArgs),
    /// Statistics: counts by date, municipality, dose number, sex, age band and product.
    Stats(ExportStatsArgs),
    /// A FHIR R4 Bundle (collection) of a municipality's (or one resident's) Patients and
    /// Immunizations, as JSON.
    Fhir(ExportFhirArgs),
    /// HL7 v2.5.1 VXU^V04 messages, one per dose (segments end in CR, messages in LF).
    Hl7(ExportFhirArgs),
    /// Open data in VRS's public schema: prefecture.ndjson and summary_by_date.csv.
    Opendata(ExportOpendataArgs),
    /// The ledger change log (台帳差分) since a cursor: registrations, corrections (補正)
    /// and voids (取消), one line per dose; prints the next cursor.
    Changes(ExportChangesArgs),
}

/// Options of `vrs export fhir` and `vrs export hl7`.
#[derive(Debug, Args)]
pub struct ExportFhirArgs {
    /// Municipality and actor.
    #[command(flatten)]
    pub staff: StaffArgs,
    /// Only this resident (個別宛名番号); default: every resident and unmatched dose.
    #[arg(long)]
    pub addressee: Option<String>,
    /// Output file.
    #[arg(long)]
    pub out: PathBuf,
}

/// Options of `vrs export opendata`.
#[derive(Debug, Args)]
pub struct ExportOpendataArgs {
    /// Who reads: `national`, `prefecture:NN` or `staff:CODE` (default: staff of
    /// `--municipality`, the reader of `--prefecture`, else national).
    #[arg(long = "as", value_name = "ACTOR")]
    pub as_actor: Option<String>,
    /// Staff user name when acting as staff.
    #[arg(long, default_value = "cli")]
    pub user: String,
    /// Only this prefecture (01–47).
    #[arg(long, conflicts_with = "municipality")]
    pub prefecture: Option<String>,
    /// Only this municipality.
    #[arg(long)]
    pub municipality: Option<String>,
    /// Small-cell suppression: leave out groups of fewer doses than this (0: keep all).
    #[arg(long, default_value_t = 0)]
    pub suppress_below: u64,
    /// Directory for prefecture.ndjson and summary_by_date.csv (created when missing).
    #[arg(long)]
    pub out_dir: PathBuf,
}

/// Options of `vrs export changes`.
#[derive(Debug, Args)]
pub struct ExportChangesArgs {
    /// Municipality and actor.
    #[command(flatten)]
    pub staff: StaffArgs,
    /// Only changes after this cursor (printed by the previous export); default: all.
    #[arg(long)]
    pub since: Option<u64>,
    /// Output encoding.
    #[arg(long, value_enum, default_value_t = Encoding::Utf8)]
    pub encoding: Encoding,
    /// Output file.
    #[arg(long)]
    pub out: PathBuf,
}

/// Options of `vrs export ledger`.
#[derive(Debug, Args)]
pub struct ExportLedgerArgs {
    /// Municipality and actor.
    #[command(flatten)]
    pub staff: StaffArgs,
    /// Output encoding.
    #[arg(long, value_enum, default_value_t = Encoding::Utf8)]
    pub encoding: Encoding,
    /// Only persons with a change after this cursor (printed by the previous export).
    #[arg(long)]
    pub since: Option<u64>,
    /// Output file.
    #[arg(long)]
    pub out: PathBuf,
}

/// Options of `vrs export unmatched`.
#[derive(Debug, Args)]
pub struct ExportUnmatchedArgs {
    /// Municipality and actor.
    #[command(flatten)]
    pub staff: StaffArgs,
    /// Output encoding.
    #[arg(long, value_enum, default_value_t = Encoding::Utf8)]
    pub encoding: Encoding,
    /// Output file.
    #[arg(long)]
    pub out: PathBuf,
}

/// Options of `vrs export stats`.
#[derive(Debug, Args)]
pub struct ExportStatsArgs {
    /// Who reads: `national`, `prefecture:NN` or `staff:CODE` (default: staff of
    /// `--municipality`, the reader of `--prefecture`, else national).
    #[arg(long = "as", value_name = "ACTOR")]
    pub as_actor: Option<String>,
    /// Staff user name when acting as staff.
    #[arg(long, default_value = "cli")]
    pub user: String,
    /// Only this prefecture (01–47).
    #[arg(long, conflicts_with = "municipality")]
    pub prefecture: Option<String>,
    /// Only this municipality.
    #[arg(long)]
    pub municipality: Option<String>,
    /// Output file (stdout when absent).
    #[arg(long)]
    pub out: Option<PathBuf>,
}
