"""The schema of competition.yaml: every key, its type and allowed values, checked at load with its line."""
from __future__ import annotations

import difflib
import os
import string
from pathlib import Path

import yaml

TASKS = ("multiclass", "multilabel", "multihead", "segmentation")
SUBMISSION_KINDS = ("label", "probs", "rle")
CLASS_METRICS = ("macro_f1", "accuracy", "log_loss", "roc_auc")  # kit/metrics.py METRICS
MULTILABEL_METRICS = ("f1_micro", "f1_macro", "map")  # kit/metrics.py METRICS, on 0/1 label matrices
SEG_METRICS = ("dice", "iou")  # kit/seg_metrics.py
PATH_KEYS = ("train_csv", "test_csv", "train_images", "test_images", "sample_submission", "leaderboard")
TEXT_KEYS = ("name", "id_column", "image_pattern", "kaggle", "task", "metric", "target_column", *PATH_KEYS)
KEYS = (*TEXT_KEYS, "target_columns", "classes", "heads", "submission", "daily_limit", "image_size", "masks",
        "extra", "allow_outside_paths", "max_image_pixels")
SUBMISSION_KEYS = ("kind", "columns", "order", "layout", "key", "unique_ids", "image_size", "sum_to_one",
                   "sum_tolerance")
MASK_KEYS = ("mode", "source", "order", "folder", "pattern")
OPTIONAL_PATHS = ("test_csv", "leaderboard")  # may be empty


def parse_yaml(text: str, path: Path) -> tuple[object, dict]:
    """The YAML document and {key or 'parent.key': line}; a syntax error or a repeated key names its line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise SchemaError([f"{where}: YAML syntax error: {e.problem or e.context}"]) from None
    lines: dict = {}
    problems = []
    _walk(node, "", lines, problems, path)
    if problems:
        raise SchemaError(problems)
    return data, lines


def _walk(node, prefix: str, lines: dict, problems: list, path: Path) -> None:
    if not isinstance(node, yaml.MappingNode) or prefix.count(".") > 1:
        return
    for key, value in node.value:
        name = f"{prefix}{key.value}"
        if name in lines:  # PyYAML silently keeps the last one
            problems.append(f"{path}:{key.start_mark.line + 1}: {name}: repeated key (first at line {lines[name]})")
        lines[name] = key.start_mark.line + 1
        if not prefix:
            _walk(value, f"{name}.", lines, problems, path)


class SchemaError(ValueError):
    """Every schema problem of one competition.yaml."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def closest(key: str, known) -> str:
    """'; did you mean X?' for the nearest known key, or ''."""
    hit = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
    return f"; did you mean {hit[0]!r}?" if hit else ""


def check_schema(raw, path: Path, lines: dict) -> list[str]:
    """Every problem of a parsed competition.yaml, each as 'file:line: key: what is wrong'."""
    if raw is None:
        return [f"{path}: the file is empty; it needs at least task, classes and the image folders"]
    if not isinstance(raw, dict):
        return [f"{path}:1: the file must be a mapping of keys (task: ..., classes: ...), not a "
                f"{type(raw).__name__}"]
    out = []

    def bad(key: str, text: str) -> None:
        line = lines.get(key)
        out.append(f"{path}{f':{line}' if line else ''}: {key}: {text}")

    for key in raw:
        if not isinstance(key, str) or key not in KEYS:
            bad(str(key), f"unknown key{closest(str(key), KEYS)} (keys for your own code go under extra:)")
    for key in TEXT_KEYS:
        if key in raw and not isinstance(raw[key], str):
            bad(key, f"expected text, got {_kind(raw[key])} {raw[key]!r}")
    _check_choices(raw, bad)
    _check_lists(raw, bad)
    _check_mappings(raw, bad)
    for key in ("daily_limit", "max_image_pixels"):
        v = raw.get(key)
        if key in raw and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            bad(key, f"expected a whole number of at least 1, got {_kind(v)} {v!r}")
    if "allow_outside_paths" in raw and not isinstance(raw["allow_outside_paths"], bool):
        bad("allow_outside_paths", f"expected true or false, got {raw['allow_outside_paths']!r}")
    _check_paths(raw, bad)
    return list(dict.fromkeys(out))


def _kind(v) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "a mapping",
            type(None): "nothing"}.get(type(v), type(v).__name__)


