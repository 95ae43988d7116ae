"""Type stubs of the native module ``vrs._vrs`` (re-exported by :mod:`vrs`)."""

import datetime
import os
from typing import Any, Callable, Literal, Union, final

__version__: str

_Actor = Union[Staff, Site, StatisticsReader, str]
_Date = Union[datetime.date, str]
_Path = Union[str, os.PathLike[str]]

# ---- errors ---------------------------------------------------------------------------

class VrsError(Exception):
    """Base class of every error raised by vrs."""

class InvalidInput(VrsError):
    """A value or a file was refused.

    ``line`` and ``column`` say where when there is a place (a line of an upload, a field
    of a call); ``reason`` says why.
    """

    line: int | None
    column: str | None
    field: str | None
    value: str | None
    reason: str | None
    kind: str | None
    errors: list[RowError] | None
    report: ImportReport | None

class ImportRejected(InvalidInput):
    """A residents upload had bad rows and nothing was applied.

    ``errors`` lists every bad line, ``report`` is the full :class:`ImportReport`, and
    ``line``/``column`` point at the first bad line.
    """

    errors: list[RowError]
    report: ImportReport

class DoseRejected(InvalidInput):
    """A dose registration was refused at input; nothing was stored.

    ``kind`` names the rule: ``"malformed_ocr"``, ``"bad_check_digit"``,
    ``"unknown_municipality"``, ``"future_date"``, ``"unknown_product"``, ``"invalid_field"``.
    """

    kind: str

class PermissionDenied(VrsError):
    """The actor may not do this; ``actor``, ``operation`` and ``reason`` say who, what, why."""

    actor: str
    operation: str
    reason: str

class NotFound(VrsError):
    """The thing asked for does not exist; ``what`` names it."""

    what: str

class Conflict(VrsError):
    """A uniqueness was taken meanwhile, or a record kept changing; ``what`` names it."""

    what: str

class StorageError(VrsError):
    """The store (the file or the database) failed, or vrs itself did."""

# ---- actors ---------------------------------------------------------------------------

@final
class Staff:
    """Staff of a municipality (市区町村職員).

    Uploads and reads its residents, reads and corrects its doses, issues tablet accounts
    and exports its ledger.
    """

    municipality: str
    user: str
    def __init__(self, municipality: str, user: str = "python") -> None: ...

@final
class Site:
    """A tablet account of a vaccination site (接種会場).

    Registers doses, and reads or corrects only the doses it registered today.
    """

    account: str
    def __init__(self, account: str) -> None: ...

@final
class StatisticsReader:
    """A reader of aggregate statistics: national, or one prefecture (1–47)."""

    prefecture: int | None
    def __init__(self, prefecture: int | None = None) -> None: ...

# ---- values ---------------------------------------------------------------------------

@final
class OcrLine:
    """The 18 digits of a voucher: 券種, 回数, municipality code, voucher number."""

    ticket_kind: int
    dose_number: int
    municipality: str
    voucher_number: str

@final
class DoseVersion:
    """One version of a dose: the registration, then each correction or void."""

    version: int
    dose_number: int
    date_given: datetime.date
    product: str
    lot: str
    doctor: str
    site_name: str
    voided: bool
    recorded_at: datetime.datetime
    recorded_by: str
    reason: str | None

@final
class Dose:
    """A registered dose (接種記録) as it stands now; every version is in ``history``."""

    id: str
    municipality: str
    voucher_number: str
    ticket_kind: int
    dose_number: int
    date_given: datetime.date
    registered_at: datetime.datetime
    registered_by: str
    administering_municipality: str
    site_id: str
    site_name: str
    doctor: str
    product: str
    maker: str
    lot: str
    lot_expiry: datetime.date | None
    voided: bool
    version: int
    resident_municipality: str | None
    addressee_number: str | None
    history: list[DoseVersion]
    @property
    def matched(self) -> bool:
        """Whether the dose is matched (突合済み) to an uploaded resident."""

@final
class Finding:
    """A finding of reconciliation (突合) in a municipality's review queue."""

    dose_id: str
    municipality: str
    kind: str
    severity: Literal["must_fix", "to_check", "rejected"]
    detail: str
    related_dose_id: str | None
    open: bool
    raised_at: datetime.datetime
    closed_at: datetime.datetime | None

