"""Property: any text given as an OCR line either parses or raises InvalidInput (a
DoseRejected), never anything else, never a crash."""

from __future__ import annotations

import csv

from hypothesis import example, given, settings
from hypothesis import strategies as st

import vrs

from conftest import REPO

CODES = [r["code"] for r in csv.DictReader((REPO / "vrs-core" / "data" / "municipalities.csv").open(encoding="utf-8"))]
FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")

# Lines that are often valid: real municipality codes, with the noise a camera adds.
plausible = st.builds(
    lambda kind, dose, code, voucher, fullwidth, spaces: (
        (lambda s: s.translate(FULLWIDTH) if fullwidth else s)(f"{kind}{dose}{code}{voucher}").replace("", " " if spaces else "")
    ),
    st.integers(0, 9),
    st.integers(0, 9),
    st.sampled_from(CODES),
    st.from_regex(r"\A[0-9]{10}\Z"),
    st.booleans(),
    st.booleans(),
)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(st.text(), st.from_regex(r"\A[0-9０-９ OoDlI|-]{0,24}\Z"), plausible))
@example("111310160000012345")
@example("")
@example("\x00" * 18)
@example("１１１３１０１６００００００１２３４５")
def test_any_text_parses_or_raises_invalid_input(text):
    try:
        line = vrs.parse_ocr(text)
    except vrs.InvalidInput as e:
        assert isinstance(e, vrs.DoseRejected) and e.kind in {"malformed_ocr", "bad_check_digit", "unknown_municipality"}
        return
    assert len(str(line)) == 18 and str(line).isdigit()
    assert str(line) == f"{line.ticket_kind}{line.dose_number}{line.municipality}{line.voucher_number}"
    assert line.municipality in CODES and len(line.voucher_number) == 10
    assert vrs.parse_ocr(str(line)) == line


def test_known_line():
    line = vrs.parse_ocr("11 131016 0000012345")
    assert (line.ticket_kind, line.dose_number, line.municipality, line.voucher_number) == (1, 1, "131016", "0000012345")
