"""The competition spec: `data/<comp>/competition.yaml`, read once, checked, shared by every stage."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .comp_schema import SUBMISSION_KINDS, TASKS, SchemaError, check_schema, parse_yaml
from .errors import KitError

__all__ = ["SUBMISSION_KINDS", "TASKS", "Competition", "CompetitionError", "load_competition", "read_table"]


class CompetitionError(KitError, ValueError):
    """competition.yaml or a table it names is missing something; the message names it."""


@dataclass
class Competition:
    root: Path  # the folder holding competition.yaml; every path below is relative to it
    name: str
    task: str = "multiclass"
    id_column: str = "id"
    target_columns: list = field(default_factory=lambda: ["label"])
    classes: list = field(default_factory=list)
    heads: dict = field(default_factory=dict)  # multihead: head name -> list of its classes
    train_csv: str = "train.csv"
    test_csv: str = ""  # optional: the test ids; sample_submission is used when empty
    train_images: str = "train"
    test_images: str = "test"
    image_pattern: str = "{id}.png"  # file name of an image inside its folder
    sample_submission: str = "sample_submission.csv"
    metric: str = "macro_f1"
    submission: dict = field(default_factory=lambda: {"kind": "label", "columns": ["id", "label"]})
    kaggle: str = ""  # competition slug for uploads and score sync
    daily_limit: int = 5  # submissions Kaggle accepts per UTC day
    leaderboard: str = ""  # local solution file (demo only): never read by experiments
    allow_outside_paths: bool = False  # paths above may leave the competition folder only when this is true
    max_image_pixels: int = 178_956_970  # larger images are refused before decoding (PIL's bomb limit)
    extra: dict = field(default_factory=dict)  # anything else in the YAML, kept for custom code

    @property
    def target(self) -> str:
        """The single target column of a multiclass competition."""
        return self.target_columns[0]

    @property
    def num_classes(self) -> int:
        """Number of model outputs."""
        if self.task == "multihead":
            return sum(len(v) for v in self.heads.values())
        return len(self.classes)

    def path(self, rel: str) -> Path:
        """A path named in the YAML, resolved against the competition folder."""
        return self.root / rel

    def image_path(self, image_id: str, split: str) -> Path:
        """Where the image of `image_id` lives for split 'train' or 'test'."""
        folder = self.train_images if split == "train" else self.test_images
        return self.root / folder / self.image_pattern.format(id=image_id)

    def read_train(self) -> pd.DataFrame:
        """The train table with ids and targets as strings (ids never become floats)."""
        df = read_table(self.path(self.train_csv), need_rows=True)
        check_columns(df, [self.id_column, *self.target_columns], self.path(self.train_csv))
        return df

    def read_test(self) -> pd.DataFrame:
        """The test ids: test_csv when given, else the sample submission's id column."""
        src = self.path(self.test_csv or self.sample_submission)
        df = read_table(src, need_rows=True)
        check_columns(df, [self.id_column], src)
        return df[[self.id_column]].copy()


def read_table(path: Path, need_rows: bool = False) -> pd.DataFrame:
    """Read a CSV with every column as a string, so ids like 007 keep their zeros; errors name file and line."""
    path = Path(path)
    if not path.exists():
        raise CompetitionError(f"{path}: file not found")
    if path.is_dir():
        raise CompetitionError(f"{path}: is a folder, not a CSV file")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise CompetitionError(f"{path}: the file is empty (not even a header line)") from None
    except pd.errors.ParserError as e:  # pandas says "Expected 2 fields in line 5, saw 3"
        why = str(e).replace("Error tokenizing data. C error: ", "").strip()
        raise CompetitionError(f"{path}: unreadable CSV: {why}") from None
    except UnicodeDecodeError:
        raw = path.read_bytes()  # pandas counts from its read buffer: find the file offset and line ourselves
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            raise CompetitionError(f"{path}:{line}: byte {e.start} is not UTF-8; save the file as UTF-8") from None
        raise
    if need_rows and df.empty:
        raise CompetitionError(f"{path}: has a header ({list(df.columns)}) but no rows")
    return df


def check_columns(df: pd.DataFrame, needed, path) -> None:
    """Raise naming the file and every missing column."""
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise CompetitionError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")


def load_competition(comp: str | Path) -> Competition:
    """Read `<comp>/competition.yaml` (or a YAML path); every schema problem is named with its line and key."""
    path = Path(comp)
    if path.is_dir() or path.suffix not in (".yaml", ".yml"):
        path = path / "competition.yaml"
    if not path.is_file():
        raise CompetitionError(f"{path}: not found (run `kit demo-data` for the demo competition)")
    try:
        raw, lines = parse_yaml(path.read_text(encoding="utf-8"), path)
    except UnicodeDecodeError as e:
        raise CompetitionError(f"{path}: byte {e.start} is not UTF-8; save the file as UTF-8 text") from None
    except SchemaError as e:
        raise CompetitionError(_listing(path, e.problems)) from None
    problems = check_schema(raw, path, lines)
    if problems:
        raise CompetitionError(_listing(path, problems))
    raw = dict(raw)
    extra = {k: raw.pop(k) for k in ("image_size", "masks") if k in raw}  # read by the segmentation code
    extra.update(raw.pop("extra", None) or {})
    if "target_column" in raw:  # the singular spelling is the common one
        raw.setdefault("target_columns", [raw.pop("target_column")])
    if raw.get("task") == "segmentation":  # PNG masks need no target column; RLE masks name theirs
        raw.setdefault("target_columns", [])
    if isinstance(raw.get("target_columns"), str):
        raw["target_columns"] = [raw["target_columns"]]
    raw.setdefault("name", path.parent.name)
    comp_obj = Competition(root=path.parent, extra=extra, **raw)
    comp_obj.classes = [str(c) for c in comp_obj.classes]
    comp_obj.heads = {str(k): [str(c) for c in v] for k, v in comp_obj.heads.items()}
    _check_spec(comp_obj, path, lines)
    return comp_obj


def _listing(path: Path, problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{path}: {len(problems)} problems:\n  " + "\n  ".join(problems)


def _check_spec(c: Competition, path: Path, lines: dict) -> None:
    """Rules across keys (the schema checked each key alone)."""
    def where(key: str) -> str:
        return f"{path}:{lines[key]}" if key in lines else str(path)
    if c.task in ("multiclass", "multilabel") and len(c.classes) < 2:
        raise CompetitionError(f"{where('classes')}: classes: a {c.task} competition needs at least two classes")
    if len(set(c.classes)) != len(c.classes):
        raise CompetitionError(f"{where('classes')}: classes: duplicate class names in {c.classes}")
    if c.task == "multihead" and not c.heads:
        raise CompetitionError(f"{where('task')}: heads: a multihead competition needs heads: {{name: [classes]}}")
    if c.task in ("multiclass", "multihead") and not c.target_columns:
        raise CompetitionError(f"{where('target_columns')}: target_columns: name the label column")
    c.submission.setdefault("kind", "label")
