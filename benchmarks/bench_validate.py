"""Submission validation speed, side by side with a bare `pandas.read_csv` of the same file.

    python benchmarks/bench_validate.py --rows=200000

The ratio says what the row-and-column checks cost over merely reading the CSV.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import fire
import numpy as np
import pandas as pd
import yaml

from kit.competition import load_competition
from kit.validate import validate_submission


def _competition(root: Path, kind: str, n: int, classes: list[str]) -> Path:
    rng = np.random.default_rng(0)
    ids = [f"{i:08x}" for i in range(n)]
    if kind == "label":
        sample = pd.DataFrame({"id": ids, "label": classes[0]})
        sub = pd.DataFrame({"id": ids, "label": rng.choice(classes, n)})
        spec = {"kind": "label"}
    else:
        sample = pd.DataFrame(0.0, index=range(n), columns=classes)
        sample.insert(0, "id", ids)
        sub = pd.DataFrame(rng.dirichlet(np.ones(len(classes)), n), columns=classes)
        sub.insert(0, "id", ids)
        spec = {"kind": "probs", "sum_to_one": True}
    root.mkdir(parents=True)
    sample.to_csv(root / "sample_submission.csv", index=False)
    sub.sample(frac=1, random_state=0).to_csv(root / "sub.csv", index=False, float_format="%.6g")
    (root / "competition.yaml").write_text(yaml.safe_dump({"name": kind, "classes": classes, "submission": spec}))
    return root


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(rows: int = 200_000, classes: int = 10, repeat: int = 3) -> None:
    """Print seconds and rows/s of validate_submission and of pandas.read_csv for label and probs files."""
    names = [str(c) for c in range(classes)]
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("label", "probs"):
            root = _competition(Path(tmp) / kind, kind, rows, names)
            comp = load_competition(root)
            assert validate_submission(comp, root / "sub.csv") == []
            t_val = _best(lambda: validate_submission(comp, root / "sub.csv"), repeat)
            t_pd = _best(lambda: pd.read_csv(root / "sub.csv", dtype=str), repeat)
            print(f"{kind:5s} {rows} rows: validate {t_val:.2f}s ({rows / t_val:,.0f} rows/s)  "
                  f"pandas.read_csv {t_pd:.2f}s  ratio {t_val / t_pd:.1f}x")


if __name__ == "__main__":
    fire.Fire(main)
