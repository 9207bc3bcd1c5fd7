"""Submission CSV checks: every fault Kaggle would reject (or silently mis-score), by row and column.

The file is read as raw bytes and parsed with the csv module, not pandas: pandas would strip a
BOM, trim nothing, turn 123 into 123.0-equal floats and guess delimiters, hiding exactly the
faults that waste a day's submission.
"""
from __future__ import annotations

import csv
import io
import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from .competition import Competition, read_table
from .tasks import task_of

BOM = b"\xef\xbb\xbf"
MAX_FIELD = 2**31 - 1  # characters in one CSV cell: the csv module's largest limit
NON_FINITE = {"nan", "-nan", "+nan", "inf", "-inf", "+inf", "infinity", "-infinity", "+infinity",
              "na", "n/a", "null", "none", "#n/a"}
OTHER_DELIMITERS = (";", "\t", "|", " ")
FLOAT_ID = re.compile(r"^[+-]?\d+\.0*$|^[+-]?\d+(\.\d+)?[eE][+-]?\d+$")


class Problems:
    """Collected problems, each naming file, row (1-based line in the file) and column."""

    def __init__(self, path: Path, per_kind: int = 20):
        self.path, self.per_kind = path, per_kind
        self.items: list[str] = []
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, kind: str, row: int | None, column: str | list | None, text: str) -> None:
        """Record one problem; beyond `per_kind` of a kind only the count is kept."""
        self.counts[kind] += 1
        if self.counts[kind] <= self.per_kind:
            where = f"row {row}" if row is not None else "file"
            if isinstance(column, list):
                where += f", columns {column}"
            elif column is not None:
                where += f", column {column!r}"
            self.items.append(f"{self.path}: {where}: {text}")

    def report(self) -> list[str]:
        """Every problem line, plus a count line for each kind that was cut short."""
        extra = [f"{self.path}: ... and {n - self.per_kind} more {kind} problem(s)"
                 for kind, n in self.counts.items() if n > self.per_kind]
        return self.items + extra


def validate_submission(comp: Competition, csv_path: str | Path, per_kind: int = 20) -> list[str]:
    """Every problem of a submission CSV against the competition's sample submission and format."""
    path = Path(csv_path)
    sample = read_table(comp.path(comp.sample_submission))
    out = Problems(path, per_kind)
    if not path.exists():
        out.add("file", None, None, "file not found")
        return out.report()
    if path.is_dir():
        out.add("file", None, None, "is a folder, not a CSV file")
        return out.report()
    rows = _read_rows(path, out)
    if rows is None:
        return out.report()
    header, body = rows[0][1], rows[1:]
    want = list(sample.columns)
    if path.read_bytes()[:3] == BOM:
        out.add("bom", 1, header[0] if header else None,
                "the file starts with a UTF-8 byte-order mark (BOM) before this header cell; save as plain UTF-8")
    if not _check_header(header, want, out):
        return out.report()
    kind = comp.submission.get("kind", "label")
    value_cols = [c for c in want if c != comp.id_column]
    # an empty RLE cell is an empty mask; an empty multilabel cell, a row with no class
    empty_ok = kind == "rle" or (kind == "label" and not task_of(comp).one_submitted_label)
    table = _check_shape(body, want, out, empty_ok=set(value_cols) if empty_ok else set())
    _check_ids(comp, sample, table, out)
    if kind == "label":
        _check_labels(comp, table, value_cols, out)
    elif kind == "probs":
        _check_probs(comp, table, value_cols, out)
    else:
        _check_rle(comp, table, value_cols, out)
    return out.report()


def _read_rows(path: Path, out: Problems) -> list[tuple[int, list[str]]] | None:
    """(line number, fields) of every record; None when the bytes cannot be a CSV at all."""
    raw = path.read_bytes()
    if raw.startswith(BOM):  # reported by the caller, which knows the header
        raw = raw[len(BOM):]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        column = raw[: e.start].rsplit(b"\n", 1)[-1].count(b",") + 1
        out.add("encoding", line, f"field {column}", f"byte {raw[e.start]:#x} at offset {e.start} is not UTF-8")
        return None
    if not text.strip():
        out.add("empty", 1, None, "the file is empty")
        return None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows = []
    limit = csv.field_size_limit(MAX_FIELD)  # RLE masks of large images make cells far over csv's 131,072
    try:
        while True:
            start = reader.line_num + 1  # a quoted field may span lines: name the line the record starts on
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                if "field larger than field limit" in str(e):
                    out.add("size", start, None, f"a field is longer than {MAX_FIELD:,} characters")
                else:
                    out.add("quoting", start, None, f"unreadable CSV from here on ({e}); check the quotes")
                return None
            rows.append((start, fields))
    finally:
        csv.field_size_limit(limit)
    return rows


