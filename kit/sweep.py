"""`kit sweep`: a wandb sweep YAML run locally by Optuna, each trial a subprocess of the YAML's command.

The study lives in SQLite under runs/sweeps/<name>.db, so a crashed sweep resumes where it stopped
(finished trials are never run again) and several `kit sweep` processes can share one study.
"""
from __future__ import annotations

import json
import os
import queue
import subprocess
import time
from pathlib import Path

import pandas as pd

from .rundir import RunDir
from .sweep_spec import SweepSpec, expand_command, grid_space, load_sweep, suggest

HEARTBEAT_S, GRACE_S = 10, 30  # a trial silent this long belonged to a killed sweep: failed, then retried


class TrialFailed(RuntimeError):
    """The trial's command failed or left no metric; the sweep goes on with the next trial."""


def open_study(spec: SweepSpec, runs: Path, seed: int = 0):
    """Create or load the study in runs/sweeps/<name>.db with the YAML's sampler and pruner."""
    import optuna
    import warnings

    from optuna import storages
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats: stable in use
    db = (runs / "sweeps" / f"{spec.name}.db").resolve()
    db.parent.mkdir(parents=True, exist_ok=True)
    if hasattr(storages, "RetryHeartbeatStaleTrialCallback"):  # Optuna >= 4.9 renamed the hook
        retry = {"heartbeat_stale_trial_callback": storages.RetryHeartbeatStaleTrialCallback(max_retry=1)}
    else:
        retry = {"failed_trial_callback": storages.RetryFailedTrialCallback(max_retry=1)}
    storage = storages.RDBStorage(f"sqlite:///{db}", heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                  engine_kwargs={"connect_args": {"timeout": 60}}, **retry)  # workers share the file
    study = optuna.create_study(study_name=spec.name, storage=storage, direction=spec.direction,
                                load_if_exists=True, pruner=create_pruner(spec))
    study.sampler = create_sampler(spec, seed + len(study.trials))  # a resumed sweep must not redraw old points
    study.set_user_attr("metric", spec.metric)
    return study


def create_sampler(spec: SweepSpec, seed: int):
    """grid -> GridSampler, random -> RandomSampler, bayes -> TPE."""
    import optuna
    if spec.method == "grid":
        return optuna.samplers.GridSampler(grid_space(spec), seed=seed)
    if spec.method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def create_pruner(spec: SweepSpec):
    """early_terminate: hyperband -> Optuna's HyperbandPruner on epochs; otherwise no pruning."""
    import optuna
    et = spec.early_terminate
    if not et:
        return optuna.pruners.NopPruner()
    return optuna.pruners.HyperbandPruner(min_resource=int(et.get("min_iter", 1)),
                                          max_resource=int(et["max_iter"]) if "max_iter" in et else "auto",
                                          reduction_factor=int(et.get("eta", 3)))


def read_metric(run_dir: Path, metric: str) -> float:
    """The metric's last logged value from the run folder's summary.json (cv.json for cv/score)."""
    run = RunDir(run_dir)
    summary, cv = run.read_json("summary") or {}, run.read_json("cv")
    if metric in summary:
        return float(summary[metric])
    if metric == "cv/score" and cv is not None:
        return float(cv["cv"])
    raise TrialFailed(f"{run_dir}: metric {metric!r} was not logged (summary.json has {sorted(summary)}); "
                      "cv/score needs every fold (--fold=all)")


def epoch_values(run_dir: Path, metric: str) -> list[float]:
    """Per-epoch values of the metric (valid/score stands in for cv/score) from the folds' metrics.jsonl."""
    key = metric if metric != "cv/score" else "valid/score"
    out = []
    for f in sorted(run_dir.glob("fold*/metrics.jsonl")):
        for line in f.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line being written
                continue
            if key in row:
                out.append(float(row[key]))
    return out


