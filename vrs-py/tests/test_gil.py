"""Long work releases the GIL and reports progress; a callback that raises stops the
import with nothing applied."""

from __future__ import annotations

import threading

import pyarrow as pa
import pytest

from conftest import write_residents

ROWS = 60_000


@pytest.fixture
def big_file(tmp_path):
    rows = [[str(i), f"{i:010d}", "接種太郎", "セッシュタロウ", "1960-01-01", "1"] for i in range(1, ROWS + 1)]
    return write_residents(tmp_path / "big.csv", rows)


def test_import_releases_the_gil_and_reports_progress(staff, big_file):
    seen: list[tuple[int, int]] = []
    ticks = 0
    done = threading.Event()
    result = {}

    def work():
        result["report"] = staff.import_residents(big_file, progress=lambda rows, size: seen.append((rows, size)))
        done.set()

    t = threading.Thread(target=work)
    t.start()
    while not done.is_set():
        ticks += 1  # runs only while the import has let go of the GIL
    t.join()
    assert result["report"].inserted == ROWS
    assert ticks > 1000
    assert [r for r, _ in seen] == sorted(r for r, _ in seen) and seen[-1][0] == ROWS
    assert seen[-1][1] == big_file.stat().st_size


def test_progress_callback_error_cancels_the_import(staff, big_file):
    class Stop(Exception):
        pass

    def progress(rows, size):
        raise Stop(rows)

    with pytest.raises(Stop):
        staff.import_residents(big_file, progress=progress)
    assert pa.table(staff.residents()).num_rows == 0


def test_reads_release_the_gil(staff, big_file):
    staff.import_residents(big_file)
    ticks = 0
    done = threading.Event()

    def work():
        for _ in range(3):
            staff.residents()
        done.set()

    t = threading.Thread(target=work)
    t.start()
    while not done.is_set():
        ticks += 1
    t.join()
    assert ticks > 1000
