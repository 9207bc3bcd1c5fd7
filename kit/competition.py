"""The competition spec: `data/<comp>/competition.yaml`, read once, checked, shared by every stage."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

TASKS = ("multiclass", "multilabel", "multihead", "segmentation")
SUBMISSION_KINDS = ("label", "probs", "rle")


class CompetitionError(ValueError):
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
        df = read_table(self.path(self.train_csv))
        check_columns(df, [self.id_column, *self.target_columns], self.path(self.train_csv))
        return df

    def read_test(self) -> pd.DataFrame:
        """The test ids: test_csv when given, else the sample submission's id column."""
        src = self.path(self.test_csv or self.sample_submission)
        df = read_table(src)
        check_columns(df, [self.id_column], src)
        return df[[self.id_column]].copy()


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV with every column as a string, so ids like 007 keep their zeros."""
    if not Path(path).exists():
        raise CompetitionError(f"{path}: file not found")
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def check_columns(df: pd.DataFrame, needed, path) -> None:
    """Raise naming the file and every missing column."""
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise CompetitionError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")


def load_competition(comp: str | Path) -> Competition:
    """Read `<comp>/competition.yaml` (or a YAML path) and check its keys and values."""
    path = Path(comp)
    if path.is_dir():
        path = path / "competition.yaml"
    if not path.exists():
        raise CompetitionError(f"{path}: not found (run `kit demo-data` for the demo competition)")
    raw = yaml.safe_load(path.read_text()) or {}
    known = set(Competition.__dataclass_fields__) - {"root", "extra"}
    extra = {k: raw.pop(k) for k in list(raw) if k not in known}
    if "target_column" in extra:  # the singular spelling is the common one
        raw.setdefault("target_columns", [extra.pop("target_column")])
    if raw.get("task") == "segmentation":  # PNG masks need no target column; RLE masks name theirs
        raw.setdefault("target_columns", [])
    if isinstance(raw.get("target_columns"), str):
        raw["target_columns"] = [raw["target_columns"]]
    raw.setdefault("name", path.parent.name)
    comp_obj = Competition(root=path.parent, extra=extra, **raw)
    comp_obj.classes = [str(c) for c in comp_obj.classes]
    comp_obj.heads = {k: [str(c) for c in v] for k, v in comp_obj.heads.items()}
    _check_spec(comp_obj, path)
    return comp_obj


def _check_spec(c: Competition, path: Path) -> None:
    if c.task not in TASKS:
        raise CompetitionError(f"{path}: task: {c.task!r} is not one of {TASKS}")
    if c.task in ("multiclass", "multilabel") and len(c.classes) < 2:
        raise CompetitionError(f"{path}: classes: a {c.task} competition needs at least two classes")
    if len(set(c.classes)) != len(c.classes):
        raise CompetitionError(f"{path}: classes: duplicate class names in {c.classes}")
    if c.task == "multihead" and not c.heads:
        raise CompetitionError(f"{path}: heads: a multihead competition needs heads: {{name: [classes]}}")
    kind = c.submission.get("kind")
    if kind not in SUBMISSION_KINDS:
        raise CompetitionError(f"{path}: submission.kind: {kind!r} is not one of {SUBMISSION_KINDS}")
    if "{id}" not in c.image_pattern:
        raise CompetitionError(f"{path}: image_pattern: {c.image_pattern!r} must contain {{id}}")