def _check_header(header: list[str], want: list[str], out: Problems) -> bool:
    """Header equal to the sample's, or a message that says what differs (delimiter, spaces, names)."""
    if header == want:
        return True
    joined = ",".join(header)
    for d in OTHER_DELIMITERS:
        if len(header) == 1 and joined.split(d) == want:
            out.add("delimiter", 1, joined, f"fields are separated by {d!r}; the sample submission uses ','")
            return False
    if [h.strip() for h in header] == want:
        for h in header:
            if h != h.strip():
                out.add("whitespace", 1, h.strip(), f"header cell {h!r} has stray whitespace")
        return False
    out.add("header", 1, None, f"header {header} != sample submission's {want}")
    for c in want:
        if c not in header:
            out.add("header", 1, c, "column missing" + _case_hint(c, header))
    for c in header:
        if c not in want:
            out.add("header", 1, c, "column is not in the sample submission")
    if sorted(header) == sorted(want):
        for i, (got, exp) in enumerate(zip(header, want)):
            if got != exp:
                out.add("header", 1, got, f"is at position {i + 1}, where the sample submission has {exp!r}")
    return False


def _case_hint(name: str, header: list[str]) -> str:
    same = [h for h in header if h.lower() == name.lower()]
    return f" (found {same[0]!r}: names are case-sensitive)" if same else ""


def _check_shape(body, want: list[str], out: Problems, empty_ok: set) -> pd.DataFrame:
    """The records with the right number of fields as a string table (column `_row`: file line)."""
    good, lines = [], []
    for line, fields in body:
        if not fields:
            out.add("blank", line, None, "empty line")
            continue
        if len(fields) != len(want):
            hint = next((f" (separated by {d!r}?)" for d in OTHER_DELIMITERS
                         if len(fields) == 1 and len(fields[0].split(d)) == len(want)), "")
            col = want[len(fields)] if len(fields) < len(want) else f"field {len(want) + 1} (after {want[-1]!r})"
            out.add("fields", line, col, f"{len(fields)} field(s), expected {len(want)}{hint}")
            continue
        good.append(fields)
        lines.append(line)
    table = pd.DataFrame(good, columns=want, dtype=str) if good else pd.DataFrame(columns=want, dtype=str)
    table["_row"] = lines
    for col in want:
        cells = table[col]
        stray = cells != cells.str.strip()
        for line, value in zip(table["_row"][stray], cells[stray]):
            out.add("whitespace", line, col, f"{value!r} has leading/trailing whitespace")
        if col in empty_ok:
            continue
        for line in table["_row"][cells.str.strip() == ""]:
            out.add("empty", line, col, "empty cell")
    return table


def _check_ids(comp: Competition, sample: pd.DataFrame, table: pd.DataFrame, out: Problems) -> None:
    """Same id set as the sample: no duplicates, none missing, none extra, none turned into floats."""
    col = comp.id_column
    ids, lines = [v.strip() for v in table[col].tolist()], table["_row"].tolist()
    want = sample[col].tolist()
    want_set, have_set = set(want), set(ids)
    first: dict[str, int] = {}
    extra = []
    for line, value in zip(lines, ids):  # plain Python sets: far faster than isin on arrow strings
        if value not in want_set:
            extra.append((line, value))
        elif value in first:
            if comp.submission.get("unique_ids", True):
                out.add("duplicate", line, col, f"duplicate id {value!r} (first on row {first[value]})")
        else:
            first[value] = line
    numeric = None
    for line, value in extra:
        if value == "":
            continue
        hint = ""
        canon = _canonical_number(value)
        if canon is not None:
            if numeric is None:
                numeric = {n: v for v in want if (n := _canonical_number(v)) is not None}
            if canon in numeric:
                hint = (f": the id was turned into a float (test id is {numeric[canon]!r})" if FLOAT_ID.match(value)
                        else f": same number as test id {numeric[canon]!r} (leading zeros changed?)")
        out.add("extra", line, col, f"id {value!r} is not in the test set{hint}")
    for sample_line, value in enumerate(want, start=2):
        if value not in have_set:
            out.add("missing", None, col, f"test id {value!r} (sample submission row {sample_line}) has no row")


