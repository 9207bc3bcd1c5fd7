"""`make bench`: every benchmark in one run, one table of figures against their targets, RESULTS.md.

    python -m benchmarks.run_all [--quick] [--skip=demo,ckpt]

Each benchmark alternates its arms, drops warm-up and compares medians (see its module). The table
and the machine it ran on are written to benchmarks/RESULTS.md.
"""
from __future__ import annotations

import importlib
import time
from pathlib import Path

import fire

from .common import machine

HERE = Path(__file__).resolve().parent


def _rows_loop(quick: bool) -> list[tuple]:
    from . import bench_loop
    steps, rounds = (16, 2) if quick else (24, 5)
    a1 = bench_loop.bench(steps=steps, rounds=rounds)
    a4 = bench_loop.bench(steps=steps, rounds=rounds, grad_accum=4)
    rows = [("loop: kit / hand step time, accum 1", a1["ratio"], "<= 1.03", a1["ratio"] <= 1.03),
            ("loop: final weights bitwise equal, accum 1", a1["equal"], "True", a1["equal"]),
            ("loop: kit / hand step time, accum 4", a4["ratio"], "<= 1.03", a4["ratio"] <= 1.03),
            ("loop: final weights bitwise equal, accum 4", a4["equal"], "True", a4["equal"])]
    from kit import Config
    if "log_every" in Config.__dataclass_fields__:
        off = bench_loop.bench_logging(steps=max(steps, 60), rounds=rounds)
        rows.append(("loop: tracker logging every 50 steps / off", off["ratio"], "<= 1.02", off["ratio"] <= 1.02))
        rows.append(("loop: extra function calls per non-logging step, logging on", round(off["extra_calls"]),
                     f"0 (of {off['calls_off']:.0f})", off["extra_calls"] == 0))
    return rows


def _rows_data(quick: bool) -> list[tuple]:
    from . import bench_data
    d = bench_data.bench(rounds=2 if quick else 16)  # 16: one noisy round moves the median less
    return [("data: loader alone, images/s", round(d["loader_img_s"]), "", None),
            ("data: train step, images/s", round(d["step_img_s"]), "", None),
            ("data: loader / step rate", d["loader_img_s"] / d["step_img_s"], ">= 1 (step never waits)",
             d["loader_img_s"] >= d["step_img_s"]),
            ("data: step with real loader / pre-collated", d["ratio"], "<= 1.05", d["ratio"] <= 1.05),
            ("data: the same, first epoch (every image decoded)", d["ratio_first"], "", None),
            ("data: the same, later epochs (images from the cache)", d["ratio_later"], "", None),
            ("data: loader CPU per batch, ms (decode + augment + collate)", d["decode_ms"], "", None),
            ("data: loader CPU per batch from the image cache, ms (augment + collate)", d["cached_ms"], "", None),
            ("data: 1 + loader CPU / step time (the ratio if the step left no core idle)", d["no_idle"], "", None)]


def _rows_tta(quick: bool) -> list[tuple]:
    from . import bench_tta
    # one thread: on a shared 2-core machine two threads measure the neighbours more than the batching
    r = bench_tta.bench(views="d4", reps=3 if quick else 7, threads=1)
    return [("TTA: 8 views batched / (8 x one view), 1 thread", r, "<= 1.05", r <= 1.05)]


def _rows_ckpt(quick: bool) -> list[tuple]:
    mod = importlib.import_module(".bench_checkpoint", __package__)
    c = mod.bench(epochs=2 if quick else 3)
    return [("checkpoint: save time, s (demo resnet18)", c["save_s"], "report", None),
            ("checkpoint: save time / epoch time (demo)", c["save_over_epoch"], "report", None),
            ("checkpoint: resume time, s", c["resume_s"], "report", None)]


def _rows_demo(quick: bool) -> list[tuple]:
    from . import bench_demo
    d = bench_demo.bench()
    rows = [(f"demo stage: {k}, s", round(v, 1), "", None) for k, v in d["stages"].items()]
    return rows + [("time to first submission (make demo), s", round(d["total_s"]), "<= 300", d["total_s"] <= 300)]


def _rows_gpu(quick: bool) -> list[tuple]:
    import torch
    if not torch.cuda.is_available():
        return [("GPU: kit / timm benchmark.py train img/s (resnet50 224px bf16)", "not run: no GPU here", ">= 0.95",
                 None)]
    from . import bench_gpu
    g = bench_gpu.bench()
    return [(f"GPU ({g['gpu']}): kit / timm train img/s", g["train_ratio"], ">= 0.95", g["train_ratio"] >= 0.95),
            (f"GPU ({g['gpu']}): kit / timm infer img/s", g["infer_ratio"], ">= 0.95", g["infer_ratio"] >= 0.95)]


def _rows_report(quick: bool) -> list[tuple]:
    from . import bench_report
    r = bench_report.bench(rows=1000, runs=20 if quick else 100)
    rows = [(f"report: cold build, 1,000 rows / {r['runs']} runs, s", round(r["cold_s"], 1), "report", None),
            ("report: rebuild with nothing new, s", round(r["warm_s"], 2), "<= 5", r["warm_s"] <= 5),
            ("report: rebuild after one new submission (one new run page), s", round(r["new_s"], 2), "<= 10",
             r["new_s"] <= 10)]
    if "sort_ms" in r:
        rows.append(("report: sort the 1,000-row table in Chromium, ms", round(r["sort_ms"]), "<= 500",
                     r["sort_ms"] <= 500))
    return rows


SECTIONS = {"loop": _rows_loop, "data": _rows_data, "tta": _rows_tta, "ckpt": _rows_ckpt, "demo": _rows_demo,
            "gpu": _rows_gpu, "report": _rows_report}


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def main(quick: bool = False, skip: str = "", out: str = str(HERE / "RESULTS.md")) -> list[tuple]:
    """Run the benchmarks, print one table, write it with the machine to RESULTS.md."""
    names = skip if isinstance(skip, (list, tuple)) else str(skip).split(",")  # fire turns a,b into a tuple
    skipped = {str(s).strip() for s in names if str(s).strip()}
    rows, t0 = [], time.time()
    for name, fn in SECTIONS.items():
        if name in skipped:
            continue
        try:
            rows += fn(quick)
        except ModuleNotFoundError as e:
            rows.append((f"{name}: not run", f"missing module {e.name}", "", None))
        except Exception as e:  # noqa: BLE001 - one broken benchmark must not hide the others' figures
            rows.append((f"{name}: failed", f"{type(e).__name__}: {str(e)[:80]}", "runs", False))
    width = max(len(r[0]) for r in rows)
    lines = [f"| {'figure':<{width}} | value | target | met |", f"|{'-' * (width + 2)}|---|---|---|"]
    for fig, value, target, ok in rows:
        lines.append(f"| {fig:<{width}} | {_fmt(value)} | {target} | {'' if ok is None else ('yes' if ok else 'NO')} |")
    table = "\n".join(lines)
    print("\n" + table)
    header = (f"# Benchmark results\n\nLatest `make bench` ({'quick, ' if quick else ''}{time.strftime('%Y-%m-%d')}, "
              f"{time.time() - t0:.0f} s) on: {machine()}.\n\n")
    Path(out).write_text(header + table + "\n")
    return rows


if __name__ == "__main__":
    fire.Fire(main)
