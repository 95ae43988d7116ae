"""Warm Arrow reads of a vrs store in one process, without pandas (so that it fits in memory
at 10M rows, where bench_arrow.py needs ~20 GB): per read, rows/s, wall and CPU seconds
(user and system apart), minor page faults, MiB read from the store file and the peak
resident memory over the read. A diagnostic beside bench_arrow.py, with no target.

    cargo build --release -p vrs-benches --bin py_seed
    target/py-venv/bin/python benches/python/arrow_reads.py --rows 10000000 --dir /tmp/vrs-reads

The first read fills redb's page cache (and, on a fresh store, builds the column cache):
it is printed apart. By default each table is dropped before the next read, as a session
that reads, works and lets go does; `--hold` keeps the previous table alive during the
next read, as bench_arrow.py's repeated reads do. Counters from /proc are Linux only
(elsewhere they print as 0).
"""

from __future__ import annotations

import argparse
import gc
import pathlib
import resource
import shutil
import subprocess
import tempfile
import time

import vrs

REPO = pathlib.Path(__file__).resolve().parents[2]
MUNICIPALITY = "131016"


def proc(path: str, field: str) -> int:
    """A number from a /proc/self file (`field` starting a line), or 0 where there is none."""
    try:
        for line in pathlib.Path(f"/proc/self/{path}").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak() -> None:
    try:
        pathlib.Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux)
    except OSError:
        pass


def measured(read) -> tuple:
    gc.collect()
    reset_peak()
    before = proc("status", "VmRSS:")
    r0, io0 = resource.getrusage(resource.RUSAGE_SELF), proc("io", "rchar:")
    w0 = time.perf_counter()
    table = read()
    wall = time.perf_counter() - w0
    r1, io1 = resource.getrusage(resource.RUSAGE_SELF), proc("io", "rchar:")
    figures = {
        "wall": wall,
        "user": r1.ru_utime - r0.ru_utime,
        "sys": r1.ru_stime - r0.ru_stime,
        "faults": r1.ru_minflt - r0.ru_minflt,
        "read_mib": (io1 - io0) / 2**20,
        "peak_mib": (proc("status", "VmHWM:") - before) / 1024,
    }
    return table, figures


def show(name: str, rows: int, f: dict) -> None:
    cpu = f["user"] + f["sys"]
    print(
        f"  {name:<6} {rows / f['wall']:>12,.0f} rows/s  wall {f['wall']:6.3f} s  CPU {cpu:6.3f} s "
        f"(user {f['user']:.3f}, sys {f['sys']:.3f}; {cpu / rows * 1e6:.3f} us/row)  "
        f"faults {f['faults']:>9,}  file read {f['read_mib']:8,.1f} MiB  peak +{f['peak_mib']:,.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--kind", default="residents", choices=["residents", "doses"])
    parser.add_argument("--reads", type=int, default=3, help="reads after the first")
    parser.add_argument("--hold", action="store_true", help="keep the previous table alive during each read")
    parser.add_argument("--dir", type=pathlib.Path, default=None, help="where to keep the store (default: a temp dir)")
    parser.add_argument("--seeder", type=pathlib.Path, default=REPO / "target" / "release" / "py_seed")
    args = parser.parse_args()
    work = args.dir or pathlib.Path(tempfile.mkdtemp(prefix="vrs-reads-"))
    work.mkdir(parents=True, exist_ok=True)
    store = work / f"bench-{args.rows}.redb"  # bench_arrow.py's name: its stores serve here too
    try:
        if not store.exists():
            subprocess.run([str(args.seeder), str(store), str(args.rows), MUNICIPALITY], check=True, capture_output=True)
        db = vrs.open(str(store), actor=vrs.Staff(MUNICIPALITY, user="bench"))
        read = getattr(db, args.kind)
        print(f"{args.kind}: {args.rows:,} rows, {'holding' if args.hold else 'dropping'} the previous table")
        table, f = measured(read)
        assert table.num_rows == args.rows
        print(f"  Arrow data {table.nbytes / 2**20:,.0f} MiB")
        show("first", args.rows, f)
        for i in range(args.reads):
            held = table if args.hold else None
            table = None
            table, f = measured(read)
            del held
            show(f"read {i + 1}", args.rows, f)
        db.close()
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
