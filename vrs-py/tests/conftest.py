"""Shared fixtures: a fresh store per test, on redb and (when DATABASE_URL is set, as
scripts/test does) on PostgreSQL; a clock stopped at 2021-07-01 09:00 JST; resident
files written in UTF-8 or Shift_JIS."""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import os
import pathlib

import pytest
from hypothesis import settings
from hypothesis.database import DirectoryBasedExampleDatabase

import vrs

JST = dt.timezone(dt.timedelta(hours=9))
NOW = dt.datetime(2021, 7, 1, 9, 0, tzinfo=JST)
REPO = pathlib.Path(__file__).resolve().parents[2]

#: Real municipality codes (wards, cities, towns), one per test on a shared PostgreSQL
#: database, so tests never see each other's data.
_CODES = [
    row["code"]
    for row in csv.DictReader((REPO / "vrs-core" / "data" / "municipalities.csv").open(encoding="utf-8"))
    if not row["code"].endswith("0006") and row["code"][2:5] != "000"
]
_next_code = itertools.count(7)
_next_schema = itertools.count(1)

STORES = ["redb", "postgres"]

# Hypothesis keeps its examples under target/, not in the source tree.
settings.register_profile("vrs", database=DirectoryBasedExampleDatabase(str(REPO / "target" / "hypothesis")))
settings.load_profile("vrs")


def fresh_municipality() -> str:
    """A municipality code no other test of this run uses."""
    return _CODES[next(_next_code) % len(_CODES)]


@pytest.fixture(params=STORES)
def store(request, tmp_path) -> str:
    """Where to open a store: a temp redb file, or the throwaway PostgreSQL server."""
    if request.param == "redb":
        return str(tmp_path / "store" / "vrs.redb")
    url = os.environ.get("DATABASE_URL")
    if not url:
        pytest.skip("DATABASE_URL is not set (scripts/test sets it and then this test must pass)")
    # A schema of its own per test: tests never see each other's data.
    schema = f"vrs_py_{os.getpid()}_{next(_next_schema)}"
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


@pytest.fixture
def municipality() -> str:
    return fresh_municipality()


@pytest.fixture
def staff(store, municipality):
    """A registry acting as the staff of a fresh municipality."""
    db = vrs.open(store, actor=vrs.Staff(municipality, user="suzuki"), now=NOW)
    yield db
    db.close()


HEADER_JA = ["宛名番号", "券番号", "氏名", "氏名カナ", "生年月日", "性別"]


def write_residents(path: pathlib.Path, rows: list[list[str]], encoding: str = "utf-8", header=HEADER_JA) -> pathlib.Path:
    """Writes a resident upload with CRLF line ends, as municipal systems do."""
    with path.open("w", encoding=encoding, newline="") as f:
        w = csv.writer(f, lineterminator="\r\n")
        w.writerow(header)
        w.writerows(rows)
    return path


def ocr(municipality: str, voucher: str, dose: int = 1) -> str:
    """The 18-digit OCR line of a voucher."""
    return f"1{dose}{municipality}{voucher}"
