"""vrs: the vaccination record system (modelled on Japan's VRS) for data teams.

Open a store, load residents, register and query doses, and take the results into
pyarrow, polars or pandas without copying row by row::

    import vrs

    db = vrs.open("vrs-data/vrs.redb", actor=vrs.Staff("131016", user="suzuki"))
    report = db.import_residents("chiyoda.csv")          # UTF-8 or Shift_JIS, detected
    doses = db.doses()                                   # a vrs.Table (Arrow)
    df = polars.DataFrame(doses)                         # or pyarrow.table(doses)

Interchange: ``db.export_fhir()`` (a FHIR R4 Bundle as a dict), ``db.export_hl7()``
(HL7 v2.5.1 VXU^V04 messages), ``db.opendata()`` (VRS's public open-data rows),
``db.export_changes(path, since=cursor)`` (the ledger change log) and, from a site,
``db.import_fhir(bundle)``.

Every error is a :class:`VrsError`: :class:`InvalidInput` (with ``line``/``column``
where there is one; :class:`ImportRejected` and :class:`DoseRejected` are kinds of it),
:class:`PermissionDenied`, :class:`NotFound`, :class:`Conflict` and :class:`StorageError`.
Long operations release the GIL.
"""

from __future__ import annotations

from typing import Union

from ._vrs import (
    Account,
    Conflict,
    Dose,
    DoseChange,
    DoseRejected,
    DoseVersion,
    FhirImport,
    Finding,
    ImportRejected,
    ImportReport,
    InvalidInput,
    LedgerExport,
    NotFound,
    OcrLine,
    PermissionDenied,
    Reconciliation,
    Registration,
    Registry,
    RowError,
    Site,
    Staff,
    StatisticsReader,
    StorageError,
    Table,
    VrsError,
    __version__,
    open,
    parse_ocr,
)

#: Who is calling: a municipality's staff, a site's tablet account, a statistics reader,
#: or the same as a string ("staff:131016", "site:tablet-1", "national", "prefecture:13").
Actor = Union[Staff, Site, StatisticsReader, str]

__all__ = [
    "Account",
    "Actor",
    "Conflict",
    "Dose",
    "DoseChange",
    "DoseRejected",
    "DoseVersion",
    "FhirImport",
    "Finding",
    "ImportRejected",
    "ImportReport",
    "InvalidInput",
    "LedgerExport",
    "NotFound",
    "OcrLine",
    "PermissionDenied",
    "Reconciliation",
    "Registration",
    "Registry",
    "RowError",
    "Site",
    "Staff",
    "StatisticsReader",
    "StorageError",
    "Table",
    "VrsError",
    "__version__",
    "open",
    "parse_ocr",
]
