"""Sweeps: the wandb YAML read for Optuna, and `kit sweep` running real trials (killed, resumed)."""
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from kit.config import Config, load_config, parse_overrides
from kit.sweep_spec import SweepError, create_pruner, create_sampler, expand_command, format_value, load_sweep, suggest
from tests.helpers import BIN, ROOT

optuna.logging.set_verbosity(optuna.logging.WARNING)


def write_yaml(tmp_path: Path, **spec) -> Path:
    base = {"method": "random", "metric": {"name": "cv/score", "goal": "maximize"}, "program": "exp.py",
            "parameters": {"lr": {"values": [0.1]}}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**base, **spec}))
    return path


@pytest.mark.parametrize("change, message", [
    ({"method": "hyperopt"}, "method: 'hyperopt'"),
    ({"metric": {"goal": "maximize"}}, "metric: needs a name"),
    ({"metric": {"name": "x", "goal": "up"}}, "metric.goal"),
    ({"parameters": {"lr": {"distribution": "normal", "mu": 0, "sigma": 1}}}, "parameters.lr: distribution 'normal'"),
    ({"parameters": {"lr": {"min": 0.1, "max": 0.01}}}, "parameters.lr: min"),
    ({"parameters": {"lr": {"distribution": "log_uniform_values", "min": 0, "max": 1}}}, "needs min > 0"),
    ({"method": "grid", "parameters": {"lr": {"min": 0.1, "max": 0.5}}}, "grid search needs `values`"),
    ({"command": "python exp.py"}, "command: expected a list"),
    ({"early_terminate": {"type": "median"}}, "only type: hyperband"),
])
def test_bad_yaml_names_the_file_and_key(tmp_path, change, message):
    path = write_yaml(tmp_path, **change)
    with pytest.raises(SweepError, match=message) as e:
        load_sweep(path)
    assert str(path) in str(e.value)


def test_each_distribution_draws_in_its_range_and_scale(tmp_path):
    spec = load_sweep(write_yaml(tmp_path, parameters={
        "a": {"min": 2, "max": 5},  # ints: int_uniform, as wandb infers
        "b": {"min": 0.0, "max": 1.0},
        "c": {"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.25},
        "d": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1},
        "e": {"distribution": "q_log_uniform_values", "min": 16, "max": 256, "q": 8},
        "f": {"distribution": "log_uniform", "min": -3, "max": 0},
        "g": {"values": ["x", "y", True]},
        "h": {"value": 3e-4},
        "i": {"distribution": "inv_log_uniform_values", "min": 0.01, "max": 1.0},
    }))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    draws = []
    for _ in range(300):
        trial = study.ask()
        draws.append({n: suggest(trial, p) for n, p in spec.params.items()})
        study.tell(trial, 0.0)
    col = {k: [d[k] for d in draws] for k in draws[0]}
    assert set(col["a"]) == {2, 3, 4, 5} and all(type(v) is int for v in col["a"])
    assert 0 <= min(col["b"]) and max(col["b"]) <= 1 and len(set(col["b"])) > 250
    assert set(col["c"]) <= {0.0, 0.25, 0.5, 0.75, 1.0} and len(set(col["c"])) >= 4
    d = np.log10(col["d"])  # log-uniform: uniform exponent, median near 10^-2.5
    assert -4 <= d.min() and d.max() <= -1 and abs(np.median(d) + 2.5) < 0.3
    assert all(v % 8 == 0 and 16 <= v <= 256 and type(v) is int for v in col["e"])
    assert all(math.exp(-3) - 1e-12 <= v <= 1 for v in col["f"])
    assert set(col["g"]) == {"x", "y", True} and set(col["h"]) == {3e-4}
    assert all(0.01 <= v <= 1.0 for v in col["i"]) and abs(np.log10(np.median(col["i"])) + 1) < 0.3


def test_grid_runs_every_combination_once(tmp_path):
    spec = load_sweep(write_yaml(tmp_path, method="grid", parameters={
        "lr": {"values": [3e-4, 1e-3]}, "channels_last": {"values": [True, False]}, "epochs": {"min": 1, "max": 3}}))
    study = optuna.create_study(sampler=create_sampler(spec, 0))
    seen = []

    def objective(trial):
        v = {n: suggest(trial, p) for n, p in spec.params.items()}
        seen.append((v["lr"], v["channels_last"], v["epochs"]))
        return 0.0

    study.optimize(objective, n_trials=50)  # GridSampler stops the study once the grid is covered
    assert sorted(seen) == sorted((lr, cl, e) for lr in (3e-4, 1e-3) for cl in (True, False) for e in (1, 2, 3))


def test_hyperband_becomes_optunas_pruner(tmp_path):
    spec = load_sweep(write_yaml(tmp_path, early_terminate={"type": "hyperband", "min_iter": 2, "eta": 2}))
    pruner = create_pruner(spec)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert pruner._min_resource == 2 and pruner._reduction_factor == 2
    assert isinstance(create_pruner(load_sweep(write_yaml(tmp_path))), optuna.pruners.NopPruner)


