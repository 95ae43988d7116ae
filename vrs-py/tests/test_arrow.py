"""Arrow results taken by pyarrow, polars and pandas with the right types: dates as
date32, instants with their time zone, codes as strings that keep their leading zeros."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import vrs

from conftest import NOW, ocr, write_residents


@pytest.fixture
def loaded(staff, municipality, tmp_path):
    write_residents(
        tmp_path / "r.csv",
        [
            ["000123", "0000000001", "接種太郎", "セッシュタロウ", "1950-04-01", "1"],
            ["0045", "0012345678", "接種花子", "セッシュハナコ", "1990-12-31", "2"],
        ],
    )
    staff.import_residents(tmp_path / "r.csv")
    staff.issue_account(f"tab-{municipality}", site_id="clinic-1", site_name="クリニック")
    site = staff.with_actor(f"site:tab-{municipality}")
    for i, voucher in enumerate(["0000000001", "0012345678"]):
        site.register_dose(
            ocr(municipality, voucher), date_given="2021-06-01", product="pfizer", lot="FA5765", doctor="佐藤", idempotency_key=f"{municipality}-{i}"
        )
    return staff


def test_pyarrow_types(loaded, municipality):
    doses = pa.table(loaded.doses())
    schema = doses.schema
    assert schema.field("date_given").type == pa.date32()
    assert schema.field("registered_at").type == pa.timestamp("us", tz="Asia/Tokyo")
    for code in ("municipality", "voucher_number", "addressee_number", "administering_municipality"):
        assert schema.field(code).type == pa.string_view(), code
    assert schema.field("dose_number").type == pa.uint8()
    assert sorted(doses["voucher_number"].to_pylist()) == ["0000000001", "0012345678"]
    assert sorted(doses["addressee_number"].to_pylist()) == ["000123", "0045"]
    assert doses["date_given"].to_pylist() == [dt.date(2021, 6, 1)] * 2
    assert doses["registered_at"][0].as_py().utcoffset() == dt.timedelta(hours=9)

    residents = pa.table(loaded.residents())
    assert residents.schema.field("birth_date").type == pa.date32()
    assert sorted(residents["addressee_number"].to_pylist()) == ["000123", "0045"]
    assert set(residents["municipality"].to_pylist()) == {municipality}

    stats = pa.table(loaded.stats())
    assert stats.schema.field("date").type == pa.date32()
    assert stats.schema.field("prefecture").type == pa.string_view()
    assert stats["prefecture"].to_pylist()[0] == municipality[:2]

    # The capsule can be taken more than once, and the schema alone too.
    assert pa.table(loaded.doses()).num_rows == pa.table(loaded.doses()).num_rows == 2
    assert pa.schema(loaded.doses()) == schema
    t = loaded.doses()
    assert len(t) == t.num_rows == 2 and t.column_names == schema.names and t.nbytes > 0


def test_polars_types(loaded):
    df = pl.DataFrame(loaded.doses())
    assert df.schema["date_given"] == pl.Date
    assert df.schema["registered_at"] == pl.Datetime("us", "Asia/Tokyo")
    assert df.schema["voucher_number"] == pl.String
    assert sorted(df["addressee_number"].to_list()) == ["000123", "0045"]
    # from_arrow on a PyCapsule object gives a struct Series in polars ≥ 2; unnest it.
    via = pl.from_arrow(loaded.doses())
    frame = via.struct.unnest() if isinstance(via, pl.Series) else via
    assert frame.columns == df.columns and frame.height == 2
    residents = loaded.residents().to_polars()
    assert residents.schema["birth_date"] == pl.Date
    assert sorted(residents["addressee_number"].to_list()) == ["000123", "0045"]


def test_pandas_types(loaded):
    df = loaded.doses().to_pandas()
    assert str(df["registered_at"].dtype) == "datetime64[us, Asia/Tokyo]"
    assert pd.api.types.is_string_dtype(df["voucher_number"])
    assert sorted(df["addressee_number"]) == ["000123", "0045"]
    assert list(df["date_given"]) == [dt.date(2021, 6, 1)] * 2
    residents = pa.table(loaded.residents()).to_pandas()
    assert sorted(residents["voucher_number"]) == ["0000000001", "0012345678"]


def test_empty_tables_keep_their_schema(staff):
    t = pa.table(staff.doses())
    assert t.num_rows == 0 and t.schema.field("date_given").type == pa.date32()
    assert pl.DataFrame(staff.residents()).height == 0


def test_reads_in_several_batches_keep_the_store_order(tmp_path, municipality):
    """Residents and doses are decoded in chunks on several threads and built into record
    batches on several more: the table still holds every row once, in the store's order
    (residents by addressee length then digits, doses by voucher), whatever the cache. The
    redb store keeps residents as column segments of at most 65,536: 70,000 make two."""
    registered = [str(i) for i in range(1, 400, 3)] + ["000123", "0045"]
    addressees = registered + [str(i) for i in range(100_000, 170_000)]
    rows = [[a, f"{(i * 7919) % 10**10:010d}", "接種太郎", "セッシュタロウ", "1950-04-01", "1"] for i, a in enumerate(addressees)]
    write_residents(tmp_path / "r.csv", rows)
    db = vrs.open(tmp_path / "store" / "vrs.redb", actor=vrs.Staff(municipality, user="suzuki"), now=NOW, cache_bytes=1 << 20)
    db.import_residents(tmp_path / "r.csv")
    db.issue_account(f"tab-{municipality}", site_id="clinic-1", site_name="クリニック")
    site = db.with_actor(f"site:tab-{municipality}")
    vouchers = [r[1] for r in rows[: len(registered) : 2]]
    for i, voucher in enumerate(vouchers):
        site.register_dose(ocr(municipality, voucher), date_given="2021-06-01", product="pfizer", lot="FA5765", doctor="佐藤", idempotency_key=f"{municipality}-{i}")

    residents = pa.table(db.residents())
    assert residents["addressee_number"].to_pylist() == sorted(addressees, key=lambda a: (len(a), a))
    assert len(residents.to_batches()) > 1
    doses = pa.table(db.doses())
    assert doses["voucher_number"].to_pylist() == sorted(vouchers)
    assert len(doses.to_batches()) > 1
    by_voucher = dict(zip((r[1] for r in rows), addressees))
    assert doses["addressee_number"].to_pylist() == [by_voucher[v] for v in sorted(vouchers)]
    assert pl.DataFrame(db.doses()).height == len(vouchers)
    db.close()


def test_code_columns_of_runs_and_of_distinct_values_read_back(tmp_path, municipality):
    """A code column that is a few long runs of one value (the municipality, sex here,
    missing previous numbers) is built a run at a time; one of distinct values (addressee
    and voucher numbers) by Arrow's own check. Both read back every value, in order."""
    rows = [[f"{i:04d}", f"{i:010d}", "接種太郎", "セッシュタロウ", "1950-04-01", "1" if i < 20 else "2"] for i in range(40)]
    write_residents(tmp_path / "r.csv", rows)
    db = vrs.open(tmp_path / "store" / "vrs.redb", actor=vrs.Staff(municipality, user="suzuki"), now=NOW)
    db.import_residents(tmp_path / "r.csv")
    for _ in range(2):  # rows, then the column cache
        residents = pa.table(db.residents())
        assert residents.schema.field("sex").type == pa.string_view()
        assert residents["municipality"].to_pylist() == [municipality] * 40
        assert residents["addressee_number"].to_pylist() == [r[0] for r in rows]
        assert residents["voucher_number"].to_pylist() == [r[1] for r in rows]
        assert residents["sex"].to_pylist() == ["M"] * 20 + ["F"] * 20
        assert residents["previous_municipality"].to_pylist() == [None] * 40
        assert residents["previous_voucher_number"].null_count == 40
        assert len(set(residents["status"].to_pylist())) == 1 and residents["status"].null_count == 0
        assert pl.DataFrame(db.residents())["sex"].to_list() == ["M"] * 20 + ["F"] * 20
    db.close()


