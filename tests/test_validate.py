"""Submission validation: each fault alone is rejected with its row and column; valid variants pass."""
import csv
import io
import random

import numpy as np
import pytest
import yaml

from kit.competition import load_competition
from kit.validate import rle_problem, validate_submission
from tests.helpers import kit

N = 40


def _make_comp(root, name, columns, sample_rows, **spec):
    root.mkdir(parents=True)
    with open(root / "sample_submission.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns)
        w.writerows(sample_rows)
    (root / "competition.yaml").write_text(yaml.safe_dump({"name": name, "id_column": columns[0], **spec}))
    return load_competition(root)


@pytest.fixture(scope="module")
def comps(tmp_path_factory):
    """Three small competitions: numeric ids + labels, probabilities summing to 1, RLE masks on 8x8 images."""
    root = tmp_path_factory.mktemp("comps")
    classes = ["0", "1", "2"]
    label_ids = [str(101 + i) for i in range(N)]
    prob_ids = [f"p{i:03d}" for i in range(N)]
    rle_ids = [f"img{i}" for i in range(N)]
    return {
        "label": _make_comp(root / "label", "label", ["id", "label"], [[i, "0"] for i in label_ids],
                            classes=classes, target_columns=["label"],
                            submission={"kind": "label", "columns": ["id", "label"]}),
        "probs": _make_comp(root / "probs", "probs", ["id", *classes], [[i, "0", "0", "0"] for i in prob_ids],
                            classes=classes, metric="log_loss",
                            submission={"kind": "probs", "sum_to_one": True}),
        "rle": _make_comp(root / "rle", "rle", ["ImageId", "EncodedPixels"], [[i, ""] for i in rle_ids],
                          task="segmentation", classes=["mask"], target_columns=["EncodedPixels"],
                          submission={"kind": "rle", "image_size": [8, 8]}),
    }


def _rows(kind, rng):
    """A valid submission's rows (header first) for each competition kind."""
    if kind == "label":
        return [["id", "label"]] + [[str(101 + i), str(rng.integers(0, 3))] for i in range(N)]
    if kind == "probs":
        p = rng.dirichlet(np.ones(3), N)
        return [["id", "0", "1", "2"]] + [[f"p{i:03d}", *(f"{v:.6f}" for v in p[i])] for i in range(N)]
    masks = ["", "1 3", "5 2 10 4", "60 5", "1 64"]
    return [["ImageId", "EncodedPixels"]] + [[f"img{i}", masks[i % len(masks)]] for i in range(N)]


def _text(rows, **kw):
    buf = io.StringIO()
    csv.writer(buf, lineterminator=kw.pop("lineterminator", "\n"), **kw).writerows(rows)
    return buf.getvalue()


def _set(rows, r, c, value):
    rows = [list(x) for x in rows]
    rows[r][c] = value
    return rows


# (name, competition kind, fault(rows) -> text or bytes, file row that must be named, column that must be named)
# Data row k (1-based after the header) is file row k + 1.
MALFORMED = [
    ("header renamed", "label", lambda r: _text(_set(r, 0, 0, "ID")), 1, "id"),
    ("header extra column", "label", lambda r: _text([x + ["extra"] for x in r]), 1, "extra"),
    ("header missing column", "label", lambda r: _text([x[:1] for x in r]), 1, "label"),
    ("header columns swapped", "label", lambda r: _text([x[::-1] for x in r]), 1, "label"),
    ("header whitespace", "label", lambda r: _text(_set(r, 0, 1, " label")), 1, "label"),
    ("BOM", "label", lambda r: b"\xef\xbb\xbf" + _text(r).encode(), 1, "id"),
    ("semicolon delimiter", "label", lambda r: _text(r, delimiter=";"), 1, "id;label"),
    ("tab delimiter", "label", lambda r: _text(r, delimiter="\t"), 1, "id\tlabel"),
    ("one row with ';'", "label", lambda r: _text(r).replace("\n110,", "\n110;"), 11, "label"),
    ("id leading space", "label", lambda r: _text(_set(r, 5, 0, " 105")), 6, "id"),
    ("label trailing space", "label", lambda r: _text(_set(r, 7, 1, r[7][1] + " ")), 8, "label"),
    ("id as float", "label", lambda r: _text(_set(r, 3, 0, r[3][0] + ".0")), 4, "id"),
    ("id as scientific float", "label", lambda r: _text(_set(r, 9, 0, "1.09e2")), 10, "id"),
    ("duplicate id", "label", lambda r: _text(r + [r[5]]), N + 2, "id"),
    ("extra id", "label", lambda r: _text(r + [["999", "1"]]), N + 2, "id"),
    ("empty label", "label", lambda r: _text(_set(r, 12, 1, "")), 13, "label"),
    ("empty id", "label", lambda r: _text(_set(r, 12, 0, "")), 13, "id"),
    ("NaN label", "label", lambda r: _text(_set(r, 4, 1, "NaN")), 5, "label"),
    ("label not a class", "label", lambda r: _text(_set(r, 20, 1, "7")), 21, "label"),
    ("label as float", "label", lambda r: _text(_set(r, 21, 1, "1.0")), 22, "label"),
    ("blank line", "label", lambda r: _text(r[:15]) + "\n" + _text(r[15:]), 16, None),
    ("extra field in a row", "label", lambda r: _text(r).replace(f"\n{r[30][0]},{r[30][1]}\n",
                                                                 f"\n{r[30][0]},{r[30][1]},x\n"), 31,
     "field 3 (after 'label')"),
    ("not UTF-8", "label", lambda r: _text(r).encode().replace(b"\n125,", b"\n125,\xff"), 26, "field 2"),
    ("unclosed quote", "label", lambda r: _text(r).replace("\n118,", '\n"118,'), 19, None),
    ("probability > 1", "probs", lambda r: _text(_set(r, 3, 2, "1.2")), 4, "1"),
    ("probability < 0", "probs", lambda r: _text(_set(r, 6, 1, "-0.1")), 7, "0"),
    ("probability inf", "probs", lambda r: _text(_set(r, 8, 3, "inf")), 9, "2"),
    ("probability nan", "probs", lambda r: _text(_set(r, 9, 3, "nan")), 10, "2"),
    ("probability empty", "probs", lambda r: _text(_set(r, 10, 1, "")), 11, "0"),
    ("probability text", "probs", lambda r: _text(_set(r, 11, 2, "high")), 12, "1"),
    ("probabilities not summing to 1", "probs",
     lambda r: _text(_set(_set(_set(r, 13, 1, "0.5"), 13, 2, "0.4"), 13, 3, "0.3")), 14, ["0", "1", "2"]),
    ("RLE odd token count", "rle", lambda r: _text(_set(r, 2, 1, "1 3 5")), 3, "EncodedPixels"),
    ("RLE non-integer", "rle", lambda r: _text(_set(r, 3, 1, "1 3.5")), 4, "EncodedPixels"),
    ("RLE starts decreasing", "rle", lambda r: _text(_set(r, 4, 1, "10 2 5 2")), 5, "EncodedPixels"),
    ("RLE runs overlapping", "rle", lambda r: _text(_set(r, 5, 1, "1 5 3 2")), 6, "EncodedPixels"),
    ("RLE beyond the image", "rle", lambda r: _text(_set(r, 6, 1, "60 10")), 7, "EncodedPixels"),
    ("RLE zero length", "rle", lambda r: _text(_set(r, 7, 1, "5 0")), 8, "EncodedPixels"),
    ("RLE start 0", "rle", lambda r: _text(_set(r, 8, 1, "0 3")), 9, "EncodedPixels"),
    ("RLE nan", "rle", lambda r: _text(_set(r, 9, 1, "nan")), 10, "EncodedPixels"),
    ("RLE id as float", "rle", lambda r: _text(_set(r, 1, 0, "img0.0")), 2, "ImageId"),
]


def _write(tmp_path, name, content):
    path = tmp_path / (name.replace(" ", "_").replace("'", "").replace(";", "semi") + ".csv")
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.mark.parametrize("name,kind,fault,row,column", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_each_fault_alone_is_rejected_naming_row_and_column(comps, tmp_path, name, kind, fault, row, column):
    rows = _rows(kind, np.random.default_rng(0))
    assert validate_submission(comps[kind], _write(tmp_path, "base", _text(rows))) == []  # the fault alone fails
    problems = validate_submission(comps[kind], _write(tmp_path, name, fault(rows)))
    assert problems, name
    where = f"row {row}" + ("" if column is None else
                            f", columns {column}" if isinstance(column, list) else f", column {column!r}")
    assert any(where in p for p in problems), (where, problems)


def test_missing_id_names_its_sample_row_and_column(comps, tmp_path):
    rows = _rows("label", np.random.default_rng(0))
    dropped = rows.pop(17)
    problems = validate_submission(comps["label"], _write(tmp_path, "missing", _text(rows)))
    assert problems == [f"{tmp_path / 'missing.csv'}: file, column 'id': test id {dropped[0]!r} "
                        f"(sample submission row 18) has no row"]


def test_header_only_and_empty_files_are_rejected(comps, tmp_path):
    rows = _rows("label", np.random.default_rng(0))
    path = _write(tmp_path, "header", _text(rows[:1]))
    assert len(validate_submission(comps["label"], path, per_kind=10**6)) == N  # every missing id listed
    short = validate_submission(comps["label"], path)  # default: 20 of a kind, then their count
    assert len(short) == 21 and short[-1].endswith(f"... and {N - 20} more missing problem(s)")
    assert validate_submission(comps["label"], _write(tmp_path, "empty", ""))


def _shuffled(rows, seed=1):
    body = rows[1:]
    random.Random(seed).shuffle(body)
    return [rows[0]] + body


def _probs_rows(fmt, seed=2):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(3), N).astype(np.float64)
    return [["id", "0", "1", "2"]] + [[f"p{i:03d}", *(fmt(v) for v in p[i])] for i in range(N)]


def _onehot_rows():
    return [["id", "0", "1", "2"]] + [[f"p{i:03d}", *("1" if j == i % 3 else "0" for j in range(3))]
                                      for i in range(N)]


def _pandas_default_probs():
    import pandas as pd
    rng = np.random.default_rng(3)
    df = pd.DataFrame(rng.dirichlet(np.ones(3), N).astype(np.float32), columns=["0", "1", "2"])
    df.insert(0, "id", [f"p{i:03d}" for i in range(N)])
    return df.to_csv(index=False)


VALID = [
    ("label as written", "label", lambda r: _text(r)),
    ("label rows reversed", "label", lambda r: _text([r[0]] + r[:0:-1])),
    ("label rows shuffled", "label", lambda r: _text(_shuffled(r))),
    ("label CRLF line ends", "label", lambda r: _text(r, lineterminator="\r\n")),
    ("label every field quoted", "label", lambda r: _text(r, quoting=csv.QUOTE_ALL)),
    ("label no final newline", "label", lambda r: _text(r).rstrip("\n")),
    ("label some labels quoted", "label", lambda r: _text(r).replace(",0\n", ',"0"\n')),
    ("probs 6 decimals", "probs", lambda r: _text(r)),
    ("probs scientific", "probs", lambda r: _text(_probs_rows(lambda v: f"{v:.6e}"))),
    ("probs 17 significant digits", "probs", lambda r: _text(_probs_rows(lambda v: f"{v:.17g}"))),
    ("probs leading dot", "probs", lambda r: _text(_probs_rows(lambda v: f"{v:.5f}".lstrip("0")))),
    ("probs one-hot integers", "probs", lambda r: _text(_onehot_rows())),
    ("probs pandas float32 default", "probs", lambda r: _pandas_default_probs()),
    ("probs shuffled CRLF", "probs", lambda r: _text(_shuffled(r, 5), lineterminator="\r\n")),
    ("probs 4 decimals (sum within tolerance)", "probs", lambda r: _text(_probs_rows(lambda v: f"{v:.4f}"))),
    ("probs upper-case exponent", "probs", lambda r: _text(_probs_rows(lambda v: f"{v:.4E}"))),
    ("rle as written", "rle", lambda r: _text(r)),
    ("rle all empty masks", "rle", lambda r: _text([r[0]] + [[x[0], ""] for x in r[1:]])),
    ("rle quoted, shuffled", "rle", lambda r: _text(_shuffled(r, 7), quoting=csv.QUOTE_ALL)),
    ("rle adjacent runs", "rle", lambda r: _text([r[0]] + [[x[0], "1 2 3 2 63 2"] for x in r[1:]])),
]


@pytest.mark.parametrize("name,kind,variant", VALID, ids=[v[0] for v in VALID])
def test_valid_variants_are_accepted(comps, tmp_path, name, kind, variant):
    rows = _rows(kind, np.random.default_rng(0))
    assert validate_submission(comps[kind], _write(tmp_path, name, variant(rows))) == []


def test_counts_required_by_the_issue():
    assert len(MALFORMED) >= 30 and len(VALID) >= 20


def test_rle_rules_match_a_decoder():
    """Every string rle_problem accepts decodes (by a plain loop) to in-image, non-overlapping pixels."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        tokens = rng.integers(-1, 70, size=rng.integers(0, 7) * 2)
        text = " ".join(map(str, tokens))
        ok = rle_problem(text, 64) == ""
        mask, fine = np.zeros(65, int), True
        pairs = list(zip(tokens[::2], tokens[1::2]))
        last_end = 0
        for s, n in pairs:
            fine &= s >= 1 and n >= 1 and s > last_end and s + n - 1 <= 64
            last_end = s + n - 1
        assert ok == bool(fine), text


def test_cli_exits_non_zero_listing_every_problem(comps, tmp_path):
    rows = _rows("label", np.random.default_rng(0))
    bad = _set(_set(_set(rows, 3, 1, "9"), 8, 0, "108.0"), 14, 1, " 1")
    path = _write(tmp_path, "three", _text(bad))
    r = kit("validate", str(path), f"--comp={comps['label'].root}", check=False)
    assert r.returncode != 0
    for where in ("row 4, column 'label'", "row 9, column 'id'", "row 15, column 'label'"):
        assert where in r.stderr, r.stderr
    ok = kit("validate", str(_write(tmp_path, "good", _text(rows))), f"--comp={comps['label'].root}")
    assert "valid" in ok.stdout


def test_rle_cell_larger_than_the_csv_modules_default_field_limit_is_valid(tmp_path):
    # A 1024x1024 mask with 20,000 runs: one cell of ~180,000 characters (csv's default limit is 131,072).
    comp = _make_comp(tmp_path / "big", "big", ["ImageId", "EncodedPixels"], [["a", ""], ["b", ""]],
                      task="segmentation", classes=["mask"], target_columns=["EncodedPixels"],
                      submission={"kind": "rle", "image_size": [1024, 1024]})
    cell = " ".join(f"{1 + 50 * k} 10" for k in range(20_000))
    assert len(cell) > 131_072
    sub = tmp_path / "sub.csv"
    sub.write_text(f"ImageId,EncodedPixels\na,{cell}\nb,\n")
    assert validate_submission(comp, sub) == []
    bad = tmp_path / "bad.csv"
    bad.write_text(f"ImageId,EncodedPixels\na,{cell} 5\nb,\n")  # still named precisely when a big cell is wrong
    assert validate_submission(comp, bad) == [f"{bad}: row 2, column 'EncodedPixels': 40001 tokens: an RLE is "
                                              "'start length' pairs (even count)"]
    r = kit("validate", str(sub), f"--comp={tmp_path / 'big'}", check=False)
    assert r.returncode == 0 and "valid" in r.stdout, r.stderr


def test_validate_names_a_folder_or_a_missing_competition(tmp_path, comps):
    r = kit("validate", str(tmp_path), f"--comp={comps['label'].root}", check=False)
    assert r.returncode == 1 and "is a folder, not a CSV file" in r.stderr and "Traceback" not in r.stderr
    r = kit("validate", str(tmp_path / "x.csv"), f"--comp={tmp_path / 'nowhere'}", check=False)
    assert r.returncode == 1 and "nowhere/competition.yaml: not found" in r.stderr and "Traceback" not in r.stderr