def test_args_parse_back_to_exactly_the_sampled_values():
    rng = np.random.default_rng(0)
    floats = [3e-4, 0.1 + 0.2, 1 / 3, 1e-300, 2.5e10, *rng.uniform(1e-6, 1, 50).tolist()]
    for v in floats:
        assert parse_overrides([f"--lr={format_value(v)}"])["lr"] == v
    for v in (True, False):
        assert parse_overrides([f"--channels_last={format_value(v)}"])["channels_last"] is v


def test_the_experiment_sweep_yaml_expands_to_the_documented_command():
    spec = load_sweep(ROOT / "experiments" / "sweeps" / "exp001_baseline.yaml")
    cmd = expand_command(spec, {"lr": 3e-4, "aug": "light", "fold": "all"})
    assert cmd == ["/usr/bin/env", "accelerate", "launch", "--config_file", "accelerate_config.yaml",
                   "experiments/exp001_baseline.py", "--lr=0.0003", "--aug=light", "--fold=all"]
    names = set(Config.__dataclass_fields__)
    assert set(spec.params) <= names, set(spec.params) - names  # every swept key is a config field
    assert spec.metric == "cv/score" and spec.goal == "maximize" and spec.method == "bayes"


EXPERIMENT = '''
from kit import Config, Trainer, run


class Exp(Trainer):
    config = Config(comp="{comp}", model="resnet18", img_size=16, batch_size=16, epochs=1, limit=60, num_workers=0,
                    predict_test=False, warmup_epochs=0)


if __name__ == "__main__":
    run(Exp)
'''


def sweep_env() -> dict:
    return {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
            "WANDB_MODE": "offline"}


def trial_states(db: Path) -> dict:
    with sqlite3.connect(db) as con:
        return dict(con.execute("select number, state from trials").fetchall())


@pytest.mark.slow
def test_kit_sweep_runs_trials_picks_the_best_and_resumes_after_a_kill(tmp_path, demo_copy):
    shutil.copy(ROOT / "accelerate_config.yaml", tmp_path)
    (tmp_path / "exp_tiny.py").write_text(EXPERIMENT.format(comp=demo_copy))
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({
        "name": "tiny", "program": "exp_tiny.py", "method": "random",
        "metric": {"name": "valid/loss", "goal": "minimize"},
        "parameters": {"lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 3e-2},
                       "channels_last": {"values": [True, False]}, "weight_decay": {"value": 3e-4},
                       "img_size": {"values": [16, 24]}},
        "command": ["${env}", "accelerate", "launch", "--config_file", "accelerate_config.yaml", "${program}",
                    "${args}"]}))
    cmd = [str(BIN / "kit"), "sweep", "tiny.yaml", "--trials=3"]
    # 1) start, kill the whole sweep (and its trial) while the second trial trains
    first = subprocess.Popen(cmd, cwd=tmp_path, env=sweep_env(), start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while not (tmp_path / "runs" / "tiny-t001" / "fold0" / "config.yaml").exists():
        assert first.poll() is None and time.monotonic() < deadline, first.stdout.read().decode()[-3000:]
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    db = tmp_path / "runs" / "sweeps" / "tiny.db"
    assert trial_states(db) == {0: "COMPLETE", 1: "RUNNING"}
    done_stamp = (tmp_path / "runs" / "tiny-t000" / "summary.json").stat().st_mtime_ns
    # 2) the same command resumes: trial 0 is not run again, two more complete
    r = subprocess.run(cmd, cwd=tmp_path, env=sweep_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "1 trial(s) already done, 2 to run" in r.stdout
    states = trial_states(db)
    complete = [n for n, s in states.items() if s == "COMPLETE"]
    assert len(complete) == 3 and 0 in complete and 1 not in complete, states
    assert (tmp_path / "runs" / "tiny-t000" / "summary.json").stat().st_mtime_ns == done_stamp
    # every finished trial trained with exactly the values Optuna drew
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}")
    results = {}
    for t in study.trials:
        if t.state != optuna.trial.TrialState.COMPLETE:
            continue
        run = tmp_path / "runs" / f"tiny-t{t.number:03d}"
        cfg = load_config(run / "config.yaml")
        drawn = t.user_attrs["values"]
        assert {k: getattr(cfg, k) for k in drawn} == drawn and cfg.weight_decay == 3e-4
        assert type(cfg.channels_last) is bool and drawn["lr"] == t.params["lr"]
        results[t.number] = json.loads((run / "summary.json").read_text())["valid/loss"]
        assert t.value == results[t.number]
    # the best by the YAML's goal (minimize), read from the run folders independently
    best = min(results, key=results.get)
    assert f"best: trial {best} valid/loss=" in r.stdout
    table = (tmp_path / "runs" / "sweeps" / "tiny" / "trials.csv").read_text().splitlines()
    assert table[1].startswith(f"{best},")
    assert (tmp_path / "runs" / "sweeps" / "tiny" / "sweep.png").stat().st_size > 10_000
    print("trial seconds:", [t.user_attrs.get("seconds") for t in study.trials])


PROGRAM = '''
import json, sys, time
from pathlib import Path
args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
run = Path(args["out_dir"]) / args["name"]
(run / "fold0").mkdir(parents=True)
for epoch in range(8):  # the score grows with lr: low-lr trials are the ones hyperband stops
    with open(run / "fold0" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": epoch, "valid/score": float(args["lr"]) * (epoch + 1)}) + "\\n")
    time.sleep(0.4)
(run / "summary.json").write_text(json.dumps({"valid/score": float(args["lr"]) * 8}))
'''


def test_hyperband_stops_weak_trials_while_they_run(tmp_path):
    from kit.sweep import run_sweep
    (tmp_path / "prog.py").write_text(PROGRAM)
    path = tmp_path / "hb.yaml"
    path.write_text(yaml.safe_dump({
        "name": "hb", "program": str(tmp_path / "prog.py"), "method": "random",
        "metric": {"name": "valid/score", "goal": "maximize"},
        "parameters": {"lr": {"min": 0.0, "max": 1.0}},
        "early_terminate": {"type": "hyperband", "min_iter": 1, "max_iter": 8, "eta": 3},
        "command": ["${env}", "${interpreter}", "${program}", "${args}"]}))
    run_sweep(str(path), trials=8, runs=str(tmp_path / "runs"))
    study = optuna.load_study(study_name="hb", storage=f"sqlite:///{tmp_path / 'runs' / 'sweeps' / 'hb.db'}")
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert pruned and complete and len(pruned) + len(complete) == 8
    for t in pruned:  # stopped early: its process wrote fewer than all 8 epochs
        rows = (tmp_path / "runs" / f"hb-t{t.number:03d}" / "fold0" / "metrics.jsonl").read_text().splitlines()
        assert len(rows) < 8 and not (tmp_path / "runs" / f"hb-t{t.number:03d}" / "summary.json").exists()


def test_workers_run_trials_side_by_side(tmp_path):
    from kit.sweep import run_sweep
    (tmp_path / "prog.py").write_text(PROGRAM)
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump({
        "name": "w", "program": str(tmp_path / "prog.py"), "method": "random",
        "metric": {"name": "valid/score", "goal": "maximize"}, "parameters": {"lr": {"min": 0.0, "max": 1.0}},
        "command": ["${env}", "${interpreter}", "${program}", "${args}"]}))
    result = run_sweep(str(path), trials=4, workers=2, runs=str(tmp_path / "runs"))
    study = optuna.load_study(study_name="w", storage=f"sqlite:///{tmp_path / 'runs' / 'sweeps' / 'w.db'}")
    trials = sorted(study.trials, key=lambda t: t.datetime_start)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert trials[1].datetime_start < trials[0].datetime_complete  # two at a time
    assert result["best"]["valid/score"] == max(t.value for t in trials)
    assert len({t.user_attrs["run"] for t in trials}) == 4


