"""The whole VRS story from Python, on redb and on PostgreSQL: import (UTF-8 and
Shift_JIS), register, duplicate, correction, findings, reconciliation, export."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

import vrs

from conftest import NOW, ocr, write_residents


def test_full_story(store, staff, municipality, tmp_path):
    m = municipality
    # Residents: one file in UTF-8 (with a zero-padded addressee number), one in Shift_JIS.
    utf8 = write_residents(
        tmp_path / "utf8.csv",
        [
            ["000123", "0000000001", "接種太郎", "セッシュタロウ", "1950-04-01", "1"],
            ["45", "0000000002", "接種花子", "セッシュハナコ", "S22.5.3", "女"],
        ],
    )
    report = staff.import_residents(utf8)
    assert (report.rows_read, report.inserted, report.applied) == (2, 2, True)
    sjis = write_residents(
        tmp_path / "sjis.csv",
        [["46", "0000000003", "髙橋一郎", "タカハシイチロウ", "令和元年5月1日", "M"]],
        encoding="cp932",
    )
    assert staff.import_residents(sjis).inserted == 1  # detected
    assert staff.import_residents(sjis, encoding="sjis").replaced == 1  # told; same person again
    residents = pa.table(staff.residents())
    assert sorted(residents["name"].to_pylist()) == ["接種太郎", "接種花子", "髙橋一郎"]

    # A site registers doses.
    staff.issue_account(f"tab-{m}", site_id="venue-1", site_name="区民会館")
    site = staff.with_actor(vrs.Site(f"tab-{m}"))
    first = site.register_dose(
        ocr(m, "0000000001"), date_given=dt.date(2021, 6, 1), product="pfizer", lot="FA5765", doctor="佐藤一郎", idempotency_key=f"{m}-1"
    )
    assert first.matched and not first.findings and not first.replayed
    assert first.dose.addressee_number == "000123" and first.dose.maker == "ファイザー"
    again = site.register_dose(
        ocr(m, "0000000001"), date_given="2021-06-01", product="pfizer", lot="FA5765", doctor="佐藤一郎", idempotency_key=f"{m}-1"
    )
    assert again.replayed and again.dose.id == first.dose.id

    # The same dose again under another key: stored, flagged duplicate.
    dup = site.register_dose(
        ocr(m, "0000000001"), date_given="2021-06-01", product="pfizer", lot="FA5765", doctor="佐藤一郎", idempotency_key=f"{m}-2"
    )
    assert [f.kind for f in dup.findings] == ["duplicate"]
    # A voucher not uploaded yet: stored, unmatched.
    waiting = site.register_dose(
        ocr(m, "0000000009"), date_given="2021-06-02", product="moderna", lot="3004734", doctor="佐藤一郎", idempotency_key=f"{m}-3"
    )
    assert not waiting.matched and [f.kind for f in waiting.findings] == ["unmatched"]

    queue = {(f.dose_id, f.kind) for f in staff.findings()}
    assert queue == {(dup.dose.id, "duplicate"), (waiting.dose.id, "unmatched")}
    assert all(f.severity in ("must_fix", "to_check") for f in staff.findings())

    # Correction (補正): the duplicate was really dose 2, three weeks later.
    fixed = staff.correct_dose(dup.dose.id, reason="dose 2 misread as dose 1", dose_number=2, date_given="2021-06-22")
    assert fixed.dose.version == 2 and fixed.dose.dose_number == 2 and not fixed.findings
    assert [v.reason for v in fixed.dose.history] == [None, "dose 2 misread as dose 1"]
    assert {f.kind for f in staff.findings()} == {"unmatched"}
    assert {f.kind for f in staff.findings(open_only=False)} >= {"duplicate", "unmatched"}

    # The upload that carries the waiting voucher matches its dose.
    late = write_residents(tmp_path / "late.csv", [["47", "0000000009", "遅延次郎", "チエンジロウ", "1980/01/02", "1"]])
    report = staff.import_residents(late)
    assert report.matched == 1 and report.still_unmatched == 0
    assert staff.findings() == []

    # Doses as Arrow, then only what changed since.
    doses = pa.table(staff.doses())
    assert doses.num_rows == 3
    assert sorted(doses["dose_number"].to_pylist()) == [1, 1, 2]
    cursor = staff.doses().cursor
    voided = staff.void_dose(waiting.dose.id, reason="registered on the wrong voucher")
    assert voided.dose.voided
    delta = pa.table(staff.doses(since=cursor))
    assert delta["dose_id"].to_pylist() == [waiting.dose.id]
    assert delta["voided"].to_pylist() == [True]

    # Ledger export, UTF-8 and Shift_JIS: the addressee number as uploaded, zeros kept.
    out = staff.export_ledger(tmp_path / "ledger.csv")
    assert (out.rows, out.doses, out.blocks) == (1, 2, 2)
    text = (tmp_path / "ledger.csv").read_text(encoding="utf-8")
    assert text.splitlines()[0].startswith("個別宛名番号,1回目接種履歴登録日時")
    assert text.splitlines()[1].startswith("000123,")
    staff.export_ledger(tmp_path / "ledger-sjis.csv", encoding="sjis")
    assert (tmp_path / "ledger-sjis.csv").read_bytes().decode("cp932") == text
    delta_export = staff.export_ledger(tmp_path / "delta.csv", since=out.cursor)
    assert delta_export.cursor >= out.cursor

    # Statistics follow every change.
    stats = pa.table(staff.stats())
    assert sum(stats["count"].to_pylist()) == 2
    national = staff.with_actor(vrs.StatisticsReader())
    assert sum(pa.table(national.stats(municipality=m))["count"].to_pylist()) == 2


def test_context_manager_closes(store, municipality):
    with vrs.open(store, actor=f"staff:{municipality}", now=NOW) as db:
        assert isinstance(db.actor, vrs.Staff) and db.actor.municipality == municipality
    try:
        db.findings()
    except vrs.VrsError as e:
        assert "closed" in str(e)
    else:
        raise AssertionError("a closed registry must refuse calls")
