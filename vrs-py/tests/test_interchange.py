"""Interchange checked by parsers this project did not write: FHIR R4 Bundles validated
with ``fhir.resources`` (its R4 models), VXU^V04 messages parsed and validated with
``hl7apy``; a FHIR round trip into a fresh store; open data recounted from the doses.

The store has a correction, a void, an unmatched dose, a resident who moved in from
another municipality (with a dose under the previous voucher), and a name holding every
HL7 delimiter ``|^~\\&``.
"""

from __future__ import annotations

import collections
import datetime as dt
import json

import fhir.resources
import pyarrow as pa
import pytest
from fhir.resources import get_fhir_model_class
from fhir.resources.bundle import Bundle
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

import vrs

from conftest import NOW, HEADER_JA, fresh_municipality, ocr, write_residents

TRICKY = "山田|太郎^&~\\"
HEADER_MOVES = HEADER_JA + ["転入前自治体コード", "転入前券番号"]


def test_the_models_are_fhir_r4():
    # fhir.resources 6.4 is FHIR 4.0.1 (R4); 6.5 defaults to R4B, 7+ to R5.
    assert fhir.resources.__fhir_version__ == "4.0.1"


@pytest.fixture
def world(store, staff, municipality, tmp_path):
    """The story on one store; returns (staff of m, staff of the previous municipality,
    the previous municipality's code, the dose ids by case)."""
    m = municipality
    prev = fresh_municipality()
    staff_prev = staff.with_actor(vrs.Staff(prev, user="tanaka"))
    # The person who will move: first a resident of `prev`, vaccinated there.
    staff_prev.import_residents(
        write_residents(tmp_path / "prev.csv", [["900", "0000000900", "転出一郎", "テンシュツイチロウ", "1940-01-15", "1"]])
    )
    staff_prev.issue_account(f"tab-{prev}", site_id="venue-prev", site_name="旧住所会場")
    site_prev = staff.with_actor(vrs.Site(f"tab-{prev}"))
    moved_dose = site_prev.register_dose(
        ocr(prev, "0000000900"), date_given="2021-05-20", product="pfizer", lot="EY0779", doctor="中村|医師", idempotency_key=f"{prev}-m1"
    )
    assert moved_dose.matched

    staff.import_residents(
        write_residents(
            tmp_path / "m.csv",
            [
                ["1", "0000000001", TRICKY, "ヤマダタロウ", "1950-04-01", "1", "", ""],
                ["2", "0000000002", "接種花子", "セッシュハナコ", "1980-05-03", "2", "", ""],
                ["3", "0000000003", "転出一郎", "テンシュツイチロウ", "1940-01-15", "1", prev, "0000000900"],
            ],
            header=HEADER_MOVES,
        )
    )
    staff.issue_account(f"tab-{m}", site_id="venue-1", site_name="区民会館^本館")
    site = staff.with_actor(vrs.Site(f"tab-{m}"))

    def reg(voucher: str, dose: int, date: str, lot: str, key: str, product: str = "pfizer"):
        return site.register_dose(
            ocr(m, voucher, dose), date_given=date, product=product, lot=lot, doctor="佐藤~一郎", idempotency_key=f"{m}-{key}"
        )

    reg("0000000001", 1, "2021-06-01", "FA5765", "t1")
    second = reg("0000000001", 2, "2021-06-10", "FA5766", "t2")
    staff.correct_dose(second.dose.id, reason="date misread", date_given="2021-06-22")
    wrong = reg("0000000002", 1, "2021-06-02", "3004734", "h1", product="moderna")
    staff.void_dose(wrong.dose.id, reason="wrong voucher & wrong person")
    reg("0000000002", 1, "2021-06-03", "3004667", "h2", product="moderna")
    unmatched = reg("0000000099", 1, "2021-06-04", "FC3661", "u1")
    assert not unmatched.matched
    reg("0000000003", 2, "2021-06-25", "FF2782", "m2")
    return staff, staff_prev, prev, {"corrected": second.dose.id, "voided": wrong.dose.id, "moved": moved_dose.dose.id}


def immunizations(bundle: dict) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Immunization"]


# ---- FHIR ------------------------------------------------------------------------------


def validate_bundle(bundle: dict) -> Bundle:
    """Parses the Bundle with the R4 models, and every entry's resource with its own model."""
    parsed = Bundle.parse_obj(bundle)
    assert parsed.type == "collection"
    for entry in bundle["entry"]:
        resource = entry["resource"]
        model = get_fhir_model_class(resource["resourceType"])
        model.parse_obj(resource)  # raises pydantic.ValidationError when invalid
        assert entry["fullUrl"].startswith("urn:uuid:")
    # The models read the same JSON back.
    assert json.loads(parsed.json())["resourceType"] == "Bundle"
    return parsed