@final
class Registration:
    """What registering a dose returns."""

    dose: Dose
    matched: bool
    findings: list[Finding]
    replayed: bool

@final
class DoseChange:
    """What a correction or a void returns."""

    dose: Dose
    findings: list[Finding]

@final
class RowError:
    """One bad line of an upload: where and why (never the value)."""

    line: int
    column: str | None
    reason: str

@final
class ImportReport:
    """What an import did."""

    rows_read: int
    rows_valid: int
    rows_invalid: int
    applied: bool
    inserted: int
    replaced: int
    errors: list[RowError]
    errors_omitted: int
    notes: list[str]
    matched: int
    still_unmatched: int

@final
class Reconciliation:
    """What a reconciliation pass did."""

    matched: int
    still_unmatched: int

@final
class LedgerExport:
    """What a ledger export wrote; ``cursor`` is the ``since`` of the next delta export."""

    rows: int
    doses: int
    blocks: int
    cursor: int

@final
class FhirImport:
    """What importing a FHIR Bundle did."""

    registered: int
    """Immunizations registered as new doses."""
    replayed: int
    """Immunizations registered before (same resource id): nothing new stored."""
    voided: int
    """``entered-in-error`` Immunizations voided after registration."""
    rejected: list[tuple[str, str]]
    """Immunizations refused: ``(resource id, reason)``."""

@final
class Account:
    """A tablet account issued to a site."""

    account: str
    site_id: str
    site_name: str
    municipality: str
    issued_by: str
    issued_at: datetime.datetime
    revoked_at: datetime.datetime | None

@final
class Table:
    """An Arrow table (Arrow PyCapsule interface).

    Pass it to ``pyarrow.table()`` or ``polars.DataFrame()`` (polars 2's
    ``polars.from_arrow()`` makes a struct Series of it: ``.struct.unnest()``); the buffers
    are shared, not copied row by row. Codes are strings (leading zeros kept),
    strings are ``string_view``, dates ``date32``, instants ``timestamp[us, tz=Asia/Tokyo]``.
    """

    @property
    def num_rows(self) -> int: ...
    @property
    def column_names(self) -> list[str]: ...
    @property
    def nbytes(self) -> int:
        """Bytes held by the Arrow buffers."""
    @property
    def cursor(self) -> int | None:
        """For ``doses()``: pass it as ``since`` next time to read only what changed."""
    def __arrow_c_schema__(self) -> Any: ...
    def __arrow_c_stream__(self, requested_schema: object | None = None) -> Any: ...
    def to_pyarrow(self) -> Any:
        """The table as a ``pyarrow.Table`` (zero-copy)."""
    def to_polars(self) -> Any:
        """The table as a ``polars.DataFrame``."""
    def to_pandas(self) -> Any:
        """The table as a ``pandas.DataFrame``, through pyarrow."""
    def __len__(self) -> int: ...

# ---- the registry ---------------------------------------------------------------------

def open(
    path_or_url: _Path, actor: _Actor, *, now: datetime.datetime | None = None, cache_bytes: int | None = None
) -> Registry:
    """Open a store and return a :class:`Registry` acting as ``actor``.

    Args:
        path_or_url: a redb file path (created, with its directory, when missing) or a
            PostgreSQL URL ``postgres://user:password@host/db``.
        actor: ``vrs.Staff(...)``, ``vrs.Site(...)``, ``vrs.StatisticsReader(...)`` or a
            string: ``"staff:131016"``, ``"site:tablet-1"``, ``"national"``, ``"prefecture:13"``.
        now: a timezone-aware datetime that stops the clock there (tests, replays).
        cache_bytes: the page cache of a redb store (default: the file's size and an
            eighth, at least 1 GiB, at most half the memory), so that full scans of a
            large store do not read every page from the file again. Not for PostgreSQL.

    Raises:
        StorageError: the store cannot be opened.
        InvalidInput: a bad argument.
    """

def parse_ocr(text: str) -> OcrLine:
    """Parse a voucher's 18-digit OCR line (spaces and full-width digits tolerated).

    Raises:
        DoseRejected: malformed, bad check digit, or no such municipality.
    """

