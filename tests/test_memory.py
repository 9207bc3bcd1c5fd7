"""Auto batch size on (simulated) OOM keeps the effective batch; channels_last; in-place torch.compile."""
import pytest
import torch

from kit.memory import compile_in_place, fit_with_auto_batch, set_channels_last
from tests.tiny import Tiny, TinyNet


class Recording(Tiny):
    """Records the gradient of every optimizer update and the rows that went into it."""

    def build_optimizer(self, model):
        optimizer = super().build_optimizer(model)
        self.updates, self.rows = [], 0

        def record(opt, args, kw):
            self.updates.append(([p.grad.clone() for g in opt.param_groups for p in g["params"]], self.rows))
            self.rows = 0
        optimizer.register_step_pre_hook(record)
        return optimizer

    def train_step(self, batch):
        self.rows += len(batch["image"])
        return super().train_step(batch)


class OOMAbove16(Recording):
    """A device that runs out of memory for any batch larger than 16 rows."""

    def train_step(self, batch):
        self.attempts = getattr(self, "attempts", []) + [len(batch["image"])]
        if len(batch["image"]) > 16:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return super().train_step(batch)


def test_oom_above_16_trains_at_16_with_accumulation_keeping_the_effective_batch(tmp_path):
    base = Tiny.config.override(out_dir=str(tmp_path), epochs=1, batch_size=64, grad_accum=1, lr=0.0)
    auto = OOMAbove16(base.override(name="auto"))
    fit_with_auto_batch(auto, 0)
    assert (auto.config.batch_size, auto.config.grad_accum) == (16, 4)
    assert auto.accelerator.gradient_accumulation_steps == 4
    assert auto.attempts[:2] == [64, 32] and set(auto.attempts[2:]) <= {16, 8}
    direct = Recording(base.override(name="direct"))  # the requested batch, where memory allows it
    direct.fit(0)
    # 72 train rows: updates of 64 then 8 rows in both runs, with the same gradients
    assert [rows for _, rows in auto.updates] == [rows for _, rows in direct.updates] == [64, 8]
    for a, b in zip(auto.updates[0][0], direct.updates[0][0]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


class Broken(Tiny):
    def train_step(self, batch):
        raise RuntimeError("shape mismatch")


def test_other_errors_are_not_retried(tmp_path):
    trainer = Broken(Tiny.config.override(out_dir=str(tmp_path), batch_size=64))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        fit_with_auto_batch(trainer, 0)
    assert trainer.config.batch_size == 64


def test_channels_last_and_compile_in_place_keep_plain_parameter_names():
    model = set_channels_last(TinyNet(), True)
    assert model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 8, 8)
    eager = model(x)
    compiled = compile_in_place(model, backend="eager")  # dynamo traces; inductor's codegen is torch's to test
    assert set(compiled.state_dict()) == {"conv.weight", "conv.bias", "fc.weight", "fc.bias"}  # no _orig_mod.
    torch.testing.assert_close(compiled(x), eager, rtol=1e-4, atol=1e-5)


def test_auto_batch_flag_goes_through_run_and_the_saved_config_says_what_ran(tmp_path):
    import yaml

    from kit.launch import run
    run(OOMAbove16, [f"--out_dir={tmp_path}", "--auto_batch", "--batch_size=64", "--epochs=1", "--lr=0"])
    saved = yaml.safe_load((tmp_path / "tiny" / "fold0" / "config.yaml").read_text())
    assert (saved["batch_size"], saved["grad_accum"], saved["auto_batch"]) == (16, 4, True)


def test_a_relaunch_keeps_the_batch_auto_batch_backed_off_to(tmp_path, capsys):
    from kit.launch import run
    args = [f"--out_dir={tmp_path}", "--auto_batch", "--batch_size=64", "--epochs=1", "--lr=0"]
    run(OOMAbove16, args)
    assert "out of memory at batch_size=64" in capsys.readouterr().out
    # the same command again: the finished fold is kept, not trained again at 64 (which would back off again)
    run(OOMAbove16, args)
    out = capsys.readouterr().out
    assert "backed off to batch_size=16 x grad_accum=4 in an earlier launch: kept" in out
    assert "fold 0: finished earlier" in out and "out of memory" not in out and "runs again" not in out


class KilledInEpoch1(OOMAbove16):
    """Killed at the start of its second epoch (after the first epoch's checkpoint)."""

    def train_step(self, batch):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return super().train_step(batch)


def test_a_fold_killed_after_an_auto_batch_back_off_resumes_at_the_smaller_batch(tmp_path, capsys):
    from kit.launch import run
    args = [f"--out_dir={tmp_path}", "--auto_batch", "--batch_size=64", "--epochs=2", "--lr=0"]
    with pytest.raises(KeyboardInterrupt):
        run(KilledInEpoch1, args)
    assert "out of memory at batch_size=64" in capsys.readouterr().out
    run(OOMAbove16, args)  # epoch 1 trains from the checkpoint, at 16 x 4: no second back-off
    out = capsys.readouterr().out
    assert "backed off to batch_size=16 x grad_accum=4 in an earlier launch: kept" in out
    assert "resumed from" in out and "out of memory" not in out and "other settings" not in out, out
