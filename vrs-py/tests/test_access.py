"""Every public method of ``vrs.Registry`` (its ``dir()``), called for real as each of
seven actors and compared with the access table kept here (issue 7). A new public method
without a row fails the test; so does a method that lets an actor through whom the table
refuses, or refuses one it allows."""

from __future__ import annotations

import datetime as dt

import pytest

import vrs
from conftest import NOW, write_residents

CHIYODA = "131016"
SHINJUKU = "131041"

#: The actors of every row, in this order.
ACTORS = [
    ("staff of 千代田区", lambda: vrs.Staff(CHIYODA, user="a")),
    ("staff of 新宿区", lambda: vrs.Staff(SHINJUKU, user="b")),
    ("site in 千代田区", lambda: vrs.Site("venue")),
    ("revoked site", lambda: vrs.Site("revoked")),
    ("national reader", lambda: vrs.StatisticsReader()),
    ("Tokyo reader", lambda: vrs.StatisticsReader(13)),
    ("Hokkaido reader", lambda: vrs.StatisticsReader(1)),
]

Y, N = True, False
STAFF_ONLY = [Y, N, N, N, N, N, N]
SITE_ONLY = [N, N, Y, N, N, N, N]
STAFF_OR_SITE = [Y, N, Y, N, N, N, N]
STATS = [Y, N, N, N, Y, Y, N]


def _reg(key: str) -> dict:
    return dict(date_given=dt.date(2021, 6, 30), product="pfizer", lot="FA5765", doctor="佐藤一郎", idempotency_key=key)


#: method -> (who may, call(registry, fixture)); or a string: why it touches no data.
TABLE = {
    "actor": "the registry's own actor",
    "with_actor": "a handle on the same store as another actor: every call is then checked as that actor",
    "close": "closes the store",
    "import_residents": (STAFF_ONLY, lambda r, f: r.import_residents(f["more"], municipality=CHIYODA)),
    "issue_account": (
        STAFF_ONLY,
        lambda r, f: r.issue_account("tab-new", site_id="venue-2", site_name="千代田区役所", municipality=CHIYODA),
    ),
    "revoke_account": (STAFF_ONLY, lambda r, f: r.revoke_account("venue")),
    "register_dose": (SITE_ONLY, lambda r, f: r.register_dose(f"11{CHIYODA}0000000002", **_reg("py-2"))),
    "correct_dose": (STAFF_OR_SITE, lambda r, f: r.correct_dose(f["dose"], reason="lot misread", lot="FA5766")),
    "void_dose": (STAFF_OR_SITE, lambda r, f: r.void_dose(f["dose"], reason="wrong person")),
    "dose": (STAFF_OR_SITE, lambda r, f: r.dose(f["dose"])),
    "reconcile": (STAFF_ONLY, lambda r, f: r.reconcile(CHIYODA)),
    "findings": (STAFF_ONLY, lambda r, f: r.findings(CHIYODA, open_only=False)),
    "doses": (STAFF_ONLY, lambda r, f: r.doses(CHIYODA)),
    "residents": (STAFF_ONLY, lambda r, f: r.residents(CHIYODA)),
    "stats": (STATS, lambda r, f: r.stats(municipality=CHIYODA)),
    "export_ledger": (STAFF_ONLY, lambda r, f: r.export_ledger(f["dir"] / "ledger.csv", municipality=CHIYODA)),
    "export_fhir": (STAFF_ONLY, lambda r, f: r.export_fhir(municipality=CHIYODA)),
    "export_hl7": (STAFF_ONLY, lambda r, f: r.export_hl7(municipality=CHIYODA)),
    "opendata": (STATS, lambda r, f: r.opendata(municipality=CHIYODA)),
    "export_changes": (STAFF_ONLY, lambda r, f: r.export_changes(f["dir"] / "changes.csv", municipality=CHIYODA)),
    "import_fhir": (SITE_ONLY, lambda r, f: r.import_fhir(f["bundle"])),
}


def _fixture(tmp_path, name: str) -> tuple[str, dict]:
    """A store with residents of 千代田区, accounts ``venue`` (one dose registered today)
    and ``revoked`` (revoked), and a FHIR Bundle of the dose."""
    d = tmp_path / name
    d.mkdir()
    store = str(d / "vrs.redb")
    rows = [["1", "0000000001", "接種太郎", "セッシュタロウ", "1950-04-01", "1"], ["2", "0000000002", "接種花子", "セッシュハナコ", "1980-05-03", "2"]]
    with vrs.open(store, actor=vrs.Staff(CHIYODA), now=NOW) as staff:
        staff.import_residents(write_residents(d / "residents.csv", rows), municipality=CHIYODA)
        staff.issue_account("venue", site_id="venue-1", site_name="千代田区民会館", municipality=CHIYODA)
        staff.issue_account("revoked", site_id="venue-1", site_name="千代田区民会館", municipality=CHIYODA)
        staff.revoke_account("revoked")
        site = staff.with_actor(vrs.Site("venue"))
        dose = site.register_dose(f"11{CHIYODA}0000000001", **_reg("py-1")).dose.id
        bundle = staff.export_fhir(municipality=CHIYODA)
    more = write_residents(d / "more.csv", [["3", "0000000003", "接種次郎", "セッシュジロウ", "1960-01-01", "1"]])
    return store, {"dose": dose, "bundle": bundle, "more": more, "dir": d}


def test_every_public_method_is_checked_against_the_actor(tmp_path):
    public = {n for n in dir(vrs.Registry) if not n.startswith("_")}
    assert public - TABLE.keys() == set(), f"public Registry methods without a row in the access table: {public - TABLE.keys()}"
    assert TABLE.keys() - public == set(), f"rows for methods that no longer exist: {TABLE.keys() - public}"
    failures, cells = [], 0
    for method, row in TABLE.items():
        if isinstance(row, str):
            continue
        allowed, call = row
        for (who, make), may in zip(ACTORS, allowed, strict=True):
            cells += 1
            store, fixture = _fixture(tmp_path, f"cell{cells}")
            with vrs.open(store, actor=make(), now=NOW) as registry:
                try:
                    call(registry, fixture)
                    got = True
                except vrs.PermissionDenied:
                    got = False
                except vrs.VrsError as e:
                    failures.append(f"{method} as {who}: {type(e).__name__}: {e}")
                    continue
            if got != may:
                failures.append(f"{method} as {who}: expected allowed={may}, got allowed={got}")
    assert not failures, f"{len(failures)} of {cells} cells wrong:\n" + "\n".join(failures)
    print(f"access table: {len(TABLE)} public Registry methods, {cells} actor x method cells run")


def test_a_revoked_account_is_refused_on_a_registry_already_open(tmp_path):
    store, _ = _fixture(tmp_path, "revocation")
    with vrs.open(store, actor=vrs.Staff(CHIYODA), now=NOW) as staff:
        site = staff.with_actor(vrs.Site("venue"))
        site.register_dose(f"11{CHIYODA}0000000002", **_reg("py-3"))
        staff.revoke_account("venue")
        with pytest.raises(vrs.PermissionDenied, match="revoked"):
            site.register_dose(f"12{CHIYODA}0000000002", **_reg("py-4"))
