"""`kit export`: a run, several runs or an ensemble as a Kaggle Dataset folder + an offline notebook.

export/<name>/dataset/  package.json, competition.yaml, <run>.config.yaml, <run>.experiment.py,
                        <run>.fold<k>.safetensors, the kit wheel (+ a wheelhouse), dataset-metadata.json
export/<name>/kernel/   <name>.ipynb + kernel-metadata.json (internet off; the dataset and competition attached)
export/<name>/export.json  package size and the measured CPU time per 1,000 test images
The dataset folder is flat: Kaggle's upload API skips sub-folders unless it zips them.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .infer import load_experiment_class, run_views, run_weights
from .rundir import RunDir
from .package import PACKAGE_FILE, predict_package
from .submissions import run_competition
from .tasks import task_of

WHEELS = ("kit", "locked", "none")
# Runtime packages of the kit that Kaggle's image lacks; `--wheels=locked` adds them at the installed versions.
NOT_ON_KAGGLE = ("iterative-stratification", "fire")


class ExportError(ValueError):
    """A run cannot be exported; the message says which and why."""


def slugify(text: str, lo: int = 6, hi: int = 50) -> str:
    """A Kaggle slug: lower case, digits and dashes, 6-50 characters."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return (slug + "-model")[:hi].strip("-") if len(slug) < lo else slug[:hi].strip("-")


def collect_members(names: list[str], runs: Path) -> tuple[list[dict], str]:
    """(members with their weight, blend method): an ensemble's members, or the runs given (equal weights)."""
    method, weights = "soft", {n: 1 / len(names) for n in names}
    only = RunDir(runs / names[0])
    ens = only.read_json("ensemble") if len(names) == 1 and not only.has_config() else None
    if ens:
        method, weights = ens.get("method", "soft"), {str(k): float(v) for k, v in ens["members"].items()}
    members = []
    for name, weight in weights.items():
        run_dir, run = runs / name, RunDir(runs / name)
        if not run.has_config():
            what = "an ensemble (export it alone, or its members)" if run.read_json("ensemble") else \
                "not a trained run"
            raise ExportError(f"{run_dir}: {what}: no {run.config_path.name}")
        members.append({"name": name, "weight": weight, "run_dir": run_dir})
    return members, method


def member_record(m: dict, dataset: Path) -> dict:
    """Copy one run's config, experiment file and fold weights into the flat dataset folder; its package entry."""
    run_dir, name = m["run_dir"], m["name"]
    cls = load_experiment_class(run_dir)
    cfg = RunDir(run_dir).config(type(cls.config))
    comp = run_competition(run_dir)
    views, method = run_views(run_dir, cfg)
    shutil.copy(RunDir(run_dir).config_path, dataset / f"{name}.config.yaml")
    experiment = None
    if (run_dir / "experiment.py").exists():
        experiment = f"{name}.experiment.py"
        shutil.copy(run_dir / "experiment.py", dataset / experiment)
    weights = {}
    for k, path in run_weights(run_dir).items():
        weights[str(k)] = f"{name}.fold{k}.safetensors"
        shutil.copy(path, dataset / weights[str(k)])
    seg = task_of(comp).masks
    model = {"arch": cfg.arch, "encoder": cfg.encoder} if seg else {"timm_model": cfg.model, "drop_rate": cfg.drop_rate}
    model.update(img_size=cfg.img_size, mean=cfg.mean, std=cfg.std, interpolation=cfg.interpolation,
                 classes=list(comp.classes), heads=dict(comp.heads), task=comp.task)
    record = {"name": name, "weight": m["weight"], "config": f"{name}.config.yaml", "experiment": experiment,
              "trainer_class": cls.__name__, "weights": weights, "views": views, "view_method": method, "model": model}
    if seg:
        from .seg_submit import run_postprocess
        record["threshold"], record["min_area"] = run_postprocess(run_dir, cfg.threshold)
    return record


def write_wheels(dataset: Path, wheels: str) -> list[str]:
    """The kit wheel (kit, locked) and wheels of the packages Kaggle's image lacks (locked)."""
    if wheels not in WHEELS:
        raise ExportError(f"--wheels={wheels!r}: choose one of {WHEELS}")
    if wheels == "none":
        return []
    from importlib import metadata

    from .wheel import build_kit_wheel
    found = [build_kit_wheel(dataset).name]
    if wheels == "locked":  # pinned to this environment's versions; needs the package index once, here
        pins = [f"{p}=={metadata.version(p)}" for p in NOT_ON_KAGGLE]
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(dataset), *pins],
                       check=True)
        found = sorted(p.name for p in dataset.glob("*.whl"))
    return found


