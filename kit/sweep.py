"""`kit sweep`: a wandb sweep YAML run locally by Optuna, each trial a subprocess of the YAML's command.

The study lives in SQLite under runs/sweeps/<name>.db by default, or in any database Optuna's RDB
storage takes (--storage=postgresql://...), so that `kit sweep` workers on several machines share
one study. A crashed sweep resumes where it stopped (finished trials are never run again); a trial
whose worker died (no heartbeat) is marked failed and run again by a live worker.
"""
from __future__ import annotations

import json
import os
import queue
import math
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from .rundir import RunDir
from .sweep_spec import SweepSpec, expand_command, grid_space, load_sweep, suggest
from .sweep_study import HEARTBEAT_S, SweepStorageError, open_study, shown, storage_url



class TrialFailed(RuntimeError):
    """The trial's command failed or left no metric; the sweep goes on with the next trial."""


class TrialSurplus(TrialFailed):
    """Two workers started the last trial at once: the later one gives way without running anything."""


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
    """Per-epoch values of the metric (valid/score stands in for cv/score): fold 0's epochs, then fold 1's, ...

    One series per fold, joined in fold-number order (fold2 before fold10), so step n is the n-th epoch trained
    in every trial: hyperband budgets epochs, and `--fold=all` trains its folds one after another in that order.
    Not the mean over folds per epoch: that is known only once the last fold reaches the epoch, too late to save
    anything by stopping.
    """
    key = metric if metric != "cv/score" else "valid/score"
    out = []
    run = RunDir(run_dir)
    for f in run.fold_files(lambda k: run.log("metrics", k)).values():
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

    def __init__(self, spec: SweepSpec, runs: Path, gpus: list[str], trials: int | None = None):
        self.spec, self.runs, self.trials = spec, runs, trials
        self.start_lock, self._held = threading.Lock(), threading.local()  # one trial created at a time per process
        self.logs = runs / "sweeps" / spec.name
        self.logs.mkdir(parents=True, exist_ok=True)
        self.gpus = queue.Queue()
        for g in gpus:
            self.gpus.put(g)

    def hold(self) -> None:
        """Held from the count check until the trial exists, so this process's workers never both take the last."""
        self.start_lock.acquire()
        self._held.on = True

    def started(self) -> None:
        """Release the hold (the trial exists now, RUNNING: the next check counts it)."""
        if getattr(self._held, "on", False):
            self._held.on = False
            self.start_lock.release()

    def __call__(self, trial) -> float:
        import optuna
        self.started()
        if self.trials is not None:
            check_room(trial, self.trials)
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


def running(study) -> list:
    """Trials some live worker is running (those of a dead one are failed first by fail_stale_trials)."""
    from optuna.trial import TrialState
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def check_room(trial, trials: int) -> None:
    """Give way (TrialSurplus) when the trials finished and those started before this one already make the count."""
    ahead = [t for t in running(trial.study) if t.number < trial.number]
    if len(finished(trial.study)) + len(ahead) >= trials:
        trial.set_user_attr("surplus", True)
        raise TrialSurplus(f"trial {trial.number}: {trials} trials are finished or running; not run")


def work(study, objective: Objective, trials: int, budget: list, lock: threading.Lock, poll_s: float) -> None:
    """One worker: start a trial while finished + running trials are fewer than `trials`, else wait for them.

    Waiting rather than stopping keeps the count exact: a running trial may still fail, and a killed worker's
    trial is failed once its heartbeat is stale, queued again (with the same values) and run here.
    """
    import optuna
    while True:
        optuna.storages.fail_stale_trials(study)
        objective.hold()
        try:
            done, busy = len(finished(study)), len(running(study))
            if done >= trials:
                return
            if done + busy >= trials:
                objective.started()
                time.sleep(poll_s)
                continue
            with lock:  # attempts of this process: a command that always fails must not loop for ever
                if budget[0] <= 0:
                    return
                budget[0] -= 1
            study.optimize(objective, n_trials=1, catch=(TrialFailed,))
        finally:
            objective.started()  # released here if the trial never started


def run_sweep(path: str, trials: int, workers: int = 1, runs: str = "runs", gpus: str = "", seed: int = 0,
              storage: str = "", heartbeat: float = HEARTBEAT_S) -> dict:
    """Run the sweep until exactly `trials` trials have finished in its study; print and save the best ones."""
    import optuna
    spec, runs_dir = load_sweep(path), Path(runs)
    if heartbeat < 1:
        raise SweepStorageError(f"--heartbeat={heartbeat}: at least 1 second")
    if spec.method == "grid":  # the grid has this many points; asking for more would run some twice
        trials = min(trials, math.prod(len(v) for v in grid_space(spec).values()))
    study = open_study(spec, runs_dir, seed, storage, heartbeat)
    remaining = trials - len(finished(study))
    where = shown(storage_url(spec, runs_dir, storage))
    print(f"sweep {spec.name}: {len(finished(study))} trial(s) already done, {max(remaining, 0)} to run, "
          f"{workers} worker(s); study in {where}")
    if remaining > 0:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        objective = Objective(spec, runs_dir, [g for g in str(gpus).split(",") if g.strip()], trials)
        budget, lock = [remaining + workers], threading.Lock()
        args = (study, objective, trials, budget, lock, heartbeat)
        if workers == 1:  # in the main thread: Ctrl-C stops the trial's process too
            work(*args)
        else:
            with ThreadPoolExecutor(workers) as pool:
                for f in [pool.submit(work, *args) for _ in range(workers)]:
                    f.result()  # a worker's error (the database gone) is raised here
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