def test_every_fhir_bundle_validates_with_fhir_resources(world):
    staff, _, prev, ids = world
    bundle = staff.export_fhir()
    parsed = validate_bundle(bundle)
    kinds = collections.Counter(e.resource.resource_type for e in parsed.entry)
    assert kinds == {"Patient": 3, "Immunization": 7}, kinds

    imms = {r["id"]: r for r in immunizations(bundle)}
    assert imms[ids["voided"]]["status"] == "entered-in-error"
    assert sum(r["status"] == "completed" for r in imms.values()) == 6
    assert imms[ids["corrected"]]["occurrenceDateTime"] == "2021-06-22"
    # The moved-in resident's dose under the previous municipality's voucher comes along.
    moved = imms[ids["moved"]]
    assert {"system": f"urn:jp:vrs:{prev}:voucher-number", "value": "0000000900"} in moved["identifier"]
    assert moved["patient"]["reference"].startswith("urn:uuid:")
    # The unmatched dose refers to its voucher; CVX next to the catalogue's product code.
    unmatched = [r for r in imms.values() if "identifier" in r["patient"]]
    assert [r["patient"]["identifier"]["value"] for r in unmatched] == ["0000000099"]
    systems = {c["system"]: c["code"] for c in moved["vaccineCode"]["coding"]}
    assert systems == {"urn:jp:vrs:vaccine-product": "pfizer", "http://hl7.org/fhir/sid/cvx": "208"}
    # The name as written, delimiters and all, with its kana reading.
    names = [p.name for e in parsed.entry if e.resource.resource_type == "Patient" for p in [e.resource]]
    assert [TRICKY, "ヤマダタロウ"] in [[n.text for n in ns] for ns in names]

    # One resident at a time: each validates too.
    for addressee, doses in [("1", 2), ("2", 2), ("3", 2)]:
        one = staff.export_fhir(addressee=addressee)
        validate_bundle(one)
        assert len(immunizations(one)) == doses, addressee
    with pytest.raises(vrs.NotFound):
        staff.export_fhir(addressee="404")


def essence(table) -> list[tuple]:
    t = pa.table(table)
    cols = ["municipality", "voucher_number", "dose_number", "date_given", "product", "lot", "doctor", "voided"]
    return sorted(zip(*(t[c].to_pylist() for c in cols)))


def test_fhir_round_trip_into_a_fresh_store(world, tmp_path):
    staff, staff_prev, prev, _ = world
    m = staff.actor.municipality
    bundle = staff.export_fhir()
    fresh = vrs.open(tmp_path / "fresh" / "vrs.redb", actor=vrs.Staff(m), now=NOW)
    try:
        fresh.issue_account(f"imp-{m}", site_id="importer", site_name="取込")
        importer = fresh.with_actor(vrs.Site(f"imp-{m}"))
        report = importer.import_fhir(bundle)
        assert (report.registered, report.replayed, report.voided, report.rejected) == (7, 0, 1, []), report
        before = essence(staff.doses()) + essence(staff_prev.doses())
        after = essence(fresh.doses()) + essence(fresh.with_actor(vrs.Staff(prev)).doses())
        assert sorted(after) == sorted(before)
        # Again, as JSON text: nothing new.
        again = importer.import_fhir(json.dumps(bundle, ensure_ascii=False))
        assert (again.registered, again.replayed, again.voided) == (0, 7, 0)
        assert sorted(essence(fresh.doses()) + essence(fresh.with_actor(vrs.Staff(prev)).doses())) == sorted(before)
        # The re-exported Bundle validates as well.
        validate_bundle(fresh.export_fhir())
        # A Bundle that is not one: refused, naming the field.
        with pytest.raises(vrs.InvalidInput, match="resourceType"):
            importer.import_fhir({"resourceType": "Patient"})
    finally:
        fresh.close()


# ---- HL7 v2 ----------------------------------------------------------------------------