def export_runs(names: list[str], out: str | Path, runs: str | Path = "runs", wheels: str = "kit", user: str = "",
                measure: bool = True, force: bool = False) -> dict:
    """Write the dataset and kernel folders for `names`; measure the package's CPU time on the local test images."""
    runs, out = Path(runs), Path(out)
    if not names:
        raise ExportError("name one or more runs, or an ensemble")
    if out.exists() and any(out.iterdir()) and not force:
        raise ExportError(f"{out} exists and is not empty: choose another --out, or pass --force to replace it")
    members, method = collect_members(list(names), runs)
    comps = [run_competition(m["run_dir"]) for m in members]
    comp = comps[0]
    if any(c.root.resolve() != comp.root.resolve() for c in comps):
        raise ExportError(f"{[m['name'] for m in members]}: runs of different competitions")
    if task_of(comp).masks and len(members) > 1:
        raise ExportError("segmentation: one run per package (masks are not ensembled by `kit ensemble`)")
    if force and out.exists():
        shutil.rmtree(out)
    dataset, kernel = out / "dataset", out / "kernel"
    dataset.mkdir(parents=True)
    records = [member_record(m, dataset) for m in members]
    spec = yaml.safe_load((comp.root / "competition.yaml").read_text()) or {}
    spec.pop("leaderboard", None)  # the hidden solution never leaves the machine
    spec.setdefault("name", comp.name)
    (dataset / "competition.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    wheel_files = write_wheels(dataset, wheels)
    name = out.name
    package = {"format": 1, "name": name, "competition": comp.name, "kaggle": comp.kaggle, "task": comp.task,
               "method": method, "members": records, "wheels": wheel_files}
    (dataset / PACKAGE_FILE).write_text(json.dumps(package, indent=1))
    user = user or os.environ.get("KAGGLE_USERNAME") or "your-kaggle-username"
    ds_slug, k_slug = slugify(f"kit-{name}"), slugify(f"kit-{name}-inference")
    (dataset / "dataset-metadata.json").write_text(json.dumps(
        {"title": ds_slug, "id": f"{user}/{ds_slug}", "licenses": [{"name": "CC0-1.0"}]}, indent=1))
    from .notebook import write_kernel_metadata, write_notebook
    write_notebook(kernel / f"{k_slug}.ipynb", k_slug, ds_slug, comp.kaggle, [m["name"] for m in members])
    write_kernel_metadata(kernel, user, k_slug, f"{k_slug}.ipynb", f"{user}/{ds_slug}", comp.kaggle)
    info = {"out": str(out), "members": [m["name"] for m in members], "method": method, "wheels": wheel_files,
            "size_bytes": sum(p.stat().st_size for p in dataset.iterdir() if p.is_file()),
            "dataset": f"{user}/{ds_slug}", "kernel": f"{user}/{k_slug}"}
    if measure:
        info.update(measure_package(dataset, comp.root, names, runs))
    (out / "export.json").write_text(json.dumps(info, indent=1))
    return info


def measure_package(dataset: Path, data: Path, names: list[str], runs: Path) -> dict:
    """Run the package on the local test images on one CPU core, as the notebook would; compare with the run's table."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per-image CPU time that does not depend on this machine's core count
    try:
        with tempfile.TemporaryDirectory() as tmp:
            got = predict_package(dataset, data, Path(tmp) / "submission.csv", Path(tmp) / "work", device="cpu",
                                  num_workers=0)
            table = Path(got["probabilities"])
            ref = RunDir(runs / names[0]).table("test")
            diff = None
            if len(names) == 1 and table.suffix == ".parquet" and ref.exists():
                a, b = pd.read_parquet(table).set_index("id"), pd.read_parquet(ref).set_index("id")
                diff = float(np.abs(a.loc[b.index].to_numpy() - b[a.columns].to_numpy()).max())
    finally:
        torch.set_num_threads(threads)
    return {"images": got["images"], "cpu_s": got["cpu_s"], "cpu_s_per_1000": got["cpu_s_per_1000"],
            "max_abs_diff_vs_run": diff}