class Objective:
    """Run one trial: draw values, run the command, report epochs (for pruning), return the metric."""

    def __init__(self, spec: SweepSpec, runs: Path, gpus: list[str]):
        self.spec, self.runs = spec, runs
        self.logs = runs / "sweeps" / spec.name
        self.logs.mkdir(parents=True, exist_ok=True)
        self.gpus = queue.Queue()
        for g in gpus:
            self.gpus.put(g)

    def __call__(self, trial) -> float:
        import optuna
        values = {name: suggest(trial, p) for name, p in self.spec.params.items()}
        run_name = f"{self.spec.name}-t{trial.number:03d}"
        run_dir = self.runs / run_name
        trial.set_user_attr("values", values)
        trial.set_user_attr("run", str(run_dir))
        cmd = expand_command(self.spec, values, {"name": run_name, "out_dir": str(self.runs)})
        env = dict(os.environ)
        gpu = None if self.gpus.empty() else self.gpus.get()
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu  # one trial per GPU, as one wandb agent per GPU
        t0, reported = time.perf_counter(), 0
        log = self.logs / f"{run_name}.log"
        try:
            with open(log, "w") as out:
                out.write(" ".join(cmd) + "\n")
                out.flush()
                proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
                try:
                    while proc.poll() is None:
                        time.sleep(0.5)
                        for v in epoch_values(run_dir, self.spec.metric)[reported:]:
                            trial.report(v, reported)
                            reported += 1
                            if trial.should_prune():
                                proc.terminate()
                                proc.wait()
                                trial.set_user_attr("seconds", round(time.perf_counter() - t0, 1))
                                raise optuna.TrialPruned(f"{run_name}: pruned after {reported} epochs")
                finally:
                    if proc.poll() is None:  # the sweep itself is stopping: never leave a trial running
                        proc.terminate()
                        proc.wait()
        finally:
            if gpu is not None:
                self.gpus.put(gpu)
        trial.set_user_attr("seconds", round(time.perf_counter() - t0, 1))
        if proc.returncode != 0:
            raise TrialFailed(f"{run_name}: `{' '.join(cmd)}` exited with {proc.returncode}; see {log}")
        return read_metric(run_dir, self.spec.metric)


def finished(study) -> list:
    """Trials that ran to the end (or were pruned): these are never run again."""
    from optuna.trial import TrialState
    return [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def run_sweep(path: str, trials: int, workers: int = 1, runs: str = "runs", gpus: str = "", seed: int = 0) -> dict:
    """Run the sweep until `trials` trials have finished in its study; print and save the best ones."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState
    spec, runs_dir = load_sweep(path), Path(runs)
    study = open_study(spec, runs_dir, seed)
    remaining = trials - len(finished(study))
    print(f"sweep {spec.name}: {len(finished(study))} trial(s) already done, {max(remaining, 0)} to run, "
          f"{workers} worker(s); study in {runs_dir / 'sweeps' / (spec.name + '.db')}")
    if remaining > 0:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        objective = Objective(spec, runs_dir, [g for g in str(gpus).split(",") if g.strip()])
        study.optimize(objective, n_trials=remaining, n_jobs=workers, catch=(TrialFailed,),
                       callbacks=[MaxTrialsCallback(trials, states=(TrialState.COMPLETE, TrialState.PRUNED))])
    return summarise(study, spec, runs_dir / "sweeps" / spec.name)


def trials_table(study, spec: SweepSpec) -> pd.DataFrame:
    """Completed trials, best first by the YAML's goal: number, metric, the values passed, seconds, run folder."""
    from optuna.trial import TrialState
    rows = [{"trial": t.number, spec.metric: t.value, **t.user_attrs.get("values", t.params),
             "seconds": t.user_attrs.get("seconds"), "run": t.user_attrs.get("run")}
            for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    table = pd.DataFrame(rows)
    if len(table):
        table = table.sort_values(spec.metric, ascending=spec.goal == "minimize", kind="stable")
    return table.reset_index(drop=True)


def summarise(study, spec: SweepSpec, out: Path) -> dict:
    """Print the best trials, write best.csv and a PNG of the optimisation history and parameter importances."""
    out.mkdir(parents=True, exist_ok=True)
    table = trials_table(study, spec)
    table.to_csv(out / "trials.csv", index=False)
    if not len(table):
        print(f"sweep {spec.name}: no completed trial yet (logs in {out})")
        return {"best": None, "table": table, "png": None}
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.head(10).to_string(index=False))
    best = table.iloc[0].to_dict()
    print(f"best: trial {best['trial']} {spec.metric}={best[spec.metric]:.6g} ({spec.goal}) -> {best['run']}")
    png = plot_sweep(study, table, spec, out / "sweep.png")
    print(f"history and importances: {png}")
    return {"best": best, "table": table, "png": png}


def plot_sweep(study, table: pd.DataFrame, spec: SweepSpec, png: Path) -> Path:
    """Two panels: metric per trial with the best so far; Optuna's parameter importances (fANOVA)."""
    from .figures import pyplot
    plt = pyplot()
    import numpy as np
    import optuna
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ordered = table.sort_values("trial")
    values = ordered[spec.metric].to_numpy(float)
    best = np.minimum.accumulate(values) if spec.goal == "minimize" else np.maximum.accumulate(values)
    ax1.scatter(ordered["trial"], values, label="trial")
    ax1.step(ordered["trial"], best, where="post", color="C1", label="best so far")
    ax1.set(xlabel="trial", ylabel=spec.metric, title="optimisation history")
    ax1.legend()
    try:
        importances = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError):  # fewer than two finished trials, or nothing varied
        importances = {}
    if importances:
        names = list(importances)[::-1]
        ax2.barh(names, [importances[n] for n in names])
    else:
        ax2.text(0.5, 0.5, "needs 2+ trials with varied parameters", ha="center", va="center")
    ax2.set(title="parameter importances", xlabel="importance")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
