"""`kit report` on a large ledger: cold build, rebuild with nothing new, rebuild after one new submission,
and sorting / filtering the ledger table in headless Chromium.

    python -m benchmarks.bench_report --rows=1000 --runs=100

The runs are finished run folders as training leaves them (config, lineage, cv.json, OOF/test tables,
per-fold metrics.jsonl, confusion.png); the ledger rows point at them round-robin, each with a CV per
validation scheme and public/private scores.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import fire
import numpy as np

from kit.competition import load_competition
from kit.config import Config, save_config
from kit.demo import make_demo
from kit.ledger import Ledger
from kit.report import build_report
from kit.submissions import build_submission
from kit.tables import score_oof, write_confusion, write_probs


def _make_run(runs: Path, comp, train, name: str, skill: float, rng) -> Path:
    run = runs / name
    (run / "fold0").mkdir(parents=True)
    y = train[comp.target].map({c: i for i, c in enumerate(comp.classes)}).to_numpy()
    oof = rng.dirichlet(np.ones(len(comp.classes)), len(y)) + skill * np.eye(len(comp.classes))[y]
    ids = train[comp.id_column].tolist()
    write_probs(run / "oof.parquet", ids, oof / oof.sum(1, keepdims=True), comp)
    test_ids = comp.read_test()[comp.id_column].tolist()
    write_probs(run / "test.parquet", test_ids, rng.dirichlet(np.ones(len(comp.classes)), len(test_ids)), comp)
    save_config(Config(comp=str(comp.root), name=name, lr=float(rng.choice([1e-3, 2e-3, 3e-4]))), run / "config.yaml")
    (run / "lineage.json").write_text(json.dumps({"experiment": name, "commit": "ab" * 20, "dirty": False,
                                                  "data_hash": "d" * 64, "folds_hash": "f" * 64}))
    import pandas as pd
    scored = score_oof(comp, train, pd.read_parquet(run / "oof.parquet"))
    (run / "cv.json").write_text(json.dumps({"cv": scored["score"], "metric": comp.metric, "per_fold": {"0": 0.5},
                                             "per_class_f1": scored["per_class_f1"]}))
    with open(run / "fold0" / "metrics.jsonl", "w") as f:
        for e in range(10):
            f.write(json.dumps({"fold": 0, "epoch": e, "train_loss": 2 / (e + 1), "lr": 1e-3 * (1 - e / 10),
                                "valid/score": skill * e / 10}) + "\n")
    write_confusion(run, comp, train, pd.read_parquet(run / "oof.parquet"))
    csv = run.parent.parent / "submissions" / f"{name}.csv"
    build_submission(comp, run / "test.parquet").to_csv(csv, index=False)
    return csv


def _add_row(ledger: Ledger, comp, name: str, csv: Path, when: datetime, rng) -> None:
    cv = float(rng.uniform(0.3, 0.9))
    ledger.add({"created_utc": when.isoformat(timespec="seconds"), "competition": comp.name, "comp_dir": str(comp.root),
                "file": str(csv), "sha256": f"{rng.integers(1 << 62):016x}", "experiments": [name],
                "cv": cv, "cv_schemes": {"plain": cv, "testlike": cv - 0.1}, "cv_folds": "all",
                "metric": comp.metric, "message": f"try {rng.integers(1000)}", "target": "local", "status": "scored",
                "public": cv - float(rng.uniform(0.05, 0.3)), "private": cv - float(rng.uniform(0.05, 0.3)),
                "git_commit": "ab" * 20, "git_dirty": 0})


def _browser_times(index: Path) -> dict:
    from tests.browser import Browser
    b = Browser()
    try:
        t = time.perf_counter()
        b.open(index.as_uri())
        out = {"open_s": time.perf_counter() - t}
        out["sort_ms"] = b.eval("(() => { const t = performance.now(); [...document.querySelectorAll('#ledger th')]"
                                ".find(h => h.textContent.trim() === 'public').click(); "
                                "return performance.now() - t })()")
        out["filter_ms"] = b.eval("(() => { const t = performance.now(); const f = document.getElementById('filter');"
                                  " f.value = 'try 1'; f.dispatchEvent(new Event('input')); "
                                  "return performance.now() - t })()")
        out["table_rows"] = b.eval("document.querySelectorAll('#ledger tbody tr').length")
        out["problems"] = b.problems()
        return out
    finally:
        b.close()


def bench(rows: int = 1000, runs: int = 100, browser: bool = True) -> dict:
    """Seconds to build the site cold, warm, after one new submission; ms to sort and filter in Chromium."""
    work = Path(tempfile.mkdtemp(prefix="kit-bench-report-"))
    comp = load_competition(make_demo(work / "demo"))
    train = comp.read_train()
    (work / "submissions").mkdir()
    rng = np.random.default_rng(0)
    csvs = {f"exp{i:03d}": _make_run(work / "runs", comp, train, f"exp{i:03d}", rng.uniform(0.1, 1.0), rng)
            for i in range(runs)}
    ledger = Ledger(work / "submissions" / "ledger.db")
    start, names = datetime(2026, 1, 1, tzinfo=timezone.utc), list(csvs)
    for i in range(rows):
        name = names[i % len(names)]
        _add_row(ledger, comp, name, csvs[name], start + timedelta(hours=3 * i), rng)
    old = os.getcwd()
    os.chdir(work)
    try:
        cold = build_report()
        warm = build_report()
        extra = "exp_new"
        csvs[extra] = _make_run(work / "runs", comp, train, extra, 0.9, rng)
        _add_row(ledger, comp, extra, csvs[extra], start + timedelta(hours=3 * rows), rng)
        new = build_report()
    finally:
        os.chdir(old)
    out = {"rows": rows, "runs": runs, "cold_s": cold["seconds"], "cold_pages": cold["rebuilt"],
           "warm_s": warm["seconds"], "warm_pages": warm["rebuilt"], "new_s": new["seconds"],
           "new_pages": new["rebuilt"], "index_kb": (work / cold["index"]).stat().st_size / 1024}
    if browser:
        out.update(_browser_times(work / new["index"]))
    return out


if __name__ == "__main__":
    fire.Fire(lambda rows=1000, runs=100, browser=True: print(json.dumps(bench(rows, runs, browser), indent=1)))