@final
class Registry:
    """A registry on an open store, acting as one actor (see :func:`open`).

    Usable as a context manager: the store is closed on exit.
    """

    @property
    def actor(self) -> Staff | Site | StatisticsReader: ...
    def with_actor(self, actor: _Actor) -> Registry:
        """The same open store, acting as another actor."""
    def close(self) -> None:
        """Close the store for every handle on it; later calls raise :class:`VrsError`."""
    def __enter__(self) -> Registry: ...
    def __exit__(self, *args: object) -> bool: ...
    def import_residents(
        self,
        path: _Path,
        *,
        encoding: Literal["auto", "utf8", "utf-8", "sjis", "shift_jis", "cp932"] = "auto",
        skip_invalid: bool = False,
        municipality: str | None = None,
        progress: Callable[[int, int], object] | None = None,
        personal_number_secret: bytes | None = None,
    ) -> ImportReport:
        """Import a residents upload (接種対象者, CSV) for the staff's municipality.

        The file may be UTF-8 (with or without BOM) or Shift_JIS/CP932, with a header row
        in Japanese or English. By default a file with any bad row is applied not at all;
        with ``skip_invalid=True`` the good rows are applied and the rest reported. The
        import is atomic. ``progress(rows_read, bytes_read)`` is called every 10,000 rows;
        if it raises, the import stops, nothing is applied, and the exception propagates.

        Raises:
            ImportRejected: bad rows (each in ``.errors`` with its line and column).
            InvalidInput: a bad header, an undecodable file.
            PermissionDenied: the actor is not the municipality's staff.
            FileNotFoundError: no such file.
        """
    def issue_account(self, account: str, *, site_id: str, site_name: str, municipality: str | None = None) -> Account:
        """Issue a tablet account to a site of the staff's municipality."""
    def revoke_account(self, account: str) -> Account:
        """Revoke a tablet account; it can do nothing from then on."""
    def register_dose(
        self,
        ocr_line: str,
        *,
        date_given: _Date,
        product: str,
        lot: str,
        doctor: str,
        idempotency_key: str,
        dose_number: int | None = None,
        lot_expiry: _Date | None = None,
    ) -> Registration:
        """Register one dose read at a site (the actor must be a :class:`Site`).

        Registering again with the same ``idempotency_key`` returns the first result
        (``replayed=True``) and stores nothing new.

        Raises:
            DoseRejected: the input is refused; nothing was stored.
            PermissionDenied: the actor is not an active site account.
            Conflict: the key was used for another voucher.
        """
    def correct_dose(
        self,
        dose_id: str,
        *,
        reason: str,
        dose_number: int | None = None,
        date_given: _Date | None = None,
        product: str | None = None,
        lot: str | None = None,
        doctor: str | None = None,
        site_name: str | None = None,
        lot_expiry: _Date | None = None,
    ) -> DoseChange:
        """Correct a dose (補正): a new version with who, when and why.

        Raises:
            NotFound: no such dose.
            PermissionDenied: the actor may not correct it.
            InvalidInput: no reason, nothing would change, or the dose is voided.
        """
    def void_dose(self, dose_id: str, *, reason: str) -> DoseChange:
        """Void a dose with a reason; nothing is erased."""
    def dose(self, dose_id: str) -> Dose:
        """One dose, for whoever may see it."""
    def reconcile(self, municipality: str | None = None) -> Reconciliation:
        """Match the municipality's waiting doses to residents uploaded since."""
    def findings(self, municipality: str | None = None, *, open_only: bool = True) -> list[Finding]:
        """The municipality's review queue (要修正 must-fix / 要確認 to-check)."""
    def doses(self, municipality: str | None = None, *, since: int | None = None) -> Table:
        """The doses a municipality owns, one row per dose, as an Arrow :class:`Table`.

        With ``since`` (the ``cursor`` of an earlier table) only the doses written after it.

        On a redb store a full read (no ``since``) is served from a cache of the columns kept
        in the store file: the first full read after registrations or corrections rebuilds
        the parts they changed (the first read of a municipality builds it all, and takes
        several times as long as the reads after it).

        Raises:
            PermissionDenied: the actor is not the municipality's staff.
        """
    def residents(self, municipality: str | None = None) -> Table:
        """The residents a municipality uploaded, as an Arrow :class:`Table`.

        On a redb store the read is served from a cache of the columns kept in the store
        file: the first read after an upload of the municipality rebuilds it (and takes
        several times as long as the reads after it).

        Raises:
            PermissionDenied: the actor is not the municipality's staff.
        """
    def stats(self, *, municipality: str | None = None, prefecture: int | None = None) -> Table:
        """Aggregate dose counts by date, dose number, sex, age band and product.

        Without arguments: the staff's municipality, the reader's prefecture, or the
        whole country for a national reader.
        """
    def export_ledger(
        self,
        path: _Path,
        *,
        municipality: str | None = None,
        encoding: Literal["utf8", "utf-8", "sjis", "shift_jis", "cp932"] = "utf8",
        since: int | None = None,
        header: bool = True,
    ) -> LedgerExport:
        """Write the municipality's ledger (予防接種台帳向け出力) to ``path`` as CSV."""
    def export_fhir(self, *, municipality: str | None = None, addressee: str | None = None) -> dict[str, Any]:
        """A FHIR R4 ``Bundle`` (type ``collection``) of Patients and Immunizations, as a dict.

        The municipality's residents with their doses (voided ones ``entered-in-error``,
        doses under a previous municipality's voucher with a moved-in resident) and its
        unmatched doses (referring to their voucher); or one resident's (``addressee``,
        the 個別宛名番号). Products are coded in ``urn:jp:vrs:vaccine-product`` and CVX.

        Raises:
            PermissionDenied: the actor is not the municipality's staff.
            NotFound: no such resident.
        """
    def export_hl7(self, *, municipality: str | None = None, addressee: str | None = None) -> str:
        """HL7 v2.5.1 ``VXU^V04`` messages, one per dose: segments end in ``\\r``, messages in ``\\n``.

        MSH, PID, ORC, RXA (CVX and MVX codes, lot in RXA-15, manufacturer in RXA-17,
        action ``A``/``U``/``D`` in RXA-21), RXR; delimiters in names are escaped.

        Raises:
            PermissionDenied: the actor is not the municipality's staff.
        """
    def opendata(
        self,
        *,
        municipality: str | None = None,
        prefecture: int | None = None,
        suppress_below: int = 0,
        out_dir: _Path | None = None,
    ) -> list[dict[str, Any]]:
        """Open data in VRS's public schema: one dict per ``prefecture.ndjson`` line.

        Keys: ``date`` (``"YYYY-MM-DD"``), ``prefecture``, ``gender`` (F/M/U), ``age``
        (-64/65-/UNK), ``medical_worker``, ``status`` (the dose number), ``count``. The
        scope is chosen as in :meth:`stats`; groups of fewer than ``suppress_below`` doses
        are left out. With ``out_dir``, ``prefecture.ndjson`` and ``summary_by_date.csv``
        are written there too.

        Raises:
            PermissionDenied: outside the actor's scope.
        """
    def export_changes(
        self,
        path: _Path,
        *,
        municipality: str | None = None,
        since: int = 0,
        encoding: Literal["utf8", "utf-8", "sjis", "shift_jis", "cp932"] = "utf8",
        header: bool = True,
    ) -> int:
        """Write the ledger change log (台帳差分) after cursor ``since`` to ``path``; return the next cursor.

        One CSV line per dose written since, in its newest version, marked 登録
        (registered), 補正 (corrected), 取消 (voided) or 突合 (matched since). Exports
        chained by their cursors cover every change exactly once, even while doses are
        being registered.

        Raises:
            PermissionDenied: the actor is not the municipality's staff.
            InvalidInput: a value Shift_JIS cannot encode.
        """
    def import_fhir(self, bundle: dict[str, Any] | str | os.PathLike[str]) -> FhirImport:
        """Register a FHIR R4 Bundle's Immunizations as doses from this site (a :class:`Site`).

        ``bundle`` is a dict (as :meth:`export_fhir` returns), JSON text, or a path to a
        JSON file. ``entered-in-error`` Immunizations are voided after registration;
        importing the same Bundle again stores nothing new.

        Raises:
            InvalidInput: the Bundle cannot be read (the entry and field are named).
            PermissionDenied: the actor is not an active site account.
        """