def unescape(text: str, enc: dict) -> str:
    """HL7 v2 escape sequences back to the delimiters, with the message's own characters."""
    esc = enc["ESCAPE"]
    table = {"F": enc["FIELD"], "S": enc["COMPONENT"], "T": enc["SUBCOMPONENT"], "R": enc["REPETITION"], "E": esc}
    out, i = [], 0
    while i < len(text):
        if text[i] == esc and i + 2 < len(text) and text[i + 2] == esc and text[i + 1] in table:
            out.append(table[text[i + 1]])
            i += 3
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def test_every_vxu_message_parses_and_validates_strictly_with_hl7apy(world):
    staff, _, prev, ids = world
    text = staff.export_hl7()
    messages = [m for m in text.split("\n") if m]
    assert len(messages) == 7
    actions = collections.Counter()
    names = set()
    for raw in messages:
        # STRICT: the parse checks every segment, field and datatype against v2.5.1, and
        # validate() the VXU_V04 structure (required segments and fields, cardinality).
        msg = parse_message(raw, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
        msg.validate()
        assert msg.name == "VXU_V04" and msg.version == "2.5.1"
        assert msg.msh.msh_9.to_er7() == "VXU^V04^VXU_V04"
        order = msg.vxu_v04_order
        rxa = order.rxa
        actions[rxa.rxa_21.to_er7()] += 1
        assert rxa.rxa_3.to_er7() == rxa.rxa_4.to_er7()
        assert rxa.rxa_5.ce_3.to_er7() == "CVX"
        assert rxa.rxa_15.to_er7() != ""
        assert order.rxr.rxr_1.to_er7() == "C28161^Intramuscular^NCIT"
        for rep in msg.pid.pid_5:
            names.add(unescape(rep.xpn_1.to_er7(), msg.encoding_chars))
        # The doctor's name, with a ~ in it, round-trips as well.
        assert unescape(rxa.rxa_10.xcn_2.to_er7(), msg.encoding_chars) in ("佐藤~一郎", "中村|医師")
    assert TRICKY in names and "ヤマダタロウ" in names and "転出一郎" in names
    assert actions == {"A": 5, "U": 1, "D": 1}, actions

    # One resident: only their doses.
    one = [parse_message(m, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True) for m in staff.export_hl7(addressee="3").split("\n") if m]
    for msg in one:
        msg.validate()
    # The moved-in resident's doses: one sent for the previous municipality's voucher.
    assert sorted(msg.msh.msh_4.to_er7() for msg in one) == sorted([staff.actor.municipality, prev])


# ---- open data -------------------------------------------------------------------------


def age_label(birth: dt.date, on: dt.date) -> str:
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    return "65-" if years >= 65 else "-64"


def recount(staff) -> collections.Counter:
    """Open-data groups counted from the doses and residents themselves."""
    doses = pa.table(staff.doses()).to_pylist()
    residents = {(r["municipality"], r["addressee_number"]): r for r in pa.table(staff.residents()).to_pylist()}
    counts: collections.Counter = collections.Counter()
    for d in doses:
        if d["voided"]:
            continue
        r = residents.get((d["resident_municipality"], d["addressee_number"]))
        if r is None and d["resident_municipality"] is not None:
            r = {  # matched to a resident of another municipality: read it there
                (x["municipality"], x["addressee_number"]): x
                for x in pa.table(staff.with_actor(vrs.Staff(d["resident_municipality"])).residents()).to_pylist()
            }[(d["resident_municipality"], d["addressee_number"])]
        gender = r["sex"] if r else "U"
        age = age_label(r["birth_date"], d["date_given"]) if r else "UNK"
        key = (d["date_given"].isoformat(), d["municipality"][:2], gender, age, False, d["dose_number"])
        counts[key] += 1
    return counts


def test_open_data_counts_equal_a_recount_from_doses(world, tmp_path):
    staff, staff_prev, prev, _ = world
    for who in (staff, staff_prev):
        rows = who.opendata()
        assert rows and all(set(r) == {"date", "prefecture", "gender", "age", "medical_worker", "status", "count"} for r in rows)
        got = collections.Counter(
            {(r["date"], r["prefecture"], r["gender"], r["age"], r["medical_worker"], r["status"]): r["count"] for r in rows}
        )
        assert len(got) == len(rows), "one line per group"
        assert got == recount(who)
    # The files: the same lines, and the per-date totals add up.
    rows = staff.opendata(out_dir=tmp_path / "open")
    lines = [json.loads(line) for line in (tmp_path / "open" / "prefecture.ndjson").read_text(encoding="utf-8").splitlines()]
    assert lines == rows
    summary = (tmp_path / "open" / "summary_by_date.csv").read_text(encoding="utf-8").splitlines()
    assert summary[0].startswith("date,count_shot1_general,count_shot1_elderly")
    assert sum(int(line.rsplit(",", 1)[1]) for line in summary[1:]) == sum(r["count"] for r in rows) == 5
    # Small-cell suppression leaves out the groups under the threshold.
    assert all(r["count"] >= 2 for r in staff.opendata(suppress_below=2))


# ---- the change log --------------------------------------------------------------------


def test_change_log_chains_by_cursor_and_marks_voids(world, tmp_path):
    staff, _, _, ids = world
    m = staff.actor.municipality
    first = tmp_path / "changes-1.csv"
    cursor = staff.export_changes(first)
    lines = first.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("記録ID,版,区分,")
    kinds = {line.split(",")[0]: line.split(",")[2] for line in lines[1:]}
    assert len(kinds) == 6
    assert kinds[ids["voided"]] == "取消" and kinds[ids["corrected"]] == "補正"
    # Nothing new since: only a header.
    assert staff.export_changes(tmp_path / "empty.csv", since=cursor) == cursor
    assert len((tmp_path / "empty.csv").read_text(encoding="utf-8").splitlines()) == 1
    # A new dose: the next export has it alone, in Shift_JIS.
    staff.with_actor(vrs.Site(f"tab-{m}")).register_dose(
        ocr(m, "0000000002", 2), date_given="2021-06-30", product="moderna", lot="3005236", doctor="佐藤一郎", idempotency_key=f"{m}-h3"
    )
    second = tmp_path / "changes-2.csv"
    assert staff.export_changes(second, since=cursor, encoding="sjis", header=False) > cursor
    lines = second.read_bytes().decode("cp932").splitlines()
    assert len(lines) == 1 and ",登録," in lines[0]