def test_kit_sweep_refuses_a_bad_yaml_before_running_anything(tmp_path):
    from tests.helpers import kit
    path = write_yaml(tmp_path, parameters={"lr": {"distribution": "normal"}})
    r = kit("sweep", str(path), "--trials=2", f"--runs={tmp_path / 'runs'}", check=False)
    assert r.returncode != 0 and "parameters.lr: distribution 'normal'" in r.stderr + r.stdout
    assert not (tmp_path / "runs").exists()


def test_kit_sweep_names_a_storage_it_cannot_open(tmp_path):
    from tests.helpers import _free_port, kit
    path = write_yaml(tmp_path)
    url = f"postgresql://kit:secret@127.0.0.1:{_free_port()}/sweeps"  # nothing listens there
    r = kit("sweep", str(path), "--trials=1", f"--runs={tmp_path / 'runs'}", f"--storage={url}", check=False)
    assert r.returncode != 0 and "cannot open the study database" in r.stderr, r.stdout[-2000:] + r.stderr[-2000:]
    assert "secret" not in r.stdout + r.stderr and "kit:***@127.0.0.1" in r.stderr
    assert not (tmp_path / "runs").exists()
    r = kit("sweep", str(path), "--trials=1", f"--runs={tmp_path / 'runs'}", "--heartbeat=0.5", check=False)
    assert r.returncode != 0 and "--heartbeat=0.5: at least 1 second" in r.stderr


def test_hyperband_sees_each_folds_epochs_in_fold_number_order(tmp_path):
    from kit.sweep import epoch_values
    run = tmp_path / "run"
    for fold, scores in {10: [0.7, 0.8], 2: [0.1, 0.2, 0.3]}.items():
        (run / f"fold{fold}").mkdir(parents=True)
        rows = [json.dumps({"fold": fold, "epoch": e, "valid/score": s}) for e, s in enumerate(scores)]
        (run / f"fold{fold}" / "metrics.jsonl").write_text("\n".join(rows) + "\n{\"epoch\": 2, \"valid/sc")
    (run / "fold_extra").mkdir()  # not a fold folder
    (run / "fold_extra" / "metrics.jsonl").write_text(json.dumps({"valid/score": 9.0}))
    assert epoch_values(run, "cv/score") == [0.1, 0.2, 0.3, 0.7, 0.8]  # fold 2's epochs, then fold 10's
