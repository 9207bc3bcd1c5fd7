"""A checkpoint's trainer state is loaded as data only: a planted pickle never runs on --resume."""
import json
import os

import pytest
import torch

from kit import Config, Trainer, run
from kit.checkpoint import MARKER, newest_complete
from tests.helpers import make_tiny


class Exp(Trainer):
    config = Config(model="test_resnet", img_size=16, batch_size=8, epochs=1, num_workers=0, n_folds=3,
                    log_with="none", name="safe", predict_test=False, keep_fold_ckpts=True)


class Payload:
    """Unpickling this runs a shell command (what a malicious checkpoint does)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("sched", ["cosine", "plateau"])
def test_resume_loads_the_real_state_with_weights_only(tmp_path, sched, capsys):
    comp = make_tiny(tmp_path / "comp")
    args = [f"--comp={comp}", f"--out_dir={tmp_path / 'runs'}", f"--sched={sched}", "--ema_decay=0.9", "--epochs=2"]
    first = run(Exp, args)
    capsys.readouterr()
    (tmp_path / "runs" / "safe" / "fold0" / "done.json").unlink()  # as if killed before the fold was marked done
    again = run(Exp, args)  # the same run again: resumes from its last checkpoint, loaded with weights_only=True
    assert "resumed from" in capsys.readouterr().out
    assert again["per_fold"] == first["per_fold"]
    log = (tmp_path / "runs" / "safe" / "fold0" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in log] == [0, 1]


def test_planted_pickle_does_not_run_on_resume(tmp_path):
    comp = make_tiny(tmp_path / "comp")
    args = [f"--comp={comp}", f"--out_dir={tmp_path / 'runs'}"]
    run(Exp, args)
    ckpt, _ = newest_complete(tmp_path / "runs" / "safe" / "fold0" / "checkpoints")
    marker = tmp_path / "pwned"
    state = torch.load(ckpt.path / "trainer_state.pt", weights_only=True)
    state["stopped"] = Payload(marker)
    torch.save(state, ckpt.path / "trainer_state.pt")
    meta = json.loads((ckpt.path / MARKER).read_text())  # the attacker fixes the recorded size too
    meta["files"]["trainer_state.pt"] = (ckpt.path / "trainer_state.pt").stat().st_size
    (ckpt.path / MARKER).write_text(json.dumps(meta))
    (tmp_path / "runs" / "safe" / "fold0" / "done.json").unlink()  # as if killed before the fold was marked done
    with pytest.raises(SystemExit) as e:
        run(Exp, args)  # the same run again: --resume=auto loads the planted state
    assert not marker.exists(), "the planted pickle ran a shell command"
    msg = str(e.value.code)
    assert "trainer_state.pt" in msg and "refused" in msg and "Traceback" not in msg
