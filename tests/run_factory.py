"""Run folders as training leaves them (config, lineage, cv, test table), made without training."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from kit.competition import load_competition
from kit.config import Config, save_config
from kit.tables import write_probs


def make_run(runs: Path, comp_dir: Path, name: str, skill: float, seed: int = 0, cv: float | None = None,
             **extra_files) -> Path:
    """runs/<name>: test probabilities right for about `skill` of the test ids (read from the hidden solution)."""
    comp = load_competition(comp_dir)
    run = Path(runs) / name
    run.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    truth = pd.read_csv(comp_dir / "leaderboard" / "solution.csv", dtype=str).set_index("id")["label"]
    ids = comp.read_test()[comp.id_column].tolist()
    k = len(comp.classes)
    right = rng.random(len(ids)) < skill
    label = np.where(right, [comp.classes.index(truth[i]) for i in ids], rng.integers(0, k, len(ids)))
    probs = rng.dirichlet(np.ones(k), len(ids)) * 0.5
    probs[np.arange(len(ids)), label] += 0.5
    write_probs(run / "test.parquet", ids, probs, comp)
    save_config(Config(comp=str(comp_dir), name=name, lr=1e-3 * (seed + 1)), run / "config.yaml")
    (run / "lineage.json").write_text(json.dumps({
        "experiment": name, "commit": f"{seed:040x}", "dirty": bool(seed % 2), "data_hash": "d" * 64,
        "folds_hash": "f" * 64}))
    if cv is not None:
        (run / "cv.json").write_text(json.dumps({"cv": cv, "per_fold": {"0": cv}, "metric": comp.metric}))
    for fname, payload in extra_files.items():
        (run / f"{fname}.json").write_text(json.dumps(payload))
    return run
