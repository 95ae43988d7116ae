"""Each exception class raised for its cause; nothing reaches Python as a bare
RuntimeError or a Rust panic."""

from __future__ import annotations

import datetime as dt

import pytest

import vrs

from conftest import NOW, ocr, write_residents


def test_hierarchy():
    for cls in (vrs.InvalidInput, vrs.PermissionDenied, vrs.NotFound, vrs.Conflict, vrs.StorageError):
        assert issubclass(cls, vrs.VrsError) and not issubclass(cls, RuntimeError)
    assert issubclass(vrs.ImportRejected, vrs.InvalidInput)
    assert issubclass(vrs.DoseRejected, vrs.InvalidInput)


def test_invalid_input_names_the_field():
    with pytest.raises(vrs.InvalidInput) as e:
        vrs.Staff("131017")  # wrong check digit
    assert e.value.field == "municipality_code" and "check digit" in e.value.reason
    with pytest.raises(vrs.InvalidInput):
        vrs.StatisticsReader(prefecture=48)
    with pytest.raises(vrs.InvalidInput):
        vrs.open("whatever.redb", actor="nobody")


def test_import_rejected_carries_line_and_column(staff, tmp_path):
    bad = write_residents(
        tmp_path / "bad.csv",
        [
            ["1", "0000000001", "接種太郎", "セッシュタロウ", "1950-04-01", "1"],
            ["2", "0000000002", "接種花子", "セッシュハナコ", "1950-13-45", "2"],
            ["3", "123", "接種三郎", "セッシュサブロウ", "1950-01-01", "1"],
        ],
    )
    with pytest.raises(vrs.ImportRejected) as e:
        staff.import_residents(bad)
    err = e.value
    assert (err.line, err.column) == (3, "birth_date")
    assert [(r.line, r.column) for r in err.errors] == [(3, "birth_date"), (4, "voucher_number")]
    assert err.report.applied is False and err.report.rows_invalid == 2
    assert "line 3" in str(err)
    assert len(vrs.Staff(staff.actor.municipality).municipality) == 6
    import pyarrow as pa

    assert pa.table(staff.residents()).num_rows == 0  # nothing applied
    report = staff.import_residents(bad, skip_invalid=True)
    assert report.applied and report.inserted == 1 and [r.line for r in report.errors] == [3, 4]


def test_undecodable_or_headerless_file_is_invalid_input(staff, tmp_path):
    p = tmp_path / "nonsense.csv"
    p.write_text("a,b,c\n1,2,3\n", encoding="utf-8")
    with pytest.raises(vrs.InvalidInput) as e:
        staff.import_residents(p)
    assert e.value.reason
    with pytest.raises(vrs.InvalidInput):
        staff.import_residents(p, encoding="latin-1")
    with pytest.raises(FileNotFoundError):
        staff.import_residents(tmp_path / "missing.csv")


def test_dose_rejected_and_conflict_and_not_found(staff, municipality):
    staff.issue_account(f"tab-{municipality}", site_id="venue-1", site_name="会場")
    with pytest.raises(vrs.Conflict) as e:
        staff.issue_account(f"tab-{municipality}", site_id="venue-1", site_name="会場")
    assert e.value.what
    site = staff.with_actor(vrs.Site(f"tab-{municipality}"))
    args = dict(product="pfizer", lot="FA5765", doctor="佐藤")
    with pytest.raises(vrs.DoseRejected) as e:
        site.register_dose(ocr(municipality, "0000000001"), date_given=NOW.date() + dt.timedelta(days=1), idempotency_key="k0", **args)
    assert e.value.kind == "future_date" and e.value.column == "date_given"
    with pytest.raises(vrs.DoseRejected) as e:
        site.register_dose("1234", date_given="2021-06-01", idempotency_key="k1", **args)
    assert e.value.kind == "malformed_ocr" and e.value.column == "ocr_line"
    with pytest.raises(vrs.InvalidInput):
        site.register_dose(ocr(municipality, "0000000001"), date_given="June 1st", idempotency_key="k2", **args)
    site.register_dose(ocr(municipality, "0000000001"), date_given="2021-06-01", idempotency_key="k3", **args)
    with pytest.raises(vrs.Conflict):  # the same key for another voucher
        site.register_dose(ocr(municipality, "0000000002"), date_given="2021-06-01", idempotency_key="k3", **args)
    with pytest.raises(vrs.NotFound) as e:
        staff.dose("0" * 32)
    assert "dose" in e.value.what
    with pytest.raises(vrs.InvalidInput):
        staff.dose("not-a-dose-id")


def test_permission_denied(staff, municipality):
    staff.issue_account(f"tab-{municipality}", site_id="venue-1", site_name="会場")
    site = staff.with_actor(vrs.Site(f"tab-{municipality}"))
    with pytest.raises(vrs.InvalidInput):
        site.residents()  # the municipality defaults only for staff
    with pytest.raises(vrs.PermissionDenied) as e:
        site.residents(municipality)
    assert e.value.operation == "read residents" and e.value.reason
    with pytest.raises(vrs.PermissionDenied):
        site.doses(municipality)
    with pytest.raises(vrs.PermissionDenied):
        staff.register_dose(ocr(municipality, "0000000001"), date_given="2021-06-01", product="pfizer", lot="FA5765", doctor="x", idempotency_key="k")
    other = "131041" if municipality != "131041" else "131016"
    with pytest.raises(vrs.PermissionDenied):
        staff.doses(other)
    with pytest.raises(vrs.PermissionDenied):
        staff.with_actor(vrs.StatisticsReader(prefecture=13)).findings(municipality)
    with pytest.raises(vrs.PermissionDenied):
        staff.with_actor(vrs.Site("never-issued")).register_dose(
            ocr(municipality, "0000000001"), date_given="2021-06-01", product="pfizer", lot="FA5765", doctor="x", idempotency_key="k"
        )


def test_storage_error(tmp_path):
    not_a_store = tmp_path / "garbage.redb"
    not_a_store.write_bytes(b"this is not a redb file" * 100)
    with pytest.raises(vrs.StorageError):
        vrs.open(not_a_store, actor="national")


def test_naive_now_is_refused(tmp_path):
    with pytest.raises(vrs.InvalidInput):
        vrs.open(tmp_path / "x.redb", actor="national", now=dt.datetime(2021, 7, 1))
