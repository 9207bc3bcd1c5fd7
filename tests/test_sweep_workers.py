"""`kit sweep` workers on "two machines" sharing one study in a real PostgreSQL server; one is killed mid-trial."""
import json
import os
import signal
import subprocess
import time

import optuna
import pytest
import yaml

from tests.helpers import BIN
from tests.postgres import postgres_bin, postgres_server

pytestmark = pytest.mark.skipif(postgres_bin() is None, reason="PostgreSQL is not installed (.ci/run installs it)")

PROGRAM = '''
import json, sys, time
from pathlib import Path
args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
run = Path(args["out_dir"]) / args["name"]
(run / "fold0").mkdir(parents=True)
for epoch in range(6):
    with open(run / "fold0" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": epoch, "valid/score": float(args["lr"])}) + "\\n")
    time.sleep(0.25)
(run / "summary.json").write_text(json.dumps({"valid/score": float(args["lr"])}))
with open(Path(args["out_dir"]).parent / "completed.txt", "a") as f:  # both machines append: one line per completion
    f.write(args["lr"] + "\\n")
'''
TRIALS = 6


def start_worker(tmp_path, machine: str, url: str) -> subprocess.Popen:
    """A `kit sweep` worker with its own runs folder, as on its own machine; its own process group."""
    cmd = [str(BIN / "kit"), "sweep", str(tmp_path / "w.yaml"), f"--trials={TRIALS}", f"--storage={url}",
           "--heartbeat=1", f"--runs={tmp_path / machine / 'runs'}"]
    (tmp_path / machine).mkdir()
    return subprocess.Popen(cmd, cwd=tmp_path / machine, env={**os.environ, "WANDB_MODE": "offline"},
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_two_workers_share_a_postgres_study_and_a_killed_workers_trial_is_run_again(tmp_path):
    (tmp_path / "prog.py").write_text(PROGRAM)
    (tmp_path / "w.yaml").write_text(yaml.safe_dump({
        "name": "w", "program": str(tmp_path / "prog.py"), "method": "random",
        "metric": {"name": "valid/score", "goal": "maximize"}, "parameters": {"lr": {"min": 0.0, "max": 1.0}},
        "command": ["${env}", "${interpreter}", "${program}", "${args}"]}))
    with postgres_server() as url:
        a, b = start_worker(tmp_path, "a", url), start_worker(tmp_path, "b", url)
        deadline = time.monotonic() + 120
        while not list((tmp_path / "a" / "runs").glob("w-t*/fold0/metrics.jsonl")):  # a is mid-trial
            assert a.poll() is None and time.monotonic() < deadline, a.stdout.read()[-3000:]
            time.sleep(0.05)
        os.killpg(a.pid, signal.SIGKILL)  # the worker and its trial, as when a machine goes down
        a.wait()
        out, _ = b.communicate(timeout=300)
        assert b.returncode == 0, out[-3000:]
        trials = optuna.load_study(study_name="w", storage=url.replace("postgresql://", "postgresql+psycopg://")).trials
    [killed_run] = [p for p in (tmp_path / "a" / "runs").glob("w-t*") if not (p / "summary.json").exists()]
    states = {t.number: t.state for t in trials}
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == TRIALS, states  # exactly the count asked for
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL and not t.user_attrs.get("surplus")]
    [killed] = failed  # the killed one, failed by b when its heartbeat went stale (never left RUNNING)
    assert killed.user_attrs["run"].endswith(killed_run.name) and not any(
        t.state == optuna.trial.TrialState.RUNNING for t in trials)
    # b ran it again, with the same values, to completion
    [retry] = [t for t in complete if t.system_attrs.get("failed_trial") == killed.number]
    assert retry.params == killed.params and retry.user_attrs["run"].startswith(str(tmp_path / "b"))
    # no trial ran twice to completion: one completion per finished trial, every drawn value once
    lines = (tmp_path / "a" / "completed.txt").read_text().splitlines() if (tmp_path / "a" / "completed.txt").exists() \
        else []
    lines += (tmp_path / "b" / "completed.txt").read_text().splitlines()
    assert len(lines) == TRIALS and len(set(lines)) == TRIALS
    assert sorted(float(x) for x in lines) == sorted(t.params["lr"] for t in complete)
    assert sorted(t.value for t in complete) == sorted(json.loads((tmp_path / m / "runs" / p.name / "summary.json")
                                                              .read_text())["valid/score"]
                                                   for m in "ab" for p in (tmp_path / m / "runs").glob("w-t*")
                                                   if (p / "summary.json").exists())
