"""What `kit report` shows about one run, gathered through the kit's own readers (one dict per run page)."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import yaml

from .rundir import RunDir
from .tasks import task_of

REPORT_VERSION = "1"  # part of every page's fingerprint: a new report layout rebuilds all pages
_PARENT = re.compile(r"^Parent:\s*([A-Za-z0-9_.\-]+?)\.?\s*$", re.M)


def read_json(path: Path):
    """A JSON file's content, None when absent or unreadable (a report never stops on one bad file)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_metrics(run_dir: Path) -> dict[int, list[dict]]:
    """Per fold, the epoch rows of fold<k>/metrics.jsonl in order (a torn last line is skipped)."""
    out = {}
    run = RunDir(run_dir)
    for k, path in run.fold_files(lambda k: run.log("metrics", k)).items():
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
        out[k] = rows
    return out


def parent_of(run_dir: Path) -> str | None:
    """The run this one was derived from: a pseudo round's parent, else 'Parent:' in the experiment docstring."""
    pseudo = RunDir(run_dir).read_json("pseudo") or {}
    if pseudo.get("parent"):
        return pseudo["parent"]
    src = Path(run_dir) / "experiment.py"
    if src.exists():
        hit = _PARENT.search(src.read_text(errors="replace")[:4000])
        if hit and hit.group(1).lower() not in ("none", "-"):
            return hit.group(1)
    return None


def read_config(run_dir: Path) -> dict | None:
    """runs/<exp>/config.yaml as a plain dict."""
    path = RunDir(run_dir).config_path
    return yaml.safe_load(path.read_text()) if path.exists() else None


def config_diff(parent: dict | None, child: dict | None) -> list[tuple[str, object, object]]:
    """(key, parent value, this run's value) for every setting that differs; name and fold are not settings."""
    if not parent or not child:
        return []
    skip = {"name", "fold"}
    keys = sorted((set(parent) | set(child)) - skip)
    return [(k, parent.get(k), child.get(k)) for k in keys if parent.get(k) != child.get(k)]


def pseudo_rounds(runs: Path, name: str) -> list[dict]:
    """Every pseudo-label round of the chain `name` belongs to (runs/<root>_pl<r>/pseudo.json), by round."""
    own = RunDir(Path(runs) / name).read_json("pseudo") or {}
    root = own.get("root") or name
    rounds = [RunDir(d).read_json("pseudo") for d in Path(runs).glob(f"{glob_escape(root)}_pl*")]
    return sorted((r for r in rounds if r and r.get("root") == root), key=lambda r: r.get("round", 0))


def glob_escape(text: str) -> str:
    """A run name as a literal glob pattern."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def run_images(run_dir: Path) -> dict[str, Path]:
    """PNG files the run already wrote: OOF confusion (plain, TTA), per-fold confusion and misclassified grids."""
    run_dir = Path(run_dir)
    found = {name: run_dir / f"{name}.png" for name in ("confusion", "confusion_tta")}
    for k in sorted(run_dir.glob("fold*/misclassified.png")):
        found[f"{k.parent.name} misclassified"] = k
    return {k: p for k, p in found.items() if p.exists()}


def gather_run(runs: Path, name: str, rows: list[dict]) -> dict:
    """Everything a run page shows: lineage, CV details, curves, TTA, ensemble, pseudo rounds, post-processing."""
    from .submissions import SubmissionError, run_competition, run_lineage
    run_dir = Path(runs) / name
    info = {"name": name, "rows": rows, "exists": run_dir.is_dir(), "comp": None, "lineage": {}, "cv": {},
            "metrics": {}, "images": {}, "parent": None, "config_diff": [], "pseudo": [], "ensemble": None,
            "postprocess": None, "predict": None, "raw_lineage": {}}
    if not info["exists"]:  # a deleted run: its ledger rows still say what produced it
        if rows:
            last = rows[-1]
            info["lineage"] = {k: last.get(k) for k in ("git_commit", "git_dirty", "data_hash", "folds_hash",
                                                          "config", "cv", "cv_schemes", "tta", "members")}
        return info
    try:
        comp = run_competition(run_dir)
        info["comp"] = comp
        info["lineage"] = run_lineage(run_dir, comp)
    except (SubmissionError, OSError, ValueError) as e:
        info["error"] = f"{type(e).__name__}: {e}"
    info["raw_lineage"] = RunDir(run_dir).read_json("lineage") or {}
    info["cv"] = RunDir(run_dir).read_json("cv") or {}
    info["metrics"] = read_metrics(run_dir)
    info["images"] = run_images(run_dir)
    info["ensemble"] = RunDir(run_dir).read_json("ensemble")
    info["pseudo"] = pseudo_rounds(runs, name)
    info["predict"] = info["lineage"].get("tta")
    parent = parent_of(run_dir)
    if parent:
        info["parent"] = parent
        info["config_diff"] = config_diff(read_config(Path(runs) / parent), read_config(run_dir))
    if info["comp"] is not None and task_of(info["comp"]).masks and RunDir(run_dir).read_json("cv") is not None:
        from .seg_submit import run_postprocess
        info["postprocess"] = run_postprocess(run_dir)
    return info


def fingerprint(runs: Path, name: str, rows: list[dict], extra: str = "") -> str:
    """Changes whenever anything a run page shows may have changed: its files, its ledger rows, its parent."""
    run_dir = Path(runs) / name
    h = hashlib.sha256(f"{REPORT_VERSION}|{name}|{extra}".encode())
    h.update(json.dumps(rows, sort_keys=True, default=str).encode())
    folders = [run_dir, *sorted(p for p in run_dir.glob("fold*") if p.is_dir())] if run_dir.is_dir() else []
    parent = parent_of(run_dir) if run_dir.is_dir() else None
    if parent:
        folders.append(Path(runs) / parent)
    for folder in folders:
        for p in sorted(folder.iterdir()):
            if p.is_file():
                st = p.stat()
                h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    root = (RunDir(run_dir).read_json("pseudo") or {}).get("root") or name
    for p in sorted(d for d in Path(runs).glob(f"{glob_escape(root)}_pl*") if RunDir(d).read_json("pseudo")):
        h.update(f"{p}|{p.stat().st_mtime_ns}\n".encode())
    return h.hexdigest()