def test_residents_built_on_the_calling_thread_past_a_point_read_the_same(tmp_path, municipality):
    """A large residents table is built on threads for its first rows and on the calling
    thread after them, its decoded vectors copied there: wherever the switch falls
    (before any batch, between batches, never), the table reads the same, in order."""
    n = 20_000  # several batches of the column cache's 8192 rows
    rows = [[str(i), f"{i:010d}", "接種太郎" if i % 3 else "山田　花子", "セッシュタロウ", "1950-04-01", "1" if i % 2 else "2"] for i in range(1, n + 1)]
    write_residents(tmp_path / "r.csv", rows)
    db = vrs.open(tmp_path / "store" / "vrs.redb", actor=vrs.Staff(municipality, user="suzuki"), now=NOW)
    db.import_residents(tmp_path / "r.csv")
    for _ in range(2):  # rows, then the column cache
        tables = {after: pa.table(db.residents(_caller_after_rows=after)) for after in (0, 1, 8192, 10**9)}
        threads = tables[10**9]
        assert threads["addressee_number"].to_pylist() == sorted((r[0] for r in rows), key=lambda a: (len(a), a))
        assert threads["name"].to_pylist()[:3] == ["接種太郎", "接種太郎", "山田　花子"]
        # Every name (inline or not) is its resident's, cut where its offsets say.
        imported = {r[0]: (r[2], r[3]) for r in rows}
        read = zip(threads["name"].to_pylist(), threads["name_kana"].to_pylist())
        assert list(read) == [imported[a] for a in threads["addressee_number"].to_pylist()]
        for after, t in tables.items():
            assert t.num_rows == n, after
            assert t.equals(threads), after
        assert pa.table(db.residents()).equals(threads)
    db.close()


def test_cache_size_is_for_redb_only():
    with pytest.raises(vrs.InvalidInput):
        vrs.open("postgres://nobody@localhost/none", actor="staff:131016", cache_bytes=1 << 20)