def _check_choices(raw: dict, bad) -> None:
    task = raw.get("task", "multiclass")
    if isinstance(task, str) and task not in TASKS:
        bad("task", f"{task!r} is not one of {TASKS}{closest(task, TASKS)}")
    metric = raw.get("metric")
    allowed = {"segmentation": SEG_METRICS, "multilabel": MULTILABEL_METRICS}.get(task, CLASS_METRICS)
    if isinstance(metric, str) and metric not in allowed:
        bad("metric", f"{metric!r} is not known for task {task}; choose one of {allowed}{closest(metric, allowed)}")
    pattern = raw.get("image_pattern")
    if isinstance(pattern, str):
        problem = pattern_problem(pattern)
        if problem:
            bad("image_pattern", f"{pattern!r} {problem}")


def pattern_problem(pattern: str, fields=("id",)) -> str:
    """Why a file-name pattern cannot be filled from `fields` ('' when it can)."""
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None}
    except ValueError as e:
        return f"is not a valid pattern ({e}); write {{id}}.png, img_{{id}}.jpg, ..."
    unknown = names - set(fields)
    if unknown:
        return f"uses {sorted(unknown)}; only {{id}} can be filled in"
    if "id" not in names:
        return "must contain {id}"
    return ""


def _check_lists(raw: dict, bad) -> None:
    for key in ("classes", "target_columns"):
        if key not in raw:
            continue
        v = raw[key]
        if key == "target_columns" and isinstance(v, str):
            continue
        if not isinstance(v, list):
            hint = " (e.g. classes: ['0', '1', '2'])" if key == "classes" else ""
            bad(key, f"expected a list, got {_kind(v)} {v!r}{hint}")
            continue
        for item in v:
            if isinstance(item, bool) or item is None:
                bad(key, f"{item!r} was read by YAML as {_kind(item)}: quote it (e.g. 'yes', 'no', 'null')")
            elif not isinstance(item, (str, int, float)):
                bad(key, f"each entry must be a name, got {_kind(item)} {item!r}")
    size = raw.get("image_size")
    if "image_size" in raw and not (isinstance(size, list) and len(size) == 2
                                    and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
        bad("image_size", f"expected [height, width] in pixels, got {size!r}")


def _check_mappings(raw: dict, bad) -> None:
    sub = raw.get("submission")
    if "submission" in raw:
        if not isinstance(sub, dict):
            bad("submission", f"expected a mapping like {{kind: label, columns: [id, label]}}, got {_kind(sub)} "
                              f"{sub!r}")
        else:
            for k in sub:
                if k not in SUBMISSION_KEYS:
                    bad(f"submission.{k}", f"unknown key{closest(str(k), SUBMISSION_KEYS)}")
            if sub.get("kind", "label") not in SUBMISSION_KINDS:
                bad("submission.kind", f"{sub.get('kind')!r} is not one of {SUBMISSION_KINDS}"
                                       f"{closest(str(sub.get('kind')), SUBMISSION_KINDS)}")
            cols = sub.get("columns")
            if cols is not None and not (isinstance(cols, list) and all(isinstance(c, str) for c in cols)):
                bad("submission.columns", f"expected a list of column names, got {cols!r}")
    heads = raw.get("heads")
    if "heads" in raw and not (isinstance(heads, dict) and all(isinstance(v, list) and len(v) >= 2
                                                              for v in heads.values())):
        bad("heads", f"expected {{head name: [at least two classes]}}, got {heads!r}")
    masks = raw.get("masks")
    if "masks" in raw:
        if not isinstance(masks, dict):
            bad("masks", f"expected a mapping like {{mode: binary, source: rle}}, got {masks!r}")
        else:
            for k in masks:
                if k not in MASK_KEYS:
                    bad(f"masks.{k}", f"unknown key{closest(str(k), MASK_KEYS)}")
    if "extra" in raw and not isinstance(raw["extra"], dict):
        bad("extra", f"expected a mapping of your own keys, got {raw['extra']!r}")


def _check_paths(raw: dict, bad) -> None:
    """Paths stay inside the competition folder unless allow_outside_paths: true says otherwise."""
    if raw.get("allow_outside_paths") is True:
        return
    candidates = [(k, raw[k]) for k in PATH_KEYS if isinstance(raw.get(k), str)]
    pattern = raw.get("image_pattern", "{id}.png")
    if isinstance(pattern, str) and not pattern_problem(pattern):  # an image path is folder + filled pattern
        for folder in ("train_images", "test_images"):
            base = raw.get(folder, folder[:-7]) if isinstance(raw.get(folder, ""), str) else ""
            candidates.append(("image_pattern", os.path.join(base, pattern.format(id="x"))))
    for key, value in candidates:
        if not value and key in OPTIONAL_PATHS:
            continue
        if not value:
            bad(key, "is empty")
        elif os.path.isabs(value) or os.path.normpath(value).split(os.sep)[0] == "..":
            bad(key, f"{value!r} points outside the competition folder; move the files in, or set "
                     f"allow_outside_paths: true")