def _canonical_number(value: str) -> int | None:
    """The integer an id string stands for (123, 123.0, 1.23e2, 0123 -> 123), else None."""
    try:
        f = float(value)
    except ValueError:
        return None
    return int(f) if math.isfinite(f) and f.is_integer() and abs(f) < 2**63 else None


def _check_labels(comp: Competition, table: pd.DataFrame, cols: list[str], out: Problems) -> None:
    """Each label cell names a class (of its head for multi-head; space-separated for multilabel)."""
    for col in cols:
        classes = comp.heads.get(col, comp.classes)
        allowed = set(classes)
        cells = table[col].str.strip()
        suspect = (cells != "") & ~cells.isin(allowed)
        for line, value in zip(table["_row"][suspect], table[col][suspect]):
            tokens = task_of(comp).label_tokens(value)
            for tok in tokens:
                if tok in allowed:
                    continue
                if tok.lower() in NON_FINITE:
                    out.add("nan", line, col, f"{value!r} is a missing/non-finite value, not a class")
                    continue
                canon = _canonical_number(tok)
                hint = next((f" (float form of class {c!r}?)" for c in classes if canon is not None
                             and _canonical_number(c) == canon), "")
                out.add("label", line, col, f"{tok!r} is not one of the classes {classes[:10]}{hint}")


def _check_probs(comp: Competition, table: pd.DataFrame, cols: list[str], out: Problems) -> None:
    """Probabilities are finite numbers in [0, 1]; rows sum to 1 when submission.sum_to_one says so."""
    sub = comp.submission
    values = np.full((len(table), len(cols)), np.nan)
    rows = table["_row"]
    for j, col in enumerate(cols):
        cells = table[col].str.strip()
        x = pd.to_numeric(cells, errors="coerce").to_numpy(np.float64)
        named = cells.str.lower().isin(NON_FINITE).to_numpy()
        bad_text = np.isnan(x) & ~named & (cells != "").to_numpy()
        for line, value in zip(rows[bad_text], table[col][bad_text]):
            out.add("number", line, col, f"{value!r} is not a number")
        nonfinite = named | np.isinf(x)
        for line, value in zip(rows[nonfinite], table[col][nonfinite]):
            out.add("nan", line, col, f"{value!r} is not a finite probability")
        with np.errstate(invalid="ignore"):
            outside = np.isfinite(x) & ((x < 0) | (x > 1))
        for line, value in zip(rows[outside], table[col][outside]):
            out.add("range", line, col, f"{value!r} is outside [0, 1]")
        values[:, j] = x
    if sub.get("sum_to_one", False):
        tol = float(sub.get("sum_tolerance", 1e-3))
        sums = values.sum(1)
        for line, s in zip(table["_row"], sums):
            if np.isfinite(s) and abs(s - 1.0) > tol:
                out.add("sum", line, cols, f"probabilities sum to {s:.6g}, not 1 (tolerance {tol:g})")


def _check_rle(comp: Competition, table: pd.DataFrame, cols: list[str], out: Problems) -> None:
    """Run-length masks: integer 'start length' pairs, 1-based, increasing, inside the image."""
    size = comp.submission.get("image_size", comp.extra.get("image_size"))
    pixels = int(np.prod(size)) if size else None
    for col in cols:
        for line, value in zip(table["_row"], table[col]):
            problem = rle_problem(value, pixels)
            if problem:
                out.add("rle", line, col, problem)


def rle_problem(value: str, pixels: int | None = None) -> str:
    """Why a run-length string is invalid ('' when valid; an empty string is an empty mask)."""
    v = value.strip()
    if v.lower() in NON_FINITE:
        return f"{value!r} is a missing value; write an empty cell for an empty mask"
    tokens = v.split()
    if len(tokens) % 2:
        return f"{len(tokens)} tokens: an RLE is 'start length' pairs (even count)"
    try:
        nums = [int(t) for t in tokens]
    except ValueError:
        bad = next(t for t in tokens if not re.fullmatch(r"[+-]?\d+", t))
        return f"token {bad!r} is not an integer"
    end = 0
    for k in range(0, len(nums), 2):
        start, length = nums[k], nums[k + 1]
        if start < 1:
            return f"run {k // 2 + 1}: start {start} < 1 (starts are 1-based)"
        if length < 1:
            return f"run {k // 2 + 1}: length {length} < 1"
        if start <= end:
            return f"run {k // 2 + 1}: start {start} does not come after the previous run's end {end}"
        end = start + length - 1
        if pixels is not None and end > pixels:
            return f"run {k // 2 + 1}: ends at pixel {end}, beyond the image's {pixels} pixels"
    return ""
