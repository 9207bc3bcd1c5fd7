"""The run folder `runs/<exp>/`: the one module that knows its files' names and formats.

config.yaml (the resolved config), lineage.json (what produced the run), cv.json (the OOF score),
predict.json (TTA), schemes.json, ensemble.json, pseudo.json, summary.json; oof/test tables (and with TTA:
oof_tta[_<scheme>], fold<k>/test_tta); fold<k>/ with each fold's tables, weights, logs and done.json (the
fold finished: a relaunch skips it). Other modules ask a RunDir for them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .competition import Competition, CompetitionError, load_competition
from .config import Config, load_config, save_config

JSON_FILES = ("cv", "lineage", "predict", "schemes", "ensemble", "pseudo", "summary")
LOGS = ("metrics", "steps")
LOG_FILES = {name: f"{name}.jsonl" for name in LOGS}  # in fold<k>/


class RunDirError(CompetitionError):
    """A run folder lacks what was asked of it; the message names the folder."""


class RunDir:
    """runs/<exp>/ and the files in it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def name(self) -> str:
        """The experiment (or ensemble) name: the folder's name."""
        return self.path.name

    def fold(self, k: int | str) -> Path:
        """fold<k>/: one fold's tables, best weights, logs and checkpoints."""
        return self.path / f"fold{k}"

    def table(self, split: str, fold: int | str | None = None) -> Path:
        """`oof`, `test`, `oof_tta`, ... .parquet, run-level or of one fold."""
        return (self.path if fold is None else self.fold(fold)) / f"{split}.parquet"

    def weights(self, fold: int | str) -> Path:
        """fold<k>/best.safetensors: the fold's best weights."""
        return self.fold(fold) / "best.safetensors"

    def masks(self, split: str, fold: int | str | None = None) -> Path:
        """`oof`, `test` probability masks (.npz) of a segmentation run, run-level or of one fold."""
        return (self.path if fold is None else self.fold(fold)) / f"{split}_masks.npz"

    def log(self, name: str, fold: int | str) -> Path:
        """fold<k>/<name>.jsonl: `metrics` (one row per epoch) or `steps` (losses per optimizer step)."""
        if name not in LOGS:
            raise KeyError(f"{name!r} is not a fold log; known: {LOGS}")
        return self.fold(fold) / f"{name}.jsonl"

    def fold_files(self, path_of) -> dict[int, Path]:
        """{k: path_of(k)} for the fold<k>/ folders where that file exists, in numeric order (fold2 before fold10).

        `path_of` is one of this RunDir's fold paths, e.g. `run.weights` or `lambda k: run.table("oof", k)`.
        """
        found = {}
        for folder in self.path.glob("fold*"):
            k = folder.name[4:]
            if k.isdigit() and path_of(int(k)).exists():
                found[int(k)] = path_of(int(k))
        return dict(sorted(found.items()))

    def has_test(self) -> bool:
        """Whether the run has a test prediction (a table, or masks for segmentation)."""
        return self.table("test").exists() or self.masks("test").exists()

    def json_path(self, kind: str) -> Path:
        """Where <kind>.json lives (cv, lineage, predict, schemes, ensemble, pseudo, summary)."""
        if kind not in JSON_FILES:
            raise KeyError(f"{kind!r} is not a run-folder JSON file; known: {JSON_FILES}")
        return self.path / f"{kind}.json"

    def read_json(self, kind: str):
        """<kind>.json's content, or None when the run has none."""
        path = self.json_path(kind)
        return json.loads(path.read_text()) if path.exists() else None

    def write_json(self, kind: str, data) -> Path:
        """Write <kind>.json atomically (a reader never sees half a file)."""
        return _write_atomic(self.json_path(kind), data)

    def done_path(self, k: int | str) -> Path:
        """fold<k>/done.json: written last when a fold has finished (weights, tables, test predictions)."""
        return self.fold(k) / "done.json"

    def read_done(self, k: int | str) -> dict | None:
        """A finished fold's record (summary, config, what it wrote), or None when the fold has not finished."""
        path = self.done_path(k)
        try:
            return json.loads(path.read_text()) if path.exists() else None
        except ValueError:  # a half-written file cannot exist (atomic write); a hand-edited one counts as unfinished
            return None

    def write_done(self, k: int | str, data: dict) -> Path:
        """Mark fold k finished (atomically)."""
        return _write_atomic(self.done_path(k), data)

    @property
    def config_path(self) -> Path:
        """config.yaml: the resolved config the run trained with."""
        return self.path / "config.yaml"

    def has_config(self) -> bool:
        """Whether the run was trained here (an ensemble has no config)."""
        return self.config_path.exists()

    def config(self, cls=Config) -> Config:
        """The saved config, as `cls` (SegConfig for segmentation runs)."""
        return load_config(self.config_path, cls)

    def save_config(self, config: Config, fold: int | None = None) -> None:
        """Write config.yaml (of the run, or of one fold)."""
        save_config(config, (self.path if fold is None else self.fold(fold)) / "config.yaml")

    def competition(self) -> Competition:
        """The competition of the run: its config.yaml, else lineage.json, else an ensemble member's config."""
        if self.has_config():
            return load_competition(self.config().comp)
        lineage, ensemble = self.read_json("lineage") or {}, self.read_json("ensemble") or {}
        for source in (lineage, ensemble if isinstance(ensemble, dict) else {}):
            for key in ("competition", "comp"):
                if source.get(key):
                    return load_competition(source[key])
        members = ensemble.get("members", ensemble) if isinstance(ensemble, dict) else ensemble
        for name in member_names(members):
            member = RunDir(self.path.parent / name)
            if member.has_config():
                return load_competition(member.config().comp)
        raise RunDirError(f"{self.path}: no config.yaml, lineage.json competition or ensemble member to find "
                               "the competition from")


def _write_atomic(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
    return path


def member_names(members) -> list[str]:
    """Run names of ensemble members given as names, {name/run/exp: ...} dicts or a {name: weight} map."""
    if isinstance(members, dict):
        return [Path(str(k)).name for k in members]
    names = []
    for m in members if isinstance(members, list) else []:
        name = (m.get("name") or m.get("run") or m.get("exp")) if isinstance(m, dict) else m
        if name:
            names.append(Path(str(name)).name)
    return names
